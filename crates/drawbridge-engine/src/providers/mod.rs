//! HTTP provider accounts (`accounts[].kind: openai | anthropic | gemini`), served by the
//! engine itself: no worker process, no extra hop. [`ProviderConn`] is one more
//! [`WorkerConn`] beside the workers: its slots are one entry per provider account (`size`
//! its `max_concurrency`, `busy` its requests in flight), so scheduling, breakers, rests
//! after a rate limit, credits, failover and resumption treat a provider account exactly like
//! an ACP one. A turn is one streamed HTTP call, mapped both ways by the adapter of the
//! account's kind: [`openai`] (`POST {base}/chat/completions`, bearer key), [`anthropic`]
//! (`POST {base}/messages`, `x-api-key` and `anthropic-version`), [`gemini`] (`POST
//! {base}/models/{model}:streamGenerateContent?alt=sse`, `x-goog-api-key`). `Wire` is the
//! one place that chooses between them: the request, the event reader and the error mapping.
//! A key missing from the config comes from the kind's environment variable
//! (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, `GEMINI_API_KEY` then `GOOGLE_API_KEY`).
//!
//! A reload changes the provider accounts (an engine that started without any needs a
//! restart to serve its first).
//!
//! Transport: one pooled hyper client per account, its connections kept between calls. An
//! `https://` API is reached over rustls (the `ring` provider), trusting the Mozilla roots
//! compiled in plus the account's `provider.ca_file`; ALPN offers HTTP/2 first, then HTTP/1.1,
//! and an HTTP/2 connection is pinged every [`H2_KEEP_ALIVE`] even while idle, so a long
//! silent phase (a model thinking before its first token) does not get it dropped by a
//! middlebox. A plain `http://` API is spoken to in HTTP/1.1.

pub mod anthropic;
pub mod gemini;
pub mod openai;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use drawbridge_config::{
    AccountConfig, AccountKind, Config, ProviderConfig, ProviderTimeouts, Secret,
};
use drawbridge_types::worker::{
    AccountSlots, AccountStatus, PromptInput, SlotsReport, WorkerEvent,
};
use drawbridge_types::{ApiError, ErrorKind};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt};
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderName};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::workers::WorkerConn;
use drawbridge_http::{Endpoint, Forward};

/// Error bodies larger than this are not read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The largest answer a passed-through request (embeddings, images) may have.
const MAX_FORWARDED_BODY: usize = 256 * 1024 * 1024;

/// How often an HTTP/2 connection to a provider is pinged, calls in flight or not.
pub const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// The environment variable an `openai` account's key comes from when the config has none
/// (the other kinds': [`AccountKind::env_keys`]).
pub const OPENAI_API_KEY: &str = "OPENAI_API_KEY";

/// The wire format of a provider account, chosen by its kind: the one place that picks the
/// adapter for a call (its URL, headers and body), for its answer's events and for its
/// error statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Openai,
    Anthropic,
    Gemini,
}

impl Wire {
    /// The adapter of a provider kind (`None` for `acp`).
    fn of(kind: AccountKind) -> Option<Wire> {
        match kind {
            AccountKind::Acp => None,
            AccountKind::Openai => Some(Wire::Openai),
            AccountKind::Anthropic => Some(Wire::Anthropic),
            AccountKind::Gemini => Some(Wire::Gemini),
        }
    }

