//! `kiro-worker`, `drawbridge-engine` and `drawbridge-gateway` as three processes: gateway →
//! engine over HTTP, engine → worker over gRPC, worker → agents over ACP.

mod common;

use test_support::{Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_serve_the_openai_api() {
    let stack = Stack::three(StackOptions {
        delay_ms: 2,
        ..StackOptions::default()
    })
    .await;
    common::full_suite(stack).await;
}
