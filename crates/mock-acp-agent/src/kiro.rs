//! The two Kiro CLI 2.22 dialects the mock speaks with `--kiro-engine v2|v3`, shaped like the
//! recorded wire traffic of `kiro-cli acp` (engine v2, the default, and `--agent-engine v3`).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::{Value, json};

use crate::custom_agent::CustomAgent;

/// Which Kiro engine the mock imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KiroEngine {
    /// `kiro-cli acp` (engine v2): `agentInfo`, `models` in `session/new`, `session/set_model`,
    /// metering in `_kiro.dev/metadata`.
    V2,
    /// `kiro-cli acp --agent-engine v3`: no `agentInfo`, `configOptions` (model, mode,
    /// autopilot), `session/set_config_option`, sessions on disk and `_kiro/session/delete`,
    /// metering in `session_info_update`.
    V3,
}

impl FromStr for KiroEngine {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim() {
            "v2" => Ok(Self::V2),
            "v3" => Ok(Self::V3),
            other => Err(format!("unknown Kiro engine `{other}` (v2 or v3)")),
        }
    }
}

/// The model catalogue when none is configured; the first is the default.
pub const DEFAULT_MODELS: [&str; 5] = [
    "claude-sonnet-5",
    "claude-sonnet-4.6",
    "claude-opus-4.8",
    "gpt-5.6-luna",
    "claude-haiku-4.5",
];

/// The extension method that deletes a v3 session.
pub const SESSION_DELETE_METHOD: &str = "_kiro/session/delete";
/// The v3 request for an access token the client is asked to answer without
/// `--auth-method cli`.
pub const GET_ACCESS_TOKEN_METHOD: &str = "_kiro/auth/getAccessToken";
/// The extension methods a v3 agent announces in `initialize`.
const V3_EXTENSION_METHODS: [&str; 6] = [
    SESSION_DELETE_METHOD,
    "_kiro/session/history",
    "_kiro/session/rename",
    "_kiro/config/template",
    "_kiro/mcp/resetServer",
    "_kiro/checkpoint/revert",
];
/// The built-in modes; custom agents are offered after them.
const MODES: [&str; 2] = ["kiro_default", "kiro_planner"];

/// What the dialect needs to know about one session.
#[derive(Debug, Clone)]
pub(crate) struct KiroSession {
    pub(crate) model: String,
    pub(crate) mode: String,
    /// v3 `autopilot`: built-in tools run without asking.
    pub(crate) autopilot: bool,
    /// The custom agents offered as modes (v3: agent files and inline agents; v2: the
    /// `--agent` one).
    pub(crate) agents: Vec<CustomAgent>,
    /// The custom agent in force (`--agent`, or the mode chosen), if any.
    pub(crate) agent: Option<CustomAgent>,
}

impl KiroSession {
    pub(crate) fn new(engine: Option<KiroEngine>, default_model: &str) -> Self {
        Self {
            model: default_model.to_owned(),
            mode: MODES[0].to_owned(),
            autopilot: engine == Some(KiroEngine::V3),
            agents: Vec::new(),
            agent: None,
        }
    }

    /// Every mode id of the session: the built-in ones, then the custom agents.
    pub(crate) fn mode_ids(&self) -> impl Iterator<Item = &str> {
        MODES
            .iter()
            .copied()
            .chain(self.agents.iter().map(|agent| agent.name.as_str()))
    }

    /// Switch to mode `id` (a built-in mode or a custom agent); `false` for an unknown id.
    pub(crate) fn set_mode(&mut self, id: &str) -> bool {
        if MODES.contains(&id) {
            self.agent = None;
        } else if let Some(agent) = self.agents.iter().find(|agent| agent.name == id) {
            self.agent = Some(agent.clone());
        } else {
            return false;
        }
        id.clone_into(&mut self.mode);
        true
    }

    /// Whether the agent in force has no tools.
    pub(crate) fn tool_less(&self) -> bool {
        self.agent.as_ref().is_some_and(CustomAgent::tool_less)
    }

    fn available_modes(&self) -> Vec<Value> {
        MODES
            .iter()
            .map(|m| json!({ "id": m, "name": m }))
            .chain(self.agents.iter().map(|agent| {
                let mut mode = json!({ "id": agent.name, "name": agent.name });
                if let Some(description) = &agent.description {
                    mode["description"] = json!(description);
                }
                mode
            }))
            .collect()
    }
}

/// The `initialize` result.
pub(crate) fn initialize_result(engine: KiroEngine) -> Value {
    match engine {
        KiroEngine::V2 => json!({
            "protocolVersion": 1,
            "agentCapabilities": {
                "loadSession": true,
                "promptCapabilities": { "image": true, "audio": false, "embeddedContext": false },
                "mcpCapabilities": { "http": true, "sse": false },
            },
            "authMethods": [],
            "agentInfo": { "name": "Kiro CLI Agent", "title": "Kiro CLI Agent", "version": "2.22.0" },
        }),
        KiroEngine::V3 => json!({
            "protocolVersion": 1,
            "agentCapabilities": {
                "loadSession": true,
                "promptCapabilities": { "image": true, "audio": false, "embeddedContext": true },
                "mcpCapabilities": { "http": true, "sse": true },
                "sessionCapabilities": { "list": {}, "fork": {} },
            },
            "authMethods": [
                { "id": "aws-builder-id", "name": "AWS Builder ID" },
                { "id": "aws-iam-identity-center", "name": "AWS IAM Identity Center" },
            ],
            "_meta": { "kiro": { "extensionMethods": V3_EXTENSION_METHODS } },
        }),
    }
}

