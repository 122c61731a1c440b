//! Commit hooks: a feature that must write something in the same durable step as certain ops
//! (the webhook outbox writes a fan-out marker with every event; last-mile writes a
//! "session to settle" marker with every final event of a last-mile payment) registers a
//! [`CommitHook`] on the ledger, at most one per hook type and [`MAX_HOOKS`] in all. The backend runs it on each batch just before queuing it, so every writer
//! gets it without knowing about it, and without a wrapper re-implementing the [`Ledger`] port.
//!
//! This module owns only the slot and the calling convention; what a hook adds is the hook's
//! business. A backend supports hooks by holding a [`CommitHooks`], returning it from
//! [`Ledger::commit_hooks`] and passing each batch through [`CommitHooks::prepare`].
//!
//! [`Ledger`]: super::Ledger
//! [`Ledger::commit_hooks`]: super::Ledger::commit_hooks

use super::{Done, WriteBatch};
use crate::error::StoreError;
use parking_lot::RwLock;
use std::any::Any;
use std::sync::Arc;

/// Most hooks one ledger carries (each runs on every batch, so they must stay few).
pub const MAX_HOOKS: usize = 4;

/// Run once a hooked batch's outcome is known (on the ledger's own thread: quick, never
/// blocking).
pub type AfterCommit = Box<dyn FnOnce(&Result<(), StoreError>) + Send + 'static>;

/// Adds ops to batches before they are queued.
pub trait CommitHook: Send + Sync + 'static {
    /// Adds this hook's ops to `batch` (same batch, so same atomic, durable step). Returns what
    /// to run once the batch committed or failed, if anything. Called on the submitter's thread
    /// for every batch: it must be cheap when it has nothing to add, and must not block.
    fn prepare(&self, batch: &mut WriteBatch) -> Option<AfterCommit>;
}

struct Installed {
    hook: Arc<dyn CommitHook>,
    /// The same hook, for handing it back typed to whoever installs it again.
    any: Arc<dyn Any + Send + Sync>,
}

/// A backend's hook slots: the hooks installed for the life of the ledger, one per type, run
/// in installation order.
#[derive(Default)]
pub struct CommitHooks {
    slots: RwLock<Vec<Installed>>,
}

impl CommitHooks {
    /// The installed hook of type `H`, installing `make()` first if there is none. Fails when
    /// [`MAX_HOOKS`] hooks of other types are installed.
    pub fn get_or_install<H: CommitHook>(
        &self,
        make: impl FnOnce() -> H,
    ) -> Result<Arc<H>, StoreError> {
        let find = |slots: &[Installed]| {
            slots
                .iter()
                .find_map(|i| i.any.clone().downcast::<H>().ok())
        };
        if let Some(h) = find(&self.slots.read()) {
            return Ok(h);
        }
        let mut slots = self.slots.write();
        // Another installer may have won the race between the two locks.
        if let Some(h) = find(&slots) {
            return Ok(h);
        }
        if slots.len() >= MAX_HOOKS {
            return Err(StoreError(format!(
                "this ledger already carries {MAX_HOOKS} commit hooks"
            )));
        }
        let h = Arc::new(make());
        slots.push(Installed {
            hook: h.clone(),
            any: h.clone(),
        });
        Ok(h)
    }

    /// Lets every installed hook add to `batch`; returns the completion the backend must use
    /// (`done` itself when there is nothing to run after the commit).
    pub(crate) fn prepare(&self, batch: &mut WriteBatch, done: Done) -> Done {
        let slots = self.slots.read();
        let mut after: Vec<AfterCommit> = Vec::new();
        for installed in slots.iter() {
            after.extend(installed.hook.prepare(batch));
        }
        if after.is_empty() {
            return done;
        }
        Done::Callback(Box::new(move |r| {
            for a in after {
                a(&r);
            }
            done.finish(r);
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::WriteOp;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Tag(AtomicUsize);

    impl CommitHook for Tag {
        fn prepare(&self, batch: &mut WriteBatch) -> Option<AfterCommit> {
            batch.push(WriteOp::DeleteRecord {
                kind: "tag",
                key: "k".into(),
            });
            self.0.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    struct Other;

    impl CommitHook for Other {
        fn prepare(&self, _: &mut WriteBatch) -> Option<AfterCommit> {
            None
        }
    }

    #[test]
    fn one_hook_per_type_handed_back_to_every_installer() {
        let hooks = CommitHooks::default();
        let a = hooks.get_or_install(|| Tag(AtomicUsize::new(0))).unwrap();
        let b = hooks.get_or_install(|| Tag(AtomicUsize::new(7))).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let o = hooks.get_or_install(|| Other).unwrap();
        assert!(Arc::ptr_eq(&o, &hooks.get_or_install(|| Other).unwrap()));
        let mut batch = WriteBatch::new();
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let _ = hooks.prepare(&mut batch, Done::Ticket(tx));
        assert_eq!(batch.ops.len(), 1);
        assert_eq!(a.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn every_hook_runs_after_the_commit_in_installation_order() {
        struct After(Arc<parking_lot::Mutex<Vec<u8>>>, u8);
        impl CommitHook for After {
            fn prepare(&self, _: &mut WriteBatch) -> Option<AfterCommit> {
                let (log, n) = (self.0.clone(), self.1);
                Some(Box::new(move |r| {
                    assert!(r.is_ok());
                    log.lock().push(n);
                }))
            }
        }
        let log = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let hooks = CommitHooks::default();
        hooks.get_or_install(|| After(log.clone(), 1)).unwrap();
        hooks.get_or_install(|| Tag(AtomicUsize::new(0))).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done = hooks.prepare(&mut WriteBatch::new(), Done::Ticket(tx));
        done.finish(Ok(()));
        assert_eq!(*log.lock(), vec![1]);
        assert!(rx.blocking_recv().is_ok_and(|r| r.is_ok()));
    }
}
