//! Newest-first listings over day-partitioned indexes, shared by orders and payment sessions.
//!
//! Both keep one index partition per merchant and UTC day (`{merchant}:{YYYYMMDD}`, entries
//! sorted by id, so by time) and a per-merchant index of the days that have entries. A listing
//! walks the days newest first and each day's entries newest first, in chunks, filters them,
//! and stops at `limit + 1` matches (to know whether there is more) or after `budget` entries
//! read (so a rare filter cannot scan a merchant's whole history in one request; the page then
//! ends early with a cursor to continue from).

use ipay_engine::clock::Timestamp;
use ipay_engine::error::EngineResult;
use ipay_engine::store::{EntryRange, Ledger};
use std::ops::Bound;

/// The UTC day of `ms`, as the day partitions and the days index spell it.
pub(crate) fn day(ms: i64) -> String {
    Timestamp(ms).to_datetime().format("%Y%m%d").to_string()
}

/// What to list.
pub(crate) struct DailyScan<'a> {
    /// Index of the days that have entries (partition = owner, sort = day).
    pub days_index: &'static str,
    /// Index of the entries (partition = `{owner}:{day}`, sort = id).
    pub items_index: &'static str,
    pub owner: &'a str,
    /// Inclusive lower bound on ids (e.g. from `created_after`).
    pub lower: Option<String>,
    /// Exclusive upper bound on ids: the cursor or `created_before`, whichever is lower.
    pub upper: Option<String>,
    /// First and last day to visit (inclusive).
    pub first_day: Option<String>,
    pub last_day: Option<String>,
    /// Page size, and most entries read for one page.
    pub limit: usize,
    pub budget: usize,
}

/// One page.
pub(crate) struct Scanned<T> {
    pub data: Vec<T>,
    pub has_more: bool,
    /// Where the next page starts (exclusive), when there is one.
    pub next_cursor: Option<String>,
}

/// Lists newest first. `keep` decodes an entry's value and says whether it matches;
/// `id_of` gives a kept item's id (its sort key) for the cursor.
pub(crate) async fn newest_first<T>(
    ledger: &dyn Ledger,
    scan: DailyScan<'_>,
    mut keep: impl FnMut(&[u8]) -> EngineResult<Option<T>>,
    id_of: impl Fn(&T) -> String,
) -> EngineResult<Scanned<T>> {
    let day_range = EntryRange {
        start: scan.first_day.map_or(Bound::Unbounded, Bound::Included),
        end: scan.last_day.map_or(Bound::Unbounded, Bound::Included),
        limit: 100_000,
        descending: true,
    };
    let days = ledger
        .scan_entries(scan.days_index, scan.owner, &day_range)
        .await?;
    let limit = scan.limit;
    let mut budget = scan.budget;
    let mut data = Vec::with_capacity(limit + 1);
    let mut last_seen: Option<String> = None;
    'days: for (d, _) in days {
        let partition = format!("{}:{d}", scan.owner);
        let mut end = scan.upper.clone();
        loop {
            if budget == 0 {
                break 'days;
            }
            let chunk = budget.min(500);
            let range = EntryRange {
                start: scan.lower.clone().map_or(Bound::Unbounded, Bound::Included),
                end: end.clone().map_or(Bound::Unbounded, Bound::Excluded),
                limit: chunk,
                descending: true,
            };
            let rows = ledger
                .scan_entries(scan.items_index, &partition, &range)
                .await?;
            let n = rows.len();
            budget -= n.min(budget);
            for (sort, value) in rows {
                last_seen = Some(sort.clone());
                end = Some(sort);
                if let Some(item) = keep(&value)? {
                    data.push(item);
                    if data.len() > limit {
                        break 'days;
                    }
                }
            }
            if n < chunk {
                break;
            }
        }
    }
    let (has_more, next_cursor) = if data.len() > limit {
        data.truncate(limit);
        (true, data.last().map(&id_of))
    } else if budget == 0 {
        (true, last_seen)
    } else {
        (false, None)
    };
    Ok(Scanned {
        data,
        has_more,
        next_cursor,
    })
}
