//! The chaos suite: the cluster shape (one real `redis-server`, three registry-assigned workers,
//! two engines, a gateway that knows both), N streamed requests C at a time through the
//! gateway, while a fault scheduler kills and restarts workers, kills agent processes, kills the
//! leading engine and restarts it where it was, and restarts Redis (which comes back empty).
//! Every stream is classified from its bytes; the table and the fault timeline are printed at
//! the end. See RELIABILITY.md.
//!
//! `cargo test -p drawbridge-e2e --test chaos` runs the short version; `make chaos` the long one
//! (CHAOS_REQUESTS, CHAOS_CONCURRENCY, CHAOS_SEED, CHAOS_FAULT_MS, CHAOS_DEADLINE_S).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use drawbridge_state::{CONTROLLER_LEASE, LeaseStore as _};
use drawbridge_types::sse::SseDecoder;
use futures::StreamExt;
use serde_json::{Value, json};
use test_support::chaos::{ChaosClient, SendError, rss_kib};
use test_support::cluster::{Assignment, CLUSTER_CHANNEL_KEY, Cluster, pid_alive};
use test_support::process::{Process, Signal};
use test_support::stack::API_KEY;
use test_support::wait::poll;
use test_support::{AccountSpec, processes_under};
use tokio::time::Instant;

/// Chunks each mock answer streams, and the pause before each.
const CHUNKS: usize = 10;
const CHUNK_DELAY_MS: u64 = 150;
/// Agent processes per account: 3 accounts × 4 slots = 12 slots, 8 with a worker down, more
/// than the default concurrency of 6.
const POOL_SIZE: u32 = 4;
const WORKERS: [&str; 3] = ["w1", "w2", "w3"];
const ENGINES: [&str; 2] = ["e1", "e2"];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn expected_text() -> String {
    (0..CHUNKS).map(|i| format!("chunk {i} ")).collect()
}

fn catalogue() -> Vec<(&'static str, AccountSpec)> {
    let behaviour = format!("stream n={CHUNKS} delay_ms={CHUNK_DELAY_MS}");
    ["acct-1", "acct-2", "acct-3"]
        .into_iter()
        .map(|id| (id, AccountSpec::new(POOL_SIZE).behaviour(&behaviour)))
        .collect()
}

/// A small deterministic generator (xorshift64*), so a seed replays the same fault script.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// The exact answer, then `[DONE]`.
    Completed,
    /// The exact answer, then `[DONE]`, and an engine logged a resume for it (on another
    /// account, or as the continuation of an answer another engine began).
    CompletedAfterResume,
    /// An OpenAI error (an error status with an error body, or an error chunk after a prefix
    /// of the answer), then the end; or the gateway did not accept the connection at all.
    CleanError,
    /// Anything else: missing or duplicated chunks, bad JSON, no `[DONE]`, a broken body (the
    /// gateway is never killed: a body it breaks off is its failure).
    Malformed,
    /// Neither `[DONE]` nor an error within the deadline.
    Hung,
}

#[derive(Debug)]
struct Outcome {
    id: usize,
    class: Class,
    detail: String,
    /// Times the client sent the request again after a refusal before the first byte (503 or
    /// 429 with an error body), the way the OpenAI SDKs do by default.
    retries: u32,
}

/// How often a refused request is sent again: the OpenAI SDKs' default (`max_retries=2`).
const CLIENT_RETRIES: u32 = 2;

/// The pause before retry `n` (0-based): the server's `Retry-After` if any, else 0.5 s doubling,
/// at most 8 s (the OpenAI SDKs' schedule, without their jitter).
fn backoff(n: u32, retry_after: Option<Duration>) -> Duration {
    retry_after
        .unwrap_or(Duration::from_millis(500) * 2u32.saturating_pow(n))
        .min(Duration::from_secs(8))
}

