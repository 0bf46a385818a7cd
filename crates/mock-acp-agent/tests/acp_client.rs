//! `drawbridge-acp` driving the real `mock-acp-agent` binary: real processes, real ACP.

// clippy's allow-unwrap-in-tests covers `#[test]` functions only, not the helpers below.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers panic on failure, like the tests that call them"
)]

mod common;

use common::{GUARD, text_of};

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use drawbridge_acp::{
    AcpError, Activity, AgentEvent, AgentProcess, AgentSpec, PermissionPolicy, PromptOutcome,
    StopReason, UsageReport,
};
use tokio::sync::mpsc;
use tokio::time::timeout;

const MOCK: &str = env!("CARGO_BIN_EXE_mock-acp-agent");
const HANDSHAKE: Duration = Duration::from_secs(10);

fn spec(cwd: &Path) -> AgentSpec {
    AgentSpec::new(MOCK, Vec::<String>::new(), cwd)
}

async fn start(spec: &AgentSpec) -> AgentProcess {
    AgentProcess::start(spec, HANDSHAKE).await.unwrap()
}

/// Run one prompt, collecting its events concurrently.
async fn run(
    process: &AgentProcess,
    text: &str,
) -> (Vec<AgentEvent>, Result<PromptOutcome, AcpError>) {
    common::collected(|tx| process.prompt(text.to_owned(), tx)).await
}

