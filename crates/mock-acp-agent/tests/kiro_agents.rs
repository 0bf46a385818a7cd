//! The real mock binary, driven by a raw ACP client, speaking the parts of Kiro 2.22 that
//! tool-less agents and long turns need: custom agents (`--agent` on v2, modes on v3, inline
//! agents), autopilot and the shell tool's permission request, the `busy` tool phase,
//! several thoughts, and v3's access-token request.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers panic on failure, like the tests that call them"
)]

mod raw;

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use raw::{Raw, kind, text};
use serde_json::{Value, json};

const NO_TOOLS: &str = "I have no tools to run that.";
const V2: [&str; 3] = ["acp", "--agent-engine", "v2"];
const V3: [&str; 5] = ["acp", "--agent-engine", "v3", "--auth-method", "cli"];

fn write_agent(home: &Path, file: &str, body: &Value) {
    let dir = home.join(".kiro/agents");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(file), body.to_string()).unwrap();
}

fn quiet_agent(name: &str) -> Value {
    json!({
        "name": name,
        "description": "answers without tools",
        "prompt": "You only talk.",
        "tools": [],
        "mcpServers": {},
        "includeMcpJson": false,
    })
}

fn session_id(result: &Value) -> String {
    result["sessionId"].as_str().unwrap().to_owned()
}

fn count(frames: &[Value], wanted: &str) -> usize {
    frames.iter().filter(|frame| kind(frame) == wanted).count()
}

