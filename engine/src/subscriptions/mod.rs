//! Subscriptions to a manifest's `pricing.subscription` plans: subscribing (which opens the
//! first payment intent), renewing on the plan's interval, cancelling at period end, failed
//! renewals (retries, then `past_due`, then cancellation), and the events
//! `subscription.renewed`, `subscription.cancelled` and `revocation.succeeded`.
//!
//! It owns the subscription record and its due index; it does not own payments: every
//! payment (first and renewal) is an ordinary payment intent created through
//! [`crate::intents`], settled by its channel, and only *read* here. The record, status table
//! and period arithmetic are in [`model`]; what happens when a subscription falls due is in
//! `lifecycle`.
//!
//! Storage (generic ledger records and indexes, so embedded and cluster mode work alike):
//! - `subscription/{id}` → the record (JSON);
//! - `subscriptions` partition `{merchant}:{live|test}`, sort key the id → nothing (listing);
//! - `subscription_due` partition `due-{0..7}` (by id), sort key `{due_ms:015}/{id}` → nothing:
//!   the sorted index of what falls due when. The timer scans it up to the injected clock's
//!   now, so a restart loses no renewal: whatever fell due while the engine was down is due
//!   at the first tick after start.
//!
//! A record, its due entry and its events change in one ledger batch, while holding the
//! subscription's reservation in hot state (a lock across nodes in cluster mode).

mod lifecycle;
pub mod model;
#[cfg(test)]
mod tests;

pub(crate) use lifecycle::spawn_timer;
pub use model::{Subscription, SubscriptionStatus};

use crate::auth::AuthContext;
use crate::clock::{Clock, Timestamp};
use crate::config::Limits;
use crate::error::{EngineError, EngineResult};
use crate::idempotency::{Idempotency, IdempotentOutcome, canonical_hash};
use crate::ids::{ApiKeyId, MerchantId, PaymentIntentId, ServiceId, SubscriptionId};
use crate::intents::{AmountInput, CreateIntentRequest, Intents};
use crate::model::{ApiKey, Event, PaymentIntent, Permission};
use crate::money::Money;
use crate::paging::page;
use crate::services::Services;
use crate::session::IdempotencySpec;
use crate::store::{
    EntryRange, HotState, IdempotencyRecord, Ledger, Page, PageRequest, WriteBatch, WriteOp,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

const RECORD: &str = "subscription";
const BY_MERCHANT: &str = "subscriptions";
const DUE: &str = "subscription_due";
/// Partitions of the due index (so no single partition holds every subscription).
const DUE_PARTITIONS: u128 = 8;
/// Longest `customer` reference, characters.
const MAX_CUSTOMER_LEN: usize = 200;
/// Most subscriptions one merchant's list counts (its `total`) and pages through.
const MAX_LISTED: usize = 10_000;

/// Timing and retry rules of subscriptions (defaults documented in `docs/subscriptions.md`).
#[derive(Debug, Clone)]
pub struct SubscriptionSettings {
    /// How long after an open payment was last checked it is checked again, seconds.
    pub recheck_secs: i64,
    /// Delay between failed renewal attempts, seconds (default one day).
    pub retry_delay_secs: i64,
    /// Renewal attempts before the subscription is cancelled (default 3: the first attempt
    /// and two retries).
    pub max_renewal_attempts: u32,
    /// Most due subscriptions one tick handles per due partition.
    pub tick_batch: usize,
    /// How often the background timer ticks (wall time; what is due is decided by the clock).
    pub timer_every: Duration,
    /// Longest one subscription stays locked by a crashed holder.
    pub lock_ttl: Duration,
}

impl Default for SubscriptionSettings {
    fn default() -> Self {
        SubscriptionSettings {
            recheck_secs: 10,
            retry_delay_secs: 86_400,
            max_renewal_attempts: 3,
            tick_batch: 500,
            timer_every: Duration::from_secs(1),
            lock_ttl: Duration::from_secs(30),
        }
    }
}

/// `POST /v1/subscriptions` body.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscriptionRequest {
    /// The manifest whose plan is subscribed to; it must offer subscriptions.
    pub service_id: String,
    /// One of the manifest's `pricing.subscription[].plan_id`.
    pub plan_id: String,
    /// The channel that collects every payment; one the manifest accepts.
    pub channel: String,
    /// The merchant's reference for the subscriber (at most 200 characters).
    #[serde(default)]
    pub customer: Option<String>,
    /// Kept with the subscription (same rules as intent metadata).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What subscribing returns: the subscription and its first payment to present to the payer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedSubscription {
    pub subscription: Subscription,
    pub payment_intent: PaymentIntent,
}

