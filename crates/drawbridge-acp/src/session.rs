//! Sessions on an agent process: open one, choose its model, run prompt turns on it, delete it.

use agent_client_protocol::UntypedMessage;
use agent_client_protocol::v1::schema::{
    ContentBlock, HttpHeader, McpServer, McpServerHttp, NewSessionRequest, PromptRequest,
    SessionId, TextContent,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::connection::{Turn, lock};
use crate::engine::{Engine, ModelCatalogue, ModelSelector, SESSION_DELETE_METHOD};
use crate::error::AcpError;
use crate::events::{AgentEvent, StopReason};
use crate::process::AgentProcess;
use crate::usage::{TokenUsage, UsageReport};
use crate::wire::{NewSessionCall, PromptCall};

/// An ACP session opened on one agent process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    id: SessionId,
    models: Option<ModelCatalogue>,
}

impl Session {
    /// The agent's id for the session.
    pub fn id(&self) -> &str {
        &self.id.0
    }

    /// The models the agent announced when it opened this session (`None`: none announced).
    pub fn models(&self) -> Option<&ModelCatalogue> {
        self.models.as_ref()
    }
}

/// An MCP server reached over streamable HTTP, handed to the agent in `session/new`.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpMcpServer {
    /// The server's name; agents name its tools `mcp__<name>__<tool>` to their model.
    pub name: String,
    pub url: String,
    /// Headers the agent sends with every request (a bearer token: kept out of `Debug`).
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for HttpMcpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("HttpMcpServer")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("headers", &names)
            .finish()
    }
}

/// How a prompt turn ended.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptOutcome {
    /// The agent's stop reason.
    pub stop_reason: StopReason,
    /// What the agent reported about the turn's cost, context and tokens.
    pub usage: UsageReport,
}

impl AgentProcess {
    /// Run one request as one fresh ACP session: `session/new` (the spec's cwd, no MCP
    /// servers), then `session/prompt` with `text` as one text block, then (on agents that
    /// can, Kiro v3) the session is deleted.
    ///
    /// Every frame of this session is sent to `events` as it arrives (see [`AgentEvent`]),
    /// each send awaited (backpressure): read `events` concurrently. Returns when the agent
    /// answers the prompt, with the usage it reported during the turn. Dropping the returned
    /// future before then sends `session/cancel` for the session (which is then not
    /// deleted). If the child dies, returns [`AcpError::Exited`] with its status and stderr
    /// tail.
    pub async fn prompt(
        &self,
        text: String,
        events: mpsc::Sender<AgentEvent>,
    ) -> Result<PromptOutcome, AcpError> {
        self.prompt_until(text, events, std::future::pending())
            .await
    }

    /// [`prompt`](Self::prompt), cancelled the ACP way when `cancel` resolves: `session/cancel`
    /// is sent and the prompt keeps waiting for the agent's answer (normally `stopReason:
    /// "cancelled"`), so the process can serve again once it has answered. Keep reading
    /// `events` until this returns; bound the wait with a timeout of your own.
    pub async fn prompt_until(
        &self,
        text: String,
        events: mpsc::Sender<AgentEvent>,
        cancel: impl std::future::Future<Output = ()>,
    ) -> Result<PromptOutcome, AcpError> {
        let session = self.new_session().await?;
        let outcome = self.prompt_in(&session, text, events, cancel).await;
        if self.is_alive()
            && let Err(error) = self.delete_session(&session).await
        {
            tracing::warn!(session_id = session.id(), %error, "could not delete the session");
        }
        outcome
    }

    /// Open a fresh ACP session (`session/new` with the spec's cwd and no MCP servers). The
    /// model catalogue it announces (if any) is kept on the session and replaces the
    /// process's ([`AgentProcess::models`]).
    pub async fn new_session(&self) -> Result<Session, AcpError> {
        self.new_session_with(&[]).await
    }

    /// [`new_session`](Self::new_session) with `mcp_servers` offered to the agent (its tools
    /// for this session; only agents that [take HTTP MCP](Self::takes_http_mcp) load them).
    pub async fn new_session_with(
        &self,
        mcp_servers: &[HttpMcpServer],
    ) -> Result<Session, AcpError> {
        if !self.is_alive() {
            return Err(self.core.death_report().await);
        }
        let servers = mcp_servers
            .iter()
            .map(|server| {
                // `headers` is always sent, even empty: some agents refuse an entry without.
                McpServer::Http(
                    McpServerHttp::new(&server.name, &server.url).headers(
                        server
                            .headers
                            .iter()
                            .map(|(name, value)| HttpHeader::new(name, value))
                            .collect(),
                    ),
                )
            })
            .collect();
        let new_session = NewSessionRequest::new(self.cwd.clone()).mcp_servers(servers);
        let reply = self
            .request("session/new", NewSessionCall(new_session))
            .await?;
        let models =
            ModelCatalogue::from_session_new(reply.models.as_ref(), reply.config_options.as_ref());
        tracing::debug!(session_id = %reply.session_id, models = models.as_ref().map(|m| m.models.len()), "session created");
        lock(&self.models).clone_from(&models);
        Ok(Session {
            id: reply.session_id,
            models,
        })
    }

