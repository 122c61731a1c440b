//! The webhook invariant, checked after the retry schedule has run out: every committed event
//! of a merchant with endpoints has, per endpoint, either a delivery its receiver processed
//! (body and signatures verified on arrival, `hooks.rs`) or a delivery in the dropped list
//! after exactly the schedule's attempts (or dropped because its endpoint was backing off for
//! the whole schedule, which uses up no attempts); no event reaches another merchant's
//! endpoint, or an endpoint at all unless it was committed; duplicates (at-least-once) carry
//! the same event id and the same body; and the dispatcher's record agrees with the receiver
//! (a delivery recorded as succeeded was processed).

use crate::hooks::{Endpoint, Got, Receivers};
use ipay_engine::engine::AuthContext;
use ipay_engine::ids::{EventId, MerchantId};
use ipay_engine::model::Event;
use ipay_engine::store::{EntryRange, EventQuery, Ledger, PageRequest};
use ipay_engine::webhooks::dispatch::load_delivery;
use ipay_engine::webhooks::model::{self, DROPPED, Delivery, DeliveryStatus, MAX_ATTEMPTS};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// One (event, endpoint) pair the invariant covers.
pub struct Pair {
    pub event: Event,
    pub url: String,
    pub endpoint: Endpoint,
    pub record: Option<Delivery>,
}

impl Pair {
    fn delivery_id(&self) -> String {
        format!("{}:{}", self.event.id, self.endpoint.id)
    }
}

/// Every (event, endpoint) pair of the run's merchants, with the dispatcher's record of it.
pub async fn pairs(
    ledger: &Arc<dyn Ledger>,
    ctxs: &[AuthContext],
    receivers: &Receivers,
) -> Result<Vec<Pair>, String> {
    let endpoints = receivers.endpoints.lock().clone();
    let mut out = Vec::new();
    for ctx in ctxs {
        let q = EventQuery {
            event_type: None,
            object_id: None,
            page: PageRequest {
                limit: 100_000,
                offset: 0,
            },
        };
        let events = ledger
            .list_events(ctx.merchant_id, false, &q)
            .await
            .map_err(|e| e.to_string())?
            .data;
        for event in events {
            for (url, ep) in endpoints
                .iter()
                .filter(|(_, e)| e.merchant == ctx.merchant_id)
            {
                let id = format!("{}:{}", event.id, ep.id);
                let record = load_delivery(ledger.as_ref(), &id)
                    .await
                    .map_err(|e| e.to_string())?;
                out.push(Pair {
                    event: event.clone(),
                    url: url.clone(),
                    endpoint: ep.clone(),
                    record,
                });
            }
        }
    }
    Ok(out)
}

