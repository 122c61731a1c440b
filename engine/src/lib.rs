//! IPAY Engine core: money, ids, payment state machines, payment-session virtual actors,
//! storage ports with their embedded backends, and the [`Engine`] facade.
//!
//! This crate knows nothing about HTTP or any PSP's wire format: the gateway crate turns
//! requests into calls on [`Engine`], and channel adapters implement [`channel::ChannelAdapter`].

pub mod analytics;
pub mod channel;
pub mod channels;
pub mod clock;
pub mod engine;
pub mod error;
pub mod ids;
pub mod model;
pub mod money;
pub mod session;
pub mod settlement;
pub mod store;
pub mod subscriptions;
pub mod url_policy;
pub mod webhooks;

// The engine's concerns, one module each; their public types are re-exported by `engine`.
mod auth;
mod callbacks;
mod config;
mod events;
mod idempotency;
mod intents;
mod keys;
mod merchants;
mod paging;
pub mod reconciliation;
mod refunds;
mod routing;
mod services;

pub use engine::{AuthContext, Engine, EngineConfig, Limits};
pub use error::{EngineError, EngineResult, ErrorKind};
