//! Creating an order's payment session: one per order (under the order's reservation, on any
//! node), with a fresh 18-digit reference nobody else holds and a random pay token.

use super::store::{Change, Held, new_token, token_key};
use super::{
    ParcelStatus, PaymentSession, SESSION_BY_ORDER, SESSION_BY_REF, SESSION_BY_TOKEN, SESSION_DAYS,
    SessionId, SessionStatus, SessionView,
};
use crate::LastMile;
use crate::daily::day;
use crate::orders::{Order, OrderStatus};
use crate::reference::IpayReference;
use ipay_engine::clock::Timestamp;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::MerchantId;
use ipay_engine::store::WriteOp;

impl LastMile {
    /// Creates the payment session of an order (or returns the one it has: `false`).
    pub async fn create_session(
        &self,
        merchant: MerchantId,
        order_id: &str,
    ) -> EngineResult<(SessionView, bool)> {
        let order = self.get_order(merchant, order_id).await?;
        if let Some(s) = self
            .ps_lookup(SESSION_BY_ORDER, &order.id.to_string())
            .await?
        {
            return Ok((self.session_view(&s), false));
        }
        check_order_payable(&order)?;
        // One creation per order at a time, on any node.
        let guard = self
            .ps_hold(&format!("lm:order-session:{}", order.id))
            .await?;
        let out = self.create_session_held(&order).await;
        guard.release(self).await;
        out
    }

    async fn create_session_held(&self, order: &Order) -> EngineResult<(SessionView, bool)> {
        if let Some(s) = self
            .ps_lookup(SESSION_BY_ORDER, &order.id.to_string())
            .await?
        {
            return Ok((self.session_view(&s), false));
        }
        let (reference, ref_guard) = self.reserve_reference().await?;
        let now = self.engine.clock().now();
        let token = new_token();
        let livemode = self.merchant_livemode(order.merchant_id).await?;
        let mut s = new_session(order, reference, token.clone(), livemode, now);
        let mut c = Change::new();
        let sid = s.id.to_string();
        for (kind, key) in [
            (SESSION_BY_REF, reference.to_string()),
            (SESSION_BY_TOKEN, token_key(&token)),
            (SESSION_BY_ORDER, order.id.to_string()),
        ] {
            c.batch.push(WriteOp::PutRecord {
                kind,
                key,
                value: sid.clone().into_bytes(),
            });
        }
        c.batch.push(WriteOp::PutEntry {
            index: SESSION_DAYS,
            partition: s.merchant_id.to_string(),
            sort: day(s.id.timestamp_ms()),
            value: vec![],
        });
        let view = self.session_view(&s);
        c.event(&mut s, now, "session.created", &view);
        self.ps_order_status_ops(&s, OrderStatus::SessionCreated, &mut c)
            .await;
        let out = self.ps_commit(&mut s, c).await;
        ref_guard.release(self).await;
        out?;
        Ok((self.session_view(&s), true))
    }

    /// A fresh random reference, reserved so no two sessions can take the same one; give the
    /// reservation back once the session holding it is committed.
    async fn reserve_reference(&self) -> EngineResult<(IpayReference, Held)> {
        let ledger = self.engine.ledger();
        loop {
            let r = IpayReference::generate();
            let g = self.ps_hold(&format!("lm:ref:{r}")).await?;
            if ledger
                .get_record(SESSION_BY_REF, &r.to_string())
                .await?
                .is_none()
            {
                return Ok((r, g));
            }
            g.release(self).await;
        }
    }
}

/// A new session of `order`: CREATED, parcel awaiting pickup, nothing paid or logged yet.
fn new_session(
    order: &Order,
    reference: IpayReference,
    pay_token: String,
    livemode: bool,
    now: Timestamp,
) -> PaymentSession {
    PaymentSession {
        id: SessionId::new_at(now.ms()),
        merchant_id: order.merchant_id,
        livemode,
        order_id: order.id.to_string(),
        reference,
        pay_token,
        status: SessionStatus::Created,
        parcel_status: ParcelStatus::AwaitingPickup,
        amount: order.amount.value,
        currency: order.amount.currency.code().to_string(),
        country: order.customer.address.country.clone(),
        carrier_code: order.carrier_code.clone(),
        psp: None,
        payment_method: None,
        payment_intent: None,
        paid_intent: None,
        otp_failures: 0,
        otp_locked: false,
        log_entries: 0,
        log_dropped: 0,
        created: now,
        updated: now,
        paid_at: None,
        released_at: None,
        delivered_at: None,
    }
}

/// Whether an order may get a session: collected through IPAY and not cancelled.
fn check_order_payable(o: &Order) -> EngineResult<()> {
    if !o.ipay_flag {
        return Err(EngineError::Conflict {
            code: "order_not_ipay",
            message: format!(
                "order {} is not collected through IPAY (ipay_flag is false)",
                o.id
            ),
        });
    }
    if o.status == OrderStatus::Cancelled {
        return Err(EngineError::Conflict {
            code: "order_cancelled",
            message: format!("order {} is cancelled", o.id),
        });
    }
    Ok(())
}
