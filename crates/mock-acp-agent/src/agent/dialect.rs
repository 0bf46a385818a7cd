//! The requests only a Kiro dialect answers: `session/new` in Kiro's shapes,
//! model choice (v2 `session/set_model`, v3 `session/set_config_option`), custom agents as
//! modes (`session/set_mode`) and v3's `_kiro/session/delete`. Everything else goes on to the
//! plain handlers.

use agent_client_protocol::Handled;
use serde_json::Value;

use super::*;

type Untyped = (KiroRequest, Responder<Value>);

/// The methods a Kiro dialect may answer itself.
const KIRO_METHODS: [&str; 5] = [
    "session/new",
    "session/set_model",
    "session/set_config_option",
    "session/set_mode",
    mock_kiro::SESSION_DELETE_METHOD,
];

/// A request for one of [`KIRO_METHODS`]. The dialect handler takes this rather than an
/// `UntypedMessage`, which matches every method: that made the crate copy every request's
/// params twice (once to parse, once to hand it on), the prompt text included.
#[derive(Debug, Clone)]
pub(super) struct KiroRequest {
    method: String,
    params: Value,
}

impl agent_client_protocol::JsonRpcMessage for KiroRequest {
    fn matches_method(method: &str) -> bool {
        KIRO_METHODS.contains(&method)
    }

    fn method(&self) -> &str {
        &self.method
    }

    fn to_untyped_message(&self) -> Result<UntypedMessage, agent_client_protocol::Error> {
        UntypedMessage::new(&self.method, &self.params)
    }

    fn parse_message(method: &str, params: &Value) -> Result<Self, agent_client_protocol::Error> {
        Ok(Self {
            method: method.to_owned(),
            params: params.clone(),
        })
    }
}

impl JsonRpcRequest for KiroRequest {
    type Response = Value;
}

fn invalid_params(message: impl Into<String>) -> agent_client_protocol::Error {
    agent_client_protocol::Error::invalid_params().data(message.into())
}

fn session_id_of(params: &Value) -> Result<SessionId, agent_client_protocol::Error> {
    params
        .get("sessionId")
        .and_then(Value::as_str)
        .map(SessionId::new)
        .ok_or_else(|| invalid_params("sessionId missing"))
}

impl State {
    /// Answer a Kiro-only request, or hand it on (`Handled::No`).
    pub(super) fn on_kiro_request(
        &self,
        request: KiroRequest,
        responder: Responder<Value>,
        cx: &ConnectionTo<Client>,
    ) -> Result<Handled<Untyped>, agent_client_protocol::Error> {
        // Every dialect checks the MCP servers it is given, and refuses bad ones with an ACP
        // error (the typed request would not even parse).
        if request.method == "session/new"
            && let Err(reason) =
                crate::mcp::http_servers(request.params.get("mcpServers"), !self.config.no_mcp_http)
        {
            responder.respond_with_error(invalid_params(reason))?;
            return Ok(Handled::Yes);
        }
        let Some(engine) = self.config.kiro else {
            return Ok(Handled::No {
                message: (request, responder),
                retry: false,
            });
        };
        let params = &request.params;
        let answer = match (request.method.as_str(), engine) {
            ("session/new", _) => self.new_kiro_session(engine, params, cx),
            ("session/set_model", KiroEngine::V2) => self.set_model(params),
            ("session/set_model", KiroEngine::V3) => Err(agent_client_protocol::Error::new(
                INTERNAL_ERROR,
                "Internal error".to_owned(),
            )
            .data("no persistence classification")),
            ("session/set_config_option", KiroEngine::V3) => self.set_config_option(params),
            ("session/set_mode", _) => self.set_mode(params, cx),
            (mock_kiro::SESSION_DELETE_METHOD, KiroEngine::V3) => self.delete_session(params),
            _ => {
                return Ok(Handled::No {
                    message: (request, responder),
                    retry: false,
                });
            }
        };
        match answer {
            Ok(result) => responder.respond(result)?,
            Err(error) => responder.respond_with_error(error)?,
        }
        Ok(Handled::Yes)
    }

