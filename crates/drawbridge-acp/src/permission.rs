//! How the client answers `session/request_permission`.

use agent_client_protocol::v1::schema::{
    PermissionOption, PermissionOptionKind, RequestPermissionOutcome, RequestPermissionResponse,
    SelectedPermissionOutcome, ToolCallUpdate,
};

/// Which permission options the client may select on the agent's behalf.
///
/// The default allows nothing: Drawbridge runs agents headless, so every tool the agent wants
/// to run is refused. `allow_kinds` holds ACP option kinds in their wire spelling
/// (`"allow_once"`, `"allow_always"`); the first offered option whose kind is listed is
/// selected. Otherwise a reject option is selected (`reject_once` preferred over
/// `reject_always`), and if none is offered the request is answered `cancelled`.
///
/// `allow_tools` allows by what the agent wants to run: a tool call whose ACP kind (`read`,
/// `edit`, `delete`, `move`, `search`, `execute`, `think`, `fetch`, `switch_mode`, `other`) or
/// exact title is listed gets an allow option (`allow_once` preferred over `allow_always`).
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct PermissionPolicy {
    /// Option kinds that may be selected, e.g. `["allow_once"]`.
    pub allow_kinds: Vec<String>,
    /// Tool kinds or exact tool titles that are allowed, e.g. `["read", "search"]`.
    pub allow_tools: Vec<String>,
}

impl PermissionPolicy {
    /// Refuse everything (the default).
    pub fn reject_all() -> Self {
        Self::default()
    }

    /// Whether `tool_call` is one `allow_tools` lets run, or one of the client's own tools
    /// (served by the tool bridge as MCP server [`CLIENT_TOOLS_SERVER`]: the client asked for
    /// them, and running one only hands the call back to the client).
    fn allows_tool(&self, tool_call: &ToolCallUpdate) -> bool {
        if tool_call
            .fields
            .title
            .as_deref()
            .is_some_and(is_client_tool)
        {
            return true;
        }
        let kind = tool_call
            .fields
            .kind
            .and_then(|k| match serde_json::to_value(k) {
                Ok(serde_json::Value::String(name)) => Some(name),
                _ => None,
            });
        let title = tool_call.fields.title.as_deref();
        self.allow_tools.iter().any(|allowed| {
            Some(allowed.as_str()) == kind.as_deref() || Some(allowed.as_str()) == title
        })
    }

    /// The answer to a permission request for `tool_call` offering `options`, and whether it
    /// allows the tool.
    pub(crate) fn decide_and_tell(
        &self,
        tool_call: &ToolCallUpdate,
        options: &[PermissionOption],
    ) -> (RequestPermissionResponse, bool) {
        let response = self.decide(tool_call, options);
        let allowed = match &response.outcome {
            RequestPermissionOutcome::Selected(selected) => options.iter().any(|option| {
                option.option_id == selected.option_id
                    && matches!(
                        option.kind,
                        PermissionOptionKind::AllowOnce | PermissionOptionKind::AllowAlways
                    )
            }),
            _ => false,
        };
        (response, allowed)
    }

    /// The answer to a permission request for `tool_call` offering `options`.
    pub(crate) fn decide(
        &self,
        tool_call: &ToolCallUpdate,
        options: &[PermissionOption],
    ) -> RequestPermissionResponse {
        let by_tool = self.allows_tool(tool_call).then(|| {
            [
                PermissionOptionKind::AllowOnce,
                PermissionOptionKind::AllowAlways,
            ]
            .iter()
            .find_map(|kind| options.iter().find(|option| option.kind == *kind))
        });
        let allowed = by_tool.flatten().or_else(|| {
            options.iter().find(|option| {
                self.allow_kinds
                    .iter()
                    .any(|kind| *kind == kind_name(option.kind))
            })
        });
        let chosen = allowed.or_else(|| {
            [
                PermissionOptionKind::RejectOnce,
                PermissionOptionKind::RejectAlways,
            ]
            .iter()
            .find_map(|kind| options.iter().find(|option| option.kind == *kind))
        });
        let outcome = match chosen {
            Some(option) => RequestPermissionOutcome::Selected(SelectedPermissionOutcome::new(
                option.option_id.clone(),
            )),
            None => RequestPermissionOutcome::Cancelled,
        };
        RequestPermissionResponse::new(outcome)
    }
}

/// The name of the MCP server that serves a request's client tools to its agent.
pub const CLIENT_TOOLS_SERVER: &str = "drawbridge";

