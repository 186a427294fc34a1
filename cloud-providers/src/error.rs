//! Cloud errors, classified so callers decide by class, never by string.

use crate::Api;

/// What kind of failure a cloud call met. The class decides the reaction:
/// retry (throttled, transient), re-plan elsewhere (quota, subnet full),
/// resync (not found, invalid state), or stop and tell the admin (auth, invalid).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The cloud refused the call for rate; it did nothing.
    Throttled,
    /// A per-instance or per-account quota is reached (ENIs per instance, IPs per ENI).
    Quota,
    /// The subnet (vSwitch) has no free IPs left.
    SubnetFull,
    /// The object does not exist (any more).
    NotFound,
    /// The object is in a state that forbids the call (ENI still attaching...).
    InvalidState,
    /// Credentials missing, wrong or not allowed.
    Auth,
    /// A 5xx or a lost connection: the call may or may not have been applied.
    Transient,
    /// The request itself is wrong (a bug, or a bad config value).
    InvalidRequest,
}

impl ErrorClass {
    /// A fixed, small label set for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Throttled => "throttled",
            ErrorClass::Quota => "quota",
            ErrorClass::SubnetFull => "subnet_full",
            ErrorClass::NotFound => "not_found",
            ErrorClass::InvalidState => "invalid_state",
            ErrorClass::Auth => "auth",
            ErrorClass::Transient => "transient",
            ErrorClass::InvalidRequest => "invalid_request",
        }
    }
}

/// A failed cloud call: which operation, the class, the cloud's own code and
/// message, and on what object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{api:?} on {object} failed ({code}): {message}")]
pub struct CloudError {
    /// The operation.
    pub api: Api,
    /// How to react.
    pub class: ErrorClass,
    /// The cloud's error code (`RequestLimitExceeded`, `Throttling.User`...).
    pub code: String,
    /// The cloud's message, or ours.
    pub message: String,
    /// The object the call was about (ENI, instance, subnet id).
    pub object: String,
}

impl CloudError {
    /// Builds an error.
    pub fn new(
        api: Api,
        class: ErrorClass,
        code: impl Into<String>,
        object: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self { api, class, code: code.into(), message: message.into(), object: object.into() }
    }

    /// Whether the retry policy may repeat the call: throttling always (the
    /// cloud did nothing), transient faults only for idempotent calls.
    pub fn is_retryable(&self) -> bool {
        match self.class {
            ErrorClass::Throttled => true,
            ErrorClass::Transient => self.api.is_idempotent(),
            _ => false,
        }
    }
}

/// Result of a cloud call.
pub type CloudResult<T> = Result<T, CloudError>;

/// For removals (unassign, detach, delete), an object already gone is the
/// goal reached: repeating a removal is safe.
pub fn gone_is_done(result: CloudResult<()>) -> CloudResult<()> {
    match result {
        Err(e) if e.class == ErrorClass::NotFound => Ok(()),
        other => other,
    }
}
