//! Byte layouts of the values the embedded ledger stores for events, intents and idempotency
//! records. Owns the encodings only; which keyspace holds what is `super`'s business.
//!
//! A create writes the same JSON three times over (the intent, its `payment_intent.created`
//! event's data, the idempotency record's response body). The event is the one immutable copy,
//! so the other two may point at it: an intent or idempotency value is either the JSON itself
//! or the 16-byte id of an event whose data is exactly that JSON. Events are never deleted, so
//! a pointer never dangles, and both are written in one atomic batch, so a reader that sees
//! the pointer also sees the event.

use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::ids::{EventId, MerchantId};
use crate::model::Event;
use crate::store::IdempotencyRecord;
use serde_json::value::RawValue;

/// The value is the JSON itself.
const INLINE: u8 = 0;
/// The value is the 16-byte id of the event whose data holds the JSON.
const EVENT_REF: u8 = 1;
/// Idempotency flag: the request hash is stored as 32 raw bytes (it was 64 lowercase hex).
const HASH_RAW: u8 = 2;
/// First byte of an event value: the layout version.
const EVENT_V1: u8 = 1;

fn corrupt(what: &str) -> StoreError {
    StoreError(format!("corrupt {what} record in the embedded ledger"))
}

/// Reads fixed-size and length-prefixed fields off the front of a slice.
struct Reader<'a>(&'a [u8], &'static str);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(corrupt(self.1));
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, StoreError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn i64(&mut self) -> Result<i64, StoreError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(i64::from_le_bytes(a))
    }

    fn u128(&mut self) -> Result<u128, StoreError> {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.take(16)?);
        Ok(u128::from_be_bytes(a))
    }

    fn str16(&mut self) -> Result<&'a str, StoreError> {
        let n = self.u16()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| corrupt(self.1))
    }

    fn rest(self) -> &'a [u8] {
        self.0
    }
}

fn put_str16(out: &mut Vec<u8>, s: &str) -> Result<(), StoreError> {
    let n = u16::try_from(s.len())
        .map_err(|_| StoreError(format!("field longer than 65535 bytes: {:.40}…", s)))?;
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// An event value: `[1][created i64][livemode u8][merchant 16][type: u16 len + bytes]
/// [object id: u16 len + bytes][data JSON to the end]`. The id is the key.
pub(super) fn encode_event(e: &Event) -> Result<Vec<u8>, StoreError> {
    let data = e.data.get();
    let mut out = Vec::with_capacity(32 + e.event_type.len() + e.object_id.len() + data.len() + 8);
    out.push(EVENT_V1);
    out.extend_from_slice(&e.created.ms().to_le_bytes());
    out.push(e.livemode as u8);
    out.extend_from_slice(&e.merchant_id.to_bytes());
    put_str16(&mut out, &e.event_type)?;
    put_str16(&mut out, &e.object_id)?;
    out.extend_from_slice(data.as_bytes());
    Ok(out)
}

/// The fields of a stored event, borrowed from its value.
pub(super) struct EventParts<'a> {
    pub created: i64,
    pub livemode: bool,
    pub merchant: u128,
    pub event_type: &'a str,
    pub object_id: &'a str,
    pub data: &'a [u8],
}

pub(super) fn event_parts(v: &[u8]) -> Result<EventParts<'_>, StoreError> {
    let mut r = Reader(v, "event");
    if r.u8()? != EVENT_V1 {
        return Err(corrupt("event"));
    }
    let created = r.i64()?;
    let livemode = r.u8()? != 0;
    let merchant = r.u128()?;
    let event_type = r.str16()?;
    let object_id = r.str16()?;
    Ok(EventParts {
        created,
        livemode,
        merchant,
        event_type,
        object_id,
        data: r.rest(),
    })
}

/// Rebuilds the event stored under `id`.
pub(super) fn decode_event(id: EventId, v: &[u8]) -> Result<Event, StoreError> {
    let p = event_parts(v)?;
    let data = std::str::from_utf8(p.data).map_err(|_| corrupt("event"))?;
    Ok(Event {
        id,
        event_type: p.event_type.to_string(),
        created: Timestamp(p.created),
        data: RawValue::from_string(data.to_string()).map_err(|_| corrupt("event"))?,
        livemode: p.livemode,
        merchant_id: MerchantId::from_u128(p.merchant),
        object_id: p.object_id.to_string(),
    })
}

/// Where a stored JSON document lives.
pub(super) enum Json<'a> {
    Inline(&'a [u8]),
    /// In the data of this event.
    Event([u8; 16]),
}

/// A value holding either JSON or a pointer to the event that holds it.
pub(super) fn encode_doc(json: &[u8], event: Option<[u8; 16]>) -> Vec<u8> {
    match event {
        Some(id) => {
            let mut v = Vec::with_capacity(17);
            v.push(EVENT_REF);
            v.extend_from_slice(&id);
            v
        }
        None => {
            let mut v = Vec::with_capacity(1 + json.len());
            v.push(INLINE);
            v.extend_from_slice(json);
            v
        }
    }
}

