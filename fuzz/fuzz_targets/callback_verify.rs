//! A whole PSP callback through each channel's adapter, as the engine calls it: the first
//! byte picks the channel, then `name: value` header lines, an empty line, and the body.
//! Adapters use the PSP simulator's merchant credentials, so a well-formed but unsigned
//! input reaches the signature check and everything before it.
#![no_main]

use ipay_adapters::factory::AdapterFactory;
use ipay_adapters::sim::keys;
use ipay_engine::channel::{ChannelAdapter, ChannelFactory, ChannelsConfig, InboundCallback};
use ipay_engine::clock::{Clock, SystemClock};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

const CHANNELS: [&str; 5] = ["alipay", "wechat", "stripe", "multisafepay", "promptpay"];

struct Setup {
    factory: AdapterFactory,
    adapters: Vec<Arc<dyn ChannelAdapter>>,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let factory = AdapterFactory::new(&ChannelsConfig::default()).expect("factory");
        let adapters = CHANNELS
            .iter()
            .map(|c| {
                let creds = keys::credentials(c).expect("simulator credentials");
                factory
                    .build(c, &creds, "https://ipay.example/callbacks")
                    .expect("adapter")
            })
            .collect();
        Setup { factory, adapters }
    })
}

fn callback(data: &[u8]) -> InboundCallback {
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once("\n\n").unwrap_or(("", &text));
    let mut lines = head.lines();
    let path = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    InboundCallback {
        method: "POST".into(),
        path,
        query: None,
        headers,
        body: bytes::Bytes::copy_from_slice(body.as_bytes()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let s = setup();
    let i = pick as usize % CHANNELS.len();
    let cb = callback(rest);
    let _ = s.factory.peek_intent(CHANNELS[i], &cb);
    // Nothing the fuzzer makes is signed with the simulator's PSP keys.
    assert!(s.adapters[i].verify_callback(&cb, SystemClock.now()).is_err());
});
