//! Live sessions: turns whose answer ended with the client's tool calls. The agent is still in
//! its prompt turn, waiting on the MCP calls the bridge holds; the turn's task keeps its
//! process, session and calls, and parks here under the live session's id (the id in every
//! call id it issued). The client's next request that answers those calls names the session
//! ([`PromptInput::live_session`](drawbridge_types::worker::PromptInput)); the worker hands it
//! to the parked task, which answers the calls with the client's results and streams the
//! agent's continuation as the new answer.
//!
//! A session nobody comes back for is cancelled after `worker.live_session_ttl` (or when the
//! worker drains), and its process serves again.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use drawbridge_types::openai::ChatMessage;
use drawbridge_types::worker::WorkerEvent;
use tokio::sync::{mpsc, oneshot};

/// A follow-up for a parked session: the client's tool results and where the new answer goes.
#[derive(Debug)]
pub(crate) struct Resume {
    pub request_id: String,
    /// The request's trailing `tool` messages (results by `tool_call_id`).
    pub results: Vec<ChatMessage>,
    pub out: mpsc::Sender<WorkerEvent>,
}

/// The parked sessions of one worker, by live-session id.
#[derive(Default)]
pub(crate) struct LiveSessions {
    parked: Mutex<HashMap<String, Parked>>,
}

struct Parked {
    account: String,
    resume: oneshot::Sender<Resume>,
}

/// A parked session's side of the hand-over: the follow-up arrives on `resume`.
pub(crate) struct Ticket {
    pub resume: oneshot::Receiver<Resume>,
}

impl LiveSessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Parked>> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Park session `live` of `account` until a follow-up takes it.
    pub fn park(&self, live: &str, account: &str) -> Ticket {
        let (tx, rx) = oneshot::channel();
        self.map().insert(
            live.to_owned(),
            Parked {
                account: account.to_owned(),
                resume: tx,
            },
        );
        Ticket { resume: rx }
    }

    /// Give up a parked session (its TTL passed, the worker drains, its turn ended). False
    /// when a follow-up took it first: the caller then receives that follow-up.
    pub fn unpark(&self, live: &str) -> bool {
        self.map().remove(live).is_some()
    }

    /// Hand `resume` to session `live` of `account`, if it is parked here. Gives the follow-up
    /// back when it is not (gone, or another account's), to be served in a fresh session.
    pub fn resume(&self, live: &str, account: &str, resume: Resume) -> Result<(), Resume> {
        let parked = {
            let mut map = self.map();
            match map.get(live) {
                Some(parked) if parked.account == account => map.remove(live),
                _ => None,
            }
        };
        match parked {
            Some(parked) => parked.resume.send(resume),
            None => Err(resume),
        }
    }

    /// How many sessions are parked.
    pub fn len(&self) -> usize {
        self.map().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drawbridge_types::Role;

    fn follow_up() -> (Resume, mpsc::Receiver<WorkerEvent>) {
        let (out, rx) = mpsc::channel(1);
        let mut result = ChatMessage::new(Role::Tool, "sunny");
        result.tool_call_id = Some("call_1".into());
        (
            Resume {
                request_id: "r2".into(),
                results: vec![result],
                out,
            },
            rx,
        )
    }

    #[tokio::test]
    async fn a_follow_up_reaches_its_parked_session_once() {
        let live = LiveSessions::default();
        let ticket = live.park("s1", "acct");
        assert_eq!(live.len(), 1);
        let (resume, _rx) = follow_up();
        live.resume("s1", "acct", resume).unwrap();
        let got = ticket.resume.await.unwrap();
        assert_eq!(got.results[0].text(), "sunny");
        assert_eq!(live.len(), 0);
        // Taken: a second follow-up is served elsewhere; the session is no longer parked.
        let (again, _rx) = follow_up();
        assert!(live.resume("s1", "acct", again).is_err());
        assert!(!live.unpark("s1"));
    }

    #[tokio::test]
    async fn another_accounts_request_or_an_unparked_session_is_not_resumed() {
        let live = LiveSessions::default();
        let _ticket = live.park("s1", "acct");
        let (resume, _rx) = follow_up();
        let resume = live.resume("s1", "other", resume).unwrap_err();
        assert_eq!(
            live.len(),
            1,
            "the session stays parked for its own account"
        );
        assert!(live.unpark("s1"));
        assert!(live.resume("s1", "acct", resume).is_err());
    }

    #[tokio::test]
    async fn a_follow_up_for_a_session_whose_task_is_gone_comes_back() {
        let live = LiveSessions::default();
        drop(live.park("s1", "acct"));
        let (resume, _rx) = follow_up();
        assert!(live.resume("s1", "acct", resume).is_err());
    }
}