/// Whether a tool title names one of the client's tools: agents name MCP tools
/// `mcp__<server>__<tool>` to their model.
fn is_client_tool(title: &str) -> bool {
    title
        .strip_prefix("mcp__")
        .and_then(|rest| rest.strip_prefix(CLIENT_TOOLS_SERVER))
        .is_some_and(|rest| rest.starts_with("__") && rest.len() > 2)
}

/// The wire spelling of an option kind (`allow_once`, ...), empty for a kind this crate
/// version cannot name.
fn kind_name(kind: PermissionOptionKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(name)) => name,
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Vec<PermissionOption> {
        vec![
            PermissionOption::new("allow", "Allow", PermissionOptionKind::AllowOnce),
            PermissionOption::new("always", "Always", PermissionOptionKind::RejectAlways),
            PermissionOption::new("reject", "Reject", PermissionOptionKind::RejectOnce),
        ]
    }

    fn tool() -> ToolCallUpdate {
        use agent_client_protocol::v1::schema::{ToolCallUpdateFields, ToolKind};
        ToolCallUpdate::new(
            "t1",
            ToolCallUpdateFields::new()
                .kind(ToolKind::Read)
                .title("Read README.md"),
        )
    }

    #[test]
    fn the_clients_own_tools_are_allowed_and_nothing_else_by_that_name() {
        use agent_client_protocol::v1::schema::{ToolCallUpdateFields, ToolKind};
        let titled = |title: &str| {
            ToolCallUpdate::new(
                "t1",
                ToolCallUpdateFields::new()
                    .kind(ToolKind::Other)
                    .title(title),
            )
        };
        let policy = PermissionPolicy::reject_all();
        let (_, allowed) = policy.decide_and_tell(&titled("mcp__drawbridge__weather"), &options());
        assert!(allowed);
        for other in [
            "mcp__drawbridge__",
            "mcp__drawbridgex__weather",
            "mcp__other__weather",
            "drawbridge__weather",
            "shell",
        ] {
            let (_, allowed) = policy.decide_and_tell(&titled(other), &options());
            assert!(!allowed, "{other}");
        }
    }

    #[test]
    fn allow_tools_matches_kind_or_exact_title() {
        for allow in ["read", "Read README.md"] {
            let policy = PermissionPolicy {
                allow_tools: vec![allow.to_owned()],
                ..PermissionPolicy::default()
            };
            assert_eq!(
                selected(&policy.decide(&tool(), &options())).as_deref(),
                Some("allow"),
                "{allow}"
            );
        }
        let policy = PermissionPolicy {
            allow_tools: vec!["execute".to_owned(), "Read".to_owned()],
            ..PermissionPolicy::default()
        };
        assert_eq!(
            selected(&policy.decide(&tool(), &options())).as_deref(),
            Some("reject")
        );
    }

    fn selected(response: &RequestPermissionResponse) -> Option<String> {
        match &response.outcome {
            RequestPermissionOutcome::Selected(selected) => Some(selected.option_id.to_string()),
            _ => None,
        }
    }

    #[test]
    fn decide_and_tell_says_whether_the_tool_may_run() {
        let (_, allowed) = PermissionPolicy::reject_all().decide_and_tell(&tool(), &options());
        assert!(!allowed);
        let (_, allowed) = PermissionPolicy::reject_all().decide_and_tell(&tool(), &options()[..1]);
        assert!(!allowed, "cancelled is a refusal");
        let policy = PermissionPolicy {
            allow_tools: vec!["read".to_owned()],
            ..PermissionPolicy::default()
        };
        let (response, allowed) = policy.decide_and_tell(&tool(), &options());
        assert!(allowed);
        assert_eq!(selected(&response).as_deref(), Some("allow"));
    }

    #[test]
    fn default_prefers_reject_once() {
        let response = PermissionPolicy::default().decide(&tool(), &options());
        assert_eq!(selected(&response).as_deref(), Some("reject"));
    }

    #[test]
    fn reject_always_when_it_is_the_only_reject() {
        let response = PermissionPolicy::default().decide(&tool(), &options()[..2]);
        assert_eq!(selected(&response).as_deref(), Some("always"));
    }

    #[test]
    fn cancelled_without_a_reject_option() {
        let response = PermissionPolicy::default().decide(&tool(), &options()[..1]);
        assert_eq!(response.outcome, RequestPermissionOutcome::Cancelled);
    }

    #[test]
    fn allowed_kinds_are_selected() {
        let policy = PermissionPolicy {
            allow_kinds: vec!["allow_once".to_owned()],
            ..PermissionPolicy::default()
        };
        assert_eq!(
            selected(&policy.decide(&tool(), &options())).as_deref(),
            Some("allow")
        );
    }
}
