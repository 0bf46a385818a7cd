//! The engines as a [`ChatBackend`], over HTTP. The engine's internal endpoint speaks the same
//! OpenAI API as the gateway; the gateway always asks it for a stream with usage and reads the
//! chunks back into events, so it can answer its own client in either form. The engine's SSE
//! comments (its keep-alives while an answer shows nothing) become
//! [`CompletionEvent::KeepAlive`]: a streamed answer at the gateway commits and stays alive
//! with its engine's, a JSON answer ignores them. `usage.drawbridge` passes through as read.
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

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use drawbridge_config::Secret;
use drawbridge_http::{
    AccountsAdmin, ChatBackend, ChatContext, EventStream, Forward, Forwarded, HEALTH_TIMEOUT,
};
use drawbridge_telemetry::Metrics;
use drawbridge_types::openai::{ModelList, StreamOptions};
use drawbridge_types::{
    AccountView, ApiError, ChatCompletionRequest, CreditChange, ErrorBody, ErrorKind, HealthReport,
    HealthStatus,
};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

/// How long connecting to the engine may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Error bodies larger than this are not read.
const MAX_ERROR_BODY: usize = 64 * 1024;
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

/// One engine, and how its last calls went.
struct Target {
    base: String,
    rest: Mutex<Rest>,
}

#[derive(Debug, Default)]
struct Rest {
    /// Failures in a row (0: its last call was answered).
    failures: u32,
    /// Until when it is passed over (after a failure).
    until: Option<Instant>,
}

impl Target {
    fn new(base: &str) -> Self {
        Target {
            base: base.trim_end_matches('/').to_owned(),
            rest: Mutex::new(Rest::default()),
        }
    }

    fn rest(&self) -> std::sync::MutexGuard<'_, Rest> {
        // The state is two plain numbers, valid whatever a panicking holder left.
        self.rest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Until when it rests, if it does at `now`.
    fn resting_until(&self, now: Instant) -> Option<Instant> {
        self.rest().until.filter(|until| *until > now)
    }

    /// A call failed at `now`: it rests. Failures of calls that were under way together count
    /// once: while it already rests, its rest is not lengthened.
    fn failed(&self, now: Instant) {
        let mut rest = self.rest();
        if rest.until.is_some_and(|until| until > now) {
            return;
        }
        rest.failures = rest.failures.saturating_add(1);
        let doublings = rest.failures.saturating_sub(1).min(16);
        let length = REST.saturating_mul(1 << doublings).min(MAX_REST);
        rest.until = Some(now + length);
    }

    /// It answered: it is preferred again.
    fn answered(&self) {
        *self.rest() = Rest::default();
    }
}

/// Which failures of a call may send it to the next engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replay {
    /// Any failure before the answer's head (the engine may have seen the request: for reads,
    /// and for chat requests, which an engine that dies leaves unanswered).
    BeforeAnswer,
    /// Only a failure that shows the engine never had the request (connecting failed, or it
    /// refused as unavailable): for a change that must not be made twice.
    Unsent,
}

/// One call to the engines.
struct Call<'a> {
    method: Method,
    path: &'a str,
    body: Bytes,
    request_id: Option<&'a str>,
    conversation: Option<(&'a str, Option<&'a str>)>,
    replay: Replay,
    /// Ask the engine to continue the answer in the body's last message.
    resume: bool,
}

impl<'a> Call<'a> {
    fn get(path: &'a str) -> Self {
        Call {
            method: Method::GET,
            path,
            body: Bytes::new(),
            request_id: None,
            conversation: None,
            replay: Replay::BeforeAnswer,
            resume: false,
        }
    }
}

