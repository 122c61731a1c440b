//! Refunds: refunding part or all of a succeeded intent (idempotent when a key is given),
//! reading and listing refunds.
//!
//! The refund itself is decided by the intent's payment session, which checks the amount
//! still refundable and writes the refund with the intent's new state in one batch; this
//! module validates the request and routes it.

use crate::auth::AuthContext;
use crate::clock::Clock;
use crate::config::Limits;
use crate::error::{EngineError, EngineResult};
use crate::idempotency::{Idempotency, IdempotentOutcome, canonical_hash};
use crate::ids::{PaymentIntentId, RefundId};
use crate::intents::{AmountInput, Intents};
use crate::model::{IntentCommand, PaymentIntent, Permission, Refund};
use crate::money::Money;
use crate::paging::page;
use crate::session::{IdempotencySpec, SessionRegistry};
use crate::store::{Ledger, Page, PageRequest};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Longest refund reason, characters.
const MAX_REASON_CHARS: usize = 500;

/// `POST /v1/refunds` body.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefundRequest {
    /// The intent to refund.
    pub payment_intent: String,
    /// Defaults to everything still refundable.
    #[serde(default)]
    pub amount: Option<AmountInput>,
    /// Why, in the merchant's words.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Refunds of one engine.
pub(crate) struct Refunds {
    ledger: Arc<dyn Ledger>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    sessions: SessionRegistry,
    intents: Arc<Intents>,
    idempotency: Arc<Idempotency>,
}

impl Refunds {
    /// Refunds on these stores, decided by these sessions.
    pub(crate) fn new(
        ledger: Arc<dyn Ledger>,
        clock: Arc<dyn Clock>,
        limits: Limits,
        sessions: SessionRegistry,
        intents: Arc<Intents>,
        idempotency: Arc<Idempotency>,
    ) -> Self {
        Refunds {
            ledger,
            clock,
            limits,
            sessions,
            intents,
            idempotency,
        }
    }

    /// Refunds part or all of a succeeded intent (idempotent when a key is given).
    pub(crate) async fn create(
        &self,
        ctx: &AuthContext,
        req: CreateRefundRequest,
        idempotency_key: Option<&str>,
    ) -> EngineResult<IdempotentOutcome> {
        ctx.require(Permission::RefundsWrite)?;
        if req
            .reason
            .as_ref()
            .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
        {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "reason",
                "reason is limited to 500 characters",
            ));
        }
        let hash = canonical_hash(&req);
        self.idempotency
            .run(ctx, "refunds", idempotency_key, hash, |spec| {
                self.create_now(ctx, req, spec)
            })
            .await
    }

    /// Hands the refund to the intent's session and answers with the refund it made.
    async fn create_now(
        &self,
        ctx: &AuthContext,
        req: CreateRefundRequest,
        spec: Option<IdempotencySpec>,
    ) -> EngineResult<IdempotentOutcome> {
        let pi = self.refunded_intent(ctx, &req.payment_intent).await?;
        let amount = match &req.amount {
            None => None,
            Some(a) => Some(
                Money::from_parts(a.value, &a.currency)
                    .map_err(|e| EngineError::money("amount", e))?,
            ),
        };
        let cmd = IntentCommand::Refund {
            refund_id: RefundId::new_at(self.clock.now().ms()),
            amount,
            reason: req.reason.clone(),
        };
        let applied = self.sessions.command(pi.id, cmd, spec).await?;
        let refund = applied
            .refund
            .ok_or_else(|| EngineError::Internal("refund command produced no refund".into()))?;
        Ok(IdempotentOutcome {
            status: 201,
            body: serde_json::to_string(&refund)
                .map_err(|e| EngineError::Internal(e.to_string()))?,
            replayed: false,
        })
    }

    /// The caller's intent named in the request; an unknown one is a bad parameter here, not
    /// a missing resource.
    async fn refunded_intent(&self, ctx: &AuthContext, id: &str) -> EngineResult<PaymentIntent> {
        match self.intents.owned(ctx, id).await {
            Err(EngineError::NotFound { .. }) => Err(EngineError::Invalid {
                code: "resource_missing",
                message: format!(
                    "no payment intent with id `{}`",
                    id.chars().take(60).collect::<String>()
                ),
                param: Some("payment_intent".into()),
            }),
            other => other,
        }
    }

    /// Refunds, optionally of one intent, newest first.
    pub(crate) async fn list(
        &self,
        ctx: &AuthContext,
        intent: Option<&str>,
        limit: Option<usize>,
        offset: Option<usize>,
    ) -> EngineResult<(Page<Refund>, PageRequest)> {
        ctx.require(Permission::RefundsRead)?;
        let p = page(&self.limits, limit, offset)?;
        let pid = match intent {
            None => None,
            Some(s) => Some(PaymentIntentId::parse(s).map_err(|e| {
                EngineError::invalid("parameter_invalid", "payment_intent", e.to_string())
            })?),
        };
        Ok((
            self.ledger
                .list_refunds(ctx.merchant_id, ctx.livemode, pid, p)
                .await?,
            p,
        ))
    }

    /// One refund.
    pub(crate) async fn get(&self, ctx: &AuthContext, id: &str) -> EngineResult<Refund> {
        ctx.require(Permission::RefundsRead)?;
        let rid = RefundId::parse(id).map_err(|_| EngineError::not_found("refund", id))?;
        match self.ledger.get_refund(rid).await? {
            Some(r) if ctx.owns(r.merchant_id, r.livemode) => Ok(r),
            _ => Err(EngineError::not_found("refund", id)),
        }
    }
}
