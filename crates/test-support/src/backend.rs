//! A scripted backend for in-process router tests: it answers chat requests as the test
//! scripted, lists the test's models and accounts, and counts what it was asked.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use drawbridge_http::{AccountsAdmin, ChatBackend, ChatContext, EventStream};
use drawbridge_types::worker::AccountStatus;
use drawbridge_types::{
    AccountView, ApiError, ChatCompletionRequest, CompletionEvent, CreditChange, ErrorKind, Finish,
    FinishReason, HealthReport, HealthStatus, Metering, Usage,
};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};

/// What the backend answers to the next chat requests.
#[derive(Debug, Clone)]
pub enum Script {
    /// These pieces of text, then the end, with this usage, served by `account` for `credits`.
    Answer {
        pieces: Vec<String>,
        usage: Usage,
        account: String,
        credits: f64,
    },
    /// Refused before any text (an HTTP error status).
    Refuse(ApiError),
    /// Never starts: `chat` stays pending (a backend still looking for an account).
    Hang,
}

impl Script {
    /// `text` in one piece: 10 prompt tokens, 5 completion tokens, 2 credits, on `acct-1`.
    pub fn text(text: &str) -> Script {
        Script::Answer {
            pieces: vec![text.to_owned()],
            usage: Usage::new(10, 5),
            account: "acct-1".to_owned(),
            credits: 2.0,
        }
    }
}

/// A [`ChatBackend`] and [`AccountsAdmin`] that answers from a [`Script`].
pub struct ScriptedBackend {
    models: Vec<String>,
    script: Mutex<Script>,
    accounts: Mutex<Vec<AccountView>>,
    chats: AtomicUsize,
    contexts: Mutex<Vec<ChatContext>>,
    requests: Mutex<Vec<ChatCompletionRequest>>,
}

impl ScriptedBackend {
    /// Serves `models` (another model is 404 `model_not_found`), answering "Hello there." on
    /// one account, `acct-1`, with 5000 milli-credits.
    pub fn new(models: &[&str]) -> Self {
        ScriptedBackend {
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            script: Mutex::new(Script::text("Hello there.")),
            accounts: Mutex::new(vec![account("acct-1", models, Some(5000))]),
            chats: AtomicUsize::new(0),
            contexts: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
        }
    }

    /// Answer the next chat requests with `script`.
    pub fn script(&self, script: Script) {
        *self.script.lock().expect("script lock") = script;
    }

    /// How many chat requests reached the backend.
    pub fn chats(&self) -> usize {
        self.chats.load(Ordering::SeqCst)
    }

    /// The contexts of the chat requests that reached it, in order.
    pub fn contexts(&self) -> Vec<ChatContext> {
        self.contexts.lock().expect("contexts lock").clone()
    }

    /// The chat requests that reached it, in order.
    pub fn requests(&self) -> Vec<ChatCompletionRequest> {
        self.requests.lock().expect("requests lock").clone()
    }
}

/// A healthy account with idle slots.
pub fn account(id: &str, models: &[&str], credits: Option<i64>) -> AccountView {
    AccountView {
        account: id.to_owned(),
        worker: "fake".to_owned(),
        models: models.iter().map(|m| (*m).to_owned()).collect(),
        status: AccountStatus::Healthy,
        slots: 2,
        busy: 0,
        queue_depth: 0,
        breaker: "closed".to_owned(),
        credits,
        last_error: None,
        draining: false,
        default_model: None,
        tools_refused: 0,
    }
}

impl ChatBackend for ScriptedBackend {
    fn chat(
        &self,
        request: ChatCompletionRequest,
        ctx: ChatContext,
    ) -> BoxFuture<'_, Result<EventStream, ApiError>> {
        self.chats.fetch_add(1, Ordering::SeqCst);
        self.contexts.lock().expect("contexts lock").push(ctx);
        self.requests
            .lock()
            .expect("requests lock")
            .push(request.clone());
        let answer = if !self.models.contains(&request.model) {
            Err(ApiError::new(
                ErrorKind::ModelNotFound,
                format!("The model '{}' does not exist.", request.model),
            ))
        } else {
            match self.script.lock().expect("script lock").clone() {
                Script::Hang => return futures::future::pending().boxed(),
                Script::Refuse(error) => Err(error),
                Script::Answer {
                    pieces,
                    usage,
                    account,
                    credits,
                } => {
                    let finish = Finish {
                        finish_reason: FinishReason::Stop,
                        usage,
                        metering: Metering {
                            accounts: vec![account],
                            credits,
                            tokens_estimated: false,
                        },
                    };
                    let events = pieces
                        .into_iter()
                        .map(CompletionEvent::Delta)
                        .chain([CompletionEvent::Finish(finish)])
                        .map(Ok);
                    Ok(futures::stream::iter(events).boxed())
                }
            }
        };
        futures::future::ready(answer).boxed()
    }

    fn models(&self) -> BoxFuture<'_, Result<Vec<String>, ApiError>> {
        futures::future::ready(Ok(self.models.clone())).boxed()
    }

    fn health(&self) -> BoxFuture<'_, HealthReport> {
        futures::future::ready(HealthReport {
            status: HealthStatus::Healthy,
            accounts: 1,
            total_slots: 2,
            available_slots: 2,
            providers: Vec::new(),
        })
        .boxed()
    }
}

impl AccountsAdmin for ScriptedBackend {
    fn accounts(&self) -> BoxFuture<'_, Result<Vec<AccountView>, ApiError>> {
        futures::future::ready(Ok(self.accounts.lock().expect("accounts lock").clone())).boxed()
    }

    fn change_credits<'a>(
        &'a self,
        account: &'a str,
        change: CreditChange,
    ) -> BoxFuture<'a, Result<Option<i64>, ApiError>> {
        let mut accounts = self.accounts.lock().expect("accounts lock");
        let answer = match accounts.iter_mut().find(|a| a.account == account) {
            None => Err(ApiError::new(
                ErrorKind::NotFound,
                format!("No account '{account}'."),
            )),
            Some(view) => {
                view.credits = match change {
                    CreditChange::Add(n) => Some(view.credits.unwrap_or(0) + n),
                    CreditChange::Set(n) => n,
                };
                Ok(view.credits)
            }
        };
        futures::future::ready(answer).boxed()
    }
}

/// A streamed chat request for `kiro` saying "go": what in-process engine tests send.
pub fn streamed_request() -> ChatCompletionRequest {
    ChatCompletionRequest::from_json(
        br#"{"model": "kiro", "stream": true, "messages": [{"role": "user", "content": "go"}]}"#,
    )
    .unwrap_or_else(|error| panic!("the test request parses: {error}"))
}

/// The context of a request from the static key `test` (request id `r1`).
pub fn context() -> ChatContext {
    ChatContext {
        request_id: "r1".to_owned(),
        caller: drawbridge_http::Caller {
            key_id: "static:test".to_owned(),
            key_name: "test".to_owned(),
        },
        session: None,
        tenant: "static.test".to_owned(),
        resume: false,
    }
}
