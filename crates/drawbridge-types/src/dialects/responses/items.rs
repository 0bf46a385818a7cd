//! The request's input items, each read into canonical messages, and the canonical checks'
//! refusals renamed into the Responses request's terms.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::openai::{ChatMessage, ContentPart, FunctionCall, MessageContent, Role, ToolCall};

use super::request::{invalid, missing, required_str, unsupported};

/// The function calls seen so far, for checking that each output answers one.
#[derive(Debug, Default)]
pub(super) struct CallIds(std::collections::HashSet<String>);

/// Append the message(s) of one input item at `path`.
pub(super) fn read_item(
    item: &Value,
    path: &str,
    messages: &mut Vec<ChatMessage>,
    origin: &mut Vec<String>,
    calls: &mut CallIds,
) -> Result<(), ApiError> {
    let Some(item) = item.as_object() else {
        return Err(invalid(
            path,
            format!("Invalid type for '{path}': expected an object."),
        ));
    };
    let kind = match item.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        None | Some(Value::Null) if item.contains_key("role") => "message",
        None | Some(Value::Null) => return Err(missing(&format!("{path}.type"))),
        Some(_) => {
            return Err(invalid(
                format!("{path}.type"),
                format!("Invalid type for '{path}.type': expected a string."),
            ));
        }
    };
    match kind {
        "message" => {
            let role = match required_str(item, path, "role")? {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "system" => Role::System,
                "developer" => Role::Developer,
                other => {
                    return Err(unsupported(
                        format!("{path}.role"),
                        other,
                        "'user', 'assistant', 'system' and 'developer'",
                    ));
                }
            };
            let content = message_content(item.get("content"), path)?;
            messages.push(ChatMessage {
                role,
                content: Some(content),
                name: None,
                tool_calls: None,
                tool_call_id: None,
            });
            origin.push(path.to_owned());
        }
        "function_call" => {
            let call_id = required_str(item, path, "call_id")?;
            let name = required_str(item, path, "name")?;
            let arguments = match item.get("arguments") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(a)) => a.clone(),
                Some(other) => other.to_string(),
            };
            calls.0.insert(call_id.to_owned());
            let call = ToolCall {
                id: call_id.to_owned(),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: name.to_owned(),
                    arguments,
                },
            };
            // Calls right after an assistant message (or each other) are that message's.
            match messages.last_mut() {
                Some(last) if last.role == Role::Assistant => {
                    last.tool_calls.get_or_insert_default().push(call);
                }
                _ => {
                    messages.push(ChatMessage {
                        role: Role::Assistant,
                        content: None,
                        name: None,
                        tool_calls: Some(vec![call]),
                        tool_call_id: None,
                    });
                    origin.push(path.to_owned());
                }
            }
        }
        "function_call_output" => {
            let call_id = required_str(item, path, "call_id")?;
            if !calls.0.contains(call_id) {
                return Err(invalid(
                    format!("{path}.call_id"),
                    format!("No tool call found for function call output with call_id {call_id}."),
                ));
            }
            let output = match item.get("output") {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n\n"),
                None | Some(Value::Null) => return Err(missing(&format!("{path}.output"))),
                Some(other) => other.to_string(),
            };
            messages.push(ChatMessage {
                role: Role::Tool,
                content: Some(MessageContent::Text(output)),
                name: None,
                tool_calls: None,
                tool_call_id: Some(call_id.to_owned()),
            });
            origin.push(path.to_owned());
        }
        // The model's reasoning is the client's transcript, not something to send back.
        "reasoning" => {}
        other => {
            return Err(unsupported(
                format!("{path}.type"),
                other,
                "'message', 'function_call', 'function_call_output' and 'reasoning'",
            ));
        }
    }
    Ok(())
}

/// A message item's `content`: a string, or text parts (`input_text`, `output_text`,
/// `refusal`) and `input_image` parts with an `image_url` (a canonical `image_url` part, which
/// only provider accounts take). Files and images by `file_id` are a 400.
pub(super) fn message_content(
    content: Option<&Value>,
    path: &str,
) -> Result<MessageContent, ApiError> {
    let parts = match content {
        Some(Value::String(text)) => return Ok(MessageContent::Text(text.clone())),
        Some(Value::Array(parts)) => parts,
        None | Some(Value::Null) => return Err(missing(&format!("{path}.content"))),
        Some(_) => {
            return Err(invalid(
                format!("{path}.content"),
                format!("Invalid type for '{path}.content': expected a string or an array."),
            ));
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let part_path = format!("{path}.content[{j}]");
        let Some(part) = part.as_object() else {
            return Err(invalid(
                &part_path,
                format!("Invalid type for '{part_path}': expected an object."),
            ));
        };
        let kind = required_str(part, &part_path, "type")?;
        if kind == "input_image" {
            let url = required_str(part, &part_path, "image_url")?;
            let mut extra = Map::new();
            extra.insert("image_url".to_owned(), serde_json::json!({ "url": url }));
            out.push(ContentPart {
                kind: "image_url".to_owned(),
                text: None,
                extra,
            });
            continue;
        }
        let field = match kind {
            "input_text" | "output_text" | "text" => "text",
            "refusal" => "refusal",
            other => {
                return Err(invalid(
                    format!("{part_path}.type"),
                    format!(
                        "Content of type '{other}' is not supported here; send 'input_text' \
                         parts."
                    ),
                ));
            }
        };
        out.push(ContentPart {
            kind: "text".to_owned(),
            text: Some(required_str(part, &part_path, field)?.to_owned()),
            extra: Map::new(),
        });
    }
    Ok(MessageContent::Parts(out))
}

/// A refusal of the canonical checks, its `param` in the Responses request's terms:
/// `messages[k]` becomes the item it came from, `tools[k].function.x` becomes `tools[i].x`,
/// `response_format.json_schema.x` becomes `text.format.x`.
pub(super) fn rename_param(
    mut error: ApiError,
    origin: &[String],
    tool_origin: &[usize],
) -> ApiError {
    let Some(param) = error.param.take() else {
        return error;
    };
    let indexed = |rest: &str| -> Option<(usize, String)> {
        let (index, tail) = rest.split_once(']')?;
        Some((index.parse().ok()?, tail.to_owned()))
    };
    let renamed = if let Some((k, tail)) = param.strip_prefix("messages[").and_then(indexed) {
        let tail = tail.replace(".tool_call_id", ".call_id");
        origin.get(k).map(|path| format!("{path}{tail}"))
    } else if let Some((k, tail)) = param.strip_prefix("tools[").and_then(indexed) {
        let tail = tail.replacen(".function", "", 1);
        tool_origin.get(k).map(|i| format!("tools[{i}]{tail}"))
    } else if let Some(tail) = param.strip_prefix("response_format.json_schema") {
        Some(format!("text.format{tail}"))
    } else {
        param
            .strip_prefix("response_format")
            .map(|tail| format!("text.format{tail}"))
    };
    error.param = Some(renamed.unwrap_or(param));
    error
}
