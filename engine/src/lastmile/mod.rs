//! Last-mile pay-on-delivery: accounts, orders (API, bulk upload, shop webhooks), payment
//! sessions with an 18-digit reference, parcel states, driver OTP and the live event stream.
//! (Being built; see issue 6.)

use crate::Engine;
use crate::error::EngineResult;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `[lastmile]` in `ipay.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LastMileConfig {}

/// The last-mile subsystem of one node.
pub struct LastMile {
    _engine: Engine,
}

impl LastMile {
    /// Starts the last-mile subsystem on this engine.
    pub async fn start(engine: &Engine, _cfg: LastMileConfig) -> EngineResult<Arc<LastMile>> {
        Ok(Arc::new(LastMile {
            _engine: engine.clone(),
        }))
    }
}
