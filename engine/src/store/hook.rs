//! Commit hooks: a feature that must write something in the same durable step as certain ops
//! (the webhook outbox writes a fan-out marker with every event) registers one [`CommitHook`]
//! on the ledger. The backend runs it on each batch just before queuing it, so every writer
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
use std::any::Any;
use std::sync::{Arc, OnceLock};

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

/// A backend's hook slot: empty, or one hook for the life of the ledger.
#[derive(Default)]
pub struct CommitHooks {
    slot: OnceLock<Installed>,
}

impl CommitHooks {
    /// The installed hook of type `H`, installing `make()` first if the slot is empty. Fails when
    /// a hook of another type holds the slot.
    pub fn get_or_install<H: CommitHook>(
        &self,
        make: impl FnOnce() -> H,
    ) -> Result<Arc<H>, StoreError> {
        let installed = self.slot.get_or_init(|| {
            let h = Arc::new(make());
            Installed {
                hook: h.clone(),
                any: h,
            }
        });
        installed
            .any
            .clone()
            .downcast::<H>()
            .map_err(|_| StoreError("this ledger already carries another commit hook".into()))
    }

    /// Lets the installed hook add to `batch`; returns the completion the backend must use
    /// (`done` itself when there is nothing to run after the commit).
    pub(crate) fn prepare(&self, batch: &mut WriteBatch, done: Done) -> Done {
        let Some(installed) = self.slot.get() else {
            return done;
        };
        match installed.hook.prepare(batch) {
            None => done,
            Some(after) => Done::Callback(Box::new(move |r| {
                after(&r);
                done.finish(r);
            })),
        }
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
    fn one_hook_per_ledger_handed_back_to_every_installer() {
        let hooks = CommitHooks::default();
        let a = hooks.get_or_install(|| Tag(AtomicUsize::new(0))).unwrap();
        let b = hooks.get_or_install(|| Tag(AtomicUsize::new(7))).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(hooks.get_or_install(|| Other).is_err());
        let mut batch = WriteBatch::new();
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let _ = hooks.prepare(&mut batch, Done::Ticket(tx));
        assert_eq!(batch.ops.len(), 1);
        assert_eq!(a.0.load(Ordering::Relaxed), 1);
    }
}
