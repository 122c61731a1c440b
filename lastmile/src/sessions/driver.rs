//! The driver's OTP check at the door: per-driver rate limit, the attempt count and lock-out
//! per reference, release and delivery on a correct code; the operator's unlock; the
//! merchant's OTP key. Every attempt is logged, never an OTP.

use super::store::{Change, internal};
use super::{
    Actor, Driver, OTP_KEY, ParcelStatus, PaymentSession, SESSION_BY_REF, SessionAction,
    SessionStatus, SessionView, parcel_transition, session_transition,
};
use crate::LastMile;
use crate::otp::{self, Otp, OtpKey};
use crate::reference::IpayReference;
use ipay_engine::clock::Timestamp;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::{MerchantId, PaymentIntentId};
use ipay_engine::store::{WriteBatch, WriteOp};
use serde::{Deserialize, Serialize};
use std::fmt;

/// `POST /api/driver/verify-otp` body.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyOtpRequest {
    /// The 18-digit reference from the label (spaces allowed).
    pub ipay_reference_18: String,
    /// The 4-digit code the consumer shows.
    pub otp_4: String,
}

impl fmt::Debug for VerifyOtpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyOtpRequest")
            .field("ipay_reference_18", &self.ipay_reference_18)
            .field("otp_4", &"****")
            .finish()
    }
}

/// The answer to a correct OTP.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerifyOtpResponse {
    pub released: bool,
    pub session: SessionView,
}

impl LastMile {
    /// The merchant's OTP key, created once (under a reservation, so nodes agree).
    pub(super) async fn ps_otp_key(&self, merchant: MerchantId) -> EngineResult<OtpKey> {
        if let Some(k) = self.sessions.otp_keys.get(&merchant) {
            return Ok(k.clone());
        }
        let ledger = self.engine.ledger();
        let read = |raw: Vec<u8>| -> EngineResult<OtpKey> {
            let bytes = hex::decode(raw).map_err(internal)?;
            let secret: [u8; otp::KEY_LEN] = bytes
                .try_into()
                .map_err(|_| internal("stored OTP key has the wrong length"))?;
            Ok(OtpKey::new(&secret))
        };
        let key = match ledger.get_record(OTP_KEY, &merchant.to_string()).await? {
            Some(raw) => read(raw)?,
            None => {
                let guard = self.ps_hold(&format!("lm:otpkey:{merchant}")).await?;
                let out = match ledger.get_record(OTP_KEY, &merchant.to_string()).await? {
                    Some(raw) => read(raw),
                    None => {
                        let secret = OtpKey::generate_secret();
                        let mut b = WriteBatch::new();
                        b.push(WriteOp::PutRecord {
                            kind: OTP_KEY,
                            key: merchant.to_string(),
                            value: hex::encode(secret).into_bytes(),
                        });
                        ledger.submit(b).await?;
                        Ok(OtpKey::new(&secret))
                    }
                };
                guard.release(self).await;
                out?
            }
        };
        self.sessions.otp_keys.insert(merchant, key.clone());
        Ok(key)
    }

    /// A driver's OTP check at the door. A correct OTP releases the parcel (`session.otp_verified`)
    /// and delivers it (`parcel.delivered`). Wrong OTPs count; the last allowed one locks the
    /// reference (423) until an operator unlocks it. Every attempt is logged, never the OTP.
    pub async fn verify_otp(
        &self,
        driver: &Driver,
        req: VerifyOtpRequest,
    ) -> EngineResult<VerifyOtpResponse> {
        self.admit_driver(driver)?;
        let reference = IpayReference::parse(&req.ipay_reference_18).map_err(|e| {
            EngineError::invalid("reference_invalid", "ipay_reference_18", e.to_string())
        })?;
        if !otp::well_formed(&req.otp_4) {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "otp_4",
                "otp_4 is the 4-digit code the consumer shows",
            ));
        }
        let nf = || EngineError::not_found("payment session", reference);
        let s = self
            .ps_lookup(SESSION_BY_REF, &reference.to_string())
            .await?
            .ok_or_else(nf)?;
        if driver.merchant_id.is_some_and(|m| m != s.merchant_id) {
            return Err(nf());
        }
        let s = self.settle_from_intent(s).await?;
        let key = self.ps_otp_key(s.merchant_id).await?;
        let check = OtpCheck {
            key: &key,
            otp: &req.otp_4,
            driver: &driver.user_id,
            max_failures: self.ps_scfg().otp_max_failures.max(1),
        };
        let (s, outcome) = self
            .ps_mutate(s.id, async |s, c| self.otp_attempt(s, c, &check).await)
            .await?;
        outcome?;
        Ok(VerifyOtpResponse {
            released: true,
            session: self.session_view(&s),
        })
    }

    /// The per-driver rate limit of OTP checks (429 with the wait).
    fn admit_driver(&self, driver: &Driver) -> EngineResult<()> {
        let Err(not_until) = self.sessions.drivers.check_key(&driver.user_id) else {
            return Ok(());
        };
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        Err(EngineError::RateLimited {
            message: "too many OTP checks from this driver; wait and retry".into(),
            retry_after_secs: wait.as_secs().max(1) as u32,
        })
    }

    /// One attempt on the held session. The outer error aborts the change; the inner one is
    /// the driver's answer, returned after the attempt (and any lock) is committed.
    async fn otp_attempt(
        &self,
        s: &mut PaymentSession,
        c: &mut Change,
        check: &OtpCheck<'_>,
    ) -> EngineResult<EngineResult<()>> {
        let now = self.engine.clock().now();
        let paid_intent = match otp_gate(s) {
            Ok(pi) => pi,
            Err((result, e)) => {
                note_attempt(s, c, now, check.driver, result);
                return Ok(Err(e));
            }
        };
        if !check
            .key
            .verify(&s.reference, &paid_intent.to_string(), check.otp)
        {
            return Ok(Err(wrong_otp(s, c, now, check)));
        }
        note_attempt(s, c, now, check.driver, "correct");
        s.status = session_transition(s.status, SessionAction::ReleaseWithOtp)?;
        s.released_at = Some(now);
        let view = self.session_view(s);
        c.event(s, now, "session.otp_verified", &view);
        // The parcel is in the driver's hands at the door: released means delivered.
        let from = s.parcel_status;
        s.parcel_status =
            parcel_transition(ParcelStatus::InDelivery, ParcelStatus::Delivered, true)?;
        c.note(
            s,
            now,
            "parcel.status_changed",
            serde_json::json!({"from": from, "to": s.parcel_status}),
        );
        self.ps_deliver(s, c, now).await;
        Ok(Ok(()))
    }

    /// Operator: clears the wrong-OTP count and the lock of a session.
    pub async fn unlock_otp(&self, id: &str, operator: &str) -> EngineResult<SessionView> {
        let s = self.ps_visible(Actor::Operator, id).await?;
        let operator = operator.to_string();
        let (s, ()) = self
            .ps_mutate(s.id, async |s, c| {
                let now = self.engine.clock().now();
                c.note(
                    s,
                    now,
                    "otp.unlocked",
                    serde_json::json!({"operator": operator, "failures_cleared": s.otp_failures,
                        "was_locked": s.otp_locked}),
                );
                s.otp_failures = 0;
                s.otp_locked = false;
                Ok(())
            })
            .await?;
        Ok(self.session_view(&s))
    }

    /// The OTP of a paid session (benches and tests; never logged, never in an event).
    pub async fn otp_of(&self, s: &PaymentSession) -> EngineResult<Option<Otp>> {
        match s.paid_intent {
            Some(pi) => Ok(Some(
                self.ps_otp_key(s.merchant_id)
                    .await?
                    .derive(&s.reference, &pi.to_string()),
            )),
            None => Ok(None),
        }
    }
}

