//! The engines as a [`ChatBackend`], over HTTP. The engine's internal endpoint speaks the same
//! OpenAI API as the gateway; the gateway always asks it for a stream with usage and reads the
//! chunks back into events, so it can answer its own client in either form. The engine's SSE
//! comments (its keep-alives while an answer shows nothing) become
//! [`CompletionEvent::KeepAlive`](drawbridge_types::CompletionEvent::KeepAlive): a streamed
//! answer at the gateway commits and stays alive with its engine's, a JSON answer ignores
//! them. `usage.drawbridge` passes through as read.
//!
//! A gateway may know several engines (`gateway.engine_urls`), in order of preference: every
//! call (chat, models, health, the admin API's accounts) goes to the first engine that is not
//! resting, and moves on to the next when the engine fails before its answer began: it could
//! not be reached (connection refused, reset, the connect timeout), or it refused as
//! unavailable (a 503 other than `no_capacity`: it is draining, reaches no worker, or a proxy
//! in front of it finds it gone). Once an
//! answer's head has arrived nothing is sent again: the client may already have part of it. An
//! engine that failed rests ([`REST`], doubled while it keeps failing, up to [`MAX_REST`]; its
//! first answer ends the rest), so calls do not wait for its connect timeout each time; when
//! every engine rests, they are tried all the same, the one whose rest ends first first.
//!
//! A chat answer whose stream breaks off after its head moves to another engine
//! ([`answer`] says how): the client's stream goes on.

mod answer;
mod call;
mod targets;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drawbridge_config::Secret;
use drawbridge_http::{
    AccountsAdmin, ChatBackend, ChatContext, EventStream, Forward, Forwarded, HEALTH_TIMEOUT,
};
use drawbridge_telemetry::Metrics;
use drawbridge_types::openai::{ModelList, StreamOptions};
use drawbridge_types::{
    AccountView, ApiError, ChatCompletionRequest, CreditChange, ErrorKind, HealthReport,
    HealthStatus,
};
use futures::FutureExt;
use futures::future::BoxFuture;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use call::{Call, Replay, data_frames, error_from, read_json};
use targets::Target;

/// How long connecting to the engine may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an engine that failed is passed over, after its first failure in a row.
pub const REST: Duration = Duration::from_secs(5);
/// The longest rest: each further failure in a row doubles it up to this.
pub const MAX_REST: Duration = Duration::from_secs(60);

/// Cheap to clone: the clones share the engines' state (a streamed answer keeps one, to move
/// to another engine).
#[derive(Clone)]
pub struct HttpEngine {
    /// In order of preference.
    engines: Arc<[Target]>,
    key: Option<Secret>,
    client: Client<HttpConnector, Full<Bytes>>,
    /// The header the engine reads conversation keys from (session affinity).
    session_header: Option<http::HeaderName>,
    /// Where answers moved to another engine are counted (`drawbridge_failovers_total`).
    metrics: Option<Arc<Metrics>>,
}

impl HttpEngine {
    /// The one engine at `base`.
    pub fn new(base: &str, key: Option<Secret>, connect_timeout: Duration) -> Self {
        Self::several(&[base], key, connect_timeout)
    }

    /// The engines at `bases`, in order of preference (none: every call answers 503).
    pub fn several<S: AsRef<str>>(
        bases: &[S],
        key: Option<Secret>,
        connect_timeout: Duration,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        HttpEngine {
            engines: bases
                .iter()
                .map(|base| Target::new(base.as_ref()))
                .collect(),
            key,
            client: Client::builder(TokioExecutor::new()).build(connector),
            session_header: None,
            metrics: None,
        }
    }

    /// Count answers moved to another engine in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The engines of `gateway.engine_urls` (or `engine_url`), behind `gateway.engine_key`,
    /// passed conversation keys in `engine.affinity.header`.
    pub fn from_config(config: &drawbridge_config::Config) -> Self {
        let engine = HttpEngine::several(
            &config.gateway.engine_urls(),
            config.gateway.engine_key.clone(),
            CONNECT_TIMEOUT,
        );
        match drawbridge_http::session_header(&config.engine.affinity.header) {
            Some(header) => engine.with_session_header(header),
            None => engine,
        }
    }

    /// Pass each request's conversation key on to the engine in the header `name`.
    pub fn with_session_header(mut self, name: http::HeaderName) -> Self {
        self.session_header = Some(name);
        self
    }
}