    /// The account kind this adapter serves, as the config names it.
    fn kind(self) -> &'static str {
        match self {
            Wire::Openai => AccountKind::Openai.as_str(),
            Wire::Anthropic => AccountKind::Anthropic.as_str(),
            Wire::Gemini => AccountKind::Gemini.as_str(),
        }
    }

    /// The call's URL under `base`, and its JSON body.
    fn request(self, base: &str, input: &PromptInput) -> (String, serde_json::Value) {
        match self {
            Wire::Openai => (
                format!("{base}/chat/completions"),
                openai::request_body(input),
            ),
            Wire::Anthropic => (format!("{base}/messages"), anthropic::request_body(input)),
            Wire::Gemini => (
                format!("{base}{}", gemini::path(&input.model)),
                gemini::request_body(input),
            ),
        }
    }

    /// The headers that carry the account's key (and the API version Anthropic wants).
    fn headers(self, key: Option<&Secret>) -> Vec<(HeaderName, String)> {
        let mut headers = Vec::new();
        if self == Wire::Anthropic {
            headers.push((
                HeaderName::from_static("anthropic-version"),
                anthropic::API_VERSION.to_owned(),
            ));
        }
        if let Some(key) = key {
            headers.push(match self {
                Wire::Openai => (AUTHORIZATION, format!("Bearer {}", key.expose())),
                Wire::Anthropic => (
                    HeaderName::from_static("x-api-key"),
                    key.expose().to_owned(),
                ),
                Wire::Gemini => (
                    HeaderName::from_static("x-goog-api-key"),
                    key.expose().to_owned(),
                ),
            });
        }
        headers
    }

    /// A reader for the answer to `input`.
    fn reader(self, input: &PromptInput) -> Reader {
        match self {
            Wire::Openai => Reader::Openai(openai::EventReader::new(input)),
            Wire::Anthropic => Reader::Anthropic(anthropic::EventReader::new(input)),
            Wire::Gemini => Reader::Gemini(gemini::EventReader::new(input)),
        }
    }

    /// The error a non-200 answer stands for.
    fn error(self, status: u16, retry_after: Option<Duration>, body: &[u8]) -> ApiError {
        match self {
            Wire::Openai => openai::error_from_status(status, retry_after, body),
            Wire::Anthropic => anthropic::error_from_status(status, retry_after, body),
            Wire::Gemini => gemini::error_from_status(status, retry_after, body),
        }
    }
}

/// An answer's event reader, of the account's wire format.
enum Reader {
    Openai(openai::EventReader),
    Anthropic(anthropic::EventReader),
    Gemini(gemini::EventReader),
}

impl Reader {
    fn push(&mut self, bytes: &[u8]) -> Vec<WorkerEvent> {
        match self {
            Reader::Openai(reader) => reader.push(bytes),
            Reader::Anthropic(reader) => reader.push(bytes),
            Reader::Gemini(reader) => reader.push(bytes),
        }
    }

    fn end(&mut self) -> Vec<WorkerEvent> {
        match self {
            Reader::Openai(reader) => reader.end(),
            Reader::Anthropic(reader) => reader.end(),
            Reader::Gemini(reader) => reader.end(),
        }
    }

    fn is_finished(&self) -> bool {
        match self {
            Reader::Openai(reader) => reader.is_finished(),
            Reader::Anthropic(reader) => reader.is_finished(),
            Reader::Gemini(reader) => reader.is_finished(),
        }
    }
}

/// The keys of the kinds' environment variables, read once.
#[derive(Default)]
struct EnvKeys(Vec<(AccountKind, Secret)>);

impl EnvKeys {
    fn read() -> EnvKeys {
        EnvKeys::from(|name| std::env::var(name).ok())
    }

    /// Each provider kind's key: the first of its variables `var` gives a non-blank value.
    fn from(var: impl Fn(&str) -> Option<String>) -> EnvKeys {
        let kinds = [
            AccountKind::Openai,
            AccountKind::Anthropic,
            AccountKind::Gemini,
        ];
        EnvKeys(
            kinds
                .into_iter()
                .filter_map(|kind| {
                    let key = kind
                        .env_keys()
                        .iter()
                        .find_map(|name| var(name).filter(|k| !k.trim().is_empty()))?;
                    Some((kind, Secret::new(key)))
                })
                .collect(),
        )
    }

    fn get(&self, kind: AccountKind) -> Option<&Secret> {
        self.0.iter().find(|(k, _)| *k == kind).map(|(_, key)| key)
    }
}

/// Every provider account of a config, as one connection of the engine. A reload replaces
/// the accounts whose settings changed (calls in flight finish on the old ones) and adds and
/// removes accounts; the connection itself exists when the engine started with at least one.
pub struct ProviderConn {
    accounts: ArcSwap<Vec<Arc<Account>>>,
    /// The kinds' key variables (`OPENAI_API_KEY`, ...), read once at start.
    env_keys: EnvKeys,
}

