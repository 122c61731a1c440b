//! The consumer's side of a session: the pay page, starting (or restarting) a payment through
//! the engine under the merchant's last-mile service, and recording what the engine decided
//! about it (`session.paid`, or back to CREATED when it failed).

use super::store::{Change, internal, token_key};
use super::{
    ConsumerPayment, ConsumerView, PaymentSession, SERVICE_NAME, SESSION_BY_TOKEN, SessionAction,
    SessionStatus, session_transition,
};
use crate::LastMile;
use crate::orders::OrderStatus;
use ipay_engine::engine::{AmountInput, AuthContext, CreateIntentRequest};
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::{ApiKeyId, MerchantId, ServiceId};
use ipay_engine::model::{ApiKey, IntentStatus, PaymentIntent, Permission, ServiceAction};
use ipay_engine::model::{ServiceInput, ServiceStatus};
use serde::Deserialize;

/// `POST /api/session/{token}/start-payment` body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartPaymentRequest {
    /// One of the session's `channels`.
    pub channel: String,
    /// Test mode, `sandbox` only: settle at once with `succeed` or `fail`.
    #[serde(default)]
    pub simulate: Option<String>,
}

/// Which payment method a channel collects with.
fn method_of(channel: &str) -> &'static str {
    match channel {
        "alipay" | "wechat" | "promptpay" => "qr",
        "stripe" => "card",
        "multisafepay" => "ideal",
        _ => "test",
    }
}

impl LastMile {
    /// An engine caller acting for `merchant` in the session's mode (never stored, never
    /// usable as an API key: it has no secret).
    fn ps_engine_ctx(&self, merchant: MerchantId, livemode: bool) -> AuthContext {
        let now = self.engine.clock().now();
        AuthContext {
            merchant_id: merchant,
            livemode,
            key: ApiKey {
                id: ApiKeyId::from_u128(0),
                label: "last-mile".into(),
                redacted: "internal".into(),
                permissions: vec![
                    Permission::ServicesRead,
                    Permission::ServicesWrite,
                    Permission::PaymentIntentsRead,
                    Permission::PaymentIntentsWrite,
                ],
                ip_whitelist: vec![],
                livemode,
                merchant_id: merchant,
                created: now,
                expires_at: now.plus_secs(3600),
                revoked_at: None,
            },
        }
    }

    /// Moves the last-mile service and returns its status. Concurrent first payments of one
    /// merchant race to activate it: a loser finds it already moved (409
    /// `invalid_state_transition`), which is what it wanted, so it reads the status instead.
    async fn ps_service_move(
        &self,
        ctx: &AuthContext,
        id: &str,
        action: ServiceAction,
    ) -> EngineResult<ServiceStatus> {
        match self.engine.service_action(ctx, id, action).await {
            Ok(svc) => Ok(svc.status),
            Err(EngineError::InvalidStateTransition { .. }) => {
                Ok(self.engine.get_service(ctx, id).await?.status)
            }
            Err(e) => Err(e),
        }
    }

    /// The merchant's active last-mile service in the caller's mode, created on first use and
    /// updated when the channels a session may be paid with change (a channel configured).
    async fn ps_service_for(&self, ctx: &AuthContext) -> EngineResult<ServiceId> {
        let channels = self.session_channels(ctx.merchant_id, ctx.livemode).await?;
        let cache_key = (ctx.merchant_id, ctx.livemode);
        if let Some(e) = self.sessions.services.get(&cache_key)
            && e.1 == channels
        {
            return Ok(e.0);
        }
        let input = ServiceInput {
            name: Some(SERVICE_NAME.into()),
            description: Some("Pay-on-delivery parcels (IPAY last mile)".into()),
            accepted_channels: Some(channels.clone()),
            ..Default::default()
        };
        let (svc, _) = self.engine.upsert_service(ctx, input).await?;
        let action = match svc.status {
            ServiceStatus::Draft => Some(ServiceAction::Activate),
            ServiceStatus::Paused => Some(ServiceAction::Resume),
            _ => None,
        };
        let status = match action {
            None => svc.status,
            Some(action) => {
                self.ps_service_move(ctx, &svc.id.to_string(), action)
                    .await?
            }
        };
        if status != ServiceStatus::Active {
            return Err(EngineError::Conflict {
                code: "service_not_active",
                message: format!(
                    "the merchant's `{SERVICE_NAME}` service is {}",
                    status.as_str()
                ),
            });
        }
        self.sessions.services.insert(cache_key, (svc.id, channels));
        Ok(svc.id)
    }

