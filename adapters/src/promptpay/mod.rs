//! PromptPay (Thailand): everything this channel needs, in one folder.
//!
//! - `wire.rs`: the EMVCo merchant-presented QR payload, built and parsed (TLV fields, CRC,
//!   PromptPay recipients); no I/O and no secrets.
//! - `adapter.rs`: [`PromptPayAdapter`], the engine's `ChannelAdapter` (the QR is built locally,
//!   no PSP call), [`PromptPayCredentials`], and the acquiring bank's signed callback
//!   ([`BankCallback`], [`sign_bank_callback`]).
//! - `tests.rs`: the payload's vectors (public generators' payloads, byte for byte).
//!
//! Both files' public items are re-exported here (`promptpay::build`,
//! `promptpay::PromptPayAdapter`). Rendering a payload as an image is [`crate::qr`].

mod adapter;
mod wire;

pub use adapter::*;
pub use wire::*;