/// One provider account: where its API is, and its calls in flight.
struct Account {
    id: String,
    /// The account's wire format (its kind's adapter).
    wire: Wire,
    models: Vec<String>,
    /// What it was built from, to tell a changed account at a reload.
    settings: ProviderConfig,
    /// `base_url` without a trailing `/`.
    base: String,
    key: Option<Secret>,
    max_concurrency: u32,
    timeouts: ProviderTimeouts,
    busy: Arc<AtomicU32>,
    last_error: Arc<Mutex<Option<String>>>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Account {
    /// The account and its client, or why its TLS settings cannot be used (its CA file,
    /// read again here, may have changed since the config was validated).
    fn new(
        config: &AccountConfig,
        provider: &ProviderConfig,
        env_key: Option<&Secret>,
    ) -> Result<Self, String> {
        let key = provider.api_key.clone().or_else(|| env_key.cloned());
        if key.is_none() {
            tracing::warn!(
                account = config.id,
                "no provider.api_key and no {}: calls carry no key",
                config.kind.env_keys().join(" or ")
            );
        }
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(provider.timeouts.connect));
        http.set_nodelay(true);
        // The TLS layer hands it `https://` URIs too.
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(provider)?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(H2_KEEP_ALIVE)
            .http2_keep_alive_while_idle(true)
            .build(connector);
        Ok(Account {
            id: config.id.clone(),
            wire: Wire::of(config.kind).unwrap_or(Wire::Openai),
            models: config.models.clone(),
            settings: provider.clone(),
            base: provider.base_url.trim().trim_end_matches('/').to_owned(),
            key,
            max_concurrency: provider.max_concurrency,
            timeouts: provider.timeouts,
            busy: Arc::new(AtomicU32::new(0)),
            last_error: Arc::new(Mutex::new(None)),
            client,
        })
    }
}

/// The TLS settings of an account's calls: the Mozilla roots and its `ca_file`'s.
fn tls_config(provider: &ProviderConfig) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in provider.extra_roots()? {
        roots
            .add(cert)
            .map_err(|e| format!("provider.ca_file holds a certificate rustls refuses: {e}"))?;
    }
    let crypto = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(crypto)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("no TLS protocol version available: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl ProviderConn {
    /// The provider accounts of `config` (`None` when it has none). A key missing from the
    /// config is taken from its kind's environment variable, read once here.
    pub fn from_config(config: &Config) -> Option<ProviderConn> {
        let conn = ProviderConn {
            accounts: ArcSwap::from_pointee(Vec::new()),
            env_keys: EnvKeys::read(),
        };
        conn.apply(config);
        let count = conn.accounts.load().len();
        if count == 0 {
            return None;
        }
        tracing::info!(accounts = count, "provider accounts served by the engine");
        Some(conn)
    }

    /// Serve `config`'s provider accounts: an unchanged account is kept (with its calls in
    /// flight and its connections), a changed one is replaced. Whether anything changed.
    fn apply(&self, config: &Config) -> bool {
        let current = self.accounts.load_full();
        let mut changed = false;
        let next: Vec<Arc<Account>> = config
            .accounts
            .iter()
            .filter_map(|a| {
                let provider = a.provider.as_ref()?;
                let wire = Wire::of(a.kind)?;
                let kept = current.iter().find(|old| {
                    old.id == a.id
                        && old.wire == wire
                        && old.models == a.models
                        && old.settings == *provider
                });
                match kept {
                    Some(old) => Some(Arc::clone(old)),
                    None => {
                        changed = true;
                        match Account::new(a, provider, self.env_keys.get(a.kind)) {
                            Ok(account) => Some(Arc::new(account)),
                            Err(problem) => {
                                tracing::error!(
                                    account = a.id,
                                    problem,
                                    "provider account not served"
                                );
                                None
                            }
                        }
                    }
                }
            })
            .collect();
        changed |= next.len() != current.len();
        if changed {
            self.accounts.store(Arc::new(next));
        }
        changed
    }

    /// The account `input` names, or else the first serving its model with room.
    fn account_for(&self, input: &PromptInput) -> Option<Arc<Account>> {
        let accounts = self.accounts.load();
        match &input.account {
            Some(id) => accounts.iter().find(|a| &a.id == id).cloned(),
            None => accounts
                .iter()
                .find(|a| {
                    a.models.contains(&input.model)
                        && a.busy.load(Ordering::Relaxed) < a.max_concurrency
                })
                .cloned(),
        }
    }
}

impl WorkerConn for ProviderConn {
    fn name(&self) -> &str {
        "providers"
    }

