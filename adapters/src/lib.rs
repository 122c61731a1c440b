//! Payment-channel adapters: each channel's wire format, request signing and callback
//! verification, one module per channel. Adapters hold no payment state; the engine's
//! `ChannelAdapter` port is what they will implement once the channel integration lands.
//!
//! Today this crate holds the channels' cryptography and encodings, each checked against
//! published test vectors: [`stripe`] and [`multisafepay`] webhook signatures, [`promptpay`]
//! EMVCo QR payloads, [`alipay`] RSA2 signing and notify verification, [`wechat`] API v3
//! request signatures, callback verification and resource decryption, and [`qr`] rendering.

pub mod alipay;
pub mod multisafepay;
pub mod promptpay;
pub mod qr;
pub mod stripe;
pub mod wechat;
