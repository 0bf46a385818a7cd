//! `drawbridge-acp` against the real `mock-acp-agent` binary speaking Kiro 2.22's two
//! dialects (`--kiro-engine v2|v3`) and plain ACP: engine detection, model catalogue and
//! choice, session deletion, every frame as an event, reported token usage, and requests the
//! client cannot serve.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers panic on failure, like the tests that call them"
)]

mod common;

use common::text_of;

use std::path::Path;
use std::time::Duration;

use drawbridge_acp::{
    AcpError, Activity, AgentEvent, AgentProcess, AgentSpec, Engine, ModelSelector, PromptOutcome,
    Session, StopReason, TokenUsage,
};

const MOCK: &str = env!("CARGO_BIN_EXE_mock-acp-agent");
const HANDSHAKE: Duration = Duration::from_secs(10);
const MODELS: [&str; 5] = mock_acp_agent::DEFAULT_MODELS;

/// A mock speaking `engine` ("" for plain ACP) with its home under `dir`; v3 logs in the
/// way kiro-cli does headless (`--auth-method cli`), so it never asks for a token.
fn spec(dir: &Path, engine: &str) -> AgentSpec {
    let mut args: Vec<String> = if engine.is_empty() {
        Vec::new()
    } else {
        vec!["acp".into(), "--kiro-engine".into(), engine.into()]
    };
    if engine == "v3" {
        args.extend(["--auth-method".into(), "cli".into()]);
    }
    let mut spec = AgentSpec::new(MOCK, args, dir);
    spec.home = Some(dir.join("home"));
    spec
}

async fn start(dir: &Path, engine: &str) -> AgentProcess {
    AgentProcess::start(&spec(dir, engine), HANDSHAKE)
        .await
        .unwrap()
}

/// One turn on `session` (or a throwaway one), collecting every event.
async fn turn(
    process: &AgentProcess,
    session: Option<&Session>,
    text: &str,
) -> (Vec<AgentEvent>, Result<PromptOutcome, AcpError>) {
    common::collected(|tx| async move {
        match session {
            Some(session) => {
                process
                    .prompt_in(session, text.to_owned(), tx, std::future::pending())
                    .await
            }
            None => process.prompt(text.to_owned(), tx).await,
        }
    })
    .await
}

fn session_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("home/.kiro/sessions")).map_or(0, Iterator::count)
}

#[tokio::test]
async fn the_engine_is_told_from_initialize() {
    let dir = tempfile::tempdir().unwrap();
    for (engine, expected) in [
        ("", Engine::Other),
        ("v2", Engine::KiroV2),
        ("v3", Engine::KiroV3),
    ] {
        let process = start(dir.path(), engine).await;
        assert_eq!(process.engine(), expected, "{engine}");
        assert_eq!(process.deletes_sessions(), engine == "v3", "{engine}");
    }
}

#[tokio::test]
async fn the_catalogue_is_read_from_session_new_on_both_dialects() {
    let dir = tempfile::tempdir().unwrap();
    for (engine, selector) in [
        ("v2", ModelSelector::SetModel),
        ("v3", ModelSelector::ConfigOption("model".to_owned())),
    ] {
        let process = start(dir.path(), engine).await;
        assert_eq!(process.models(), None, "nothing before a session");
        let session = process.new_session().await.unwrap();
        let catalogue = session.models().unwrap().clone();
        assert_eq!(catalogue.ids().collect::<Vec<_>>(), MODELS, "{engine}");
        assert_eq!(catalogue.current.as_deref(), Some(MODELS[0]));
        assert_eq!(catalogue.selector, selector);
        assert_eq!(process.models(), Some(catalogue));
    }
    let plain = start(dir.path(), "").await;
    let session = plain.new_session().await.unwrap();
    assert_eq!(session.models(), None);
    assert_eq!(plain.models(), None);
}

#[tokio::test]
async fn a_cold_first_session_lacks_the_catalogue_and_the_next_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(dir.path(), "v3");
    spec.args.push("--cold-catalogue".to_owned());
    spec.env
        .insert("MOCK_ACP_MODELS".to_owned(), "m-one,m-two".to_owned());
    let process = AgentProcess::start(&spec, HANDSHAKE).await.unwrap();
    let cold = process.new_session().await.unwrap();
    assert_eq!(cold.models(), None);
    assert_eq!(process.models(), None);
    let warm = process.new_session().await.unwrap();
    let ids: Vec<String> = warm.models().unwrap().ids().map(str::to_owned).collect();
    assert_eq!(ids, ["m-one", "m-two"]);
    assert!(process.models().unwrap().contains("m-two"));
}