/// Classify a 200 streamed body that ended (or broke with `broken`).
fn classify_stream(body: &[u8], broken: Option<String>) -> (Class, String) {
    let expected = expected_text();
    let data = SseDecoder::new().push(body);
    if let Some(error) = broken {
        return (Class::Malformed, format!("body broke: {error}"));
    }
    let mut text = String::new();
    let mut done = 0;
    let mut error: Option<Value> = None;
    for (i, payload) in data.iter().enumerate() {
        if payload == "[DONE]" {
            done += 1;
            if i + 1 != data.len() {
                return (Class::Malformed, "events after [DONE]".to_owned());
            }
            continue;
        }
        if error.is_some() {
            return (Class::Malformed, "chunks after an error chunk".to_owned());
        }
        let Ok(chunk) = serde_json::from_str::<Value>(payload) else {
            return (Class::Malformed, format!("not JSON: {payload}"));
        };
        if chunk.get("error").is_some() {
            error = Some(chunk);
            continue;
        }
        if let Some(delta) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(delta);
        }
    }
    match error {
        Some(chunk) if expected.starts_with(&text) => {
            (Class::CleanError, chunk["error"].to_string())
        }
        Some(chunk) => (
            Class::Malformed,
            format!("error chunk after a wrong prefix {text:?}: {chunk}"),
        ),
        None if done == 1 && text == expected => (Class::Completed, String::new()),
        None => (Class::Malformed, format!("[DONE] x{done}, text {text:?}")),
    }
}

/// One streamed request, from picking an engine to the classified end.
async fn run_one(
    id: usize,
    client: ChaosClient,
    gateway: SocketAddr,
    deadline: Duration,
) -> Outcome {
    let give_up = tokio::time::Instant::now() + deadline;
    let body = json!({
        "model": "kiro",
        "stream": true,
        "messages": [{"role": "user", "content": format!("chaos request {id}")}]
    });
    let request_id = format!("chaos-{id}");
    let mut retries = 0u32;
    let done = |class, detail, retries| Outcome {
        id,
        class,
        detail,
        retries,
    };
    let url = format!("http://{gateway}/v1/chat/completions");
    loop {
        let sent = tokio::time::timeout_at(
            give_up,
            client.post_streaming(&url, API_KEY, &body, &[("x-request-id", &request_id)]),
        )
        .await;
        let head = match sent {
            Err(_) => {
                return done(Class::Hung, "no response head".to_owned(), retries);
            }
            Ok(Err(SendError::NotSent(error))) => {
                return done(
                    Class::CleanError,
                    format!("the gateway did not accept: {error}"),
                    retries,
                );
            }
            Ok(Err(SendError::Failed(error))) => {
                return done(
                    Class::Malformed,
                    format!("no response head: {error}"),
                    retries,
                );
            }
            Ok(Ok(head)) => head,
        };
        let test_support::chaos::Streaming {
            status,
            retry_after,
            body: mut chunks,
        } = head;
        let mut raw = Vec::new();
        let mut broken = None;
        loop {
            match tokio::time::timeout_at(give_up, chunks.next()).await {
                Err(_) => {
                    return done(
                        Class::Hung,
                        format!("status {status}, {} bytes so far", raw.len()),
                        retries,
                    );
                }
                Ok(None) => break,
                Ok(Some(Ok(bytes))) => raw.extend_from_slice(&bytes),
                Ok(Some(Err(error))) => {
                    broken = Some(error);
                    break;
                }
            }
        }
        if status != 200 {
            let error = serde_json::from_slice::<Value>(&raw)
                .ok()
                .filter(|v| v["error"]["message"].is_string());
            return match (error, broken) {
                (Some(_), None)
                    if matches!(status, 429 | 503)
                        && retries < CLIENT_RETRIES
                        && tokio::time::Instant::now() + backoff(retries, retry_after)
                            < give_up =>
                {
                    tokio::time::sleep(backoff(retries, retry_after)).await;
                    retries += 1;
                    continue;
                }
                (Some(body), None) => done(
                    Class::CleanError,
                    format!("status {status} {}", body["error"]["code"]),
                    retries,
                ),
                _ => done(
                    Class::Malformed,
                    format!("status {status}: {}", String::from_utf8_lossy(&raw)),
                    retries,
                ),
            };
        }
        let (class, detail) = classify_stream(&raw, broken);
        return done(class, detail, retries);
    }
}

