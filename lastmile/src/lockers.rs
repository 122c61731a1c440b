//! Parcel lockers (DPD, UPS, PostNL, InPost, Allegro One): a carrier that drops a paid parcel
//! into a locker asks for its pickup code (`locker.code_issued`; the code itself goes only to
//! the consumer's session view), and the locker checks the code the consumer types: right, and
//! the parcel is released and delivered; wrong too often, and the parcel's code locks.
//!
//! Same rules as the driver's OTP at the door: the code is derived from the merchant's OTP key
//! (`crate::otp`, through `sessions::parcel`), never stored, compared in constant time; wrong
//! codes count per parcel and the last allowed one locks it. Carriers sign their calls with
//! `X-IPAY-Signature` (hex HMAC-SHA256 of the body with the carrier's secret from
//! `[lastmile.lockers] carrier_secrets`). HTTP is the gateway's; the session rules stay in
//! `crate::sessions`.
//!
//! Storage: `lm_locker/{session_id}` → the parcel's [`LockerAssignment`] (JSON), changed only
//! while holding the reservation `lm:locker:{session_id}`.

use crate::LastMile;
use crate::otp;
use crate::reference::IpayReference;
use crate::sessions::{LockerRelease, ParcelStatus, PaymentSession, SessionStatus, SessionView};
use hmac::{Hmac, Mac};
use ipay_engine::clock::Timestamp;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::MerchantId;
use ipay_engine::store::{WriteBatch, WriteOp};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::fmt;
use subtle::ConstantTimeEq;

const LOCKER: &str = "lm_locker";
/// The header carriers sign with.
pub const SIGNATURE_HEADER: &str = "X-IPAY-Signature";
/// Carriers with lockers, as they appear in paths.
pub const CARRIERS: &[&str] = &["dpd", "ups", "postnl", "inpost", "allegro_one"];
/// Longest locker id (letters, digits, `-`, `_`); keeps the derivation input within bounds.
pub const MAX_LOCKER_ID: usize = 32;

/// `[lastmile.lockers]` in `ipay.toml`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockersConfig {
    /// Each carrier's signing secret (`dpd`, `ups`, `postnl`, `inpost`, `allegro_one`); a
    /// carrier without one is refused (401).
    pub carrier_secrets: BTreeMap<String, String>,
    /// Wrong codes per parcel before its code locks.
    pub code_max_failures: u32,
}

impl Default for LockersConfig {
    fn default() -> Self {
        LockersConfig {
            carrier_secrets: BTreeMap::new(),
            code_max_failures: 5,
        }
    }
}

impl fmt::Debug for LockersConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let carriers: Vec<&String> = self.carrier_secrets.keys().collect();
        f.debug_struct("LockersConfig")
            .field("carrier_secrets", &carriers)
            .field("code_max_failures", &self.code_max_failures)
            .finish()
    }
}

/// Where a parcel waits, and how its code has been tried.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockerAssignment {
    pub merchant_id: MerchantId,
    pub carrier: String,
    pub locker_id: String,
    pub compartment: Option<String>,
    pub issued_at: Timestamp,
    pub failures: u32,
    pub locked: bool,
    pub picked_up_at: Option<Timestamp>,
}

/// `POST /api/lockers/{carrier}/issue-code` body (`carrier` only on `/api/lockers/issue-code`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueCodeRequest {
    #[serde(default)]
    pub carrier: Option<String>,
    pub ipay_reference_18: String,
    pub locker_id: String,
    #[serde(default)]
    pub compartment: Option<String>,
}

/// The answer to a carrier: the code was issued to the consumer (never shown here).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuedCode {
    pub issued: bool,
    pub carrier: String,
    pub locker_id: String,
    pub ipay_reference_18: String,
    /// Where the consumer sees the code (the session's locker view).
    pub delivered_to: String,
}

/// `POST /api/lockers/{carrier}/pickup` body: the code the consumer typed at the locker.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PickupRequest {
    pub ipay_reference_18: String,
    pub code: String,
}

impl fmt::Debug for PickupRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PickupRequest")
            .field("ipay_reference_18", &self.ipay_reference_18)
            .field("code", &"****")
            .finish()
    }
}

/// A released parcel.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PickedUp {
    pub released: bool,
    pub session: SessionView,
}

