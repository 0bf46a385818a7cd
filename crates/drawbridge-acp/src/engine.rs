//! What an agent announces about itself: which engine it is (from `initialize`) and which
//! models it can run (from `session/new`).
//!
//! - Kiro v2 names itself in `agentInfo` ("Kiro CLI Agent") and announces its models in a
//!   non-standard `models {currentModelId, availableModels: [{modelId, name, description}]}`
//!   of `session/new`; a model is chosen with `session/set_model`.
//! - Kiro v3 has no `agentInfo` but lists its `_kiro/...` extension methods under
//!   `_meta.kiro.extensionMethods`; its models are the options of the `configOptions` entry
//!   whose id is `model` (or whose category is `model`), chosen with
//!   `session/set_config_option`. Sessions are deleted with `_kiro/session/delete`.
//! - Any other agent: a standard `configOptions` model option is used the same way; without
//!   one it has no catalogue.

use agent_client_protocol::v1::schema::InitializeResponse;
use serde_json::{Map, Value};

use crate::kiro;

/// The extension method that deletes a Kiro v3 session.
pub const SESSION_DELETE_METHOD: &str = "_kiro/session/delete";

/// Which kind of agent answered `initialize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Kiro CLI, engine v2 (`kiro-cli acp`).
    KiroV2,
    /// Kiro CLI, engine v3 (`kiro-cli acp --agent-engine v3`).
    KiroV3,
    /// Any other ACP agent.
    Other,
}

/// What `initialize` told us about the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AgentFacts {
    pub(crate) engine: Engine,
    /// The extension methods the agent announced (`_meta.kiro.extensionMethods`).
    pub(crate) extension_methods: Vec<String>,
    /// Whether the agent takes HTTP MCP servers in `session/new`
    /// (`agentCapabilities.mcpCapabilities.http`).
    pub(crate) mcp_http: bool,
}

