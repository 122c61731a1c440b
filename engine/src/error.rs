//! The engine's one error type. Each variant has a stable `code` string (what API clients match
//! on) and an [`ErrorKind`] that the gateway maps to an HTTP status in exactly one place.

use crate::money::MoneyError;
use std::borrow::Cow;

/// Broad classes of failure; the gateway turns each into one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or violates a rule about its content (400).
    InvalidRequest,
    /// Authentication failed (401).
    Unauthenticated,
    /// Authenticated but not allowed (403).
    Forbidden,
    /// No such object visible to this caller (404).
    NotFound,
    /// The object's state does not allow this (409).
    Conflict,
    /// Well-formed but unprocessable, e.g. an idempotency key reused with another body (422).
    Unprocessable,
    /// Too many requests, try later (429).
    RateLimited,
    /// The object is locked until someone with more rights unlocks it (423).
    Locked,
    /// A dependency (store, channel, session shard) is unavailable; retry later (503).
    Unavailable,
    /// A bug. Never caused by client input (500).
    Internal,
}

/// Every way an engine operation can fail.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// Input was missing or invalid. `param` names the offending field.
    #[error("{message}")]
    Invalid {
        code: &'static str,
        message: String,
        param: Option<String>,
    },
    #[error("missing or malformed API key; send `Authorization: Bearer sk_…`")]
    AuthInvalid,
    #[error("this API key has been revoked; create or rotate a key")]
    AuthRevoked,
    #[error(
        "this API key has expired; rotate it before expiry (keys are valid 365 days by default)"
    )]
    AuthExpired,
    #[error("the caller's IP address {ip} is not in this key's ip_whitelist")]
    IpNotAllowed { ip: String },
    /// Authentication other than by API key failed (bad password, bad or expired token, bad
    /// webhook signature); `code` says which.
    #[error("{message}")]
    Unauthenticated { code: &'static str, message: String },
    #[error("this API key lacks the `{permission}` permission")]
    PermissionDenied { permission: String },
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("no {resource} with id `{id}`")]
    NotFound { resource: &'static str, id: String },
    #[error("cannot {action}: the {object} is {from}")]
    InvalidStateTransition {
        object: &'static str,
        from: String,
        action: String,
    },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("this Idempotency-Key was already used with a different request body")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still being processed; retry shortly")]
    IdempotencyInProgress,
    #[error("{message}")]
    ChannelUnavailable {
        channel: String,
        message: String,
        retry_after_secs: u32,
        alternatives: Vec<String>,
    },
    /// Too many requests of one kind (per provider, per merchant, …); retry after the delay.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u32,
    },
    /// The object is locked (e.g. too many wrong OTPs) until an operator unlocks it.
    #[error("{message}")]
    Locked { code: &'static str, message: String },
    #[error("the store is unavailable or overloaded: {0}")]
    StoreUnavailable(String),
    #[error("the payment session is restarting; retry the request")]
    SessionUnavailable,
    #[error("internal error: {0}")]
    Internal(String),
    /// An error answered by the node that owns a session, relayed unchanged (cluster mode).
    #[error("{message}")]
    Relayed {
        status: u16,
        code: &'static str,
        message: String,
    },
}

/// Every code the engine emits for session commands, so relayed errors keep theirs.
const RELAYABLE_CODES: &[&str] = &[
    "invalid_state_transition",
    "resource_missing",
    "parameter_invalid",
    "amount_invalid",
    "currency_mismatch",
    "refund_exceeds_captured",
    "idempotency_key_reused",
    "idempotency_key_in_use",
    "store_unavailable",
    "session_unavailable",
    "channel_mismatch",
    "test_mode_only",
];

