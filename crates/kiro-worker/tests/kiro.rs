//! The worker against `mock-acp-agent` speaking Kiro CLI 2.22's dialects (v2 and v3) and plain
//! ACP: model catalogues and model choice, session hygiene, tool-less agents by default,
//! refused tools, activity and reasoning, reported token usage, and an agent stuck on a
//! request the gateway cannot serve.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use drawbridge_config::Config;
use drawbridge_telemetry::Shutdown;
use drawbridge_types::ErrorKind;
use drawbridge_types::worker::{
    AccountSlots, AccountStatus, PromptBody, PromptInput, TurnSummary, WorkerEvent,
};
use kiro_worker::Worker;
use test_support::{binary, eventually, processes_under};

/// One account `a` served by the mock with `args` and extra `agent` settings (YAML flow
/// entries, e.g. `tools: builtin`), and `worker` settings.
struct Setup {
    dir: tempfile::TempDir,
    worker: Arc<Worker>,
}

impl Setup {
    fn start(args: &[&str], agent: &str, worker: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let args = args
            .iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let extra = if agent.is_empty() {
            String::new()
        } else {
            format!(", {agent}")
        };
        let yaml = format!(
            "node: {{ id: w1 }}\n\
             worker: {{ data_dir: {dir}{worker} }}\n\
             accounts:\n\
             \x20 - id: a\n    pool_size: 1\n    agent: {{ command: {agent_bin}, args: [{args}]{extra} }}\n",
            dir = dir.path().display(),
            worker = if worker.is_empty() {
                String::new()
            } else {
                format!(", {worker}")
            },
            agent_bin = binary("mock-acp-agent").display(),
        );
        let config = Config::from_yaml(&yaml).unwrap_or_else(|error| panic!("{error}"));
        config
            .validate(drawbridge_config::Role::Worker)
            .unwrap_or_else(|error| panic!("{error}"));
        let worker =
            Worker::start(&config, Shutdown::new()).unwrap_or_else(|error| panic!("{error}"));
        Setup { dir, worker }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("a").join("home")
    }

    fn slots(&self) -> AccountSlots {
        self.worker.slots().accounts.remove(0)
    }

    /// Wait until the pool's process is idle (started, or back from a turn).
    async fn idle(&self) -> AccountSlots {
        eventually("the account's process is idle", || {
            let slots = self.slots();
            async move { (slots.idle == 1).then_some(slots) }
        })
        .await
    }

    async fn ask(&self, model: &str, text: &str) -> Vec<WorkerEvent> {
        let mut rx = self.worker.prompt(PromptInput {
            request_id: "r".to_owned(),
            model: model.to_owned(),
            account: None,
            body: PromptBody::Text(text.to_owned()),
            max_output_tokens: None,
            tools: Default::default(),
            live_session: None,
            conversation: None,
            params: Default::default(),
        });
        let mut events = Vec::new();
        while let Some(event) = rx.recv().await {
            events.push(event);
        }
        events
    }

    async fn stop(self) {
        self.worker.drain(std::time::Duration::from_secs(2)).await;
        let dir = self.dir.path().to_owned();
        eventually("the agents are gone", || async {
            processes_under(&dir).is_empty()
        })
        .await;
    }
}

