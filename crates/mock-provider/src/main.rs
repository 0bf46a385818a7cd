//! `mock-provider`: serve the scripted OpenAI-compatible upstream (see the library docs) on
//! `--listen` (default `127.0.0.1:0`), and say where on stderr as `listening http=ADDR`.
//! With `--tls-cert FILE --tls-key FILE` (PEM) it serves HTTPS instead, offering HTTP/2 and
//! HTTP/1.1 by ALPN (only HTTP/1.1 with `--http1-only`), and says `listening https=ADDR`.
//! Every flag can also be given in the environment (`MOCK_PROVIDER_FAIL_WITH=429`, ...).
//! `GET /stats` reports how many chat requests it received (on any of its routes: OpenAI,
//! Anthropic, Gemini) and in which HTTP versions, and how many embeddings and image requests
//! (`forwarded_requests`), for tests that check which upstream was called and how.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use mock_provider::{Answer, Settings, content_text, error_body, parse};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

#[derive(Debug, Clone, Parser)]
#[command(about = "A scripted OpenAI-compatible upstream for tests")]
struct Args {
    #[arg(long, env = "MOCK_PROVIDER_LISTEN", default_value = "127.0.0.1:0")]
    listen: String,
    /// Answer every request with this status (an OpenAI error body).
    #[arg(long, env = "MOCK_PROVIDER_FAIL_WITH")]
    fail_with: Option<u16>,
    /// With `--fail-with`: the `Retry-After` seconds.
    #[arg(long, env = "MOCK_PROVIDER_RETRY_AFTER")]
    retry_after: Option<u64>,
    /// With `--fail-with`: fail only the first N requests, then answer as usual (an upstream
    /// that recovers).
    #[arg(long, env = "MOCK_PROVIDER_FAIL_TIMES")]
    fail_times: Option<u64>,
    /// Refuse (401) a request without `Authorization: Bearer <KEY>`.
    #[arg(long, env = "MOCK_PROVIDER_API_KEY")]
    api_key: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM); needs `--tls-key`.
    #[arg(long, env = "MOCK_PROVIDER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, env = "MOCK_PROVIDER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// With TLS: offer only HTTP/1.1 by ALPN (an upstream without HTTP/2).
    #[arg(long, env = "MOCK_PROVIDER_HTTP1_ONLY")]
    http1_only: bool,
    /// Ignored: the test harness passes a config path to every binary.
    #[arg(long)]
    config: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            say(&format!("mock-provider: no runtime: {error}"));
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            say(&format!("mock-provider: {error}"));
            ExitCode::from(1)
        }
    }
}

fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