    fn new_kiro_session(
        &self,
        engine: KiroEngine,
        params: &Value,
        cx: &ConnectionTo<Client>,
    ) -> Result<Value, agent_client_protocol::Error> {
        let cwd = params
            .get("cwd")
            .and_then(Value::as_str)
            .map(PathBuf::from)
            .ok_or_else(|| invalid_params("cwd missing"))?;
        let models = self.config.models();
        let opened = self.sessions_opened.fetch_add(1, Ordering::Relaxed);
        let catalogue = !(self.config.cold_catalogue && opened == 0);
        let session_id = mock_kiro::new_session_id(engine);
        let mut kiro = KiroSession::new(Some(engine), &models[0]);
        match engine {
            KiroEngine::V2 => {
                // `--agent NAME`: the session runs that agent, its only custom mode.
                if let Some(agent) = &self.config.agent {
                    kiro.agents.push(agent.clone());
                    kiro.set_mode(&agent.name);
                }
                if let Some(model) = &self.config.model {
                    model.clone_into(&mut kiro.model);
                }
            }
            KiroEngine::V3 => {
                // Agent files are read afresh for every session, like kiro-cli; an inline
                // agent replaces a file of the same name.
                let inline = crate::custom_agent::CustomAgent::inline(params);
                if let Some(home) = &self.config.home {
                    kiro.agents = crate::custom_agent::CustomAgent::v3_files(home);
                }
                kiro.agents
                    .retain(|file| inline.iter().all(|agent| agent.name != file.name));
                kiro.agents.extend(inline);
            }
        }
        if engine == KiroEngine::V3 {
            for (method, params) in mock_kiro::v3_session_start_notifications(&session_id) {
                cx.send_notification(UntypedMessage::new(method, params)?)?;
            }
            if let Some(home) = &self.config.home
                && let Err(error) = mock_kiro::write_session_file(home, &session_id, &cwd)
            {
                tracing::warn!(%error, "could not persist the session");
            }
        }
        let mcp_servers =
            crate::mcp::http_servers(params.get("mcpServers"), !self.config.no_mcp_http)
                .map_err(invalid_params)?;
        let result = mock_kiro::session_new_result(engine, &session_id, &kiro, &models, catalogue);
        tracing::debug!(%session_id, catalogue, "session/new");
        lock(&self.sessions).insert(
            SessionId::new(session_id),
            SessionState {
                cwd,
                turn: None,
                truncated: None,
                kiro,
                mcp_servers: mcp_servers.into(),
            },
        );
        Ok(result)
    }

    /// v2 `session/set_model`: any id is accepted; an unknown one fails at prompt time.
    fn set_model(&self, params: &Value) -> Result<Value, agent_client_protocol::Error> {
        let session_id = session_id_of(params)?;
        let model = params
            .get("modelId")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid_params("modelId missing"))?;
        let mut sessions = lock(&self.sessions);
        let session = sessions
            .get_mut(&session_id)
            .ok_or_else(|| invalid_params("unknown session"))?;
        model.clone_into(&mut session.kiro.model);
        Ok(json!({}))
    }

    /// v3 `session/set_config_option`: `model`, `mode` or `autopilot`.
    fn set_config_option(&self, params: &Value) -> Result<Value, agent_client_protocol::Error> {
        let session_id = session_id_of(params)?;
        let config_id = params.get("configId").and_then(Value::as_str);
        let value = match params.get("value") {
            Some(Value::String(value)) => value.clone(),
            Some(Value::Bool(on)) => if *on { "on" } else { "off" }.to_owned(),
            _ => return Err(invalid_params("value missing")),
        };
        let models = self.config.models();
        let mut sessions = lock(&self.sessions);
        let session = sessions
            .get_mut(&session_id)
            .ok_or_else(|| invalid_params("unknown session"))?;
        match (config_id, value.as_str()) {
            (Some("model"), model) if models.iter().any(|m| m == model) => {
                session.kiro.model = value;
            }
            (Some("mode"), mode) if session.kiro.set_mode(mode) => {}
            (Some("autopilot"), "on" | "off") => session.kiro.autopilot = value == "on",
            _ => {
                return Err(invalid_params(format!(
                    "bad option {}={value}",
                    config_id.unwrap_or_default()
                )));
            }
        }
        Ok(json!({
            "configOptions": mock_kiro::config_options(&session.kiro, &models, true),
        }))
    }

    /// `session/set_mode {sessionId, modeId}`: a built-in mode or a custom agent (an unknown
    /// id is refused). Like ACP agents, it tells the client with `current_mode_update`.
    fn set_mode(
        &self,
        params: &Value,
        cx: &ConnectionTo<Client>,
    ) -> Result<Value, agent_client_protocol::Error> {
        let session_id = session_id_of(params)?;
        let mode = params
            .get("modeId")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid_params("modeId missing"))?;
        {
            let mut sessions = lock(&self.sessions);
            let session = sessions
                .get_mut(&session_id)
                .ok_or_else(|| invalid_params("unknown session"))?;
            if !session.kiro.set_mode(mode) {
                return Err(invalid_params(format!("unknown mode `{mode}`")));
            }
        }
        tracing::debug!(%session_id, mode, "mode set");
        cx.send_notification(UntypedMessage::new(
            "session/update",
            json!({
                "sessionId": session_id.to_string(),
                "update": { "sessionUpdate": "current_mode_update", "currentModeId": mode },
            }),
        )?)?;
        Ok(json!({}))
    }

    /// v3 `_kiro/session/delete`: forget the session and remove its file (idempotent).
    fn delete_session(&self, params: &Value) -> Result<Value, agent_client_protocol::Error> {
        let session_id = session_id_of(params)?;
        lock(&self.sessions).remove(&session_id);
        if let Some(home) = &self.config.home {
            let path = mock_kiro::session_file(home, &session_id.to_string());
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => tracing::warn!(%error, "could not delete the session file"),
            }
        }
        tracing::debug!(%session_id, "session deleted");
        Ok(json!({ "success": true }))
    }
}
