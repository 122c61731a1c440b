//! MultiSafepay: everything this channel needs, in one folder.
//!
//! - `wire.rs`: the `Auth` header of notifications (HMAC-SHA512 over `"{timestamp}:{body}"`,
//!   timestamp tolerance), verified without allocating and signed for the simulator; no I/O.
//! - `adapter.rs`: [`MultiSafepayAdapter`], the engine's `ChannelAdapter` over [`crate::http`]
//!   (orders API, notifications), and [`MultiSafepayCredentials`].
//! - `tests.rs`: the signature's vectors (MultiSafepay's published worked examples).
//!
//! Both files' public items are re-exported here (`multisafepay::verify`,
//! `multisafepay::MultiSafepayAdapter`).

mod adapter;
mod wire;

pub use adapter::*;
pub use wire::*;
