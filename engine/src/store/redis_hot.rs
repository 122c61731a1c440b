//! Redis [`HotState`] for cluster mode: many `ipay serve` nodes share one Redis (a single
//! primary, optionally behind Sentinel; not Redis Cluster, because the release script publishes
//! on a channel that is not one of its keys).
//!
//! Nothing here is the only copy of anything whose loss could lose or double a payment: if
//! Redis loses its data, reservations and leases lapse (callers retry or take over from the
//! ledger), snapshots are rebuilt from the ledger, counters start again, and pub/sub is live
//! fan-out only.
//!
//! # Keys (all under the configurable prefix, default `ipay:`)
//!
//! | what | key / channel | written by |
//! |---|---|---|
//! | reservation | `{prefix}res:{scope}` = token | `SET NX PX`; released by a compare-and-delete script that also publishes on `{prefix}rel:{scope}` |
//! | lease | `{prefix}lease:{key}` = owner | scripts: acquire (free or ours), renew and release (only if ours) |
//! | lease epoch | `{prefix}lease-epoch:{key}` = epoch, with the lease's TTL; `{prefix}lease-epochs` = last epoch handed out | the acquire-with-epoch script; renewed and released with the lease |
//! | snapshot | `{prefix}snap:{key}` = bytes | `SET PX`, `GET`, `DEL` |
//! | counter | `{prefix}ctr:{key}` = integer | script: `INCR`, `PEXPIRE` on the first increment |
//! | pub/sub | channel `{prefix}ch:{channel}` | `PUBLISH`; one dedicated subscriber connection per process |
//!
//! # Time bounds and recovery
//!
//! Commands go through a bounded deadpool-redis pool. Every operation (waiting for a pooled
//! connection, connecting, the command itself) is bounded by
//! [`RedisOptions::command_timeout`] as a whole and fails with [`StoreError`] after it (the
//! engine answers 503 `store_unavailable`). Broken connections are detected when the pool
//! recycles them (deadpool-redis pings a connection before handing it out) and replaced, so
//! the backend recovers on its own when Redis comes back. The subscriber connection is
//! re-established by its task with back-off and re-subscribes every channel that still has
//! local subscribers; messages published while it was down are lost (at-most-once).

use super::{HotState, Message, Reservation, Subscription};
use crate::error::StoreError;
use deadpool_redis::redis::{self, AsyncConnectionConfig, IntoConnectionInfo, Script, Value};
use deadpool_redis::{Manager, Pool, PoolError, Runtime, Timeouts};
use futures::StreamExt;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

/// Settings of the Redis backend.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Prefix of every key and channel (namespace), default `ipay:`.
    pub prefix: String,
    /// Maximum pooled command connections (each is multiplexed), default 16.
    pub pool_size: usize,
    /// Bound on opening one connection (TCP + handshake), default 500 ms.
    pub connect_timeout: Duration,
    /// Bound on one whole operation, including waiting for and opening a connection; past it
    /// the operation fails with [`StoreError`]. Default 1 s.
    pub command_timeout: Duration,
    /// While waiting for a reservation to be released, how often to re-check it in case the
    /// release notification was missed (subscriber connection down). Default 250 ms. Waiters
    /// also wake when the reservation's TTL runs out.
    pub release_poll: Duration,
    /// Messages a slow local subscriber may fall behind before it starts missing them,
    /// default 1024.
    pub channel_capacity: usize,
    /// TLS files for a `rediss://` URL (CA to trust instead of the system's, client
    /// certificate); must stay empty for a `redis://` URL.
    pub tls: super::tls::TlsFiles,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            prefix: "ipay:".to_string(),
            pool_size: 16,
            connect_timeout: Duration::from_millis(500),
            command_timeout: Duration::from_secs(1),
            release_poll: Duration::from_millis(250),
            channel_capacity: 1024,
            tls: super::tls::TlsFiles::default(),
        }
    }
}

/// Releases a reservation only if it still carries our token, and announces the release.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], '1')
  return 1
end
return 0";

/// Takes a lease that is free or already ours (then only its TTL is reset).
const ACQUIRE_LEASE: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0";

