//! Merchant webhooks: the durable outbox, signed deliveries, the retry schedule, delivery logs,
//! dropped deliveries and replay. (Being built; see issue 5.)

use crate::Engine;
use crate::error::EngineResult;
use crate::store::Ledger;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `[webhooks]` in `ipay.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {}

/// The webhook subsystem of one node.
pub struct Webhooks {
    _engine: Engine,
}

impl Webhooks {
    /// Starts the delivery scheduler for this engine.
    pub async fn start(engine: &Engine, _cfg: WebhookConfig) -> EngineResult<Arc<Webhooks>> {
        Ok(Arc::new(Webhooks {
            _engine: engine.clone(),
        }))
    }
}

/// Wraps the ledger so that every batch carrying events also carries their outbox records
/// (one durable step). [`Engine::start`] applies it to the ledger it is given.
pub fn with_outbox(ledger: Arc<dyn Ledger>) -> Arc<dyn Ledger> {
    ledger
}
