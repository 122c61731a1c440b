//! Payment intents as callers see them: creating one (validation, the service it pays for,
//! the channel that collects it), reading, listing, cancelling, and settling sandbox intents.
//!
//! An intent's state changes in exactly one place, its payment session
//! ([`crate::session`]), which applies the transition table of [`crate::model::intent`];
//! this module only validates requests and hands commands to sessions.

use crate::auth::AuthContext;
use crate::channel::ChannelPaymentRequest;
use crate::clock::{Clock, Timestamp};
use crate::config::Limits;
use crate::error::{EngineError, EngineResult};
use crate::idempotency::{Idempotency, IdempotentOutcome, canonical_hash};
use crate::ids::{PaymentIntentId, ServiceId};
use crate::model::service::KNOWN_CHANNELS;
use crate::model::{
    IntentCommand, IntentStatus, PaymentIntent, Permission, Service, ServiceStatus,
};
use crate::money::Money;
use crate::paging::page;
use crate::routing::ChannelRouter;
use crate::services::Services;
use crate::session::{Created, IdempotencySpec, SessionRegistry};
use crate::settlement::Settlement;
use crate::store::{IntentQuery, Ledger, Page, PageRequest};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Longest cancellation reason, characters.
const MAX_REASON_CHARS: usize = 500;

/// An amount as it arrives on the wire, validated into [`Money`] by the engine.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmountInput {
    /// Minor units, a positive integer.
    pub value: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// `POST /v1/payment-intents` body.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIntentRequest {
    /// The service (manifest) being paid for.
    pub service_id: String,
    /// What to collect.
    pub amount: AmountInput,
    /// The channel that collects it; one the service accepts.
    pub channel: String,
    /// The merchant's own key/value data, kept with the intent.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Seconds until the intent expires (default 900).
    #[serde(default)]
    pub expires_in: Option<i64>,
}

impl CreateIntentRequest {
    /// The same request in one canonical spelling, for comparing idempotent retries: empty
    /// metadata equals no metadata, and a service id written bare, with `svc_` or as a UUID is
    /// one id.
    pub(crate) fn normalized(&self) -> CreateIntentRequest {
        let mut n = self.clone();
        if n.metadata.as_ref().is_some_and(|m| m.is_empty()) {
            n.metadata = None;
        }
        if let Ok(id) = ServiceId::parse(&n.service_id) {
            n.service_id = id.to_string();
        }
        n
    }
}

/// Query of `GET /v1/payment-intents`; validated by [`crate::Engine::list_intents`].
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct IntentListParams {
    /// 1 to 100, default 20.
    pub limit: Option<usize>,
    /// Default 0.
    pub offset: Option<usize>,
    /// pending | succeeded | failed | expired | cancelled
    pub status: Option<String>,
    /// Only intents of this channel.
    pub channel: Option<String>,
    /// RFC 3339 time or `YYYY-MM-DD` (inclusive).
    pub created_after: Option<String>,
    /// RFC 3339 time or `YYYY-MM-DD` (exclusive).
    pub created_before: Option<String>,
    /// `created:desc` (default) or `created:asc`.
    pub sort: Option<String>,
}

/// A create request that passed the checks needing no I/O.
struct ValidRequest {
    money: Money,
    expires_in: i64,
    metadata: serde_json::Map<String, serde_json::Value>,
    service_id: ServiceId,
}

/// Payment intents of one engine.
pub(crate) struct Intents {
    ledger: Arc<dyn Ledger>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    sessions: SessionRegistry,
    services: Arc<Services>,
    routing: Arc<ChannelRouter>,
    idempotency: Arc<Idempotency>,
    settlement: Option<Arc<Settlement>>,
}

/// Who asks for a payment intent: the merchant (the API) or a subscription's renewal, which a
/// paused service still takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Merchant,
    Renewal,
}

impl Intents {
    /// Intents on these stores, routed through these sessions and channels.
    pub(crate) fn new(
        ledger: Arc<dyn Ledger>,
        clock: Arc<dyn Clock>,
        limits: Limits,
        sessions: SessionRegistry,
        services: Arc<Services>,
        routing: Arc<ChannelRouter>,
        idempotency: Arc<Idempotency>,
    ) -> Self {
        Intents {
            ledger,
            clock,
            limits,
            sessions,
            services,
            routing,
            idempotency,
            settlement: None,
        }
    }