/// Takes a lease that is free or already ours and returns its epoch (0: someone else's).
/// KEYS: lease, its epoch, the epoch counter. A new epoch is the larger of the counter + 1 and
/// the server clock in µs, so epochs grow even after Redis lost the counter. Lua numbers are
/// doubles: exact for integers below 2^53 (µs since 1970 stay below that until year 2255).
const ACQUIRE_LEASE_EPOCH: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
  return 0
end
if cur then
  local e = redis.call('GET', KEYS[2])
  if e then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
    return tonumber(e)
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local epoch = math.max(tonumber(redis.call('GET', KEYS[3]) or '0') + 1, now)
local s = string.format('%.0f', epoch)
redis.call('SET', KEYS[3], s)
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], s, 'PX', ARGV[2])
return epoch";

/// Extends a lease (and its epoch, KEYS[2]) only while it is ours.
const RENEW_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0";

/// Deletes a lease (and its epoch, KEYS[2]) only while it is ours.
const RELEASE_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0";

/// Increments a counter; the first increment (or a counter that somehow lost its expiry)
/// sets the expiry, later ones keep it.
const INCR: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n";

struct Scripts {
    release: Script,
    acquire_lease: Script,
    acquire_lease_epoch: Script,
    renew_lease: Script,
    release_lease: Script,
    incr: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            release: Script::new(RELEASE),
            acquire_lease: Script::new(ACQUIRE_LEASE),
            acquire_lease_epoch: Script::new(ACQUIRE_LEASE_EPOCH),
            renew_lease: Script::new(RENEW_LEASE),
            release_lease: Script::new(RELEASE_LEASE),
            incr: Script::new(INCR),
        }
    }
}

/// Redis hot state. Cheap to share behind an [`Arc`]; dropping the last handle stops its
/// subscriber task and closes every [`Subscription`] made from it.
pub struct RedisHotState {
    pool: Pool,
    prefix: String,
    /// `host:port` (never the credentials), for error messages.
    endpoint: String,
    command_timeout: Duration,
    release_poll: Duration,
    scripts: Scripts,
    hub: mpsc::Sender<HubCommand>,
    /// For [`RedisHotState::check`]'s one-off connection.
    hub_client: redis::Client,
}

impl fmt::Debug for RedisHotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisHotState")
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Pause between attempts of a background release while Redis does not answer.
const RELEASE_RETRY: Duration = Duration::from_millis(100);

/// How long a failed release keeps being retried (past any reservation TTL the engine uses;
/// a lapsed reservation makes the next attempt a harmless no-op that ends the retries).
const RELEASE_GIVE_UP: Duration = Duration::from_secs(120);

/// Longest TTL sent to Redis (about 30 years); longer ones are cut to it, since Redis rejects
/// an expiry that overflows its clock.
const MAX_TTL_MS: u128 = 30 * 365 * 86_400 * 1000;

/// Milliseconds for a Redis `PX`/`PEXPIRE` argument: at least 1 (Redis rejects 0), at most
/// [`MAX_TTL_MS`].
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis().min(MAX_TTL_MS))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// `info` with the TLS files applied: a `rediss://` URL gets the CA and client certificate
/// (without files it trusts the system's roots); files with a `redis://` URL are a mistake.
fn with_tls(
    info: redis::ConnectionInfo,
    files: &super::tls::TlsFiles,
) -> Result<redis::ConnectionInfo, StoreError> {
    let tls_url = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
    if files.is_empty() {
        return Ok(info);
    }
    if !tls_url {
        return Err(StoreError(
            "redis hot state: TLS files are set ([cluster] redis_tls_*) but the Redis URL is \
             not rediss://; use rediss:// or clear them"
                .into(),
        ));
    }
    let certs = super::tls::redis_tls_certificates(files)?;
    let client = redis::Client::build_with_tls(info, certs)
        .map_err(|e| StoreError(format!("redis hot state: TLS setup failed: {e}")))?;
    Ok(client.get_connection_info().clone())
}

