//! A shop's new version of an order that may already have a payment session: the update is
//! applied under the order's and the session's reservations, so it never interleaves with a
//! payment, and noted in the session's log. Which fields may change is the orders module's rule
//! (`apply_shop_update`).

use super::store::Change;
use super::{SESSION_BY_ORDER, SessionStatus};
use crate::LastMile;
use crate::orders::{
    Order, OrderId, UpdateResult, UpdateStage, ValidOrder, apply_shop_update, order_write_ops,
};
use crate::stream;
use ipay_engine::error::EngineResult;
use ipay_engine::ids::MerchantId;
use ipay_engine::model::Event;
use ipay_engine::store::WriteOp;

impl LastMile {
    /// Applies a shop's new version of an existing order ([`apply_shop_update`] decides which
    /// fields may change). Holds the order's session-creation reservation and, when the order
    /// has a session, the session's, so the update never interleaves with a payment on any
    /// node. With a session, the update is also noted in the session's log
    /// (`order.updated_by_shop`, with what changed and what was kept). `extra` joins the batch.
    pub(crate) async fn update_order_from_shop(
        &self,
        merchant: MerchantId,
        order_id: OrderId,
        update: ValidOrder,
        cancelled: bool,
        extra: Vec<WriteOp>,
    ) -> EngineResult<(Order, UpdateResult)> {
        let oid = order_id.to_string();
        let create_guard = self.ps_hold(&format!("lm:order-session:{oid}")).await?;
        let out = async {
            let Some(session) = self.ps_lookup(SESSION_BY_ORDER, &oid).await? else {
                return self
                    .update_order_without_session(merchant, &oid, update, cancelled, extra)
                    .await;
            };
            let (_, out) = self
                .ps_mutate(session.id, async |s, c| {
                    let mut order = self.get_order(merchant, &oid).await?;
                    let paid = matches!(s.status, SessionStatus::Paid | SessionStatus::Released);
                    let stage = if paid {
                        UpdateStage::Paid
                    } else {
                        UpdateStage::SessionUnpaid
                    };
                    let shop_amount = update.amount();
                    let r = apply_shop_update(&mut order, update, cancelled, stage);
                    if !r.changed.is_empty() || !r.kept.is_empty() {
                        let now = self.engine.clock().now();
                        c.note(
                            s,
                            now,
                            "order.updated_by_shop",
                            serde_json::json!({
                                "order_id": oid,
                                "changed": r.changed,
                                "kept": r.kept,
                                "shop_amount": shop_amount,
                            }),
                        );
                        s.country = order.customer.address.country.clone();
                        s.carrier_code = order.carrier_code.clone();
                    }
                    self.order_updated_ops(&mut order, &r, c, s.livemode)?;
                    c.batch.ops.extend(extra);
                    Ok((order, r))
                })
                .await?;
            Ok(out)
        }
        .await;
        create_guard.release(self).await;
        out
    }

    /// The shop's update of an order that has no session (yet): the order and its event in
    /// one batch, with `extra`.
    async fn update_order_without_session(
        &self,
        merchant: MerchantId,
        oid: &str,
        update: ValidOrder,
        cancelled: bool,
        extra: Vec<WriteOp>,
    ) -> EngineResult<(Order, UpdateResult)> {
        let mut order = self.get_order(merchant, oid).await?;
        let r = apply_shop_update(&mut order, update, cancelled, UpdateStage::NoSession);
        let mut c = Change::new();
        let livemode = self.merchant_livemode(merchant).await?;
        self.order_updated_ops(&mut order, &r, &mut c, livemode)?;
        c.batch.ops.extend(extra);
        for e in &c.events {
            c.batch.push(WriteOp::PutEvent(e.clone()));
        }
        if !c.batch.ops.is_empty() {
            self.engine.ledger().submit(c.batch).await?;
            stream::publish(self.engine.hot().as_ref(), &c.events).await;
        }
        Ok((order, r))
    }

    /// The order's new record and an `order.updated` event (streamed), when anything changed.
    fn order_updated_ops(
        &self,
        order: &mut Order,
        r: &UpdateResult,
        c: &mut Change,
        livemode: bool,
    ) -> EngineResult<()> {
        if r.changed.is_empty() {
            return Ok(());
        }
        let now = self.engine.clock().now();
        order.updated = now;
        c.batch.ops.extend(order_write_ops(order)?);
        let e = Event::new(
            order.merchant_id,
            livemode,
            "order.updated",
            now,
            order.id.to_string(),
            &*order,
        );
        // `ps_commit` writes the events of `c`; the path without a session does too.
        c.batch.push(stream::index_op(&e));
        c.events.push(e);
        Ok(())
    }
}