/// The error of a call no engine could take, when the last engine was unreachable.
fn unreachable() -> ApiError {
    ApiError::unavailable("The engine is unreachable.").with_retry_after(Duration::from_secs(1))
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

    /// The engines' indexes in the order a call tries them now: those not resting in order of
    /// preference, then the resting ones, the one whose rest ends first first.
    fn order(&self) -> Vec<usize> {
        let now = Instant::now();
        let mut ready = Vec::with_capacity(self.engines.len());
        let mut resting = Vec::new();
        for (i, engine) in self.engines.iter().enumerate() {
            match engine.resting_until(now) {
                None => ready.push(i),
                Some(until) => resting.push((until, i)),
            }
        }
        resting.sort();
        ready.extend(resting.into_iter().map(|(_, i)| i));
        ready
    }

    /// `call` as a request to `engine`.
    fn request(&self, engine: &Target, call: &Call<'_>) -> Result<Request<Full<Bytes>>, String> {
        let mut request = Request::builder()
            .method(call.method.clone())
            .uri(format!("{}{}", engine.base, call.path))
            .header(CONTENT_TYPE, "application/json");
        if let Some(key) = &self.key {
            request = request.header(AUTHORIZATION, format!("Bearer {}", key.expose()));
        }
        if let Some(id) = call.request_id {
            request = request.header("x-request-id", id);
        }
        if call.resume {
            request = request.header(drawbridge_http::RESUME_HEADER, "continue");
        }
        // Whose request it is (the client's key id: conversation keys are kept per key), and
        // the client's conversation key.
        if let Some((tenant, session)) = call.conversation {
            request = request.header(drawbridge_http::TENANT_HEADER, tenant);
            if let (Some(name), Some(session)) = (&self.session_header, session) {
                request = request.header(name, session);
            }
        }
        for (name, value) in drawbridge_telemetry::current_context_headers() {
            request = request.header(name, value);
        }
        // The error names what was wrong with the request's parts (never the key's value).
        request
            .body(Full::new(call.body.clone()))
            .map_err(|e| e.to_string())
    }

    /// Send `call` to the engines in [`HttpEngine::order`] until one answers: its answer's
    /// head (any status but a 503, which moves on like a transport failure unless it is
    /// `no_capacity`, returned as its error), and which engine it was. When none does, the
    /// last one's error.
    async fn send_to_any(
        &self,
        call: Call<'_>,
    ) -> Result<(usize, Response<hyper::body::Incoming>), ApiError> {
        let mut last = None;
        for i in self.order() {
            let engine = &self.engines[i];
            let request = match self.request(engine, &call) {
                Ok(request) => request,
                Err(error) => {
                    tracing::error!(engine = engine.base, %error, "cannot build a request to the engine");
                    engine.failed(Instant::now());
                    last = Some(ApiError::internal("The engine's address is not valid."));
                    continue;
                }
            };
            match self.client.request(request).await {
                Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    let error = error_from(response).await;
                    // Full queues are the cluster's, not this engine's: that 503 is the answer.
                    if error.kind == ErrorKind::NoCapacity {
                        engine.answered();
                        return Err(error);
                    }
                    tracing::warn!(engine = engine.base, error = %error.message, "engine unavailable; trying the next");
                    engine.failed(Instant::now());
                    last = Some(error);
                }
                Ok(response) => {
                    engine.answered();
                    return Ok((i, response));
                }
                Err(error) => {
                    tracing::warn!(engine = engine.base, %error, "engine unreachable");
                    engine.failed(Instant::now());
                    if call.replay == Replay::Unsent && !error.is_connect() {
                        // The change may have reached the engine: it is not made again.
                        return Err(unreachable());
                    }
                    last = Some(unreachable());
                }
            }
        }
        Err(last.unwrap_or_else(|| ApiError::unavailable("No engine is configured.")))
    }

    /// [`HttpEngine::send_to_any`], for calls whose answer is read whole.
    async fn send(&self, call: Call<'_>) -> Result<Response<hyper::body::Incoming>, ApiError> {
        self.send_to_any(call).await.map(|(_, response)| response)
    }

    /// Send a chat request (streamed, with usage; `resume`: continuing the body's last
    /// message) to the engines; the head of the first answer and its engine.
    async fn send_chat(
        &self,
        request: &ChatCompletionRequest,
        ctx: &ChatContext,
        resume: bool,
    ) -> Result<(usize, Response<hyper::body::Incoming>), ApiError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| ApiError::internal(format!("cannot encode the request: {e}")))?;
        self.send_to_any(Call {
            method: Method::POST,
            path: "/v1/chat/completions",
            body: Bytes::from(body),
            request_id: Some(&ctx.request_id),
            conversation: Some((ctx.tenant.as_str(), ctx.session.as_deref())),
            replay: Replay::BeforeAnswer,
            resume,
        })
        .await
    }

    /// `engine`'s health report: `None` when it is unreachable or answers something else.
    async fn health_of(&self, engine: &Target) -> Option<HealthReport> {
        let request = self.request(engine, &Call::get("/health")).ok()?;
        let response = self.client.request(request).await.ok()?;
        let body = response.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice::<HealthReport>(&body).ok()
    }
}

