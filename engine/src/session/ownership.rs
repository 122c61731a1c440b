//! Which node owns a payment session (cluster mode).
//!
//! Several `ipay serve` nodes share one ledger. A session's commands must be decided by one
//! node at a time, or two nodes could apply the same transition from their own in-memory copy
//! (two `succeeded` events, a refund above what is left). Ownership is a lease in the shared
//! [`HotState`] (Redis): `session:{id}` → `"{node_id} {url}"`, with a TTL.
//!
//! - A node that creates a session takes its lease.
//! - Before a command runs, the node *claims* the session: it still holds the lease (renewed;
//!   its in-memory state is current), it gets a free lease (a take-over: in-memory state may be
//!   stale and is reloaded from the ledger, or from a hand-over snapshot), or another node holds
//!   it (the command is forwarded to that node, one hop at most, through the
//!   [`SessionForwarder`] the process was wired with; the engine knows no transport).
//! - Leases are not renewed in the background: a session is owned while it is used, and an
//!   idle session's lease simply lapses. A killed node's sessions are therefore served by the
//!   others at most one TTL after its last command.
//! - Every lease carries an *epoch*, a fencing token that grows with each new lease
//!   ([`HotState::acquire_lease_epoch`]). Each decision the owner commits carries its epoch
//!   ([`crate::store::WriteOp::Fence`] on [`fence_key`]), and the ledger refuses a batch whose
//!   epoch is older than one already committed for that session. A node stalled past its TTL
//!   (GC pause, `SIGSTOP`, a slow disk) whose session was taken over and decided by another
//!   node therefore cannot commit its stale decision when it resumes: its caller gets 503
//!   `session_unavailable` and a retry reaches the new owner.
//! - A node that stops cleanly writes a snapshot of each idle session it holds (rkyv, validated
//!   on read) and releases the lease, so another node takes over at once without a ledger read.
//!
//! Nothing here is the only copy of anything: the ledger holds every committed state. Losing
//! Redis costs availability (503 until it returns), never a payment.

use crate::error::{EngineError, EngineResult};
use crate::ids::PaymentIntentId;
use crate::model::{Applied, IntentCommand, PaymentIntent};
use crate::session::IdempotencySpec;
use crate::store::HotState;
use dashmap::DashMap;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Cluster settings of the session layer.
#[derive(Debug, Clone)]
pub struct OwnershipOptions {
    /// How long a lease lives after its last use.
    pub lease_ttl: Duration,
    /// Secret nodes present to each other when forwarding (empty: forwarding off, commands for
    /// sessions owned elsewhere get 503 until the lease lapses).
    pub node_token: String,
}

impl Default for OwnershipOptions {
    fn default() -> Self {
        OwnershipOptions {
            lease_ttl: Duration::from_secs(5),
            node_token: String::new(),
        }
    }
}

/// The port through which a command reaches the node that owns its session. The gateway
/// implements it next to the route that receives forwarded commands; the engine only decides
/// when to forward and to whom.
#[async_trait::async_trait]
pub trait SessionForwarder: Send + Sync + 'static {
    /// Runs `command` on session `id` at the node reachable at `owner` (its advertised base
    /// URL) and returns that node's answer. An unreachable owner is
    /// [`EngineError::SessionUnavailable`]; the owner's own refusals come back as its errors.
    async fn forward(
        &self,
        owner: &str,
        id: PaymentIntentId,
        command: ForwardedCommand,
    ) -> EngineResult<Applied>;
}

/// The outcome of claiming a session before running a command on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// We held the lease without a break: the in-memory state (if any) is current.
    Held,
    /// We just took a free lease: any in-memory state may be stale and must be reloaded.
    Fresh,
    /// Another node holds it; the value is its advertised base URL.
    Elsewhere(String),
}

/// A forwarded command, as sent between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardedCommand {
    pub cmd: IntentCommand,
    pub idem: Option<IdempotencySpec>,
}

/// A forwarded command's error, as returned between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardedError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

/// A session's state written at a clean hand-over (rkyv; the intent itself as JSON inside).
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SessionSnapshot {
    /// Format version; a snapshot of another version is ignored.
    pub version: u16,
    /// The intent id, checked against the key it was read under.
    pub intent_id: u128,
    /// When it was written (ms).
    pub written_ms: i64,
    /// The node that wrote it.
    pub writer: String,
    /// The intent's JSON.
    pub intent_json: String,
}

const SNAPSHOT_VERSION: u16 = 1;