/// What the consumer's session view shows of a locker (`GET /api/session/{token}/locker`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsumerLocker {
    pub carrier: String,
    pub locker_id: String,
    pub compartment: Option<String>,
    /// The 4-digit pickup code; present while the parcel waits and the code is not locked.
    pub code: Option<String>,
    pub locked: bool,
    #[schema(value_type = String, format = DateTime)]
    pub issued_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub picked_up_at: Option<Timestamp>,
}

/// `POST /api/lockers/unlock` body (operators).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnlockRequest {
    pub ipay_reference_18: String,
}

/// A parcel's code after an operator unlocked it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UnlockedCode {
    pub ipay_reference_18: String,
    pub carrier: String,
    pub locker_id: String,
    /// Wrong codes that were counted before the unlock.
    pub failures_cleared: u32,
}

/// The carrier name of a path or body (`allegro` is Allegro One), or 404.
pub fn carrier_of(s: &str) -> EngineResult<&'static str> {
    let s = s.trim().to_ascii_lowercase();
    let s = if s == "allegro" || s == "allegro-one" {
        "allegro_one".to_string()
    } else {
        s
    };
    CARRIERS
        .iter()
        .find(|c| **c == s)
        .copied()
        .ok_or_else(|| EngineError::not_found("locker carrier", s))
}

fn bad_signature() -> EngineError {
    EngineError::Unauthenticated {
        code: "webhook_signature_invalid",
        message: "missing or wrong X-IPAY-Signature (hex HMAC-SHA256 of the body with the \
                  carrier's secret)"
            .into(),
    }
}

fn reference(s: &str) -> EngineResult<IpayReference> {
    IpayReference::parse(s)
        .map_err(|e| EngineError::invalid("reference_invalid", "ipay_reference_18", e.to_string()))
}

fn locker_id(s: &str) -> EngineResult<String> {
    let t = s.trim();
    if t.is_empty()
        || t.len() > MAX_LOCKER_ID
        || !t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "locker_id",
            format!("locker_id is 1 to {MAX_LOCKER_ID} letters, digits, `-` or `_`"),
        ));
    }
    Ok(t.to_string())
}

impl LastMile {
    fn lk_cfg(&self) -> &LockersConfig {
        &self.cfg.lockers
    }

    /// Checks a carrier's `X-IPAY-Signature` over the raw body (constant-time).
    pub fn verify_locker_signature(
        &self,
        carrier: &str,
        body: &[u8],
        signature: Option<&str>,
    ) -> EngineResult<()> {
        let (Some(secret), Some(sig)) = (self.lk_cfg().carrier_secrets.get(carrier), signature)
        else {
            return Err(bad_signature());
        };
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
            .map_err(|_| bad_signature())?;
        mac.update(body);
        let expected = hex::encode(mac.finalize().into_bytes());
        let got = sig.trim().to_ascii_lowercase();
        if got.len() == expected.len() && bool::from(got.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(())
        } else {
            tracing::info!(
                carrier,
                "locker call with a missing or wrong signature refused"
            );
            Err(bad_signature())
        }
    }

    async fn lk_load(&self, s: &PaymentSession) -> EngineResult<Option<LockerAssignment>> {
        match self
            .engine
            .ledger()
            .get_record(LOCKER, &s.id.to_string())
            .await?
        {
            Some(raw) => Ok(Some(
                serde_json::from_slice(&raw).map_err(|e| EngineError::Internal(e.to_string()))?,
            )),
            None => Ok(None),
        }
    }

    async fn lk_store(&self, s: &PaymentSession, a: &LockerAssignment) -> EngineResult<()> {
        let mut b = WriteBatch::new();
        b.push(WriteOp::PutRecord {
            kind: LOCKER,
            key: s.id.to_string(),
            value: serde_json::to_vec(a).map_err(|e| EngineError::Internal(e.to_string()))?,
        });
        self.engine.ledger().submit(b).await?;
        Ok(())
    }

