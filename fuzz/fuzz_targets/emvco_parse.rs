//! EMVCo (PromptPay) payloads: any text, parsed and CRC-checked; a payload that parses must
//! carry a valid CRC.
#![no_main]

use ipay_adapters::promptpay;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if promptpay::parse(text).is_ok() {
        assert!(promptpay::crc_is_valid(text));
    }
});
