//! Client tools (OpenAI function calling): the tools a request offers, how the model may use
//! them, and the ids of the calls a live session holds.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// One entry of `tools`. Only `function` tools exist in the chat API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

impl Tool {
    pub fn function(name: impl Into<String>, description: &str, parameters: Value) -> Self {
        Tool {
            kind: "function".to_owned(),
            function: FunctionDef {
                name: name.into(),
                description: Some(description.to_owned()),
                parameters: Some(parameters),
                strict: None,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema object; absent means "no parameters".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `tool_choice`: `"none"`, `"auto"`, `"required"`, or `{"type":"function","function":{"name"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    None,
    #[default]
    Auto,
    Required,
    Function(String),
}

impl ToolChoice {
    /// Whether the model must call a tool (`required` or a named function).
    pub fn forces_call(&self) -> bool {
        matches!(self, ToolChoice::Required | ToolChoice::Function(_))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ToolChoiceWire {
    Mode(String),
    Named {
        #[serde(rename = "type")]
        kind: String,
        function: NamedFunction,
    },
}

#[derive(Serialize, Deserialize)]
struct NamedFunction {
    name: String,
}

impl Serialize for ToolChoice {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let wire = match self {
            ToolChoice::None => ToolChoiceWire::Mode("none".to_owned()),
            ToolChoice::Auto => ToolChoiceWire::Mode("auto".to_owned()),
            ToolChoice::Required => ToolChoiceWire::Mode("required".to_owned()),
            ToolChoice::Function(name) => ToolChoiceWire::Named {
                kind: "function".to_owned(),
                function: NamedFunction { name: name.clone() },
            },
        };
        wire.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ToolChoice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let wire = ToolChoiceWire::deserialize(deserializer).map_err(|_| {
            D::Error::custom(
                "expected \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}",
            )
        })?;
        match wire {
            ToolChoiceWire::Mode(mode) => match mode.as_str() {
                "none" => Ok(ToolChoice::None),
                "auto" => Ok(ToolChoice::Auto),
                "required" => Ok(ToolChoice::Required),
                other => Err(D::Error::custom(format!(
                    "unknown tool_choice '{other}'; expected none, auto or required"
                ))),
            },
            ToolChoiceWire::Named { kind, function } if kind == "function" => {
                Ok(ToolChoice::Function(function.name))
            }
            ToolChoiceWire::Named { kind, .. } => Err(D::Error::custom(format!(
                "unknown tool_choice type '{kind}'; expected function"
            ))),
        }
    }
}

/// The prefix of every tool-call id Drawbridge issues.
const CALL_PREFIX: &str = "call_";
/// The length of a live session id: 32 lowercase hex digits (128 random bits).
pub const LIVE_ID_LEN: usize = 32;

/// A fresh live-session id.
pub fn new_live_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The id of the `n`th tool call a live session holds: `call_<live id>_<n>`. The client sends
/// it back with the call's result; [`live_session_of`] finds the session from it.
pub fn live_call_id(live: &str, n: usize) -> String {
    format!("{CALL_PREFIX}{live}_{n}")
}

/// The live session a tool-call id issued by [`live_call_id`] belongs to; `None` for any other
/// id (a client's own, another provider's).
pub fn live_session_of(call_id: &str) -> Option<&str> {
    let rest = call_id.strip_prefix(CALL_PREFIX)?;
    let (live, n) = rest.split_once('_')?;
    let well_formed = live.len() == LIVE_ID_LEN
        && live
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit());
    well_formed.then_some(live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_choice_reads_and_writes_the_openai_shapes() {
        for (wire, choice) in [
            (json!("none"), ToolChoice::None),
            (json!("auto"), ToolChoice::Auto),
            (json!("required"), ToolChoice::Required),
            (
                json!({"type": "function", "function": {"name": "f"}}),
                ToolChoice::Function("f".into()),
            ),
        ] {
            let read: ToolChoice = serde_json::from_value(wire.clone()).unwrap();
            assert_eq!(read, choice);
            assert_eq!(serde_json::to_value(&read).unwrap(), wire);
        }
        for bad in [
            json!("sometimes"),
            json!(3),
            json!({"type": "web", "function": {"name": "f"}}),
        ] {
            assert!(
                serde_json::from_value::<ToolChoice>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        assert!(ToolChoice::Required.forces_call());
        assert!(!ToolChoice::Auto.forces_call());
    }

    #[test]
    fn live_call_ids_name_their_session() {
        let live = new_live_id();
        assert_eq!(live.len(), LIVE_ID_LEN);
        let id = live_call_id(&live, 3);
        assert_eq!(live_session_of(&id), Some(live.as_str()));
        for foreign in [
            "call_abc",
            "call_123_4",
            "toolu_01",
            "",
            &format!("call_{live}_"),
            &format!("call_{live}_x"),
            &format!("call_{}_1", live.to_uppercase()),
        ] {
            assert_eq!(live_session_of(foreign), None, "{foreign}");
        }
    }
}