/// What one OTP check compares against, and who makes it.
struct OtpCheck<'a> {
    key: &'a OtpKey,
    otp: &'a str,
    driver: &'a str,
    max_failures: u32,
}

/// Whether the session can take an OTP at all: not locked, paid (not yet released), parcel
/// picked up. Else the attempt's logged result and the answer.
fn otp_gate(s: &PaymentSession) -> Result<PaymentIntentId, (&'static str, EngineError)> {
    if s.otp_locked {
        return Err(("locked", locked()));
    }
    let paid_intent = match (s.status, s.paid_intent) {
        (SessionStatus::Paid, Some(pi)) => pi,
        (SessionStatus::Released, _) => {
            return Err((
                "already_released",
                EngineError::InvalidStateTransition {
                    object: "payment session",
                    from: s.status.as_str().into(),
                    action: "verify an OTP".into(),
                },
            ));
        }
        _ => {
            return Err((
                "not_paid",
                EngineError::Conflict {
                    code: "session_not_paid",
                    message: "the consumer has not paid yet; no OTP exists for this reference"
                        .into(),
                },
            ));
        }
    };
    if s.parcel_status == ParcelStatus::AwaitingPickup {
        return Err((
            "parcel_not_picked_up",
            EngineError::Conflict {
                code: "parcel_not_picked_up",
                message: "the parcel has not been picked up; mark it PICKED_UP first".into(),
            },
        ));
    }
    Ok(paid_intent)
}

/// Logs an attempt: who, the result, the failures so far (never the OTP).
fn note_attempt(
    s: &mut PaymentSession,
    c: &mut Change,
    now: Timestamp,
    driver: &str,
    result: &str,
) {
    c.note(
        s,
        now,
        "otp.attempt",
        serde_json::json!({"driver": driver, "result": result, "failures": s.otp_failures}),
    );
}

/// Counts a wrong OTP; the last allowed one locks the reference. The driver's answer.
fn wrong_otp(
    s: &mut PaymentSession,
    c: &mut Change,
    now: Timestamp,
    check: &OtpCheck<'_>,
) -> EngineError {
    s.otp_failures += 1;
    let left = check.max_failures.saturating_sub(s.otp_failures);
    note_attempt(s, c, now, check.driver, "wrong");
    if left == 0 {
        s.otp_locked = true;
        c.note(
            s,
            now,
            "otp.locked",
            serde_json::json!({"failures": s.otp_failures}),
        );
        return locked();
    }
    EngineError::invalid(
        "otp_incorrect",
        "otp_4",
        format!("wrong OTP; {left} attempt(s) left before this reference is locked"),
    )
}

/// The answer while a reference is locked.
fn locked() -> EngineError {
    EngineError::Locked {
        code: "otp_locked",
        message: "too many wrong OTPs for this reference; an operator must unlock it \
                  (POST /api/payment-sessions/{id}/unlock-otp)"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_request_debug_hides_the_otp() {
        let r = VerifyOtpRequest {
            ipay_reference_18: "1".into(),
            otp_4: "1234".into(),
        };
        assert!(!format!("{r:?}").contains("1234"));
    }
}
