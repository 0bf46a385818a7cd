//! The one error type of the state crate. Messages name what failed and where (a redacted store
//! address), never a secret.

/// What went wrong talking to the shared state.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    /// The store could not be reached or did not answer in time. Retrying later can help, and a
    /// caller with a cache keeps serving from it meanwhile.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// A stored value or a reply could not be decoded.
    #[error("state store data is corrupt: {0}")]
    Corrupt(String),
    /// The store's configuration is wrong (bad URL, credentials refused): fix the config.
    #[error("state store misconfigured: {0}")]
    Config(String),
    /// The caller passed something the store cannot hold (an empty pod id, a zero TTL).
    #[error("invalid state request: {0}")]
    Invalid(String),
    /// A write made under a lease that is no longer the caller's (another node leads now).
    #[error("fenced off: {0}")]
    Fenced(String),
    /// The store refused a command (script error, out of memory, …).
    #[error("state store refused the command: {0}")]
    Backend(String),
}

impl StateError {
    /// Whether trying the same operation again later can succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, StateError::Unavailable(_))
    }
}
