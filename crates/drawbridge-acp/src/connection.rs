//! The ACP client side of the connection: where the agent's notifications and requests go.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use agent_client_protocol::v1::schema::{
    CancelNotification, ContentBlock, ContentChunk, RequestPermissionRequest, SessionId,
    SessionNotification, SessionUpdate,
};
use agent_client_protocol::v1::{ConnectionTo, Responder};
use agent_client_protocol::{Agent, Client, UntypedMessage};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::events::{Activity, AgentEvent};
use crate::kiro::{self, KiroMetadata};
use crate::permission::PermissionPolicy;
use crate::stderr::StderrTail;
use crate::usage::UsageReport;

/// Where a session's updates go while its prompt runs.
pub(crate) struct SessionRoute {
    events: mpsc::Sender<AgentEvent>,
    usage: UsageReport,
    /// Cancelled when the prompt ends or is dropped, to abandon a send blocked on a full
    /// channel nobody reads any more.
    closed: CancellationToken,
}

/// State shared between the `AgentProcess` and its tasks.
#[derive(Default)]
pub(crate) struct Shared {
    sessions: Mutex<HashMap<SessionId, SessionRoute>>,
    pub(crate) stderr: Mutex<StderrTail>,
    /// The child has been reaped: its pid (and group id) may belong to someone else now.
    pub(crate) reaped: AtomicBool,
    /// The last request of the agent's that the client could not serve (its method).
    pub(crate) unserved: Mutex<Option<String>>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The wire name (`sessionUpdate`) of an update.
fn update_name(update: &SessionUpdate) -> String {
    serde_json::to_value(update)
        .ok()
        .and_then(|value| {
            value
                .get("sessionUpdate")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The wire spelling of a serializable enum (`in_progress`, `execute`, ...).
fn wire_name(value: impl serde::Serialize) -> Option<String> {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => Some(name),
        _ => None,
    }
}

impl Shared {
    fn with_route(&self, session_id: &SessionId, update: impl FnOnce(&mut SessionRoute)) {
        if let Some(route) = lock(&self.sessions).get_mut(session_id) {
            update(route);
        }
    }

    /// Handle a `session/update` notification: runs in the dispatch loop, and awaits the
    /// consumer so that a slow consumer slows the agent down.
    async fn on_session_update(&self, notification: SessionNotification) {
        let session_id = &notification.session_id;
        let name = update_name(&notification.update);
        let event = match notification.update {
            SessionUpdate::AgentMessageChunk(chunk) => text_of(chunk).map(AgentEvent::Text),
            SessionUpdate::AgentThoughtChunk(chunk) => text_of(chunk).map(AgentEvent::Thought),
            SessionUpdate::ToolCall(call) => Some(AgentEvent::Activity(Activity::ToolCall {
                id: call.tool_call_id.to_string(),
                title: call.title,
                kind: wire_name(call.kind),
                status: wire_name(call.status),
            })),
            SessionUpdate::ToolCallUpdate(update) => {
                Some(AgentEvent::Activity(Activity::ToolCallUpdate {
                    id: update.tool_call_id.to_string(),
                    status: update.fields.status.and_then(wire_name),
                }))
            }
            SessionUpdate::Plan(_) => Some(AgentEvent::Activity(Activity::Plan)),
            SessionUpdate::UsageUpdate(update) => {
                self.with_route(session_id, |route| {
                    route.usage.apply_usage_update(update.used, update.size);
                });
                Some(AgentEvent::Activity(Activity::Usage {
                    used: update.used,
                    size: update.size,
                }))
            }
            SessionUpdate::SessionInfoUpdate(info) => {
                let meta = info.meta.as_ref().or(notification.meta.as_ref());
                if let Some(meta) = meta {
                    self.with_route(session_id, |route| {
                        route.usage.apply_session_info_meta(meta)
                    });
                }
                let kind = meta
                    .and_then(|meta| meta.get(kiro::META_KEY))
                    .and_then(|kiro| kiro.get("kind"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                Some(AgentEvent::Activity(Activity::SessionInfo { kind }))
            }
            _ => None,
        };
        let event = event.unwrap_or(AgentEvent::Activity(Activity::Update(name)));
        self.deliver(session_id, event).await;
    }

    /// Send `event` to the prompt running on `session_id`, if any (awaited: backpressure).
    async fn deliver(&self, session_id: &SessionId, event: AgentEvent) {
        let target = lock(&self.sessions)
            .get(session_id)
            .map(|route| (route.events.clone(), route.closed.clone()));
        let Some((events, closed)) = target else {
            tracing::trace!(%session_id, "update for a session without a prompt, ignored");
            return;
        };
        tokio::select! {
            sent = events.send(event) => {
                if sent.is_err() {
                    tracing::trace!(%session_id, "event receiver dropped");
                }
            }
            () = closed.cancelled() => {}
        }
    }

    async fn on_kiro_metadata(&self, metadata: &KiroMetadata) {
        let session_id = SessionId::new(metadata.session_id.as_str());
        self.with_route(&session_id, |route| {
            route.usage.apply_kiro_metadata(metadata)
        });
        self.deliver(&session_id, AgentEvent::Activity(Activity::Metering))
            .await;
    }

    /// Any other notification: one naming a session of ours is a sign of life (an unknown
    /// `session/update` kind, or an extension such as Kiro's `_kiro.dev/session/update`).
    async fn on_other_notification(&self, notification: &UntypedMessage) {
        let method = notification.method();
        let params = notification.params();
        let Some(session_id) = params.get("sessionId").and_then(Value::as_str) else {
            tracing::trace!(method, "ignoring notification");
            return;
        };
        let activity = if method == "session/update" {
            let name = params
                .get("update")
                .and_then(|update| update.get("sessionUpdate"))
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            Activity::Update(name.to_owned())
        } else {
            Activity::Extension(method.to_owned())
        };
        self.deliver(&SessionId::new(session_id), AgentEvent::Activity(activity))
            .await;
    }

    /// Tell every turn in progress (a request that names no session may block any of them).
    async fn deliver_all(&self, event: &AgentEvent) {
        let targets: Vec<_> = lock(&self.sessions)
            .values()
            .map(|route| (route.events.clone(), route.closed.clone()))
            .collect();
        for (events, closed) in targets {
            tokio::select! {
                _ = events.send(event.clone()) => {}
                () = closed.cancelled() => {}
            }
        }
    }

    /// A permission request was answered: a refusal is logged and told to its turn.
    async fn on_permission_answered(&self, request: &RequestPermissionRequest, allowed: bool) {
        let title = request.tool_call.fields.title.clone();
        let kind = request.tool_call.fields.kind.and_then(wire_name);
        if allowed {
            tracing::info!(session_id = %request.session_id, tool = title.as_deref(), kind = kind.as_deref(), "allowed a tool the agent asked to run");
            return;
        }
        tracing::debug!(session_id = %request.session_id, tool = title.as_deref(), kind = kind.as_deref(), "refused a tool the agent asked to run");
        self.deliver(&request.session_id, AgentEvent::ToolRefused { title, kind })
            .await;
    }

    /// A request of the agent's the client cannot serve: remember it and say so clearly.
    fn on_unserved_request(&self, method: &str) {
        if method == GET_ACCESS_TOKEN_METHOD {
            tracing::warn!(
                method,
                "the agent asked the client for an access token, which Drawbridge cannot \
                 provide; answered with an error (start kiro-cli v3 with `--auth-method cli`)"
            );
        } else {
            tracing::warn!(
                method,
                "the agent sent a request Drawbridge cannot serve; answered with an error"
            );
        }
        *lock(&self.unserved) = Some(method.to_owned());
    }
}

/// The Kiro v3 request for an access token, sent when it is not started with
/// `--auth-method cli`.
pub const GET_ACCESS_TOKEN_METHOD: &str = "_kiro/auth/getAccessToken";

fn text_of(chunk: ContentChunk) -> Option<String> {
    match chunk.content {
        ContentBlock::Text(text) => Some(text.text),
        _ => None,
    }
}

/// A registered prompt turn: routes the session's updates, and cancels the turn on the agent
/// when dropped before [`Turn::finish`] (the caller gave up on the prompt).
pub(crate) struct Turn<'a> {
    shared: &'a Shared,
    cx: &'a ConnectionTo<Agent>,
    session_id: SessionId,
    closed: CancellationToken,
    finished: bool,
    cancel_sent: bool,
}

impl<'a> Turn<'a> {
    pub(crate) fn register(
        shared: &'a Shared,
        cx: &'a ConnectionTo<Agent>,
        session_id: SessionId,
        events: mpsc::Sender<AgentEvent>,
    ) -> Self {
        let closed = CancellationToken::new();
        let route = SessionRoute {
            events,
            usage: UsageReport::default(),
            closed: closed.clone(),
        };
        lock(&shared.sessions).insert(session_id.clone(), route);
        Self {
            shared,
            cx,
            session_id,
            closed,
            finished: false,
            cancel_sent: false,
        }
    }

    /// Ask the agent to stop the turn (`session/cancel`). The turn stays registered: the agent
    /// still answers the prompt (with `cancelled`) and may send updates until then.
    pub(crate) fn cancel(&mut self) {
        if self.cancel_sent {
            return;
        }
        self.cancel_sent = true;
        tracing::debug!(session_id = %self.session_id, "cancelling the turn");
        if let Err(error) = self
            .cx
            .send_notification(CancelNotification::new(self.session_id.clone()))
        {
            tracing::debug!(%error, "could not send session/cancel");
        }
    }

    /// The turn is over (answered or failed): stop routing and return the usage it reported.
    pub(crate) fn finish(mut self) -> UsageReport {
        self.finished = true;
        lock(&self.shared.sessions)
            .remove(&self.session_id)
            .map(|route| route.usage)
            .unwrap_or_default()
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.closed.cancel();
        if self.finished {
            return;
        }
        lock(&self.shared.sessions).remove(&self.session_id);
        tracing::debug!(session_id = %self.session_id, "prompt dropped");
        self.cancel();
    }
}

/// The ACP client: handlers for what the agent sends, then wait for the agent to hang up.
pub(crate) async fn run_connection(
    transport: impl agent_client_protocol::ConnectTo<Client> + 'static,
    shared: Arc<Shared>,
    policy: PermissionPolicy,
    cx_tx: oneshot::Sender<ConnectionTo<Agent>>,
) -> Result<(), agent_client_protocol::Error> {
    let updates = shared.clone();
    let metadata = shared.clone();
    let unserved = shared.clone();
    let permissions = shared;
    Client
        .v1()
        .name("drawbridge")
        .on_receive_notification(
            async move |notification: KiroMetadata, _cx| {
                metadata.on_kiro_metadata(&notification).await;
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .on_receive_notification(
            // `session/update` is parsed here rather than by a typed handler, so that an
            // update of a kind this crate does not know still counts as a sign of life. Other
            // notifications (`_kiro.dev/commands/available`, ...) are handled here rather than
            // left to the crate, which would park the ones naming a session in case a session
            // handler shows up (we never register one).
            async move |notification: UntypedMessage, _cx| {
                let update = (notification.method() == "session/update")
                    .then(|| serde_json::from_value::<SessionNotification>(notification.params().clone()).ok())
                    .flatten();
                match update {
                    Some(update) => updates.on_session_update(update).await,
                    None => updates.on_other_notification(&notification).await,
                }
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .on_receive_request(
            async move |request: RequestPermissionRequest, responder, _cx| {
                let (answer, allowed) = policy.decide_and_tell(&request.tool_call, &request.options);
                tracing::debug!(session_id = %request.session_id, outcome = ?answer.outcome, "answered a permission request");
                let answered = responder.respond(answer);
                permissions.on_permission_answered(&request, allowed).await;
                answered
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            // Everything else the agent asks (`fs/*` and `terminal/*`, which we do not
            // advertise; Kiro v3's `_kiro/auth/getAccessToken`; ...): "method not found".
            async move |request: UntypedMessage, responder: Responder<Value>, _cx| {
                let method = request.method().to_owned();
                unserved.on_unserved_request(&method);
                let answered = responder
                    .respond_with_error(agent_client_protocol::Error::method_not_found().data(method.clone()));
                unserved.deliver_all(&AgentEvent::Unserved { method }).await;
                answered
            },
            agent_client_protocol::on_receive_request!(),
        )
        .connect_with(transport, async move |cx: ConnectionTo<Agent>| {
            if cx_tx.send(cx.clone()).is_err() {
                return Ok(());
            }
            cx.incoming_closed().await;
            Ok(())
        })
        .await
}
