//! Alipay notification forms (`application/x-www-form-urlencoded`), percent-decoding
//! included.
#![no_main]

use ipay_adapters::alipay;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = alipay::parse_form(text);
    }
});