    /// Choose the model of `session`: `session/set_model` on Kiro v2 (and on agents whose
    /// catalogue came as Kiro's `models`), `session/set_config_option` with the model option
    /// on Kiro v3 and agents with a `configOptions` model option.
    ///
    /// An agent with no catalogue that is not Kiro gets nothing and this returns
    /// [`AcpError::Unsupported`]; Kiro v2 takes any id (an unknown one fails at prompt time).
    /// The agent's refusal is [`AcpError::Agent`].
    pub async fn set_model(&self, session: &Session, model: &str) -> Result<(), AcpError> {
        let selector = session
            .models
            .as_ref()
            .map(|catalogue| catalogue.selector.clone())
            .or_else(|| match self.facts.engine {
                Engine::KiroV2 => Some(ModelSelector::SetModel),
                Engine::KiroV3 => Some(ModelSelector::ConfigOption("model".to_owned())),
                Engine::Other => None,
            });
        let session_id = session.id.to_string();
        let (method, params) = match selector {
            Some(ModelSelector::SetModel) => (
                "session/set_model",
                json!({ "sessionId": session_id, "modelId": model }),
            ),
            Some(ModelSelector::ConfigOption(config_id)) => (
                "session/set_config_option",
                json!({ "sessionId": session_id, "configId": config_id, "value": model }),
            ),
            None => {
                return Err(AcpError::Unsupported(format!(
                    "the agent announces no models, so model `{model}` cannot be chosen"
                )));
            }
        };
        self.extension_request(method, params).await?;
        tracing::debug!(session_id, model, method, "model chosen");
        Ok(())
    }

    /// Set a session configuration option (`session/set_config_option {sessionId, configId,
    /// value}`), e.g. Kiro v3's `autopilot` to `off` so that its built-in tools ask permission
    /// (which the [`PermissionPolicy`](crate::PermissionPolicy) then refuses). The agent's
    /// refusal (an agent without the option or the method) is [`AcpError::Agent`].
    pub async fn set_config_option(
        &self,
        session: &Session,
        config_id: &str,
        value: &str,
    ) -> Result<(), AcpError> {
        let params =
            json!({ "sessionId": session.id.to_string(), "configId": config_id, "value": value });
        self.extension_request("session/set_config_option", params)
            .await?;
        Ok(())
    }

    /// Choose the session's mode (`session/set_mode {sessionId, modeId}`); Kiro v3 lists its
    /// custom agents (`~/.kiro/agents/NAME.json`) as modes, so this runs the session as that
    /// agent. The agent's refusal (an unknown mode) is [`AcpError::Agent`].
    pub async fn set_mode(&self, session: &Session, mode_id: &str) -> Result<(), AcpError> {
        let params = json!({ "sessionId": session.id.to_string(), "modeId": mode_id });
        self.extension_request("session/set_mode", params).await?;
        tracing::debug!(session_id = session.id(), mode_id, "mode chosen");
        Ok(())
    }

    /// Delete `session` on the agent when it can (`_kiro/session/delete` on Kiro v3, or any
    /// agent announcing it): Kiro v3 persists every session under `~/.kiro/sessions`
    /// otherwise. Returns whether a delete was sent; agents without one get nothing.
    pub async fn delete_session(&self, session: &Session) -> Result<bool, AcpError> {
        if !self.facts.deletes_sessions() {
            return Ok(false);
        }
        let params = json!({ "sessionId": session.id.to_string() });
        self.extension_request(SESSION_DELETE_METHOD, params)
            .await?;
        tracing::debug!(session_id = session.id(), "session deleted");
        Ok(true)
    }

    async fn extension_request(
        &self,
        method: &'static str,
        params: Value,
    ) -> Result<Value, AcpError> {
        if !self.is_alive() {
            return Err(self.core.death_report().await);
        }
        let request = UntypedMessage::new(method, params)
            .map_err(|error| AcpError::Protocol(error.to_string()))?;
        self.request(method, request).await
    }

    /// One more turn on an existing session: the agent keeps the session's earlier turns in
    /// its context (how a truncated answer is continued). Events, usage and cancellation as
    /// in [`prompt_until`](Self::prompt_until); the session is not deleted.
    pub async fn prompt_in(
        &self,
        session: &Session,
        text: String,
        events: mpsc::Sender<AgentEvent>,
        cancel: impl std::future::Future<Output = ()>,
    ) -> Result<PromptOutcome, AcpError> {
        if !self.is_alive() {
            return Err(self.core.death_report().await);
        }
        let session_id = session.id.clone();
        let mut turn = Turn::register(&self.core.shared, &self.cx, session_id.clone(), events);
        let prompt =
            PromptRequest::new(session_id, vec![ContentBlock::Text(TextContent::new(text))]);
        let reply = self.request("session/prompt", PromptCall(prompt));
        tokio::pin!(reply);
        tokio::pin!(cancel);
        let reply = tokio::select! {
            reply = &mut reply => reply,
            () = &mut cancel => {
                turn.cancel();
                reply.await
            }
        };
        let mut usage = turn.finish();
        let reply = reply?;
        usage.tokens = reply.usage.as_ref().and_then(TokenUsage::from_wire);
        Ok(PromptOutcome {
            stop_reason: StopReason::from_wire(reply.stop_reason.as_deref().unwrap_or_default()),
            usage,
        })
    }
}