/// Subscriptions of one engine.
pub(crate) struct Subscriptions {
    ledger: Arc<dyn Ledger>,
    hot: Arc<dyn HotState>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    services: Arc<Services>,
    intents: Arc<Intents>,
    idempotency: Arc<Idempotency>,
    settings: SubscriptionSettings,
}

impl Subscriptions {
    /// Subscriptions on these stores, paying through `intents`.
    pub(crate) fn new(
        ledger: Arc<dyn Ledger>,
        hot: Arc<dyn HotState>,
        clock: Arc<dyn Clock>,
        limits: Limits,
        services: Arc<Services>,
        intents: Arc<Intents>,
        idempotency: Arc<Idempotency>,
    ) -> Self {
        Subscriptions {
            ledger,
            hot,
            clock,
            limits,
            services,
            intents,
            idempotency,
            settings: SubscriptionSettings::default(),
        }
    }

    /// Subscribes to a plan (idempotent when `idempotency_key` is given); the body is a
    /// [`CreatedSubscription`].
    pub(crate) async fn create(
        &self,
        ctx: &AuthContext,
        req: CreateSubscriptionRequest,
        idempotency_key: Option<&str>,
    ) -> EngineResult<IdempotentOutcome> {
        ctx.require(Permission::PaymentIntentsWrite)?;
        let hash = canonical_hash(&req);
        self.idempotency
            .run(
                ctx,
                "subscriptions",
                idempotency_key,
                hash,
                |spec| async move {
                    Ok(IdempotentOutcome {
                        status: 201,
                        body: self.create_now(ctx, req, spec).await?,
                        replayed: false,
                    })
                },
            )
            .await
    }