impl SessionSnapshot {
    /// Encodes a snapshot of `intent`.
    pub fn encode(intent: &PaymentIntent, writer: &str, now_ms: i64) -> Option<Vec<u8>> {
        let snap = SessionSnapshot {
            version: SNAPSHOT_VERSION,
            intent_id: intent.id.as_u128(),
            written_ms: now_ms,
            writer: writer.to_string(),
            intent_json: serde_json::to_string(intent).ok()?,
        };
        rkyv::to_bytes::<rkyv::rancor::Error>(&snap)
            .ok()
            .map(|b| b.to_vec())
    }

    /// Decodes and validates a snapshot read for `id`: `None` when it is corrupt, of another
    /// version, or about another intent (the caller then reads the ledger).
    pub fn decode(bytes: &[u8], id: PaymentIntentId) -> Option<PaymentIntent> {
        // rkyv validates the archive (bounds, UTF-8, alignment) before anything is read.
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        let archived =
            rkyv::access::<ArchivedSessionSnapshot, rkyv::rancor::Error>(&aligned).ok()?;
        if archived.version != SNAPSHOT_VERSION || archived.intent_id != id.as_u128() {
            return None;
        }
        let intent: PaymentIntent = serde_json::from_str(archived.intent_json.as_str()).ok()?;
        (intent.id == id).then_some(intent)
    }
}

/// This node's view of session ownership.
pub struct Ownership {
    hot: Arc<dyn HotState>,
    node_id: String,
    advertise: RwLock<String>,
    opts: OwnershipOptions,
    /// When we last took or renewed each lease we hold (our clock), and the lease's epoch:
    /// within a third of the TTL of that moment the lease is certainly still ours, so no
    /// round trip is needed. The epoch fences every decision taken under the lease.
    held: DashMap<PaymentIntentId, (Instant, u64)>,
    /// How commands reach other nodes (none: forwarding off).
    forwarder: Option<Arc<dyn SessionForwarder>>,
}

fn lease_key(id: PaymentIntentId) -> String {
    format!("session:{id}")
}

/// The ledger fence of a session's decisions ([`crate::store::WriteOp::Fence`]).
pub fn fence_key(id: PaymentIntentId) -> String {
    format!("session:{id}")
}

fn snapshot_key(id: PaymentIntentId) -> String {
    format!("session-snapshot:{id}")
}

impl Ownership {
    /// Ownership through `hot`; `advertise` is this node's base URL as other nodes reach it
    /// (it may be set later with [`Ownership::set_advertise_url`], once the port is known).
    /// Commands for sessions owned elsewhere get 503 until a forwarder is given with
    /// [`Ownership::with_forwarder`].
    pub fn new(hot: Arc<dyn HotState>, opts: OwnershipOptions, advertise: String) -> Self {
        Ownership {
            hot,
            node_id: crate::ids::new_node_id(),
            advertise: RwLock::new(advertise),
            opts,
            held: DashMap::new(),
            forwarder: None,
        }
    }

    /// Forwards commands for sessions owned by other nodes through `forwarder`.
    pub fn with_forwarder(mut self, forwarder: Arc<dyn SessionForwarder>) -> Self {
        self.forwarder = Some(forwarder);
        self
    }

    /// This process's node id (new on every start).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Sets the URL other nodes use to reach this one.
    pub fn set_advertise_url(&self, url: String) {
        *self.advertise.write() = url;
    }

    /// The lease TTL.
    pub fn lease_ttl(&self) -> Duration {
        self.opts.lease_ttl
    }

    /// The secret nodes present to each other when forwarding (empty: off).
    pub fn node_token(&self) -> &str {
        &self.opts.node_token
    }

    fn me(&self) -> String {
        format!("{} {}", self.node_id, self.advertise.read())
    }

    /// Takes the lease of a session this node is creating.
    pub async fn claim_new(&self, id: PaymentIntentId) -> EngineResult<()> {
        let started = Instant::now();
        match self
            .hot
            .acquire_lease_epoch(&lease_key(id), &self.me(), self.opts.lease_ttl)
            .await?
        {
            Some(epoch) => {
                self.held.insert(id, (started, epoch));
                Ok(())
            }
            None => Err(EngineError::SessionUnavailable),
        }
    }

    /// Claims a session before a command runs on it.
    pub async fn claim(&self, id: PaymentIntentId) -> EngineResult<Claim> {
        Ok(self.claim_fenced(id).await?.0)
    }