impl RedisHotState {
    /// Prepares a backend for the Redis at `url` (`redis://[user:password@]host:port[/db]`,
    /// or `rediss://` for TLS, with [`RedisOptions::tls`]). Performs no I/O: it succeeds
    /// while Redis is down, and operations fail (bounded) until Redis answers; see
    /// [`RedisHotState::check`] for a start-up check. Fails only on an unusable URL, options
    /// or TLS files. Must be called within a tokio runtime (it starts the subscriber task).
    pub async fn connect(url: &str, options: RedisOptions) -> Result<Arc<Self>, StoreError> {
        if options.pool_size == 0 {
            return Err(StoreError(
                "redis hot state: pool_size must be at least 1".into(),
            ));
        }
        if options.command_timeout.is_zero() || options.connect_timeout.is_zero() {
            return Err(StoreError(
                "redis hot state: command_timeout and connect_timeout must be positive".into(),
            ));
        }
        if options.release_poll.is_zero() {
            return Err(StoreError(
                "redis hot state: release_poll must be positive".into(),
            ));
        }
        if options.channel_capacity == 0 {
            return Err(StoreError(
                "redis hot state: channel_capacity must be at least 1".into(),
            ));
        }
        // The redis crate's parse errors do not echo the URL, so credentials stay out of them.
        let info = url
            .into_connection_info()
            .map_err(|e| StoreError(format!("redis hot state: invalid Redis URL: {e}")))?;
        let endpoint = info.addr().to_string();
        let info = with_tls(info, &options.tls)?;
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.command_timeout));
        let manager = Manager::new_with_config(info.clone(), conn_config).map_err(|e| {
            StoreError(format!(
                "redis hot state: cannot use Redis at {endpoint}: {e}"
            ))
        })?;
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .timeouts(Timeouts {
                wait: Some(options.command_timeout),
                create: Some(options.connect_timeout),
                recycle: Some(options.command_timeout),
            })
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError(format!("redis hot state: cannot build the pool: {e}")))?;
        let client = redis::Client::open(info).map_err(|e| {
            StoreError(format!(
                "redis hot state: cannot use Redis at {endpoint}: {e}"
            ))
        })?;
        let (hub, commands) = mpsc::channel(HUB_QUEUE);
        let hub_client = client.clone();
        let task = Hub {
            client,
            endpoint: endpoint.clone(),
            connect_timeout: options.connect_timeout,
            command_timeout: options.command_timeout,
            capacity: options.channel_capacity,
            commands,
            channels: HashMap::new(),
            conn: None,
            retry_at: None,
            backoff: MIN_BACKOFF,
        };
        tokio::spawn(task.run());
        Ok(Arc::new(RedisHotState {
            pool,
            prefix: options.prefix,
            endpoint,
            command_timeout: options.command_timeout,
            release_poll: options.release_poll,
            scripts: Scripts::new(),
            hub,
            hub_client,
        }))
    }

    /// One round trip on a new connection, for start-up: fails when Redis refuses this node
    /// for a reason that waiting cannot fix (wrong or missing password, an untrusted
    /// certificate, TLS against a plain port or the reverse), so the operator hears of it at
    /// once; Redis being down or slow passes (with a warning), since operations wait for it.
    pub async fn check(&self) -> Result<(), StoreError> {
        let probe = async {
            let mut conn = self.hub_client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        match tokio::time::timeout(self.command_timeout, probe).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if super::tls::redis_error_is_fatal(&e) => Err(StoreError(format!(
                "redis at {} refused this node: {e}. Check the password in [cluster] \
                 redis_url (rediss:// for TLS) and [cluster] redis_tls_ca_file",
                self.endpoint
            ))),
            Ok(Err(e)) => {
                tracing::warn!(endpoint = %self.endpoint, error = %e,
                    "redis does not answer yet; requests needing it fail until it does");
                Ok(())
            }
            Err(_) => {
                tracing::warn!(endpoint = %self.endpoint,
                    "redis did not answer within the command timeout; requests needing it fail until it does");
                Ok(())
            }
        }
    }

    /// One round trip to Redis (readiness checks).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.query::<String>("ping", redis::cmd("PING"))
            .await
            .map(|_| ())
    }

    /// The namespace prefix in use.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, kind: &str, name: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + kind.len() + name.len() + 1);
        k.push_str(&self.prefix);
        k.push_str(kind);
        k.push(':');
        k.push_str(name);
        k
    }

    fn fail(&self, what: &str, e: impl fmt::Display) -> StoreError {
        StoreError(format!(
            "redis hot state at {}: {what} failed: {e}",
            self.endpoint
        ))
    }

    fn pool_fail(&self, what: &str, e: PoolError) -> StoreError {
        match e {
            PoolError::Timeout(deadpool_redis::TimeoutType::Wait) => self.fail(
                what,
                format_args!(
                    "no free connection within {} ms",
                    self.command_timeout.as_millis()
                ),
            ),
            PoolError::Timeout(deadpool_redis::TimeoutType::Create) => {
                self.fail(what, "connecting timed out")
            }
            PoolError::Timeout(deadpool_redis::TimeoutType::Recycle) => {
                self.fail(what, "checking a pooled connection timed out")
            }
            PoolError::Backend(e) => self.fail(what, format_args!("cannot connect: {e}")),
            other => self.fail(what, other),
        }
    }

    /// Runs `cmd` on a pooled connection, bounded by the command timeout as a whole.
    async fn query<T: redis::FromRedisValue>(
        &self,
        what: &str,
        cmd: redis::Cmd,
    ) -> Result<T, StoreError> {
        let run = async {
            let mut conn = self.pool.get().await.map_err(|e| self.pool_fail(what, e))?;
            cmd.query_async::<T>(&mut conn)
                .await
                .map_err(|e| self.fail(what, e))
        };
        self.bounded(what, run).await
    }

    /// Runs a script on a pooled connection, bounded by the command timeout as a whole.
    async fn eval<T: redis::FromRedisValue>(
        &self,
        what: &str,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let run = async {
            let mut conn = self.pool.get().await.map_err(|e| self.pool_fail(what, e))?;
            invocation
                .invoke_async::<T>(&mut conn)
                .await
                .map_err(|e| self.fail(what, e))
        };
        self.bounded(what, run).await
    }

    async fn bounded<T>(
        &self,
        what: &str,
        run: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.command_timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(self.fail(
                what,
                format_args!("no answer within {} ms", self.command_timeout.as_millis()),
            )),
        }
    }

    /// Removes the reservation `(scope, token)` if it exists, retrying in a background task
    /// until Redis answers or `lifetime` (the reservation's TTL) has passed. For reservations
    /// whose holder cannot tell whether it got them (the `SET` timed out) or could not give
    /// them back (the release failed).
    fn release_in_background(&self, scope: &str, token: u128, lifetime: Duration) {
        let pool = self.pool.clone();
        let script = self.scripts.release.clone();
        let (key, channel) = (self.key("res", scope), self.key("rel", scope));
        let bound = self.command_timeout;
        tokio::spawn(async move {
            let until = tokio::time::Instant::now() + lifetime;
            while tokio::time::Instant::now() < until {
                let attempt = async {
                    let mut conn = pool.get().await.ok()?;
                    let mut inv = script.prepare_invoke();
                    inv.key(&key).arg(token.to_string()).arg(&channel);
                    inv.invoke_async::<i64>(&mut conn).await.ok()
                };
                if let Ok(Some(_)) = tokio::time::timeout(bound, attempt).await {
                    return;
                }
                tokio::time::sleep(RELEASE_RETRY).await;
            }
        });
    }

    /// Asks the subscriber task for a receiver on the (already prefixed) `channel`.
    async fn listen(&self, channel: String) -> Result<Subscription, StoreError> {
        let what = "subscribe";
        let (reply, answer) = oneshot::channel();
        let ask = async {
            self.hub
                .send(HubCommand::Subscribe {
                    channel: channel.clone(),
                    reply,
                })
                .await
                .map_err(|_| self.fail(what, "the subscriber task stopped"))?;
            answer
                .await
                .map_err(|_| self.fail(what, "the subscriber task stopped"))?
        };
        let rx = self.bounded(what, ask).await?;
        let hub = self.hub.downgrade();
        let on_drop = Box::new(move || {
            if let Some(hub) = hub.upgrade() {
                // Full queue: the channel is cleaned up on the next reconnect or message.
                let _ = hub.try_send(HubCommand::Dropped { channel });
            }
        });
        Ok(Subscription::new(rx, Some(on_drop)))
    }
}