    /// A carrier put a paid parcel into a locker: its pickup code is issued to the consumer
    /// (`locker.code_issued`). Issuing again for the same locker keeps the code and its
    /// attempt count; another locker gets another code and a fresh count.
    pub async fn issue_locker_code(
        &self,
        carrier: &'static str,
        req: IssueCodeRequest,
    ) -> EngineResult<IssuedCode> {
        let r = reference(&req.ipay_reference_18)?;
        let locker = locker_id(&req.locker_id)?;
        let compartment = req
            .compartment
            .map(|c| c.trim().chars().take(32).collect::<String>());
        let s = self
            .session_by_reference(&r)
            .await?
            .ok_or_else(|| EngineError::not_found("payment session", r))?;
        locker_gate(&s)?;
        let guard = self
            .reserve_unique(vec![format!("lm:locker:{}", s.id)])
            .await?;
        let out: EngineResult<LockerAssignment> = async {
            let now = self.engine.clock().now();
            let mut a = match self.lk_load(&s).await? {
                Some(a) if a.locker_id == locker && a.carrier == carrier => a,
                _ => LockerAssignment {
                    merchant_id: s.merchant_id,
                    carrier: carrier.into(),
                    locker_id: locker.clone(),
                    compartment: None,
                    issued_at: now,
                    failures: 0,
                    locked: false,
                    picked_up_at: None,
                },
            };
            a.compartment = compartment.filter(|c| !c.is_empty());
            self.lk_store(&s, &a).await?;
            let data = serde_json::json!({
                "session_id": s.id, "ipay_reference_18": r.to_string(), "carrier": carrier,
                "locker_id": a.locker_id, "compartment": a.compartment, "issued_at": now,
            });
            self.session_event(s.id, "locker.code_issued", data, locker_gate)
                .await?;
            Ok(a)
        }
        .await;
        guard.release(self).await;
        let a = out?;
        Ok(IssuedCode {
            issued: true,
            carrier: carrier.into(),
            locker_id: a.locker_id,
            ipay_reference_18: r.to_string(),
            delivered_to: "consumer session (GET /api/session/{token}/locker)".into(),
        })
    }

    /// The locker checks the code the consumer typed. Right: released and delivered. Wrong:
    /// 400 `locker_code_incorrect` with the attempts left; the last allowed one locks the code
    /// (423 `locker_code_locked`).
    pub async fn locker_pickup(
        &self,
        carrier: &'static str,
        req: PickupRequest,
    ) -> EngineResult<PickedUp> {
        let r = reference(&req.ipay_reference_18)?;
        if !otp::well_formed(&req.code) {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "code",
                "code is the 4-digit pickup code the consumer has",
            ));
        }
        let s = self
            .session_by_reference(&r)
            .await?
            .ok_or_else(|| EngineError::not_found("payment session", r))?;
        let guard = self
            .reserve_unique(vec![format!("lm:locker:{}", s.id)])
            .await?;
        let out = self.pickup_held(carrier, &s, &req.code).await;
        guard.release(self).await;
        let s = out?;
        Ok(PickedUp {
            released: true,
            session: self.session_view(&s),
        })
    }

    async fn pickup_held(
        &self,
        carrier: &str,
        s: &PaymentSession,
        code: &str,
    ) -> EngineResult<PaymentSession> {
        let mut a = match self.lk_load(s).await? {
            Some(a) if a.carrier == carrier => a,
            _ => {
                return Err(EngineError::Conflict {
                    code: "locker_code_not_issued",
                    message: format!("no {carrier} locker code was issued for this parcel"),
                });
            }
        };
        if a.locked {
            return Err(locked());
        }
        if a.picked_up_at.is_some() || s.status == SessionStatus::Released {
            return Err(EngineError::InvalidStateTransition {
                object: "payment session",
                from: s.status.as_str().into(),
                action: "release the parcel from the locker".into(),
            });
        }
        let expected = self
            .locker_code(s, &a.locker_id)
            .await?
            .ok_or_else(|| EngineError::Internal("issued locker code without payment".into()))?;
        if !bool::from(expected.expose().as_bytes().ct_eq(code.as_bytes())) {
            a.failures += 1;
            let max = self.lk_cfg().code_max_failures.max(1);
            a.locked = a.failures >= max;
            self.lk_store(s, &a).await?;
            if a.locked {
                return Err(locked());
            }
            return Err(EngineError::invalid(
                "locker_code_incorrect",
                "code",
                format!(
                    "wrong code; {} attempt(s) left before this parcel's code is locked",
                    max - a.failures
                ),
            ));
        }
        let via = LockerRelease {
            carrier: carrier.into(),
            locker_id: a.locker_id.clone(),
        };
        let s = self.release_via_locker(s.id, &via).await?;
        a.picked_up_at = Some(self.engine.clock().now());
        self.lk_store(&s, &a).await?;
        Ok(s)
    }

    /// Operator: clears a parcel's wrong-code count and lock (the code stays the same).
    pub async fn unlock_locker_code(
        &self,
        req: UnlockRequest,
        operator: &str,
    ) -> EngineResult<UnlockedCode> {
        let r = reference(&req.ipay_reference_18)?;
        let s = self
            .session_by_reference(&r)
            .await?
            .ok_or_else(|| EngineError::not_found("payment session", r))?;
        let guard = self
            .reserve_unique(vec![format!("lm:locker:{}", s.id)])
            .await?;
        let out: EngineResult<UnlockedCode> = async {
            let mut a = self
                .lk_load(&s)
                .await?
                .ok_or_else(|| EngineError::not_found("locker assignment", r))?;
            let cleared = a.failures;
            a.failures = 0;
            a.locked = false;
            self.lk_store(&s, &a).await?;
            tracing::info!(operator, session = %s.id, cleared, "locker code unlocked");
            Ok(UnlockedCode {
                ipay_reference_18: r.to_string(),
                carrier: a.carrier,
                locker_id: a.locker_id,
                failures_cleared: cleared,
            })
        }
        .await;
        guard.release(self).await;
        out
    }

    /// The consumer's view of its parcel's locker, `None` when none was assigned.
    pub async fn consumer_locker(&self, token: &str) -> EngineResult<Option<ConsumerLocker>> {
        let s = self.session_by_token(token).await?;
        let Some(a) = self.lk_load(&s).await? else {
            return Ok(None);
        };
        let waiting = s.status == SessionStatus::Paid && !a.locked && a.picked_up_at.is_none();
        let code = if waiting {
            self.locker_code(&s, &a.locker_id)
                .await?
                .map(|c| c.expose().to_string())
        } else {
            None
        };
        Ok(Some(ConsumerLocker {
            carrier: a.carrier,
            locker_id: a.locker_id,
            compartment: a.compartment,
            code,
            locked: a.locked,
            issued_at: a.issued_at,
            picked_up_at: a.picked_up_at,
        }))
    }
}