    /// If the session awaits a payment the engine has since settled, records the outcome
    /// (`session.paid`, or back to CREATED on failure). Cheap when nothing is pending. Sessions
    /// settle from the intent's committed event ([`super::settle`]); this read-side check only
    /// lets a reader that comes first see the outcome at once.
    pub async fn settle_from_intent(&self, s: PaymentSession) -> EngineResult<PaymentSession> {
        let (SessionStatus::PaymentPending, Some(pi)) = (s.status, s.payment_intent) else {
            return Ok(s);
        };
        let Some(intent) = self.engine.ledger().get_intent(pi).await? else {
            return Ok(s);
        };
        if intent.status == IntentStatus::Pending {
            return Ok(s);
        }
        let (s, ()) = self
            .ps_mutate(s.id, async |s, c| {
                if s.status == SessionStatus::PaymentPending && s.payment_intent == Some(pi) {
                    self.ps_apply_intent_outcome(s, c, &intent).await?;
                }
                Ok(())
            })
            .await?;
        Ok(s)
    }

    /// Records a final intent's outcome on the held session: `session.paid` (and the order
    /// paid) on success, back to CREATED otherwise. The one place both the event-driven
    /// settle ([`super::settle`]) and reads apply it.
    pub(super) async fn ps_apply_intent_outcome(
        &self,
        s: &mut PaymentSession,
        c: &mut Change,
        intent: &PaymentIntent,
    ) -> EngineResult<()> {
        let now = self.engine.clock().now();
        match intent.status {
            IntentStatus::Pending => {}
            IntentStatus::Succeeded => {
                s.status = session_transition(s.status, SessionAction::PaymentSucceeded)?;
                s.paid_intent = Some(intent.id);
                s.paid_at = Some(now);
                let view = self.session_view(s);
                c.event(s, now, "session.paid", &view);
                self.ps_order_status_ops(s, OrderStatus::Paid, c).await;
            }
            other => {
                s.status = session_transition(s.status, SessionAction::PaymentFailed)?;
                c.note(
                    s,
                    now,
                    "payment.failed",
                    serde_json::json!({"payment_intent": intent.id, "intent_status": other.as_str(),
                        "reason": intent.failure_reason}),
                );
            }
        }
        Ok(())
    }

    /// The consumer's page.
    pub async fn consumer_view(&self, token: &str) -> EngineResult<ConsumerView> {
        let s = self.ps_by_token(token).await?;
        let s = self.settle_from_intent(s).await?;
        let payment = match (s.status, s.payment_intent) {
            (SessionStatus::PaymentPending, Some(pi)) => self
                .engine
                .ledger()
                .get_intent(pi)
                .await?
                .map(|i| ConsumerPayment {
                    channel: i.channel.clone(),
                    status: i.status.as_str().to_string(),
                    qr_code: Some(i.qr_code.clone()),
                    expires_at: i.expires_at,
                }),
            _ => None,
        };
        let otp = match (s.status, s.paid_intent) {
            (SessionStatus::Paid, Some(pi)) => {
                let key = self.ps_otp_key(s.merchant_id).await?;
                Some(
                    key.derive(&s.reference, &pi.to_string())
                        .expose()
                        .to_string(),
                )
            }
            _ => None,
        };
        let merchant_name = self.merchant(s.merchant_id).await.ok().map(|m| m.name);
        Ok(ConsumerView {
            ipay_reference_18: s.reference.to_string(),
            ipay_reference_display: s.reference.grouped(),
            merchant_name,
            amount: s.amount,
            currency: s.currency.clone(),
            status: s.status,
            parcel_status: s.parcel_status,
            channels: self.session_channels(s.merchant_id, s.livemode).await?,
            payment,
            otp,
        })
    }

    async fn ps_by_token(&self, token: &str) -> EngineResult<PaymentSession> {
        // Tokens are 43 base64url characters; anything else cannot match.
        let nf = || EngineError::not_found("payment session", "(token)");
        if token.len() > 100 {
            return Err(nf());
        }
        self.ps_lookup(SESSION_BY_TOKEN, &token_key(token))
            .await?
            .ok_or_else(nf)
    }

    /// Starts (or restarts) the consumer's payment through the engine.
    pub async fn start_payment(
        &self,
        token: &str,
        req: StartPaymentRequest,
    ) -> EngineResult<ConsumerView> {
        let simulate = check_simulate(&req)?;
        let s = self.ps_by_token(token).await?;
        let s = self.settle_from_intent(s).await?;
        let allowed = self.session_channels(s.merchant_id, s.livemode).await?;
        check_channel(&req, simulate, s.livemode, &allowed)?;
        let ctx = self.ps_engine_ctx(s.merchant_id, s.livemode);
        let channel = req.channel.as_str();
        self.ps_mutate(s.id, async |s, c| {
            if self.reuse_open_payment(s, c, &ctx, channel).await? {
                return Ok(());
            }
            self.open_payment(s, c, &ctx, channel, simulate).await
        })
        .await?;
        self.consumer_view(token).await
    }