impl EngineError {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Invalid { code, .. } => code,
            EngineError::AuthInvalid => "auth_invalid",
            EngineError::AuthRevoked => "auth_revoked",
            EngineError::AuthExpired => "auth_expired",
            EngineError::Unauthenticated { code, .. } => code,
            EngineError::IpNotAllowed { .. } => "ip_not_allowed",
            EngineError::PermissionDenied { .. } => "permission_denied",
            EngineError::Forbidden { code, .. } => code,
            EngineError::NotFound { .. } => "resource_missing",
            EngineError::InvalidStateTransition { .. } => "invalid_state_transition",
            EngineError::Conflict { code, .. } => code,
            EngineError::IdempotencyKeyReused => "idempotency_key_reused",
            EngineError::IdempotencyInProgress => "idempotency_key_in_use",
            EngineError::ChannelUnavailable { .. } => "channel_unavailable",
            EngineError::RateLimited { .. } => "rate_limited",
            EngineError::Locked { code, .. } => code,
            EngineError::StoreUnavailable(_) => "store_unavailable",
            EngineError::SessionUnavailable => "session_unavailable",
            EngineError::Internal(_) => "internal_error",
            EngineError::Relayed { code, .. } => code,
        }
    }

    /// The class, for HTTP status mapping.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::Invalid { .. } => ErrorKind::InvalidRequest,
            EngineError::AuthInvalid
            | EngineError::AuthRevoked
            | EngineError::AuthExpired
            | EngineError::Unauthenticated { .. } => ErrorKind::Unauthenticated,
            EngineError::IpNotAllowed { .. }
            | EngineError::PermissionDenied { .. }
            | EngineError::Forbidden { .. } => ErrorKind::Forbidden,
            EngineError::NotFound { .. } => ErrorKind::NotFound,
            EngineError::InvalidStateTransition { .. }
            | EngineError::Conflict { .. }
            | EngineError::IdempotencyInProgress => ErrorKind::Conflict,
            EngineError::IdempotencyKeyReused => ErrorKind::Unprocessable,
            EngineError::RateLimited { .. } => ErrorKind::RateLimited,
            EngineError::Locked { .. } => ErrorKind::Locked,
            EngineError::ChannelUnavailable { .. }
            | EngineError::StoreUnavailable(_)
            | EngineError::SessionUnavailable => ErrorKind::Unavailable,
            EngineError::Internal(_) => ErrorKind::Internal,
            EngineError::Relayed { status, .. } => match status {
                400 => ErrorKind::InvalidRequest,
                401 => ErrorKind::Unauthenticated,
                403 => ErrorKind::Forbidden,
                404 => ErrorKind::NotFound,
                409 => ErrorKind::Conflict,
                422 => ErrorKind::Unprocessable,
                503 => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            },
        }
    }

    /// The offending parameter, when one is known.
    pub fn param(&self) -> Option<&str> {
        match self {
            EngineError::Invalid { param, .. } => param.as_deref(),
            _ => None,
        }
    }

    /// Shorthand for an invalid parameter.
    pub fn invalid(
        code: &'static str,
        param: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        EngineError::Invalid {
            code,
            message: message.into(),
            param: Some(param.into().into_owned()),
        }
    }

    /// An error another node answered (see [`EngineError::Relayed`]); unknown codes become
    /// `relayed_error`.
    pub fn relayed(status: u16, code: &str, message: String) -> Self {
        let code = RELAYABLE_CODES
            .iter()
            .find(|c| **c == code)
            .copied()
            .unwrap_or("relayed_error");
        EngineError::Relayed {
            status,
            code,
            message,
        }
    }

    /// Shorthand for a not-found object.
    pub fn not_found(resource: &'static str, id: impl ToString) -> Self {
        EngineError::NotFound {
            resource,
            id: id.to_string().chars().take(80).collect(),
        }
    }

    /// Money validation failure on the named parameter.
    pub fn money(param: &str, e: MoneyError) -> Self {
        let code = match e {
            MoneyError::UnknownCurrency(_) => "currency_unknown",
            MoneyError::CurrencyMismatch(..) => "currency_mismatch",
            _ => "amount_invalid",
        };
        EngineError::invalid(code, param.to_string(), e.to_string())
    }
}

/// Storage failures, converted to [`EngineError::StoreUnavailable`] at the engine boundary.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        EngineError::StoreUnavailable(e.0)
    }
}

/// Result alias.
pub type EngineResult<T> = Result<T, EngineError>;