    /// Successes of sandbox intents carry a settlement quote from `settlement`.
    pub(crate) fn with_settlement(mut self, settlement: Arc<Settlement>) -> Self {
        self.settlement = Some(settlement);
        self
    }

    /// Creates a payment intent (idempotent when `idempotency_key` is given).
    pub(crate) async fn create(
        &self,
        ctx: &AuthContext,
        req: CreateIntentRequest,
        idempotency_key: Option<&str>,
    ) -> EngineResult<IdempotentOutcome> {
        self.create_as(ctx, req, idempotency_key, Origin::Merchant)
            .await
    }

    /// Creates the renewal payment of a subscription: as [`Self::create`], except that a
    /// paused service still takes it (pausing hides a service from discovery; its active
    /// subscriptions continue, as the spec's manifest lifecycle says).
    pub(crate) async fn create_renewal(
        &self,
        ctx: &AuthContext,
        req: CreateIntentRequest,
        idempotency_key: &str,
    ) -> EngineResult<IdempotentOutcome> {
        self.create_as(ctx, req, Some(idempotency_key), Origin::Renewal)
            .await
    }

    async fn create_as(
        &self,
        ctx: &AuthContext,
        req: CreateIntentRequest,
        idempotency_key: Option<&str>,
        origin: Origin,
    ) -> EngineResult<IdempotentOutcome> {
        ctx.require(Permission::PaymentIntentsWrite)?;
        let hash = canonical_hash(&req.normalized());
        self.idempotency
            .run(
                ctx,
                "payment_intents",
                idempotency_key,
                hash,
                |spec| async move {
                    let created = self.create_now(ctx, req, spec, origin).await?;
                    Ok(IdempotentOutcome {
                        status: 201,
                        body: created.json,
                        replayed: false,
                    })
                },
            )
            .await
    }

    /// Validates the request, opens the payment with the channel and hands the new intent to
    /// its session, which makes it durable.
    async fn create_now(
        &self,
        ctx: &AuthContext,
        mut req: CreateIntentRequest,
        idem: Option<IdempotencySpec>,
        origin: Origin,
    ) -> EngineResult<Created> {
        let metadata = req.metadata.take().unwrap_or_default();
        let valid = self.validate(&req, metadata)?;
        let service = self
            .payable_service(ctx, &req, valid.service_id, origin)
            .await?;
        let adapter = self
            .routing
            .usable_adapter(ctx, &req.channel, valid.money)
            .await?;
        let now = self.clock.now();
        let id = PaymentIntentId::new_at(now.ms());
        let expires_at = now.plus_secs(valid.expires_in);
        let creq = ChannelPaymentRequest {
            intent_id: id,
            amount: valid.money,
            expires_at,
            livemode: ctx.livemode,
        };
        let payment = self
            .routing
            .open_payment(ctx, &service, &adapter, &creq, &req.channel)
            .await?;
        let intent = PaymentIntent {
            id,
            status: IntentStatus::Pending,
            amount: valid.money,
            amount_refunded: 0,
            refunds_pending: Vec::new(),
            payer: None,
            channel: req.channel,
            service_id: service.id,
            qr_code: payment.qr_code,
            channel_reference: payment.channel_reference,
            metadata: valid.metadata,
            failure_reason: None,
            cancellation_reason: None,
            settlement: None,
            livemode: ctx.livemode,
            merchant_id: ctx.merchant_id,
            expires_at,
            created: now,
            updated: now,
        };
        self.sessions.create(intent, idem).await
    }

