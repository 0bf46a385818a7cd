//! Warm sessions (`--sections warm`): what a follow-up costs when the agent's session stayed
//! open, against rendering the whole conversation into a fresh session again.
//!
//! Two single-process `drawbridge`s from the stack's config, each with one account × one
//! instant mock agent (pool 1, so the mock's `stats` describe the process that served the
//! conversation): one with `worker.warm_sessions: 0` (every request opens a fresh session and
//! sends the whole conversation as its prompt) and one with `warm_sessions: 2` (a follow-up
//! goes to the session that answered the conversation so far, with only the new messages as
//! its prompt).
//!
//! Each conversation has `turns` turns, driven the way a client does: every request carries
//! all the earlier messages, the assistant's answers as they were streamed, and one new user
//! message of `message_bytes` bytes of prose ending in `[[mock:stream n=CHUNKS]]`. The mock
//! obeys the last directive of a prompt, which in a full render is the new message's, so every
//! answer is the same `chunk 0 … chunk N-1 ` in both modes (checked). For the last turn it
//! measures:
//!
//! - the bytes of prompt text the agent received. A `stats` prompt between two turns would
//!   end the warm session (a request that finds no idle process takes a warm session's process
//!   back), so each conversation runs twice, with `turns - 1` turns and then with `turns`
//!   turns, the mock's `prompt_bytes` read before, between and after the two runs: the last
//!   turn sent the second run's bytes less the first's (each run's figure includes one `stats`
//!   prompt, which counts itself, so they cancel out);
//! - the time to the first content chunk of the last turn (streamed), from sending the request.
//!
//! Conversations alternate between the two processes (which one goes first alternates too) so
//! that a change in the machine's load hits both alike; the medians and the ratios warm / full
//! are reported. A `drawbridge` that does not know `warm_sessions` (its config refuses unknown
//! keys) is measured in full render only, and the section says so.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::client::{Conn, Target, contains, excerpt};
use crate::stack::Single;
use crate::stats::Samples;
use crate::worker::Bins;

/// The issue's goal: the warm turn sends under 10% of the bytes of the full render.
pub const BYTES_TARGET: f64 = 0.10;
/// The config key under test, set through the environment.
const WARM_KEY: &str = "DRAWBRIDGE_WORKER__WARM_SESSIONS";
/// `warm_sessions` of the warm `drawbridge` (the feature's default).
const WARM_SESSIONS: u32 = 2;
const STATS_PROMPT: &str = "[[mock:stats]]";
/// The prose the user messages are made of (ASCII, so any length is a char boundary).
const PROSE: &str = "The keeper lowers the drawbridge at dawn, counts every cart that crosses the moat, and raises it again at dusk. ";

/// The knobs of the warm-session measurement.
#[derive(Debug, Clone)]
pub struct WarmArgs {
    pub conversations: usize,
    pub turns: usize,
    /// The size of each user message's prose (the directive comes on top).
    pub message_bytes: usize,
    /// The chunks of every answer.
    pub chunks: u64,
    pub log_level: String,
    /// Added to every process's environment.
    pub env: Vec<(String, String)>,
}

/// The figures the caller reports.
pub struct WarmReport {
    pub metrics: Vec<(String, f64, &'static str)>,
    pub failures: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Full,
    Warm,
}

impl Mode {
    fn key(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Warm => "warm",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Mode::Full => "full render (warm_sessions: 0)",
            Mode::Warm => "warm session (warm_sessions: 2)",
        }
    }

    fn sessions(self) -> u32 {
        match self {
            Mode::Full => 0,
            Mode::Warm => WARM_SESSIONS,
        }
    }
}

/// One `drawbridge` under test.
struct Server {
    mode: Mode,
    single: Single,
}

/// The last turn of one conversation.
struct LastTurn {
    prompt_bytes: u64,
    first: Duration,
}