    /// Claims a session before a command runs on it; when this node holds the lease, also
    /// its epoch, with which the command's writes must be fenced.
    pub async fn claim_fenced(&self, id: PaymentIntentId) -> EngineResult<(Claim, Option<u64>)> {
        let ttl = self.opts.lease_ttl;
        let held = self.held.get(&id).map(|h| *h);
        if let Some((at, epoch)) = held
            && at.elapsed() < ttl / 3
        {
            return Ok((Claim::Held, Some(epoch)));
        }
        let key = lease_key(id);
        let me = self.me();
        let started = Instant::now();
        if let Some((_, epoch)) = held
            && self.hot.renew_lease(&key, &me, ttl).await?
        {
            self.held.insert(id, (started, epoch));
            return Ok((Claim::Held, Some(epoch)));
        }
        self.held.remove(&id);
        for _ in 0..2 {
            if let Some(epoch) = self.hot.acquire_lease_epoch(&key, &me, ttl).await? {
                self.held.insert(id, (started, epoch));
                return Ok((Claim::Fresh, Some(epoch)));
            }
            match self.hot.lease_owner(&key).await? {
                Some(owner) => {
                    let url = owner.split_once(' ').map(|(_, u)| u).unwrap_or("");
                    return Ok((Claim::Elsewhere(url.to_string()), None));
                }
                // Released between our two calls: try again.
                None => continue,
            }
        }
        Err(EngineError::SessionUnavailable)
    }

    /// Forgets a lease the ledger has shown we lost (a write of ours was fenced off): the
    /// next command claims the session anew.
    pub fn lost(&self, id: PaymentIntentId) {
        self.held.remove(&id);
    }

    /// Takes or keeps a node-wide role lease (`name`), e.g. "the node that sweeps expiries".
    pub async fn lead(&self, name: &str, ttl: Duration) -> EngineResult<bool> {
        Ok(self.hot.acquire_lease(name, &self.me(), ttl).await?)
    }

    /// Forgets leases not used for a full TTL (they have lapsed in the hot state too).
    pub fn forget_lapsed(&self) {
        let ttl = self.opts.lease_ttl;
        self.held.retain(|_, (t, _)| t.elapsed() < ttl);
    }

    /// Reads (and removes) the hand-over snapshot of a session we just took over.
    pub async fn take_snapshot(&self, id: PaymentIntentId) -> EngineResult<Option<PaymentIntent>> {
        let key = snapshot_key(id);
        let Some(bytes) = self.hot.get_snapshot(&key).await? else {
            return Ok(None);
        };
        // It must be gone before we change the session, or a later take-over could trust it.
        self.hot.delete_snapshot(&key).await?;
        let decoded = SessionSnapshot::decode(&bytes, id);
        let outcome = if decoded.is_some() { "used" } else { "corrupt" };
        metrics::counter!("ipay_session_snapshots_total", "outcome" => outcome).increment(1);
        Ok(decoded)
    }

    /// Hands a session over at a clean stop: writes its snapshot, then releases the lease.
    pub async fn hand_over(&self, intent: &PaymentIntent, now_ms: i64) {
        let id = intent.id;
        if self.held.remove(&id).is_none() {
            return;
        }
        let Some(bytes) = SessionSnapshot::encode(intent, &self.node_id, now_ms) else {
            return;
        };
        let ttl = Duration::from_secs(3600);
        if self
            .hot
            .put_snapshot(&snapshot_key(id), &bytes, ttl)
            .await
            .is_ok()
        {
            let _ = self.hot.release_lease(&lease_key(id), &self.me()).await;
        }
    }

