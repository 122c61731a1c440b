//! The requests simulated clients make, run against the engine's public API, and what each
//! one acknowledged.

use crate::psp::{CHANNEL, callback};
use ipay_engine::engine::{
    AmountInput, AuthContext, CreateIntentRequest, CreateRefundRequest, Engine,
};
use ipay_engine::ids::PaymentIntentId;
use ipay_engine::model::{PaymentIntent, Refund};
use ipay_engine::{EngineError, ErrorKind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Currency of every simulated payment.
const CURRENCY: &str = "EUR";

/// One client request.
#[derive(Debug, Clone)]
pub enum Op {
    Create {
        service: String,
        key: Option<String>,
        amount: i64,
        expires_in: i64,
    },
    /// A PSP notification: `paid`, `failed`, `mismatch` (paid, wrong amount) or `waiting`.
    Callback {
        intent: String,
        nid: String,
        outcome: &'static str,
        amount: i64,
    },
    Cancel {
        intent: String,
    },
    Refund {
        intent: String,
        amount: Option<i64>,
    },
}

/// What a request acknowledged.
#[derive(Debug)]
pub enum Outcome {
    /// An intent was created (or, when the flag is set, its first answer replayed: a replay
    /// shows the intent as it was then) for this idempotency key.
    Created(PaymentIntent, Option<String>, bool),
    /// A client was shown this state of an intent after a successful request.
    Seen(PaymentIntent),
    Refunded {
        intent: String,
        refund: String,
        amount: i64,
    },
    /// The request failed with this code; `true` if it was an internal error.
    Refused(&'static str, bool),
}

/// Runs `op` and says what it acknowledged, with the moment it did (a sequence number taken
/// as the answer arrives: on the single-threaded runtime no other request runs in between,
/// so outcomes sorted by it are in the order clients saw them).
pub async fn run_op(
    engine: Engine,
    ctx: AuthContext,
    op: Op,
    clock: Arc<AtomicU64>,
) -> (u64, Outcome) {
    let o = answer(engine, ctx, op).await;
    (clock.fetch_add(1, Ordering::SeqCst), o)
}

async fn answer(engine: Engine, ctx: AuthContext, op: Op) -> Outcome {
    let r = match op {
        Op::Create {
            service,
            key,
            amount,
            expires_in,
        } => create(&engine, &ctx, service, key, amount, expires_in).await,
        Op::Callback {
            intent,
            nid,
            outcome,
            amount,
        } => notify(&engine, &intent, &nid, outcome, amount).await,
        Op::Cancel { intent } => engine
            .cancel_intent(&ctx, &intent, Some("simulated".into()))
            .await
            .map(Outcome::Seen),
        Op::Refund { intent, amount } => refund(&engine, &ctx, intent, amount).await,
    };
    r.unwrap_or_else(|e| Outcome::Refused(e.code(), e.kind() == ErrorKind::Internal))
}

async fn create(
    engine: &Engine,
    ctx: &AuthContext,
    service_id: String,
    key: Option<String>,
    amount: i64,
    expires_in: i64,
) -> Result<Outcome, EngineError> {
    let req = CreateIntentRequest {
        service_id,
        amount: AmountInput {
            value: amount,
            currency: CURRENCY.into(),
        },
        channel: CHANNEL.into(),
        metadata: None,
        expires_in: Some(expires_in),
    };
    let out = engine.create_intent(ctx, req, key.as_deref()).await?;
    match serde_json::from_str::<PaymentIntent>(&out.body) {
        Ok(pi) => Ok(Outcome::Created(pi, key, out.replayed)),
        // A replayed refusal: nothing was created.
        Err(_) => Ok(Outcome::Refused("replayed_error", false)),
    }
}

async fn notify(
    engine: &Engine,
    intent: &str,
    nid: &str,
    outcome: &str,
    amount: i64,
) -> Result<Outcome, EngineError> {
    let (word, amount) = match outcome {
        "mismatch" => ("paid", amount + 1),
        other => (other, amount),
    };
    let cb = callback(intent, nid, word, amount, CURRENCY);
    engine.handle_callback(CHANNEL, &cb).await?;
    // The PSP was told "received": what is durable now is what a client may have seen.
    let pid = PaymentIntentId::parse(intent)
        .map_err(|_| EngineError::not_found("payment intent", intent))?;
    match engine.ledger().get_intent(pid).await? {
        Some(pi) => Ok(Outcome::Seen(pi)),
        None => Err(EngineError::not_found("payment intent", intent)),
    }
}

async fn refund(
    engine: &Engine,
    ctx: &AuthContext,
    intent: String,
    amount: Option<i64>,
) -> Result<Outcome, EngineError> {
    let req = CreateRefundRequest {
        payment_intent: intent.clone(),
        amount: amount.map(|value| AmountInput {
            value,
            currency: CURRENCY.into(),
        }),
        reason: None,
    };
    let out = engine.create_refund(ctx, req, None).await?;
    let r: Refund = serde_json::from_str(&out.body)
        .map_err(|e| EngineError::Internal(format!("refund answer is not a refund: {e}")))?;
    Ok(Outcome::Refunded {
        intent,
        refund: r.id.to_string(),
        amount: r.amount.value,
    })
}
