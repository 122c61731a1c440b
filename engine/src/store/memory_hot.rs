//! In-process [`HotState`] for embedded mode: concurrent maps with expiry times, waiters woken
//! by a [`Notify`] when a reservation is released, pub/sub on [`broadcast`] channels.
//!
//! Expired entries are treated as absent the moment they expire and are swept out of the maps
//! lazily (on the next write to the same key, and by a sweep over all maps at most every
//! [`SWEEP_EVERY`], run by whichever write comes along), so abandoned keys do not accumulate.
//!
//! Expiry times are read from an injected [`Clock`] (the wall clock unless built with
//! [`MemoryHotState::with_clock`]), so tests move TTLs forward instead of sleeping past them.
//! Waiting (`wait_released`) still takes real time: a waiter sleeps at most until the
//! reservation's expiry as the clock sees it at the moment it starts waiting.

use super::{HotState, Message, Reservation, Subscription};
use crate::clock::{Clock, SystemClock};
use crate::error::StoreError;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, broadcast};

/// How often the maps are swept of expired entries (at most).
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Messages a slow subscriber may fall behind before it starts missing them.
pub const CHANNEL_CAPACITY: usize = 1024;

/// Milliseconds on the injected clock.
type Ms = i64;

struct Held {
    token: u128,
    notify: Arc<Notify>,
    expires: Ms,
}

struct Lease {
    owner: String,
    expires: Ms,
    /// The fencing token handed out when the lease was taken.
    epoch: u64,
}

struct Expiring<T> {
    value: T,
    expires: Ms,
}

type Channels = DashMap<String, broadcast::Sender<Message>>;

/// `now + ttl`, rounded up to the next millisecond (a 1 µs TTL still lives until the next
/// millisecond, a zero TTL is expired at once), cut down to [`FOREVER_MS`] so absurd TTLs
/// never overflow.
fn expiry(now: Ms, ttl: Duration) -> Ms {
    let ms = ttl.as_nanos().div_ceil(1_000_000).min(FOREVER_MS as u128) as i64;
    now.saturating_add(ms)
}

/// Microseconds since 1970 (0 if the clock is before it).
fn wall_clock_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What an unrepresentably long TTL is cut down to (about 30 years), ms.
const FOREVER_MS: i64 = 30 * 365 * 86_400_000;

/// Embedded hot state.
pub struct MemoryHotState {
    reservations: DashMap<String, Held>,
    leases: DashMap<String, Lease>,
    snapshots: DashMap<String, Expiring<Vec<u8>>>,
    counters: DashMap<String, Expiring<i64>>,
    channels: Arc<Channels>,
    next_sweep: Mutex<Ms>,
    clock: Arc<dyn Clock>,
    /// The last lease epoch handed out (starts at the wall clock in µs, so a restarted
    /// process keeps handing out larger epochs than before).
    last_epoch: AtomicU64,
}

impl Default for MemoryHotState {
    fn default() -> Self {
        MemoryHotState::with_clock(Arc::new(SystemClock))
    }
}

impl MemoryHotState {
    /// Empty state on the wall clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// Empty state whose TTLs run on `clock` (tests advance a manual or offset clock).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemoryHotState {
            reservations: DashMap::new(),
            leases: DashMap::new(),
            snapshots: DashMap::new(),
            counters: DashMap::new(),
            channels: Arc::new(DashMap::new()),
            next_sweep: Mutex::new(
                clock
                    .now_ms()
                    .saturating_add(SWEEP_EVERY.as_millis() as i64),
            ),
            clock,
            last_epoch: AtomicU64::new(wall_clock_micros()),
        }
    }

    fn now(&self) -> Ms {
        self.clock.now_ms()
    }

    /// Runs a sweep when one is due. Must not be called while holding a map reference.
    fn maybe_sweep(&self, now: Ms) {
        {
            let Some(mut next) = self.next_sweep.try_lock() else {
                return; // someone else is sweeping
            };
            if *next > now {
                return;
            }
            *next = now.saturating_add(SWEEP_EVERY.as_millis() as i64);
        }
        self.reservations.retain(|_, r| {
            let live = r.expires > now;
            if !live {
                r.notify.notify_waiters();
            }
            live
        });
        self.leases.retain(|_, l| l.expires > now);
        self.snapshots.retain(|_, s| s.expires > now);
        self.counters.retain(|_, c| c.expires > now);
        self.channels.retain(|_, tx| tx.receiver_count() > 0);
    }
}