#[tokio::test]
async fn the_chosen_model_answers_on_both_dialects() {
    let dir = tempfile::tempdir().unwrap();
    for engine in ["v2", "v3"] {
        let process = start(dir.path(), engine).await;
        let session = process.new_session().await.unwrap();
        let (events, _) = turn(&process, Some(&session), "[[mock:model]]").await;
        assert_eq!(text_of(&events), format!("model: {}", MODELS[0]));
        process.set_model(&session, "gpt-5.6-luna").await.unwrap();
        let (events, outcome) = turn(&process, Some(&session), "[[mock:model]]").await;
        assert_eq!(outcome.unwrap().stop_reason, StopReason::EndTurn);
        assert_eq!(text_of(&events), "model: gpt-5.6-luna", "{engine}");
        // Another session keeps the default.
        let other = process.new_session().await.unwrap();
        let (events, _) = turn(&process, Some(&other), "[[mock:model]]").await;
        assert_eq!(text_of(&events), format!("model: {}", MODELS[0]));
    }
}

#[tokio::test]
async fn unknown_models_fail_the_way_each_engine_does() {
    let dir = tempfile::tempdir().unwrap();
    // v3 refuses the choice itself.
    let v3 = start(dir.path(), "v3").await;
    let session = v3.new_session().await.unwrap();
    let error = v3.set_model(&session, "no-such-model").await.unwrap_err();
    assert!(
        matches!(
            error,
            AcpError::Agent {
                method: "session/set_config_option",
                ..
            }
        ),
        "{error:?}"
    );
    // v2 takes any id and fails at prompt time.
    let v2 = start(dir.path(), "v2").await;
    let session = v2.new_session().await.unwrap();
    v2.set_model(&session, "no-such-model").await.unwrap();
    let (_, outcome) = turn(&v2, Some(&session), "hello").await;
    assert!(
        matches!(&outcome, Err(AcpError::Agent { message, .. }) if message.contains("no-such-model")),
        "{outcome:?}"
    );
    // An agent without a catalogue cannot choose, and nothing is sent.
    let plain = start(dir.path(), "").await;
    let session = plain.new_session().await.unwrap();
    let error = plain.set_model(&session, "gpt-5.6-luna").await.unwrap_err();
    assert!(matches!(error, AcpError::Unsupported(_)), "{error:?}");
    assert!(!error.retryable());
    let (events, _) = turn(&plain, Some(&session), "still fine").await;
    assert_eq!(text_of(&events), "still fine");
}

#[tokio::test]
async fn v3_sessions_are_deleted_and_the_home_does_not_grow() {
    let dir = tempfile::tempdir().unwrap();
    let process = start(dir.path(), "v3").await;
    for round in 0..5 {
        let (events, outcome) = turn(&process, None, &format!("round {round}")).await;
        assert_eq!(outcome.unwrap().stop_reason, StopReason::EndTurn);
        assert_eq!(text_of(&events), format!("round {round}"));
        assert_eq!(session_files(dir.path()), 0, "round {round}");
    }
    // An explicit session stays on disk until it is deleted.
    let session = process.new_session().await.unwrap();
    turn(&process, Some(&session), "kept").await.1.unwrap();
    assert_eq!(session_files(dir.path()), 1);
    assert!(process.delete_session(&session).await.unwrap());
    assert_eq!(session_files(dir.path()), 0);
    // The agent forgot it.
    let (_, outcome) = turn(&process, Some(&session), "anyone?").await;
    assert!(
        matches!(outcome, Err(AcpError::Agent { .. })),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn agents_without_session_delete_get_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for engine in ["", "v2"] {
        let process = start(dir.path(), engine).await;
        let session = process.new_session().await.unwrap();
        assert!(!process.delete_session(&session).await.unwrap());
        // The session is still there: nothing was sent.
        let (events, _) = turn(&process, Some(&session), "alive").await;
        assert_eq!(text_of(&events), "alive");
    }
}

/// The index of the first text event, and every event before it.
fn before_text(events: &[AgentEvent]) -> &[AgentEvent] {
    let first_text = events
        .iter()
        .position(AgentEvent::is_text)
        .expect("some text");
    &events[..first_text]
}

#[tokio::test]
async fn tool_frames_and_thoughts_arrive_as_events_before_the_text() {
    let dir = tempfile::tempdir().unwrap();
    for engine in ["v2", "v3"] {
        let process = start(dir.path(), engine).await;
        let (events, outcome) = turn(&process, None, "[[mock:tools n=2]]the answer").await;
        assert_eq!(outcome.unwrap().stop_reason, StopReason::EndTurn);
        assert_eq!(text_of(&events), "the answer");
        let early = before_text(&events);
        let tool_calls = early
            .iter()
            .filter(|event| {
                matches!(
                    event,
                    AgentEvent::Activity(Activity::ToolCall { kind: Some(kind), status: Some(status), .. })
                        if kind == "read" && status == "in_progress"
                )
            })
            .count();
        let completed = early
            .iter()
            .filter(|event| {
                matches!(
                    event,
                    AgentEvent::Activity(Activity::ToolCallUpdate { status: Some(status), .. })
                        if status == "completed"
                )
            })
            .count();
        assert_eq!((tool_calls, completed), (2, 2), "{engine}: {early:?}");
        match engine {
            "v2" => assert_eq!(
                early[0],
                AgentEvent::Activity(Activity::Extension("_kiro.dev/session/update".to_owned()))
            ),
            _ => assert_eq!(
                early[0],
                AgentEvent::Activity(Activity::SessionInfo {
                    kind: Some("turn_start".to_owned())
                })
            ),
        }
    }
    let process = start(dir.path(), "v3").await;
    let (events, _) = turn(&process, None, "[[mock:thought]]").await;
    assert_eq!(
        before_text(&events).last(),
        Some(&AgentEvent::Thought("thinking...".to_owned()))
    );
}

#[tokio::test]
async fn v3_metering_and_turn_frames_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let process = start(dir.path(), "v3").await;
    let (events, outcome) =
        turn(&process, None, "[[mock:echo credits=0.2213 context=1.21]]x").await;
    let usage = outcome.unwrap().usage;
    assert_eq!(usage.credits, Some(0.2213));
    assert_eq!(usage.context_usage_percent, Some(1.21));
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|event| match event {
            AgentEvent::Activity(Activity::SessionInfo { kind }) => kind.as_deref(),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        ["turn_start", "turn_completion", "context_usage", "turn_end"]
    );
}

