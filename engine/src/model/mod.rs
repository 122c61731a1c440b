//! Domain objects and their state machines.

pub mod event;
pub mod intent;
pub mod merchant;
pub mod refund;
pub mod service;

pub use event::{Event, EventView};
pub use intent::{Applied, IntentCommand, IntentStatus, PaymentIntent};
pub use merchant::{ApiKey, ApiKeyInput, Merchant, Permission, Secret};
pub use refund::{PendingRefund, Refund, RefundMode, RefundOutcome, RefundSource, RefundStatus};
pub use service::{Service, ServiceAction, ServiceInput, ServiceStatus};
