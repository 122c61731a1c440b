//! Offset paging of list operations: turns the `limit` and `offset` a caller gave into a
//! bounded [`PageRequest`].
//!
//! It does not read anything; each list operation passes the request on to the ledger.

use crate::config::Limits;
use crate::error::{EngineError, EngineResult};
use crate::store::PageRequest;

/// `limit` when the caller gives none.
const DEFAULT_PAGE_SIZE: usize = 20;
/// Largest `offset` accepted: deeper pages cost a scan of everything before them.
const MAX_OFFSET: usize = 1_000_000;

/// Validates `limit` (1 to `max_page_size`, default 20) and `offset` (at most 1 000 000,
/// default 0).
pub(crate) fn page(
    limits: &Limits,
    limit: Option<usize>,
    offset: Option<usize>,
) -> EngineResult<PageRequest> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if limit == 0 || limit > limits.max_page_size {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "limit",
            format!("limit must be between 1 and {}", limits.max_page_size),
        ));
    }
    let offset = offset.unwrap_or(0);
    if offset > MAX_OFFSET {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "offset",
            "offset must be at most 1000000",
        ));
    }
    Ok(PageRequest { limit, offset })
}