/// Poll engine `addr`'s `/health` until it has a free slot (20 s), for the timeline: the
/// gateway finds a restarted engine back by itself.
async fn wait_ready(addr: SocketAddr) -> bool {
    let client = test_support::Client::new(format!("http://{addr}"), Some(CLUSTER_CHANNEL_KEY));
    poll(Duration::from_secs(20), || async {
        let reply = client.get("/health").await;
        (reply.status == 200 && reply.json()["available_slots"].as_u64().unwrap_or(0) > 0)
            .then_some(())
    })
    .await
    .is_some()
}

/// The index in `cluster.engines` of the engine holding the controller lease (the first one
/// when the store cannot say, e.g. right after an empty restart).
async fn leader(cluster: &Cluster) -> usize {
    let holder = tokio::time::timeout(Duration::from_secs(2), async {
        let store = drawbridge_state::ValkeyRegistry::connect(&cluster.redis.url())
            .await
            .ok()?;
        let holder = store.holder(CONTROLLER_LEASE).await.ok().flatten();
        store.close().await;
        holder
    })
    .await
    .ok()
    .flatten();
    holder
        .and_then(|h| ENGINES.iter().position(|e| *e == h.holder))
        .and_then(|name| {
            // cluster.engines is kept in ENGINES order (a restarted engine goes back in place).
            (name < cluster.engines.len()).then_some(name)
        })
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillWorker,
    KillAgent,
    KillLeader,
    RestartRedis,
}

struct Chaos {
    cluster: Cluster,
    gateway: Process,
    /// Processes killed and replaced, kept for their logs.
    graveyard: Vec<Process>,
    /// Every agent pid seen during the run.
    agents_seen: BTreeSet<u32>,
    timeline: Vec<(Duration, String)>,
    started: Instant,
}

impl Chaos {
    fn note(&mut self, what: String) {
        self.timeline.push((self.started.elapsed(), what));
    }

    fn sample_agents(&mut self) {
        for id in WORKERS {
            self.agents_seen.extend(self.cluster.agent_pids(id));
        }
    }

    async fn apply(&mut self, fault: Fault, rng: &mut Rng) {
        self.sample_agents();
        match fault {
            Fault::KillWorker => {
                let i = rng.below(WORKERS.len());
                self.cluster.kill_worker(i).await;
                let t = self.started.elapsed();
                let dead = self.cluster.workers.remove(i);
                self.graveyard.push(dead);
                // Start it again in the same place (same id, same data directory).
                let last = self.cluster.workers.split_off(i);
                self.cluster
                    .add_worker(WORKERS[i], Assignment::Registry, &catalogue())
                    .await;
                self.cluster.workers.extend(last);
                self.note(format!(
                    "SIGKILL worker {} (at {t:.1?}), restarted",
                    WORKERS[i]
                ));
            }
            Fault::KillAgent => {
                let all: Vec<(usize, u32)> = WORKERS
                    .iter()
                    .enumerate()
                    .flat_map(|(w, id)| {
                        self.cluster.agent_pids(id).into_iter().map(move |p| (w, p))
                    })
                    .collect();
                if all.is_empty() {
                    self.note("SIGKILL agent: none running".to_owned());
                    return;
                }
                let (w, pid) = all[rng.below(all.len())];
                test_support::cluster::signal_pid(pid, Signal::SIGKILL);
                self.note(format!("SIGKILL agent pid {pid} of {}", WORKERS[w]));
            }
            Fault::KillLeader => {
                let i = leader(&self.cluster).await;
                let addr = self.cluster.engines[i].addr("engine");
                self.cluster.engines[i].signal(Signal::SIGKILL);
                self.cluster.engines[i].wait().await;
                let t = self.started.elapsed();
                let dead = self.cluster.engines.remove(i);
                self.graveyard.push(dead);
                let last = self.cluster.engines.split_off(i);
                // Where it was: the gateway knows the engines by address.
                self.cluster
                    .add_engine_listening(ENGINES[i], &addr.to_string(), &catalogue(), "", "")
                    .await;
                self.cluster.engines.extend(last);
                let ready = wait_ready(addr).await;
                self.note(format!(
                    "SIGKILL leading engine {} (at {t:.1?}), restarted, {}",
                    ENGINES[i],
                    if ready {
                        "serving"
                    } else {
                        "NOT READY in 20 s"
                    }
                ));
            }
            Fault::RestartRedis => {
                let redis = &mut self.cluster.redis;
                tokio::task::block_in_place(|| redis.restart());
                self.note("redis restarted (empty)".to_owned());
            }
        }
    }

