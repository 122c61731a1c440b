//! Shop-platform webhook bodies through every platform's order mapper: the first byte picks
//! the platform, the second whether a topic header is given, the rest is the JSON body.
#![no_main]

use ipay_adapters::shops::{self, Defaults, Provider};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [p, t, body @ ..] = data else {
        return;
    };
    let provider = Provider::ALL[*p as usize % Provider::ALL.len()];
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let topics = provider.topics();
    let topic = match *t as usize {
        0 => None,
        n => topics.get(n % (topics.len() + 1)).copied(),
    };
    let d = Defaults {
        carrier: None,
        currency: "EUR",
    };
    let _ = shops::map_order(provider, topic, &v, &d);
    let _ = shops::update_info(provider, topic, &v);
});