    fn prompt(&self, input: PromptInput) -> BoxStream<'static, WorkerEvent> {
        let Some(account) = self.account_for(&input) else {
            return error_stream(ApiError::new(
                ErrorKind::Unavailable,
                "No provider account serves this turn.",
            ));
        };
        let Some(busy) = Busy::take(&account.busy, account.max_concurrency) else {
            return error_stream(ApiError::new(
                ErrorKind::NoCapacity,
                "Every slot of this provider account is busy.",
            ));
        };
        let last_error = Arc::clone(&account.last_error);
        stream::once(async move { account.turn(input, busy).await })
            .flatten()
            .inspect(move |event| {
                // The account's last error, as a worker reports its agents' (a client's bad
                // request says nothing about the account).
                if let WorkerEvent::Error(error) = event
                    && error.kind != ErrorKind::InvalidRequest
                {
                    *last_error.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some(error.message.clone());
                }
            })
            .boxed()
    }

    fn provider_kind(&self, account: &str) -> Option<&'static str> {
        self.accounts
            .load()
            .iter()
            .find(|a| a.id == account)
            .map(|a| a.wire.kind())
    }

    fn reconfigure(&self, config: &Config) {
        if self.apply(config) {
            tracing::info!(
                accounts = self.accounts.load().len(),
                "provider accounts reloaded"
            );
        }
    }

    fn serves_endpoint(&self, account: &str, _endpoint: Endpoint) -> bool {
        self.accounts
            .load()
            .iter()
            .any(|a| a.id == account && a.wire == Wire::Openai)
    }

    fn forward(
        &self,
        account: &str,
        request: &Forward,
    ) -> BoxFuture<'static, Result<Bytes, ApiError>> {
        let found = self
            .accounts
            .load()
            .iter()
            .find(|a| a.id == account)
            .cloned();
        let Some(account) = found.filter(|a| a.wire == Wire::Openai) else {
            return futures::future::ready(Err(request.endpoint.not_served(&request.model)))
                .boxed();
        };
        let (endpoint, body) = (request.endpoint, request.body.clone());
        async move {
            let result = account.forward(endpoint, body).await;
            if let Err(error) = &result
                && error.kind != ErrorKind::InvalidRequest
            {
                *account
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(error.message.clone());
            }
            result
        }
        .boxed()
    }

    fn slots(&self) -> BoxFuture<'_, Result<SlotsReport, ApiError>> {
        let accounts = self
            .accounts
            .load()
            .iter()
            .map(|a| {
                let busy = a.busy.load(Ordering::Relaxed).min(a.max_concurrency);
                AccountSlots {
                    account: a.id.clone(),
                    models: a.models.clone(),
                    default_model: None,
                    size: a.max_concurrency,
                    busy,
                    idle: a.max_concurrency - busy,
                    starting: 0,
                    failed: 0,
                    queue_depth: 0,
                    credits_used: 0.0,
                    tools_refused: 0,
                    last_error: a
                        .last_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone(),
                    status: AccountStatus::Healthy,
                }
            })
            .collect();
        futures::future::ready(Ok(SlotsReport {
            worker_id: "providers".to_owned(),
            draining: false,
            accounts,
        }))
        .boxed()
    }
}

impl Account {
    /// One turn: the call, then its answer's events (`Started` once the upstream accepted it).
    async fn turn(
        self: Arc<Self>,
        input: PromptInput,
        busy: Busy,
    ) -> BoxStream<'static, WorkerEvent> {
        let response = match self.call(&input).await {
            Ok(response) => response,
            Err(error) => return error_stream(error),
        };
        let reader = self.wire.reader(&input);
        let idle = self.timeouts.idle;
        let body = response.into_body();
        let events = stream::unfold(Some((body, reader, busy)), move |state| async move {
            let (mut body, mut reader, busy) = state?;
            loop {
                let frame = match tokio::time::timeout(idle, body.frame()).await {
                    Err(_) => {
                        let error = ApiError::new(
                            ErrorKind::Timeout,
                            format!("The provider sent nothing for {idle:?}."),
                        );
                        return Some((vec![WorkerEvent::Error(error)], None));
                    }
                    Ok(None) => return Some((reader.end(), None)),
                    Ok(Some(Err(error))) => {
                        tracing::debug!(%error, "provider body failed");
                        let error =
                            ApiError::upstream("The provider's connection failed mid-answer.");
                        return Some((vec![WorkerEvent::Error(error)], None));
                    }
                    Ok(Some(Ok(frame))) => frame,
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let events = reader.push(&data);
                if events.is_empty() {
                    continue;
                }
                let next = (!reader.is_finished()).then_some((body, reader, busy));
                return Some((events, next));
            }
        })
        .flat_map(stream::iter);
        stream::iter([WorkerEvent::Started {
            account: self.id.clone(),
        }])
        .chain(events)
        .boxed()
    }

    /// Send the turn; the answer's head within the first-byte timeout, or the error it stands
    /// for.
    async fn call(&self, input: &PromptInput) -> Result<Response<Incoming>, ApiError> {
        let (uri, body) = self.wire.request(&self.base, input);
        let body = serde_json::to_vec(&body)
            .map_err(|e| ApiError::internal(format!("cannot encode the provider request: {e}")))?;
        self.send(uri, Bytes::from(body), "text/event-stream").await
    }