    /// Checks the plan, opens the first payment intent and stores the subscription as
    /// `incomplete` until that payment succeeds, with the idempotency record (if any) in the
    /// same batch. Returns the response body.
    async fn create_now(
        &self,
        ctx: &AuthContext,
        req: CreateSubscriptionRequest,
        idem: Option<IdempotencySpec>,
    ) -> EngineResult<String> {
        let (amount, interval) = self.plan_of(ctx, &req).await?;
        let now = self.clock.now();
        let id = SubscriptionId::new_at(now.ms());
        let mut sub = Subscription {
            id,
            service_id: ServiceId::parse(&req.service_id).map_err(|e| {
                EngineError::invalid("parameter_invalid", "service_id", e.to_string())
            })?,
            plan_id: req.plan_id,
            amount,
            interval,
            channel: req.channel,
            customer: req.customer,
            metadata: req.metadata.unwrap_or_default(),
            status: SubscriptionStatus::Incomplete,
            cancel_at_period_end: false,
            billing_anchor: None,
            periods_paid: 0,
            current_period_start: None,
            current_period_end: None,
            next_billing_date: None,
            latest_intent: None,
            open_intent: None,
            renewal_attempts: 0,
            due_at: Some(now),
            cancelled_at: None,
            cancellation_reason: None,
            ended_at: None,
            livemode: ctx.livemode,
            merchant_id: ctx.merchant_id,
            created: now,
            updated: now,
        };
        let intent = self.open_payment(&sub, "first", ctx).await?;
        sub.latest_intent = Some(intent.id);
        sub.open_intent = Some(intent.id);
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::PutEntry {
            index: BY_MERCHANT,
            partition: merchant_partition(sub.merchant_id, sub.livemode),
            sort: sub.id.to_string(),
            value: Vec::new(),
        });
        let created = CreatedSubscription {
            subscription: sub,
            payment_intent: intent,
        };
        let body =
            serde_json::to_string(&created).map_err(|e| EngineError::Internal(e.to_string()))?;
        if let Some(spec) = idem {
            batch.push(WriteOp::PutIdempotency {
                scope: spec.scope,
                record: IdempotencyRecord {
                    request_hash: spec.request_hash,
                    status: 201,
                    body: body.clone(),
                    created: now,
                },
            });
        }
        self.commit(batch, &created.subscription, None, Vec::new())
            .await?;
        Ok(body)
    }

    /// The plan's price and interval, after checking the request against the manifest.
    async fn plan_of(
        &self,
        ctx: &AuthContext,
        req: &CreateSubscriptionRequest,
    ) -> EngineResult<(Money, crate::model::service::Interval)> {
        if req
            .customer
            .as_ref()
            .is_some_and(|c| c.chars().count() > MAX_CUSTOMER_LEN)
        {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "customer",
                format!("customer is limited to {MAX_CUSTOMER_LEN} characters"),
            ));
        }
        let sid = ServiceId::parse(&req.service_id)
            .map_err(|e| EngineError::invalid("parameter_invalid", "service_id", e.to_string()))?;
        let Some(service) = self.services.owned_arc(ctx, sid).await? else {
            return Err(EngineError::invalid(
                "resource_missing",
                "service_id",
                format!("no service with id `{sid}`"),
            ));
        };
        if !service.payment_methods.subscription {
            return Err(EngineError::invalid(
                "subscriptions_not_offered",
                "service_id",
                format!(
                    "service {sid} does not offer subscriptions; set payment_methods.subscription"
                ),
            ));
        }
        let Some(plan) = service
            .pricing
            .subscription
            .iter()
            .find(|p| p.plan_id == req.plan_id)
        else {
            let known: Vec<&str> = service
                .pricing
                .subscription
                .iter()
                .map(|p| p.plan_id.as_str())
                .collect();
            return Err(EngineError::invalid(
                "plan_unknown",
                "plan_id",
                format!(
                    "service {sid} has no plan `{}`; its plans: {}",
                    req.plan_id.chars().take(64).collect::<String>(),
                    known.join(", ")
                ),
            ));
        };
        let money =
            Money::new(plan.amount, plan.currency).map_err(|e| EngineError::money("plan_id", e))?;
        Ok((money, plan.interval))
    }

    /// Opens one payment of `sub` through the intents module. The idempotency key names the
    /// payment (`first`, or the period and attempt of a renewal), so a tick repeated after a
    /// crash gets the same intent back instead of charging twice.
    async fn open_payment(
        &self,
        sub: &Subscription,
        which: &str,
        ctx: &AuthContext,
    ) -> EngineResult<PaymentIntent> {
        let mut metadata = sub.metadata.clone();
        metadata.insert("subscription_id".into(), sub.id.to_string().into());
        metadata.insert("plan_id".into(), sub.plan_id.clone().into());
        let req = CreateIntentRequest {
            service_id: sub.service_id.to_string(),
            amount: AmountInput {
                value: sub.amount.value,
                currency: sub.amount.currency.code().to_string(),
            },
            channel: sub.channel.clone(),
            metadata: Some(metadata),
            expires_in: None,
        };
        let key = format!("{}:{which}", sub.id);
        let out = match which {
            "first" => self.intents.create(ctx, req, Some(&key)).await?,
            _ => self.intents.create_renewal(ctx, req, &key).await?,
        };
        serde_json::from_str(&out.body).map_err(|e| EngineError::Internal(e.to_string()))
    }

    /// The caller's subscription `id`.
    pub(crate) async fn get(&self, ctx: &AuthContext, id: &str) -> EngineResult<Subscription> {
        ctx.require(Permission::PaymentIntentsRead)?;
        self.owned(ctx, id).await
    }

    async fn owned(&self, ctx: &AuthContext, id: &str) -> EngineResult<Subscription> {
        let sid =
            SubscriptionId::parse(id).map_err(|_| EngineError::not_found("subscription", id))?;
        match self.load(sid).await? {
            Some(s) if ctx.owns(s.merchant_id, s.livemode) => Ok(s),
            _ => Err(EngineError::not_found("subscription", id)),
        }
    }

    /// The caller's subscriptions, newest first, optionally of one status.
    pub(crate) async fn list(
        &self,
        ctx: &AuthContext,
        status: Option<&str>,
        limit: Option<usize>,
        offset: Option<usize>,
    ) -> EngineResult<(Page<Subscription>, PageRequest)> {
        ctx.require(Permission::PaymentIntentsRead)?;
        let pg = page(&self.limits, limit, offset)?;
        let status = match status {
            None => None,
            Some(s) => Some(SubscriptionStatus::parse(s).ok_or_else(|| {
                EngineError::invalid(
                    "parameter_invalid",
                    "status",
                    "status must be one of incomplete, incomplete_expired, active, past_due, cancelled",
                )
            })?),
        };
        let partition = merchant_partition(ctx.merchant_id, ctx.livemode);
        let ids = self
            .ledger
            .scan_entries(BY_MERCHANT, &partition, &EntryRange::all(MAX_LISTED).rev())
            .await?;
        let mut matched = Vec::new();
        let mut total = 0u64;
        for (sort, _) in ids {
            let Ok(id) = SubscriptionId::parse(&sort) else {
                continue;
            };
            // Without a filter only the page itself is loaded.
            if status.is_none() {
                total += 1;
                if (total as usize) > pg.offset && matched.len() < pg.limit {
                    matched.extend(self.load(id).await?);
                }
                continue;
            }
            if let Some(s) = self.load(id).await?
                && Some(s.status) == status
            {
                total += 1;
                if (total as usize) > pg.offset && matched.len() < pg.limit {
                    matched.push(s);
                }
            }
        }
        Ok((
            Page {
                data: matched,
                total,
            },
            pg,
        ))
    }

    /// Cancels: an active subscription at the end of its paid period (`subscription.cancelled`
    /// now, `revocation.succeeded` then); one without a paid period, or awaiting a renewal
    /// payment, at once. Cancelling again once at period end changes nothing.
    pub(crate) async fn cancel(&self, ctx: &AuthContext, id: &str) -> EngineResult<Subscription> {
        ctx.require(Permission::PaymentIntentsWrite)?;
        let sid = self.owned(ctx, id).await?.id;
        let lock = self.lock(sid).await?;
        let out = self.cancel_locked(ctx, sid).await;
        self.unlock(lock).await;
        out
    }

    async fn cancel_locked(
        &self,
        ctx: &AuthContext,
        sid: SubscriptionId,
    ) -> EngineResult<Subscription> {
        let mut sub = self
            .load(sid)
            .await?
            .ok_or_else(|| EngineError::not_found("subscription", sid))?;
        if sub.cancel_at_period_end && sub.status == SubscriptionStatus::Active {
            return Ok(sub);
        }
        let now = self.clock.now();
        let old_due = sub.due_at;
        sub.cancelled_at = Some(now);
        sub.cancellation_reason = Some("requested".into());
        sub.updated = now;
        let mut events = Vec::new();
        if sub.status == SubscriptionStatus::Active && sub.open_intent.is_none() {
            sub.cancel_at_period_end = true;
            sub.next_billing_date = None;
            events.push(self.event(&sub, "subscription.cancelled", now));
        } else {
            let had_access = sub.status != SubscriptionStatus::Incomplete;
            sub.apply(model::SubscriptionAction::End)?;
            if let Some(pi) = sub.open_intent.take() {
                self.cancel_open_intent(ctx, pi).await;
            }
            self.end_now(&mut sub, now, had_access, &mut events);
        }
        self.commit(WriteBatch::new(), &sub, old_due, events)
            .await?;
        Ok(sub)
    }

    /// Best effort: a payment nobody wants any more is cancelled so the payer cannot pay it.
    /// If it already settled, the cancel is refused and the merchant refunds as usual.
    async fn cancel_open_intent(&self, ctx: &AuthContext, pi: PaymentIntentId) {
        let reason = Some("subscription cancelled".to_string());
        if let Err(e) = self.intents.cancel(ctx, &pi.to_string(), reason).await {
            tracing::info!(intent = %pi, error = %e, "open subscription payment not cancelled");
        }
    }

    /// Marks `sub` ended now: no more renewals, `subscription.cancelled` (and, when it had
    /// access, `revocation.succeeded`).
    fn end_now(
        &self,
        sub: &mut Subscription,
        now: Timestamp,
        had_access: bool,
        ev: &mut Vec<Event>,
    ) {
        sub.next_billing_date = None;
        sub.due_at = None;
        sub.ended_at = Some(now);
        ev.push(self.event(sub, "subscription.cancelled", now));
        if had_access {
            ev.push(self.event(sub, "revocation.succeeded", now));
        }
    }

    fn event(&self, sub: &Subscription, kind: &str, at: Timestamp) -> Event {
        Event::new(
            sub.merchant_id,
            sub.livemode,
            kind,
            at,
            sub.id.to_string(),
            sub,
        )
    }

    /// The stored subscription `id`.
    async fn load(&self, id: SubscriptionId) -> EngineResult<Option<Subscription>> {
        let Some(bytes) = self.ledger.get_record(RECORD, &id.to_string()).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| EngineError::Internal(format!("subscription {id} unreadable: {e}")))
    }

    /// Writes `sub`, moves its due entry from `old_due` to `sub.due_at`, and appends
    /// `events`, all in one batch (with whatever `batch` already holds).
    async fn commit(
        &self,
        mut batch: WriteBatch,
        sub: &Subscription,
        old_due: Option<Timestamp>,
        events: Vec<Event>,
    ) -> EngineResult<()> {
        let value = serde_json::to_vec(sub).map_err(|e| EngineError::Internal(e.to_string()))?;
        batch.push(WriteOp::PutRecord {
            kind: RECORD,
            key: sub.id.to_string(),
            value,
        });
        if old_due != sub.due_at
            && let Some(d) = old_due
        {
            batch.push(WriteOp::DeleteEntry {
                index: DUE,
                partition: due_partition(sub.id),
                sort: due_key(d, sub.id),
            });
        }
        if let Some(d) = sub.due_at {
            batch.push(WriteOp::PutEntry {
                index: DUE,
                partition: due_partition(sub.id),
                sort: due_key(d, sub.id),
                value: Vec::new(),
            });
        }
        for e in events {
            batch.push(WriteOp::PutEvent(e));
        }
        self.ledger.submit(batch).await?;
        Ok(())
    }

    /// Takes the subscription's lock, waiting (bounded) for another holder to finish.
    async fn lock(&self, id: SubscriptionId) -> EngineResult<crate::store::Reservation> {
        let scope = format!("subscription:{id}");
        // Bounded: 50 waits of at most 200 ms; a holder that crashed lapses at `lock_ttl`.
        for _ in 0..50 {
            if let Some(r) = self.hot.reserve(&scope, self.settings.lock_ttl).await? {
                return Ok(r);
            }
            self.hot
                .wait_released(&scope, Duration::from_millis(200))
                .await;
        }
        Err(EngineError::Conflict {
            code: "subscription_busy",
            message: format!("subscription {id} is being changed by another request; retry"),
        })
    }

    async fn unlock(&self, r: crate::store::Reservation) {
        if let Err(e) = self.hot.release(r).await {
            tracing::warn!(error = %e, "subscription lock not released; it lapses at its TTL");
        }
    }

    /// An engine caller acting for the subscription's merchant (renewals have no request; it
    /// has no secret and is never stored).
    fn merchant_ctx(&self, sub: &Subscription) -> AuthContext {
        let now = self.clock.now();
        AuthContext {
            merchant_id: sub.merchant_id,
            livemode: sub.livemode,
            key: ApiKey {
                id: ApiKeyId::from_u128(0),
                label: "subscriptions".into(),
                redacted: "internal".into(),
                permissions: vec![
                    Permission::ServicesRead,
                    Permission::PaymentIntentsRead,
                    Permission::PaymentIntentsWrite,
                ],
                ip_whitelist: vec![],
                livemode: sub.livemode,
                merchant_id: sub.merchant_id,
                created: now,
                expires_at: now.plus_secs(3600),
                revoked_at: None,
            },
        }
    }
}

fn merchant_partition(m: MerchantId, livemode: bool) -> String {
    format!("{m}:{}", if livemode { "live" } else { "test" })
}

fn due_partition(id: SubscriptionId) -> String {
    format!("due-{}", id.as_u128() % DUE_PARTITIONS)
}

/// Sort key of the due index: zero-padded milliseconds sort as numbers.
fn due_key(at: Timestamp, id: SubscriptionId) -> String {
    format!("{:015}/{id}", at.ms().max(0))
}