#[async_trait::async_trait]
impl HotState for MemoryHotState {
    async fn reserve(&self, scope: &str, ttl: Duration) -> Result<Option<Reservation>, StoreError> {
        let now = self.now();
        let token = rand::random::<u128>();
        let held = || Held {
            token,
            notify: Arc::new(Notify::new()),
            expires: expiry(now, ttl),
        };
        let got = match self.reservations.entry(scope.to_string()) {
            Entry::Vacant(v) => {
                v.insert(held());
                true
            }
            // A holder that never released (its task was cancelled) loses the reservation at
            // its TTL, so a key cannot be wedged forever.
            Entry::Occupied(mut o) if o.get().expires <= now => {
                o.get().notify.notify_waiters();
                o.insert(held());
                true
            }
            Entry::Occupied(_) => false,
        };
        self.maybe_sweep(now);
        Ok(got.then(|| Reservation::new(scope, token)))
    }

    async fn release(&self, reservation: Reservation) -> Result<bool, StoreError> {
        let now = self.now();
        let mut ours = false;
        // Removes our entry, or a lapsed one (which is no longer anyone's); never a live
        // reservation taken by someone else.
        let removed = self.reservations.remove_if(reservation.scope(), |_, r| {
            ours = r.token == reservation.token() && r.expires > now;
            ours || r.expires <= now
        });
        if let Some((_, r)) = removed {
            r.notify.notify_waiters();
        }
        Ok(ours)
    }

    async fn wait_released(&self, scope: &str, timeout: Duration) {
        let now = self.now();
        let Some((notify, expires)) = self
            .reservations
            .get(scope)
            .filter(|r| r.expires > now)
            .map(|r| (r.notify.clone(), r.expires))
        else {
            return;
        };
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Re-check after registering, so a release between the lookup and here is not missed.
        if !self
            .reservations
            .get(scope)
            .is_some_and(|r| Arc::ptr_eq(&r.notify, &notify))
        {
            return;
        }
        // An abandoned reservation is released by its TTL: stop waiting then, too.
        let until_lapse = Duration::from_millis(expires.saturating_sub(self.now()).max(0) as u64);
        let _ = tokio::time::timeout(timeout.min(until_lapse), notified).await;
    }

