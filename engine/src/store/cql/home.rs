//! Home partitions: single-partition durable writes for the CQL ledger.
//!
//! A batch has a home when it is fenced (home = its fence key) or writes exactly one payment
//! intent (home = [`intent_home`] of that intent, which is also the key its session fences
//! its decisions on). Such a batch is committed in [`Steps`]:
//! 0. **claim** (only a batch that stores an idempotency record): the record's row is written
//!    as a pending claim naming the home, so that whoever looks the key up later finds the
//!    batch even if its writer dies before step 2 ([`Inner::read_idempotency`]).
//! 1. **durable**: ONE write to the home's partition of `homes`: the intent's JSON (static
//!    `record`) and a journal row holding every other statement of the batch with its write
//!    timestamp. Unfenced, an UNLOGGED single-partition batch (atomic and isolated); fenced,
//!    one conditional batch `IF fence_epoch <= ?` (`IF fence_epoch = null` for a key never
//!    fenced), so the check and the whole write are one Paxos round: a stale writer is refused
//!    however long it stalls between any two of its steps.
//! 2. **follow**: the journalled statements (listing and index rows, events, idempotency
//!    record, outbox markers) as one UNLOGGED batch. The batch is acknowledged after this step,
//!    so listings read the writer's own writes as before.
//! 3. **finish**: the journal row is deleted.
//!
//! A claim read back is resolved through its home: the home's journal rows are applied (which
//! writes the real record over the claim), and a claim still pending after that belongs to a
//! batch that never became durable, so it counts as no record.
//!
//! A journal row left behind (the writer crashed, or step 2 kept failing) is applied again,
//! which is idempotent because every statement carries its original timestamp: by the next
//! read of the intent ([`Inner::read_intent`]) and by every ledger start
//! ([`Inner::repair_all_homes`]). This module does not own the statements themselves (see the
//! parent module) nor what the engine puts in a batch.

use super::*;

/// The home partition key of a payment intent: its session fence key, so an owner's fenced
/// decision checks its epoch in the partition that holds the intent's state.
pub fn intent_home(id: PaymentIntentId) -> String {
    format!("session:{id}")
}

/// The home of a batch: its fence key, or the home of the one intent it writes; `None` when it
/// has neither (a LOGGED batch then) or writes several intents without a fence.
pub(super) fn home_of(batch: &WriteBatch) -> Result<Option<String>, StoreError> {
    if let Some((key, _)) = batch.fence()? {
        return Ok(Some(key.to_string()));
    }
    let mut intents = batch.ops.iter().filter_map(|op| match op {
        WriteOp::PutIntent(pi) => Some(pi.id),
        _ => None,
    });
    let Some(first) = intents.next() else {
        return Ok(None);
    };
    Ok(intents.all(|id| id == first).then(|| intent_home(first)))
}

/// The encoded steps of one batch with a home.
pub(super) struct HomeWrite {
    key: String,
    /// The intent's JSON and its write timestamp, when the batch writes the home's intent.
    record: Option<(String, i64)>,
    fence: Option<u64>,
    /// Journal row key and write timestamp.
    seq: String,
    journal_ts: i64,
    /// Pending idempotency claims, written before the durable step.
    claims: Vec<Stmt>,
    /// Everything else, applied in step 2.
    follow: Vec<Stmt>,
}

