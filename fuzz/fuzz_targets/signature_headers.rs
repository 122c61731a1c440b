//! Signature headers: `Stripe-Signature` (also the PromptPay bank's), MultiSafepay `Auth`,
//! WeChat Pay `Authorization`. The first line is the header, the rest the body it signs.
#![no_main]

use ipay_adapters::{multisafepay, stripe, wechat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let Ok(header) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let body = data.get(split + 1..).unwrap_or_default();
    let _ = stripe::verify(header, body, "whsec_fuzz", 1_800_000_000, 300);
    let _ = multisafepay::verify(header, body, "fuzz-key", 1_800_000_000, 300);
    let _ = wechat::parse_authorization(header);
});