impl AgentFacts {
    pub(crate) fn from_initialize(response: &InitializeResponse) -> Self {
        let metas = [
            response.meta.as_ref(),
            response.agent_capabilities.meta.as_ref(),
        ];
        let kiro_meta = metas
            .into_iter()
            .flatten()
            .find_map(|meta| meta.get(kiro::META_KEY).and_then(Value::as_object));
        let extension_methods: Vec<String> = kiro_meta
            .and_then(|kiro| kiro.get("extensionMethods"))
            .and_then(Value::as_array)
            .map(|methods| {
                methods
                    .iter()
                    .filter_map(|method| match method {
                        Value::String(name) => Some(name.clone()),
                        Value::Object(entry) => {
                            entry.get("name").and_then(Value::as_str).map(str::to_owned)
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let named_kiro = response
            .agent_info
            .as_ref()
            .is_some_and(|info| info.name.to_ascii_lowercase().contains("kiro"));
        let engine = if kiro_meta.is_some() {
            Engine::KiroV3
        } else if named_kiro {
            Engine::KiroV2
        } else {
            Engine::Other
        };
        Self {
            engine,
            extension_methods,
            mcp_http: response.agent_capabilities.mcp_capabilities.http,
        }
    }

    /// Whether the agent deletes sessions with `_kiro/session/delete`.
    pub(crate) fn deletes_sessions(&self) -> bool {
        self.engine == Engine::KiroV3
            || self
                .extension_methods
                .iter()
                .any(|method| method == SESSION_DELETE_METHOD)
    }
}

/// One model an agent can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentModel {
    /// The id to choose it with, e.g. `claude-sonnet-4.6`.
    pub id: String,
    /// Its display name.
    pub name: Option<String>,
    /// Its description.
    pub description: Option<String>,
}

/// How a model is chosen for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSelector {
    /// `session/set_model {sessionId, modelId}` (Kiro v2).
    SetModel,
    /// `session/set_config_option {sessionId, configId, value}` with this config id (Kiro v3
    /// and standard ACP agents: `model`).
    ConfigOption(String),
}

/// The models an agent announced in `session/new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCatalogue {
    /// The session's model when it was opened (the agent's default).
    pub current: Option<String>,
    /// Every model the agent offers.
    pub models: Vec<AgentModel>,
    /// How to choose one of them.
    pub selector: ModelSelector,
}

impl ModelCatalogue {
    /// Whether `id` is one of the models.
    pub fn contains(&self, id: &str) -> bool {
        self.models.iter().any(|model| model.id == id)
    }

    /// The model ids, in the agent's order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.models.iter().map(|model| model.id.as_str())
    }

    /// The catalogue in a `session/new` result: Kiro v2's `models`, else a `configOptions`
    /// model option. `None` when the result has neither (other agents, or a cold Kiro start).
    pub(crate) fn from_session_new(
        models: Option<&Value>,
        config_options: Option<&Value>,
    ) -> Option<Self> {
        models
            .and_then(Self::from_v2_models)
            .or_else(|| config_options.and_then(Self::from_config_options))
    }

    fn from_v2_models(models: &Value) -> Option<Self> {
        let models_obj = models.as_object()?;
        let available = models_obj.get("availableModels")?.as_array()?;
        let models: Vec<AgentModel> = available
            .iter()
            .filter_map(Value::as_object)
            .filter_map(|entry| model_from(entry, "modelId"))
            .collect();
        (!models.is_empty()).then(|| Self {
            current: string_of(models_obj, "currentModelId"),
            models,
            selector: ModelSelector::SetModel,
        })
    }

    fn from_config_options(options: &Value) -> Option<Self> {
        let option = options
            .as_array()?
            .iter()
            .filter_map(Value::as_object)
            .find(|option| {
                option.get("id").and_then(Value::as_str) == Some("model")
                    || option.get("category").and_then(Value::as_str) == Some("model")
            })?;
        let config_id = option.get("id").and_then(Value::as_str)?.to_owned();
        let mut models = Vec::new();
        collect_options(option.get("options"), &mut models);
        (!models.is_empty()).then(|| Self {
            current: string_of(option, "currentValue"),
            models,
            selector: ModelSelector::ConfigOption(config_id),
        })
    }
}

/// The values of a select option, flat (`[{value, name}]`) or grouped
/// (`[{group, name, options: [...]}]`).
fn collect_options(options: Option<&Value>, into: &mut Vec<AgentModel>) {
    for entry in options
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
    {
        if entry.contains_key("value") {
            into.extend(model_from(entry, "value"));
        } else {
            collect_options(entry.get("options"), into);
        }
    }
}

fn model_from(entry: &Map<String, Value>, id_key: &str) -> Option<AgentModel> {
    Some(AgentModel {
        id: string_of(entry, id_key)?,
        name: string_of(entry, "name"),
        description: string_of(entry, "description"),
    })
}

fn string_of(object: &Map<String, Value>, key: &str) -> Option<String> {
    object.get(key).and_then(Value::as_str).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts(result: Value) -> AgentFacts {
        AgentFacts::from_initialize(&serde_json::from_value(result).unwrap())
    }

    #[test]
    fn engines_are_told_apart() {
        let v2 = facts(json!({
            "protocolVersion": 1,
            "agentInfo": { "name": "Kiro CLI Agent", "version": "2.22.0" },
        }));
        assert_eq!(v2.engine, Engine::KiroV2);
        assert!(!v2.deletes_sessions());
        let v3 = facts(json!({
            "protocolVersion": 1,
            "_meta": { "kiro": { "extensionMethods": ["_kiro/session/delete"] } },
        }));
        assert_eq!(v3.engine, Engine::KiroV3);
        assert!(v3.deletes_sessions());
        let v3_in_capabilities = facts(json!({
            "protocolVersion": 1,
            "agentCapabilities": { "_meta": { "kiro": { "extensionMethods": [] } } },
        }));
        assert_eq!(v3_in_capabilities.engine, Engine::KiroV3);
        let other = facts(json!({
            "protocolVersion": 1,
            "agentInfo": { "name": "claude-agent-acp", "version": "1" },
        }));
        assert_eq!(other.engine, Engine::Other);
        assert!(!other.deletes_sessions());
    }

    #[test]
    fn v2_models_are_read() {
        let models = json!({
            "currentModelId": "a",
            "availableModels": [
                { "modelId": "a", "name": "A", "description": "first" },
                { "modelId": "b" },
                { "name": "no id" },
            ],
        });
        let catalogue = ModelCatalogue::from_session_new(Some(&models), None).unwrap();
        assert_eq!(catalogue.current.as_deref(), Some("a"));
        assert_eq!(catalogue.ids().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(catalogue.selector, ModelSelector::SetModel);
        assert_eq!(catalogue.models[0].description.as_deref(), Some("first"));
    }

    #[test]
    fn config_option_models_are_read_flat_or_grouped() {
        let options = json!([
            { "type": "select", "id": "mode", "name": "Mode", "currentValue": "x",
              "options": [{ "value": "x", "name": "x" }] },
            { "type": "select", "id": "model", "name": "Model", "category": "model",
              "currentValue": "m1",
              "options": [
                  { "value": "m1", "name": "M1" },
                  { "group": "more", "name": "More", "options": [{ "value": "m2", "name": "M2" }] },
              ] },
        ]);
        let catalogue = ModelCatalogue::from_session_new(None, Some(&options)).unwrap();
        assert_eq!(catalogue.current.as_deref(), Some("m1"));
        assert_eq!(catalogue.ids().collect::<Vec<_>>(), ["m1", "m2"]);
        assert_eq!(
            catalogue.selector,
            ModelSelector::ConfigOption("model".to_owned())
        );
        assert!(catalogue.contains("m2"));
    }

    #[test]
    fn no_catalogue_is_none() {
        assert_eq!(ModelCatalogue::from_session_new(None, None), None);
        let cold = json!([{ "type": "select", "id": "mode", "name": "Mode", "options": [] }]);
        assert_eq!(ModelCatalogue::from_session_new(None, Some(&cold)), None);
        let empty = json!({ "currentModelId": "a", "availableModels": [] });
        assert_eq!(ModelCatalogue::from_session_new(Some(&empty), None), None);
    }
}
