//! How the engine reaches a worker: over gRPC, or (inside `drawbridge`) by a direct call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use drawbridge_proto::{WorkerClient, convert, from_status};
use drawbridge_types::ApiError;
use drawbridge_types::worker::{PromptInput, SlotsReport, WorkerEvent};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt};
use tonic::transport::{Channel, Endpoint};

/// A worker the engine can send turns to.
pub trait WorkerConn: Send + Sync + 'static {
    /// For logs: the worker's address or name.
    fn name(&self) -> &str;

    /// Run a turn. The stream ends after `Finished` or `Error`; dropping it cancels the turn.
    fn prompt(&self, input: PromptInput) -> BoxStream<'static, WorkerEvent>;

    /// What the worker serves and how busy it is.
    fn slots(&self) -> BoxFuture<'_, Result<SlotsReport, ApiError>>;

    /// Whether the worker answered its last call (a worker that cannot be reached is skipped
    /// by the scheduler until it answers `slots` again).
    fn reachable(&self) -> bool {
        true
    }

    /// Take a reloaded configuration. A worker process follows its own file; only what the
    /// engine serves itself (provider accounts) changes here.
    fn reconfigure(&self, _config: &drawbridge_config::Config) {}

    /// Whether `account` takes images in a chat (`image_url` parts): a provider account does;
    /// an ACP agent takes text.
    fn takes_images(&self, account: &str) -> bool {
        self.provider_kind(account).is_some()
    }

    /// Whether `account` answers `endpoint` (embeddings, images): only a provider account of
    /// kind `openai` does; an ACP account never.
    fn serves_endpoint(&self, _account: &str, _endpoint: drawbridge_http::Endpoint) -> bool {
        false
    }

    /// Pass `request` to `account` and return the upstream's JSON body as it came (see
    /// [`drawbridge_http::passthrough`]). Only called for an account that
    /// [`serves_endpoint`](WorkerConn::serves_endpoint).
    fn forward(
        &self,
        _account: &str,
        request: &drawbridge_http::Forward,
    ) -> BoxFuture<'static, Result<bytes::Bytes, ApiError>> {
        futures::future::ready(Err(request.endpoint.not_served(&request.model))).boxed()
    }

    /// The kind of an HTTP provider account this connection serves itself (`openai`,
    /// `anthropic`, `gemini`), for `/health`; `None` for a worker's ACP accounts.
    fn provider_kind(&self, _account: &str) -> Option<&'static str> {
        None
    }
}

/// A call that failed because the worker could not be reached (refused, reset, gone), as
/// opposed to an error the worker itself returned (those carry our error code in front).
fn unreachable(status: &tonic::Status) -> bool {
    worker_transport(status)
}

/// The error of a call the worker's transport failed: the worker's failure, not its account's
/// (`unavailable`: the request moves on, the account's breaker does not count it, and the
/// worker is marked unreachable until it answers again).
fn transport_error(status: &tonic::Status) -> ApiError {
    if worker_transport(status) {
        tracing::debug!(code = ?status.code(), message = status.message(), "worker transport failed");
        ApiError::new(
            drawbridge_types::ErrorKind::Unavailable,
            "A worker could not be reached.",
        )
    } else {
        from_status(status)
    }
}

fn worker_transport(status: &tonic::Status) -> bool {
    let ours = status
        .message()
        .split_once(": ")
        .is_some_and(|(code, _)| drawbridge_types::ErrorKind::from_code(code).is_some());
    !ours
        && matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown
        )
}

/// A worker process reached over gRPC. The connection is made lazily and re-made after a
/// failure, so a worker that starts after the engine is picked up.
pub struct GrpcWorkerConn {
    url: String,
    client: WorkerClient<Channel>,
    down: Arc<AtomicBool>,
}

impl GrpcWorkerConn {
    pub fn new(url: &str, connect_timeout: Duration) -> Result<Self, ApiError> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| ApiError::internal(format!("bad worker address {url}: {e}")))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        Ok(GrpcWorkerConn {
            url: url.to_owned(),
            client: WorkerClient::new(endpoint.connect_lazy()),
            down: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl WorkerConn for GrpcWorkerConn {
    fn name(&self) -> &str {
        &self.url
    }

    fn prompt(&self, input: PromptInput) -> BoxStream<'static, WorkerEvent> {
        let mut client = self.client.clone();
        let mut request = tonic::Request::new(convert::prompt_request(&input));
        // The trace continues on the worker (W3C trace context in the gRPC metadata).
        for (name, value) in drawbridge_telemetry::current_context_headers() {
            if let (Ok(name), Ok(value)) = (
                tonic::metadata::MetadataKey::from_bytes(name.as_bytes()),
                tonic::metadata::MetadataValue::try_from(value.as_str()),
            ) {
                request.metadata_mut().insert(name, value);
            }
        }
        let down = Arc::clone(&self.down);
        stream::once(async move {
            match client.prompt(request).await {
                Ok(response) => response
                    .into_inner()
                    .map(move |event| match event {
                        Ok(event) => convert::worker_event(event),
                        Err(status) => {
                            if unreachable(&status) {
                                down.store(true, Ordering::Relaxed);
                            }
                            WorkerEvent::Error(transport_error(&status))
                        }
                    })
                    .boxed(),
                Err(status) => {
                    if unreachable(&status) {
                        down.store(true, Ordering::Relaxed);
                    }
                    stream::iter([WorkerEvent::Error(transport_error(&status))]).boxed()
                }
            }
        })
        .flatten()
        .boxed()
    }

    fn slots(&self) -> BoxFuture<'_, Result<SlotsReport, ApiError>> {
        let mut client = self.client.clone();
        async move {
            let result = client
                .slots(drawbridge_proto::worker::SlotsRequest {})
                .await
                .map(|r| convert::slots_report(r.into_inner()));
            self.down.store(result.is_err(), Ordering::Relaxed);
            result.map_err(|s| from_status(&s))
        }
        .boxed()
    }

    fn reachable(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }
}
