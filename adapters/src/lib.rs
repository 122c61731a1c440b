//! Third parties' wire formats for IPAY Engine, one folder per payment channel: [`alipay`],
//! [`wechat`], [`promptpay`], [`stripe`] and [`multisafepay`]. Each folder holds the channel's
//! wire format and cryptography (`wire.rs`), its implementation of the engine's
//! `ChannelAdapter` port (`adapter.rs`) and its vector tests (`tests.rs`); its `mod.rs` says
//! what is where and re-exports what callers use. Adapters hold no payment state.
//!
//! Shared by the channels: `common` (credential fields, callback field parsing), [`http`] (the
//! outbound client), [`rsa2`] (the SHA256withRSA keys of Alipay and WeChat Pay) and [`qr`]
//! (payloads rendered as images). [`factory`] builds adapters from merchant credentials, and
//! [`sim`] is the PSP simulator tests and load runs talk to. [`marketplaces`] are the
//! marketplaces orders are pulled from (bol.com, AliExpress, Temu) and [`marketsim`] their
//! simulator. Wire formats are tested against
//! published vectors where the provider or public generators publish them (MultiSafepay's
//! worked examples, WeChat Pay's signature example, PromptPay payloads of public generators)
//! and otherwise against values computed by independent tools (Python's `hmac`, openssl), as
//! each folder's tests say. Circuit breakers, retries and callback routing live in the engine
//! and gateway.

pub mod alipay;
mod common;
pub mod factory;
pub mod http;
pub mod marketplaces;
pub mod marketsim;
pub mod multisafepay;
pub mod promptpay;
pub mod qr;
pub mod rsa2;
pub mod sendcloud;
pub mod shops;
pub mod sim;
pub mod stripe;
pub mod wechat;