impl HomeWrite {
    pub(super) fn new(
        key: String,
        record: Option<(String, i64)>,
        fence: Option<u64>,
        journal_ts: i64,
        claims: Vec<Stmt>,
        parts: Vec<Part>,
    ) -> Result<Self, StoreError> {
        let follow = parts
            .into_iter()
            .map(|p| match p {
                Part::Stmt(s) => Ok(s),
                Part::Service { .. } => Err(StoreError(
                    "a manifest cannot be written in a fenced or intent batch".into(),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Unique per batch even across nodes writing the same home in the same microsecond.
        let seq = format!("{journal_ts:020}-{:016x}", rand::random::<u64>());
        Ok(HomeWrite {
            key,
            record,
            fence,
            seq,
            journal_ts,
            claims,
            follow,
        })
    }
}

/// What the `idempotency` table holds for a scope: a pending claim or the final record.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredIdempotency {
    /// Written before the durable step of the batch that stores the record; names its home.
    Pending {
        pending_home: String,
    },
    Final(IdempotencyRecord),
}

/// The claim row for `scope`: a pending pointer to `home`, with the record's TTL and a write
/// timestamp older than the record's.
pub(super) fn claim_statement(
    scope: &str,
    home: &str,
    ts: CqlValue,
    ttl: CqlValue,
) -> Result<Stmt, StoreError> {
    let claim = serde_json::json!({ "pending_home": home });
    Ok(Stmt {
        s: S::PutIdempotency,
        values: vec![text(scope), text(json(&claim)?), ts, ttl],
    })
}

/// The steps of one batch with a home partition, run in order by the ledger; public so tests
/// can stop a writer between any two of them ([`CqlLedger::steps`]).
pub struct Steps {
    inner: Arc<Inner>,
    w: HomeWrite,
}

impl Steps {
    pub(super) fn new(inner: Arc<Inner>, w: HomeWrite) -> Self {
        Steps { inner, w }
    }

    /// The home partition this batch commits to.
    pub fn home(&self) -> &str {
        &self.w.key
    }

    /// Runs all steps. Once the durable step committed the batch is committed: a follow step
    /// that keeps failing leaves the journal row for repair and still succeeds.
    pub(super) async fn run(self) -> Result<(), StoreError> {
        self.claim().await?;
        self.durable().await?;
        let mut left = 3;
        loop {
            match self.follow().await {
                Ok(()) => break,
                Err(e) if left > 1 => {
                    left -= 1;
                    tracing::debug!(error = %e, "CQL ledger: follow-up writes failed; retrying");
                }
                Err(e) => {
                    metrics::counter!("ipay_ledger_follow_failures_total").increment(1);
                    tracing::warn!(error = %e, home = %self.w.key, "CQL ledger: follow-up \
                        writes failed after the durable step; left for repair");
                    return Ok(());
                }
            }
        }
        if let Err(e) = self.finish().await {
            tracing::debug!(error = %e, "CQL ledger: journal row not deleted; repair will");
        }
        Ok(())
    }

    /// Step 0: the pending idempotency claims (nothing to do for a batch without a record).
    /// A claim whose batch never becomes durable reads as no record, so a failure after it is
    /// harmless.
    pub async fn claim(&self) -> Result<(), StoreError> {
        self.inner.apply(&self.w.claims).await
    }

    /// Step 1: the single-partition write that commits the batch (conditional when fenced).
    pub async fn durable(&self) -> Result<(), StoreError> {
        let ops = (!self.w.follow.is_empty()).then(|| encode_ops(&self.w.follow));
        match self.w.fence {
            None => self.plain_durable(ops).await,
            Some(epoch) => self.fenced_durable(epoch, ops).await,
        }
    }

    async fn plain_durable(&self, ops: Option<Vec<u8>>) -> Result<(), StoreError> {
        let inner = &self.inner;
        let key = &self.w.key;
        let mut batch = Batch::new(BatchType::Unlogged);
        let mut values: Vec<Vec<CqlValue>> = Vec::with_capacity(2);
        if let Some((json, ts)) = &self.w.record {
            batch.append_statement(inner.st(S::HomePutRecord).clone());
            values.push(vec![
                CqlValue::BigInt(*ts),
                text(json.clone()),
                text(key.clone()),
            ]);
        }
        if let Some(ops) = ops {
            batch.append_statement(inner.st(S::HomePutJournal).clone());
            values.push(vec![
                text(key.clone()),
                text(self.w.seq.clone()),
                CqlValue::Blob(ops),
                CqlValue::BigInt(self.w.journal_ts),
            ]);
        }
        if values.is_empty() {
            return Ok(());
        }
        batch.set_is_idempotent(true);
        inner
            .session
            .batch(&batch, values)
            .await
            .map_err(|e| batch_err(&e))?;
        Ok(())
    }

    /// Checks and raises the fence and writes the batch in one conditional batch on the home
    /// partition. `fence_epoch <= ?` is false for a missing epoch, so a key's first fenced
    /// batch is retried with `= null` (and back, should another writer get in between).
    async fn fenced_durable(&self, epoch: u64, ops: Option<Vec<u8>>) -> Result<(), StoreError> {
        let e = i64::try_from(epoch)
            .map_err(|_| StoreError(format!("fence epoch {epoch} is out of range")))?;
        let mut when_null = false;
        for _ in 0..4 {
            match self.cas(e, when_null, ops.as_deref()).await? {
                (true, _) => return Ok(()),
                (false, Some(current)) if current > epoch => {
                    return Err(fenced_error(&self.w.key, epoch, current));
                }
                // Present (not newer): the `<=` form applies; missing: the `= null` form.
                (false, current) => when_null = current.is_none(),
            }
        }
        Err(StoreError(format!(
            "CQL ledger: fence {} stayed contended; retry",
            self.w.key
        )))
    }

    /// One conditional batch: whether it applied and, when not, the partition's fence epoch.
    async fn cas(
        &self,
        e: i64,
        when_null: bool,
        ops: Option<&[u8]>,
    ) -> Result<(bool, Option<u64>), StoreError> {
        let inner = &self.inner;
        let key = &self.w.key;
        // Single-partition: Cassandra writes no batch log for it, whatever the type.
        let mut batch = Batch::new(BatchType::Logged);
        let mut values: Vec<Vec<CqlValue>> = Vec::with_capacity(3);
        if when_null {
            batch.append_statement(inner.st(S::HomeFenceNull).clone());
            values.push(vec![CqlValue::BigInt(e), text(key.clone())]);
        } else {
            batch.append_statement(inner.st(S::HomeFenceLe).clone());
            values.push(vec![
                CqlValue::BigInt(e),
                text(key.clone()),
                CqlValue::BigInt(e),
            ]);
        }
        if let Some((json, _)) = &self.w.record {
            batch.append_statement(inner.st(S::HomeRecordCas).clone());
            values.push(vec![text(json.clone()), text(key.clone())]);
        }
        if let Some(ops) = ops {
            batch.append_statement(inner.st(S::HomeJournalCas).clone());
            values.push(vec![
                text(key.clone()),
                text(self.w.seq.clone()),
                CqlValue::Blob(ops.to_vec()),
            ]);
        }
        let res = inner
            .session
            .batch(&batch, values)
            .await
            .map_err(|e| batch_err(&e))?;
        lwt_outcome(res)
    }

    /// Step 2: the batch's other statements, as one UNLOGGED batch (each carries the
    /// timestamp reserved when the batch was submitted, so repeating it is harmless).
    pub async fn follow(&self) -> Result<(), StoreError> {
        self.inner.apply(&self.w.follow).await
    }

    /// Step 3: deletes the journal row (nothing to do for a batch without one).
    pub async fn finish(&self) -> Result<(), StoreError> {
        if self.w.follow.is_empty() {
            return Ok(());
        }
        self.inner.delete_journal(&self.w.key, &self.w.seq).await
    }
}

impl CqlLedger {
    /// Encodes `batch` into its [`Steps`] without running them (for tests that stop a writer
    /// between steps). Fails for a batch without a home partition (see [`home_of`]). Commit
    /// hooks are not run.
    pub fn steps(&self, batch: WriteBatch) -> Result<Steps, StoreError> {
        // No `list_days` row is skipped: these steps may never complete.
        let job = encode(
            batch,
            self.idempotency_ttl,
            &self.inner.stamps,
            &KnownDays::default(),
        )?;
        let w = job
            .home
            .ok_or_else(|| StoreError("this batch has no home partition".into()))?;
        Ok(Steps::new(self.inner.clone(), w))
    }
}

fn batch_err(e: &dyn std::fmt::Display) -> StoreError {
    let msg = e.to_string();
    if msg.contains("Batch too large") {
        StoreError(format!(
            "CQL ledger: write batch refused as too large ({msg}); raise the cluster's \
             batch_size_fail_threshold (Cassandra's default is 50 KiB)"
        ))
    } else {
        cql_err("write batch")(&e)
    }
}

/// Reads a conditional batch's result: `[applied]` and the `fence_epoch` column.
fn lwt_outcome(
    res: scylla::response::query_result::QueryResult,
) -> Result<(bool, Option<u64>), StoreError> {
    let rows = res.into_rows_result().map_err(|e| cql_err("fence")(&e))?;
    let epoch_col = rows
        .column_specs()
        .get_by_name("fence_epoch")
        .map(|(i, _)| i);
    let mut applied = false;
    let mut current = None;
    for row in rows
        .rows::<scylla::value::Row>()
        .map_err(|e| cql_err("fence")(&e))?
    {
        let row = row.map_err(|e| cql_err("fence")(&e))?;
        if let Some(Some(CqlValue::Boolean(a))) = row.columns.first() {
            applied |= *a;
        }
        if let Some(Some(CqlValue::BigInt(v))) = epoch_col.and_then(|i| row.columns.get(i)) {
            current = current.or(u64::try_from(*v).ok());
        }
    }
    Ok((applied, current))
}

impl Inner {
    /// Applies statements as one UNLOGGED batch.
    async fn apply(&self, stmts: &[Stmt]) -> Result<(), StoreError> {
        if stmts.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::new(BatchType::Unlogged);
        let mut values = Vec::with_capacity(stmts.len());
        for Stmt { s, values: v } in stmts {
            batch.append_statement(self.st(*s).clone());
            values.push(v.clone());
        }
        batch.set_is_idempotent(true);
        self.session
            .batch(&batch, values)
            .await
            .map_err(|e| batch_err(&e))?;
        Ok(())
    }

    async fn delete_journal(&self, key: &str, seq: &str) -> Result<(), StoreError> {
        // Newer than the row's own timestamp (client-reserved, or the Paxos ballot of a
        // conditional batch, both taken before now).
        let ts = self.stamps.reserve(1);
        self.session
            .execute_unpaged(self.st(S::HomeDelJournal), (ts, key, seq))
            .await
            .map_err(|e| cql_err("journal delete")(&e))?;
        Ok(())
    }

    /// Applies a journal row left behind and deletes it.
    async fn repair(&self, key: &str, seq: &str, ops: &[u8]) -> Result<(), StoreError> {
        self.apply(&decode_ops(ops)?).await?;
        metrics::counter!("ipay_ledger_repaired_batches_total").increment(1);
        self.delete_journal(key, seq).await
    }

    /// The intent from its home partition (completing any batch its writer left half done),
    /// or from the `intents` table for intents written before home partitions existed.
    pub(super) async fn read_intent(
        &self,
        id: PaymentIntentId,
    ) -> Result<Option<PaymentIntent>, StoreError> {
        match self.read_home(&intent_home(id)).await? {
            Some(json) => Ok(Some(from_json(&json)?)),
            None => self.get_record(S::GetIntent, (id.to_string(),)).await,
        }
    }

    /// The idempotency record of `scope`. A pending claim is resolved through its home: the
    /// home's unfinished batches are completed (which writes the record over the claim) and
    /// the row is read again; a claim still pending then belongs to a batch that never became
    /// durable, which was never acknowledged either, so there is no record.
    pub(super) async fn read_idempotency(
        &self,
        scope: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let home = match self.get_record(S::GetIdempotency, (scope,)).await? {
            None => return Ok(None),
            Some(StoredIdempotency::Final(r)) => return Ok(Some(r)),
            Some(StoredIdempotency::Pending { pending_home }) => pending_home,
        };
        self.read_home(&home).await?;
        match self.get_record(S::GetIdempotency, (scope,)).await? {
            Some(StoredIdempotency::Final(r)) => Ok(Some(r)),
            _ => Ok(None),
        }
    }

    /// The JSON record of a home partition, after completing every batch left half done in
    /// it.
    async fn read_home(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut record = None;
        let mut journal = Vec::new();
        self.scan::<(Option<String>, Option<String>, Option<Vec<u8>>)>(
            S::HomeGet,
            (key,),
            |(r, seq, ops)| {
                record = record.take().or(r);
                if let (Some(seq), Some(ops)) = (seq, ops) {
                    journal.push((seq, ops));
                }
                Ok(())
            },
        )
        .await?;
        for (seq, ops) in journal {
            self.repair(key, &seq, &ops).await?;
        }
        Ok(record)
    }

    /// Loads intents by id, concurrently, keeping their order; ids without a record are
    /// skipped.
    pub(super) async fn load_intents(
        &self,
        ids: Vec<String>,
    ) -> Result<Vec<PaymentIntent>, StoreError> {
        let loads = ids.into_iter().map(|id| async move {
            let id = PaymentIntentId::parse(&id)
                .map_err(|e| StoreError(format!("corrupt intent index row: {e}")))?;
            self.read_intent(id).await
        });
        Ok(futures::future::try_join_all(loads)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Scans every home partition and completes every batch left half done. Returns how many
    /// it completed. Runs when the ledger connects; O(homes), like the other start-up scans.
    pub(super) async fn repair_all_homes(&self) -> Result<usize, StoreError> {
        let mut journal = Vec::new();
        self.scan::<(String, Option<String>, Option<Vec<u8>>)>(
            S::HomeScan,
            (),
            |(key, seq, ops)| {
                if let (Some(seq), Some(ops)) = (seq, ops) {
                    journal.push((key, seq, ops));
                }
                Ok(())
            },
        )
        .await?;
        let n = journal.len();
        for (key, seq, ops) in journal {
            self.repair(&key, &seq, &ops).await?;
        }
        Ok(n)
    }
}

// Journal encoding: u32 count, then per statement its `S` position (u16), the number of values
// (u16) and each value as a tag byte and its bytes (big-endian; text and blobs length-prefixed).
const T_TEXT: u8 = 0;
const T_BIGINT: u8 = 1;
const T_INT: u8 = 2;
const T_TINYINT: u8 = 3;
const T_BOOL: u8 = 4;
const T_BLOB: u8 = 5;

fn encode_ops(stmts: &[Stmt]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 * stmts.len());
    out.extend_from_slice(&(stmts.len() as u32).to_be_bytes());
    for Stmt { s, values } in stmts {
        out.extend_from_slice(&(*s as u16).to_be_bytes());
        out.extend_from_slice(&(values.len() as u16).to_be_bytes());
        for v in values {
            encode_value(&mut out, v);
        }
    }
    out
}

fn encode_value(out: &mut Vec<u8>, v: &CqlValue) {
    let bytes = |out: &mut Vec<u8>, tag: u8, b: &[u8]| {
        out.push(tag);
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
    };
    match v {
        CqlValue::Text(t) => bytes(out, T_TEXT, t.as_bytes()),
        CqlValue::Blob(b) => bytes(out, T_BLOB, b),
        CqlValue::BigInt(i) => {
            out.push(T_BIGINT);
            out.extend_from_slice(&i.to_be_bytes());
        }
        CqlValue::Int(i) => {
            out.push(T_INT);
            out.extend_from_slice(&i.to_be_bytes());
        }
        CqlValue::TinyInt(i) => {
            out.push(T_TINYINT);
            out.extend_from_slice(&i.to_be_bytes());
        }
        CqlValue::Boolean(b) => {
            out.push(T_BOOL);
            out.push(*b as u8);
        }
        // The encoder above only produces the kinds listed; anything else is a bug there.
        other => {
            debug_assert!(false, "unexpected CQL value in a journal: {other:?}");
            out.push(u8::MAX);
        }
    }
}

/// A cursor over a journal row.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(StoreError("corrupt journal row in CQL ledger".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn value(&mut self) -> Result<CqlValue, StoreError> {
        let [tag] = self.array::<1>()?;
        Ok(match tag {
            T_TEXT | T_BLOB => {
                let n = u32::from_be_bytes(self.array()?) as usize;
                let b = self.take(n)?.to_vec();
                if tag == T_BLOB {
                    CqlValue::Blob(b)
                } else {
                    CqlValue::Text(String::from_utf8(b).map_err(|_| {
                        StoreError("corrupt journal row in CQL ledger (text)".into())
                    })?)
                }
            }
            T_BIGINT => CqlValue::BigInt(i64::from_be_bytes(self.array()?)),
            T_INT => CqlValue::Int(i32::from_be_bytes(self.array()?)),
            T_TINYINT => CqlValue::TinyInt(i8::from_be_bytes(self.array()?)),
            T_BOOL => CqlValue::Boolean(self.array::<1>()?[0] != 0),
            t => return Err(StoreError(format!("corrupt journal row: value tag {t}"))),
        })
    }
}

/// Whether a journal may name statement `s`: plain writes only, never a read or a fence.
fn replayable(s: S) -> bool {
    !matches!(
        s,
        S::HomeFenceLe | S::HomeFenceNull | S::HomeRecordCas | S::HomeJournalCas
    ) && STATEMENTS[s as usize]
        .1
        .trim_start()
        .starts_with(['I', 'D', 'U'])
}

fn decode_ops(bytes: &[u8]) -> Result<Vec<Stmt>, StoreError> {
    let mut r = Reader(bytes);
    let n = u32::from_be_bytes(r.array()?) as usize;
    let mut out = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let i = u16::from_be_bytes(r.array()?) as usize;
        let s = STATEMENTS
            .get(i)
            .map(|(s, _)| *s)
            .filter(|s| replayable(*s))
            .ok_or_else(|| StoreError(format!("corrupt journal row: statement {i}")))?;
        let k = u16::from_be_bytes(r.array()?) as usize;
        let values = (0..k).map(|_| r.value()).collect::<Result<Vec<_>, _>>()?;
        out.push(Stmt { s, values });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_rows_round_trip_and_refuse_garbage() {
        let stmts = vec![
            Stmt {
                s: S::PutEventByObject,
                values: vec![
                    text("pi_1"),
                    text("evt_ü"),
                    CqlValue::Boolean(true),
                    CqlValue::BigInt(-5),
                ],
            },
            Stmt {
                s: S::PutPending,
                values: vec![
                    CqlValue::Int(7),
                    CqlValue::TinyInt(-1),
                    CqlValue::Blob(vec![0, 1, 2]),
                ],
            },
        ];
        let bytes = encode_ops(&stmts);
        let back = decode_ops(&bytes).unwrap();
        assert_eq!(back.len(), 2);
        for (a, b) in stmts.iter().zip(&back) {
            assert_eq!(a.s, b.s);
            assert_eq!(a.values, b.values);
        }
        assert!(decode_ops(&bytes[..bytes.len() - 1]).is_err());
        // A read or a fence is never replayed from a journal.
        let bad = encode_ops(&[Stmt {
            s: S::HomeFenceLe,
            values: vec![],
        }]);
        assert!(decode_ops(&bad).is_err());
        let read = encode_ops(&[Stmt {
            s: S::GetIntent,
            values: vec![],
        }]);
        assert!(decode_ops(&read).is_err());
    }

    #[test]
    fn claims_and_records_are_told_apart() {
        let claim =
            claim_statement("m|test|k", "session:pi_1", CqlValue::BigInt(1), text("x")).unwrap();
        let Some(CqlValue::Text(json)) = claim.values.get(1) else {
            panic!("claim without its JSON: {:?}", claim.values);
        };
        match serde_json::from_str::<StoredIdempotency>(json).unwrap() {
            StoredIdempotency::Pending { pending_home } => assert_eq!(pending_home, "session:pi_1"),
            StoredIdempotency::Final(r) => panic!("a claim read as a record: {r:?}"),
        }
        let rec = IdempotencyRecord {
            request_hash: "ab".repeat(32),
            status: 201,
            body: "{\"pending_home\":\"not a claim\"}".into(),
            created: crate::clock::Timestamp(1),
        };
        let stored = serde_json::from_str::<StoredIdempotency>(&json_str(&rec)).unwrap();
        assert!(matches!(stored, StoredIdempotency::Final(r) if r == rec));
    }

    fn json_str(r: &IdempotencyRecord) -> String {
        serde_json::to_string(r).unwrap()
    }

    #[test]
    fn intent_home_is_the_session_fence_key() {
        let id = PaymentIntentId::new_at(1_700_000_000_000);
        assert_eq!(intent_home(id), crate::session::ownership::fence_key(id));
    }
}
