//! `drawbridge` alone: the three layers in one process.

mod common;

use test_support::wait::poll;
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

/// Even a binary killed without a chance to clean up leaves no agent behind: each agent's stdin
/// closes with its parent, and an ACP agent ends at EOF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_do_not_outlive_a_killed_binary() {
    let mut stack = Stack::single(StackOptions::default()).await;
    let reply = stack.client().chat(&common::user("before the kill")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        stack.agent_pids().len(),
        6,
        "two accounts × three warm agents"
    );

    let mut process = stack.processes.pop().unwrap();
    process.signal(test_support::process::Signal::SIGKILL);
    process.wait().await;
    let gone = poll(std::time::Duration::from_secs(10), || async {
        stack.agent_pids().is_empty()
    })
    .await;
    assert!(
        gone.is_some(),
        "agents left behind: {:?}",
        stack.agent_pids()
    );
}
