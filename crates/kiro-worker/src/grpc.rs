//! The worker's gRPC service for the engine: a thin mapping onto [`Worker`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use drawbridge_proto::worker as pb;
use drawbridge_proto::{WorkerServer, convert};
use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::Worker;

pub struct GrpcWorker {
    worker: Arc<Worker>,
}

impl GrpcWorker {
    pub fn new(worker: Arc<Worker>) -> Self {
        GrpcWorker { worker }
    }
}

type PromptStream = Pin<Box<dyn Stream<Item = Result<pb::PromptEvent, Status>> + Send>>;

#[tonic::async_trait]
impl drawbridge_proto::Worker for GrpcWorker {
    type PromptStream = PromptStream;

    async fn prompt(
        &self,
        request: Request<pb::PromptRequest>,
    ) -> Result<Response<PromptStream>, Status> {
        let span = tracing::info_span!("worker", trace_id = tracing::field::Empty);
        drawbridge_telemetry::continue_trace(&span, |name| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
        let input = convert::prompt_input(request.into_inner())
            .map_err(|e| drawbridge_proto::to_status(&e))?;
        let events = span
            .in_scope(|| ReceiverStream::new(self.worker.prompt(input)))
            .map(|event| Ok(convert::prompt_event(event)));
        Ok(Response::new(Box::pin(events)))
    }

    async fn slots(
        &self,
        _: Request<pb::SlotsRequest>,
    ) -> Result<Response<pb::SlotsReply>, Status> {
        Ok(Response::new(convert::slots_reply(&self.worker.slots())))
    }

    async fn health(
        &self,
        _: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthReply>, Status> {
        let (status, reasons) = self.worker.health();
        Ok(Response::new(pb::HealthReply {
            status: status.as_str().to_owned(),
            reasons,
        }))
    }

    async fn drain(
        &self,
        request: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainReply>, Status> {
        let in_flight = self.worker.request_drain(request.into_inner().keep_running);
        Ok(Response::new(pb::DrainReply {
            status: "draining".to_owned(),
            in_flight,
        }))
    }
}

/// Serve gRPC on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    service: GrpcWorker,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .add_service(WorkerServer::new(service))
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}
