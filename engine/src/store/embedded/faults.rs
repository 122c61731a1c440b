//! A fault point in the embedded writer's durable commit, for tests and the deterministic
//! simulation: a [`SyncFaults`] plan given to [`super::EmbeddedLedger::open_with_faults`] is
//! asked before every group commit whether its journal sync fails, and how. The failure then
//! takes the writer's real error path (the group is failed, the ledger stops taking writes),
//! so what is tested is the production reaction to an `fdatasync` error, not a copy of it.
//!
//! Not here: deciding when faults happen (the plan's business) or any fault in production,
//! where no plan is given and the check is one `None` per group commit.

/// How a group commit's journal sync fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncFault {
    /// Nothing reached the journal; every submitter of the group hears the error.
    Before,
    /// The group was written and synced, but the sync reported an error: the submitters hear
    /// it, and the writes are durable (their fate is unknown to the caller, as after a real
    /// `fdatasync` error).
    After,
}

/// Decides the fate of each group commit's journal sync. Called on the writer thread.
pub trait SyncFaults: Send + Sync + 'static {
    /// `Some` to fail the group commit about to be made durable.
    fn next(&self) -> Option<SyncFault>;
}

/// The error a failed sync reports (what an I/O error from the journal looks like upstream).
pub(super) fn injected(fault: SyncFault) -> crate::error::StoreError {
    crate::error::StoreError(format!("journal fdatasync failed (injected, {fault:?})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{EngineError, ErrorKind};
    use crate::store::embedded::{EmbeddedLedger, EmbeddedOptions};
    use crate::store::{Ledger, WriteBatch, WriteOp};
    use parking_lot::Mutex;
    use std::collections::VecDeque;
    use std::sync::Arc;

    /// Fails the group commits in script order: `None` commits, `Some` fails.
    struct Script(Mutex<VecDeque<Option<SyncFault>>>);

    impl SyncFaults for Script {
        fn next(&self) -> Option<SyncFault> {
            self.0.lock().pop_front().flatten()
        }
    }

    fn record(key: &str) -> WriteBatch {
        let mut b = WriteBatch::new();
        b.ops.push(WriteOp::PutRecord {
            kind: "faults_test",
            key: key.to_string(),
            value: key.as_bytes().to_vec(),
        });
        b
    }

    /// One kind of fault: a write commits, the next one's sync fails, and every write after
    /// it is refused with the storage error (503 `store_unavailable` upstream) until the
    /// directory is opened again; then what was acknowledged is there, the write refused after
    /// the failure is not, and the failed write is there exactly when its bytes were synced.
    async fn fail_stop(fault: SyncFault) {
        let dir = tempfile::tempdir().unwrap();
        let plan = Arc::new(Script(Mutex::new(VecDeque::from([None, Some(fault)]))));
        let opts = EmbeddedOptions::default();
        let ledger = EmbeddedLedger::open_with_faults(dir.path(), opts, plan).unwrap();
        let mut closed = ledger.closed();
        ledger.submit(record("acked")).await.unwrap();
        let err = ledger
            .submit(record("failed"))
            .await
            .expect_err("a commit whose sync failed was acknowledged");
        let err = EngineError::from(err);
        assert_eq!(err.code(), "store_unavailable", "{err}");
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(!ledger.writable(), "the ledger still says it takes writes");
        let after = ledger.submit(record("after")).await;
        assert!(after.is_err(), "a write after a failed sync was taken");
        drop(ledger);
        closed.wait_for(|c| *c).await.unwrap();
        let reopened = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
        assert!(reopened.writable(), "a restart does not recover");
        let has = |k: &'static str| {
            let l = reopened.clone();
            async move { l.get_record("faults_test", k).await.unwrap().is_some() }
        };
        assert!(has("acked").await, "an acknowledged write was lost");
        assert_eq!(has("failed").await, fault == SyncFault::After);
        assert!(!has("after").await, "a refused write was stored");
        reopened.submit(record("again")).await.unwrap();
    }

    #[tokio::test]
    async fn a_sync_failing_before_the_journal_stops_the_writer_and_loses_nothing_acked() {
        fail_stop(SyncFault::Before).await;
    }

    #[tokio::test]
    async fn a_sync_failing_after_the_journal_stops_the_writer_and_keeps_the_bytes() {
        fail_stop(SyncFault::After).await;
    }
}
