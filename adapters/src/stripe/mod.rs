//! Stripe: everything this channel needs, in one folder.
//!
//! - `wire.rs`: the `Stripe-Signature` webhook scheme (HMAC-SHA256 over `"{t}.{body}"`,
//!   timestamp tolerance), verified without allocating and signed for the simulator; no I/O.
//! - `adapter.rs`: [`StripeAdapter`], the engine's `ChannelAdapter` over [`crate::http`]
//!   (PaymentIntents, webhook events), and [`StripeCredentials`].
//! - `tests.rs`: the signature's vectors (an HMAC computed independently with Python).
//!
//! Both files' public items are re-exported here (`stripe::verify`, `stripe::StripeAdapter`).
//! PromptPay's bank callback reuses the same signature construction.

mod adapter;
mod wire;

pub use adapter::*;
pub use wire::*;
