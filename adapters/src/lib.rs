//! Payment-channel adapters: each channel's wire format, request signing and callback
//! verification, one module per channel. Adapters hold no payment state. [`adapter`] implements
//! the engine's `ChannelAdapter` port for each channel over [`http`], [`factory`] builds them
//! from merchant credentials, and [`sim`] is the PSP simulator tests and load runs talk to.
//!
//! Today this crate holds the channels' cryptography and encodings: [`stripe`] and
//! [`multisafepay`] webhook signatures, [`promptpay`] EMVCo QR payloads, [`alipay`] RSA2 signing
//! and notify verification, [`wechat`] API v3 request signatures, callback verification and
//! resource decryption, and [`qr`] rendering; [`rsa2`] holds the SHA256withRSA key handling the
//! Alipay and WeChat modules share. Each is tested against published vectors where the
//! provider or public generators publish them (MultiSafepay's worked examples, PromptPay payloads
//! of public generators) and otherwise against values computed by independent tools (Python's
//! `hmac`, openssl), as each module's tests say. Circuit breakers, retries and callback routing
//! live in the engine and gateway.

pub mod adapter;
pub mod alipay;
pub mod factory;
pub mod http;
pub mod multisafepay;
pub mod promptpay;
pub mod qr;
pub mod rsa2;
pub mod shops;
pub mod sim;
pub mod stripe;
pub mod wechat;