fn texts(events: &[AgentEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|event| match event {
            AgentEvent::Text(text) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

async fn wait_until_gone(pid: u32) {
    let proc_dir = format!("/proc/{pid}");
    timeout(GUARD, async {
        while Path::new(&proc_dir).exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("process {pid} still exists"));
}

#[tokio::test]
async fn echo_round_trips_multiline_unicode_text() {
    let dir = tempfile::tempdir().unwrap();
    let process = start(&spec(dir.path())).await;
    let text = "Grüße, 世界! 🦀 crab\n  indented second line\twith a tab\n\nthird — the end  ";
    let (events, outcome) = run(&process, text).await;
    let outcome = outcome.unwrap();
    assert_eq!(outcome.stop_reason, StopReason::EndTurn);
    assert_eq!(text_of(&events), text);
    assert!(events.len() > 5, "streamed word by word: {events:?}");
    assert_eq!(texts(&events)[0], "Grüße, ");
}

#[tokio::test]
async fn stream_yields_its_chunks_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let process = start(&spec(dir.path())).await;
    let (events, outcome) = run(&process, "[[mock:stream n=5]]").await;
    assert_eq!(outcome.unwrap().stop_reason, StopReason::EndTurn);
    assert_eq!(
        texts(&events),
        ["chunk 0 ", "chunk 1 ", "chunk 2 ", "chunk 3 ", "chunk 4 "]
    );
}

#[tokio::test]
async fn every_event_is_delivered_before_the_prompt_returns() {
    let dir = tempfile::tempdir().unwrap();
    let process = start(&spec(dir.path())).await;
    let (tx, mut rx) = mpsc::channel(64);
    let outcome = timeout(GUARD, process.prompt("[[mock:stream n=20]]".to_owned(), tx))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.stop_reason, StopReason::EndTurn);
    let mut delivered = Vec::new();
    while let Ok(event) = rx.try_recv() {
        delivered.push(event);
    }
    assert_eq!(texts(&delivered).len(), 20);
    assert_eq!(delivered[19], AgentEvent::Text("chunk 19 ".to_owned()));
    assert_eq!(
        delivered.last(),
        Some(&AgentEvent::Activity(Activity::Metering)),
        "the turn's metering arrives last"
    );
}

#[tokio::test]
async fn behaviour_from_the_environment_and_directive_override() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(dir.path());
    spec.env
        .insert("MOCK_ACP_BEHAVIOR".to_owned(), "stream n=2".to_owned());
    let process = start(&spec).await;
    let (events, _) = run(&process, "ignored").await;
    assert_eq!(texts(&events), ["chunk 0 ", "chunk 1 "]);
    let (events, _) = run(&process, "[[mock:stream n=1]] x [[mock:echo]]kept").await;
    assert_eq!(text_of(&events), " x kept");
}

#[tokio::test]
async fn stop_reasons_and_thoughts() {
    let dir = tempfile::tempdir().unwrap();
    let process = start(&spec(dir.path())).await;

    let (events, outcome) = run(&process, "[[mock:max_tokens n=2]]").await;
    assert_eq!(outcome.unwrap().stop_reason, StopReason::MaxTokens);
    assert_eq!(texts(&events), ["chunk 0 ", "chunk 1 "]);

    let (events, outcome) = run(&process, "[[mock:refusal]]").await;
    assert_eq!(outcome.unwrap().stop_reason, StopReason::Refusal);
    assert_eq!(texts(&events).len(), 1);

    let (events, outcome) = run(&process, "[[mock:thought]]").await;
    assert_eq!(outcome.unwrap().stop_reason, StopReason::EndTurn);
    assert_eq!(
        events,
        [
            AgentEvent::Thought("thinking...".to_owned()),
            AgentEvent::Text("done".to_owned()),
            AgentEvent::Activity(Activity::Metering),
        ]
    );
}

#[tokio::test]
async fn artifacts_arrive_split_inside_tags() {
    let dir = tempfile::tempdir().unwrap();
    let process = start(&spec(dir.path())).await;
    let (events, outcome) = run(&process, "[[mock:artifacts]]").await;
    assert_eq!(outcome.unwrap().stop_reason, StopReason::EndTurn);
    assert_eq!(
        text_of(&events),
        r#"Here is the answer.<thinking>internal reasoning</thinking> The result is 42.<tool_use>{"name":"fs_read"}</tool_use>"#
    );
    assert!(texts(&events).contains(&"king>internal reas"));
}

#[tokio::test]
async fn kiro_v2_metering_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let process = start(&spec(dir.path())).await;
    let (_, outcome) = run(&process, "[[mock:echo context=12.5 credits=0.25]]hi").await;
    assert_eq!(
        outcome.unwrap().usage,
        UsageReport {
            context_usage_percent: Some(12.5),
            credits: Some(0.25),
            ..UsageReport::default()
        }
    );
    // Defaults: 0.01 credits, context = prompt chars / 2000.
    let (_, outcome) = run(&process, &"x".repeat(1000)).await;
    assert_eq!(
        outcome.unwrap().usage,
        UsageReport {
            context_usage_percent: Some(0.5),
            credits: Some(0.01),
            ..UsageReport::default()
        }
    );
}

#[tokio::test]
async fn kiro_v3_metering_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let process = start(&spec(dir.path())).await;
    let (events, outcome) = run(&process, "[[mock:echo context=40 credits=0.5 v3=1]]ok").await;
    assert_eq!(text_of(&events), "ok");
    assert_eq!(
        outcome.unwrap().usage,
        UsageReport {
            context_usage_percent: Some(40.0),
            credits: Some(0.5),
            ..UsageReport::default()
        }
    );
}

#[tokio::test]
async fn unknown_notifications_and_other_sessions_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let process = start(&spec(dir.path())).await;
    let (events, outcome) = run(&process, "[[mock:noise context=7]]").await;
    let outcome = outcome.unwrap();
    // Unknown frames of this session are signs of life; the other session's text is not ours.
    assert_eq!(
        events,
        [
            AgentEvent::Activity(Activity::Extension(
                "_kiro.dev/commands/available".to_owned()
            )),
            AgentEvent::Activity(Activity::Update("mystery_update".to_owned())),
            AgentEvent::Activity(Activity::Usage {
                used: 50,
                size: 200
            }),
            AgentEvent::Text("ok".to_owned()),
            AgentEvent::Activity(Activity::Metering),
        ]
    );
    assert!(!outcome.usage.tokens_reported());
    assert_eq!(outcome.stop_reason, StopReason::EndTurn);
    assert_eq!(outcome.usage.context_usage_percent, Some(7.0));
    assert!(process.is_alive());
    let (events, _) = run(&process, "still fine").await;
    assert_eq!(text_of(&events), "still fine");
}