/// Every tool-using directive gets a text answer and no tool call or permission request.
async fn assert_tool_less(raw: &mut Raw, session: &str, label: &str) {
    for directive in [
        "[[mock:tools n=2]]",
        "[[mock:shell]]",
        "[[mock:busy secs=1]]",
    ] {
        let (frames, answer) = raw.prompt(session, &format!("{directive}go")).await;
        assert_eq!(
            answer.unwrap()["stopReason"],
            "end_turn",
            "{label} {directive}"
        );
        assert_eq!(text(&frames), NO_TOOLS, "{label} {directive}");
        for unwanted in [
            "tool_call",
            "tool_call_update",
            "session/request_permission",
            "_kiro.dev/session/update",
        ] {
            assert_eq!(
                count(&frames, unwanted),
                0,
                "{label} {directive}: {frames:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_v2_agent_from_its_file_has_no_tools() {
    let home = tempfile::tempdir().unwrap();
    write_agent(home.path(), "quiet.json", &quiet_agent("quiet"));
    let args = [&V2[..], &["--agent", "quiet"]].concat();
    let mut raw = raw::start(&args, home.path()).await;
    let session = raw.new_session(home.path(), Value::Null).await;
    assert_eq!(session["modes"]["currentModeId"], "quiet");
    let session = session_id(&session);
    assert_tool_less(&mut raw, &session, "v2 --agent").await;
    let (frames, _) = raw.prompt(&session, "still talks").await;
    assert_eq!(text(&frames), "still talks");
    // Without --agent the same directive runs its tools; --model picks the first model.
    let args = [&V2[..], &["--model", "claude-opus-4.8"]].concat();
    let mut tools = raw::start(&args, home.path()).await;
    let session = session_id(&tools.new_session(home.path(), Value::Null).await);
    let (frames, _) = tools.prompt(&session, "[[mock:tools n=2]]x").await;
    assert_eq!(count(&frames, "tool_call"), 2);
    let (frames, _) = tools.prompt(&session, "[[mock:model]]").await;
    assert_eq!(text(&frames), "model: claude-opus-4.8");
}

/// The mock's exit status and stderr for a command line that must not start.
fn refused_start(args: &[&str], home: &Path) -> (Option<i32>, String) {
    let output = std::process::Command::new(raw::MOCK)
        .args(args)
        .env("HOME", home)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_agent_flags_stop_the_start() {
    let home = tempfile::tempdir().unwrap();
    let (status, stderr) = refused_start(&[&V2[..], &["--agent", "absent"]].concat(), home.path());
    assert_ne!(status, Some(0));
    assert!(stderr.contains("absent.json"), "{stderr}");
    std::fs::create_dir_all(home.path().join(".kiro/agents")).unwrap();
    std::fs::write(home.path().join(".kiro/agents/torn.json"), "{\"name\":").unwrap();
    let (status, _) = refused_start(&[&V2[..], &["--agent", "torn"]].concat(), home.path());
    assert_ne!(status, Some(0));
    write_agent(home.path(), "quiet.json", &quiet_agent("quiet"));
    for flags in [
        &["--agent", "quiet"][..],
        &["--model", "claude-sonnet-5"],
        &["--trust-all-tools"],
    ] {
        let (status, stderr) = refused_start(&[&V3[..], flags].concat(), home.path());
        assert_ne!(status, Some(0), "v3 {flags:?}");
        assert!(stderr.contains(flags[0]), "{stderr}");
    }
}

#[tokio::test]
async fn v3_offers_agent_files_and_inline_agents_as_modes() {
    let home = tempfile::tempdir().unwrap();
    write_agent(home.path(), "quiet.json", &quiet_agent("quiet"));
    write_agent(
        home.path(),
        "dropped.json",
        &json!({ "name": "dropped", "allowedTools": [], "tools": [] }),
    );
    write_agent(
        home.path(),
        "helper.json",
        &json!({ "name": "helper", "prompt": "help", "tools": ["shell"] }),
    );
    let mut raw = raw::start(&V3, home.path()).await;
    let meta = json!({ "kiro": { "customAgents": [
        { "id": "inline-quiet", "prompt": "You only talk.", "tools": [] },
    ] } });
    let result = raw.new_session(home.path(), meta).await;
    let modes: Vec<&str> = result["modes"]["availableModes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|mode| mode["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        modes,
        [
            "kiro_default",
            "kiro_planner",
            "helper",
            "quiet",
            "inline-quiet"
        ]
    );
    let session = session_id(&result);
    let unknown = raw
        .call(
            "session/set_mode",
            json!({ "sessionId": session, "modeId": "dropped" }),
        )
        .await;
    assert!(unknown.is_err(), "{unknown:?}");
    for agent in ["quiet", "inline-quiet"] {
        let start = raw.log.len();
        raw.call(
            "session/set_mode",
            json!({ "sessionId": session, "modeId": agent }),
        )
        .await
        .unwrap();
        let update = raw.log[start..]
            .iter()
            .find(|frame| kind(frame) == "current_mode_update")
            .expect("current_mode_update");
        assert_eq!(update["params"]["update"]["currentModeId"], agent);
        assert_tool_less(&mut raw, &session, agent).await;
    }
    // Back to the default agent, the shell runs again (autopilot is on).
    raw.call(
        "session/set_mode",
        json!({ "sessionId": session, "modeId": "kiro_default" }),
    )
    .await
    .unwrap();
    let (frames, _) = raw.prompt(&session, "[[mock:shell]]").await;
    assert_eq!(text(&frames), "shell: ran without asking");
    // An inline agent belongs to its session only.
    let other = raw.new_session(home.path(), Value::Null).await;
    assert_eq!(
        other["modes"]["availableModes"].as_array().unwrap().len(),
        4
    );
}

/// The shell turn's frames, answered by `raw`'s current policy.
async fn shell(raw: &mut Raw, session: &str) -> (Vec<Value>, Value) {
    let (frames, answer) = raw.prompt(session, "[[mock:shell]]").await;
    let answer = answer.unwrap();
    assert_eq!(answer["stopReason"], "end_turn");
    (frames, answer)
}

fn tool_statuses(frames: &[Value]) -> Vec<(String, String)> {
    frames
        .iter()
        .filter(|frame| matches!(kind(frame), "tool_call" | "tool_call_update"))
        .map(|frame| {
            let update = &frame["params"]["update"];
            (
                update["kind"].as_str().unwrap_or("").to_owned(),
                update["status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn v3_autopilot_decides_whether_the_shell_asks() {
    let home = tempfile::tempdir().unwrap();
    let mut raw = raw::start(&V3, home.path()).await;
    let session = session_id(&raw.new_session(home.path(), Value::Null).await);
    let (frames, _) = shell(&mut raw, &session).await;
    assert_eq!(count(&frames, "session/request_permission"), 0);
    let statuses = tool_statuses(&frames);
    assert_eq!(statuses.len(), 2, "{frames:?}");
    assert_eq!(statuses[0].0, "execute");
    assert_eq!(statuses[1].1, "completed");
    assert_eq!(text(&frames), "shell: ran without asking");

    raw.call(
        "session/set_config_option",
        json!({ "sessionId": session, "configId": "autopilot", "value": "off" }),
    )
    .await
    .unwrap();
    raw.answer = raw::select("reject_once");
    let (frames, _) = shell(&mut raw, &session).await;
    let asked = frames
        .iter()
        .find(|frame| kind(frame) == "session/request_permission")
        .expect("a permission request");
    let options: Vec<&str> = asked["params"]["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|option| option["optionId"].as_str().unwrap())
        .collect();
    assert_eq!(options, ["allow_once", "reject_once", "reject_always"]);
    assert!(asked["params"]["_meta"]["kiro"]["consent"].is_object());
    assert!(
        text(&frames).contains("the command was not run"),
        "{}",
        text(&frames)
    );
    assert_eq!(tool_statuses(&frames)[1].1, "failed");

    raw.answer = raw::select("allow_once");
    let (frames, _) = shell(&mut raw, &session).await;
    assert_eq!(text(&frames), "shell: allowed (allow_once)");
    assert_eq!(tool_statuses(&frames)[1].1, "completed");
}

#[tokio::test]
async fn v2_always_asks_before_the_shell() {
    let home = tempfile::tempdir().unwrap();
    let mut raw = raw::start(&V2, home.path()).await;
    let session = session_id(&raw.new_session(home.path(), Value::Null).await);
    raw.answer = raw::select("reject_always");
    let (frames, _) = shell(&mut raw, &session).await;
    assert_eq!(count(&frames, "session/request_permission"), 1);
    assert_eq!(
        text(&frames),
        "shell: refused (reject_always); the command was not run"
    );
    raw.answer = raw::select("allow_once");
    let (frames, _) = shell(&mut raw, &session).await;
    assert_eq!(count(&frames, "session/request_permission"), 1);
    assert_eq!(text(&frames), "shell: allowed (allow_once)");
}

#[tokio::test]
async fn a_busy_phase_sends_only_non_text_frames_then_answers() {
    let home = tempfile::tempdir().unwrap();
    for (args, metering) in [
        (&V2[..], "_kiro.dev/metadata"),
        (&V3[..], "session_info_update"),
        (&["acp"][..], "_kiro.dev/metadata"),
    ] {
        let mut raw = raw::start(args, home.path()).await;
        let session = session_id(&raw.new_session(home.path(), Value::Null).await);
        let started = Instant::now();
        let (frames, answer) = raw
            .prompt(&session, "[[mock:busy secs=1]]hello there")
            .await;
        assert!(started.elapsed() >= Duration::from_millis(900), "{args:?}");
        assert_eq!(answer.unwrap()["stopReason"], "end_turn");
        assert_eq!(text(&frames), "hello there", "{args:?}");
        let first_text = frames
            .iter()
            .position(|frame| kind(frame) == "agent_message_chunk")
            .unwrap();
        let early = &frames[..first_text];
        assert!(early.len() >= 2, "{args:?}: {early:?}");
        assert!(count(early, "tool_call_update") >= 2, "{args:?}: {early:?}");
        let after = &frames[first_text..];
        assert!(
            after.iter().any(|frame| kind(frame) == metering),
            "{args:?}"
        );
        match args.get(2).copied() {
            Some("v3") => {
                assert_eq!(
                    early[0]["params"]["update"]["_meta"]["kiro"]["kind"],
                    "turn_start"
                );
            }
            Some("v2") => {
                assert_eq!(kind(&early[0]), "_kiro.dev/session/update");
                assert!(count(early, "_kiro.dev/session/update") >= 2);
            }
            _ => assert_eq!(kind(&early[0]), "tool_call"),
        }
    }
}

#[tokio::test]
async fn a_busy_phase_ends_on_cancel() {
    let home = tempfile::tempdir().unwrap();
    for args in [&V2[..], &V3[..]] {
        let mut raw = raw::start(args, home.path()).await;
        let session = session_id(&raw.new_session(home.path(), Value::Null).await);
        let started = Instant::now();
        let id = raw
            .send_request(
                "session/prompt",
                json!({ "sessionId": session, "prompt": [{ "type": "text", "text": "[[mock:busy secs=60 every_ms=50]]never" }] }),
            )
            .await;
        while kind(&raw.recv().await) != "tool_call_update" {}
        raw.notify("session/cancel", json!({ "sessionId": session }))
            .await;
        let answer = raw.response(id).await.unwrap();
        assert_eq!(answer["stopReason"], "cancelled");
        assert!(started.elapsed() < Duration::from_secs(30));
        assert_eq!(text(&raw.log), "");
    }
}

#[tokio::test]
async fn several_thoughts_come_before_the_answer() {
    let home = tempfile::tempdir().unwrap();
    let mut raw = raw::start(&V3, home.path()).await;
    let session = session_id(&raw.new_session(home.path(), Value::Null).await);
    for (directive, thoughts) in [
        ("[[mock:thought n=3 delay_ms=5]]", 3),
        ("[[mock:thought]]", 1),
    ] {
        let (frames, _) = raw.prompt(&session, directive).await;
        let first_text = frames
            .iter()
            .position(|frame| kind(frame) == "agent_message_chunk")
            .unwrap();
        assert_eq!(
            count(&frames[..first_text], "agent_thought_chunk"),
            thoughts
        );
        assert_eq!(count(&frames, "agent_thought_chunk"), thoughts);
        assert_eq!(text(&frames), "done");
    }
}

fn token_requests(log: &[Value]) -> usize {
    count(log, "_kiro/auth/getAccessToken")
}

fn prompt_params(session: &str, text: &str) -> Value {
    json!({ "sessionId": session, "prompt": [{ "type": "text", "text": text }] })
}

#[tokio::test]
async fn v3_without_cli_auth_stalls_when_the_client_has_no_token() {
    let home = tempfile::tempdir().unwrap();
    let mut raw = raw::start(&["acp", "--agent-engine", "v3"], home.path()).await;
    let stalled = session_id(&raw.new_session(home.path(), Value::Null).await);
    let prompted = raw.log.len();
    let first = raw
        .send_request("session/prompt", prompt_params(&stalled, "hello"))
        .await;
    // The agent asks for a token first, and gets an error.
    let asked = raw.recv().await;
    assert_eq!(kind(&asked), "_kiro/auth/getAccessToken");
    assert_eq!(asked["params"]["sessionId"], stalled.as_str());
    // A second session's turn, given a token, answers; the first is still running.
    raw.answer = Box::new(|_| json!({ "result": { "accessToken": "mock-token" } }));
    let other = session_id(&raw.new_session(home.path(), Value::Null).await);
    let (frames, answer) = raw.prompt(&other, "[[mock:stats]]").await;
    assert_eq!(answer.unwrap()["stopReason"], "end_turn");
    let stats: Value = serde_json::from_str(&text(&frames)).unwrap();
    assert_eq!(stats["active_turns"], 2, "the stalled turn is alive");
    // Later turns do not ask again.
    let (frames, _) = raw.prompt(&other, "again").await;
    assert_eq!(token_requests(&frames), 0);
    assert_eq!(text(&frames), "again");
    // Nothing was ever sent for the stalled session; a cancel ends it.
    let stalled_frames = |log: &[Value]| {
        log.iter()
            .filter(|frame| frame["method"] == "session/update")
            .filter(|frame| frame["params"]["sessionId"] == stalled.as_str())
            .count()
    };
    assert_eq!(stalled_frames(&raw.log[prompted..]), 0);
    raw.notify("session/cancel", json!({ "sessionId": stalled }))
        .await;
    let answer = raw.response(first).await.unwrap();
    assert_eq!(answer["stopReason"], "cancelled");
    assert_eq!(stalled_frames(&raw.log[prompted..]), 0);
}

#[tokio::test]
async fn v3_with_cli_auth_never_asks_and_the_auth_directive_still_does() {
    let home = tempfile::tempdir().unwrap();
    let mut raw = raw::start(&V3, home.path()).await;
    let session = session_id(&raw.new_session(home.path(), Value::Null).await);
    let (frames, answer) = raw.prompt(&session, "hi").await;
    assert_eq!(answer.unwrap()["stopReason"], "end_turn");
    assert_eq!(text(&frames), "hi");
    assert_eq!(token_requests(&raw.log), 0);
    let (frames, _) = raw.prompt(&session, "[[mock:auth]]").await;
    assert_eq!(token_requests(&frames), 1);
    assert_eq!(text(&frames), "auth: error -32601");
    // The environment says the same as the flag.
    let env = [("MOCK_ACP_AUTH_METHOD", "cli")];
    let mut raw = raw::start_program(
        raw::MOCK,
        &["acp", "--agent-engine", "v3"],
        home.path(),
        &env,
    )
    .await;
    let session = session_id(&raw.new_session(home.path(), Value::Null).await);
    let (frames, _) = raw.prompt(&session, "hi").await;
    assert_eq!(text(&frames), "hi");
    assert_eq!(token_requests(&raw.log), 0);
}

#[tokio::test]
async fn plain_mode_keeps_its_shell_reply() {
    let home = tempfile::tempdir().unwrap();
    let mut raw = raw::start(&["acp"], home.path()).await;
    let session = session_id(&raw.new_session(home.path(), Value::Null).await);
    raw.answer = raw::select("reject_once");
    let (frames, _) = shell(&mut raw, &session).await;
    assert_eq!(text(&frames), "shell: refused (reject_once)");
}