async fn serve(args: Args) -> std::io::Result<()> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key, args.http1_only)?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    say(&format!("listening {scheme}={}", listener.local_addr()?));
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/messages", post(messages))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/images/generations", post(images))
        .route("/v1beta/models/{model_method}", post(gemini_models))
        .route("/stats", get(stats));
    let mock = Arc::new(Mock {
        args,
        requests: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        forwarded: AtomicU64::new(0),
        http1: AtomicU64::new(0),
        http2: AtomicU64::new(0),
        connections: AtomicU64::new(0),
    });
    let Some(tls) = tls else {
        return axum::serve(listener, app.with_state(mock))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await;
    };
    let service = TowerToHyperService::new(app.with_state(Arc::clone(&mock)));
    // The connections being served: dropped (so ended) with the server.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let tls = tls.clone();
        let service = service.clone();
        let mock = Arc::clone(&mock);
        connections.spawn(async move {
            let Ok(stream) = tls.accept(tcp).await else {
                // A client that does not trust the certificate hangs up here.
                return;
            };
            mock.connections.fetch_add(1, Ordering::Relaxed);
            // HTTP/2 or HTTP/1.1, as the client speaks (ALPN chose).
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A TLS acceptor for `cert` and `key`, offering `h2` and `http/1.1` (only the latter with
/// `http1_only`).
fn tls_acceptor(
    cert: &PathBuf,
    key: &PathBuf,
    http1_only: bool,
) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    let bad = |what: &PathBuf, e: &dyn std::fmt::Display| {
        std::io::Error::other(format!("{}: {e}", what.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(cert, &e))?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_no_client_auth()
    .with_single_cert(chain, private)
    .map_err(|e| bad(cert, &e))?;
    config.alpn_protocols = if http1_only {
        vec![b"http/1.1".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The mock's settings and what it has seen.
struct Mock {
    args: Args,
    requests: AtomicU64,
    /// Requests `--fail-with` has failed (for `--fail-times`).
    failed: AtomicU64,
    /// Embeddings and image requests.
    forwarded: AtomicU64,
    /// Chat requests that came in HTTP/1.x, and in HTTP/2.
    http1: AtomicU64,
    http2: AtomicU64,
    /// TLS connections that completed their handshake (each call reusing a pooled one
    /// adds none).
    connections: AtomicU64,
}

impl Mock {
    /// The per-process settings, as the Anthropic and Gemini routes take them.
    fn settings(&self) -> Settings {
        Settings {
            fail_with: self.fail_with(),
            retry_after: self.args.retry_after,
            api_key: self.args.api_key.clone(),
        }
    }

    /// The status to fail this request with (`--fail-with`), while `--fail-times` allows.
    fn fail_with(&self) -> Option<u16> {
        let status = self.args.fail_with?;
        if let Some(times) = self.args.fail_times
            && self.failed.fetch_add(1, Ordering::Relaxed) >= times
        {
            return None;
        }
        Some(status)
    }

    /// Count a chat request on any route, and the HTTP version it came in.
    fn count(&self, version: Version) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if version == Version::HTTP_2 {
            self.http2.fetch_add(1, Ordering::Relaxed);
        } else {
            self.http1.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn messages(
    State(mock): State<Arc<Mock>>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    mock.count(version);
    mock_provider::anthropic::messages(&mock.settings(), &headers, &body).await
}

async fn embeddings(State(mock): State<Arc<Mock>>, headers: HeaderMap, body: Bytes) -> Response {
    mock.forwarded.fetch_add(1, Ordering::Relaxed);
    mock_provider::embeddings::embeddings(&mock.settings(), &headers, &body).await
}

async fn images(State(mock): State<Arc<Mock>>, headers: HeaderMap, body: Bytes) -> Response {
    mock.forwarded.fetch_add(1, Ordering::Relaxed);
    mock_provider::embeddings::images(&mock.settings(), &headers, &body).await
}

async fn gemini_models(
    State(mock): State<Arc<Mock>>,
    Path(model_method): Path<String>,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    mock.count(version);
    mock_provider::gemini::models(
        &mock.settings(),
        &model_method,
        uri.query(),
        &headers,
        &body,
    )
    .await
}

async fn stats(State(mock): State<Arc<Mock>>) -> Response {
    axum::Json(serde_json::json!({
        "chat_requests": mock.requests.load(Ordering::Relaxed),
        "forwarded_requests": mock.forwarded.load(Ordering::Relaxed),
        "http_versions": {
            "http/1.1": mock.http1.load(Ordering::Relaxed),
            "h2": mock.http2.load(Ordering::Relaxed),
        },
        "tls_connections": mock.connections.load(Ordering::Relaxed),
    }))
    .into_response()
}

fn error(status: u16, message: &str, retry_after: Option<u64>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (code, axum::Json(error_body(status, message))).into_response();
    if let Some(after) = retry_after
        && let Ok(value) = after.to_string().parse()
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

async fn chat(
    State(mock): State<Arc<Mock>>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    mock.count(version);
    let args = &mock.args;
    if let Some(key) = &args.api_key {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if sent != Some(key.as_str()) {
            // OpenAI's own 401 quotes part of the key it was given.
            let shown: String = sent.unwrap_or_default().chars().take(6).collect();
            return error(
                401,
                &format!("Incorrect API key provided: {shown}***."),
                None,
            );
        }
    }
    if let Some(status) = mock.fail_with() {
        return error(
            status,
            "The mock provider fails every request.",
            args.retry_after,
        );
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(
            400,
            "We could not parse the JSON body of your request.",
            None,
        );
    };
    let last_user = body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| {
            m.iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .map(content_text)
        .unwrap_or_default();
    let (script, text) = match parse(&last_user) {
        Ok(parsed) => parsed,
        Err(problem) => return error(400, &format!("mock directive: {problem}"), None),
    };
    if let Some(ms) = script.slow_first_byte_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(status) = script.status {
        let message = match status {
            400 => "Invalid value for 'temperature': the mock was told to refuse this request.",
            _ => "The mock provider was told to fail this request.",
        };
        return error(status, message, script.retry_after);
    }
    let answer = match Answer::plan(&body, &script, &text) {
        Ok(answer) => answer,
        Err(problem) => return error(400, &problem, None),
    };
    let id = "chatcmpl-mock";
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        return axum::Json(answer.completion(id, created)).into_response();
    }
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let frames = answer.stream(id, created, include_usage, script.cut_after);
    let cut = script.cut_after.is_some();
    let items: Vec<Result<Bytes, std::io::Error>> = frames
        .into_iter()
        .map(|data| Ok(Bytes::from(format!("data: {data}\n\n"))))
        .collect();
    // A cut breaks the connection off mid-body, as a failing upstream does, once what came
    // before has gone out.
    let cut_off = futures::stream::iter(cut.then_some(())).then(|()| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Err(std::io::Error::other("cut"))
    });
    let stream = futures::stream::iter(items).chain(cut_off);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| error(500, "cannot build the stream", None))
}
