//! What the mock's client tests share: run one prompt while collecting its events, and read
//! the text out of them.

use std::future::Future;
use std::time::Duration;

use drawbridge_acp::{AcpError, AgentEvent, PromptOutcome};
use tokio::sync::mpsc;

/// An upper bound on anything a test waits for; tests finish far sooner.
pub const GUARD: Duration = Duration::from_secs(10);

/// Run the prompt `start` makes with an event channel, collecting its events concurrently (the
/// channel is deliberately small).
pub async fn collected<F>(
    start: impl FnOnce(mpsc::Sender<AgentEvent>) -> F,
) -> (Vec<AgentEvent>, Result<PromptOutcome, AcpError>)
where
    F: Future<Output = Result<PromptOutcome, AcpError>>,
{
    let (tx, mut rx) = mpsc::channel(2);
    let collect = async {
        let mut events = Vec::new();
        while let Some(event) = rx.recv().await {
            events.push(event);
        }
        events
    };
    let (outcome, events) = tokio::time::timeout(GUARD, futures::future::join(start(tx), collect))
        .await
        .expect("prompt timed out");
    (events, outcome)
}

/// The text of `events`, joined.
pub fn text_of(events: &[AgentEvent]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            AgentEvent::Text(text) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}
