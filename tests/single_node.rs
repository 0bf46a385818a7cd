//! `drawbridge` alone: the three layers in one process.

mod common;

use test_support::{Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_serves_the_openai_api() {
    let stack = Stack::single(StackOptions {
        delay_ms: 2,
        ..StackOptions::default()
    })
    .await;
    common::full_suite(stack).await;
}
