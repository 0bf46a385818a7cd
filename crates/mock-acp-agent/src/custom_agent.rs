//! Kiro custom agents: `$HOME/.kiro/agents/NAME.json` files (chosen with `--agent NAME` on
//! v2, offered as session modes on v3) and v3's inline agents in `session/new`
//! `_meta.kiro.customAgents`. The mock only needs to know whether an agent has tools: a
//! tool-less agent (`"tools": []`, or only MCP servers' `@server` entries) answers built-in
//! tool directives in text instead.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// One custom agent, from a file or inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomAgent {
    /// Its name (a file's `name`, else the file name; an inline agent's `id`): the v3 mode id.
    pub name: String,
    /// What it says it is for.
    pub description: Option<String>,
    /// Its system prompt.
    pub prompt: Option<String>,
    /// Its tools; `Some(empty)` is a tool-less agent, `None` (no `tools` key) keeps the
    /// built-in ones.
    pub tools: Option<Vec<String>>,
}

/// Why an agent file could not be used.
#[derive(thiserror::Error, Debug)]
pub enum AgentFileError {
    /// The file is missing or unreadable.
    #[error("cannot read agent file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What reading said.
        source: std::io::Error,
    },
    /// The file is not a JSON object.
    #[error("agent file {path} is not a JSON object: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What parsing said.
        reason: String,
    },
}

impl CustomAgent {
    /// Whether the agent has no built-in tools: `"tools": []`, or only MCP servers' tools
    /// (`@server`, `@server/tool`; `@builtin` names the built-in ones).
    pub fn tool_less(&self) -> bool {
        self.tools.as_ref().is_some_and(|tools| {
            tools
                .iter()
                .all(|tool| tool.starts_with('@') && tool != "@builtin")
        })
    }

    /// An agent from its JSON (a file's body or an inline entry); `fallback_name` when it
    /// names itself neither by `name` nor by `id`.
    fn from_json(value: &Value, fallback_name: &str) -> Option<Self> {
        let object = value.as_object()?;
        let text = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_owned);
        let name = text("name")
            .or_else(|| text("id"))
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| fallback_name.to_owned());
        let tools = object.get("tools").and_then(Value::as_array).map(|tools| {
            tools
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        });
        Some(Self {
            name,
            description: text("description"),
            prompt: text("prompt"),
            tools,
        })
    }

    /// Where the agent file `name` lives under `home`.
    pub fn file(home: &Path, name: &str) -> PathBuf {
        agents_dir(home).join(format!("{name}.json"))
    }

    /// Load the agent file `name` (what v2's `--agent NAME` does).
    pub fn load(home: &Path, name: &str) -> Result<Self, AgentFileError> {
        let path = Self::file(home, name);
        let body = std::fs::read_to_string(&path).map_err(|source| AgentFileError::Read {
            path: path.clone(),
            source,
        })?;
        let value: Value = serde_json::from_str(&body).map_err(|error| AgentFileError::Parse {
            path: path.clone(),
            reason: error.to_string(),
        })?;
        Self::from_json(&value, name).ok_or_else(|| AgentFileError::Parse {
            path,
            reason: "not an object".to_owned(),
        })
    }

    /// The agent files v3 offers as modes: every readable `*.json` object under
    /// `home/.kiro/agents`, sorted by name, except those with `"allowedTools": []` (which v3
    /// silently drops).
    pub fn v3_files(home: &Path) -> Vec<Self> {
        let Ok(entries) = std::fs::read_dir(agents_dir(home)) else {
            return Vec::new();
        };
        let mut agents: Vec<Self> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .filter_map(|path| {
                let value: Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
                let dropped = value
                    .get("allowedTools")
                    .and_then(Value::as_array)
                    .is_some_and(Vec::is_empty);
                if dropped {
                    return None;
                }
                let stem = path.file_stem()?.to_string_lossy().into_owned();
                Self::from_json(&value, &stem)
            })
            .collect();
        agents.sort_by(|a, b| a.name.cmp(&b.name));
        agents.dedup_by(|a, b| a.name == b.name);
        agents
    }

    /// The inline agents of a v3 `session/new` (`_meta.kiro.customAgents: [{id, prompt, tools,
    /// description?}]`); entries without an `id` are skipped.
    pub fn inline(params: &Value) -> Vec<Self> {
        params
            .pointer("/_meta/kiro/customAgents")
            .and_then(Value::as_array)
            .map(|agents| {
                agents
                    .iter()
                    .filter(|agent| agent.get("id").and_then(Value::as_str).is_some())
                    .filter_map(|agent| Self::from_json(agent, ""))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn agents_dir(home: &Path) -> PathBuf {
    home.join(".kiro").join("agents")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn files_are_listed_except_those_v3_drops() {
        let home = tempfile::tempdir().unwrap();
        let dir = agents_dir(home.path());
        std::fs::create_dir_all(&dir).unwrap();
        let write = |file: &str, body: Value| std::fs::write(dir.join(file), body.to_string());
        write(
            "quiet.json",
            json!({"name": "quiet", "prompt": "p", "tools": ["@drawbridge"], "mcpServers": {}}),
        )
        .unwrap();
        write(
            "dropped.json",
            json!({"name": "dropped", "allowedTools": []}),
        )
        .unwrap();
        write("busy.json", json!({"name": "busy", "tools": ["shell"]})).unwrap();
        std::fs::write(dir.join("broken.json"), "{").unwrap();
        std::fs::write(dir.join("notes.txt"), "{}").unwrap();
        let agents = CustomAgent::v3_files(home.path());
        let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["busy", "quiet"]);
        assert!(agents[1].tool_less());
        assert!(!agents[0].tool_less());
        assert!(CustomAgent::load(home.path(), "quiet").unwrap().tool_less());
        assert!(matches!(
            CustomAgent::load(home.path(), "absent"),
            Err(AgentFileError::Read { .. })
        ));
        assert!(matches!(
            CustomAgent::load(home.path(), "broken"),
            Err(AgentFileError::Parse { .. })
        ));
    }

    #[test]
    fn inline_agents_come_from_the_meta() {
        let params = json!({"cwd": "/", "_meta": {"kiro": {"customAgents": [
            {"id": "inline-quiet", "prompt": "p", "tools": []},
            {"prompt": "no id"},
        ]}}});
        let agents = CustomAgent::inline(&params);
        assert_eq!(agents.len(), 1);
        assert_eq!(agents[0].name, "inline-quiet");
        assert!(agents[0].tool_less());
        assert!(CustomAgent::inline(&json!({"cwd": "/"})).is_empty());
    }
}
