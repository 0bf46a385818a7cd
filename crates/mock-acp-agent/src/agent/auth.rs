//! Kiro v3's access-token request: launched without `--auth-method cli`, kiro-cli v3 asks the
//! client `_kiro/auth/getAccessToken` before it answers a prompt, and a turn that gets no
//! token stalls (sends nothing, never answers) until it is cancelled.

use super::*;

impl Turn {
    /// Whether this turn must first get a token from the client.
    pub(super) fn needs_token(&self) -> bool {
        self.engine == Some(KiroEngine::V3)
            && !self.state.config.auth_cli
            && !self.state.authorized.load(Ordering::Relaxed)
    }

    /// Ask the client for a token. `true` once it gave one (later turns do not ask again);
    /// `false` when the turn was cancelled, which after a refused token is the only way out.
    pub(super) async fn authorize(&self) -> bool {
        let request = match UntypedMessage::new(
            mock_kiro::GET_ACCESS_TOKEN_METHOD,
            json!({ "sessionId": self.session_id.to_string() }),
        ) {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(%error, "could not build the token request");
                self.wait_stopped().await;
                return false;
            }
        };
        let answer = tokio::select! {
            answer = self.cx.send_request(request).block_task() => answer,
            () = self.wait_stopped() => return false,
        };
        match answer {
            Ok(_) => {
                self.state.authorized.store(true, Ordering::Relaxed);
                true
            }
            Err(error) => {
                tracing::warn!(
                    code = i32::from(error.code),
                    "no access token: the turn stalls until it is cancelled"
                );
                self.wait_stopped().await;
                false
            }
        }
    }
}
