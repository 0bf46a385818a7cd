//! The pool with real `mock-acp-agent` processes: leasing, the FIFO queue and its limits,
//! cancel-and-reuse, replacement after a crash, and an account whose agent cannot start.
//! Processes start on real time; waits on time alone (the queue timeout) run on paused time
//! once the pool is warm.

use std::collections::BTreeMap;
use std::path::Path;

use drawbridge_types::worker::{PromptBody, PromptInput, WorkerEvent};
use test_support::{binary, eventually, processes_under};

use super::*;
use crate::turn::{self, TurnSettings};

fn settings(size: u32) -> PoolSettings {
    PoolSettings {
        size,
        handshake_timeout: Duration::from_secs(20),
        queue_timeout: Duration::from_secs(20),
        max_queue: 8,
        permissions: drawbridge_acp::PermissionPolicy::default(),
        tools: AgentTools::None,
        client_tools: drawbridge_config::ClientTools::Auto,
    }
}

fn spec(dir: &Path, env: &[(&str, &str)]) -> AgentSpec {
    let cwd = dir.join("work");
    std::fs::create_dir_all(&cwd).unwrap_or_else(|error| panic!("{error}"));
    AgentSpec {
        command: binary("mock-acp-agent").display().to_string(),
        args: Vec::new(),
        cwd,
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        home: Some(dir.join("home")),
    }
}

fn start(dir: &Path, settings: PoolSettings, env: &[(&str, &str)]) -> Arc<AccountPool> {
    AccountPool::start(
        "acct".to_owned(),
        vec!["kiro".to_owned()],
        spec(dir, env),
        settings,
        Shutdown::new(),
    )
}

async fn warm(pool: &AccountPool) {
    let size = pool.settings.size;
    eventually(
        "every slot is idle",
        || async move { pool.slots().idle == size },
    )
    .await;
}

fn pid(lease: &Lease) -> u32 {
    lease
        .process()
        .and_then(AgentProcess::pid)
        .unwrap_or_else(|| panic!("a leased process has a pid"))
}

fn turn_env(cancel_grace: Duration) -> turn::TurnEnv {
    turn::TurnEnv {
        settings: turn_settings(cancel_grace),
        live: Arc::default(),
        bridge: Arc::default(),
        shutdown: drawbridge_telemetry::Shutdown::new(),
    }
}

fn turn_settings(cancel_grace: Duration) -> TurnSettings {
    TurnSettings {
        request_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        cancel_grace,
        continuation: drawbridge_core::continuation::ContinuationOptions {
            enabled: false,
            ..Default::default()
        },
        sanitize: drawbridge_core::sanitize::SanitizeOptions::default(),
        live_session_ttl: Duration::from_secs(30),
        warm_sessions: 0,
        warm_session_ttl: Duration::from_secs(30),
    }
}

fn input(text: &str) -> PromptInput {
    PromptInput {
        request_id: "req".to_owned(),
        model: "kiro".to_owned(),
        account: None,
        body: PromptBody::Text(text.to_owned()),
        max_output_tokens: None,
        tools: Default::default(),
        live_session: None,
        conversation: None,
        params: Default::default(),
    }
}

#[test]
fn backoff_doubles_up_to_a_cap() {
    assert_eq!(backoff(1), Duration::from_millis(200));
    assert_eq!(backoff(2), Duration::from_millis(400));
    assert_eq!(backoff(3), Duration::from_millis(800));
    assert_eq!(backoff(20), BACKOFF_MAX);
}

#[tokio::test]
async fn a_returned_lease_serves_again_on_the_same_process() {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(dir.path(), settings(2), &[]);
    warm(&pool).await;
    assert_eq!(processes_under(dir.path()).len(), 2);
    assert_eq!(pool.status(), AccountStatus::Healthy);

    let first = pool.lease().await.unwrap();
    let second = pool.lease().await.unwrap();
    let (a, b) = (pid(&first), pid(&second));
    assert_ne!(a, b);
    let slots = pool.slots();
    assert_eq!((slots.busy, slots.idle, slots.starting), (2, 0, 0));

    drop(first); // kept (leases are reusable unless discarded)
    let slots = pool.slots();
    assert_eq!((slots.busy, slots.idle), (1, 1));
    let again = pool.lease().await.unwrap();
    assert_eq!(pid(&again), a);
    drop((again, second));
    assert_eq!(
        processes_under(dir.path()).len(),
        2,
        "no process was replaced"
    );

    pool.shutdown.cancel();
    pool.close(Duration::from_secs(2)).await;
    assert!(processes_under(dir.path()).is_empty());
    assert_eq!(pool.slots().idle, 0);
}