    /// The checks of a create request that need no I/O: amount, expiry, metadata, a known
    /// channel, a well-formed service id.
    fn validate(
        &self,
        req: &CreateIntentRequest,
        metadata: serde_json::Map<String, serde_json::Value>,
    ) -> EngineResult<ValidRequest> {
        let limits = &self.limits;
        let money = Money::from_parts(req.amount.value, &req.amount.currency)
            .map_err(|e| EngineError::money("amount", e))?;
        let expires_in = req.expires_in.unwrap_or(limits.expires_in_default_secs);
        if !(limits.expires_in_min_secs..=limits.expires_in_max_secs).contains(&expires_in) {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "expires_in",
                format!(
                    "expires_in must be between {} and {} seconds",
                    limits.expires_in_min_secs, limits.expires_in_max_secs
                ),
            ));
        }
        self.validate_metadata(&metadata)?;
        if !KNOWN_CHANNELS.contains(&req.channel.as_str()) {
            return Err(EngineError::invalid(
                "channel_unknown",
                "channel",
                format!(
                    "unknown channel `{}`; known channels: {}",
                    req.channel.chars().take(40).collect::<String>(),
                    KNOWN_CHANNELS.join(", ")
                ),
            ));
        }
        let service_id = ServiceId::parse(&req.service_id)
            .map_err(|e| EngineError::invalid("parameter_invalid", "service_id", e.to_string()))?;
        Ok(ValidRequest {
            money,
            expires_in,
            metadata,
            service_id,
        })
    }

    fn validate_metadata(
        &self,
        m: &serde_json::Map<String, serde_json::Value>,
    ) -> EngineResult<()> {
        let l = &self.limits;
        if m.len() > l.metadata_max_keys {
            return Err(EngineError::invalid(
                "metadata_invalid",
                "metadata",
                format!("at most {} metadata keys", l.metadata_max_keys),
            ));
        }
        for (k, v) in m {
            if k.is_empty() || k.chars().count() > l.metadata_max_key_len {
                return Err(EngineError::invalid(
                    "metadata_invalid",
                    "metadata",
                    format!(
                        "metadata keys must be 1 to {} characters",
                        l.metadata_max_key_len
                    ),
                ));
            }
            let ok = match v {
                serde_json::Value::String(s) => s.chars().count() <= l.metadata_max_value_len,
                serde_json::Value::Number(_)
                | serde_json::Value::Bool(_)
                | serde_json::Value::Null => true,
                _ => false,
            };
            if !ok {
                return Err(EngineError::invalid(
                    "metadata_invalid",
                    format!("metadata.{}", k.chars().take(40).collect::<String>()),
                    format!(
                        "metadata values must be strings of at most {} characters, numbers, booleans or null",
                        l.metadata_max_value_len
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The caller's service `sid`, active and accepting the requested channel.
    async fn payable_service(
        &self,
        ctx: &AuthContext,
        req: &CreateIntentRequest,
        sid: ServiceId,
        origin: Origin,
    ) -> EngineResult<Arc<Service>> {
        let Some(service) = self.services.owned_arc(ctx, sid).await? else {
            return Err(EngineError::Invalid {
                code: "resource_missing",
                message: format!(
                    "no service with id `{}`",
                    req.service_id.chars().take(60).collect::<String>()
                ),
                param: Some("service_id".into()),
            });
        };
        let renewal_while_paused =
            origin == Origin::Renewal && service.status == ServiceStatus::Paused;
        if !service.status.accepts_payments() && !renewal_while_paused {
            return Err(EngineError::Conflict {
                code: "service_not_active",
                message: format!(
                    "service {} is {}; activate it before taking payments",
                    service.id,
                    service.status.as_str()
                ),
            });
        }
        if !service.accepted_channels.contains(&req.channel) {
            return Err(EngineError::invalid(
                "channel_not_accepted",
                "channel",
                format!(
                    "service {} does not accept `{}`; it accepts: {}",
                    service.id,
                    req.channel,
                    service.accepted_channels.join(", ")
                ),
            ));
        }
        Ok(service)
    }

    /// The caller's intent `id`.
    pub(crate) async fn owned(&self, ctx: &AuthContext, id: &str) -> EngineResult<PaymentIntent> {
        let pid =
            PaymentIntentId::parse(id).map_err(|_| EngineError::not_found("payment intent", id))?;
        match self.ledger.get_intent(pid).await? {
            Some(pi) if ctx.owns(pi.merchant_id, pi.livemode) => Ok(pi),
            _ => Err(EngineError::not_found("payment intent", id)),
        }
    }

    /// One intent.
    pub(crate) async fn get(&self, ctx: &AuthContext, id: &str) -> EngineResult<PaymentIntent> {
        ctx.require(Permission::PaymentIntentsRead)?;
        self.owned(ctx, id).await
    }

    /// Lists the caller's intents.
    pub(crate) async fn list(
        &self,
        ctx: &AuthContext,
        p: IntentListParams,
    ) -> EngineResult<(Page<PaymentIntent>, PageRequest)> {
        ctx.require(Permission::PaymentIntentsRead)?;
        let pg = page(&self.limits, p.limit, p.offset)?;
        let q = IntentQuery {
            status: parse_status(p.status.as_deref())?,
            channel: p.channel,
            created_after: parse_time(&p.created_after, "created_after")?,
            created_before: parse_time(&p.created_before, "created_before")?,
            descending: parse_descending(p.sort.as_deref())?,
            page: pg,
        };
        Ok((
            self.ledger
                .list_intents(ctx.merchant_id, ctx.livemode, &q)
                .await?,
            pg,
        ))
    }

    /// Cancels a pending intent.
    pub(crate) async fn cancel(
        &self,
        ctx: &AuthContext,
        id: &str,
        reason: Option<String>,
    ) -> EngineResult<PaymentIntent> {
        ctx.require(Permission::PaymentIntentsWrite)?;
        if reason
            .as_ref()
            .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
        {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "cancellation_reason",
                "cancellation_reason is limited to 500 characters",
            ));
        }
        let pi = self.owned(ctx, id).await?;
        Ok(self
            .sessions
            .command(pi.id, IntentCommand::Cancel { reason }, None)
            .await?
            .intent)
    }

    /// Test mode only: settles a sandbox intent as the channel would.
    pub(crate) async fn sandbox_settle(
        &self,
        ctx: &AuthContext,
        id: &str,
        succeed: bool,
    ) -> EngineResult<PaymentIntent> {
        ctx.require(Permission::PaymentIntentsWrite)?;
        if ctx.livemode {
            return Err(EngineError::Forbidden {
                code: "test_mode_only",
                message: "sandbox endpoints accept test-mode keys (sk_test_…) only".into(),
            });
        }
        let pi = self.owned(ctx, id).await?;
        if pi.channel != "sandbox" {
            return Err(EngineError::Conflict {
                code: "channel_mismatch",
                message: format!(
                    "payment intent {} uses channel `{}`, not `sandbox`",
                    pi.id, pi.channel
                ),
            });
        }
        // A success carries its settlement quote, and is marked due for settlement in the
        // same batch.
        let (cmd, records) = if succeed {
            let (settlement, records) = match &self.settlement {
                Some(s) => (s.quote(&pi).await?.map(Box::new), s.success_ops(&pi)),
                None => (None, Vec::new()),
            };
            let cmd = IntentCommand::Succeed {
                channel_reference: None,
                payer: None,
                settlement,
            };
            (cmd, records)
        } else {
            let reason = "sandbox_declined".into();
            (IntentCommand::Fail { reason }, Vec::new())
        };
        Ok(self
            .sessions
            .command_with_records(pi.id, cmd, records)
            .await?
            .intent)
    }
}

/// `status` of a list query.
fn parse_status(s: Option<&str>) -> EngineResult<Option<IntentStatus>> {
    match s {
        None => Ok(None),
        Some(s) => IntentStatus::parse(s).map(Some).ok_or_else(|| {
            EngineError::invalid(
                "parameter_invalid",
                "status",
                "status must be one of pending, succeeded, failed, expired, cancelled",
            )
        }),
    }
}

/// A time bound of a list query, in ms.
fn parse_time(v: &Option<String>, name: &'static str) -> EngineResult<Option<i64>> {
    match v {
        None => Ok(None),
        Some(s) => Timestamp::parse_flexible(s)
            .map(|t| Some(t.ms()))
            .ok_or_else(|| {
                EngineError::invalid(
                    "parameter_invalid",
                    name,
                    format!("{name} must be an RFC 3339 time or a YYYY-MM-DD date"),
                )
            }),
    }
}

/// `sort` of a list query: whether newest come first.
fn parse_descending(sort: Option<&str>) -> EngineResult<bool> {
    match sort {
        None | Some("created:desc") => Ok(true),
        Some("created:asc") => Ok(false),
        Some(_) => Err(EngineError::invalid(
            "parameter_invalid",
            "sort",
            "sort must be created:desc or created:asc",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_retries_compare_requests_in_one_canonical_spelling() {
        let svc = ServiceId::new_at(1_800_000_000_000);
        let base = CreateIntentRequest {
            service_id: svc.to_string(),
            amount: AmountInput {
                value: 100,
                currency: "EUR".into(),
            },
            channel: "sandbox".into(),
            metadata: None,
            expires_in: None,
        };
        let mut empty_meta = base.clone();
        empty_meta.metadata = Some(Default::default());
        let mut bare = base.clone();
        bare.service_id = svc.to_string().trim_start_matches("svc_").to_string();
        let mut uuid = base.clone();
        uuid.service_id = svc.as_uuid().to_string();
        let h = canonical_hash(&base.normalized());
        for other in [empty_meta, bare, uuid] {
            assert_eq!(canonical_hash(&other.normalized()), h);
        }
        let mut different = base.clone();
        different.amount.value = 101;
        assert_ne!(canonical_hash(&different.normalized()), h);
    }
}