    /// A passed-through request ([`drawbridge_http::passthrough`]): `body` to
    /// `{base}{endpoint path}`, and the upstream's whole JSON answer.
    async fn forward(&self, endpoint: Endpoint, body: Bytes) -> Result<Bytes, ApiError> {
        let Some(_busy) = Busy::take(&self.busy, self.max_concurrency) else {
            return Err(ApiError::new(
                ErrorKind::NoCapacity,
                "Every slot of this provider account is busy.",
            ));
        };
        let uri = format!("{}{}", self.base, endpoint.path());
        let response = self.send(uri, body, "application/json").await?;
        let body = http_body_util::Limited::new(response.into_body(), MAX_FORWARDED_BODY).collect();
        match tokio::time::timeout(self.timeouts.idle, body).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(error)) => {
                tracing::debug!(account = self.id, %error, "provider body failed");
                Err(ApiError::upstream(
                    "The provider's connection failed mid-answer.",
                ))
            }
            Err(_) => Err(ApiError::new(
                ErrorKind::Timeout,
                format!(
                    "The provider's answer took longer than {:?}.",
                    self.timeouts.idle
                ),
            )),
        }
    }

    /// POST `body` to `uri` with the account's key, within the first-byte timeout: the
    /// answer's head when it is 200, else the error its status stands for.
    async fn send(
        &self,
        uri: String,
        body: Bytes,
        accept: &'static str,
    ) -> Result<Response<Incoming>, ApiError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, accept);
        for (name, value) in self.wire.headers(self.key.as_ref()) {
            request = request.header(name, value);
        }
        // The error names the request's bad part, never the key's value.
        let request = request.body(Full::new(body)).map_err(|e| {
            tracing::error!(account = self.id, error = %e, "cannot build a provider request");
            ApiError::internal("The provider account's address or key is not valid in a request.")
        })?;
        let first_byte = self.timeouts.first_byte;
        let response = match tokio::time::timeout(first_byte, self.client.request(request)).await {
            Err(_) => {
                return Err(ApiError::new(
                    ErrorKind::Timeout,
                    format!("The provider did not answer within {first_byte:?}."),
                ));
            }
            Ok(Err(error)) => {
                let chain = error_chain(&error);
                tracing::warn!(account = self.id, error = chain, "provider unreachable");
                return Err(match tls_failure(&error) {
                    Some(tls) => {
                        ApiError::upstream(format!("The provider's TLS handshake failed: {tls}."))
                    }
                    None => ApiError::upstream("The provider could not be reached."),
                });
            }
            Ok(Ok(response)) => response,
        };
        tracing::debug!(account = self.id, version = ?response.version(), "provider answered");
        if response.status() == StatusCode::OK {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let retry_after = openai::retry_after(response.headers());
        let body = read_error_body(response, self.timeouts.idle).await;
        let error = self
            .wire
            .error(status, retry_after, &body)
            .with_upstream_status(status);
        tracing::warn!(account = self.id, status, kind = %error.kind, "provider refused the turn");
        Err(error)
    }
}

/// `error` and its sources, `: `-separated (hyper's own message says only "client error").
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The TLS error behind a failed call, if that is what it was (an untrusted certificate, a
/// name that does not match, no common protocol).
fn tls_failure<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(cause) = next {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // The TLS stream reports through `io::Error`s (one in another), whose `source` skips
        // the error they wrap.
        next = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => match io.get_ref() {
                Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                None => cause.source(),
            },
            None => cause.source(),
        };
    }
    None
}

/// An error answer's body, at most [`MAX_ERROR_BODY`] bytes, within `idle` (empty if not).
async fn read_error_body(response: Response<Incoming>, idle: Duration) -> Bytes {
    let body = http_body_util::Limited::new(response.into_body(), MAX_ERROR_BODY).collect();
    match tokio::time::timeout(idle, body).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        _ => Bytes::new(),
    }
}

fn error_stream(error: ApiError) -> BoxStream<'static, WorkerEvent> {
    stream::iter([WorkerEvent::Error(error)]).boxed()
}

/// One call in flight on an account, counted while it lives.
struct Busy(Arc<AtomicU32>);

impl Busy {
    /// A place on `counter`, if fewer than `max` are taken.
    fn take(counter: &Arc<AtomicU32>, max: u32) -> Option<Busy> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Busy(Arc::clone(counter)))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;