#[tokio::test]
async fn waiters_are_served_in_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(dir.path(), settings(1), &[]);
    warm(&pool).await;
    let held = pool.lease().await.unwrap();
    let (served_tx, mut served_rx) = mpsc::unbounded_channel();
    let waiters = tokio_util::task::TaskTracker::new();
    for i in 0..4 {
        let (mine, served) = (Arc::clone(&pool), served_tx.clone());
        waiters.spawn(async move {
            let lease = mine.lease().await.unwrap();
            served.send(i).unwrap();
            drop(lease);
        });
        // The next one arrives only once this one is queued.
        let queued = i + 1;
        let pool = &pool;
        eventually("the waiter is queued", || async move {
            pool.slots().queue_depth == queued
        })
        .await;
    }
    drop(held);
    waiters.close();
    waiters.wait().await;
    let mut order = Vec::new();
    while let Ok(i) = served_rx.try_recv() {
        order.push(i);
    }
    assert_eq!(order, [0, 1, 2, 3]);
    assert_eq!(pool.slots().queue_depth, 0);
}

#[tokio::test]
async fn a_full_queue_refuses_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(
        dir.path(),
        PoolSettings {
            max_queue: 1,
            ..settings(1)
        },
        &[],
    );
    warm(&pool).await;
    let held = pool.lease().await.unwrap();
    let waiter = {
        let pool = Arc::clone(&pool);
        pool.shutdown
            .clone()
            .spawn(async move { pool.lease().await.map(|l| pid(&l)) })
    };
    eventually("one request waits", || async {
        pool.slots().queue_depth == 1
    })
    .await;
    let refused = pool.lease().await.err().unwrap();
    assert_eq!(refused.kind, ErrorKind::NoCapacity);
    assert!(refused.message.contains("queue is full"), "{refused:?}");
    assert_eq!(
        pool.slots().queue_depth,
        1,
        "the refused one left the queue"
    );
    let held_pid = pid(&held);
    drop(held);
    assert_eq!(waiter.await.unwrap().unwrap(), held_pid);
}

#[tokio::test]
async fn a_waiter_gives_up_after_the_queue_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(
        dir.path(),
        PoolSettings {
            queue_timeout: Duration::from_secs(30),
            ..settings(1)
        },
        &[],
    );
    warm(&pool).await;
    let _held = pool.lease().await.unwrap();
    // Nothing but the clock can end this wait now.
    tokio::time::pause();
    let began = tokio::time::Instant::now();
    let refused = pool.lease().await.err().unwrap();
    assert_eq!(refused.kind, ErrorKind::NoCapacity);
    assert!(
        refused.message.contains("became free within"),
        "{refused:?}"
    );
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
    assert_eq!(pool.slots().queue_depth, 0);
}