    async fn acquire_lease(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.acquire_lease_epoch(key, owner, ttl).await?.is_some())
    }

    async fn acquire_lease_epoch(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, StoreError> {
        let now = self.now();
        let lease = |epoch| Lease {
            owner: owner.to_string(),
            expires: expiry(now, ttl),
            epoch,
        };
        let got = match self.leases.entry(key.to_string()) {
            Entry::Occupied(mut o) if o.get().expires > now && o.get().owner == owner => {
                let epoch = o.get().epoch;
                o.insert(lease(epoch));
                Some(epoch)
            }
            Entry::Occupied(o) if o.get().expires > now => {
                drop(o);
                None
            }
            entry => {
                let epoch = self.last_epoch.fetch_add(1, Ordering::Relaxed) + 1;
                entry.insert_entry(lease(epoch));
                Some(epoch)
            }
        };
        self.maybe_sweep(now);
        Ok(got)
    }

    async fn renew_lease(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = self.now();
        Ok(match self.leases.get_mut(key) {
            Some(mut l) if l.owner == owner && l.expires > now => {
                l.expires = expiry(now, ttl);
                true
            }
            _ => false,
        })
    }

    async fn release_lease(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        let now = self.now();
        let mut ours = false;
        self.leases.remove_if(key, |_, l| {
            ours = l.owner == owner && l.expires > now;
            ours || l.expires <= now
        });
        Ok(ours)
    }

    async fn lease_owner(&self, key: &str) -> Result<Option<String>, StoreError> {
        let now = self.now();
        Ok(self
            .leases
            .get(key)
            .filter(|l| l.expires > now)
            .map(|l| l.owner.clone()))
    }

    async fn put_snapshot(&self, key: &str, bytes: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let now = self.now();
        self.snapshots.insert(
            key.to_string(),
            Expiring {
                value: bytes.to_vec(),
                expires: expiry(now, ttl),
            },
        );
        self.maybe_sweep(now);
        Ok(())
    }

    async fn get_snapshot(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now = self.now();
        Ok(self
            .snapshots
            .get(key)
            .filter(|s| s.expires > now)
            .map(|s| s.value.clone()))
    }

    async fn delete_snapshot(&self, key: &str) -> Result<(), StoreError> {
        self.snapshots.remove(key);
        Ok(())
    }

    async fn incr(&self, key: &str, ttl: Duration) -> Result<i64, StoreError> {
        let now = self.now();
        let n = match self.counters.entry(key.to_string()) {
            Entry::Occupied(mut o) if o.get().expires > now => {
                let c = o.get_mut();
                c.value = c
                    .value
                    .checked_add(1)
                    .ok_or_else(|| StoreError(format!("counter `{key}` would overflow an i64")))?;
                c.value
            }
            Entry::Occupied(mut o) => {
                o.insert(Expiring {
                    value: 1,
                    expires: expiry(now, ttl),
                });
                1
            }
            Entry::Vacant(v) => {
                v.insert(Expiring {
                    value: 1,
                    expires: expiry(now, ttl),
                });
                1
            }
        };
        self.maybe_sweep(now);
        Ok(n)
    }

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        self.counters.remove(key);
        Ok(())
    }

    async fn publish(&self, channel: &str, message: &[u8]) -> Result<(), StoreError> {
        if let Some(tx) = self.channels.get(channel) {
            // No receivers is not an error: nobody is listening right now.
            let _ = tx.send(Arc::from(message));
        }
        Ok(())
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription, StoreError> {
        let rx = self
            .channels
            .entry(channel.to_string())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe();
        let channels = Arc::downgrade(&self.channels);
        let name = channel.to_string();
        let on_drop = Box::new(move || {
            if let Some(channels) = channels.upgrade() {
                channels.remove_if(&name, |_, tx| tx.receiver_count() == 0);
            }
        });
        Ok(Subscription::new(rx, Some(on_drop)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_reservation_waits_for_release() {
        let h = Arc::new(MemoryHotState::new());
        let r = h
            .reserve("k", Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap();
        assert!(
            h.reserve("k", Duration::from_secs(10))
                .await
                .unwrap()
                .is_none()
        );
        let h2 = h.clone();
        let waiter =
            tokio::spawn(async move { h2.wait_released("k", Duration::from_secs(30)).await });
        tokio::task::yield_now().await;
        assert!(h.release(r).await.unwrap());
        waiter.await.unwrap();
        assert!(
            h.reserve("k", Duration::from_secs(10))
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn an_abandoned_reservation_lapses_at_its_ttl() {
        let h = MemoryHotState::new();
        let old = h
            .reserve("k", Duration::from_millis(0))
            .await
            .unwrap()
            .unwrap();
        let new = h
            .reserve("k", Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap();
        // The former holder cannot release the new holder's reservation.
        assert!(!h.release(old).await.unwrap());
        assert!(
            h.reserve("k", Duration::from_secs(10))
                .await
                .unwrap()
                .is_none()
        );
        assert!(h.release(new).await.unwrap());
    }

    #[tokio::test]
    async fn a_waiter_returns_when_the_reservation_lapses() {
        let h = MemoryHotState::new();
        let _r = h
            .reserve("k", Duration::from_millis(30))
            .await
            .unwrap()
            .unwrap();
        let t = std::time::Instant::now();
        h.wait_released("k", Duration::from_secs(30)).await;
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn ttls_run_on_the_injected_clock() {
        let clock = crate::clock::ManualClock::new(1_800_000_000_000);
        let h = MemoryHotState::with_clock(Arc::new(clock.clone()));
        let ttl = Duration::from_secs(3600);
        assert!(h.reserve("r", ttl).await.unwrap().is_some());
        assert!(h.acquire_lease("l", "a", ttl).await.unwrap());
        h.put_snapshot("s", b"x", ttl).await.unwrap();
        assert_eq!(h.incr("c", ttl).await.unwrap(), 1);
        clock.advance_ms(3_600_000 - 1);
        assert!(h.reserve("r", ttl).await.unwrap().is_none(), "1 ms early");
        assert_eq!(h.lease_owner("l").await.unwrap().as_deref(), Some("a"));
        assert!(h.get_snapshot("s").await.unwrap().is_some());
        assert_eq!(h.incr("c", ttl).await.unwrap(), 2);
        clock.advance_ms(1);
        assert!(h.reserve("r", ttl).await.unwrap().is_some(), "lapsed");
        assert_eq!(h.lease_owner("l").await.unwrap(), None);
        assert_eq!(h.get_snapshot("s").await.unwrap(), None);
        assert_eq!(h.incr("c", ttl).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn the_sweep_drops_expired_entries_and_idle_channels() {
        let h = MemoryHotState::new();
        h.reserve("r", Duration::ZERO).await.unwrap();
        h.acquire_lease("l", "a", Duration::ZERO).await.unwrap();
        h.put_snapshot("s", b"x", Duration::ZERO).await.unwrap();
        h.incr("c", Duration::ZERO).await.unwrap();
        drop(h.subscribe("ch").await.unwrap());
        assert!(
            h.channels.is_empty(),
            "dropping the last subscriber removes the channel"
        );
        *h.next_sweep.lock() = h.now();
        h.maybe_sweep(h.now());
        assert!(h.reservations.is_empty());
        assert!(h.leases.is_empty());
        assert!(h.snapshots.is_empty());
        assert!(h.counters.is_empty());
    }
}
