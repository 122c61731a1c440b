//! Alipay (支付宝): everything this channel needs, in one folder.
//!
//! - `wire.rs`: the RSA2 signature scheme over Alipay's sorted `k=v` strings, the
//!   `alipay.trade.precreate` request and its signed answer, the async notify; no I/O.
//! - `adapter.rs`: [`AlipayAdapter`], the engine's `ChannelAdapter` over [`crate::http`], and
//!   [`AlipayCredentials`] parsed from a merchant's JSON.
//! - `tests.rs`: the wire format's vectors (openssl-computed signatures over the fixtures).
//!
//! Both files' public items are re-exported here, so callers write `alipay::verify_notify` or
//! `alipay::AlipayAdapter`. Key handling shared with WeChat Pay is [`crate::rsa2`]; retries,
//! dedupe and routing of callbacks belong to the engine and gateway.

mod adapter;
mod wire;

pub use adapter::*;
pub use wire::*;