#[tokio::test]
async fn reported_token_usage_is_kept_apart_and_absent_when_not_reported() {
    let dir = tempfile::tempdir().unwrap();
    for engine in ["", "v3"] {
        let process = start(dir.path(), engine).await;
        let (_, outcome) = turn(
            &process,
            None,
            "[[mock:echo input_tokens=10 output_tokens=5]]hi",
        )
        .await;
        let usage = outcome.unwrap().usage;
        assert!(usage.tokens_reported(), "{engine}");
        assert_eq!(
            usage.tokens,
            Some(TokenUsage {
                input_tokens: 10,
                output_tokens: 5,
                total_tokens: 15,
                ..TokenUsage::default()
            })
        );
        assert_eq!(
            usage.context_window.map(|w| (w.used, w.size)),
            Some((15, 200_000))
        );
        let (_, outcome) = turn(&process, None, "no tokens").await;
        let usage = outcome.unwrap().usage;
        assert!(!usage.tokens_reported());
        assert_eq!(usage.context_window, None);
        assert!(usage.credits.is_some(), "credits are still reported");
    }
}

#[tokio::test]
async fn a_request_the_client_cannot_serve_is_answered_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let process = start(dir.path(), "v3").await;
    assert_eq!(process.unserved_request(), None);
    let (events, outcome) = turn(&process, None, "[[mock:auth]]").await;
    assert_eq!(outcome.unwrap().stop_reason, StopReason::EndTurn);
    assert_eq!(text_of(&events), "auth: error -32601");
    assert_eq!(
        process.unserved_request().as_deref(),
        Some(drawbridge_acp::GET_ACCESS_TOKEN_METHOD)
    );
    assert!(process.is_alive());
}

#[tokio::test]
async fn the_shell_tool_runs_under_v3_autopilot_unless_it_is_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let process = start(dir.path(), "v3").await;
    let session = process.new_session().await.unwrap();
    let (events, _) = turn(&process, Some(&session), "[[mock:shell]]").await;
    assert_eq!(text_of(&events), "shell: ran without asking");
    process
        .set_config_option(&session, "autopilot", "off")
        .await
        .unwrap();
    let (events, _) = turn(&process, Some(&session), "[[mock:shell]]").await;
    assert_eq!(
        text_of(&events),
        "shell: refused (reject_once); the command was not run"
    );
    assert!(events.iter().any(|event| matches!(
        event,
        AgentEvent::Activity(Activity::ToolCallUpdate { status: Some(status), .. }) if status == "failed"
    )));
    // v2 always asks.
    let v2 = start(dir.path(), "v2").await;
    let (events, _) = turn(&v2, None, "[[mock:shell]]").await;
    assert_eq!(
        text_of(&events),
        "shell: refused (reject_once); the command was not run"
    );
}

#[tokio::test]
async fn echo_can_name_the_model_that_answered() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(dir.path(), "v2");
    spec.args.push("--echo-model".to_owned());
    let process = AgentProcess::start(&spec, HANDSHAKE).await.unwrap();
    let session = process.new_session().await.unwrap();
    process
        .set_model(&session, "claude-haiku-4.5")
        .await
        .unwrap();
    let (events, _) = turn(&process, Some(&session), "hi there").await;
    assert_eq!(text_of(&events), "[claude-haiku-4.5] hi there");
    // Without the flag, echo is exact.
    let plain = start(dir.path(), "v2").await;
    let (events, _) = turn(&plain, None, "hi there").await;
    assert_eq!(text_of(&events), "hi there");
}