/// Reads again the records of the pairs not final yet (no event is committed while the
/// schedule drains, so the pairs themselves stay the same).
pub async fn refresh(ledger: &Arc<dyn Ledger>, pairs: &mut [Pair]) -> Result<(), String> {
    for p in pairs.iter_mut() {
        if p.record.as_ref().is_some_and(|d| d.status.is_final()) {
            continue;
        }
        p.record = load_delivery(ledger.as_ref(), &p.delivery_id())
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Ids of every dropped delivery of `merchant` listed on the days from `from_ms` to `to_ms`.
async fn dropped_list(
    ledger: &Arc<dyn Ledger>,
    merchant: MerchantId,
    from_ms: i64,
    to_ms: i64,
) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    let mut day = from_ms - from_ms.rem_euclid(86_400_000);
    while day <= to_ms {
        let part = model::day_partition(merchant, false, day);
        for (sort, _) in ledger
            .scan_entries(DROPPED, &part, &EntryRange::all(100_000))
            .await
            .map_err(|e| e.to_string())?
        {
            out.insert(sort);
        }
        day += 86_400_000;
    }
    Ok(out)
}

/// What the check counted.
#[derive(Debug, Default)]
pub struct Report {
    pub delivered: usize,
    pub dropped: usize,
}

/// Checks the invariant (module doc) over `pairs`, with the run's simulated time span.
pub async fn check(
    ledger: &Arc<dyn Ledger>,
    pairs: &[Pair],
    receivers: &Receivers,
    span: (i64, i64),
) -> Result<Report, String> {
    if let Some(bad) = receivers.bad.lock().first() {
        return Err(format!("a webhook failed verification: {bad}"));
    }
    let got = receivers.got.lock().clone();
    check_received(ledger, &got, receivers).await?;
    let mut processed: BTreeSet<(&str, String)> = BTreeSet::new();
    for g in &got {
        processed.insert((g.url.as_str(), g.event_id.clone()));
    }
    let mut dropped: BTreeMap<MerchantId, BTreeSet<String>> = BTreeMap::new();
    let mut report = Report::default();
    for p in pairs {
        let m = p.endpoint.merchant;
        if let std::collections::btree_map::Entry::Vacant(e) = dropped.entry(m) {
            e.insert(dropped_list(ledger, m, span.0, span.1).await?);
        }
        let delivered = processed.contains(&(p.url.as_str(), p.event.id.to_string()));
        let listed = dropped
            .get(&m)
            .is_some_and(|d| d.contains(&p.delivery_id()));
        if let Err(e) = check_pair(p, delivered, listed) {
            let index = due_index_of(ledger, p, pairs).await;
            return Err(format!("{e}\n{}{index}", chain_of(p, pairs)));
        }
        if delivered {
            report.delivered += 1;
        } else {
            report.dropped += 1;
        }
    }
    Ok(report)
}

/// The deliveries of `p`'s object to `p`'s endpoint, oldest event first (the ordering chain
/// a waiting delivery is in), for a failure's message.
fn chain_of(p: &Pair, pairs: &[Pair]) -> String {
    let mut out = format!("deliveries of {} to {}:", p.event.object_id, p.url);
    for q in pairs
        .iter()
        .filter(|q| q.url == p.url && q.event.object_id == p.event.object_id)
    {
        let state = q.record.as_ref().map(|d| {
            format!(
                "{:?} after {} attempts, next {:?}, due {}",
                d.status, d.attempts, d.next_attempt, d.due_ms
            )
        });
        out.push_str(&format!(
            "\n  {} {} created {}: {}",
            q.event.id,
            q.event.event_type,
            q.event.created.ms(),
            state.unwrap_or_else(|| "no record".into())
        ));
    }
    out
}

/// Where the pending deliveries of `p`'s chain sit in the due index, and the scan cursor of
/// their shard, for a failure's message (a due entry behind the cursor is never read).
async fn due_index_of(ledger: &Arc<dyn Ledger>, p: &Pair, pairs: &[Pair]) -> String {
    let mut out = String::new();
    for q in pairs
        .iter()
        .filter(|q| q.url == p.url && q.event.object_id == p.event.object_id)
    {
        let Some(d) = q
            .record
            .as_ref()
            .filter(|d| d.status == DeliveryStatus::Pending)
        else {
            continue;
        };
        let part = model::due_partition(d.shard, model::minute_of(d.due_ms));
        let due = ledger
            .scan_entries(model::DUE, &part, &EntryRange::all(1_000))
            .await
            .map(|v| v.into_iter().map(|(sort, _)| sort).collect::<Vec<_>>());
        let cursor = ledger
            .get_record(model::CURSOR, &d.shard.to_string())
            .await
            .map(|c| c.map(|b| String::from_utf8_lossy(&b).into_owned()));
        out.push_str(&format!(
            "\n  due index partition {part}: {due:?}; shard {} scan cursor (minute) {cursor:?}",
            d.shard
        ));
    }
    out
}

/// One pair: delivered, or dropped by the schedule; never left pending.
fn check_pair(p: &Pair, delivered: bool, listed: bool) -> Result<(), String> {
    let what = format!("{} ({}) to {}", p.event.id, p.event.event_type, p.url);
    let Some(d) = &p.record else {
        return Err(format!(
            "{what}: no delivery after the whole retry schedule (never fanned out)"
        ));
    };
    let state = format!(
        "status {:?}, {} attempts, last error {:?}",
        d.status, d.attempts, d.last_error
    );
    match d.status {
        DeliveryStatus::Succeeded if delivered => Ok(()),
        DeliveryStatus::Succeeded => Err(format!(
            "{what}: recorded as delivered, but the receiver never processed it ({state})"
        )),
        DeliveryStatus::Dropped if !listed => Err(format!(
            "{what}: dropped but not in the dropped list ({state})"
        )),
        DeliveryStatus::Dropped if d.attempts == MAX_ATTEMPTS || delivered => Ok(()),
        DeliveryStatus::Dropped
            if d.attempts < MAX_ATTEMPTS
                && d.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("whole retry schedule")) =>
        {
            Ok(())
        }
        DeliveryStatus::Dropped => Err(format!(
            "{what}: dropped before the schedule's {MAX_ATTEMPTS} attempts ({state})"
        )),
        _ => Err(format!(
            "{what}: neither delivered nor dropped after the whole retry schedule ({state})"
        )),
    }
}

