//! The engine as a [`ChatBackend`], over HTTP. The engine's internal endpoint speaks the same
//! OpenAI API as the gateway; the gateway always asks it for a stream with usage and reads the
//! chunks back into events, so it can answer its own client in either form. The engine's SSE
//! comments (its keep-alives while an answer shows nothing) become
//! [`CompletionEvent::KeepAlive`]: a streamed answer at the gateway commits and stays alive
//! with its engine's, a JSON answer ignores them. `usage.drawbridge` passes through as read.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use drawbridge_config::Secret;
use drawbridge_http::{AccountsAdmin, ChatBackend, ChatContext, EventStream, HEALTH_TIMEOUT};
use drawbridge_types::openai::{ModelList, StreamOptions};
use drawbridge_types::sse::{SseDecoder, SseItem};
use drawbridge_types::{
    AccountView, ApiError, ChatCompletionRequest, ChunkReader, CompletionEvent, CreditChange,
    ErrorBody, ErrorKind, HealthReport, HealthStatus,
};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How long connecting to the engine may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Error bodies larger than this are not read.
const MAX_ERROR_BODY: usize = 64 * 1024;

pub struct HttpEngine {
    base: String,
    key: Option<Secret>,
    client: Client<HttpConnector, Full<Bytes>>,
    /// The header the engine reads conversation keys from (session affinity).
    session_header: Option<http::HeaderName>,
}

impl HttpEngine {
    pub fn new(base: &str, key: Option<Secret>, connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        HttpEngine {
            base: base.trim_end_matches('/').to_owned(),
            key,
            client: Client::builder(TokioExecutor::new()).build(connector),
            session_header: None,
        }
    }

    /// The engine of `gateway.engine_url`, behind `gateway.engine_key`, passed conversation
    /// keys in `engine.affinity.header`.
    pub fn from_config(config: &drawbridge_config::Config) -> Self {
        let engine = HttpEngine::new(
            &config.gateway.engine_url,
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

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        request_id: Option<&str>,
        conversation: Option<(&str, Option<&str>)>,
    ) -> Result<Response<hyper::body::Incoming>, ApiError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(CONTENT_TYPE, "application/json");
        if let Some(key) = &self.key {
            request = request.header(AUTHORIZATION, format!("Bearer {}", key.expose()));
        }
        if let Some(id) = request_id {
            request = request.header("x-request-id", id);
        }
        // Whose request it is (the client's key id: conversation keys are kept per key), and
        // the client's conversation key.
        if let Some((tenant, session)) = conversation {
            request = request.header(drawbridge_http::TENANT_HEADER, tenant);
            if let (Some(name), Some(session)) = (&self.session_header, session) {
                request = request.header(name, session);
            }
        }
        for (name, value) in drawbridge_telemetry::current_context_headers() {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| ApiError::internal(format!("cannot build the engine request: {e}")))?;
        self.client.request(request).await.map_err(|error| {
            tracing::warn!(engine = self.base, %error, "engine unreachable");
            ApiError::unavailable("The engine is unreachable.")
                .with_retry_after(Duration::from_secs(1))
        })
    }
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

/// The body of the engine's answer, as its data frames.
type Body = futures::stream::BoxStream<'static, Result<Bytes, String>>;

struct Reader {
    body: Body,
    decoder: SseDecoder,
    chunks: ChunkReader,
    pending: VecDeque<Result<CompletionEvent, ApiError>>,
    finished: bool,
}

/// The engine's SSE answer `body` as completion events, ending after the finish or the first
/// error.
fn events(body: Body) -> EventStream {
    let reader = Reader {
        body,
        decoder: SseDecoder::new(),
        chunks: ChunkReader::new(),
        pending: VecDeque::new(),
        finished: false,
    };
    futures::stream::unfold(reader, |mut reader| async move {
        let item = reader.next().await?;
        Some((item, reader))
    })
    .boxed()
}

impl Reader {
    /// The next event, reading more of the body as needed.
    async fn next(&mut self) -> Option<Result<CompletionEvent, ApiError>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                if item.is_err() || matches!(item, Ok(CompletionEvent::Finish(_))) {
                    self.finished = true;
                    self.pending.clear();
                }
                return Some(item);
            }
            if self.finished {
                return None;
            }
            match self.body.next().await {
                Some(Ok(bytes)) => {
                    for item in self.decoder.push_items(&bytes) {
                        let data = match item {
                            SseItem::Data(data) => data,
                            // The engine keeps a quiet answer alive with comments: so does
                            // this layer, for its own client.
                            SseItem::Comment => {
                                self.pending.push_back(Ok(CompletionEvent::KeepAlive));
                                continue;
                            }
                        };
                        match self.chunks.push(&data) {
                            Ok(events) => self.pending.extend(events.into_iter().map(Ok)),
                            Err(error) => self.pending.push_back(Err(error)),
                        }
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "engine stream broke off");
                    self.pending
                        .push_back(Err(ApiError::upstream("The engine stream broke off.")));
                }
                None => {
                    self.pending.push_back(Err(ApiError::upstream(
                        "The engine stream ended before the answer was complete.",
                    )));
                }
            }
        }
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
            let body = serde_json::to_vec(&request)
                .map_err(|e| ApiError::internal(format!("cannot encode the request: {e}")))?;
            let response = self
                .send(
                    Method::POST,
                    "/v1/chat/completions",
                    Bytes::from(body),
                    Some(&ctx.request_id),
                    Some((ctx.tenant.as_str(), ctx.session.as_deref())),
                )
                .await?;
            if response.status() != StatusCode::OK {
                return Err(error_from(response).await);
            }
            let body = response
                .into_body()
                .into_data_stream()
                .map(|frame| frame.map_err(|error| error.to_string()))
                .boxed();
            Ok(events(body))
        }
        .boxed()
    }

    fn models(&self) -> BoxFuture<'_, Result<Vec<String>, ApiError>> {
        async move {
            let response = self
                .send(Method::GET, "/v1/models", Bytes::new(), None, None)
                .await?;
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
            };
            let ask = async {
                let response = self
                    .send(Method::GET, "/health", Bytes::new(), None, None)
                    .await
                    .ok()?;
                let body = response.into_body().collect().await.ok()?.to_bytes();
                serde_json::from_slice::<HealthReport>(&body).ok()
            };
            tokio::time::timeout(HEALTH_TIMEOUT, ask)
                .await
                .ok()
                .flatten()
                .unwrap_or(unhealthy)
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
            let response = self
                .send(Method::GET, "/internal/accounts", Bytes::new(), None, None)
                .await?;
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
            let response = self
                .send(
                    Method::POST,
                    &format!("/internal/accounts/{account}/credits"),
                    Bytes::from(body.to_string()),
                    None,
                    None,
                )
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
    use drawbridge_types::{ChunkEncoder, CompletionMeta, Finish, Metering, Usage};

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