fn as_bool(v: i64) -> bool {
    v == 1
}

#[async_trait::async_trait]
impl HotState for RedisHotState {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        RedisHotState::ping(self).await
    }

    async fn reserve(&self, scope: &str, ttl: Duration) -> Result<Option<Reservation>, StoreError> {
        let token = rand::random::<u128>();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key("res", scope))
            .arg(token.to_string())
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl));
        match self.query::<Value>("reserve", cmd).await {
            Ok(v) => Ok((!matches!(v, Value::Nil)).then(|| Reservation::new(scope, token))),
            Err(e) => {
                // The SET may still reach Redis (a hung server runs it when it resumes):
                // remove it as soon as Redis answers, so the key is not wedged for its TTL.
                self.release_in_background(scope, token, ttl);
                Err(e)
            }
        }
    }

    async fn release(&self, reservation: Reservation) -> Result<bool, StoreError> {
        let mut inv = self.scripts.release.prepare_invoke();
        inv.key(self.key("res", reservation.scope()))
            .arg(reservation.token().to_string())
            .arg(self.key("rel", reservation.scope()));
        let r = self.eval::<i64>("release", inv).await.map(as_bool);
        if r.is_err() {
            // Keep trying once Redis answers: a reservation that is not given back would keep
            // a retry of the same key waiting until its TTL.
            self.release_in_background(reservation.scope(), reservation.token(), RELEASE_GIVE_UP);
        }
        r
    }

    async fn wait_released(&self, scope: &str, timeout: Duration) {
        let now = Instant::now();
        // An absurdly long timeout is cut to a day rather than overflowing.
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(86_400));
        let key = self.key("res", scope);
        // Listen first, then look: a release between the two cannot be missed.
        let mut released = match tokio::time::timeout(
            timeout.min(self.command_timeout),
            self.listen(self.key("rel", scope)),
        )
        .await
        {
            Ok(Ok(s)) => Some(s),
            // No notification: fall back to polling alone.
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "release notifications unavailable; polling");
                None
            }
            Err(_) => None,
        };
        loop {
            let pttl = self
                .query::<i64>("wait_released", {
                    let mut c = redis::cmd("PTTL");
                    c.arg(&key);
                    c
                })
                .await;
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            let pause = match pttl {
                Ok(-2) => return, // no such key: released or lapsed
                // Lapses in `ms` (0: within this millisecond): look again just after.
                Ok(ms) if ms >= 0 => self
                    .release_poll
                    .min(Duration::from_millis(ms.unsigned_abs() + 1)),
                Ok(_) => self.release_poll, // -1: no expiry (not one of ours); poll
                Err(_) => {
                    // Redis unreachable: pause briefly (so a caller looping on reserve cannot
                    // spin), then let its next reserve report the error.
                    let pause = self.release_poll.min(ERROR_PAUSE);
                    tokio::time::sleep_until(deadline.min(now + pause)).await;
                    return;
                }
            };
            let until = deadline.min(now + pause);
            match released.as_mut() {
                Some(sub) => match tokio::time::timeout_at(until, sub.recv()).await {
                    Ok(Some(_)) | Err(_) => {}
                    Ok(None) => released = None, // subscriber task gone: poll only
                },
                None => tokio::time::sleep_until(until).await,
            }
        }
    }

    async fn acquire_lease(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut inv = self.scripts.acquire_lease.prepare_invoke();
        inv.key(self.key("lease", key)).arg(owner).arg(millis(ttl));
        self.eval::<i64>("acquire_lease", inv).await.map(as_bool)
    }

    async fn acquire_lease_epoch(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, StoreError> {
        let mut inv = self.scripts.acquire_lease_epoch.prepare_invoke();
        inv.key(self.key("lease", key))
            .key(self.key("lease-epoch", key))
            .key(format!("{}lease-epochs", self.prefix))
            .arg(owner)
            .arg(millis(ttl));
        let epoch = self.eval::<i64>("acquire_lease_epoch", inv).await?;
        Ok(u64::try_from(epoch).ok().filter(|e| *e > 0))
    }

    async fn renew_lease(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut inv = self.scripts.renew_lease.prepare_invoke();
        inv.key(self.key("lease", key))
            .key(self.key("lease-epoch", key))
            .arg(owner)
            .arg(millis(ttl));
        self.eval::<i64>("renew_lease", inv).await.map(as_bool)
    }

    async fn release_lease(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        let mut inv = self.scripts.release_lease.prepare_invoke();
        inv.key(self.key("lease", key))
            .key(self.key("lease-epoch", key))
            .arg(owner);
        self.eval::<i64>("release_lease", inv).await.map(as_bool)
    }

    async fn lease_owner(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key("lease", key));
        self.query("lease_owner", cmd).await
    }

    async fn put_snapshot(&self, key: &str, bytes: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key("snap", key))
            .arg(bytes)
            .arg("PX")
            .arg(millis(ttl));
        self.query::<Value>("put_snapshot", cmd).await.map(|_| ())
    }

    async fn get_snapshot(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key("snap", key));
        self.query("get_snapshot", cmd).await
    }

    async fn delete_snapshot(&self, key: &str) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key("snap", key));
        self.query::<i64>("delete_snapshot", cmd).await.map(|_| ())
    }

    async fn incr(&self, key: &str, ttl: Duration) -> Result<i64, StoreError> {
        let mut inv = self.scripts.incr.prepare_invoke();
        inv.key(self.key("ctr", key)).arg(millis(ttl));
        self.eval("incr", inv).await
    }

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key("ctr", key));
        self.query::<i64>("reset", cmd).await.map(|_| ())
    }

    async fn publish(&self, channel: &str, message: &[u8]) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(self.key("ch", channel)).arg(message);
        self.query::<i64>("publish", cmd).await.map(|_| ())
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription, StoreError> {
        self.listen(self.key("ch", channel)).await
    }
}

