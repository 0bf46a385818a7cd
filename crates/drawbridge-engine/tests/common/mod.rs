//! What the upstream adapters' golden tests share: the golden-file check, the events as the
//! files hold them, reading a stream whole and byte by byte, the cases every adapter's files
//! have (streams to events, a resumed answer, error answers to their class), and the turns
//! they are read with.

#![allow(dead_code, reason = "each test file uses a part")]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use drawbridge_engine::providers::{anthropic, gemini, openai};
use drawbridge_types::ApiError;
use drawbridge_types::openai::{ChatMessage, FunctionCall, MessageContent, Role, ToolCall};
use drawbridge_types::tools::{FunctionDef, Tool, ToolChoice};
use drawbridge_types::worker::{PromptBody, PromptInput, TurnTools, WorkerEvent};
use serde_json::{Value, json};

/// The golden files of adapter `name` (`tests/golden/<name>`).
pub fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// Compare `actual` with the golden file `dir/name`, or write it with `UPDATE_GOLDEN=1`.
pub fn check(dir: &Path, name: &str, actual: &str) {
    let path = dir.join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(dir).expect("create the golden dir");
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(
        actual,
        expected,
        "{} differs (UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

/// `events` as the golden files hold them: one per line.
pub fn render(events: &[WorkerEvent]) -> String {
    let mut out = String::new();
    for event in events {
        writeln!(out, "{event:?}").unwrap();
    }
    out
}

/// An adapter's event reader.
pub trait Reader {
    fn new(input: &PromptInput) -> Self;
    fn push(&mut self, bytes: &[u8]) -> Vec<WorkerEvent>;
    fn end(&mut self) -> Vec<WorkerEvent>;
}

macro_rules! reader {
    ($module:ident) => {
        impl Reader for $module::EventReader {
            fn new(input: &PromptInput) -> Self {
                $module::EventReader::new(input)
            }
            fn push(&mut self, bytes: &[u8]) -> Vec<WorkerEvent> {
                $module::EventReader::push(self, bytes)
            }
            fn end(&mut self) -> Vec<WorkerEvent> {
                $module::EventReader::end(self)
            }
        }
    };
}
reader!(openai);
reader!(anthropic);
reader!(gemini);

/// Read `sse` whole with reader `R`, and again one byte at a time: both give the same events
/// (text may arrive in other pieces).
pub fn read<R: Reader>(input: &PromptInput, sse: &[u8]) -> Vec<WorkerEvent> {
    let mut reader = R::new(input);
    let mut events = reader.push(sse);
    events.extend(reader.end());
    let mut bytewise = R::new(input);
    let mut split = Vec::new();
    for byte in sse {
        split.extend(bytewise.push(std::slice::from_ref(byte)));
    }
    split.extend(bytewise.end());
    let joined = |events: &[WorkerEvent]| {
        let mut out: Vec<WorkerEvent> = Vec::new();
        for event in events {
            match (out.last_mut(), event) {
                (Some(WorkerEvent::Text(a)), WorkerEvent::Text(b)) => a.push_str(b),
                _ => out.push(event.clone()),
            }
        }
        out
    };
    assert_eq!(
        joined(&events),
        joined(&split),
        "byte-by-byte reading differs"
    );
    events
}

/// The upstream stream `dir/<case>.sse`.
pub fn sse(dir: &Path, case: &str) -> Vec<u8> {
    let path = dir.join(format!("{case}.sse"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Each stream `dir/<case>.sse` read with `R` for `input`: its events are `<case>.events.txt`.
pub fn check_streams<R: Reader>(dir: &Path, input: &PromptInput, cases: &[&str]) {
    for case in cases {
        let events = read::<R>(input, &sse(dir, case));
        check(dir, &format!("{case}.events.txt"), &render(&events));
    }
}

/// The turn that resumes an answer cut off after "The quick brown fox jumps".
pub fn pangram_resume() -> PromptBody {
    PromptBody::Resume {
        messages: vec![ChatMessage::new(Role::User, "Write the pangram.")],
        partial: "The quick brown fox jumps".into(),
    }
}

/// `dir/resumed_overlap.sse` read with `R` for `resume` (a [`pangram_resume`] turn): what
/// repeats the end of the part already sent is left out, and the events are
/// `resumed_overlap.events.txt`.
pub fn check_resumed_overlap<R: Reader>(dir: &Path, resume: &PromptInput) {
    let events = read::<R>(resume, &sse(dir, "resumed_overlap"));
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            WorkerEvent::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, " over the lazy dog.");
    check(dir, "resumed_overlap.events.txt", &render(&events));
}

/// An upstream error answer: its status, headers and body.
pub type ErrorCase = (u16, Vec<(&'static str, &'static str)>, String);

/// Each case's error as `classify` makes it from the status, the `Retry-After` the headers
/// say and the body: one line per case, compared with `dir/errors.txt` (naming each error's
/// `param` too when `with_param`); the errors, in order, for the caller's own checks.
pub fn check_errors(
    dir: &Path,
    cases: Vec<ErrorCase>,
    classify: fn(u16, Option<Duration>, &[u8]) -> ApiError,
    with_param: bool,
) -> Vec<ApiError> {
    let mut out = String::new();
    let mut errors = Vec::new();
    for (status, headers, body) in cases {
        let mut map = http::HeaderMap::new();
        for (name, value) in &headers {
            map.insert(*name, value.parse().unwrap());
        }
        let error = classify(status, openai::retry_after(&map), body.as_bytes());
        let param = if with_param {
            format!(" param={:?}", error.param)
        } else {
            String::new()
        };
        writeln!(
            out,
            "{status} {headers:?} -> kind={} status={} retryable={} retry_after={:?}{param} message={:?}",
            error.kind,
            error.status(),
            error.retryable(),
            error.retry_after,
            error.message
        )
        .unwrap();
        errors.push(error);
    }
    check(dir, "errors.txt", &out);
    errors
}

/// A turn of `model` on account `account` with `body`, nothing else set.
pub fn input(model: &str, account: &str, body: PromptBody) -> PromptInput {
    PromptInput {
        request_id: "req-1".into(),
        model: model.into(),
        account: Some(account.into()),
        body,
        max_output_tokens: None,
        tools: TurnTools::default(),
        live_session: None,
        conversation: None,
        params: Default::default(),
    }
}

/// A conversation with every kind of message: system and developer, a user turn, an
/// assistant turn with text and two tool calls, their two results, and a last user turn.
pub fn tool_conversation() -> Vec<ChatMessage> {
    let call = |id: &str, name: &str, arguments: &str| ToolCall {
        id: id.into(),
        kind: "function".into(),
        function: FunctionCall {
            name: name.into(),
            arguments: arguments.into(),
        },
    };
    vec![
        ChatMessage::new(Role::System, "Be brief."),
        ChatMessage::new(Role::Developer, "Use metric units."),
        ChatMessage::new(Role::User, "Weather and time in Paris?"),
        ChatMessage {
            role: Role::Assistant,
            content: Some(MessageContent::Text("Checking both.".into())),
            name: None,
            tool_calls: Some(vec![
                call("call_abc", "get_weather", "{\"city\":\"Paris\"}"),
                call("call_def", "get_time", ""),
            ]),
            tool_call_id: None,
        },
        ChatMessage {
            tool_call_id: Some("call_abc".into()),
            ..ChatMessage::new(Role::Tool, "18°C, sunny")
        },
        ChatMessage {
            tool_call_id: Some("call_def".into()),
            ..ChatMessage::new(Role::Tool, "{\"time\":\"14:05\"}")
        },
        ChatMessage::new(Role::User, "And tomorrow?"),
    ]
}

/// The tools of [`tool_conversation`], with `choice`.
pub fn tools(choice: ToolChoice, parallel: bool) -> TurnTools {
    TurnTools {
        tools: vec![
            Tool::function(
                "get_weather",
                "The weather in a city",
                json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
            ),
            Tool {
                kind: "function".into(),
                function: FunctionDef {
                    name: "get_time".into(),
                    description: None,
                    parameters: None,
                    strict: None,
                },
            },
        ],
        choice,
        parallel,
    }
}

/// `value`'s object.
pub fn params(value: Value) -> serde_json::Map<String, Value> {
    value.as_object().cloned().unwrap()
}

/// A user message with text and two images: one inline (`data:`), one by `https://` URL.
pub fn image_message() -> ChatMessage {
    serde_json::from_value(json!({"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp?size=2"}},
    ]}))
    .expect("an image message")
}