    /// Sends a command to the node that owns the session.
    pub async fn forward(
        &self,
        owner_url: &str,
        id: PaymentIntentId,
        cmd: IntentCommand,
        idem: Option<IdempotencySpec>,
    ) -> EngineResult<Applied> {
        let Some(forwarder) = &self.forwarder else {
            return Err(EngineError::SessionUnavailable);
        };
        if self.opts.node_token.is_empty() || owner_url.is_empty() {
            return Err(EngineError::SessionUnavailable);
        }
        metrics::counter!("ipay_session_forwards_total").increment(1);
        forwarder
            .forward(owner_url, id, ForwardedCommand { cmd, idem })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::ids::{MerchantId, ServiceId};
    use crate::model::{IntentStatus, PaymentIntent};
    use crate::store::memory_hot::MemoryHotState;

    fn intent() -> PaymentIntent {
        PaymentIntent {
            id: PaymentIntentId::new_at(1_000),
            status: IntentStatus::Pending,
            amount: crate::money::Money::from_parts(1234, "EUR").unwrap(),
            amount_refunded: 0,
            refunds_pending: Vec::new(),
            payer: None,
            channel: "sandbox".into(),
            service_id: ServiceId::new_at(1_000),
            qr_code: "q".into(),
            channel_reference: None,
            metadata: Default::default(),
            failure_reason: None,
            cancellation_reason: None,
            settlement: None,
            livemode: false,
            merchant_id: MerchantId::new_at(1_000),
            expires_at: Timestamp(901_000),
            created: Timestamp(1_000),
            updated: Timestamp(1_000),
        }
    }

    fn node(hot: &Arc<MemoryHotState>, url: &str) -> Ownership {
        let opts = OwnershipOptions {
            lease_ttl: Duration::from_secs(30),
            node_token: "t".into(),
        };
        Ownership::new(hot.clone(), opts, url.into())
    }

    #[tokio::test]
    async fn a_session_is_owned_by_one_node_and_found_by_the_other() {
        let hot = Arc::new(MemoryHotState::new());
        let (a, b) = (node(&hot, "http://a"), node(&hot, "http://b"));
        let id = PaymentIntentId::new_at(5);
        a.claim_new(id).await.unwrap();
        assert_eq!(a.claim(id).await.unwrap(), Claim::Held);
        assert_eq!(
            b.claim(id).await.unwrap(),
            Claim::Elsewhere("http://a".into())
        );
        // Another session, first claimed by B: a take-over, so B must reload it.
        let other = PaymentIntentId::new_at(6);
        assert_eq!(b.claim(other).await.unwrap(), Claim::Fresh);
        assert_eq!(b.claim(other).await.unwrap(), Claim::Held);
    }

    #[tokio::test]
    async fn a_hand_over_releases_the_lease_and_leaves_a_snapshot_read_once() {
        let hot = Arc::new(MemoryHotState::new());
        let (a, b) = (node(&hot, "http://a"), node(&hot, "http://b"));
        let pi = intent();
        a.claim_new(pi.id).await.unwrap();
        a.hand_over(&pi, 2_000).await;
        assert_eq!(b.claim(pi.id).await.unwrap(), Claim::Fresh);
        let back = b.take_snapshot(pi.id).await.unwrap().expect("snapshot");
        assert_eq!(back.id, pi.id);
        assert_eq!(back.status, IntentStatus::Pending);
        assert_eq!(back.amount, pi.amount);
        // Read once: a later take-over must not trust it.
        assert!(b.take_snapshot(pi.id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn claims_carry_the_lease_epoch_and_a_take_over_gets_a_newer_one() {
        let hot = Arc::new(MemoryHotState::new());
        let (a, b) = (node(&hot, "http://a"), node(&hot, "http://b"));
        let pi = intent();
        a.claim_new(pi.id).await.unwrap();
        let (claim, first) = a.claim_fenced(pi.id).await.unwrap();
        assert_eq!(claim, Claim::Held);
        let first = first.expect("the owner knows its epoch");
        assert_eq!(a.claim_fenced(pi.id).await.unwrap().1, Some(first));
        assert_eq!(
            b.claim_fenced(pi.id).await.unwrap(),
            (Claim::Elsewhere("http://a".into()), None)
        );
        // A hands the session over: B takes it under a newer epoch, which fences A off.
        a.hand_over(&pi, 2_000).await;
        let (claim, second) = b.claim_fenced(pi.id).await.unwrap();
        assert_eq!(claim, Claim::Fresh);
        assert!(second.expect("taken") > first);
        // A node told by the ledger that it lost a session claims it anew and finds B.
        a.lost(pi.id);
        assert_eq!(
            a.claim_fenced(pi.id).await.unwrap().0,
            Claim::Elsewhere("http://b".into())
        );
    }

    #[tokio::test]
    async fn a_corrupt_or_foreign_snapshot_is_ignored() {
        let hot = Arc::new(MemoryHotState::new());
        let b = node(&hot, "http://b");
        let pi = intent();
        let good = SessionSnapshot::encode(&pi, "n", 1).unwrap();
        assert!(SessionSnapshot::decode(&good, pi.id).is_some());
        // Another intent's snapshot under this key, truncated bytes, flipped bytes: all refused.
        assert!(SessionSnapshot::decode(&good, PaymentIntentId::new_at(77)).is_none());
        assert!(SessionSnapshot::decode(&good[..good.len() / 2], pi.id).is_none());
        let mut flipped = good.clone();
        for b in flipped.iter_mut().rev().take(24) {
            *b ^= 0xff;
        }
        assert!(SessionSnapshot::decode(&flipped, pi.id).is_none());
        hot.put_snapshot(
            &snapshot_key(pi.id),
            b"not rkyv at all",
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        assert!(b.take_snapshot(pi.id).await.unwrap().is_none());
    }
}
