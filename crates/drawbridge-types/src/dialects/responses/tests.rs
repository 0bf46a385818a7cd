use crate::error::{ApiError, ErrorKind};

use super::*;

fn parse(body: &str) -> Result<Translated, ApiError> {
    ResponsesRequest::from_json(body.as_bytes())?.translate(None)
}

#[test]
fn refusals_name_the_responses_field() {
    for (body, param) in [
        (r#"{"model":"m"}"#, "input"),
        (r#"{"model":"m","input":3}"#, "input"),
        (r#"{"model":"m","input":[{"type":"wat"}]}"#, "input[0].type"),
        (
            r#"{"model":"m","input":[{"role":"tool","content":"x"}]}"#,
            "input[0].role",
        ),
        (
            r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_id":"x"}]}]}"#,
            "input[0].content[0].type",
        ),
        (
            r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_image","file_id":"x"}]}]}"#,
            "input[0].content[0].image_url",
        ),
        (
            r#"{"model":"m","input":[{"type":"function_call_output","call_id":"c9","output":"x"}]}"#,
            "input[0].call_id",
        ),
        (
            r#"{"model":"m","input":[{"type":"function_call","call_id":"c1","name":"f","arguments":"{}"},{"role":"user","content":"hi"}]}"#,
            "input[0]",
        ),
        (
            r#"{"model":"m","input":"hi","tools":[{"type":"web_search"},{"type":"function","name":"bad name"}]}"#,
            "tools[1].name",
        ),
        (
            r#"{"model":"m","input":"hi","tool_choice":{"type":"function","name":"f"}}"#,
            "tool_choice",
        ),
        (
            r#"{"model":"m","input":"hi","temperature":3}"#,
            "temperature",
        ),
        (
            r#"{"model":"m","input":"hi","max_output_tokens":0}"#,
            "max_output_tokens",
        ),
        (
            r#"{"model":"m","input":"hi","text":{"format":{"type":"json_schema","name":"a b"}}}"#,
            "text.format.name",
        ),
        (
            r#"{"model":"m","input":"hi","previous_response_id":""}"#,
            "previous_response_id",
        ),
        (r#"{"model":5,"input":"hi"}"#, "model"),
    ] {
        let error = parse(body).expect_err(body);
        assert_eq!(error.kind, ErrorKind::InvalidRequest, "{body}");
        assert_eq!(
            error.param.as_deref(),
            Some(param),
            "{body}: {}",
            error.message
        );
    }
}

#[test]
fn hosted_tools_are_ignored_and_a_mode_without_function_tools_dropped() {
    let t = parse(
        r#"{"model":"m","input":"hi","tools":[{"type":"web_search_preview"}],"tool_choice":"auto"}"#,
    )
    .unwrap();
    assert_eq!(t.chat.tools, None);
    assert_eq!(t.chat.tool_choice, None);
    assert_eq!(t.template["tools"][0]["type"], "web_search_preview");
}