// --- the subscriber task ---

/// How long [`HotState::wait_released`] pauses before giving up when Redis cannot be reached.
const ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Commands waiting for the subscriber task (subscribe requests, dropped subscriptions).
const HUB_QUEUE: usize = 1024;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

enum HubCommand {
    /// Listen on `channel` (prefixed) and answer with a receiver once Redis confirmed it.
    Subscribe {
        channel: String,
        reply: oneshot::Sender<Result<broadcast::Receiver<Message>, StoreError>>,
    },
    /// A local subscription to `channel` was dropped; stop listening if it was the last.
    Dropped { channel: String },
}

type PubSubConn = (redis::aio::PubSubSink, redis::aio::PubSubStream);

/// Owns the process's one subscriber connection and fans its messages out to local
/// subscribers through one broadcast channel per Redis channel. A channel is in `channels`
/// only while Redis has confirmed the subscription on the current connection (or it waits to
/// be re-subscribed after a reconnect), so a receiver handed out is never early.
struct Hub {
    client: redis::Client,
    endpoint: String,
    connect_timeout: Duration,
    command_timeout: Duration,
    capacity: usize,
    commands: mpsc::Receiver<HubCommand>,
    channels: HashMap<String, broadcast::Sender<Message>>,
    conn: Option<PubSubConn>,
    /// After a failure: no new connection attempt before this time (subscribe requests fail
    /// at once until then); when it comes, the task reconnects if anyone is listening.
    retry_at: Option<Instant>,
    backoff: Duration,
}