fn doc_tail<'a>(tag: u8, rest: &'a [u8], what: &'static str) -> Result<Json<'a>, StoreError> {
    if tag & EVENT_REF != 0 {
        let id: [u8; 16] = rest.try_into().map_err(|_| corrupt(what))?;
        Ok(Json::Event(id))
    } else {
        Ok(Json::Inline(rest))
    }
}

pub(super) fn decode_doc(v: &[u8]) -> Result<Json<'_>, StoreError> {
    let (&tag, rest) = v.split_first().ok_or_else(|| corrupt("intent"))?;
    doc_tail(tag, rest, "intent")
}

/// 64 lowercase hex digits as 32 bytes (None for anything else, which is kept as text).
fn hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(b, &mut out).ok()?;
    Some(out)
}

/// An idempotency value: `[flags][status u16][created i64][hash: u8 len + bytes][body]`,
/// the body being the response JSON or (flag `EVENT_REF`) the id of the event holding it.
pub(super) fn encode_idempotency(rec: &IdempotencyRecord, body_event: Option<[u8; 16]>) -> Vec<u8> {
    let raw = hex32(&rec.request_hash);
    let mut flags = if body_event.is_some() { EVENT_REF } else { 0 };
    let hash: &[u8] = match &raw {
        Some(h) => {
            flags |= HASH_RAW;
            h
        }
        None => rec.request_hash.as_bytes(),
    };
    let hash = &hash[..hash.len().min(255)];
    let body_len = if body_event.is_some() {
        16
    } else {
        rec.body.len()
    };
    let mut v = Vec::with_capacity(12 + hash.len() + body_len);
    v.push(flags);
    v.extend_from_slice(&rec.status.to_le_bytes());
    v.extend_from_slice(&rec.created.ms().to_le_bytes());
    v.push(hash.len() as u8);
    v.extend_from_slice(hash);
    match body_event {
        Some(id) => v.extend_from_slice(&id),
        None => v.extend_from_slice(rec.body.as_bytes()),
    }
    v
}

/// An idempotency record whose body may still have to be fetched from an event.
pub(super) struct IdemParts<'a> {
    pub request_hash: String,
    pub status: u16,
    pub created: Timestamp,
    pub body: Json<'a>,
}

pub(super) fn decode_idempotency(v: &[u8]) -> Result<IdemParts<'_>, StoreError> {
    let mut r = Reader(v, "idempotency");
    let flags = r.u8()?;
    let status = r.u16()?;
    let created = Timestamp(r.i64()?);
    let n = r.u8()? as usize;
    let hash = r.take(n)?;
    let request_hash = if flags & HASH_RAW != 0 {
        hex::encode(hash)
    } else {
        String::from_utf8(hash.to_vec()).map_err(|_| corrupt("idempotency"))?
    };
    Ok(IdemParts {
        request_hash,
        status,
        created,
        body: doc_tail(flags, r.rest(), "idempotency")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event::with_json(
            MerchantId::new_at(1_700_000_000_000),
            true,
            "payment_intent.created",
            Timestamp(1_700_000_000_123),
            "pi_x".into(),
            "{\"id\":\"pi_x\",\"n\":[1,2]}".into(),
        )
    }

    #[test]
    fn events_round_trip() {
        let e = event();
        let v = encode_event(&e).unwrap();
        let back = decode_event(e.id, &v).unwrap();
        assert_eq!(back.id, e.id);
        assert_eq!(back.event_type, e.event_type);
        assert_eq!(back.created, e.created);
        assert_eq!(back.data.get(), e.data.get());
        assert_eq!(back.livemode, e.livemode);
        assert_eq!(back.merchant_id, e.merchant_id);
        assert_eq!(back.object_id, e.object_id);
        assert!(decode_event(e.id, &v[..10]).is_err());
    }

    #[test]
    fn idempotency_records_round_trip_inline_and_by_reference() {
        for hash in ["ab".repeat(32), "not hex".to_string(), "AB".repeat(32)] {
            let rec = IdempotencyRecord {
                request_hash: hash.clone(),
                status: 201,
                body: "{\"id\":\"pi_1\"}".into(),
                created: Timestamp(1_700_000_000_000),
            };
            let v = encode_idempotency(&rec, None);
            let p = decode_idempotency(&v).unwrap();
            assert_eq!(
                (p.request_hash.as_str(), p.status, p.created),
                (hash.as_str(), 201, rec.created)
            );
            assert!(matches!(p.body, Json::Inline(b) if b == rec.body.as_bytes()));
            let v = encode_idempotency(&rec, Some([7; 16]));
            let p = decode_idempotency(&v).unwrap();
            assert_eq!(p.request_hash, hash);
            assert!(matches!(p.body, Json::Event(id) if id == [7; 16]));
        }
    }

    #[test]
    fn documents_are_inline_or_pointers() {
        assert!(matches!(
            decode_doc(&encode_doc(b"{}", None)).unwrap(),
            Json::Inline(b"{}")
        ));
        assert!(matches!(
            decode_doc(&encode_doc(b"{}", Some([1; 16]))).unwrap(),
            Json::Event(id) if id == [1; 16]
        ));
        assert!(decode_doc(&[EVENT_REF, 1, 2]).is_err());
    }
}
