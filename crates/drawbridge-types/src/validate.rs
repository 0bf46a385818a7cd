//! The request checks OpenAI makes that serde cannot express: tools and `tool_choice`, the
//! pairing of tool calls with their results, `response_format`, and the ranges of the sampling
//! parameters. Each failure is a 400 whose `param` names the field the way OpenAI does
//! (`tools[0].function.name`, `messages[3].tool_call_id`, `temperature`), with OpenAI's wording
//! where it has one.
//!
//! Deliberate differences from OpenAI, in the lenient direction (a request OpenAI accepts is
//! never refused here):
//! - `parallel_tool_calls` without `tools` is accepted and ignored. OpenAI answers 400, but the
//!   field means nothing without tools and some client libraries send it on every request.
//! - An assistant message with `tool_calls: []` is taken as one without calls.
//! - A `tool` message may answer a call of any earlier assistant message, and `system` or
//!   `developer` messages may sit between an assistant's calls and their results; only a `user`
//!   or `assistant` message (or the end of the conversation) closes the wait for results.
//! - Unparsable JSON in a call's `arguments` is kept as a string, as OpenAI does.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::openai::{ChatCompletionRequest, ChatMessage, Role, role_name};
use crate::tools::{Tool, ToolChoice};

/// At most this many tools per request.
pub(crate) const MAX_TOOLS: usize = 128;
/// A function name is 1 to this many characters of `[A-Za-z0-9_-]`.
pub(crate) const MAX_NAME_LEN: usize = 64;
/// At most this many stop sequences.
pub(crate) const MAX_STOP: usize = 4;

fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::invalid_request(message).with_param(param)
}

fn missing(param: &str) -> ApiError {
    invalid(param, format!("Missing required parameter: '{param}'."))
}

/// How OpenAI names a JSON value's type in its messages.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(param: &str, expected: &str, got: &Value) -> ApiError {
    invalid(
        param,
        format!(
            "Invalid type for '{param}': expected {expected}, but got {} instead.",
            type_name(got)
        ),
    )
}