/// Start the two `drawbridge`s (or the full-render one alone), run the conversations, stop.
pub async fn run(bins: &Bins, args: &WarmArgs) -> Result<WarmReport> {
    let mut report = WarmReport {
        metrics: Vec::new(),
        failures: 0,
    };
    let turns = args.turns.max(2);
    let (full, supported) = start_full(bins, args).await?;
    let mut servers = vec![full];
    if supported {
        servers.push(start(bins, args, Some(Mode::Warm)).await?);
    }
    for server in &servers {
        server.single.wait_ready(Duration::from_secs(90)).await?;
    }
    println!(
        "\nWarm sessions: single-process drawbridge, one account × pool 1 of instant mock agents; {turns}-turn conversations, each user message {} B of prose + `[[mock:stream n={}]]`; the last turn of {} conversation(s) per mode, modes alternating",
        args.message_bytes, args.chunks, args.conversations,
    );
    if !supported {
        println!(
            "  this drawbridge does not know `worker.warm_sessions` (its config refused the key): full render measured alone"
        );
    }

    let mut results: Vec<(Mode, Vec<LastTurn>)> =
        servers.iter().map(|s| (s.mode, Vec::new())).collect();
    for conversation in 0..args.conversations {
        let order: Vec<usize> = if conversation % 2 == 0 {
            (0..servers.len()).collect()
        } else {
            (0..servers.len()).rev().collect()
        };
        for index in order {
            let server = &servers[index];
            match converse(server, conversation, turns, args).await {
                Ok(last) => results[index].1.push(last),
                Err(error) => {
                    report.failures += 1;
                    eprintln!(
                        "warm {}: conversation {conversation}: {error:#}",
                        server.mode.key()
                    );
                }
            }
        }
    }

    print_results(&mut report, turns, &results, supported);

    for server in servers {
        let key = server.mode.key();
        if !server.single.stop().await? {
            eprintln!("warm {key}: drawbridge did not exit 0 after SIGTERM");
            report.failures += 1;
        }
    }
    Ok(report)
}

/// The full-render `drawbridge`, and whether it knows `warm_sessions` (without it, a
/// `drawbridge` renders every request in full anyway).
async fn start_full(bins: &Bins, args: &WarmArgs) -> Result<(Server, bool)> {
    match start(bins, args, Some(Mode::Full)).await {
        Ok(server) => Ok((server, true)),
        Err(error) if format!("{error:#}").contains("warm_sessions") => {
            Ok((start(bins, args, None).await?, false))
        }
        Err(error) => Err(error),
    }
}

/// A `drawbridge` for `mode` (`None`: without the warm key, i.e. full render before the
/// feature).
async fn start(bins: &Bins, args: &WarmArgs, mode: Option<Mode>) -> Result<Server> {
    let mut env = args.env.clone();
    if let Some(mode) = mode {
        env.push((WARM_KEY.to_owned(), mode.sessions().to_string()));
    }
    let single = Single::start(bins, 1, &args.log_level, &env).await?;
    Ok(Server {
        mode: mode.unwrap_or(Mode::Full),
        single,
    })
}

/// Ask the mock behind `target` for its `prompt_bytes` (a non-streamed `stats` prompt).
async fn prompt_bytes(conn: &mut Conn, target: &Target) -> Result<u64> {
    let body = json!({
        "model": "kiro",
        "messages": [{"role": "user", "content": STATS_PROMPT}],
    });
    let (status, reply) = conn
        .call(
            Method::POST,
            target.path,
            target.authorization.as_deref(),
            Bytes::from(serde_json::to_vec(&body)?),
        )
        .await?;
    if status != 200 {
        bail!("stats: status {status}: {}", excerpt(&reply));
    }
    let reply: Value = serde_json::from_slice(&reply).context("stats: not JSON")?;
    let content = reply["choices"][0]["message"]["content"]
        .as_str()
        .with_context(|| format!("stats: no message content in {reply}"))?;
    let stats: Value = serde_json::from_str(content)
        .with_context(|| format!("stats: the mock's answer {content:?}"))?;
    stats["prompt_bytes"].as_u64().with_context(|| {
        format!("the mock's stats have no prompt_bytes (an older mock-acp-agent?): {stats}")
    })
}

