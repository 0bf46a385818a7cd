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

/// A follow-up for a parked session: its new messages and where the new answer goes.
#[derive(Debug)]
pub(crate) struct Resume {
    pub request_id: String,
    /// For a session holding tool calls, the request's trailing `tool` messages (results by
    /// `tool_call_id`); for a warm session, the messages after the answer it gave.
    pub messages: Vec<ChatMessage>,
    /// The follow-up's own conversation key (a warm session's next key).
    pub conversation: Option<String>,
    pub out: mpsc::Sender<WorkerEvent>,
}

/// The parked sessions of one worker, by live-session id.
#[derive(Default)]
pub(crate) struct LiveSessions {
    parked: Mutex<HashMap<String, Parked>>,
}

struct Parked {
    account: String,
    /// A warm session: the answer it gave (a follow-up must bring it back unchanged).
    answer: Option<String>,
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

    /// Park session `live` of `account` (holding tool calls) until a follow-up takes it.
    pub fn park(&self, live: &str, account: &str) -> Ticket {
        self.insert(live, account, None)
    }

    /// Park a warm session of `account` under its conversation `key`, after it gave `answer`.
    pub fn park_warm(&self, key: &str, account: &str, answer: String) -> Ticket {
        self.insert(key, account, Some(answer))
    }

    fn insert(&self, id: &str, account: &str, answer: Option<String>) -> Ticket {
        let (tx, rx) = oneshot::channel();
        self.map().insert(
            id.to_owned(),
            Parked {
                account: account.to_owned(),
                answer,
                resume: tx,
            },
        );
        Ticket { resume: rx }
    }

    /// Warm sessions of `account` parked now.
    pub fn warm(&self, account: &str) -> usize {
        self.map()
            .values()
            .filter(|p| p.account == account && p.answer.is_some())
            .count()
    }

    /// Give up a parked session (its TTL passed, the worker drains, its turn ended). False
    /// when a follow-up took it first: the caller then receives that follow-up.
    pub fn unpark(&self, live: &str) -> bool {
        self.map().remove(live).is_some()
    }

    /// Hand `resume` to session `live` of `account`, if it is parked here and, for a warm
    /// session, `answer` (the answer as the client sent it back) is the one it gave. Gives the
    /// follow-up back otherwise (gone, another account's, another conversation), to be served
    /// in a fresh session.
    pub fn resume(
        &self,
        live: &str,
        account: &str,
        answer: Option<&str>,
        resume: Resume,
    ) -> Result<(), Resume> {
        let parked = {
            let mut map = self.map();
            let fits = map.get(live).is_some_and(|parked| {
                parked.account == account
                    && match (&parked.answer, answer) {
                        (None, _) => true,
                        (Some(given), Some(sent_back)) => {
                            drawbridge_core::conversation::same_answer(given, sent_back)
                        }
                        (Some(_), None) => false,
                    }
            });
            if fits { map.remove(live) } else { None }
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
                messages: vec![result],
                conversation: None,
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
        live.resume("s1", "acct", None, resume).unwrap();
        let got = ticket.resume.await.unwrap();
        assert_eq!(got.messages[0].text(), "sunny");
        assert_eq!(live.len(), 0);
        // Taken: a second follow-up is served elsewhere; the session is no longer parked.
        let (again, _rx) = follow_up();
        assert!(live.resume("s1", "acct", None, again).is_err());
        assert!(!live.unpark("s1"));
    }

    #[tokio::test]
    async fn another_accounts_request_or_an_unparked_session_is_not_resumed() {
        let live = LiveSessions::default();
        let _ticket = live.park("s1", "acct");
        let (resume, _rx) = follow_up();
        let resume = live.resume("s1", "other", None, resume).unwrap_err();
        assert_eq!(
            live.len(),
            1,
            "the session stays parked for its own account"
        );
        assert!(live.unpark("s1"));
        assert!(live.resume("s1", "acct", None, resume).is_err());
    }

    #[tokio::test]
    async fn a_warm_session_takes_only_a_follow_up_that_brings_its_answer_back() {
        let live = LiveSessions::default();
        let ticket = live.park_warm("k1", "acct", "Hello.".into());
        assert_eq!(live.warm("acct"), 1);
        assert_eq!(live.warm("other"), 0);
        let (resume, _rx) = follow_up();
        let resume = live
            .resume("k1", "acct", Some("Hello, edited."), resume)
            .unwrap_err();
        let resume = live.resume("k1", "acct", None, resume).unwrap_err();
        assert_eq!(live.warm("acct"), 1, "still parked");
        live.resume("k1", "acct", Some(" Hello.\n"), resume)
            .unwrap();
        assert!(ticket.resume.await.is_ok());
        assert_eq!(live.warm("acct"), 0);
    }

    #[tokio::test]
    async fn a_follow_up_for_a_session_whose_task_is_gone_comes_back() {
        let live = LiveSessions::default();
        drop(live.park("s1", "acct"));
        let (resume, _rx) = follow_up();
        assert!(live.resume("s1", "acct", None, resume).is_err());
    }
}