/// Why `name` is not a valid function name (1–64 characters of `[A-Za-z0-9_-]`), if it is not.
fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some(
            "empty string. Expected a string with minimum length 1, but got an empty string \
             instead."
                .to_owned(),
        );
    }
    let len = name.chars().count();
    if len > MAX_NAME_LEN {
        return Some(format!(
            "string too long. Expected a string with maximum length {MAX_NAME_LEN}, but got a \
             string with length {len} instead."
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Some(
            "string does not match pattern. Expected a string that matches the pattern \
             '^[a-zA-Z0-9_-]+$'."
                .to_owned(),
        );
    }
    None
}

fn check_name(param: &str, name: &str) -> Result<(), ApiError> {
    match name_problem(name) {
        Some(problem) => Err(invalid(param, format!("Invalid '{param}': {problem}"))),
        None => Ok(()),
    }
}

/// `tools`: a non-empty list of at most [`MAX_TOOLS`] function tools with valid, unique names
/// and object `parameters`.
pub(crate) fn tools(tools: Option<&[Tool]>) -> Result<(), ApiError> {
    let Some(tools) = tools else {
        return Ok(());
    };
    if tools.is_empty() {
        return Err(invalid(
            "tools",
            "Invalid 'tools': empty array. Expected an array with minimum length 1, but got an \
             empty array instead.",
        ));
    }
    if tools.len() > MAX_TOOLS {
        return Err(invalid(
            "tools",
            format!(
                "Invalid 'tools': array too long. Expected an array with maximum length \
                 {MAX_TOOLS}, but got an array with length {} instead.",
                tools.len()
            ),
        ));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, tool) in tools.iter().enumerate() {
        if tool.kind != "function" {
            return Err(invalid(
                format!("tools[{i}].type"),
                format!(
                    "Invalid value: '{}'. Supported values are: 'function'.",
                    tool.kind
                ),
            ));
        }
        let name = tool.function.name.as_str();
        check_name(&format!("tools[{i}].function.name"), name)?;
        if let Some(first) = seen.insert(name, i) {
            return Err(invalid(
                format!("tools[{i}].function.name"),
                format!(
                    "Invalid 'tools[{i}].function.name': the function name '{name}' is already \
                     used by tools[{first}]; function names must be unique."
                ),
            ));
        }
        if let Some(parameters) = &tool.function.parameters
            && !parameters.is_object()
        {
            return Err(wrong_type(
                &format!("tools[{i}].function.parameters"),
                "an object",
                parameters,
            ));
        }
    }
    Ok(())
}

/// `tool_choice`: only with `tools` (but `"none"`), and a named function must be one of them.
pub(crate) fn tool_choice(
    tools: Option<&[Tool]>,
    choice: Option<&ToolChoice>,
) -> Result<(), ApiError> {
    let Some(choice) = choice else {
        return Ok(());
    };
    if *choice == ToolChoice::None {
        return Ok(());
    }
    let Some(tools) = tools else {
        return Err(invalid(
            "tool_choice",
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are \
             specified.",
        ));
    };
    if let ToolChoice::Function(name) = choice
        && !tools.iter().any(|tool| tool.function.name == *name)
    {
        return Err(invalid(
            "tool_choice",
            format!(
                "Invalid value for 'tool_choice': no function named '{name}' was specified in \
                 the 'tools' parameter."
            ),
        ));
    }
    Ok(())
}

/// The tool calls of the conversation: each assistant call well formed (a non-empty id unique in
/// its message, type `function`, a function name), each `tool` message answering an earlier
/// call, and each call answered before the next `user` or `assistant` message.
pub(crate) fn conversation(messages: &[ChatMessage]) -> Result<(), ApiError> {
    // Every call id issued so far.
    let mut issued: HashSet<&str> = HashSet::new();
    // The last assistant message with calls, and its calls not answered yet (in call order).
    let mut waiting: Option<(usize, Vec<&str>)> = None;
    for (i, message) in messages.iter().enumerate() {
        let calls = message.tool_calls.as_deref().unwrap_or_default();
        if !calls.is_empty() && message.role != Role::Assistant {
            return Err(invalid(
                format!("messages[{i}].tool_calls"),
                format!(
                    "Invalid parameter: 'tool_calls' is only allowed on messages with role \
                     'assistant', not '{}'.",
                    role_name(message.role)
                ),
            ));
        }
        match message.role {
            Role::User | Role::Assistant => {
                unanswered(waiting.take())?;
                if message.role == Role::Assistant && !calls.is_empty() {
                    let ids = assistant_calls(i, message)?;
                    issued.extend(ids.iter().copied());
                    waiting = Some((i, ids));
                }
            }
            Role::Tool => {
                let param = format!("messages[{i}].tool_call_id");
                let id = match message.tool_call_id.as_deref() {
                    None | Some("") => return Err(missing(&param)),
                    Some(id) => id,
                };
                if !issued.contains(id) {
                    return Err(invalid(
                        &param,
                        format!(
                            "Invalid parameter: '{param}' is '{id}', which is not the id of a \
                             tool call of an earlier assistant message. Messages with role \
                             'tool' must be a response to a preceding message with \
                             'tool_calls'."
                        ),
                    ));
                }
                if let Some((_, ids)) = &mut waiting {
                    ids.retain(|pending| *pending != id);
                }
            }
            Role::System | Role::Developer | Role::Function => {}
        }
    }
    unanswered(waiting)
}

/// The ids of an assistant message's calls, each checked.
fn assistant_calls(i: usize, message: &ChatMessage) -> Result<Vec<&str>, ApiError> {
    let calls = message.tool_calls.as_deref().unwrap_or_default();
    let mut ids: Vec<&str> = Vec::with_capacity(calls.len());
    let mut unique: HashSet<&str> = HashSet::with_capacity(calls.len());
    for (j, call) in calls.iter().enumerate() {
        let param = |field: &str| format!("messages[{i}].tool_calls[{j}].{field}");
        if call.id.is_empty() {
            return Err(missing(&param("id")));
        }
        if !unique.insert(&call.id) {
            return Err(invalid(
                param("id"),
                format!(
                    "Invalid '{}': the id '{}' is used by another call of the same message; \
                     tool call ids must be unique.",
                    param("id"),
                    call.id
                ),
            ));
        }
        if call.kind != "function" {
            return Err(invalid(
                param("type"),
                format!(
                    "Invalid value: '{}'. Supported values are: 'function'.",
                    call.kind
                ),
            ));
        }
        if call.function.name.is_empty() {
            return Err(missing(&param("function.name")));
        }
        ids.push(&call.id);
    }
    Ok(ids)
}

/// The error for an assistant message whose calls were not all answered.
fn unanswered(waiting: Option<(usize, Vec<&str>)>) -> Result<(), ApiError> {
    match waiting {
        Some((index, ids)) if !ids.is_empty() => Err(invalid(
            format!("messages[{index}]"),
            format!(
                "An assistant message with 'tool_calls' must be followed by tool messages \
                 responding to each 'tool_call_id'. The following tool_call_ids did not have \
                 response messages: {}",
                ids.join(", ")
            ),
        )),
        _ => Ok(()),
    }
}

/// The typed output limits: at least one token.
pub(crate) fn limits(request: &ChatCompletionRequest) -> Result<(), ApiError> {
    for (param, value) in [
        ("max_tokens", request.max_tokens),
        ("max_completion_tokens", request.max_completion_tokens),
    ] {
        if value == Some(0) {
            return Err(invalid(
                param,
                format!(
                    "Invalid '{param}': integer below minimum value. Expected a value >= 1, but \
                     got 0 instead."
                ),
            ));
        }
    }
    Ok(())
}

/// The untyped fields Drawbridge forwards in `extra`: sampling ranges, `stop` and
/// `response_format`. `null` is the same as absent, as in OpenAI.
pub(crate) fn extra(extra: &Map<String, Value>) -> Result<(), ApiError> {
    let present = |key: &str| extra.get(key).filter(|v| !v.is_null());
    for (param, min, max) in [
        ("temperature", 0.0, 2.0),
        ("top_p", 0.0, 1.0),
        ("presence_penalty", -2.0, 2.0),
        ("frequency_penalty", -2.0, 2.0),
    ] {
        if let Some(value) = present(param) {
            number_in(param, value, min, max)?;
        }
    }
    if let Some(stop) = present("stop") {
        self::stop(stop)?;
    }
    if let Some(format) = present("response_format") {
        response_format(format)?;
    }
    Ok(())
}

fn number_in(param: &str, value: &Value, min: f64, max: f64) -> Result<(), ApiError> {
    let Some(x) = value.as_f64() else {
        return Err(wrong_type(param, "a decimal", value));
    };
    if x < min {
        return Err(invalid(
            param,
            format!(
                "Invalid '{param}': decimal below minimum value. Expected a value >= {min}, but \
                 got {value} instead."
            ),
        ));
    }
    if x > max {
        return Err(invalid(
            param,
            format!(
                "Invalid '{param}': decimal above maximum value. Expected a value <= {max}, but \
                 got {value} instead."
            ),
        ));
    }
    Ok(())
}

/// `stop`: a string or a list of at most [`MAX_STOP`] strings.
fn stop(stop: &Value) -> Result<(), ApiError> {
    match stop {
        Value::String(_) => Ok(()),
        Value::Array(items) => {
            if items.len() > MAX_STOP {
                return Err(invalid(
                    "stop",
                    format!(
                        "Invalid 'stop': array too long. Expected an array with maximum length \
                         {MAX_STOP}, but got an array with length {} instead.",
                        items.len()
                    ),
                ));
            }
            for (i, item) in items.iter().enumerate() {
                if !item.is_string() {
                    return Err(wrong_type(&format!("stop[{i}]"), "a string", item));
                }
            }
            Ok(())
        }
        other => Err(wrong_type("stop", "a string or an array of strings", other)),
    }
}

/// `response_format`: `{"type": "text" | "json_object" | "json_schema"}`, the last with a
/// `json_schema` object that has a valid `name` (and, if given, an object `schema`, a string
/// `description`, a boolean `strict`).
fn response_format(format: &Value) -> Result<(), ApiError> {
    let Some(format) = format.as_object() else {
        return Err(wrong_type("response_format", "an object", format));
    };
    let kind = match format.get("type") {
        None | Some(Value::Null) => return Err(missing("response_format.type")),
        Some(Value::String(kind)) => kind.as_str(),
        Some(other) => return Err(wrong_type("response_format.type", "a string", other)),
    };
    match kind {
        "text" | "json_object" => Ok(()),
        "json_schema" => json_schema(format.get("json_schema")),
        other => Err(invalid(
            "response_format.type",
            format!(
                "Invalid value: '{other}'. Supported values are: 'text', 'json_object', and \
                 'json_schema'."
            ),
        )),
    }
}

fn json_schema(spec: Option<&Value>) -> Result<(), ApiError> {
    const PARAM: &str = "response_format.json_schema";
    let spec = match spec {
        None | Some(Value::Null) => return Err(missing(PARAM)),
        Some(Value::Object(spec)) => spec,
        Some(other) => return Err(wrong_type(PARAM, "an object", other)),
    };
    let name_param = format!("{PARAM}.name");
    match spec.get("name") {
        None | Some(Value::Null) => return Err(missing(&name_param)),
        Some(Value::String(name)) => check_name(&name_param, name)?,
        Some(other) => return Err(wrong_type(&name_param, "a string", other)),
    }
    for (field, expected, fits) in [
        (
            "schema",
            "an object",
            Value::is_object as fn(&Value) -> bool,
        ),
        ("description", "a string", Value::is_string),
        ("strict", "a boolean", Value::is_boolean),
    ] {
        if let Some(value) = spec.get(field).filter(|v| !v.is_null())
            && !fits(value)
        {
            return Err(wrong_type(&format!("{PARAM}.{field}"), expected, value));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::error::{ApiError, ErrorKind};
    use crate::openai::ChatCompletionRequest;
    use crate::tools::ToolChoice;

    const USER: &str = r#"[{"role":"user","content":"hi"}]"#;
    const TOOL: &str = r#"{"type":"function","function":{"name":"get_weather","description":"The weather in a city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}"#;

    /// A request body: `messages` and the other top-level `fields` (a JSON object's inside).
    fn body(messages: &str, fields: &str) -> String {
        let sep = if fields.is_empty() { "" } else { "," };
        format!(r#"{{"model":"m","messages":{messages}{sep}{fields}}}"#)
    }

    fn parse(body: &str) -> Result<ChatCompletionRequest, ApiError> {
        ChatCompletionRequest::from_json(body.as_bytes())
    }

    /// `n` tools named `t0`, `t1`, ….
    fn many_tools(n: usize) -> String {
        let tools: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"type":"function","function":{{"name":"t{i}"}}}}"#))
            .collect();
        format!("[{}]", tools.join(","))
    }

    /// An assistant message calling `ids` (each `get_weather`), as JSON.
    fn calls(ids: &[&str]) -> String {
        let calls: Vec<String> = ids
            .iter()
            .map(|id| {
                format!(
                    r#"{{"id":"{id}","type":"function","function":{{"name":"get_weather","arguments":"{{\"city\":\"Paris\"}}"}}}}"#
                )
            })
            .collect();
        format!(
            r#"{{"role":"assistant","content":null,"tool_calls":[{}]}}"#,
            calls.join(",")
        )
    }

    fn result(id: &str) -> String {
        format!(r#"{{"role":"tool","tool_call_id":"{id}","content":"sunny"}}"#)
    }

    #[test]
    fn refusals_name_the_field() {
        let user = r#"{"role":"user","content":"hi"}"#;
        let tools = format!(r#""tools":[{TOOL}]"#);
        let long_name = "x".repeat(65);
        let cases: Vec<(&str, String, &str, &str)> = vec![
            // tools
            (
                "empty tools",
                body(USER, r#""tools":[]"#),
                "tools",
                "empty array",
            ),
            (
                "too many tools",
                body(USER, &format!(r#""tools":{}"#, many_tools(129))),
                "tools",
                "maximum length 128",
            ),
            (
                "tool type",
                body(
                    USER,
                    r#""tools":[{"type":"web_search","function":{"name":"f"}}]"#,
                ),
                "tools[0].type",
                "'web_search'",
            ),
            (
                "empty function name",
                body(
                    USER,
                    r#""tools":[{"type":"function","function":{"name":""}}]"#,
                ),
                "tools[0].function.name",
                "empty string",
            ),
            (
                "function name pattern",
                body(
                    USER,
                    &format!(
                        r#""tools":[{TOOL},{{"type":"function","function":{{"name":"get weather"}}}}]"#
                    ),
                ),
                "tools[1].function.name",
                "does not match pattern",
            ),
            (
                "function name length",
                body(
                    USER,
                    &format!(
                        r#""tools":[{{"type":"function","function":{{"name":"{long_name}"}}}}]"#
                    ),
                ),
                "tools[0].function.name",
                "maximum length 64",
            ),
            (
                "duplicate function name",
                body(
                    USER,
                    &format!(
                        r#""tools":[{TOOL},{{"type":"function","function":{{"name":"t"}}}},{TOOL}]"#
                    ),
                ),
                "tools[2].function.name",
                "already used by tools[0]",
            ),
            (
                "parameters not an object",
                body(
                    USER,
                    r#""tools":[{"type":"function","function":{"name":"f","parameters":"none"}}]"#,
                ),
                "tools[0].function.parameters",
                "expected an object, but got a string",
            ),
            (
                "description not a string",
                body(
                    USER,
                    r#""tools":[{"type":"function","function":{"name":"f","description":7}}]"#,
                ),
                "tools[0].function.description",
                "description",
            ),
            (
                "function missing",
                body(USER, r#""tools":[{"type":"function"}]"#),
                "tools[0]",
                "function",
            ),
            // tool_choice
            (
                "tool_choice without tools",
                body(USER, r#""tool_choice":"auto""#),
                "tool_choice",
                "only allowed when 'tools' are specified",
            ),
            (
                "required without tools",
                body(USER, r#""tool_choice":"required""#),
                "tool_choice",
                "only allowed when 'tools' are specified",
            ),
            (
                "named choice not among the tools",
                body(
                    USER,
                    &format!(
                        r#"{tools},"tool_choice":{{"type":"function","function":{{"name":"get_time"}}}}"#
                    ),
                ),
                "tool_choice",
                "'get_time'",
            ),
            (
                "unknown tool_choice mode",
                body(USER, &format!(r#"{tools},"tool_choice":"always""#)),
                "tool_choice",
                "always",
            ),
            // messages: tool results
            (
                "tool message without tool_call_id",
                body(
                    &format!(
                        r#"[{user},{},{{"role":"tool","content":"sunny"}}]"#,
                        calls(&["c1"])
                    ),
                    "",
                ),
                "messages[2].tool_call_id",
                "Missing required parameter",
            ),
            (
                "tool message with an empty tool_call_id",
                body(
                    &format!(r#"[{user},{},{}]"#, calls(&["c1"]), result("")),
                    "",
                ),
                "messages[2].tool_call_id",
                "Missing required parameter",
            ),
            (
                "tool message answering an unknown id",
                body(
                    &format!(
                        r#"[{user},{},{},{}]"#,
                        calls(&["c1"]),
                        result("c1"),
                        result("c9")
                    ),
                    "",
                ),
                "messages[3].tool_call_id",
                "'c9'",
            ),
            (
                "tool message with no call before it",
                body(&format!(r#"[{user},{}]"#, result("c1")), ""),
                "messages[1].tool_call_id",
                "preceding message with 'tool_calls'",
            ),
            (
                "tool message answering a later call",
                body(
                    &format!(r#"[{user},{},{}]"#, result("c1"), calls(&["c1"])),
                    "",
                ),
                "messages[1].tool_call_id",
                "'c1'",
            ),
            // messages: unanswered calls
            (
                "a call left unanswered before the next user message",
                body(
                    &format!(
                        r#"[{user},{},{},{user}]"#,
                        calls(&["c1", "c2"]),
                        result("c1")
                    ),
                    "",
                ),
                "messages[1]",
                "did not have response messages: c2",
            ),
            (
                "calls left unanswered at the end",
                body(&format!(r#"[{user},{}]"#, calls(&["c1", "c2"])), ""),
                "messages[1]",
                "responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: c1, c2",
            ),
            (
                "calls followed by another assistant message",
                body(
                    &format!(
                        r#"[{user},{},{{"role":"assistant","content":"done"}}]"#,
                        calls(&["c1"])
                    ),
                    "",
                ),
                "messages[1]",
                "c1",
            ),
            // messages: the calls themselves
            (
                "call without id",
                body(
                    &format!(
                        r#"[{user},{{"role":"assistant","tool_calls":[{{"type":"function","function":{{"name":"f","arguments":"{{}}"}}}}]}}]"#
                    ),
                    "",
                ),
                "messages[1].tool_calls[0].id",
                "Missing required parameter",
            ),
            (
                "duplicate call ids",
                body(
                    &format!(
                        r#"[{user},{},{}]"#,
                        calls(&["c1", "c2", "c1"]),
                        result("c1")
                    ),
                    "",
                ),
                "messages[1].tool_calls[2].id",
                "'c1'",
            ),
            (
                "call type",
                body(
                    &format!(
                        r#"[{user},{{"role":"assistant","tool_calls":[{{"id":"c1","type":"custom","function":{{"name":"f","arguments":"{{}}"}}}}]}},{}]"#,
                        result("c1")
                    ),
                    "",
                ),
                "messages[1].tool_calls[0].type",
                "'custom'",
            ),
            (
                "call with an empty function name",
                body(
                    &format!(
                        r#"[{user},{{"role":"assistant","tool_calls":[{{"id":"c1","type":"function","function":{{"name":"","arguments":"{{}}"}}}}]}},{}]"#,
                        result("c1")
                    ),
                    "",
                ),
                "messages[1].tool_calls[0].function.name",
                "Missing required parameter",
            ),
            (
                "call arguments not a string",
                body(
                    &format!(
                        r#"[{user},{{"role":"assistant","tool_calls":[{{"id":"c1","type":"function","function":{{"name":"f","arguments":{{"a":1}}}}}}]}},{}]"#,
                        result("c1")
                    ),
                    "",
                ),
                "messages[1].tool_calls[0].function.arguments",
                "string",
            ),
            (
                "tool_calls on a user message",
                body(
                    r#"[{"role":"user","content":"hi","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}]"#,
                    "",
                ),
                "messages[0].tool_calls",
                "'user'",
            ),
            // ranges
            (
                "temperature above 2",
                body(USER, r#""temperature":2.5"#),
                "temperature",
                "<= 2, but got 2.5",
            ),
            (
                "temperature below 0",
                body(USER, r#""temperature":-1"#),
                "temperature",
                ">= 0, but got -1",
            ),
            (
                "temperature as a string",
                body(USER, r#""temperature":"hot""#),
                "temperature",
                "expected a decimal, but got a string",
            ),
            (
                "top_p above 1",
                body(USER, r#""top_p":1.5"#),
                "top_p",
                "<= 1",
            ),
            (
                "top_p below 0",
                body(USER, r#""top_p":-0.1"#),
                "top_p",
                ">= 0",
            ),
            (
                "top_p as a boolean",
                body(USER, r#""top_p":true"#),
                "top_p",
                "got a boolean",
            ),
            (
                "presence_penalty above 2",
                body(USER, r#""presence_penalty":3"#),
                "presence_penalty",
                "<= 2, but got 3",
            ),
            (
                "frequency_penalty below -2",
                body(USER, r#""frequency_penalty":-2.5"#),
                "frequency_penalty",
                ">= -2",
            ),
            (
                "frequency_penalty as an array",
                body(USER, r#""frequency_penalty":[1]"#),
                "frequency_penalty",
                "got an array",
            ),
            ("n of 0", body(USER, r#""n":0"#), "n", "n=1"),
            ("n of 3", body(USER, r#""n":3"#), "n", "n=1"),
            (
                "max_tokens of 0",
                body(USER, r#""max_tokens":0"#),
                "max_tokens",
                ">= 1",
            ),
            (
                "max_completion_tokens of 0",
                body(USER, r#""max_completion_tokens":0"#),
                "max_completion_tokens",
                ">= 1",
            ),
            (
                "negative max_tokens",
                body(USER, r#""max_tokens":-5"#),
                "max_tokens",
                "-5",
            ),
            (
                "max_tokens as a string",
                body(USER, r#""max_tokens":"5""#),
                "max_tokens",
                "string",
            ),
            (
                "five stop sequences",
                body(USER, r#""stop":["a","b","c","d","e"]"#),
                "stop",
                "maximum length 4, but got an array with length 5",
            ),
            (
                "stop as a number",
                body(USER, r#""stop":7"#),
                "stop",
                "got an integer",
            ),
            (
                "stop item not a string",
                body(USER, r#""stop":["a",1]"#),
                "stop[1]",
                "expected a string",
            ),
            // response_format
            (
                "response_format as a string",
                body(USER, r#""response_format":"json""#),
                "response_format",
                "expected an object",
            ),
            (
                "response_format without type",
                body(USER, r#""response_format":{}"#),
                "response_format.type",
                "Missing required parameter",
            ),
            (
                "response_format of an unknown type",
                body(USER, r#""response_format":{"type":"xml"}"#),
                "response_format.type",
                "'xml'",
            ),
            (
                "response_format type not a string",
                body(USER, r#""response_format":{"type":1}"#),
                "response_format.type",
                "expected a string",
            ),
            (
                "json_schema missing",
                body(USER, r#""response_format":{"type":"json_schema"}"#),
                "response_format.json_schema",
                "Missing required parameter",
            ),
            (
                "json_schema not an object",
                body(
                    USER,
                    r#""response_format":{"type":"json_schema","json_schema":"x"}"#,
                ),
                "response_format.json_schema",
                "expected an object",
            ),
            (
                "json_schema without name",
                body(
                    USER,
                    r#""response_format":{"type":"json_schema","json_schema":{"schema":{}}}"#,
                ),
                "response_format.json_schema.name",
                "Missing required parameter",
            ),
            (
                "json_schema name pattern",
                body(
                    USER,
                    r#""response_format":{"type":"json_schema","json_schema":{"name":"a b"}}"#,
                ),
                "response_format.json_schema.name",
                "pattern",
            ),
            (
                "json_schema schema not an object",
                body(
                    USER,
                    r#""response_format":{"type":"json_schema","json_schema":{"name":"n","schema":[]}}"#,
                ),
                "response_format.json_schema.schema",
                "expected an object, but got an array",
            ),
            (
                "json_schema strict not a boolean",
                body(
                    USER,
                    r#""response_format":{"type":"json_schema","json_schema":{"name":"n","strict":"yes"}}"#,
                ),
                "response_format.json_schema.strict",
                "expected a boolean",
            ),
        ];
        for (name, body, param, fragment) in cases {
            let err = match parse(&body) {
                Ok(_) => panic!("{name}: accepted {body}"),
                Err(err) => err,
            };
            assert_eq!(err.kind, ErrorKind::InvalidRequest, "{name}");
            assert_eq!(err.status(), 400, "{name}");
            assert_eq!(err.param.as_deref(), Some(param), "{name}: {}", err.message);
            assert!(
                err.message.contains(fragment),
                "{name}: {:?} does not contain {fragment:?}",
                err.message
            );
        }
    }

    #[test]
    fn accepted_edge_cases() {
        let user = r#"{"role":"user","content":"hi"}"#;
        let tools = format!(r#""tools":[{TOOL}]"#);
        let cases: Vec<(&str, String)> = vec![
            (
                "tool_choice none without tools",
                body(USER, r#""tool_choice":"none""#),
            ),
            (
                "parallel_tool_calls without tools (ignored)",
                body(USER, r#""parallel_tool_calls":false"#),
            ),
            (
                "128 tools",
                body(USER, &format!(r#""tools":{}"#, many_tools(128))),
            ),
            (
                "a tool without parameters or description",
                body(
                    USER,
                    r#""tools":[{"type":"function","function":{"name":"ping-1_A"}}]"#,
                ),
            ),
            (
                "a 64-character name",
                body(
                    USER,
                    &format!(
                        r#""tools":[{{"type":"function","function":{{"name":"{}"}}}}]"#,
                        "n".repeat(64)
                    ),
                ),
            ),
            (
                "required with tools",
                body(USER, &format!(r#"{tools},"tool_choice":"required""#)),
            ),
            (
                "nulls are absent",
                body(
                    USER,
                    r#""temperature":null,"top_p":null,"stop":null,"response_format":null,"presence_penalty":null,"frequency_penalty":null,"tools":null,"tool_choice":null,"max_tokens":null"#,
                ),
            ),
            (
                "range bounds",
                body(
                    USER,
                    r#""temperature":0,"top_p":1,"presence_penalty":-2,"frequency_penalty":2,"max_tokens":1"#,
                ),
            ),
            (
                "upper temperature bound",
                body(USER, r#""temperature":2,"top_p":0"#),
            ),
            ("stop as a string", body(USER, r#""stop":"\n""#)),
            (
                "four stop sequences",
                body(USER, r#""stop":["a","b","c","d"]"#),
            ),
            ("no stop sequences", body(USER, r#""stop":[]"#)),
            (
                "text response format",
                body(USER, r#""response_format":{"type":"text"}"#),
            ),
            (
                "json_object response format",
                body(USER, r#""response_format":{"type":"json_object"}"#),
            ),
            (
                "json_schema response format",
                body(
                    USER,
                    r#""response_format":{"type":"json_schema","json_schema":{"name":"answer","description":"d","strict":true,"schema":{"type":"object","properties":{"a":{"type":"string"}},"required":["a"],"additionalProperties":false}}}"#,
                ),
            ),
            (
                "results after a system message",
                body(
                    &format!(
                        r#"[{user},{},{{"role":"system","content":"be quick"}},{}]"#,
                        calls(&["c1"]),
                        result("c1")
                    ),
                    "",
                ),
            ),
            (
                "a result answering a call of an earlier turn",
                body(
                    &format!(
                        r#"[{user},{},{},{user},{},{},{}]"#,
                        calls(&["c1"]),
                        result("c1"),
                        calls(&["c2"]),
                        result("c2"),
                        result("c1")
                    ),
                    "",
                ),
            ),
            (
                "arguments that are not JSON stay a string",
                body(
                    &format!(
                        r#"[{user},{{"role":"assistant","content":"","tool_calls":[{{"id":"c1","type":"function","function":{{"name":"f","arguments":"{{not json"}}}}]}},{}]"#,
                        result("c1")
                    ),
                    "",
                ),
            ),
            (
                "an empty tool_calls list",
                body(
                    &format!(
                        r#"[{user},{{"role":"assistant","content":"ok","tool_calls":[]}},{user}]"#
                    ),
                    "",
                ),
            ),
        ];
        for (name, body) in cases {
            if let Err(err) = parse(&body) {
                panic!("{name}: refused with {err:?}\n{body}");
            }
        }
    }

    /// What the OpenAI SDKs send on the second request of a tool round trip: the tools, a named
    /// choice, parallel calls, the assistant's calls and one result per call.
    #[test]
    fn a_full_tool_round_trip_as_the_sdks_send_it() {
        let body = format!(
            r#"{{"model":"kiro","stream":true,"stream_options":{{"include_usage":true}},
               "messages":[
                 {{"role":"system","content":"You are helpful."}},
                 {{"role":"user","content":[{{"type":"text","text":"Weather in Paris and Rome?"}}]}},
                 {{"role":"assistant","content":null,"refusal":null,"tool_calls":[
                   {{"id":"call_a","type":"function","function":{{"name":"get_weather","arguments":"{{\"city\":\"Paris\"}}"}}}},
                   {{"id":"call_b","type":"function","function":{{"name":"get_weather","arguments":"{{\"city\":\"Rome\"}}"}}}}]}},
                 {{"role":"tool","tool_call_id":"call_a","content":"sunny"}},
                 {{"role":"tool","tool_call_id":"call_b","content":[{{"type":"text","text":"rainy"}}]}}],
               "tools":[{TOOL},{{"type":"function","function":{{"name":"get_time","description":"Now","parameters":{{"type":"object","properties":{{}}}},"strict":false}}}}],
               "tool_choice":{{"type":"function","function":{{"name":"get_weather"}}}},
               "parallel_tool_calls":true,
               "temperature":0.7,"top_p":0.9,"max_completion_tokens":512,
               "presence_penalty":0,"frequency_penalty":0.5,"stop":["END"],"seed":1,
               "response_format":{{"type":"text"}},"user":"u1"}}"#
        );
        let req = match parse(&body) {
            Ok(req) => req,
            Err(err) => panic!("refused: {err:?}"),
        };
        assert_eq!(req.tools.as_ref().map(Vec::len), Some(2));
        assert_eq!(
            req.tool_choice,
            Some(ToolChoice::Function("get_weather".into()))
        );
        assert_eq!(req.parallel_tool_calls, Some(true));
        assert_eq!(req.messages.len(), 5);
        assert_eq!(req.messages[4].text(), "rainy");
    }
}