/// Conversation `conversation` on `server`, first with `turns - 1` turns, then with `turns`:
/// the last turn's figures.
async fn converse(
    server: &Server,
    conversation: usize,
    turns: usize,
    args: &WarmArgs,
) -> Result<LastTurn> {
    let target = &server.single.target;
    let mut conn = Conn::open(target.addr).await?;
    let start = prompt_bytes(&mut conn, target).await?;
    drive(&mut conn, target, conversation, turns - 1, args).await?;
    let between = prompt_bytes(&mut conn, target).await?;
    let first = drive(&mut conn, target, conversation, turns, args).await?;
    let end = prompt_bytes(&mut conn, target).await?;
    let sent = match (between.checked_sub(start), end.checked_sub(between)) {
        (Some(shorter), Some(longer)) => longer.checked_sub(shorter),
        _ => None,
    };
    let prompt_bytes = sent.with_context(|| {
        format!(
            "prompt_bytes {start} → {between} → {end}: the longer run sent less (not the same agent process?)"
        )
    })?;
    Ok(LastTurn {
        prompt_bytes,
        first,
    })
}

/// The first `turns` turns of conversation `conversation`, each request carrying the whole
/// conversation so far; the time to the first token of the last turn.
async fn drive(
    conn: &mut Conn,
    target: &Target,
    conversation: usize,
    turns: usize,
    args: &WarmArgs,
) -> Result<Duration> {
    let expected = expected_answer(args.chunks);
    let mut messages = Vec::with_capacity(2 * turns);
    let mut first = Duration::ZERO;
    for turn in 1..=turns {
        messages.push(json!({
            "role": "user",
            "content": user_message(conversation, turn, args.message_bytes, args.chunks),
        }));
        let body = Bytes::from(serde_json::to_vec(&json!({
            "model": "kiro",
            "messages": messages,
            "stream": true,
        }))?);
        let reply;
        (first, reply) = conn
            .first_content(target, body, Instant::now())
            .await
            .with_context(|| format!("turn {turn}"))?;
        if !(reply.ends_with(b"data: [DONE]\n\n") && contains(&reply, br#""finish_reason":"stop""#))
        {
            bail!(
                "turn {turn}: the stream did not end well: {}",
                excerpt(&reply)
            );
        }
        let answer = stream_text(&reply);
        if answer != expected {
            bail!("turn {turn}: the answer was {answer:?}, not {expected:?}");
        }
        messages.push(json!({"role": "assistant", "content": answer}));
    }
    Ok(first)
}

/// Turn `turn`'s user message: `bytes` bytes of prose (unique to the conversation and turn),
/// then the directive that makes the answer `chunks` chunks.
fn user_message(conversation: usize, turn: usize, bytes: usize, chunks: u64) -> String {
    let mut text = format!("Conversation {conversation}, turn {turn}. ");
    let head = text.len();
    while text.len() < bytes {
        text.push_str(PROSE);
    }
    text.truncate(bytes.max(head));
    text.push_str(&format!(" [[mock:stream n={chunks}]]"));
    text
}

/// What the mock's `stream n=chunks` answers.
fn expected_answer(chunks: u64) -> String {
    (0..chunks).map(|i| format!("chunk {i} ")).collect()
}

/// The text of a streamed answer: every SSE chunk's delta content, in order.
fn stream_text(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .flat_map(str::lines)
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// The median of `values` (the lower middle one of an even count; 0 when empty).
fn median(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0)
}

fn print_results(
    report: &mut WarmReport,
    turns: usize,
    results: &[(Mode, Vec<LastTurn>)],
    supported: bool,
) {
    println!(
        "  {:<34} {:>4} {:>16} {:>20}",
        format!("turn {turns} of {turns}"),
        "n",
        "prompt bytes p50",
        "first token p50 ms"
    );
    let mut medians = Vec::new();
    for (mode, lasts) in results {
        let bytes: Vec<u64> = lasts.iter().map(|last| last.prompt_bytes).collect();
        let mut firsts = Samples::with_capacity(lasts.len());
        for last in lasts {
            firsts.push(last.first);
        }
        let (bytes, first) = (median(&bytes), firsts.summary().p50);
        println!(
            "  {:<34} {:>4} {bytes:>16} {first:>20.2}",
            mode.describe(),
            lasts.len()
        );
        if lasts.is_empty() {
            continue;
        }
        let key = mode.key();
        report.metrics.push((
            format!("warm.{key}.prompt_bytes.p50"),
            bytes as f64,
            "bytes",
        ));
        report
            .metrics
            .push((format!("warm.{key}.first_token.p50"), first, "ms"));
        medians.push((*mode, bytes as f64, first));
    }
    report.metrics.push((
        "warm.supported".to_owned(),
        f64::from(u8::from(supported)),
        "bool",
    ));
    let full = medians.iter().find(|(mode, ..)| *mode == Mode::Full);
    let warm = medians.iter().find(|(mode, ..)| *mode == Mode::Warm);
    println!(
        "\nTarget (issue): the warm turn sends under {:.0}% of the full render's prompt bytes",
        BYTES_TARGET * 100.0
    );
    match (full, warm) {
        (Some((_, full_bytes, full_first)), Some((_, warm_bytes, warm_first)))
            if *full_bytes > 0.0 && *full_first > 0.0 =>
        {
            let (bytes, first) = (warm_bytes / full_bytes, warm_first / full_first);
            let met = bytes < BYTES_TARGET;
            println!(
                "  warm / full: prompt bytes {:.1}% → {}; first token {:.0}%",
                bytes * 100.0,
                if met { "met" } else { "NOT met" },
                first * 100.0
            );
            if bytes >= 0.5 {
                println!(
                    "  (the warm turn sent about as much as a full render: it was not served from a warm session)"
                );
            }
            report
                .metrics
                .push(("warm.ratio.prompt_bytes".to_owned(), bytes, "ratio"));
            report
                .metrics
                .push(("warm.ratio.first_token".to_owned(), first, "ratio"));
            report.metrics.push((
                "warm.target.prompt_bytes_met".to_owned(),
                f64::from(u8::from(met)),
                "bool",
            ));
        }
        _ => println!("  not measured (no warm figures)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_messages_have_a_fixed_size_and_end_in_the_directive() {
        let one = user_message(0, 1, 400, 8);
        let two = user_message(3, 17, 400, 8);
        assert_eq!(one.len(), 400 + " [[mock:stream n=8]]".len());
        assert_eq!(one.len(), two.len());
        assert!(one.starts_with("Conversation 0, turn 1. The keeper"));
        assert!(two.ends_with("[[mock:stream n=8]]"));
        assert_ne!(one, user_message(0, 2, 400, 8));
        // Too small for the prose: the head stays whole.
        assert_eq!(
            user_message(1, 2, 4, 1),
            "Conversation 1, turn 2.  [[mock:stream n=1]]"
        );
    }

    #[test]
    fn a_streamed_answer_is_its_deltas_in_order() {
        let body = concat!(
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            ": keep-alive\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"chunk 0 \"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"chunk 1 \"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        assert_eq!(stream_text(body.as_bytes()), expected_answer(2));
        assert_eq!(expected_answer(2), "chunk 0 chunk 1 ");
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[5, 1, 3]), 3);
        assert_eq!(median(&[4, 1, 3, 2]), 2);
        assert_eq!(median(&[]), 0);
    }
}
