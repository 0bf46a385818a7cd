//! MCP servers handed to the agent in `session/new` `mcpServers`, the client the `call`
//! directive uses to reach them (the official SDK, streamable HTTP), and the tool results a
//! rendered transcript carries.

use std::collections::HashMap;

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, CancelledNotificationParam,
    ClientCapabilities, ClientConfig, ClientRequest, Implementation, RequestId, ServerResult,
};
use rmcp::service::{PeerRequestOptions, RequestHandle, RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ServiceError, ServiceExt as _};
use serde_json::{Map, Value};

/// An HTTP MCP server of a session, as `session/new` gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpServer {
    /// Its name: tools are shown as `mcp__<name>__<tool>`.
    pub(crate) name: String,
    pub(crate) url: String,
    /// The headers to send with every request (`Authorization` as given).
    pub(crate) headers: Vec<(String, String)>,
}

/// The HTTP servers of `session/new`'s `mcpServers` (absent or null: none), checked the way
/// real agents check them: an `http` or `sse` entry needs `name` and `url` strings and a
/// `headers` array of `{name, value}` (claude-agent-acp refuses a missing one with "headers:
/// expected array"). Stdio entries are ignored, and so are `sse` ones and, when `http` is
/// false (the agent does not announce HTTP MCP), `http` ones. The error is the reason.
pub(crate) fn http_servers(servers: Option<&Value>, http: bool) -> Result<Vec<HttpServer>, String> {
    let entries = match servers {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err("mcpServers: expected array".to_owned()),
    };
    let mut found = Vec::new();
    for entry in entries {
        let kind = entry.get("type").and_then(Value::as_str);
        if !matches!(kind, Some("http" | "sse")) {
            continue;
        }
        let text = |key: &str| {
            entry
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("{key}: expected string"))
        };
        let name = text("name")?;
        let url = text("url")?;
        let headers = entry
            .get("headers")
            .and_then(Value::as_array)
            .ok_or("headers: expected array")?
            .iter()
            .map(|header| {
                let field = |key: &str| header.get(key).and_then(Value::as_str).map(str::to_owned);
                field("name")
                    .zip(field("value"))
                    .ok_or_else(|| "headers: expected {name, value} strings".to_owned())
            })
            .collect::<Result<Vec<_>, _>>()?;
        if kind == Some("http") && http {
            found.push(HttpServer { name, url, headers });
        }
    }
    Ok(found)
}

/// A connected MCP client (dropping it closes the connection).
pub(crate) type Client = RunningService<RoleClient, ClientConfig>;

/// Connect to `server` with its headers and run MCP's `initialize` handshake.
pub(crate) async fn connect(server: &HttpServer) -> Result<Client, String> {
    let mut headers = HashMap::new();
    for (name, value) in &server.headers {
        let name = http::HeaderName::try_from(name.as_str())
            .map_err(|error| format!("header `{name}`: {error}"))?;
        let value = http::HeaderValue::try_from(value.as_str())
            .map_err(|error| format!("header `{name}`: {error}"))?;
        headers.insert(name, value);
    }
    // No request timeout: a bridged tool call is held open until its client answers.
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(server.url.as_str()).custom_headers(headers),
    );
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("mock-acp-agent", env!("CARGO_PKG_VERSION")),
    )
    .serve(transport)
    .await
    .map_err(|error| error.to_string())
}

/// The names of the tools `client`'s server offers.
pub(crate) async fn tool_names(client: &Client) -> Result<Vec<String>, String> {
    let tools = client.list_all_tools().await.map_err(|e| describe(&e))?;
    Ok(tools
        .into_iter()
        .map(|tool| tool.name.into_owned())
        .collect())
}

/// A `tools/call` sent and not yet answered.
pub(crate) type Pending = RequestHandle<RoleClient>;

/// Send `tools/call` for `tool` with `args`, without waiting for its answer. No timeout: a
/// bridged call is held open until its client answers.
pub(crate) async fn start_call(
    client: &Client,
    tool: &str,
    args: Map<String, Value>,
) -> Result<Pending, String> {
    let request = CallToolRequestParams::new(tool.to_owned()).with_arguments(args);
    client
        .send_request_with_option(
            ClientRequest::CallToolRequest(CallToolRequest::new(request)),
            PeerRequestOptions::no_options(),
        )
        .await
        .map_err(|error| describe(&error))
}

/// Wait for a call's answer: `Ok(text)` with the result's text, `Err(text)` when the result
/// is an error (`isError`) or the call failed.
pub(crate) async fn finish_call(pending: Pending) -> Result<String, String> {
    match pending.await_response().await {
        Ok(ServerResult::CallToolResult(result)) if result.is_error == Some(true) => {
            Err(text_of(&result))
        }
        Ok(ServerResult::CallToolResult(result)) => Ok(text_of(&result)),
        Ok(_) => Err("unexpected answer to tools/call".to_owned()),
        Err(error) => Err(describe(&error)),
    }
}

