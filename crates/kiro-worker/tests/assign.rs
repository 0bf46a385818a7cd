//! The worker's account map under concurrent changes: an assignment and a reload (or two
//! assignments) racing for one account end with one pool, and no agent process outlives the
//! pool it belonged to.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use drawbridge_config::Config;
use drawbridge_telemetry::Shutdown;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use kiro_worker::Worker;
use test_support::{binary, eventually, processes_under};

const POOL_SIZE: usize = 2;
/// Each agent takes this long to start: a pool that was replaced but not stopped would have its
/// processes alive (and counted) for at least this long.
const START_DELAY_MS: u64 = 300;

fn config(data_dir: &std::path::Path, assignment: &str) -> Config {
    let yaml = format!(
        "node: {{ id: w1 }}\n\
         cluster: {{ assignment: {assignment} }}\n\
         worker: {{ data_dir: {dir} }}\n\
         accounts:\n\
         \x20 - id: a\n    pool_size: {POOL_SIZE}\n    agent: {{ command: {agent}, args: [], env: {{ MOCK_ACP_START_DELAY_MS: '{START_DELAY_MS}' }} }}\n",
        dir = data_dir.display(),
        agent = binary("mock-acp-agent").display(),
    );
    Config::from_yaml(&yaml).unwrap_or_else(|error| panic!("{error}"))
}

/// Wait until account `a` has every slot idle, checking all along that the live agent processes
/// never outnumber its slots; return how many there are then.
async fn settle(worker: &Worker, data_dir: &std::path::Path) -> usize {
    eventually("the pool is warm, and never more agents than slots", || {
        let agents = processes_under(data_dir).len();
        assert!(
            agents <= POOL_SIZE,
            "{agents} agent processes for {POOL_SIZE} slots"
        );
        let slots = worker.slots();
        let ready = slots.accounts.len() == 1 && slots.accounts[0].idle as usize == POOL_SIZE;
        async move { ready.then_some(agents) }
    })
    .await
}

/// Run `calls` at the same instant, each on a thread of its own (a spin barrier releases them
/// together), their spawned tasks on the test's runtime; return when all are done.
fn race<'a>(calls: &[&(dyn Fn() -> BoxFuture<'a, ()> + Sync)]) {
    let runtime = tokio::runtime::Handle::current();
    let arrived = AtomicUsize::new(0);
    tokio::task::block_in_place(|| {
        std::thread::scope(|threads| {
            for call in calls {
                let (runtime, arrived) = (&runtime, &arrived);
                threads.spawn(move || {
                    arrived.fetch_add(1, Ordering::SeqCst);
                    while arrived.load(Ordering::SeqCst) < calls.len() {
                        std::hint::spin_loop();
                    }
                    runtime.block_on(call());
                });
            }
        });
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_assignments_start_one_pool_and_leak_no_agent() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "registry");
    let worker = Worker::start(&config, Shutdown::new()).unwrap();
    let account = config.accounts[0].clone();
    for round in 0..24 {
        worker.assign(&[]).await;
        eventually("the stopped pool's agents are gone", || async {
            processes_under(dir.path()).is_empty()
        })
        .await;
        race(&[
            &|| async { worker.assign(&[&account]).await }.boxed(),
            &|| async { worker.assign(&[&account]).await }.boxed(),
        ]);
        assert_eq!(worker.slots().accounts.len(), 1, "round {round}");
        assert_eq!(
            settle(&worker, dir.path()).await,
            POOL_SIZE,
            "round {round}"
        );
    }
    worker.drain(Duration::from_secs(1)).await;
    eventually("every agent stops with the drain", || async {
        processes_under(dir.path()).is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_racing_the_assignment_restarts_the_pool_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "registry");
    let worker = Worker::start(&config, Shutdown::new()).unwrap();
    let account = config.accounts[0].clone();
    worker.assign(&[&account]).await;
    settle(&worker, dir.path()).await;
    for round in 0..6 {
        // A reload that changes the account's settings restarts its pool, while the assignment
        // loop (which read the old settings) asks for the account too.
        let mut reloaded = config.clone();
        reloaded.accounts[0].agent.args = vec![format!("--round={round}")];
        let current = worker.catalogue()[0].clone();
        race(&[&|| worker.reconfigure(&reloaded).boxed(), &|| {
            async { worker.assign(&[&current]).await }.boxed()
        }]);
        assert_eq!(worker.slots().accounts.len(), 1, "round {round}");
        // A pool stopped while its agents were still starting kills them as it ends: allow
        // that a moment, then exactly one pool's agents remain.
        eventually("one warm pool, and only its agents", || {
            let agents = processes_under(dir.path()).len();
            let slots = worker.slots();
            let ready = slots.accounts.len() == 1
                && slots.accounts[0].idle as usize == POOL_SIZE
                && agents == POOL_SIZE;
            async move { ready }
        })
        .await;
        assert_eq!(
            worker.catalogue()[0].agent.args,
            [format!("--round={round}")]
        );
    }
    worker.drain(Duration::from_secs(1)).await;
}
