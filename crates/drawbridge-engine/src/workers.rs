//! How the engine reaches a worker: over gRPC, or (inside `drawbridge`) by a direct call.

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
}

/// A worker process reached over gRPC. The connection is made lazily and re-made after a
/// failure, so a worker that starts after the engine is picked up.
pub struct GrpcWorkerConn {
    url: String,
    client: WorkerClient<Channel>,
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
        stream::once(async move {
            match client.prompt(request).await {
                Ok(response) => response
                    .into_inner()
                    .map(|event| match event {
                        Ok(event) => convert::worker_event(event),
                        Err(status) => WorkerEvent::Error(from_status(&status)),
                    })
                    .boxed(),
                Err(status) => stream::iter([WorkerEvent::Error(from_status(&status))]).boxed(),
            }
        })
        .flatten()
        .boxed()
    }

    fn slots(&self) -> BoxFuture<'_, Result<SlotsReport, ApiError>> {
        let mut client = self.client.clone();
        async move {
            client
                .slots(drawbridge_proto::worker::SlotsRequest {})
                .await
                .map(|r| convert::slots_report(r.into_inner()))
                .map_err(|s| from_status(&s))
        }
        .boxed()
    }
}