impl ChatBackend for HttpEngine {
    fn chat(
        &self,
        mut request: ChatCompletionRequest,
        ctx: ChatContext,
    ) -> BoxFuture<'_, Result<EventStream, ApiError>> {
        async move {
            request.stream = Some(true);
            request.stream_options = Some(StreamOptions {
                include_usage: Some(true),
            });
            let (serving, response) = self.send_chat(&request, &ctx, false).await?;
            // The engine's refusal is the answer: it is not sent anywhere else.
            if response.status() != StatusCode::OK {
                return Err(error_from(response).await);
            }
            let reader = answer::Reader::new(data_frames(response));
            Ok(answer::stream(self.clone(), request, ctx, serving, reader))
        }
        .boxed()
    }

    /// The request to the engine's own endpoint (which validates it again and picks the
    /// account), sent on like a chat request that has not begun; the engine names the account
    /// that answered in [`drawbridge_http::passthrough::ACCOUNT_HEADER`].
    fn forward(
        &self,
        request: Forward,
        ctx: ChatContext,
    ) -> BoxFuture<'_, Result<Forwarded, ApiError>> {
        async move {
            let path = format!("/v1{}", request.endpoint.path());
            let response = self
                .send(Call {
                    method: Method::POST,
                    path: &path,
                    body: request.body,
                    request_id: Some(&ctx.request_id),
                    conversation: Some((ctx.tenant.as_str(), ctx.session.as_deref())),
                    replay: Replay::BeforeAnswer,
                    resume: false,
                })
                .await?;
            if response.status() != StatusCode::OK {
                return Err(error_from(response).await);
            }
            let account = response
                .headers()
                .get(drawbridge_http::passthrough::ACCOUNT_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|_| ApiError::upstream("The engine's answer broke off."))?
                .to_bytes();
            Ok(Forwarded { body, account })
        }
        .boxed()
    }

    fn models(&self) -> BoxFuture<'_, Result<Vec<String>, ApiError>> {
        async move {
            let response = self.send(Call::get("/v1/models")).await?;
            let list: ModelList = read_json(response, "model list").await?;
            Ok(list.data.into_iter().map(|m| m.id).collect())
        }
        .boxed()
    }

    fn health(&self) -> BoxFuture<'_, HealthReport> {
        async move {
            let unhealthy = HealthReport {
                status: HealthStatus::Unhealthy,
                accounts: 0,
                total_slots: 0,
                available_slots: 0,
                providers: Vec::new(),
            };
            // The first serving report, in the order calls take; else the first report of an
            // engine that answered; all within one HEALTH_TIMEOUT.
            let deadline = Instant::now() + HEALTH_TIMEOUT;
            let mut fallback = None;
            for (attempt, i) in self.order().into_iter().enumerate() {
                let engine = &self.engines[i];
                match tokio::time::timeout_at(deadline, self.health_of(engine)).await {
                    Ok(Some(report)) if report.status.is_serving() => {
                        engine.answered();
                        return report;
                    }
                    Ok(Some(report)) => {
                        // A draining engine is passed over like an unreachable one; one that
                        // serves nothing answered (the others likely see the same accounts).
                        if report.status == HealthStatus::Draining {
                            engine.failed(Instant::now());
                        } else {
                            engine.answered();
                        }
                        fallback.get_or_insert(report);
                    }
                    Ok(None) => engine.failed(Instant::now()),
                    Err(_) => {
                        // Out of time: the engine that had all of it failed; a later one
                        // only ran out of what was left.
                        if attempt == 0 {
                            engine.failed(Instant::now());
                        }
                        break;
                    }
                }
            }
            fallback.unwrap_or(unhealthy)
        }
        .boxed()
    }
}

/// The engine's accounts, through its internal API (behind the same channel key).
impl AccountsAdmin for HttpEngine {
    fn accounts(&self) -> BoxFuture<'_, Result<Vec<AccountView>, ApiError>> {
        #[derive(serde::Deserialize)]
        struct List {
            accounts: Vec<AccountView>,
        }
        async move {
            let response = self.send(Call::get("/internal/accounts")).await?;
            let list: List = read_json(response, "account list").await?;
            Ok(list.accounts)
        }
        .boxed()
    }

    fn change_credits<'a>(
        &'a self,
        account: &'a str,
        change: CreditChange,
    ) -> BoxFuture<'a, Result<Option<i64>, ApiError>> {
        #[derive(serde::Deserialize)]
        struct Changed {
            credits: Option<i64>,
        }
        async move {
            let body = match change {
                CreditChange::Add(n) => serde_json::json!({ "add": n }),
                CreditChange::Set(n) => serde_json::json!({ "set": n }),
            };
            // An account id has nothing to escape in a path; anything else cannot name one.
            if !drawbridge_state::valid_id(account) {
                return Err(ApiError::new(
                    ErrorKind::NotFound,
                    format!("No account '{account}'."),
                ));
            }
            let path = format!("/internal/accounts/{account}/credits");
            let response = self
                .send(Call {
                    method: Method::POST,
                    path: &path,
                    body: Bytes::from(body.to_string()),
                    request_id: None,
                    conversation: None,
                    replay: Replay::Unsent,
                    resume: false,
                })
                .await?;
            let changed: Changed = read_json(response, "answer").await?;
            Ok(changed.credits)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests;

/// Several engines: the scripted ones are the engine's own HTTP surface (drawbridge-http's
/// internal router) over a [`test_support::ScriptedBackend`], on loopback.
#[cfg(test)]
mod several_engines;
