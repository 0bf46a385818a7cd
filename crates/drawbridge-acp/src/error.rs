//! The error type of this crate, classified for retries.

/// Everything that can go wrong while driving an agent process.
///
/// Every variant comes from the agent side (its binary, its process, or what it said), except
/// [`AcpError::Spawn`], which usually means a configuration problem on our side.
#[derive(thiserror::Error, Debug)]
pub enum AcpError {
    /// The child could not be spawned (binary not found, not executable, bad cwd, home dirs).
    #[error("failed to spawn agent `{command}`: {source}")]
    Spawn {
        /// The command as given in the spec.
        command: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The `initialize` handshake failed or did not finish in time; the message carries the
    /// child's stderr tail when there is one.
    #[error("ACP handshake failed: {0}")]
    Handshake(String),
    /// The child exited (or closed its stdout) while we needed it.
    #[error("agent process exited ({}); stderr tail: {}", exit_text(*.status), tail_text(.stderr_tail))]
    Exited {
        /// The exit code, `None` when killed by a signal or not known yet.
        status: Option<i32>,
        /// The last few KiB of the child's stderr.
        stderr_tail: String,
    },
    /// The agent sent something we could not understand.
    #[error("ACP protocol error: {0}")]
    Protocol(String),
    /// The agent answered a request with a JSON-RPC error.
    #[error("agent answered {method} with error {code}: {message}")]
    Agent {
        /// The request that failed.
        method: &'static str,
        /// The JSON-RPC error code.
        code: i32,
        /// The error message.
        message: String,
    },
    /// Something did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The agent cannot do what was asked (e.g. choose a model when it announces none).
    #[error("not supported by the agent: {0}")]
    Unsupported(String),
}

impl AcpError {
    /// Whether retrying on another (or a fresh) agent process can help.
    ///
    /// A dead or stuck process is worth a retry elsewhere; a spawn failure (bad command or
    /// directory) or a protocol mismatch is not. An agent's error answer is retryable only when
    /// it is an internal error (-32603), which is how agents report upstream trouble.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Spawn { .. } | Self::Protocol(_) | Self::Unsupported(_) => false,
            Self::Handshake(_) | Self::Exited { .. } | Self::Timeout(_) => true,
            Self::Agent { code, .. } => *code == INTERNAL_ERROR,
        }
    }
}

const INTERNAL_ERROR: i32 = -32603;

fn exit_text(status: Option<i32>) -> String {
    match status {
        Some(code) => format!("status {code}"),
        None => "no exit status".to_owned(),
    }
}

fn tail_text(tail: &str) -> &str {
    let trimmed = tail.trim();
    if trimmed.is_empty() {
        "(empty)"
    } else {
        trimmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exited_display_carries_status_and_stderr() {
        let error = AcpError::Exited {
            status: Some(3),
            stderr_tail: "boom\n".to_owned(),
        };
        assert_eq!(
            error.to_string(),
            "agent process exited (status 3); stderr tail: boom"
        );
        assert!(error.retryable());
    }

    #[test]
    fn spawn_is_not_retryable() {
        let error = AcpError::Spawn {
            command: "nope".to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(!error.retryable());
    }
}