    /// Deals with the held session's open payment, if any: one the engine has settled is
    /// recorded, one still open on `channel` is reused (`true`: nothing more to do) rather than
    /// duplicated, one open on another channel is cancelled.
    async fn reuse_open_payment(
        &self,
        s: &mut PaymentSession,
        c: &mut Change,
        ctx: &AuthContext,
        channel: &str,
    ) -> EngineResult<bool> {
        let (SessionStatus::PaymentPending, Some(pi)) = (s.status, s.payment_intent) else {
            return Ok(false);
        };
        let Some(i) = self.engine.ledger().get_intent(pi).await? else {
            return Ok(false);
        };
        if i.status != IntentStatus::Pending {
            self.ps_apply_intent_outcome(s, c, &i).await?;
        } else if i.channel == channel {
            return Ok(true);
        } else {
            let _ = self
                .engine
                .cancel_intent(
                    ctx,
                    &pi.to_string(),
                    Some("consumer switched channel".into()),
                )
                .await;
        }
        Ok(false)
    }

    /// Opens a new payment of the held session on `channel` (settling it at once when
    /// simulated) and notes `payment.started`.
    async fn open_payment(
        &self,
        s: &mut PaymentSession,
        c: &mut Change,
        ctx: &AuthContext,
        channel: &str,
        simulate: Option<bool>,
    ) -> EngineResult<()> {
        let next = session_transition(s.status, SessionAction::StartPayment)?;
        let intent = self.create_payment_intent(s, ctx, channel).await?;
        s.status = next;
        s.payment_intent = Some(intent.id);
        s.psp = Some(channel.to_string());
        s.payment_method = Some(method_of(channel).into());
        let now = self.engine.clock().now();
        c.note(
            s,
            now,
            "payment.started",
            serde_json::json!({"payment_intent": intent.id, "channel": channel}),
        );
        if let Some(ok) = simulate {
            let settled = self
                .engine
                .sandbox_settle(ctx, &intent.id.to_string(), ok)
                .await?;
            self.ps_apply_intent_outcome(s, c, &settled).await?;
        }
        Ok(())
    }

    /// An engine intent for the session's amount under the merchant's last-mile service,
    /// tagged with the session and its reference.
    async fn create_payment_intent(
        &self,
        s: &PaymentSession,
        ctx: &AuthContext,
        channel: &str,
    ) -> EngineResult<PaymentIntent> {
        let service = self.ps_service_for(ctx).await?;
        let mut metadata = serde_json::Map::new();
        metadata.insert("ipay_session".into(), s.id.to_string().into());
        metadata.insert("ipay_reference".into(), s.reference.to_string().into());
        let out = self
            .engine
            .create_intent(
                ctx,
                CreateIntentRequest {
                    service_id: service.to_string(),
                    amount: AmountInput {
                        value: s.amount,
                        currency: s.currency.clone(),
                    },
                    channel: channel.to_string(),
                    metadata: Some(metadata),
                    expires_in: Some(self.ps_scfg().payment_expires_in_secs),
                },
                None,
            )
            .await?;
        serde_json::from_str(&out.body).map_err(internal)
    }
}

/// Reads `simulate` of a start request (`Some(true)`: succeed, `Some(false)`: fail).
fn check_simulate(req: &StartPaymentRequest) -> EngineResult<Option<bool>> {
    match req.simulate.as_deref() {
        None => Ok(None),
        Some("succeed") => Ok(Some(true)),
        Some("fail") => Ok(Some(false)),
        Some(_) => Err(EngineError::invalid(
            "parameter_invalid",
            "simulate",
            "simulate must be `succeed` or `fail`",
        )),
    }
}

/// Checks the channel of a start request against the session's `allowed` channels; a
/// simulated payment is for test sessions on the sandbox channel only.
fn check_channel(
    req: &StartPaymentRequest,
    simulate: Option<bool>,
    livemode: bool,
    allowed: &[String],
) -> EngineResult<()> {
    if !allowed.contains(&req.channel) {
        return Err(EngineError::invalid(
            "channel_not_accepted",
            "channel",
            format!("pay with one of: {}", allowed.join(", ")),
        ));
    }
    if simulate.is_some() && (livemode || req.channel != "sandbox") {
        return Err(EngineError::Forbidden {
            code: "test_mode_only",
            message: "simulate works in test mode with the sandbox channel only".into(),
        });
    }
    Ok(())
}
