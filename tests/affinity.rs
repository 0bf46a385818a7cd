//! Session affinity: requests that carry the same conversation key (the `x-session-id` header,
//! forwarded by the gateway, or the `user` field) go to the same account while it is healthy;
//! when it fails, the conversation moves to the account that served it and stays there.

use std::collections::HashSet;

use serde_json::{Value, json};
use test_support::{AccountSpec, Client, Method, Stack, StackOptions};

/// What the second account answers (the first one's text differs: the answer says which
/// account served).
const ONE: &str = "chunk 0 chunk 1 ";

fn affinity_on(accounts: Vec<AccountSpec>) -> StackOptions {
    StackOptions {
        accounts,
        env: vec![(
            "DRAWBRIDGE_ENGINE__AFFINITY__ENABLED".to_owned(),
            "true".to_owned(),
        )],
        ..StackOptions::default()
    }
}

fn body(user: Option<&str>) -> Value {
    let mut body = json!({"model": "kiro", "messages": [{"role": "user", "content": "hi"}]});
    if let Some(user) = user {
        body["user"] = json!(user);
    }
    body
}

/// The answer to one request, sent with `session` in `x-session-id` when given.
async fn served(client: &Client, session: Option<&str>, user: Option<&str>) -> String {
    let body = serde_json::to_vec(&body(user)).unwrap();
    let reply = match session {
        Some(session) => {
            client
                .request_with_headers(
                    Method::POST,
                    "/v1/chat/completions",
                    body,
                    &[("x-session-id", session)],
                )
                .await
        }
        None => {
            client
                .request(Method::POST, "/v1/chat/completions", body)
                .await
        }
    };
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Two equal accounts: without a key requests alternate between them (near-equal scores take
/// turns); with one, a conversation keeps its account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_sticks_to_its_account_through_the_gateway() {
    let stack = Stack::three(affinity_on(vec![
        AccountSpec::new(2).behaviour("stream n=2"),
        AccountSpec::new(2).behaviour("stream n=3"),
    ]))
    .await;
    let client = stack.client();
    let mut unbound = HashSet::new();
    for _ in 0..6 {
        unbound.insert(served(&client, None, None).await);
    }
    assert_eq!(
        unbound.len(),
        2,
        "without a key both accounts serve: {unbound:?}"
    );

    for conversation in ["conv-a", "conv-b", "conv-c"] {
        let first = served(&client, Some(conversation), None).await;
        for _ in 0..4 {
            assert_eq!(served(&client, Some(conversation), None).await, first);
        }
    }
    // The `user` field is a key too (when no header is sent).
    let first = served(&client, None, Some("alice")).await;
    for _ in 0..4 {
        assert_eq!(served(&client, None, Some("alice")).await, first);
    }
    assert!(stack.wait_for_log("conversation bound to an account").await);
}

/// The bound account breaks: the request is served by the other one, the conversation moves
/// there, and stays even when the first account is healthy again and scores higher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_moves_when_its_account_fails_and_stays_moved() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    let stack = Stack::single(affinity_on(vec![
        // Three slots: the best score. It echoes ("hi") unless the file exists.
        AccountSpec::new(3).behaviour(&format!("crash after=0 while={}", broken.display())),
        AccountSpec::new(1).behaviour("stream n=2"),
    ]))
    .await;
    let client = stack.client();
    assert_eq!(served(&client, Some("conv"), None).await, "hi");
    std::fs::write(&broken, "").unwrap();
    assert_eq!(
        served(&client, Some("conv"), None).await,
        ONE,
        "failed over"
    );
    std::fs::remove_file(&broken).unwrap();
    for _ in 0..3 {
        assert_eq!(
            served(&client, Some("conv"), None).await,
            ONE,
            "stays moved"
        );
    }
    // A new conversation goes by score: the healthy first account.
    assert_eq!(served(&client, Some("new"), None).await, "hi");
    assert_eq!(served(&client, None, None).await, "hi");
}

/// Conversation keys belong to the API key that sent them: a second key using the same
/// `x-session-id` starts its own conversation instead of joining the first key's.
async fn conversations_are_kept_per_api_key(stack: Stack, broken: &std::path::Path) {
    let first = stack.client();
    let created = stack
        .admin()
        .post_json("/admin/keys", &json!({"name": "second"}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let second = first.with_key(Some(created.json()["key"].as_str().unwrap()));
    // The first key's conversation is bound to the best account, then moves to the other one
    // while the best one fails.
    assert_eq!(served(&first, Some("conv"), None).await, "hi");
    std::fs::write(broken, "").unwrap();
    assert_eq!(served(&first, Some("conv"), None).await, ONE);
    std::fs::remove_file(broken).unwrap();
    assert_eq!(served(&first, Some("conv"), None).await, ONE, "stays moved");
    // The same conversation key from the second API key is a new conversation: it goes by
    // score, to the best account, and keeps it.
    assert_eq!(served(&second, Some("conv"), None).await, "hi");
    assert_eq!(served(&second, Some("conv"), None).await, "hi");
    assert_eq!(served(&first, Some("conv"), None).await, ONE);
    // The `user` field alike.
    assert_eq!(served(&first, None, Some("alice")).await, "hi");
    std::fs::write(broken, "").unwrap();
    assert_eq!(served(&first, None, Some("alice")).await, ONE);
    std::fs::remove_file(broken).unwrap();
    assert_eq!(served(&second, None, Some("alice")).await, "hi");
    assert_eq!(served(&first, None, Some("alice")).await, ONE);
}

fn per_key_options(broken: &std::path::Path) -> StackOptions {
    affinity_on(vec![
        // Three slots: the best score. It echoes ("hi") unless the file exists.
        AccountSpec::new(3).behaviour(&format!("crash after=0 while={}", broken.display())),
        AccountSpec::new(1).behaviour("stream n=2"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_keeps_conversations_per_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    let stack = Stack::single(per_key_options(&broken)).await;
    conversations_are_kept_per_api_key(stack, &broken).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_keep_conversations_per_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    let stack = Stack::three(per_key_options(&broken)).await;
    conversations_are_kept_per_api_key(stack, &broken).await;
}