/// Whether a parcel can wait in a locker for its consumer: paid, not yet released, with the
/// carrier.
fn locker_gate(s: &PaymentSession) -> EngineResult<()> {
    match s.status {
        SessionStatus::Paid => {}
        SessionStatus::Released => {
            return Err(EngineError::InvalidStateTransition {
                object: "payment session",
                from: s.status.as_str().into(),
                action: "issue a locker code".into(),
            });
        }
        _ => {
            return Err(EngineError::Conflict {
                code: "session_not_paid",
                message: "the consumer has not paid yet; a locker code exists once paid".into(),
            });
        }
    }
    if s.parcel_status == ParcelStatus::AwaitingPickup {
        return Err(EngineError::Conflict {
            code: "parcel_not_picked_up",
            message: "the parcel has not been picked up; mark it PICKED_UP first".into(),
        });
    }
    Ok(())
}

fn locked() -> EngineError {
    EngineError::Locked {
        code: "locker_code_locked",
        message: "too many wrong codes for this parcel; an operator must unlock it \
                  (POST /api/lockers/unlock)"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carriers_are_recognised_with_aliases() {
        assert_eq!(carrier_of("DPD").unwrap(), "dpd");
        assert_eq!(carrier_of("allegro").unwrap(), "allegro_one");
        assert_eq!(carrier_of("allegro_one").unwrap(), "allegro_one");
        assert_eq!(carrier_of("dhl").unwrap_err().code(), "resource_missing");
    }

    #[test]
    fn locker_ids_are_bounded() {
        assert_eq!(locker_id(" NL-AMS_001 ").unwrap(), "NL-AMS_001");
        for bad in ["", "a b", &"x".repeat(33), "ä"] {
            assert!(locker_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pickup_request_debug_hides_the_code() {
        let r = PickupRequest {
            ipay_reference_18: "1".into(),
            code: "4321".into(),
        };
        assert!(!format!("{r:?}").contains("4321"));
    }
}