/// An answer's body as its data frames.
fn data_frames(response: Response<hyper::body::Incoming>) -> answer::Body {
    response
        .into_body()
        .into_data_stream()
        .map(|frame| frame.map_err(|error| error.to_string()))
        .boxed()
}

/// A non-200 answer from the engine, as the error it carries.
async fn error_from(response: Response<hyper::body::Incoming>) -> ApiError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = http_body_util::Limited::new(response.into_body(), MAX_ERROR_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut error = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(body) => ApiError::from_object(status, body.error),
        Err(_) => ApiError::upstream(format!("The engine answered with status {status}.")),
    };
    // 401 from the engine is our own misconfiguration (the channel key), not the client's.
    if error.kind == ErrorKind::InvalidApiKey {
        tracing::error!("the engine refused the gateway's engine_key");
        error = ApiError::internal("The gateway is not authorized by the engine.");
    }
    if let Some(after) = retry_after {
        error = error.with_retry_after(after);
    }
    error
}

/// The engine's JSON answer to a request: its error when not 200; `what` names the answer in
/// the error when it breaks off or does not parse.
async fn read_json<T: serde::de::DeserializeOwned>(
    response: Response<hyper::body::Incoming>,
    what: &str,
) -> Result<T, ApiError> {
    if response.status() != StatusCode::OK {
        return Err(error_from(response).await);
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|_| ApiError::upstream(format!("The engine's {what} broke off.")))?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|_| ApiError::upstream(format!("The engine sent a malformed {what}.")))
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
mod tests {
    use drawbridge_types::openai::{FinishReason, TokenSource, UsageDetails};
    use drawbridge_types::{
        ChunkEncoder, CompletionEvent, CompletionMeta, Finish, Metering, Usage,
    };

    use super::answer::{Body, events};
    use super::*;

    fn body(frames: Vec<Bytes>) -> Body {
        futures::stream::iter(frames.into_iter().map(Ok)).boxed()
    }

    /// The engine's keep-alive comments become keep-alive events in order, and the usage
    /// details of its usage chunk survive the hop.
    #[tokio::test]
    async fn keep_alives_and_usage_details_cross_the_hop() {
        let mut encoder = ChunkEncoder::new(CompletionMeta::new("kiro"), true).exposing_metering();
        let details = UsageDetails {
            tokens: TokenSource::Reported,
            credits: Some(0.5),
            context_usage_percent: Some(12.5),
            tool_choice_unmet: false,
        };
        let finish = Finish {
            finish_reason: FinishReason::Stop,
            usage: Usage::new(3, 4).with_details(details),
            metering: Metering {
                accounts: vec!["acct-1".into()],
                credits: 0.5,
                tokens_estimated: false,
            },
        };
        // A keep-alive split across two reads, then another with the text's frame.
        let keep_alive = encoder.keep_alive();
        let mut second = keep_alive[4..].to_vec();
        second.extend_from_slice(&encoder.keep_alive());
        second.extend_from_slice(&encoder.delta("hi"));
        let frames = vec![
            keep_alive.slice(..4),
            Bytes::from(second),
            encoder.finish(&finish),
        ];
        let got: Vec<_> = events(body(frames)).collect().await;
        assert_eq!(
            got,
            vec![
                Ok(CompletionEvent::KeepAlive),
                Ok(CompletionEvent::KeepAlive),
                Ok(CompletionEvent::Delta("hi".into())),
                Ok(CompletionEvent::Finish(finish)),
            ]
        );
    }