/// Everything a receiver processed was a committed event of that endpoint's merchant, and
/// repeats of one event carry the same body.
async fn check_received(
    ledger: &Arc<dyn Ledger>,
    got: &[Got],
    receivers: &Receivers,
) -> Result<(), String> {
    let endpoints = receivers.endpoints.lock().clone();
    let mut bodies: BTreeMap<(&str, &str), &[u8]> = BTreeMap::new();
    let mut owners: BTreeMap<&str, MerchantId> = BTreeMap::new();
    for g in got {
        if let Some(first) = bodies.insert((g.url.as_str(), g.event_id.as_str()), &g.body)
            && first != g.body.as_slice()
        {
            return Err(format!(
                "{} got event {} twice with different bodies",
                g.url, g.event_id
            ));
        }
        let merchant = match owners.get(g.event_id.as_str()) {
            Some(m) => *m,
            None => {
                let id = EventId::parse(&g.event_id)
                    .map_err(|_| format!("{} got an unreadable event id {}", g.url, g.event_id))?;
                let e = ledger
                    .get_event(id)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| {
                        format!(
                            "{} got event {}, which was never committed",
                            g.url, g.event_id
                        )
                    })?;
                owners.insert(&g.event_id, e.merchant_id);
                e.merchant_id
            }
        };
        let ep = endpoints.get(&g.url).ok_or("a request to an unknown URL")?;
        if ep.merchant != merchant {
            return Err(format!(
                "event {} of merchant {merchant} was delivered to {} of merchant {}",
                g.event_id, g.url, ep.merchant
            ));
        }
    }
    Ok(())
}

/// What is still in progress after a drain round.
pub struct Unfinished {
    /// Pairs not final yet.
    pub open: usize,
    /// The earliest moment a pending delivery is due again.
    pub next: Option<i64>,
    /// Some pair has no delivery yet (its fan-out marker is parked behind a back-off window).
    pub unrecorded: bool,
}

/// What of `pairs` is still in progress.
pub fn unfinished(pairs: &[Pair]) -> Unfinished {
    let mut u = Unfinished {
        open: 0,
        next: None,
        unrecorded: false,
    };
    for p in pairs {
        let Some(d) = &p.record else {
            u.open += 1;
            u.unrecorded = true;
            continue;
        };
        if d.status.is_final() {
            continue;
        }
        u.open += 1;
        if d.status == DeliveryStatus::Pending {
            u.next = Some(u.next.map_or(d.due_ms, |t| t.min(d.due_ms)));
        }
    }
    u
}
