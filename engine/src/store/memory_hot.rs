//! In-process [`HotState`] for embedded mode: reservations in a concurrent map, waiters woken
//! by a [`Notify`] when the holder releases.

use super::HotState;
use crate::error::StoreError;
use dashmap::DashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

struct Reservation {
    notify: Arc<Notify>,
    expires: Instant,
}

/// Embedded hot state.
#[derive(Default)]
pub struct MemoryHotState {
    reservations: DashMap<String, Reservation>,
}

impl MemoryHotState {
    /// Empty state.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait::async_trait]
impl HotState for MemoryHotState {
    async fn reserve(&self, scope: &str, ttl: Duration) -> Result<bool, StoreError> {
        use dashmap::mapref::entry::Entry;
        let now = Instant::now();
        match self.reservations.entry(scope.to_string()) {
            Entry::Vacant(v) => {
                v.insert(Reservation {
                    notify: Arc::new(Notify::new()),
                    expires: now + ttl,
                });
                Ok(true)
            }
            // A holder that never released (its task was cancelled) loses the reservation at
            // its TTL, so a key cannot be wedged forever.
            Entry::Occupied(mut o) if o.get().expires <= now => {
                o.get().notify.notify_waiters();
                o.insert(Reservation {
                    notify: Arc::new(Notify::new()),
                    expires: now + ttl,
                });
                Ok(true)
            }
            Entry::Occupied(_) => Ok(false),
        }
    }

    async fn release(&self, scope: &str) -> Result<(), StoreError> {
        if let Some((_, r)) = self.reservations.remove(scope) {
            r.notify.notify_waiters();
        }
        Ok(())
    }

    async fn wait_released(&self, scope: &str, timeout: Duration) {
        let Some(notify) = self.reservations.get(scope).map(|r| r.notify.clone()) else {
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
        let _ = tokio::time::timeout(timeout, notified).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_reservation_waits_for_release() {
        let h = Arc::new(MemoryHotState::new());
        assert!(h.reserve("k", Duration::from_secs(10)).await.unwrap());
        assert!(!h.reserve("k", Duration::from_secs(10)).await.unwrap());
        let h2 = h.clone();
        let waiter =
            tokio::spawn(async move { h2.wait_released("k", Duration::from_secs(30)).await });
        tokio::task::yield_now().await;
        h.release("k").await.unwrap();
        waiter.await.unwrap();
        assert!(h.reserve("k", Duration::from_secs(10)).await.unwrap());
    }

    #[tokio::test]
    async fn an_abandoned_reservation_lapses_at_its_ttl() {
        let h = MemoryHotState::new();
        assert!(h.reserve("k", Duration::from_millis(0)).await.unwrap());
        assert!(h.reserve("k", Duration::from_secs(10)).await.unwrap());
    }
}