async fn next_message(conn: &mut Option<PubSubConn>) -> Option<redis::Msg> {
    match conn {
        Some((_, stream)) => stream.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Hub {
    async fn run(mut self) {
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(HubCommand::Subscribe { channel, reply }) => {
                        self.subscribe(channel, reply).await;
                    }
                    Some(HubCommand::Dropped { channel }) => self.dropped(&channel).await,
                    // Every handle to the backend is gone: stop (closes every subscription).
                    None => return,
                },
                msg = next_message(&mut self.conn) => match msg {
                    Some(msg) => self.dispatch(msg).await,
                    None => self.lost("the subscriber connection closed"),
                },
                () = sleep_until_opt(self.retry_at),
                    if self.conn.is_none() && !self.channels.is_empty() =>
                {
                    // A failure is logged by `lost`; the next attempt is scheduled there.
                    let _ = self.reconnect().await;
                }
            }
        }
    }

    fn fail(&self, e: impl fmt::Display) -> StoreError {
        StoreError(format!(
            "redis hot state at {}: subscribe failed: {e}",
            self.endpoint
        ))
    }

    /// The connection is gone or could not be made: forget it and hold off the next attempt
    /// (doubling the pause each time, up to [`MAX_BACKOFF`]).
    fn lost(&mut self, why: &str) {
        let had = self.conn.take().is_some();
        self.channels.retain(|_, tx| tx.receiver_count() > 0);
        if had || self.backoff == MIN_BACKOFF {
            tracing::warn!(endpoint = %self.endpoint, channels = self.channels.len(),
                "redis pub/sub: {why}; will reconnect");
        }
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Opens the connection and re-subscribes every channel that still has listeners.
    async fn reconnect(&mut self) -> Result<(), StoreError> {
        self.channels.retain(|_, tx| tx.receiver_count() > 0);
        let opened = tokio::time::timeout(self.connect_timeout, self.client.get_async_pubsub());
        let (mut sink, stream) = match opened.await {
            Ok(Ok(p)) => p.split(),
            Ok(Err(e)) => {
                let e = self.fail(format_args!("cannot connect: {e}"));
                self.lost("cannot connect");
                return Err(e);
            }
            Err(_) => {
                let e = self.fail("connecting timed out");
                self.lost("connecting timed out");
                return Err(e);
            }
        };
        if !self.channels.is_empty() {
            let names: Vec<&String> = self.channels.keys().collect();
            match tokio::time::timeout(self.command_timeout, sink.subscribe(names)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let e = self.fail(e);
                    self.lost("re-subscribing failed");
                    return Err(e);
                }
                Err(_) => {
                    let e = self.fail("re-subscribing timed out");
                    self.lost("re-subscribing timed out");
                    return Err(e);
                }
            }
            tracing::info!(endpoint = %self.endpoint, channels = self.channels.len(),
                "redis pub/sub: reconnected");
        }
        self.conn = Some((sink, stream));
        self.retry_at = None;
        self.backoff = MIN_BACKOFF;
        Ok(())
    }

    async fn subscribe(
        &mut self,
        channel: String,
        reply: oneshot::Sender<Result<broadcast::Receiver<Message>, StoreError>>,
    ) {
        if reply.is_closed() {
            return; // the caller gave up
        }
        if self.conn.is_none() {
            if self.retry_at.is_some_and(|at| at > Instant::now()) {
                let _ = reply.send(Err(self.fail("no connection to Redis; retrying")));
                return;
            }
            if let Err(e) = self.reconnect().await {
                let _ = reply.send(Err(e));
                return;
            }
        }
        if let Some(tx) = self.channels.get(&channel) {
            if reply.send(Ok(tx.subscribe())).is_err() {
                self.dropped(&channel).await;
            }
            return;
        }
        let Some((sink, _)) = self.conn.as_mut() else {
            let _ = reply.send(Err(self.fail("no connection to Redis")));
            return;
        };
        match tokio::time::timeout(self.command_timeout, sink.subscribe(&channel)).await {
            Ok(Ok(())) => {
                let (tx, rx) = broadcast::channel(self.capacity);
                self.channels.insert(channel.clone(), tx);
                if reply.send(Ok(rx)).is_err() {
                    // The caller gave up meanwhile: nobody will ever drop a subscription here.
                    self.dropped(&channel).await;
                }
            }
            Ok(Err(e)) => {
                let _ = reply.send(Err(self.fail(&e)));
                self.lost("subscribing failed");
            }
            Err(_) => {
                let _ = reply.send(Err(self.fail("no confirmation from Redis in time")));
                self.lost("subscribing timed out");
            }
        }
    }

    /// Stops listening on `channel` once no local subscriber is left.
    async fn dropped(&mut self, channel: &str) {
        let idle = self
            .channels
            .get(channel)
            .is_some_and(|tx| tx.receiver_count() == 0);
        if !idle {
            return;
        }
        self.channels.remove(channel);
        if let Some((sink, _)) = self.conn.as_mut() {
            match tokio::time::timeout(self.command_timeout, sink.unsubscribe(channel)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => self.lost("unsubscribing failed"),
            }
        }
    }

    async fn dispatch(&mut self, msg: redis::Msg) {
        let name = msg.get_channel_name();
        let Some(tx) = self.channels.get(name) else {
            return;
        };
        if tx.send(Arc::from(msg.get_payload_bytes())).is_err() {
            // Nobody local listens any more.
            let name = name.to_string();
            self.dropped(&name).await;
        }
    }
}