/// Tell the server the calls `ids` are abandoned (`notifications/cancelled`), waiting until
/// it has been told.
pub(crate) async fn cancel_calls(client: &Client, ids: Vec<RequestId>) {
    for id in ids {
        let cancelled = CancelledNotificationParam::new(Some(id), Some("cancelled".to_owned()));
        if let Err(error) = client.notify_cancelled(cancelled).await {
            tracing::debug!(%error, "could not cancel an MCP call");
        }
    }
}

/// The concatenated text content of a tool result.
fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|content| content.as_text())
        .map(|text| text.text.as_str())
        .collect()
}

/// An MCP error's message, else what the SDK says.
fn describe(error: &ServiceError) -> String {
    match error {
        ServiceError::McpError(error) => error.message.to_string(),
        other => other.to_string(),
    }
}

/// The header a rendered transcript puts before a tool's result
/// (`drawbridge_core::prompt`): `[Tool result (id ID)]`.
const RESULT_OPEN: &str = "[Tool result (id ";
const RESULT_CLOSE: &str = ")]";

/// The `[Tool result (id ID)]` blocks of a transcript, in order: (ID, the block's text up to
/// the next block, a blank line then `[`, or the end).
pub(crate) fn tool_results(text: &str) -> Vec<(&str, &str)> {
    let mut results = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(RESULT_OPEN) {
        // A header starts a line.
        let at_line_start = start == 0 || rest[..start].ends_with('\n');
        let after_open = &rest[start + RESULT_OPEN.len()..];
        let header = after_open.split_once(RESULT_CLOSE).and_then(|(id, body)| {
            let body = body
                .strip_prefix('\n')
                .or_else(|| body.is_empty().then_some(body))?;
            (!id.is_empty() && !id.contains('\n')).then_some((id, body))
        });
        let Some((id, body)) = header.filter(|_| at_line_start) else {
            rest = after_open;
            continue;
        };
        let end = body.find("\n\n[").unwrap_or(body.len());
        results.push((id, &body[..end]));
        rest = &body[end..];
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn http_servers_are_kept_and_checked() {
        let servers = json!([
            { "name": "fs", "command": "/bin/fs", "args": [], "env": [] },
            { "type": "http", "name": "drawbridge", "url": "http://127.0.0.1:1/mcp",
              "headers": [{ "name": "Authorization", "value": "Bearer t" }] },
            { "type": "sse", "name": "old", "url": "http://127.0.0.1:2/sse", "headers": [] },
            { "type": "http", "name": "second", "url": "http://127.0.0.1:3/mcp", "headers": [] },
        ]);
        let found = http_servers(Some(&servers), true).unwrap();
        assert_eq!(
            found,
            [
                HttpServer {
                    name: "drawbridge".to_owned(),
                    url: "http://127.0.0.1:1/mcp".to_owned(),
                    headers: vec![("Authorization".to_owned(), "Bearer t".to_owned())],
                },
                HttpServer {
                    name: "second".to_owned(),
                    url: "http://127.0.0.1:3/mcp".to_owned(),
                    headers: Vec::new(),
                },
            ]
        );
        assert!(http_servers(Some(&servers), false).unwrap().is_empty());
        assert!(http_servers(None, true).unwrap().is_empty());
        assert!(http_servers(Some(&Value::Null), true).unwrap().is_empty());
    }

    #[test]
    fn bad_http_servers_are_refused() {
        let missing = json!([{ "type": "http", "name": "d", "url": "http://x/mcp" }]);
        assert_eq!(
            http_servers(Some(&missing), true),
            Err("headers: expected array".to_owned())
        );
        // Even when the agent would not load it.
        assert!(http_servers(Some(&missing), false).is_err());
        let bad_header =
            json!([{ "type": "http", "name": "d", "url": "u", "headers": [{ "name": "a" }] }]);
        assert!(http_servers(Some(&bad_header), true).is_err());
        let no_url = json!([{ "type": "http", "name": "d", "headers": [] }]);
        assert_eq!(
            http_servers(Some(&no_url), true),
            Err("url: expected string".to_owned())
        );
        assert!(http_servers(Some(&json!({})), true).is_err());
    }

    #[test]
    fn tool_results_are_read_from_a_transcript() {
        let transcript = "[User]\ngo\n\n[Assistant called tool weather (id c1)]\n{}\n\n\
                          [Tool result (id c1)]\nsunny\nand warm\n\n[Tool result (id c2)]\n\
                          {\"t\": [1]}\n\n[User]\nthanks";
        assert_eq!(
            tool_results(transcript),
            [("c1", "sunny\nand warm"), ("c2", "{\"t\": [1]}")]
        );
        assert_eq!(
            tool_results("[Tool result (id last)]\nend of text\n"),
            [("last", "end of text\n")]
        );
        assert_eq!(tool_results("[Tool result (id e)]"), [("e", "")]);
        // Not a header: mid-line, or without an id.
        assert!(tool_results("see [Tool result (id x)]\ny").is_empty());
        assert!(tool_results("[Tool result (id )]\ny").is_empty());
        assert!(tool_results("[Tool result: name]\ny").is_empty());
    }
}
