//! Property tests of every channel's callback parser: arbitrary bodies and headers, and real
//! signed callbacks from the PSP simulator with bytes flipped, inserted, cut or headers
//! swapped. Whatever arrives, `peek_intent` and `verify_callback` answer (a notice or a coded
//! refusal) and never panic; a mutated callback is never accepted as something it did not
//! say.

mod common;

use common::{Received, World, now, request};
use ipay_engine::channel::{ChannelAdapter, ChannelFactory, InboundCallback};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::sync::Arc;

const ALL: [(&str, &str); 5] = [
    ("alipay", "CNY"),
    ("wechat", "CNY"),
    ("stripe", "EUR"),
    ("multisafepay", "EUR"),
    ("promptpay", "THB"),
];

/// Headers each channel reads, so arbitrary values reach the parsers behind them.
const HEADERS: [&str; 9] = [
    "stripe-signature",
    "wechatpay-signature",
    "wechatpay-timestamp",
    "wechatpay-nonce",
    "wechatpay-serial",
    "auth",
    "x-bank-signature",
    "content-type",
    "wechatpay-signature-type",
];

/// One channel's adapter and a real paid callback for it.
struct Case {
    channel: &'static str,
    adapter: Arc<dyn ChannelAdapter>,
    valid: InboundCallback,
}

/// Pays one intent per channel through the simulator and keeps what arrived.
fn valid_callbacks(rt: &tokio::runtime::Runtime, w: &World) -> Vec<Case> {
    rt.block_on(async {
        let mut out = Vec::new();
        for (channel, currency) in ALL {
            let adapter = w.adapter(channel);
            let req = request(4321, currency);
            let intent = req.intent_id.to_string();
            let payment = adapter.create_payment(&req).await.unwrap();
            if channel == "promptpay" {
                w.sim
                    .promptpay_scan(&intent, &payment.qr_code, &w.notify_url(channel))
                    .unwrap();
            }
            assert!(w.sim.pay(&intent).await.unwrap().acknowledged());
            let got: Received = w.receiver.last();
            out.push(Case {
                channel,
                adapter,
                valid: got.gateway_callback(),
            });
        }
        out
    })
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// A change to a callback's bytes or headers.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Cut { at: usize, len: usize },
    Truncate { at: usize },
    HeaderValue { which: usize, value: String },
    DropHeaders,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Cut { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), ".{0,80}")
            .prop_map(|(which, value)| Mutation::HeaderValue { which, value }),
        Just(Mutation::DropHeaders),
    ]
}

fn mutate(cb: &InboundCallback, m: &Mutation) -> InboundCallback {
    let mut out = cb.clone();
    let mut body = cb.body.to_vec();
    let n = body.len().max(1);
    match m {
        Mutation::Flip { at, bit } => {
            if let Some(b) = body.get_mut(at % n) {
                *b ^= 1 << bit;
            }
        }
        Mutation::Insert { at, bytes } => {
            let at = at % (body.len() + 1);
            body.splice(at..at, bytes.iter().copied());
        }
        Mutation::Cut { at, len } => {
            let at = at % n;
            let end = (at + len).min(body.len());
            if at < end {
                body.drain(at..end);
            }
        }
        Mutation::Truncate { at } => body.truncate(at % n),
        Mutation::HeaderValue { which, value } => {
            if !out.headers.is_empty() {
                let i = which % out.headers.len();
                out.headers[i].1 = value.clone();
            }
        }
        Mutation::DropHeaders => out.headers.clear(),
    }
    out.body = body.into();
    out
}

/// Asks the factory and the adapter about `cb`; both must answer without panicking.
fn probe(w: &World, case: &Case, cb: &InboundCallback) -> Result<bool, TestCaseError> {
    let peeked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        w.factory.peek_intent(case.channel, cb)
    }));
    prop_assert!(peeked.is_ok(), "{}: peek_intent panicked", case.channel);
    let verified = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        case.adapter.verify_callback(cb, now())
    }));
    let Ok(verified) = verified else {
        return Err(TestCaseError::fail(format!(
            "{}: verify_callback panicked",
            case.channel
        )));
    };
    Ok(verified.is_ok())
}

