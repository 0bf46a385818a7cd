//! Warm sessions: after an answer, the session (and its process) may stay open for a follow-up
//! that extends the conversation, which then sends only its new messages. An account keeps at
//! most `worker.warm_sessions` of them, each for at most `worker.warm_session_ttl`; a request
//! of the account that finds no idle process takes one back at once (a cold slot is preferred
//! over a warm session only while the pool has one), and a drain ends them all.

use drawbridge_acp::AgentProcess;

use super::TurnEnv;
use crate::live::Resume;
use crate::pool::AccountPool;

/// Whether the account may keep one more warm session on `process`.
pub(super) fn has_room(pool: &AccountPool, env: &TurnEnv, process: &AgentProcess) -> bool {
    let cap = usize::try_from(env.settings.warm_sessions).unwrap_or(usize::MAX);
    cap > 0 && env.live.warm(&pool.id) < cap && !env.shutdown.is_cancelled() && process.is_alive()
}

/// Park the session under the conversation `key` after it gave `answer`, until a follow-up
/// takes it (`Some`), or its TTL passes, the worker drains or a request needs its process
/// (`None`: the session ends and the process serves again).
pub(super) async fn wait(
    pool: &AccountPool,
    env: &TurnEnv,
    key: &str,
    answer: String,
) -> Option<Resume> {
    let ticket = env.live.park_warm(key, &pool.id, answer);
    let _parked = pool.warm_parked();
    let mut resume = ticket.resume;
    let why = tokio::select! {
        follow_up = &mut resume => return follow_up.ok(),
        () = tokio::time::sleep(env.settings.warm_session_ttl) => "its TTL passed",
        () = env.shutdown.cancelled() => "the worker is draining",
        () = pool.pressed() => "a request needs its process",
    };
    if env.live.unpark(key) {
        tracing::debug!(account = pool.id, why, "warm session ended");
        return None;
    }
    // A follow-up took it first: it is on its way.
    resume.await.ok()
}