/// Run `text` as a turn, take the first text chunk, then go away (as a client that
/// disconnects). Returns once the turn has ended.
async fn leave_after_the_first_chunk(pool: &Arc<AccountPool>, text: &str, grace: Duration) {
    let (tx, mut rx) = mpsc::channel(4);
    let turn = pool.shutdown.clone().spawn(turn::run(
        Arc::clone(pool),
        input(text),
        tx,
        turn_env(grace),
    ));
    loop {
        match rx.recv().await {
            Some(WorkerEvent::Text(_)) => break,
            Some(WorkerEvent::Started { .. }) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
    drop(rx);
    turn.await.unwrap();
}

#[tokio::test]
async fn a_cancelled_turn_whose_agent_answers_leaves_its_process_to_serve_again() {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(dir.path(), settings(1), &[]);
    warm(&pool).await;
    let before = pid(&pool.lease().await.unwrap());
    leave_after_the_first_chunk(
        &pool,
        "[[mock:stream n=1000 delay_ms=20]]",
        Duration::from_secs(10),
    )
    .await;
    let slots = pool.slots();
    assert_eq!((slots.idle, slots.busy, slots.starting), (1, 0, 0));
    assert_eq!(
        pid(&pool.lease().await.unwrap()),
        before,
        "the same process serves"
    );
}

#[tokio::test]
async fn a_cancelled_turn_whose_agent_ignores_the_cancel_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(dir.path(), settings(1), &[]);
    warm(&pool).await;
    let before = pid(&pool.lease().await.unwrap());
    leave_after_the_first_chunk(&pool, "[[mock:hang after=1]]", Duration::from_millis(200)).await;
    let after = pid(&pool.lease().await.unwrap());
    assert_ne!(after, before, "a fresh process serves");
    eventually("the hung process is gone", || async {
        processes_under(dir.path()) == [after]
    })
    .await;
}

#[tokio::test]
async fn a_process_that_dies_idle_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(dir.path(), settings(1), &[]);
    warm(&pool).await;
    let before = pid(&pool.lease().await.unwrap());
    // It crashes mid-turn: the turn fails and a new process takes its slot at once.
    let (tx, mut rx) = mpsc::channel(16);
    turn::run(
        Arc::clone(&pool),
        input("[[mock:crash after=1]]"),
        tx,
        turn_env(Duration::from_secs(1)),
    )
    .await;
    let mut last = None;
    while let Ok(event) = rx.try_recv() {
        last = Some(event);
    }
    assert!(matches!(last, Some(WorkerEvent::Error(_))), "{last:?}");
    warm(&pool).await;
    let replaced = pid(&pool.lease().await.unwrap());
    assert_ne!(replaced, before);

    // It dies while idle: the next lease finds it dead and waits for its replacement
    // (started after the first backoff step).
    let killed = std::process::Command::new("kill")
        .args(["-9", &replaced.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Reaped (its /proc entry gone) means the pool's process handle knows it exited.
    let proc_entry = format!("/proc/{replaced}");
    eventually("the killed process is reaped", || async {
        !Path::new(&proc_entry).exists()
    })
    .await;
    let lease = pool.lease().await.unwrap();
    assert_ne!(pid(&lease), replaced);
    assert_eq!(pool.status(), AccountStatus::Healthy);
}

#[tokio::test]
async fn an_agent_that_cannot_start_makes_the_account_unhealthy_after_three_tries() {
    let dir = tempfile::tempdir().unwrap();
    let pool = start(
        dir.path(),
        settings(1),
        &[("MOCK_ACP_FAIL_START", "You are not logged in")],
    );
    eventually("the first start failed", || async {
        pool.slots().failed >= 1
    })
    .await;
    if pool.slots().failed < UNHEALTHY_AFTER {
        assert_eq!(pool.status(), AccountStatus::Degraded);
    }
    eventually("three starts failed", || async {
        pool.status() == AccountStatus::Unhealthy
    })
    .await;
    let slots = pool.slots();
    assert!(slots.failed >= UNHEALTHY_AFTER);
    assert_eq!(slots.starting, 1, "it keeps trying, with backoff");
    assert!(
        slots
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("You are not logged in")),
        "{slots:?}"
    );
    let refused = pool.lease().await.err().unwrap();
    assert_eq!(refused.kind, ErrorKind::Upstream);
    assert!(
        refused.message.contains("no working agent process"),
        "{refused:?}"
    );
    pool.shutdown.cancel();
    eventually("the retries stop with the scope", || async {
        pool.slots().starting == 0
    })
    .await;
}

#[test]
fn labels_run_the_default_and_catalogue_ids_are_chosen() {
    use drawbridge_acp::{AgentModel, ModelCatalogue, ModelSelector};
    let dir = tempfile::tempdir().unwrap();
    let pool = start(dir.path(), settings(0), &[]);
    assert_eq!(pool.all_models(), ["kiro"]);
    assert_eq!(pool.model_choice("kiro").unwrap(), None);
    assert_eq!(
        pool.model_choice("m2").unwrap_err().kind,
        ErrorKind::ModelNotFound,
        "no catalogue yet"
    );
    pool.note_catalogue(None);
    let model = |id: &str| AgentModel {
        id: id.to_owned(),
        name: None,
        description: None,
    };
    let catalogue = ModelCatalogue {
        current: Some("m1".to_owned()),
        models: vec![model("m1"), model("kiro"), model("m2")],
        selector: ModelSelector::SetModel,
    };
    pool.note_catalogue(Some(&catalogue));
    assert_eq!(
        pool.all_models(),
        ["kiro", "m1", "m2"],
        "labels first, no repeats"
    );
    assert_eq!(pool.slots().default_model.as_deref(), Some("m1"));
    assert_eq!(pool.model_choice("kiro").unwrap(), None, "a label wins");
    assert_eq!(pool.model_choice("m2").unwrap().as_deref(), Some("m2"));
    assert!(pool.serves("m2") && !pool.serves("m3"));
    pool.note_catalogue(None);
    assert_eq!(
        pool.all_models(),
        ["kiro", "m1", "m2"],
        "a cold session keeps it"
    );
}
