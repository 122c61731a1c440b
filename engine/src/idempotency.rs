//! Idempotent creates: an `Idempotency-Key` makes a retried request return the first
//! request's stored response instead of doing the work twice, and a reused key with a
//! different request is refused.
//!
//! A hot-state reservation makes concurrent requests with one key wait for each other; the
//! response itself is written by the session layer in the same batch as the state change it
//! describes (see [`IdempotencySpec`]), so a stored response never outlives or precedes its
//! effect. Expired records are purged in the background.
//!
//! Recovery: the reservation is given back whatever the outcome (also after a store error),
//! in the background so that a failing request answers at once; a reservation whose taking or
//! giving back hit a hung hot state is removed by the backend as soon as it answers again.
//! Not here: the stored responses themselves (the session layer writes them).

use crate::auth::AuthContext;
use crate::clock::{Clock, Timestamp};
use crate::config::Limits;
use crate::error::{EngineError, EngineResult};
use crate::session::IdempotencySpec;
use crate::store::{HotState, IdempotencyRecord, Ledger, WriteBatch, WriteOp};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Longest idempotency key, bytes.
const MAX_KEY_LEN: usize = 255;
/// How often expired idempotency records are purged.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// The response of an idempotent create: fresh, or replayed from the first request.
#[derive(Debug, Clone)]
pub struct IdempotentOutcome {
    /// HTTP status of the first response.
    pub status: u16,
    /// JSON body of the first response.
    pub body: String,
    /// Whether this is a replay of a stored response.
    pub replayed: bool,
}

/// SHA-256 (hex) of a request in canonical JSON, to compare a retry with the first request.
pub(crate) fn canonical_hash<T: Serialize>(body: &T) -> String {
    // serde_json maps are ordered by key, so equal requests serialize to equal bytes.
    let v = serde_json::to_value(body).unwrap_or_default();
    hex::encode(Sha256::digest(serde_json::to_vec(&v).unwrap_or_default()))
}

fn validate_key(k: &str) -> EngineResult<()> {
    if k.is_empty() || k.len() > MAX_KEY_LEN || !k.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "Idempotency-Key",
            "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces",
        ));
    }
    Ok(())
}

/// Runs creates at most once per idempotency key.
pub(crate) struct Idempotency {
    ledger: Arc<dyn Ledger>,
    hot: Arc<dyn HotState>,
    clock: Arc<dyn Clock>,
    limits: Limits,
}

impl Idempotency {
    /// Idempotency on these stores; starts the purge of expired records, which runs as long
    /// as the returned value lives.
    pub(crate) fn new(
        ledger: Arc<dyn Ledger>,
        hot: Arc<dyn HotState>,
        clock: Arc<dyn Clock>,
        limits: Limits,
    ) -> Arc<Self> {
        let idem = Arc::new(Idempotency {
            ledger,
            hot,
            clock,
            limits,
        });
        spawn_purge(Arc::downgrade(&idem));
        idem
    }

    /// Runs `run` once per `key` within the caller's merchant, mode and operation (`what`):
    /// without a key it simply runs; with one it replays the stored response of an earlier
    /// request with the same `hash`, refuses a different request, and otherwise runs with the
    /// spec under which the session layer stores the response.
    pub(crate) async fn run<F, Fut>(
        &self,
        ctx: &AuthContext,
        what: &str,
        key: Option<&str>,
        hash: String,
        run: F,
    ) -> EngineResult<IdempotentOutcome>
    where
        F: FnOnce(Option<IdempotencySpec>) -> Fut,
        Fut: Future<Output = EngineResult<IdempotentOutcome>>,
    {
        let Some(key) = key else {
            return run(None).await;
        };
        validate_key(key)?;
        let scope = format!(
            "{}:{}:{}:{}",
            ctx.merchant_id,
            if ctx.livemode { "live" } else { "test" },
            what,
            key
        );
        let wait = Duration::from_millis(self.limits.idempotency_wait_ms);
        // Reserve first, then look: whoever holds the reservation is the only one who can be
        // writing this key's record, so one look-up under the reservation is enough.
        let deadline = Instant::now() + wait;
        let reservation = loop {
            if let Some(r) = self.hot.reserve(&scope, wait * 3).await? {
                break r;
            }
            if Instant::now() >= deadline {
                return Err(EngineError::IdempotencyInProgress);
            }
            self.hot
                .wait_released(&scope, deadline.saturating_duration_since(Instant::now()))
                .await;
        };
        let result = match self.ledger.get_idempotency(&scope).await {
            Ok(Some(rec)) if self.fresh(&rec) => replay(rec, &hash),
            Ok(_) => {
                run(Some(IdempotencySpec {
                    scope: scope.clone(),
                    request_hash: hash,
                }))
                .await
            }
            Err(e) => Err(e.into()),
        };
        // Given back without holding up the answer: when the hot state hangs, the caller
        // must hear its 503 within the one bound it already waited, not a second one. A
        // release that fails is retried by the backend once it answers, so a retry of this
        // key after an outage runs or replays at once instead of waiting out the TTL.
        // A hot state that answers at once (the in-process one) is released right here: a
        // task per create would cost a spawn, a schedule and a wake-up on the hot path.
        let hot = self.hot.clone();
        let mut release = Box::pin(async move {
            let _ = hot.release(reservation).await;
        });
        if futures::poll!(release.as_mut()).is_pending() {
            tokio::spawn(release);
        }
        result
    }

    /// Whether a stored record is still within the key's time to live.
    fn fresh(&self, rec: &IdempotencyRecord) -> bool {
        let ttl_ms = self.limits.idempotency_ttl_hours * 3_600_000;
        self.clock.now().ms() - rec.created.ms() < ttl_ms
    }

    fn purge_cutoff(&self) -> Timestamp {
        self.clock
            .now()
            .plus_secs(-self.limits.idempotency_ttl_hours * 3600)
    }
}

/// The stored response, if it answered the same request.
fn replay(rec: IdempotencyRecord, hash: &str) -> EngineResult<IdempotentOutcome> {
    if rec.request_hash != hash {
        return Err(EngineError::IdempotencyKeyReused);
    }
    Ok(IdempotentOutcome {
        status: rec.status,
        body: rec.body,
        replayed: true,
    })
}

/// Drops expired idempotency records every ten minutes, for as long as `idem` lives.
fn spawn_purge(idem: Weak<Idempotency>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PURGE_EVERY);
        loop {
            every.tick().await;
            let Some(idem) = idem.upgrade() else { return };
            let mut b = WriteBatch::new();
            b.push(WriteOp::PurgeIdempotencyBefore(idem.purge_cutoff()));
            if let Err(e) = idem.ledger.submit(b).await {
                tracing::warn!(error = %e, "idempotency purge failed");
            }
        }
    });
}