/// The agent's exit can be noticed before its last stdout lines are dispatched; the prompt must
/// still deliver every chunk the agent wrote before dying. Repeated, because it is a race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chunk_written_before_a_crash_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..15 {
        let process = start(&spec(dir.path())).await;
        let (events, outcome) = run(&process, "[[mock:crash after=5]]").await;
        assert_eq!(
            texts(&events),
            ["chunk 0 ", "chunk 1 ", "chunk 2 ", "chunk 3 ", "chunk 4 "],
            "round {round}: {outcome:?}"
        );
        assert!(
            matches!(
                outcome,
                Err(AcpError::Exited {
                    status: Some(3),
                    ..
                })
            ),
            "round {round}"
        );
    }
}

/// The race above, made to happen every time: nothing is read until the child has been reaped,
/// so the dispatch loop is stuck on a full channel with the rest of the agent's lines behind
/// it when the exit is noticed. The prompt then gives up its request, and the ACP crate sends
/// `$/cancel_request` to the dead child; that write fails (broken pipe), which must not end the
/// connection before it has delivered what the agent wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_waiting_behind_a_slow_reader_outlive_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let process = start(&spec(dir.path())).await;
    let (tx, mut rx) = mpsc::channel(1);
    let collect = async {
        timeout(GUARD, async {
            while process.is_alive() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the agent did not die");
        let mut events = Vec::new();
        while let Some(event) = rx.recv().await {
            events.push(event);
        }
        events
    };
    let prompt = process.prompt("[[mock:crash after=5]]".to_owned(), tx);
    let (outcome, events) = timeout(GUARD, futures::future::join(prompt, collect))
        .await
        .expect("prompt timed out");
    assert_eq!(
        texts(&events),
        ["chunk 0 ", "chunk 1 ", "chunk 2 ", "chunk 3 ", "chunk 4 "],
        "{outcome:?}"
    );
    assert!(
        matches!(
            outcome,
            Err(AcpError::Exited {
                status: Some(3),
                ..
            })
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn crash_reports_exit_status_and_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let process = start(&spec(dir.path())).await;
    let (events, outcome) = run(&process, "[[mock:crash after=2]]").await;
    assert_eq!(texts(&events), ["chunk 0 ", "chunk 1 "]);
    match outcome {
        Err(error @ AcpError::Exited { .. }) => {
            assert!(error.retryable());
            let AcpError::Exited {
                status,
                stderr_tail,
            } = error
            else {
                unreachable!()
            };
            assert_eq!(status, Some(3));
            assert!(
                stderr_tail.contains("mock-acp-agent: crashing as asked"),
                "{stderr_tail:?}"
            );
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    assert!(!process.is_alive());
    assert_eq!(process.pid(), None);
    // Later prompts fail fast with the same report.
    let (_, again) = run(&process, "anyone?").await;
    assert!(matches!(
        again,
        Err(AcpError::Exited {
            status: Some(3),
            ..
        })
    ));
}

#[tokio::test]
async fn dropping_a_prompt_cancels_its_turn_and_the_process_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let process = start(&spec(dir.path())).await;
    let (tx, mut rx) = mpsc::channel(1);
    {
        let prompt = process.prompt("[[mock:stream n=1000 delay_ms=10]]".to_owned(), tx);
        tokio::pin!(prompt);
        let first = timeout(GUARD, async {
            tokio::select! {
                outcome = &mut prompt => panic!("the prompt ended early: {outcome:?}"),
                event = rx.recv() => event,
            }
        })
        .await
        .unwrap();
        assert_eq!(first, Some(AgentEvent::Text("chunk 0 ".to_owned())));
    } // The prompt future is dropped here.

    // Nothing keeps the dropped prompt's sender alive: its channel closes.
    timeout(GUARD, async { while rx.recv().await.is_some() {} })
        .await
        .expect("the dropped prompt's events channel stayed open");

    // `session/cancel` was sent before the next prompt's messages, so the agent has seen it.
    let (events, outcome) = run(&process, "[[mock:stats]]").await;
    assert_eq!(outcome.unwrap().stop_reason, StopReason::EndTurn);
    let stats: serde_json::Value = serde_json::from_str(&text_of(&events)).unwrap();
    assert_eq!(stats["cancels"], 1, "{stats}");
    assert_eq!(stats["prompts"], 2, "{stats}");

    let (events, outcome) = run(&process, "next prompt works").await;
    assert_eq!(outcome.unwrap().stop_reason, StopReason::EndTurn);
    assert_eq!(text_of(&events), "next prompt works");
}

#[tokio::test]
async fn a_cancelled_prompt_waits_for_the_agents_cancelled_answer() {
    let dir = tempfile::tempdir().unwrap();
    let process = start(&spec(dir.path())).await;
    let (tx, mut rx) = mpsc::channel(4);
    let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<()>();
    let prompt = process.prompt_until(
        "[[mock:stream n=1000 delay_ms=10]]".to_owned(),
        tx,
        async move {
            let _ = cancel_rx.await;
        },
    );
    tokio::pin!(prompt);
    let mut cancel_tx = Some(cancel_tx);
    let mut seen = 0;
    let outcome = timeout(GUARD, async {
        loop {
            tokio::select! {
                outcome = &mut prompt => break outcome,
                event = rx.recv() => {
                    if event.is_some() {
                        seen += 1;
                        // Cancel after the first chunk; keep draining until the answer.
                        if let Some(tx) = cancel_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
            }
        }
    })
    .await
    .expect("the agent answers a cancel");
    assert_eq!(outcome.unwrap().stop_reason, StopReason::Cancelled);
    assert!(seen < 1000, "the turn stopped early ({seen} chunks)");

    let (events, outcome) = run(&process, "[[mock:stats]]").await;
    assert_eq!(outcome.unwrap().stop_reason, StopReason::EndTurn);
    let stats: serde_json::Value = serde_json::from_str(&text_of(&events)).unwrap();
    assert_eq!(stats["cancels"], 1, "exactly one session/cancel: {stats}");
    assert_eq!(
        stats["active_turns"], 1,
        "only the stats turn is running: {stats}"
    );
}

#[tokio::test]
async fn a_hung_turn_does_not_block_other_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let process = start(&spec(dir.path())).await;
    let (tx, mut rx) = mpsc::channel(1);
    {
        let prompt = process.prompt("[[mock:hang after=1]]".to_owned(), tx);
        tokio::pin!(prompt);
        timeout(GUARD, async {
            tokio::select! {
                outcome = &mut prompt => panic!("a hung prompt ended: {outcome:?}"),
                event = rx.recv() => assert!(event.is_some()),
            }
        })
        .await
        .unwrap();
    }
    let (events, outcome) = run(&process, "hello").await;
    assert_eq!(outcome.unwrap().stop_reason, StopReason::EndTurn);
    assert_eq!(text_of(&events), "hello");
}

#[tokio::test]
async fn two_sessions_on_one_process_do_not_mix() {
    let dir = tempfile::tempdir().unwrap();
    let process = start(&spec(dir.path())).await;
    let alpha = "[[mock:echo delay_ms=3]]alpha one two three four five six";
    let beta = "[[mock:echo delay_ms=3]]beta uno dos tres cuatro cinco seis";
    let ((alpha_events, alpha_outcome), (beta_events, beta_outcome)) =
        tokio::join!(run(&process, alpha), run(&process, beta));
    alpha_outcome.unwrap();
    beta_outcome.unwrap();
    assert_eq!(text_of(&alpha_events), "alpha one two three four five six");
    assert_eq!(text_of(&beta_events), "beta uno dos tres cuatro cinco seis");
}

#[tokio::test]
async fn permission_requests_are_rejected_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let process = start(&spec(dir.path())).await;
    let (events, outcome) = run(&process, "[[mock:permission]]").await;
    assert_eq!(outcome.unwrap().stop_reason, StopReason::EndTurn);
    assert_eq!(text_of(&events), "permission: reject-once");
}

#[tokio::test]
async fn permission_policy_can_allow_a_kind() {
    let dir = tempfile::tempdir().unwrap();
    let policy = PermissionPolicy {
        allow_kinds: vec!["allow_once".to_owned()],
        ..PermissionPolicy::default()
    };
    let process = AgentProcess::start_with_policy(&spec(dir.path()), HANDSHAKE, policy)
        .await
        .unwrap();
    let (events, _) = run(&process, "[[mock:permission]]").await;
    assert_eq!(text_of(&events), "permission: allow-once");
}

#[tokio::test]
async fn fs_and_terminal_requests_get_method_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let process = start(&spec(dir.path())).await;
    let (events, outcome) = run(&process, "[[mock:fs]]").await;
    assert_eq!(outcome.unwrap().stop_reason, StopReason::EndTurn);
    assert_eq!(
        text_of(&events),
        "fs/read_text_file: error -32601; terminal/create: error -32601"
    );
}

#[tokio::test]
async fn the_child_environment_is_exactly_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().join("work");
    std::fs::create_dir(&cwd).unwrap();
    let home = dir.path().join("accounts").join("a");
    let mut spec = spec(&cwd);
    spec.home = Some(home.clone());
    spec.env
        .insert("DRAWBRIDGE_VISIBLE".to_owned(), "yes".to_owned());
    // A variable the test process itself has: absent from the child unless passed.
    let (leaky, _) = std::env::vars()
        .find(|(key, _)| !["PATH", "LANG", "HOME"].contains(&key.as_str()))
        .expect("the test process has some environment");
    let process = start(&spec).await;
    let (events, outcome) = run(&process, "[[mock:env]]").await;
    outcome.unwrap();
    let report: serde_json::Value = serde_json::from_str(&text_of(&events)).unwrap();
    let env = report["env"].as_object().unwrap();

    let home_str = home.to_str().unwrap();
    assert_eq!(report["home"], home_str);
    assert_eq!(env["HOME"], home_str);
    assert_eq!(env["XDG_DATA_HOME"], format!("{home_str}/.local/share"));
    assert_eq!(env["XDG_CONFIG_HOME"], format!("{home_str}/.config"));
    assert_eq!(env["XDG_RUNTIME_DIR"], format!("{home_str}/.run"));
    assert_eq!(env["DRAWBRIDGE_VISIBLE"], "yes");
    assert!(!env.contains_key(&leaky), "{leaky} leaked into the child");
    let keys: BTreeSet<&str> = env.keys().map(String::as_str).collect();
    let allowed: BTreeSet<&str> = [
        "PATH",
        "LANG",
        "HOME",
        "XDG_DATA_HOME",
        "XDG_CONFIG_HOME",
        "XDG_RUNTIME_DIR",
        "DRAWBRIDGE_VISIBLE",
    ]
    .into();
    assert!(keys.is_subset(&allowed), "unexpected variables: {keys:?}");

    let canonical_cwd = std::fs::canonicalize(&cwd).unwrap();
    assert_eq!(report["cwd"], canonical_cwd.to_str().unwrap());
    assert_eq!(report["session_cwd"], cwd.to_str().unwrap());

    use std::os::unix::fs::PermissionsExt as _;
    let runtime_mode = std::fs::metadata(home.join(".run"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(runtime_mode & 0o777, 0o700);
    assert!(home.join(".local/share").is_dir());
    assert!(home.join(".config").is_dir());

    // Passed explicitly, the same variable is visible.
    let mut passing = spec.clone();
    passing.env.insert(leaky.clone(), "passed".to_owned());
    let process = start(&passing).await;
    let (events, _) = run(&process, "[[mock:env]]").await;
    let report: serde_json::Value = serde_json::from_str(&text_of(&events)).unwrap();
    assert_eq!(report["env"][&leaky], "passed");
}

#[tokio::test]
async fn a_failing_start_reports_the_agents_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(dir.path());
    spec.env.insert(
        "MOCK_ACP_FAIL_START".to_owned(),
        "You are not logged in".to_owned(),
    );
    let error = timeout(GUARD, AgentProcess::start(&spec, HANDSHAKE))
        .await
        .expect("start timed out")
        .unwrap_err();
    assert!(
        error.to_string().contains("You are not logged in"),
        "{error}"
    );
    assert!(
        matches!(
            error,
            AcpError::Exited {
                status: Some(1),
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_slow_start_times_out_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(dir.path());
    spec.env
        .insert("MOCK_ACP_START_DELAY_MS".to_owned(), "60000".to_owned());
    let error = timeout(
        GUARD,
        AgentProcess::start(&spec, Duration::from_millis(300)),
    )
    .await
    .expect("the handshake timeout did not fire")
    .unwrap_err();
    assert!(matches!(error, AcpError::Handshake(_)), "{error:?}");
    assert!(error.retryable());
}

#[tokio::test]
async fn a_missing_binary_is_a_spawn_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = AgentSpec::new("surely-not-an-installed-agent", ["acp"], dir.path());
    let error = AgentProcess::start(&spec, HANDSHAKE).await.unwrap_err();
    assert!(matches!(error, AcpError::Spawn { .. }), "{error:?}");
    assert!(!error.retryable());
}

#[tokio::test]
async fn shutdown_closes_stdin_and_reaps_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let process = start(&spec(dir.path())).await;
    let pid = process.pid().unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let grace = Duration::from_secs(5);
    let started = tokio::time::Instant::now();
    timeout(GUARD, process.shutdown(grace))
        .await
        .expect("shutdown took too long");
    assert!(
        started.elapsed() < grace,
        "the agent should exit on stdin EOF, not be killed after the grace period"
    );
    wait_until_gone(pid).await;
}

/// An agent like `kiro-cli`: a leader that forks a helper (here a `sleep` whose pid goes to
/// a file before the real agent starts) and does not exit when its stdin closes.
fn forking_spec(dir: &Path) -> (AgentSpec, std::path::PathBuf) {
    let pidfile = dir.join("helper.pid");
    let mut spec = AgentSpec::new(
        "sh",
        [
            "-c",
            r#"sleep 600 & echo $! > "$HELPER_PIDFILE"; "$MOCK_AGENT"; wait"#,
        ],
        dir,
    );
    spec.env.insert(
        "HELPER_PIDFILE".to_owned(),
        pidfile.to_str().unwrap().to_owned(),
    );
    spec.env.insert("MOCK_AGENT".to_owned(), MOCK.to_owned());
    (spec, pidfile)
}

fn helper_pid(pidfile: &Path) -> u32 {
    std::fs::read_to_string(pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn shutdown_kills_the_group_when_the_grace_period_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, pidfile) = forking_spec(dir.path());
    let process = start(&spec).await;
    let (events, _) = run(&process, "served through sh").await;
    assert_eq!(text_of(&events), "served through sh");
    let leader = process.pid().unwrap();
    let helper = helper_pid(&pidfile);
    assert!(Path::new(&format!("/proc/{helper}")).exists());
    timeout(GUARD, process.shutdown(Duration::from_millis(200)))
        .await
        .expect("shutdown took too long");
    wait_until_gone(leader).await;
    wait_until_gone(helper).await;
}

#[tokio::test]
async fn dropping_the_process_kills_its_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, pidfile) = forking_spec(dir.path());
    let process = start(&spec).await;
    let leader = process.pid().unwrap();
    let helper = helper_pid(&pidfile);
    drop(process);
    wait_until_gone(leader).await;
    wait_until_gone(helper).await;
}