/// A new session id in the engine's shape (v3: `sess_<uuid>`).
pub(crate) fn new_session_id(engine: KiroEngine) -> String {
    let uuid = uuid::Uuid::new_v4();
    match engine {
        KiroEngine::V2 => uuid.to_string(),
        KiroEngine::V3 => format!("sess_{uuid}"),
    }
}

/// The `session/new` result; without `catalogue` (a cold first session) the models are left
/// out.
pub(crate) fn session_new_result(
    engine: KiroEngine,
    session_id: &str,
    session: &KiroSession,
    models: &[String],
    catalogue: bool,
) -> Value {
    let modes = json!({
        "currentModeId": session.mode,
        "availableModes": session.available_modes(),
    });
    match engine {
        KiroEngine::V2 => {
            let mut result = json!({ "sessionId": session_id, "modes": modes });
            if catalogue {
                result["models"] = json!({
                    "currentModelId": session.model,
                    "availableModels": models.iter().map(|m| json!({
                        "modelId": m,
                        "name": m,
                        "description": format!("{m} (mock)"),
                    })).collect::<Vec<_>>(),
                });
            }
            result
        }
        KiroEngine::V3 => json!({
            "sessionId": session_id,
            "modes": modes,
            "configOptions": config_options(session, models, catalogue),
            "_meta": { "kiro": { "sessionSource": "cli" } },
        }),
    }
}

/// The v3 `configOptions`: model (when the catalogue is known), mode, autopilot.
pub(crate) fn config_options(session: &KiroSession, models: &[String], catalogue: bool) -> Value {
    let mut options = Vec::new();
    if catalogue {
        options.push(json!({
            "type": "select",
            "id": "model",
            "name": "Model",
            "category": "model",
            "currentValue": session.model,
            "options": models.iter().map(|m| json!({
                "value": m,
                "name": m,
                "description": format!("{m} (mock)"),
            })).collect::<Vec<_>>(),
        }));
    }
    options.push(json!({
        "type": "select",
        "id": "mode",
        "name": "Mode",
        "category": "mode",
        "currentValue": session.mode,
        "options": session.mode_ids().map(|m| json!({ "value": m, "name": m })).collect::<Vec<_>>(),
    }));
    options.push(json!({
        "type": "select",
        "id": "autopilot",
        "name": "Autopilot",
        "currentValue": if session.autopilot { "on" } else { "off" },
        "options": [{ "value": "on", "name": "On" }, { "value": "off", "name": "Off" }],
    }));
    Value::Array(options)
}

/// The extension notifications v3 sends before answering `session/new` (method, params).
pub(crate) fn v3_session_start_notifications(session_id: &str) -> Vec<(&'static str, Value)> {
    vec![
        (
            "_kiro/mcp/status",
            json!({ "sessionId": session_id, "servers": [] }),
        ),
        (
            "_kiro/governance/state",
            json!({ "sessionId": session_id, "mcpEnabled": true }),
        ),
        (
            "_kiro/tools/didChange",
            json!({ "sessionId": session_id, "tools": ["shell", "fs_read", "fs_write", "web_fetch"] }),
        ),
        ("_kiro/powers/items_changed", json!({ "items": [] })),
        (
            "_kiro/steering/documents_changed",
            json!({ "documents": [] }),
        ),
        (
            "session/update",
            json!({
                "sessionId": session_id,
                "update": { "sessionUpdate": "available_commands_update", "availableCommands": [] },
            }),
        ),
    ]
}

/// Where a v3 session is persisted under `home`.
pub(crate) fn session_file(home: &Path, session_id: &str) -> PathBuf {
    home.join(".kiro")
        .join("sessions")
        .join(format!("{session_id}.json"))
}

/// Persist a v3 session like kiro-cli does (one file per session).
pub(crate) fn write_session_file(home: &Path, session_id: &str, cwd: &Path) -> std::io::Result<()> {
    let path = session_file(home, session_id);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let record = json!({ "sessionId": session_id, "cwd": cwd.display().to_string() });
    std::fs::write(path, record.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_parse() {
        assert_eq!("v2".parse::<KiroEngine>(), Ok(KiroEngine::V2));
        assert_eq!(" v3".parse::<KiroEngine>(), Ok(KiroEngine::V3));
        assert!("v4".parse::<KiroEngine>().is_err());
    }

    #[test]
    fn a_cold_session_lacks_the_catalogue() {
        let models = vec!["a".to_owned(), "b".to_owned()];
        let session = KiroSession::new(Some(KiroEngine::V3), "a");
        let warm = session_new_result(KiroEngine::V3, "sess_1", &session, &models, true);
        let cold = session_new_result(KiroEngine::V3, "sess_1", &session, &models, false);
        assert_eq!(warm["configOptions"][0]["id"], "model");
        assert_eq!(warm["configOptions"][0]["options"][1]["value"], "b");
        assert!(
            cold["configOptions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|o| o["id"] != "model")
        );
        let v2 = session_new_result(KiroEngine::V2, "s", &session, &models, true);
        assert_eq!(v2["models"]["currentModelId"], "a");
        let v2_cold = session_new_result(KiroEngine::V2, "s", &session, &models, false);
        assert!(v2_cold.get("models").is_none());
    }
}