#[test]
fn mutated_real_callbacks_never_panic_and_never_verify_as_something_else() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let w = rt.block_on(World::start());
    let cases = valid_callbacks(&rt, &w);
    for case in &cases {
        assert!(
            probe(&w, case, &case.valid).unwrap(),
            "{}: the unmutated callback must verify",
            case.channel
        );
        let original = case.adapter.verify_callback(&case.valid, now()).unwrap();
        let strategy = prop::collection::vec(mutation(), 1..4);
        runner(400)
            .run(&strategy, |ms| {
                let cb = ms.iter().fold(case.valid.clone(), |cb, m| mutate(&cb, m));
                if !probe(&w, case, &cb)? {
                    return Ok(());
                }
                // Accepted after mutation: only changes outside what is signed (a header
                // the channel ignores, whitespace a JSON parser skips) may get here, and the
                // notice must still say exactly what the PSP signed.
                let notice = case.adapter.verify_callback(&cb, now()).unwrap();
                prop_assert_eq!(&notice.notification_id, &original.notification_id);
                prop_assert_eq!(notice.intent_id, original.intent_id);
                prop_assert_eq!(
                    format!("{:?}", notice.outcome),
                    format!("{:?}", original.outcome)
                );
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{}: {e}", case.channel));
    }
    rt.block_on(w.sim.stop());
}

fn arbitrary_callback() -> impl Strategy<Value = InboundCallback> {
    let header =
        (prop::sample::select(HEADERS.to_vec()), ".{0,120}").prop_map(|(k, v)| (k.to_string(), v));
    (
        prop::collection::vec(any::<u8>(), 0..600),
        prop::collection::vec(header, 0..6),
        "(/callbacks/[a-z]{0,12}(/[A-Za-z0-9_]{0,40})?)?",
        prop::option::of(".{0,60}"),
    )
        .prop_map(|(body, headers, path, query)| InboundCallback {
            method: "POST".into(),
            path,
            query,
            headers,
            body: body.into(),
        })
}

#[test]
fn arbitrary_callbacks_never_panic_any_channel() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let w = rt.block_on(World::start());
    for (channel, _) in ALL {
        let case = Case {
            channel,
            adapter: w.adapter(channel),
            valid: InboundCallback::default(),
        };
        runner(500)
            .run(&arbitrary_callback(), |cb| {
                prop_assert!(
                    !probe(&w, &case, &cb)?,
                    "{channel}: an arbitrary callback verified"
                );
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{channel}: {e}"));
    }
    rt.block_on(w.sim.stop());
}

/// JSON-shaped noise reaches deeper than random bytes into the JSON channels' parsers.
fn json_noise() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        "\"[a-zA-Z0-9_.:-]{0,24}\"",
        Just("1e999".to_string()),
        Just("-0.0000001".to_string()),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "id",
                        "type",
                        "data",
                        "object",
                        "resource",
                        "ciphertext",
                        "nonce",
                        "associated_data",
                        "event_type",
                        "amount",
                        "currency",
                        "status",
                        "transactionid",
                        "order_id",
                        "metadata",
                        "intent",
                        "created",
                    ]),
                    inner
                ),
                0..6
            )
            .prop_map(|kv| {
                let fields: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

#[test]
fn json_shaped_callbacks_never_panic_any_channel() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let w = rt.block_on(World::start());
    for (channel, _) in ALL {
        let case = Case {
            channel,
            adapter: w.adapter(channel),
            valid: InboundCallback::default(),
        };
        runner(300)
            .run(&json_noise(), |body| {
                let cb = InboundCallback {
                    method: "POST".into(),
                    path: format!("/callbacks/{channel}/pi_01J7XZ1A2B3C4D5E6F7G8H9IKM"),
                    body: body.into(),
                    ..InboundCallback::default()
                };
                prop_assert!(!probe(&w, &case, &cb)?, "{channel}: unsigned JSON verified");
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{channel}: {e}"));
    }
    rt.block_on(w.sim.stop());
}