fn text(events: &[WorkerEvent]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            WorkerEvent::Text(text) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn summary(events: &[WorkerEvent]) -> TurnSummary {
    match events.last() {
        Some(WorkerEvent::Finished(summary)) => *summary,
        other => panic!("the turn did not finish: {other:?} (events {events:?})"),
    }
}

fn error(events: &[WorkerEvent]) -> drawbridge_types::ApiError {
    match events.last() {
        Some(WorkerEvent::Error(error)) => error.clone(),
        other => panic!("the turn did not fail: {other:?}"),
    }
}

/// The session files a Kiro v3 agent keeps under its home.
fn session_files(home: &Path) -> usize {
    std::fs::read_dir(home.join(".kiro").join("sessions"))
        .map(|entries| entries.flatten().count())
        .unwrap_or(0)
}

const V2: &[&str] = &["acp", "--agent-engine", "v2", "--echo-model"];
const V3: &[&str] = &[
    "acp",
    "--agent-engine",
    "v3",
    "--auth-method",
    "cli",
    "--echo-model",
];

async fn catalogue_and_model_choice(args: &[&str]) {
    let setup = Setup::start(args, "", "");
    let slots = eventually("the catalogue is read at start", || {
        let slots = setup.slots();
        async move { (slots.models.len() > 1).then_some(slots) }
    })
    .await;
    assert_eq!(
        slots.models,
        [
            "kiro",
            "claude-sonnet-5",
            "claude-sonnet-4.6",
            "claude-opus-4.8",
            "gpt-5.6-luna",
            "claude-haiku-4.5"
        ]
    );
    assert_eq!(slots.default_model.as_deref(), Some("claude-sonnet-5"));
    setup.idle().await;

    let asked = setup.ask("claude-opus-4.8", "hello").await;
    assert_eq!(text(&asked), "[claude-opus-4.8] hello");
    summary(&asked);
    setup.idle().await;
    let label = setup.ask("kiro", "hello").await;
    assert_eq!(
        text(&label),
        "[claude-sonnet-5] hello",
        "a label runs the default"
    );
    let unknown = setup.ask("gpt-4o", "hello").await;
    assert_eq!(error(&unknown).kind, ErrorKind::ModelNotFound);
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_lists_its_catalogue_and_runs_the_asked_model() {
    catalogue_and_model_choice(V2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_lists_its_catalogue_and_runs_the_asked_model() {
    catalogue_and_model_choice(V3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_catalogue_fills_in_from_a_turn() {
    let setup = Setup::start(&[V3, &["--cold-catalogue"]].concat(), "", "");
    let slots = setup.idle().await;
    assert_eq!(slots.models, ["kiro"], "the start-up session had no models");
    assert_eq!(slots.default_model, None);
    assert_eq!(
        error(&setup.ask("claude-opus-4.8", "hi").await).kind,
        ErrorKind::ModelNotFound
    );
    summary(&setup.ask("kiro", "hi").await);
    let slots = setup.idle().await;
    assert!(
        slots.models.iter().any(|m| m == "claude-opus-4.8"),
        "{slots:?}"
    );
    assert_eq!(slots.default_model.as_deref(), Some("claude-sonnet-5"));
    let asked = setup.ask("claude-opus-4.8", "hi").await;
    assert_eq!(text(&asked), "[claude-opus-4.8] hi");
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_acp_agent_keeps_the_configured_models() {
    let setup = Setup::start(&[], "", "");
    let slots = setup.idle().await;
    assert_eq!(slots.models, ["kiro"]);
    assert_eq!(slots.default_model, None);
    let answer = setup.ask("kiro", "hello there").await;
    assert_eq!(text(&answer), "hello there");
    assert!(
        !setup.home().join(".kiro/agents/drawbridge.json").exists(),
        "no Kiro profile for another agent"
    );
    // Only the permission policy applies: refused, counted.
    let asked = setup.ask("kiro", "[[mock:permission]]").await;
    assert_eq!(text(&asked), "permission: reject-once");
    assert_eq!(setup.slots().tools_refused, 1);
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_turns_leave_no_session_behind() {
    let setup = Setup::start(V3, "", "");
    setup.idle().await;
    for i in 0..5 {
        summary(&setup.ask("kiro", &format!("turn {i}")).await);
    }
    let home = setup.home();
    eventually("every turn's session is deleted", || {
        let (files, idle) = (session_files(&home), setup.slots().idle);
        async move { files == 0 && idle == 1 }
    })
    .await;
    assert!(
        home.join(".kiro").join("sessions").is_dir(),
        "the agent did write sessions"
    );
    setup.stop().await;
}

/// The command line of each live agent of the setup.
fn agent_command_lines(dir: &Path) -> Vec<String> {
    processes_under(dir)
        .into_iter()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_without_tools_runs_the_tool_less_profile() {
    let setup = Setup::start(V2, "", "");
    setup.idle().await;
    let profile = setup.home().join(".kiro/agents/drawbridge.json");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
    assert_eq!(written["tools"], serde_json::json!(["@drawbridge"]));
    let lines = agent_command_lines(setup.dir.path());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].ends_with("--agent drawbridge"), "{lines:?}");
    let answer = setup.ask("kiro", "[[mock:shell]]").await;
    assert_eq!(text(&answer), "I have no tools to run that.", "{answer:?}");
    assert_eq!(setup.slots().tools_refused, 0, "it did not even ask");
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_without_tools_runs_nothing() {
    let setup = Setup::start(V3, "", "");
    setup.idle().await;
    assert!(setup.home().join(".kiro/agents/drawbridge.json").is_file());
    let answer = setup.ask("kiro", "[[mock:shell]]").await;
    summary(&answer);
    assert_eq!(text(&answer), "I have no tools to run that.", "{answer:?}");
    assert_eq!(setup.slots().tools_refused, 0, "it did not even ask");
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_builtin_tools_ask_and_are_refused() {
    let setup = Setup::start(V3, "tools: builtin", "");
    setup.idle().await;
    assert!(
        !setup.home().join(".kiro/agents/drawbridge.json").exists(),
        "no profile with built-in tools"
    );
    assert_eq!(setup.slots().tools_refused, 0);
    let answer = setup.ask("kiro", "[[mock:shell]] and then").await;
    let said = text(&answer);
    assert!(said.starts_with("shell: refused"), "{said}");
    assert_eq!(
        summary(&answer).finish_reason,
        drawbridge_types::openai::FinishReason::Stop
    );
    assert_eq!(setup.slots().tools_refused, 1);
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_tool_phase_is_alive_and_streams_activity() {
    // Built-in tools: a tool-less agent would not run the tool phase at all.
    let setup = Setup::start(V3, "tools: builtin", "idle_timeout: 1s");
    setup.idle().await;
    // 3 s of tool frames 300 ms apart, longer than the idle timeout, each gap well under it.
    let answer = setup
        .ask("kiro", "[[mock:busy secs=3 every_ms=300]] done")
        .await;
    summary(&answer);
    assert!(text(&answer).ends_with("done"), "{answer:?}");
    let first_text = answer
        .iter()
        .position(|e| matches!(e, WorkerEvent::Text(_)))
        .unwrap();
    let activity = answer[..first_text]
        .iter()
        .filter(|e| matches!(e, WorkerEvent::Activity))
        .count();
    assert!(
        activity >= 3,
        "{activity} activity events before text: {answer:?}"
    );
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thoughts_stream_as_reasoning() {
    let setup = Setup::start(&[], "", "");
    setup.idle().await;
    let answer = setup.ask("kiro", "[[mock:thought n=3]]").await;
    let reasoning: String = answer
        .iter()
        .filter_map(|e| match e {
            WorkerEvent::Reasoning(r) => Some(r.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(reasoning, "thinking...".repeat(3));
    assert_eq!(text(&answer), "done", "reasoning is not the answer");
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_tokens_are_used_and_marked() {
    let setup = Setup::start(&[], "", "");
    setup.idle().await;
    let reported = summary(
        &setup
            .ask("kiro", "[[mock:echo input_tokens=11 output_tokens=22]] hi")
            .await,
    );
    assert_eq!(
        (
            reported.prompt_tokens,
            reported.completion_tokens,
            reported.tokens_estimated
        ),
        (11, 22, false)
    );
    let estimated = summary(&setup.ask("kiro", "hi there").await);
    assert!(estimated.tokens_estimated);
    assert!(estimated.prompt_tokens > 0);
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_asking_for_a_token_blocks_its_account() {
    let setup = Setup::start(&["acp", "--agent-engine", "v3"], "", "");
    setup.idle().await;
    // v3 without `--auth-method cli` asks for a token before its first answer and stalls on
    // the refusal: the turn fails at once, long before any idle timeout.
    let started = tokio::time::Instant::now();
    let answer = setup.ask("kiro", "hello").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(error(&answer).kind, ErrorKind::Upstream, "{answer:?}");
    let slots = setup.slots();
    assert_eq!(slots.status, AccountStatus::Unhealthy);
    let reason = slots.last_error.unwrap_or_default();
    assert!(reason.contains("_kiro/auth/getAccessToken"), "{reason}");
    assert!(reason.contains("--auth-method cli"), "{reason}");
    // It stays so: the next request is refused without reaching an agent.
    assert_eq!(
        error(&setup.ask("kiro", "again").await).kind,
        ErrorKind::Upstream
    );
    assert_eq!(setup.slots().status, AccountStatus::Unhealthy);
    setup.stop().await;
}