    /// Stop everything the graceful way; the first complaint, if any.
    async fn stop(&mut self) {
        self.sample_agents();
        self.gateway.terminate().await;
        for engine in &mut self.cluster.engines {
            engine.terminate().await;
        }
        for worker in &mut self.cluster.workers {
            worker.terminate().await;
        }
        self.cluster.redis.stop();
    }

    fn logs(&self) -> Vec<String> {
        std::iter::once(&self.gateway)
            .chain(&self.cluster.engines)
            .chain(&self.cluster.workers)
            .chain(&self.graveyard)
            .map(Process::log)
            .collect()
    }
}

/// Request ids (`chaos-N`) an engine logged a resume for.
fn resumed_ids(logs: &[String]) -> BTreeSet<usize> {
    logs.iter()
        .flat_map(|log| log.lines())
        .filter(|l| {
            l.contains("answer resumed on another account")
                || l.contains("continuing an answer another engine began")
        })
        .filter_map(|l| {
            let rest = l.split("chaos-").nth(1)?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

fn rss_line(processes: &[&Process]) -> String {
    processes
        .iter()
        .map(|p| {
            let kib = rss_kib(p.pid()).map_or("-".to_owned(), |k| format!("{k}"));
            format!("{}:{kib}KiB", p.pid())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_survive_killed_workers_agents_engines_and_redis() {
    let requests: usize = env_or("CHAOS_REQUESTS", 60);
    let concurrency: usize = env_or("CHAOS_CONCURRENCY", 6);
    let seed: u64 = env_or("CHAOS_SEED", 7);
    let fault_ms: u64 = env_or("CHAOS_FAULT_MS", 1500);
    let deadline = Duration::from_secs(env_or("CHAOS_DEADLINE_S", 30));

    let mut cluster = Cluster::new();
    for id in WORKERS {
        cluster
            .add_worker(id, Assignment::Registry, &catalogue())
            .await;
    }
    for id in ENGINES {
        cluster.add_engine(id, &catalogue(), "").await;
    }
    for i in 0..ENGINES.len() {
        cluster.wait_serving(i, 3).await;
    }
    let gateway = cluster.start_gateway(API_KEY).await;
    let gateway_addr = gateway.addr("gateway");
    let ready = poll(Duration::from_secs(20), || async {
        let client = test_support::Client::new(format!("http://{gateway_addr}"), Some(API_KEY));
        (client.get("/health").await.status == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "the gateway never became healthy");
    let rss_before = rss_line(
        &std::iter::once(&gateway)
            .chain(&cluster.engines)
            .chain(&cluster.workers)
            .collect::<Vec<_>>(),
    );
    let mut chaos = Chaos {
        cluster,
        gateway,
        graveyard: Vec::new(),
        agents_seen: BTreeSet::new(),
        timeline: Vec::new(),
        started: Instant::now(),
    };
    chaos.sample_agents();

    let client = ChaosClient::new();
    let driver = tokio::spawn({
        async move {
            futures::stream::iter(0..requests)
                .map(|id| run_one(id, client.clone(), gateway_addr, deadline))
                .buffer_unordered(concurrency)
                .collect::<Vec<Outcome>>()
                .await
        }
    });

    // The fault script: each kind once (in a seeded order), then seeded picks, one every
    // `fault_ms` ± 50 % until the driver is done.
    let mut rng = Rng::new(seed);
    let mut script = vec![
        Fault::KillAgent,
        Fault::KillWorker,
        Fault::RestartRedis,
        Fault::KillLeader,
    ];
    for i in (1..script.len()).rev() {
        script.swap(i, rng.below(i + 1));
    }
    let mut script = script.into_iter();
    while !driver.is_finished() {
        let pause = fault_ms / 2 + rng.next() % fault_ms.max(1);
        // Pacing the faults, not waiting for anything: the driver runs regardless.
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if driver.is_finished() {
            break;
        }
        let fault = script.next().unwrap_or_else(|| {
            [
                Fault::KillAgent,
                Fault::KillAgent,
                Fault::KillWorker,
                Fault::KillWorker,
                Fault::KillLeader,
                Fault::RestartRedis,
            ][rng.below(6)]
        });
        chaos.apply(fault, &mut rng).await;
    }
    let outcomes = driver.await.expect("the driver ran");
    let elapsed = chaos.started.elapsed();
    let rss_after = rss_line(
        &std::iter::once(&chaos.gateway)
            .chain(&chaos.cluster.engines)
            .chain(&chaos.cluster.workers)
            .collect::<Vec<_>>(),
    );

    // CHAOS_LOGS=DIR keeps every process's log there (killed ones too) for a post-mortem.
    if let Ok(dir) = std::env::var("CHAOS_LOGS") {
        // The gateway, live engines, live workers, then the killed ones, in that order.
        for (i, log) in chaos.logs().iter().enumerate() {
            let _ = std::fs::write(std::path::Path::new(&dir).join(format!("{i}.log")), log);
        }
    }
    // Resumes come from the engines' logs (the killed ones' too).
    let resumed = resumed_ids(&chaos.logs());
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|mut o| {
            if o.class == Class::Completed && resumed.contains(&o.id) {
                o.class = Class::CompletedAfterResume;
            }
            o
        })
        .collect();

    // Stop the cluster, then look for agents that outlived it.
    chaos.stop().await;
    let dir = chaos.cluster.dir.path().to_owned();
    let leftover = poll(Duration::from_secs(10), || {
        let under = processes_under(&dir);
        let seen: Vec<u32> = chaos
            .agents_seen
            .iter()
            .copied()
            .filter(|p| pid_alive(*p))
            .collect();
        std::future::ready((under.is_empty() && seen.is_empty()).then_some(()))
    })
    .await;
    let mut orphans: BTreeSet<u32> = processes_under(&dir).into_iter().collect();
    orphans.extend(chaos.agents_seen.iter().copied().filter(|p| pid_alive(*p)));

    // The report.
    let mut counts: BTreeMap<Class, usize> = BTreeMap::new();
    for o in &outcomes {
        *counts.entry(o.class).or_default() += 1;
    }
    let count = |c: Class| counts.get(&c).copied().unwrap_or(0);
    let completed = count(Class::Completed) + count(Class::CompletedAfterResume);
    let pct = |n: usize, of: usize| 100.0 * n as f64 / of.max(1) as f64;
    eprintln!(
        "\n==== chaos: {requests} streamed requests, concurrency {concurrency}, seed {seed}, \
         a fault every {fault_ms} ms ± 50 %, deadline {deadline:?}, {elapsed:.1?} ===="
    );
    eprintln!("fault timeline:");
    for (t, what) in &chaos.timeline {
        eprintln!("  {:>8.2}s  {what}", t.as_secs_f64());
    }
    eprintln!("outcomes:");
    for class in [
        Class::Completed,
        Class::CompletedAfterResume,
        Class::CleanError,
        Class::Malformed,
        Class::Hung,
    ] {
        eprintln!("  {:<22} {:>6}", format!("{class:?}"), count(class));
    }
    eprintln!(
        "  completed: {completed}/{requests} = {:.1} %",
        pct(completed, requests)
    );
    eprintln!(
        "  resumes logged: {}; agents seen: {}; orphans: {orphans:?}",
        resumed.len(),
        chaos.agents_seen.len()
    );
    eprintln!(
        "  client retries after a refusal (503/429 before the first byte, as the OpenAI SDKs \
         do, at most {CLIENT_RETRIES}): {} in {} streams",
        outcomes.iter().map(|o| o.retries).sum::<u32>(),
        outcomes.iter().filter(|o| o.retries > 0).count()
    );
    eprintln!("  RSS before (gateway, engines, workers): {rss_before}");
    eprintln!("  RSS after  (gateway, engines, workers): {rss_after}");
    for o in outcomes
        .iter()
        .filter(|o| !matches!(o.class, Class::Completed | Class::CompletedAfterResume))
    {
        eprintln!(
            "  #{:<5} {:?} after {} retries: {}",
            o.id, o.class, o.retries, o.detail
        );
    }

    assert_eq!(count(Class::Malformed), 0, "malformed streams (see above)");
    assert_eq!(count(Class::Hung), 0, "hung streams (see above)");
    assert!(
        leftover.is_some() && orphans.is_empty(),
        "agent processes outlived the cluster: {orphans:?}"
    );
    // The >= 99 % target is printed on every run and asserted with CHAOS_ENFORCE_TARGET=1, as
    // `make chaos` runs the long version: in the short run of `make test` one unlucky stream
    // of 60 is 1.7 %, so there it is a figure, not a verdict (RELIABILITY.md has the long runs).
    let share = pct(completed, requests);
    eprintln!(
        "  target >= {TARGET_PCT} % completed: {}",
        if share >= TARGET_PCT {
            "met"
        } else {
            "NOT MET"
        }
    );
    if env_or("CHAOS_ENFORCE_TARGET", 0u8) == 1 {
        assert!(
            share >= TARGET_PCT,
            "{share:.1} % < {TARGET_PCT} % completed (see above)"
        );
    }
}

/// The completion target.
const TARGET_PCT: f64 = 99.0;

/// The classifier on made-up bodies: each kind of bad stream is caught.
mod classifier {
    use super::*;

    fn sse(payloads: &[String]) -> Vec<u8> {
        payloads
            .iter()
            .map(|p| format!("data: {p}\n\n"))
            .collect::<String>()
            .into_bytes()
    }

    fn chunk(text: &str) -> String {
        json!({"choices": [{"index": 0, "delta": {"content": text}}]}).to_string()
    }

    fn answer() -> Vec<String> {
        (0..CHUNKS).map(|i| chunk(&format!("chunk {i} "))).collect()
    }

    fn with_done(mut payloads: Vec<String>) -> Vec<String> {
        payloads.push("[DONE]".to_owned());
        payloads
    }

    #[test]
    fn the_whole_answer_then_done_is_completed() {
        let body = sse(&with_done(answer()));
        assert_eq!(classify_stream(&body, None).0, Class::Completed);
    }

    #[test]
    fn missing_duplicated_or_unterminated_answers_are_malformed() {
        let mut missing = answer();
        missing.remove(3);
        let mut duplicated = answer();
        duplicated.insert(3, chunk("chunk 2 "));
        let mut two_dones = with_done(answer());
        two_dones.push("[DONE]".to_owned());
        let mut bad_json = with_done(answer());
        bad_json[1] = "{not json".to_owned();
        for payloads in [
            with_done(missing),
            with_done(duplicated),
            answer(),
            two_dones,
            bad_json,
        ] {
            let (class, detail) = classify_stream(&sse(&payloads), None);
            assert_eq!(class, Class::Malformed, "{detail}");
        }
        // A body that broke off.
        let (class, _) = classify_stream(&sse(&answer()[..2]), Some("eof".to_owned()));
        assert_eq!(class, Class::Malformed);
    }

    #[test]
    fn an_error_chunk_after_a_prefix_is_a_clean_error() {
        let error = json!({"error": {"message": "gone", "code": "service_unavailable"}});
        let mut payloads = answer()[..3].to_vec();
        payloads.push(error.to_string());
        assert_eq!(classify_stream(&sse(&payloads), None).0, Class::CleanError);
        let mut wrong = vec![chunk("chunk 7 ")];
        wrong.push(error.to_string());
        assert_eq!(classify_stream(&sse(&wrong), None).0, Class::Malformed);
    }
}
