//! WeChat Pay (微信支付) API v3, Native: everything this channel needs, in one folder.
//!
//! - `wire.rs`: the `Authorization` request signature, the Native order body and its
//!   `code_url` answer, verification of `Wechatpay-*` signatures on answers and callbacks, and
//!   AEAD_AES_256_GCM decryption of callback resources; no I/O.
//! - `adapter.rs`: [`WechatAdapter`], the engine's `ChannelAdapter` over [`crate::http`],
//!   [`WechatCredentials`], and [`peek_intent`], which routes a callback by the last segment of
//!   its path (the order number is only inside the encrypted resource).
//! - `tests.rs`: the wire format's vectors (WeChat Pay's published signature example, fixture
//!   callbacks).
//!
//! Both files' public items are re-exported here (`wechat::verify_signature`,
//! `wechat::WechatAdapter`). Key handling shared with Alipay is [`crate::rsa2`].

mod adapter;
mod wire;

pub use adapter::*;
pub use wire::*;