    /// An engine stream committed by keep-alives that then fails ends with its error.
    #[tokio::test]
    async fn an_error_after_keep_alives_is_the_answers_end() {
        let mut encoder = ChunkEncoder::new(CompletionMeta::new("kiro"), true);
        let frames = vec![
            encoder.keep_alive(),
            encoder.error(&ApiError::new(ErrorKind::Timeout, "nobody answered")),
        ];
        let got: Vec<_> = events(body(frames)).collect().await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], Ok(CompletionEvent::KeepAlive));
        assert!(
            matches!(&got[1], Err(e) if e.kind == ErrorKind::Timeout),
            "{got:?}"
        );
    }
}

/// Several engines: the scripted ones are the engine's own HTTP surface (drawbridge-http's
/// internal router) over a [`test_support::ScriptedBackend`], on loopback.
#[cfg(test)]
mod several_engines {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use drawbridge_telemetry::Shutdown;
    use drawbridge_types::openai::Role;
    use drawbridge_types::sse::keepalive_frame;
    use drawbridge_types::{ChunkEncoder, CompletionEvent, CompletionMeta};
    use test_support::ScriptedBackend;
    use test_support::backend::{Script, context, streamed_request};
    use tokio_util::sync::CancellationToken;

    use super::*;

    const SECRET: &str = "sk-engine-channel-secret-0123";

