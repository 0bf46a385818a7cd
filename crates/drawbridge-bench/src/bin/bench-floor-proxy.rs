//! `bench-floor-proxy`: the least an HTTP gateway in Rust does, as a reference for the
//! provider section of `drawbridge-bench`. It accepts HTTP/1.1 keep-alive connections (hyper,
//! on a tokio runtime with a worker per core, as `drawbridge`), and forwards every request
//! to the upstream over a pooled hyper client with the upstream's key in place of the client's,
//! streaming the answer back untouched. It reads no body, parses no JSON, keeps no state, logs
//! nothing, checks no key: what is left is the two HTTP hops every gateway pays.
//!
//! Its throughput over the direct one is the ceiling of any gateway's on this machine, so
//! `drawbridge`'s figures can be read against it as well as against the targets.
//!
//! Environment: `FLOOR_UPSTREAM` (`host:port`), `FLOOR_UPSTREAM_KEY` (sent as a bearer key).
//! `--config` is accepted and ignored (the bench starts every server the same way). It
//! announces `listening gateway=ADDR` on stderr, as the drawbridge binaries do.

// A bench tool: its one line of output is how the bench finds its address.
#![expect(
    clippy::print_stderr,
    reason = "the address announcement the bench reads"
)]

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Same allocator as the drawbridge binaries, so the floor measures HTTP, not malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Body = BoxBody<Bytes, hyper::Error>;

#[derive(Clone)]
struct Proxy {
    client: Client<HttpConnector, Incoming>,
    upstream: String,
    authorization: HeaderValue,
}

impl Proxy {
    async fn forward(&self, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let (mut parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let Ok(uri) = format!("http://{}{path}", self.upstream).parse::<Uri>() else {
            return Ok(status(StatusCode::BAD_REQUEST));
        };
        parts.uri = uri;
        parts.headers.remove(HOST);
        parts
            .headers
            .insert(AUTHORIZATION, self.authorization.clone());
        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(response) => Ok(response.map(BodyExt::boxed)),
            Err(_) => Ok(status(StatusCode::BAD_GATEWAY)),
        }
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = code;
    response
}

fn main() -> Result<()> {
    let upstream = std::env::var("FLOOR_UPSTREAM").context("FLOOR_UPSTREAM is not set")?;
    let key = std::env::var("FLOOR_UPSTREAM_KEY").unwrap_or_default();
    let authorization = HeaderValue::from_str(&format!("Bearer {key}"))
        .context("FLOOR_UPSTREAM_KEY is not a header value")?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(upstream, authorization))
}

async fn serve(upstream: String, authorization: HeaderValue) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    eprintln!("listening gateway={}", listener.local_addr()?);
    let proxy = Proxy {
        client: Client::builder(TokioExecutor::new()).build_http(),
        upstream,
        authorization,
    };
    // Killed by the bench when it is done: the connections need no drain.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = listener.accept().await?;
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let proxy = proxy.clone();
                async move { proxy.forward(request).await }
            });
            // A client that hangs up ends its connection; nothing to report.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
