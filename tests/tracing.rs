//! One request is one trace across the three processes: an OTLP/gRPC receiver runs in the
//! test, every process exports to it (`log.otlp_endpoint`), and the spans it receives form one
//! tree: the gateway's request → the engine's request → an attempt → the worker → the turn →
//! its rounds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use serde_json::json;
use test_support::{Stack, StackOptions};

#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push(Span {
                        service: service.clone(),
                        name: span.name,
                        trace_id: span.trace_id,
                        span_id: span.span_id,
                        parent: span.parent_span_id,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn start_receiver() -> (Receiver, String) {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (receiver, format!("http://{addr}"))
}

#[tokio::test]
async fn one_request_is_one_trace_across_gateway_engine_and_worker() {
    let (receiver, endpoint) = start_receiver().await;
    let mut stack = Stack::three(StackOptions {
        accounts: vec![test_support::AccountSpec::new(1)],
        env: vec![
            ("DRAWBRIDGE_LOG__OTLP_ENDPOINT".to_owned(), endpoint),
            ("DRAWBRIDGE_LOG__FORMAT".to_owned(), "json".to_owned()),
        ],
        ..StackOptions::default()
    })
    .await;
    let reply = stack
        .client()
        .chat(&json!({"model": "kiro", "stream": true, "messages": [{"role": "user", "content": "trace me"}]}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let logs: Vec<String> = stack.processes.iter().map(|p| p.log()).collect();
    // Each process exports what it still holds when it stops.
    assert!(stack.stop().await.iter().all(|ok| *ok));

    let spans = receiver.0.lock().unwrap().clone();
    let chat_spans: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "chat" && s.service == "drawbridge-gateway")
        .collect();
    assert_eq!(chat_spans.len(), 1, "{spans:#?}");
    let trace = &chat_spans[0].trace_id;
    let in_trace: Vec<&Span> = spans.iter().filter(|s| &s.trace_id == trace).collect();
    let by_id: HashMap<&[u8], &Span> = in_trace.iter().map(|s| (&s.span_id[..], *s)).collect();
    // The chain of (service, span) from a span up to the root of the trace.
    let chain = |span: &Span| -> Vec<(String, String)> {
        let mut chain = vec![(span.service.clone(), span.name.clone())];
        let mut parent = &span.parent;
        while let Some(p) = by_id.get(&parent[..]) {
            chain.push((p.service.clone(), p.name.clone()));
            parent = &p.parent;
        }
        chain
    };
    let round = in_trace
        .iter()
        .find(|s| s.name == "round")
        .unwrap_or_else(|| panic!("no round span in the trace: {in_trace:#?}"));
    let names: Vec<(String, String)> = chain(round);
    let expected: Vec<(String, String)> = [
        ("kiro-worker", "round"),
        ("kiro-worker", "turn"),
        ("kiro-worker", "worker"),
        ("drawbridge-engine", "attempt"),
        ("drawbridge-engine", "chat"),
        ("drawbridge-gateway", "chat"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(names, expected, "{in_trace:#?}");
    // The root is the gateway's request span: nothing above it.
    assert!(chat_spans[0].parent.is_empty() || !by_id.contains_key(&chat_spans[0].parent[..]));

    // The JSON log lines of the request carry its trace id, in the gateway and in the engine.
    let trace_hex: String = trace.iter().map(|b| format!("{b:02x}")).collect();
    for log in &logs[1..] {
        let ended = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["message"] == "chat completion ended")
            .unwrap_or_else(|| panic!("no JSON end line: {log}"));
        assert_eq!(ended["span"]["trace_id"], trace_hex.as_str(), "{ended}");
        assert_eq!(ended["outcome"], "stop", "{ended}");
    }
}
