//! Several nodes on one real `redis-server`: engines discover registered workers, route around a
//! worker killed mid-stream, elect a leader that another engine replaces when it dies, ride out
//! a Redis restart, and the leader's reconciler moves a dead worker's accounts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use drawbridge_state::{
    AccountStore as _, BreakerStore as _, CONTROLLER_LEASE, LeaseStore as _, Registry as _,
};
use futures::StreamExt;
use serde_json::{Value, json};
use test_support::cluster::{
    Assignment, Cluster, LEADER_TTL, RECONCILE_INTERVAL, WORKER_TTL, wait_for_lines,
};
use test_support::wait::poll;
use test_support::{AccountSpec, eventually_within};

fn ask(text: &str, stream: bool) -> Value {
    json!({"model": "kiro", "stream": stream, "messages": [{"role": "user", "content": text}]})
}

fn content(reply: &test_support::Reply) -> String {
    reply.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn store(cluster: &Cluster) -> drawbridge_state::ValkeyRegistry {
    drawbridge_state::ValkeyRegistry::connect(&cluster.redis.url())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_discovers_workers_from_redis_and_serves() {
    let mut cluster = Cluster::new();
    cluster
        .add_worker("w1", Assignment::Config, &[("acct-1", AccountSpec::new(1))])
        .await;
    cluster
        .add_worker("w2", Assignment::Config, &[("acct-2", AccountSpec::new(1))])
        .await;
    cluster.add_engine("e1", &[], "").await;
    cluster.wait_serving(0, 2).await;
    for pod in ["w1", "w2"] {
        assert!(
            wait_for_lines(
                &cluster.engines[0],
                &["worker discovered", pod],
                1,
                Duration::from_secs(1)
            )
            .await
        );
    }
    let engine = cluster.engine(0);
    for i in 0..4 {
        let reply = engine.chat(&ask(&format!("hello {i}"), false)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(content(&reply), format!("hello {i}"));
    }

    // A worker that leaves (drains) is dropped at once; the other one serves on.
    assert!(cluster.workers[1].terminate().await.success());
    assert!(
        wait_for_lines(
            &cluster.engines[0],
            &["worker left the registry", "w2"],
            1,
            Duration::from_secs(5)
        )
        .await
    );
    cluster.wait_serving(0, 1).await;
    let reply = engine.chat(&ask("still here", false)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(content(&reply), "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_stream_is_resumed_elsewhere_and_routed_around() {
    let mut cluster = Cluster::new();
    // acct-1 has three slots, so it scores highest and takes the first request.
    let slow = |n| AccountSpec::new(n).behaviour("stream n=6 delay_ms=150");
    cluster
        .add_worker("w1", Assignment::Config, &[("acct-1", slow(3))])
        .await;
    cluster
        .add_worker("w2", Assignment::Config, &[("acct-2", slow(1))])
        .await;
    // Slots polls far apart: what keeps requests off the dead worker below is the failed
    // stream itself, not a poll that happens to come in between.
    cluster.refresh_interval = Duration::from_secs(4);
    // One failure opens a breaker: the worker's death must not count as acct-1's.
    cluster
        .add_engine(
            "e1",
            &[],
            "health: { circuit_breaker: { failure_threshold: 1, window_size: 10, reset_timeout: 60s } }\n",
        )
        .await;
    cluster.wait_serving(0, 2).await;

    let (status, mut body) = cluster
        .engine(0)
        .post_streaming("/v1/chat/completions", &ask("count", true))
        .await;
    assert_eq!(status, 200);
    let mut raw = String::new();
    while !raw.contains("chunk 1 ") {
        let bytes = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("chunks keep coming")
            .expect("the stream is open")
            .unwrap();
        raw.push_str(&String::from_utf8_lossy(&bytes));
    }
    cluster.kill_worker(0).await;
    while let Some(bytes) = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .expect("the stream ends")
    {
        raw.push_str(&String::from_utf8_lossy(&bytes.unwrap()));
    }
    let chunks: Vec<Value> = raw
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text, "chunk 0 chunk 1 chunk 2 chunk 3 chunk 4 chunk 5 ",
        "the answer goes on from the other worker, each chunk once"
    );
    assert!(raw.trim_end().ends_with("data: [DONE]"));
    assert!(
        wait_for_lines(
            &cluster.engines[0],
            &["answer resumed on another account"],
            1,
            Duration::from_secs(1)
        )
        .await
    );

    // The worker died, not the account: acct-1's breaker recorded no failure.
    let breakers = store(&cluster)
        .await
        .breakers(&["acct-1".to_owned()])
        .await
        .unwrap();
    if let Some(Some(stored)) = breakers.values.first() {
        let breaker: Value = serde_json::from_str(stored).unwrap();
        assert_eq!(breaker["state"], "closed", "{breaker}");
        assert!(
            !breaker["window"]
                .as_array()
                .is_some_and(|w| w.contains(&Value::Bool(true))),
            "the worker's death was counted against acct-1: {breaker}"
        );
    }

    // New requests go to the live worker straight away, long before w1's record expires: the
    // broken stream marked w1 unreachable, so none of them even tries it.
    let engine = cluster.engine(0);
    let failed_before = |c: &Cluster| {
        c.engines[0]
            .log()
            .lines()
            .filter(|l| l.contains("turn failed before its first byte"))
            .count()
    };
    let before = failed_before(&cluster);
    for _ in 0..3 {
        let reply = engine.chat(&ask("[[mock:echo]] after", false)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(content(&reply), " after");
    }
    assert_eq!(failed_before(&cluster), before, "no request was sent to w1");
    // And w1 leaves the engine's view when its record expires.
    assert!(
        wait_for_lines(
            &cluster.engines[0],
            &["worker left the registry", "w1"],
            1,
            WORKER_TTL + Duration::from_secs(4)
        )
        .await,
        "the dead worker's record expired and the engine dropped it"
    );
    let pods = store(&cluster).await.pods().await.unwrap();
    assert_eq!(
        pods.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["w2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_elect_one_leader_and_the_other_takes_over() {
    let mut cluster = Cluster::new();
    cluster
        .add_worker("w1", Assignment::Config, &[("acct-1", AccountSpec::new(2))])
        .await;
    cluster.add_engine("e1", &[], "").await;
    cluster.add_engine("e2", &[], "").await;
    cluster.wait_serving(0, 1).await;
    cluster.wait_serving(1, 1).await;

    let state = store(&cluster).await;
    let leader = eventually_within(Duration::from_secs(5), "one engine leads", || async {
        state.holder(CONTROLLER_LEASE).await.unwrap()
    })
    .await;
    let (dead, survivor) = if leader.holder == "e1" {
        (0, 1)
    } else {
        (1, 0)
    };
    assert!(
        wait_for_lines(
            &cluster.engines[dead],
            &["leadership acquired"],
            1,
            Duration::from_secs(1)
        )
        .await
    );
    for i in [0, 1] {
        let reply = cluster.engine(i).chat(&ask("both route", false)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }

    cluster.engines[dead].signal(test_support::process::Signal::SIGKILL);
    cluster.engines[dead].wait().await;
    // The lease expires at most one TTL after the leader's last renewal; the follower tries
    // every quarter renew interval.
    assert!(
        wait_for_lines(
            &cluster.engines[survivor],
            &["leadership acquired"],
            1,
            LEADER_TTL + Duration::from_secs(2)
        )
        .await,
        "the other engine took over"
    );
    let now = state.holder(CONTROLLER_LEASE).await.unwrap().unwrap();
    assert_eq!(now.holder, if survivor == 0 { "e1" } else { "e2" });
    assert!(now.token > leader.token, "a new fencing token");
    let reply = cluster
        .engine(survivor)
        .chat(&ask("still routing", false))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(content(&reply), "still routing");
    state.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_under_load_hangs_nothing_and_the_engine_resyncs() {
    let mut cluster = Cluster::new();
    // The worker serves what the leader assigned it: a store that comes back empty must not
    // make it drop its pool.
    cluster
        .add_worker(
            "w1",
            Assignment::Registry,
            &[(
                "acct-1",
                AccountSpec::new(2).behaviour("stream n=3 delay_ms=20"),
            )],
        )
        .await;
    cluster
        .add_engine("e1", &[("acct-1", AccountSpec::new(2))], "")
        .await;
    cluster.wait_serving(0, 1).await;
    assert!(
        wait_for_lines(
            &cluster.engines[0],
            &["leadership acquired"],
            1,
            Duration::from_secs(5)
        )
        .await
    );

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let load = (0..2).map(|_| {
        let engine = cluster.engine(0);
        let (stop, served) = (stop.clone(), served.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let reply =
                    tokio::time::timeout(Duration::from_secs(10), engine.chat(&ask("load", false)))
                        .await
                        .expect("no request hangs");
                assert_eq!(reply.status, 200, "{}", reply.text());
                assert_eq!(content(&reply), "chunk 0 chunk 1 chunk 2 ");
                served.fetch_add(1, Ordering::SeqCst);
            }
        })
    });
    let load: Vec<_> = load.collect();
    // w1's pool, warm: the agents that must still serve after the outage.
    let agents = cluster.agent_pids("w1");
    assert_eq!(agents.len(), 2, "{agents:?}");
    cluster.redis.stop();
    // Requests go on from the cache while Redis is away: 20 more of them, and past the point
    // where the engine found the store unreachable (its periodic sync, every 2 s).
    let before = served.load(Ordering::SeqCst);
    eventually_within(
        Duration::from_secs(10),
        "the engine kept serving without Redis",
        || async {
            served.load(Ordering::SeqCst) >= before + 20
                && cluster.engines[0].log().contains("registry unreachable")
        },
    )
    .await;
    cluster.redis.restart();
    // … and after it returns the engine resynchronises: it re-reads the registry (the worker
    // registers again), takes the lease again and rewrites its desired accounts.
    assert!(
        wait_for_lines(
            &cluster.engines[0],
            &["registry resynchronised"],
            1,
            Duration::from_secs(10)
        )
        .await
    );
    assert!(
        wait_for_lines(
            &cluster.engines[0],
            &["leadership acquired"],
            2,
            Duration::from_secs(10)
        )
        .await,
        "the lease was lost with Redis's data and taken again"
    );
    let state = store(&cluster).await;
    let accounts = eventually_within(
        Duration::from_secs(5),
        "the desired accounts are written again",
        || async {
            let accounts = state.accounts().await.unwrap();
            (!accounts.is_empty()).then_some(accounts)
        },
    )
    .await;
    assert_eq!(accounts[0].id, "acct-1");
    // The assignment is rebuilt from what runs: acct-1 stays on w1, whose pool never stopped.
    eventually_within(
        Duration::from_secs(5),
        "acct-1 is assigned to w1 again",
        || async { state.accounts().await.unwrap()[0].assigned_pod.as_deref() == Some("w1") },
    )
    .await;
    // w1 never stopped serving acct-1: the same agent processes serve it, and it still
    // reports the account.
    assert_eq!(
        cluster.agent_pids("w1"),
        agents,
        "{}",
        cluster.workers[0].log()
    );
    let slots = cluster.worker_http(0).get("/slots").await.json();
    assert_eq!(slots["accounts"][0]["account"], "acct-1", "{slots}");
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    state.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_moves_a_dead_workers_accounts() {
    let mut cluster = Cluster::new();
    let catalogue = [
        ("acct-1", AccountSpec::new(1)),
        ("acct-2", AccountSpec::new(1)),
    ];
    cluster
        .add_worker("w1", Assignment::Registry, &catalogue)
        .await;
    cluster
        .add_worker("w2", Assignment::Registry, &catalogue)
        .await;
    // No engine yet, so nothing is assigned: an empty worker is healthy (it has room).
    let health = cluster.worker_http(0).get("/health").await;
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()["status"], "healthy");
    assert_eq!(health.json()["accounts"], 0);
    cluster.add_engine("e1", &catalogue, "").await;
    cluster.wait_serving(0, 2).await;

    let state = store(&cluster).await;
    let accounts = state.accounts().await.unwrap();
    assert_eq!(accounts.len(), 2);
    let on = |pod: &str| {
        accounts
            .iter()
            .filter(|a| a.assigned_pod.as_deref() == Some(pod))
            .count()
    };
    assert_eq!(on("w1") + on("w2"), 2, "{accounts:?}");
    // Kill the worker that holds acct-1.
    let holder = accounts[0].assigned_pod.clone().unwrap();
    let (dead, live) = if holder == "w1" { (0, "w2") } else { (1, "w1") };
    cluster.kill_worker(dead).await;

    // Within one reconcile period after the record expires, everything is on the live worker.
    let moved = poll(
        WORKER_TTL + RECONCILE_INTERVAL + Duration::from_secs(2),
        || async {
            let accounts = state.accounts().await.unwrap();
            accounts
                .iter()
                .all(|a| a.assigned_pod.as_deref() == Some(live))
        },
    )
    .await;
    if moved.is_none() {
        cluster.dump();
        panic!("the accounts did not move to {live}");
    }
    assert!(
        wait_for_lines(
            &cluster.engines[0],
            &["account assigned", "acct-1", &format!("from=\"{holder}\"")],
            1,
            Duration::from_secs(1)
        )
        .await
    );
    // The live worker starts the pool and the engine routes to both accounts there.
    cluster.wait_serving(0, 2).await;
    let live_index = 1 - dead;
    let slots = cluster.worker_http(live_index).get("/slots").await.json();
    let mut served: Vec<&str> = slots["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["account"].as_str())
        .collect();
    served.sort();
    assert_eq!(served, ["acct-1", "acct-2"]);
    for _ in 0..2 {
        let reply = cluster.engine(0).chat(&ask("moved", false)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(content(&reply), "moved");
    }
    state.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_driver_keeps_the_worker_count() {
    use test_support::cluster::{logged_pids, pid_alive, signal_pid};
    use test_support::process::Signal;

    let mut cluster = Cluster::new();
    let catalogue = [
        ("acct-1", AccountSpec::new(1)),
        ("acct-2", AccountSpec::new(1)),
    ];
    let config = cluster.worker_config("workers.yaml", &catalogue);
    let driver = format!(
        ", fleet_driver: process, process: {{ workers: 2, config: {}, data_dir: {}, shutdown_grace: 5s }}",
        config.display(),
        cluster.dir.path().join("workers").display()
    );
    cluster.add_engine_with("e1", &catalogue, &driver, "").await;
    // The leader starts two workers, assigns them the accounts, and routes to them.
    cluster.wait_serving(0, 2).await;
    let started = logged_pids(&cluster.engines[0], "worker process started");
    assert_eq!(started.len(), 2, "{started:?}");
    let reply = cluster.engine(0).chat(&ask("from a child", false)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // One dies: it is replaced, and both accounts are served again.
    signal_pid(started[0], Signal::SIGKILL);
    assert!(
        wait_for_lines(
            &cluster.engines[0],
            &["worker process started"],
            3,
            WORKER_TTL + RECONCILE_INTERVAL + Duration::from_secs(5)
        )
        .await,
        "a replacement was started"
    );
    cluster.wait_serving(0, 2).await;
    let reply = cluster.engine(0).chat(&ask("after the loss", false)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // The engine's shutdown stops its workers.
    let children = logged_pids(&cluster.engines[0], "worker process started");
    assert!(cluster.engines[0].terminate().await.success());
    for pid in children {
        assert!(!pid_alive(pid), "worker {pid} outlived the engine");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_workers_accounts_move_at_once() {
    let mut cluster = Cluster::new();
    let catalogue = [
        ("acct-1", AccountSpec::new(1)),
        ("acct-2", AccountSpec::new(1)),
    ];
    cluster
        .add_worker("w1", Assignment::Registry, &catalogue)
        .await;
    cluster
        .add_worker("w2", Assignment::Registry, &catalogue)
        .await;
    // A reconcile period far longer than the test: only the drain's topology events can
    // trigger the move in time.
    cluster.reconcile_interval = Duration::from_secs(120);
    cluster.add_engine("e1", &catalogue, "").await;
    cluster.wait_serving(0, 2).await;
    let state = store(&cluster).await;
    let holder = state.accounts().await.unwrap()[0]
        .assigned_pod
        .clone()
        .unwrap();
    let (draining, live) = if holder == "w1" { (0, "w2") } else { (1, "w1") };
    let drain = cluster
        .worker_http(draining)
        .request(test_support::Method::POST, "/drain", "")
        .await;
    assert_eq!(drain.status, 202);
    eventually_within(
        Duration::from_secs(5),
        "the accounts left the draining worker",
        || async {
            state
                .accounts()
                .await
                .unwrap()
                .iter()
                .all(|a| a.assigned_pod.as_deref() == Some(live))
        },
    )
    .await;
    assert!(cluster.workers[draining].wait().await.success());
    cluster.wait_serving(0, 2).await;
    let reply = cluster.engine(0).chat(&ask("moved", false)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    state.close().await;
}

/// Two engines share each account's circuit breaker through Redis (`cb:{id}`): the failures one
/// engine sees open the breaker for the other, which then sends the account nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opened_through_one_engine_is_respected_by_the_other() {
    let mut cluster = Cluster::new();
    // acct-1 (three slots, so it scores highest) always fails; acct-2 answers.
    cluster
        .add_worker(
            "w1",
            Assignment::Config,
            &[
                ("acct-1", AccountSpec::new(3).behaviour("crash after=0")),
                ("acct-2", AccountSpec::new(1).behaviour("stream n=2")),
            ],
        )
        .await;
    let breaker = "health: { circuit_breaker: { failure_threshold: 2, window_size: 10, reset_timeout: 60s } }\n";
    cluster.add_engine("e1", &[], breaker).await;
    cluster.add_engine("e2", &[], breaker).await;
    cluster.wait_serving(0, 2).await;
    cluster.wait_serving(1, 2).await;

    for _ in 0..2 {
        let reply = cluster.engine(0).chat(&ask("go", false)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(content(&reply), "chunk 0 chunk 1 ");
    }
    assert!(
        wait_for_lines(
            &cluster.engines[0],
            &["circuit breaker transition", "acct-1", "to=\"open\""],
            1,
            Duration::from_secs(2)
        )
        .await
    );
    // e2 sees the open breaker within a refresh interval (200 ms here) …
    let seen = eventually_within(
        Duration::from_secs(3),
        "e2 sees the breaker e1 opened",
        || async {
            let accounts = cluster.engine(1).get("/internal/accounts").await.json();
            let acct = accounts["accounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["account"] == "acct-1")
                .cloned()
                .unwrap();
            (acct["breaker"] == "open").then_some(acct)
        },
    )
    .await;
    assert_eq!(seen["status"], "unhealthy");
    // … and routes around the account without trying it once.
    for _ in 0..4 {
        let reply = cluster.engine(1).chat(&ask("go", false)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(content(&reply), "chunk 0 chunk 1 ");
    }
    let tried = cluster.engines[1]
        .log()
        .lines()
        .filter(|l| l.contains("turn failed before its first byte"))
        .count();
    assert_eq!(tried, 0, "{}", cluster.engines[1].log());
    let health = cluster.engine(1).get("/health").await.json();
    assert_eq!(health["status"], "degraded", "{health}");
    // The transition was made (and logged) once, by the engine that wrote it.
    assert!(
        !cluster.engines[1]
            .log()
            .contains("circuit breaker transition")
    );
    // It is the stored breaker both engines read.
    let state = store(&cluster).await;
    let read = drawbridge_state::BreakerStore::breakers(&state, &["acct-1".to_owned()])
        .await
        .unwrap();
    let stored: Value = serde_json::from_str(read.values[0].as_deref().unwrap()).unwrap();
    assert_eq!(stored["state"], "open", "{stored}");
    state.close().await;
}