    /// Serve `router` on loopback within `scope`: its base URL.
    async fn serve(router: axum::Router, scope: &Shutdown) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let token = scope.token().clone();
        scope.spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
        });
        format!("http://{address}")
    }

    /// An engine answering from a scripted backend; with `draining` cancelled it refuses
    /// chat requests and says `draining` on `/health`, as an engine that shuts down does.
    /// Its internal API is open (no channel key): it trusts no caller to speak for clients.
    async fn engine(
        scope: &Shutdown,
        draining: CancellationToken,
    ) -> (String, Arc<ScriptedBackend>) {
        engine_with_keys(scope, draining, &[]).await
    }

    async fn engine_with_keys(
        scope: &Shutdown,
        draining: CancellationToken,
        keys: &[drawbridge_config::StaticKey],
    ) -> (String, Arc<ScriptedBackend>) {
        let backend = Arc::new(ScriptedBackend::new(&["kiro"]));
        let state = drawbridge_http::ApiState::new(
            backend.clone(),
            Arc::new(drawbridge_http::Keys::optional(keys)),
            1 << 20,
            draining,
        )
        .with_accounts(backend.clone());
        let url = serve(drawbridge_http::internal_router(state), scope).await;
        (url, backend)
    }

    async fn serving(scope: &Shutdown) -> (String, Arc<ScriptedBackend>) {
        engine(scope, CancellationToken::new()).await
    }

    /// An engine behind the channel key the gateway holds, marked `trust_tenant`, as the
    /// example configs set it up.
    async fn trusting(scope: &Shutdown) -> (String, Arc<ScriptedBackend>) {
        let key = drawbridge_config::StaticKey {
            name: "gateway".to_owned(),
            key: Secret::new(SECRET.to_owned()),
            rpm: None,
            trust_tenant: true,
        };
        engine_with_keys(scope, CancellationToken::new(), &[key]).await
    }

    async fn draining(scope: &Shutdown) -> (String, Arc<ScriptedBackend>) {
        let token = CancellationToken::new();
        token.cancel();
        engine(scope, token).await
    }

    /// An address nothing listens on: connecting is refused.
    async fn refusing() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{address}")
    }

    /// An engine that accepts each connection and hangs up at once (before any byte of an
    /// answer), counting them.
    async fn hanging_up(scope: &Shutdown) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let accepted = count.clone();
        let token = scope.token().clone();
        scope.spawn(async move {
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    connection = listener.accept() => {
                        if connection.is_ok() {
                            accepted.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            }
        });
        (format!("http://{address}"), count)
    }

    /// An engine whose answer begins (the head and one chunk of text), then breaks off when
    /// the test says so.
    async fn breaking_off(scope: &Shutdown) -> (String, Arc<tokio::sync::Notify>) {
        breaking_off_after(scope, |encoder| encoder.delta("partial")).await
    }

    /// An engine whose answer begins (the head and the frame `first` writes), then breaks off
    /// when the test says so.
    async fn breaking_off_after(
        scope: &Shutdown,
        first: fn(&mut ChunkEncoder) -> Bytes,
    ) -> (String, Arc<tokio::sync::Notify>) {
        let cut = Arc::new(tokio::sync::Notify::new());
        let signal = cut.clone();
        let chat = move || {
            let cut = signal.clone();
            async move {
                let mut encoder = ChunkEncoder::new(CompletionMeta::new("kiro"), true);
                let first: Result<Bytes, std::io::Error> = Ok(first(&mut encoder));
                let rest = futures::stream::once(async move {
                    cut.notified().await;
                    Err(std::io::Error::other("the engine died"))
                });
                let body = futures::stream::once(async move { first }).chain(rest);
                axum::response::Response::builder()
                    .header(CONTENT_TYPE, "text/event-stream")
                    .body(axum::body::Body::from_stream(body))
                    .unwrap()
            }
        };
        let router = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat));
        (serve(router, scope).await, cut)
    }

    fn engines(urls: &[&str]) -> HttpEngine {
        HttpEngine::several(
            urls,
            Some(Secret::new(SECRET.to_owned())),
            Duration::from_secs(2),
        )
    }

    async fn chat(engine: &HttpEngine) -> Result<Vec<Result<CompletionEvent, ApiError>>, ApiError> {
        let events = engine.chat(streamed_request(), context()).await?;
        Ok(events.collect().await)
    }

    fn text(events: &[Result<CompletionEvent, ApiError>]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                Ok(CompletionEvent::Delta(text)) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// A chat whose first engine breaks off when `cut` is notified: the answer's first event
    /// (read before the cut), and the rest of the client's answer after it.
    async fn cut_after_first(
        engine: &HttpEngine,
        cut: &tokio::sync::Notify,
    ) -> (
        Option<Result<CompletionEvent, ApiError>>,
        Vec<Result<CompletionEvent, ApiError>>,
    ) {
        let mut events = engine.chat(streamed_request(), context()).await.unwrap();
        let first = events.next().await;
        cut.notify_one();
        (first, events.collect().await)
    }

    /// The first engine refuses connections: chat, models, health and the admin calls are
    /// answered by the second, and the first rests.
    #[tokio::test]
    async fn a_refused_engine_is_passed_over() {
        let scope = Shutdown::new();
        let dead = refusing().await;
        let (live, backend) = serving(&scope).await;
        let engine = engines(&[&dead, &live]);

        let events = chat(&engine).await.unwrap();
        assert_eq!(text(&events), "Hello there.");
        assert!(
            matches!(events.last(), Some(Ok(CompletionEvent::Finish(_)))),
            "{events:?}"
        );
        assert_eq!(backend.chats(), 1);
        assert_eq!(engine.order(), [1, 0], "the refused engine rests");
        assert_eq!(engine.models().await.unwrap(), ["kiro"]);
        assert_eq!(engine.health().await.status, HealthStatus::Healthy);
        assert_eq!(engine.accounts().await.unwrap()[0].account, "acct-1");
        // A credit change moves on only when the first engine surely never had it: connecting
        // was refused.
        let engine = engines(&[&dead, &live]);
        let credits = engine.change_credits("acct-1", CreditChange::Add(5)).await;
        assert_eq!(credits.unwrap(), Some(5005));
        scope.cancel();
        assert!(scope.drain(Duration::from_secs(5)).await);
    }

    /// An engine that takes the connection and hangs up before answering: the chat request
    /// moves on; a credit change does not (the engine may have made it).
    #[tokio::test]
    async fn a_hang_up_before_the_answer_moves_a_chat_but_not_a_change() {
        let scope = Shutdown::new();
        let (rude, hung_up) = hanging_up(&scope).await;
        let (live, backend) = serving(&scope).await;
        let engine = engines(&[&rude, &live]);
        let events = chat(&engine).await.unwrap();
        assert_eq!(text(&events), "Hello there.");
        assert_eq!((hung_up.load(Ordering::SeqCst), backend.chats()), (1, 1));

        let engine = engines(&[&rude, &live]);
        let error = engine
            .change_credits("acct-1", CreditChange::Add(5))
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Unavailable);
        assert_eq!(hung_up.load(Ordering::SeqCst), 2);
        let credits = engine.accounts().await.unwrap()[0].credits;
        assert_eq!(credits, Some(5000), "the change was not sent again");
        scope.cancel();
        assert!(scope.drain(Duration::from_secs(5)).await);
    }

    /// A draining engine (its own 503), or a proxy's 503 page, is passed over for chat and
    /// health; a 503 `no_capacity` or a 4xx is the answer, not a reason to move.
    #[tokio::test]
    async fn a_draining_engine_is_passed_over() {
        let scope = Shutdown::new();
        let (leaving, leaving_backend) = draining(&scope).await;
        let (live, backend) = serving(&scope).await;
        let engine = engines(&[&leaving, &live]);
        let report = engine.health().await;
        assert_eq!(report.status, HealthStatus::Healthy);
        assert_eq!(engine.order(), [1, 0], "the draining engine rests");
        let engine = engines(&[&leaving, &live]);
        let events = chat(&engine).await.unwrap();
        assert_eq!(text(&events), "Hello there.");
        assert_eq!((leaving_backend.chats(), backend.chats()), (0, 1));

        // A proxy's 503 page in front of an engine that is gone.
        let page = || async {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "<html>503 Service Temporarily Unavailable</html>",
            )
        };
        let proxy = serve(axum::Router::new().fallback(page), &scope).await;
        let engine = engines(&[&proxy, &live]);
        assert_eq!(text(&chat(&engine).await.unwrap()), "Hello there.");
        assert_eq!(backend.chats(), 2);

        let (busy, busy_backend) = serving(&scope).await;
        busy_backend.script(Script::Refuse(ApiError::new(
            ErrorKind::NoCapacity,
            "every slot is busy",
        )));
        let engine = engines(&[&busy, &live]);
        let error = chat(&engine).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::NoCapacity);
        busy_backend.script(Script::Refuse(ApiError::invalid_request("bad")));
        let error = chat(&engine).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
        assert_eq!((busy_backend.chats(), backend.chats()), (2, 2));
        assert_eq!(
            engine.order(),
            [0, 1],
            "an engine that answers does not rest"
        );
        scope.cancel();
        assert!(scope.drain(Duration::from_secs(5)).await);
    }

    /// The answer reaches the client, then its engine dies: the next engine is asked to
    /// continue it (the text so far as the assistant's last message, and the resume header),
    /// and the client's stream goes on with only the rest, ending once.
    #[tokio::test]
    async fn an_answer_broken_after_its_text_is_continued_by_the_next_engine() {
        let scope = Shutdown::new();
        let (broken, cut) = breaking_off(&scope).await;
        let (live, backend) = trusting(&scope).await;
        backend.script(Script::text(" and the rest."));
        let metrics = Arc::new(Metrics::new());
        let engine = engines(&[&broken, &live]).with_metrics(metrics.clone());
        let (first, rest) = cut_after_first(&engine, &cut).await;
        assert_eq!(first, Some(Ok(CompletionEvent::Delta("partial".into()))));
        assert_eq!(text(&rest), " and the rest.");
        assert!(
            matches!(
                &rest[..],
                [
                    Ok(CompletionEvent::Delta(_)),
                    Ok(CompletionEvent::Finish(_))
                ]
            ),
            "{rest:?}"
        );
        let asked = backend.requests();
        assert_eq!(asked.len(), 1);
        let last = asked[0].messages.last().unwrap();
        assert_eq!(
            (last.role, last.text()),
            (Role::Assistant, "partial".to_owned())
        );
        assert!(
            backend.contexts()[0].resume,
            "the engine was asked to continue"
        );
        assert_eq!(engine.order(), [1, 0], "the broken engine rests");
        assert!(
            metrics
                .render()
                .contains("drawbridge_failovers_total{kind=\"engine_resume\"} 1"),
            "{}",
            metrics.render()
        );
        scope.cancel();
        assert!(scope.drain(Duration::from_secs(5)).await);
    }

    /// Only keep-alives reached the client when the engine died: the next engine answers the
    /// request from the start, not as a continuation.
    #[tokio::test]
    async fn an_answer_broken_before_its_text_starts_again_on_the_next_engine() {
        let scope = Shutdown::new();
        let (broken, cut) = breaking_off_after(&scope, |_| keepalive_frame()).await;
        let (live, backend) = trusting(&scope).await;
        let metrics = Arc::new(Metrics::new());
        let engine = engines(&[&broken, &live]).with_metrics(metrics.clone());
        let (first, rest) = cut_after_first(&engine, &cut).await;
        assert_eq!(first, Some(Ok(CompletionEvent::KeepAlive)));
        assert_eq!(text(&rest), "Hello there.");
        assert!(matches!(rest.last(), Some(Ok(CompletionEvent::Finish(_)))));
        assert_eq!(backend.requests()[0].messages, streamed_request().messages);
        assert!(!backend.contexts()[0].resume);
        assert!(
            metrics
                .render()
                .contains("drawbridge_failovers_total{kind=\"engine_retry\"} 1")
        );
        scope.cancel();
        assert!(scope.drain(Duration::from_secs(5)).await);
    }

    /// An engine that does not trust the gateway to speak for clients (an open internal API)
    /// ignores the resume header and would answer the whole request again: its answer is not
    /// used, and the client's answer ends with the error.
    #[tokio::test]
    async fn an_engine_that_does_not_confirm_the_continuation_is_not_used() {
        let scope = Shutdown::new();
        let (broken, cut) = breaking_off(&scope).await;
        let (live, backend) = serving(&scope).await;
        let engine = engines(&[&broken, &live]);
        let (first, rest) = cut_after_first(&engine, &cut).await;
        assert_eq!(first, Some(Ok(CompletionEvent::Delta("partial".into()))));
        assert!(
            matches!(&rest[..], [Err(e)] if e.kind == ErrorKind::Upstream),
            "{rest:?}"
        );
        assert!(!backend.contexts()[0].resume);
        scope.cancel();
        assert!(scope.drain(Duration::from_secs(5)).await);
    }

    /// A tool call reached the client: it belongs to the dead engine's turn, so the answer
    /// ends with the error and nothing is sent on.
    #[tokio::test]
    async fn an_answer_with_tool_calls_does_not_move() {
        let scope = Shutdown::new();
        let (broken, cut) = breaking_off_after(&scope, |encoder| {
            let call = drawbridge_types::openai::ToolCall {
                id: "call_1".to_owned(),
                kind: "function".to_owned(),
                function: drawbridge_types::openai::FunctionCall {
                    name: "f".to_owned(),
                    arguments: "{}".to_owned(),
                },
            };
            // The choice's finish: a reader hands over tool calls whole, once it is read.
            let finish = br#"data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"kiro","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#;
            let mut frames = encoder.tool_call(0, &call).to_vec();
            frames.extend_from_slice(finish);
            frames.extend_from_slice(b"\n\n");
            Bytes::from(frames)
        })
        .await;
        let (live, backend) = trusting(&scope).await;
        let engine = engines(&[&broken, &live]);
        let (first, rest) = cut_after_first(&engine, &cut).await;
        assert!(matches!(first, Some(Ok(CompletionEvent::ToolCall { .. }))));
        assert!(matches!(&rest[..], [Err(_)]), "{rest:?}");
        assert_eq!(backend.chats(), 0);
        scope.cancel();
        assert!(scope.drain(Duration::from_secs(5)).await);
    }

    /// With every engine down the call is a 503 to retry, health says unhealthy, and no error
    /// carries the engine key.
    #[tokio::test]
    async fn with_every_engine_down_the_call_fails_cleanly() {
        let engine = engines(&[&refusing().await, &refusing().await]);
        let error = chat(&engine).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Unavailable);
        assert_eq!(error.retry_after, Some(Duration::from_secs(1)));
        assert!(!error.message.contains(SECRET), "{error}");
        let error = engine.models().await.unwrap_err();
        assert!(!error.to_string().contains(SECRET), "{error}");
        assert_eq!(engine.health().await.status, HealthStatus::Unhealthy);
        let none = HttpEngine::several::<&str>(&[], None, Duration::from_secs(1));
        assert_eq!(chat(&none).await.unwrap_err().kind, ErrorKind::Unavailable);
    }

    /// An engine that failed is passed over for [`REST`], and tried again after; each failure
    /// in a row doubles the rest.
    #[tokio::test]
    async fn a_failed_engine_rests_and_is_tried_again() {
        let scope = Shutdown::new();
        let (rude, hung_up) = hanging_up(&scope).await;
        let (live, backend) = serving(&scope).await;
        let engine = engines(&[&rude, &live]);
        let tried = || hung_up.load(Ordering::SeqCst);
        let later = |by: Duration| async move {
            tokio::time::pause();
            tokio::time::advance(by).await;
            tokio::time::resume();
        };

        chat(&engine).await.unwrap();
        assert_eq!(tried(), 1);
        chat(&engine).await.unwrap();
        assert_eq!(tried(), 1, "resting: passed over");
        later(REST).await;
        chat(&engine).await.unwrap();
        assert_eq!(tried(), 2, "its rest is over: tried again");
        later(REST).await;
        chat(&engine).await.unwrap();
        assert_eq!(
            tried(),
            2,
            "a second failure in a row: it rests twice as long"
        );
        later(REST).await;
        chat(&engine).await.unwrap();
        assert_eq!(tried(), 3);
        assert_eq!(backend.chats(), 5);
        scope.cancel();
        assert!(scope.drain(Duration::from_secs(5)).await);
    }

    /// The rest doubles up to [`MAX_REST`], failures of calls under way together count once,
    /// and an answer ends it; when every engine rests they are still tried, the one whose rest
    /// ends first first.
    #[tokio::test(start_paused = true)]
    async fn rests_double_up_to_a_limit_and_end_with_an_answer() {
        let target = Target::new("http://engine:1/");
        assert_eq!(target.base, "http://engine:1");
        let start = Instant::now();
        let rest_after = |failures: u32| {
            let mut now = start;
            let target = Target::new("http://e");
            for _ in 0..failures {
                now = target.resting_until(now).unwrap_or(now);
                target.failed(now);
            }
            target.resting_until(now).map(|until| until - now)
        };
        assert_eq!(rest_after(0), None);
        assert_eq!(rest_after(1), Some(REST));
        assert_eq!(rest_after(2), Some(REST * 2));
        assert_eq!(rest_after(3), Some(REST * 4));
        assert_eq!(rest_after(10), Some(MAX_REST));
        assert_eq!(rest_after(100), Some(MAX_REST));

        target.failed(start);
        target.failed(start + Duration::from_secs(1));
        assert_eq!(
            target.rest().failures,
            1,
            "one failure while it already rests"
        );
        target.answered();
        assert_eq!(target.resting_until(start), None);
        assert_eq!(target.rest().failures, 0);

        let engine = engines(&["http://a", "http://b", "http://c"]);
        assert_eq!(engine.order(), [0, 1, 2]);
        engine.engines[0].failed(Instant::now());
        tokio::time::advance(Duration::from_secs(1)).await;
        engine.engines[2].failed(Instant::now());
        assert_eq!(engine.order(), [1, 0, 2]);
        tokio::time::advance(Duration::from_secs(1)).await;
        engine.engines[1].failed(Instant::now());
        assert_eq!(
            engine.order(),
            [0, 2, 1],
            "all rest: the earliest end first"
        );
        tokio::time::advance(REST).await;
        assert_eq!(engine.order(), [0, 1, 2]);
    }
}
