use std::sync::atomic::{AtomicUsize, Ordering};

use drawbridge_telemetry::Shutdown;
use drawbridge_types::openai::Role;
use drawbridge_types::sse::keepalive_frame;
use drawbridge_types::{ChunkEncoder, CompletionEvent, CompletionMeta};
use test_support::ScriptedBackend;
use test_support::backend::{Script, context, streamed_request};
use tokio_util::sync::CancellationToken;

use futures::StreamExt;
use http::header::CONTENT_TYPE;

use super::*;

const SECRET: &str = "sk-engine-channel-secret-0123";

/// Serve `router` on loopback within `scope`: its base URL.
async fn serve(router: axum::Router, scope: &Shutdown) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let token = scope.token().clone();
    scope.spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
    });
    format!("http://{address}")
}

/// An engine answering from a scripted backend; with `draining` cancelled it refuses
/// chat requests and says `draining` on `/health`, as an engine that shuts down does.
/// Its internal API is open (no channel key): it trusts no caller to speak for clients.
async fn engine(scope: &Shutdown, draining: CancellationToken) -> (String, Arc<ScriptedBackend>) {
    engine_with_keys(scope, draining, &[]).await
}

async fn engine_with_keys(
    scope: &Shutdown,
    draining: CancellationToken,
    keys: &[drawbridge_config::StaticKey],
) -> (String, Arc<ScriptedBackend>) {
    let backend = Arc::new(ScriptedBackend::new(&["kiro"]));
    let state = drawbridge_http::ApiState::new(
        backend.clone(),
        Arc::new(drawbridge_http::Keys::optional(keys)),
        1 << 20,
        draining,
    )
    .with_accounts(backend.clone());
    let url = serve(drawbridge_http::internal_router(state), scope).await;
    (url, backend)
}

async fn serving(scope: &Shutdown) -> (String, Arc<ScriptedBackend>) {
    engine(scope, CancellationToken::new()).await
}

/// An engine behind the channel key the gateway holds, marked `trust_tenant`, as the
/// example configs set it up.
async fn trusting(scope: &Shutdown) -> (String, Arc<ScriptedBackend>) {
    let key = drawbridge_config::StaticKey {
        name: "gateway".to_owned(),
        key: Secret::new(SECRET.to_owned()),
        rpm: None,
        trust_tenant: true,
    };
    engine_with_keys(scope, CancellationToken::new(), &[key]).await
}

async fn draining(scope: &Shutdown) -> (String, Arc<ScriptedBackend>) {
    let token = CancellationToken::new();
    token.cancel();
    engine(scope, token).await
}

/// An address nothing listens on: connecting is refused.
async fn refusing() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}

/// An engine that accepts each connection and hangs up at once (before any byte of an
/// answer), counting them.
async fn hanging_up(scope: &Shutdown) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let accepted = count.clone();
    let token = scope.token().clone();
    scope.spawn(async move {
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                connection = listener.accept() => {
                    if connection.is_ok() {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }
    });
    (format!("http://{address}"), count)
}

/// An engine whose answer begins (the head and one chunk of text), then breaks off when
/// the test says so.
async fn breaking_off(scope: &Shutdown) -> (String, Arc<tokio::sync::Notify>) {
    breaking_off_after(scope, |encoder| encoder.delta("partial")).await
}

/// An engine whose answer begins (the head and the frame `first` writes), then breaks off
/// when the test says so.
async fn breaking_off_after(
    scope: &Shutdown,
    first: fn(&mut ChunkEncoder) -> Bytes,
) -> (String, Arc<tokio::sync::Notify>) {
    let cut = Arc::new(tokio::sync::Notify::new());
    let signal = cut.clone();
    let chat = move || {
        let cut = signal.clone();
        async move {
            let mut encoder = ChunkEncoder::new(CompletionMeta::new("kiro"), true);
            let first: Result<Bytes, std::io::Error> = Ok(first(&mut encoder));
            let rest = futures::stream::once(async move {
                cut.notified().await;
                Err(std::io::Error::other("the engine died"))
            });
            let body = futures::stream::once(async move { first }).chain(rest);
            axum::response::Response::builder()
                .header(CONTENT_TYPE, "text/event-stream")
                .body(axum::body::Body::from_stream(body))
                .unwrap()
        }
    };
    let router = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat));
    (serve(router, scope).await, cut)
}

fn engines(urls: &[&str]) -> HttpEngine {
    HttpEngine::several(
        urls,
        Some(Secret::new(SECRET.to_owned())),
        Duration::from_secs(2),
    )
}

async fn chat(engine: &HttpEngine) -> Result<Vec<Result<CompletionEvent, ApiError>>, ApiError> {
    let events = engine.chat(streamed_request(), context()).await?;
    Ok(events.collect().await)
}

fn text(events: &[Result<CompletionEvent, ApiError>]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Ok(CompletionEvent::Delta(text)) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// A chat whose first engine breaks off when `cut` is notified: the answer's first event
/// (read before the cut), and the rest of the client's answer after it.
async fn cut_after_first(
    engine: &HttpEngine,
    cut: &tokio::sync::Notify,
) -> (
    Option<Result<CompletionEvent, ApiError>>,
    Vec<Result<CompletionEvent, ApiError>>,
) {
    let mut events = engine.chat(streamed_request(), context()).await.unwrap();
    let first = events.next().await;
    cut.notify_one();
    (first, events.collect().await)
}

/// The first engine refuses connections: chat, models, health and the admin calls are
/// answered by the second, and the first rests.
#[tokio::test]
async fn a_refused_engine_is_passed_over() {
    let scope = Shutdown::new();
    let dead = refusing().await;
    let (live, backend) = serving(&scope).await;
    let engine = engines(&[&dead, &live]);

    let events = chat(&engine).await.unwrap();
    assert_eq!(text(&events), "Hello there.");
    assert!(
        matches!(events.last(), Some(Ok(CompletionEvent::Finish(_)))),
        "{events:?}"
    );
    assert_eq!(backend.chats(), 1);
    assert_eq!(engine.order(), [1, 0], "the refused engine rests");
    assert_eq!(engine.models().await.unwrap(), ["kiro"]);
    assert_eq!(engine.health().await.status, HealthStatus::Healthy);
    assert_eq!(engine.accounts().await.unwrap()[0].account, "acct-1");
    // A credit change moves on only when the first engine surely never had it: connecting
    // was refused.
    let engine = engines(&[&dead, &live]);
    let credits = engine.change_credits("acct-1", CreditChange::Add(5)).await;
    assert_eq!(credits.unwrap(), Some(5005));
    scope.cancel();
    assert!(scope.drain(Duration::from_secs(5)).await);
}

/// An engine that takes the connection and hangs up before answering: the chat request
/// moves on; a credit change does not (the engine may have made it).
#[tokio::test]
async fn a_hang_up_before_the_answer_moves_a_chat_but_not_a_change() {
    let scope = Shutdown::new();
    let (rude, hung_up) = hanging_up(&scope).await;
    let (live, backend) = serving(&scope).await;
    let engine = engines(&[&rude, &live]);
    let events = chat(&engine).await.unwrap();
    assert_eq!(text(&events), "Hello there.");
    assert_eq!((hung_up.load(Ordering::SeqCst), backend.chats()), (1, 1));

    let engine = engines(&[&rude, &live]);
    let error = engine
        .change_credits("acct-1", CreditChange::Add(5))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unavailable);
    assert_eq!(hung_up.load(Ordering::SeqCst), 2);
    let credits = engine.accounts().await.unwrap()[0].credits;
    assert_eq!(credits, Some(5000), "the change was not sent again");
    scope.cancel();
    assert!(scope.drain(Duration::from_secs(5)).await);
}

/// A draining engine (its own 503), or a proxy's 503 page, is passed over for chat and
/// health; a 503 `no_capacity` or a 4xx is the answer, not a reason to move.
#[tokio::test]
async fn a_draining_engine_is_passed_over() {
    let scope = Shutdown::new();
    let (leaving, leaving_backend) = draining(&scope).await;
    let (live, backend) = serving(&scope).await;
    let engine = engines(&[&leaving, &live]);
    let report = engine.health().await;
    assert_eq!(report.status, HealthStatus::Healthy);
    assert_eq!(engine.order(), [1, 0], "the draining engine rests");
    let engine = engines(&[&leaving, &live]);
    let events = chat(&engine).await.unwrap();
    assert_eq!(text(&events), "Hello there.");
    assert_eq!((leaving_backend.chats(), backend.chats()), (0, 1));

    // A proxy's 503 page in front of an engine that is gone.
    let page = || async {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "<html>503 Service Temporarily Unavailable</html>",
        )
    };
    let proxy = serve(axum::Router::new().fallback(page), &scope).await;
    let engine = engines(&[&proxy, &live]);
    assert_eq!(text(&chat(&engine).await.unwrap()), "Hello there.");
    assert_eq!(backend.chats(), 2);

    let (busy, busy_backend) = serving(&scope).await;
    busy_backend.script(Script::Refuse(ApiError::new(
        ErrorKind::NoCapacity,
        "every slot is busy",
    )));
    let engine = engines(&[&busy, &live]);
    let error = chat(&engine).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::NoCapacity);
    busy_backend.script(Script::Refuse(ApiError::invalid_request("bad")));
    let error = chat(&engine).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert_eq!((busy_backend.chats(), backend.chats()), (2, 2));
    assert_eq!(
        engine.order(),
        [0, 1],
        "an engine that answers does not rest"
    );
    scope.cancel();
    assert!(scope.drain(Duration::from_secs(5)).await);
}

/// The answer reaches the client, then its engine dies: the next engine is asked to
/// continue it (the text so far as the assistant's last message, and the resume header),
/// and the client's stream goes on with only the rest, ending once.
#[tokio::test]
async fn an_answer_broken_after_its_text_is_continued_by_the_next_engine() {
    let scope = Shutdown::new();
    let (broken, cut) = breaking_off(&scope).await;
    let (live, backend) = trusting(&scope).await;
    backend.script(Script::text(" and the rest."));
    let metrics = Arc::new(Metrics::new());
    let engine = engines(&[&broken, &live]).with_metrics(metrics.clone());
    let (first, rest) = cut_after_first(&engine, &cut).await;
    assert_eq!(first, Some(Ok(CompletionEvent::Delta("partial".into()))));
    assert_eq!(text(&rest), " and the rest.");
    assert!(
        matches!(
            &rest[..],
            [
                Ok(CompletionEvent::Delta(_)),
                Ok(CompletionEvent::Finish(_))
            ]
        ),
        "{rest:?}"
    );
    let asked = backend.requests();
    assert_eq!(asked.len(), 1);
    let last = asked[0].messages.last().unwrap();
    assert_eq!(
        (last.role, last.text()),
        (Role::Assistant, "partial".to_owned())
    );
    assert!(
        backend.contexts()[0].resume,
        "the engine was asked to continue"
    );
    assert_eq!(engine.order(), [1, 0], "the broken engine rests");
    assert!(
        metrics
            .render()
            .contains("drawbridge_failovers_total{kind=\"engine_resume\"} 1"),
        "{}",
        metrics.render()
    );
    scope.cancel();
    assert!(scope.drain(Duration::from_secs(5)).await);
}

/// Only keep-alives reached the client when the engine died: the next engine answers the
/// request from the start, not as a continuation.
#[tokio::test]
async fn an_answer_broken_before_its_text_starts_again_on_the_next_engine() {
    let scope = Shutdown::new();
    let (broken, cut) = breaking_off_after(&scope, |_| keepalive_frame()).await;
    let (live, backend) = trusting(&scope).await;
    let metrics = Arc::new(Metrics::new());
    let engine = engines(&[&broken, &live]).with_metrics(metrics.clone());
    let (first, rest) = cut_after_first(&engine, &cut).await;
    assert_eq!(first, Some(Ok(CompletionEvent::KeepAlive)));
    assert_eq!(text(&rest), "Hello there.");
    assert!(matches!(rest.last(), Some(Ok(CompletionEvent::Finish(_)))));
    assert_eq!(backend.requests()[0].messages, streamed_request().messages);
    assert!(!backend.contexts()[0].resume);
    assert!(
        metrics
            .render()
            .contains("drawbridge_failovers_total{kind=\"engine_retry\"} 1")
    );
    scope.cancel();
    assert!(scope.drain(Duration::from_secs(5)).await);
}

/// An engine that does not trust the gateway to speak for clients (an open internal API)
/// ignores the resume header and would answer the whole request again: its answer is not
/// used, and the client's answer ends with the error.
#[tokio::test]
async fn an_engine_that_does_not_confirm_the_continuation_is_not_used() {
    let scope = Shutdown::new();
    let (broken, cut) = breaking_off(&scope).await;
    let (live, backend) = serving(&scope).await;
    let engine = engines(&[&broken, &live]);
    let (first, rest) = cut_after_first(&engine, &cut).await;
    assert_eq!(first, Some(Ok(CompletionEvent::Delta("partial".into()))));
    assert!(
        matches!(&rest[..], [Err(e)] if e.kind == ErrorKind::Upstream),
        "{rest:?}"
    );
    assert!(!backend.contexts()[0].resume);
    scope.cancel();
    assert!(scope.drain(Duration::from_secs(5)).await);
}

/// A tool call reached the client: it belongs to the dead engine's turn, so the answer
/// ends with the error and nothing is sent on.
#[tokio::test]
async fn an_answer_with_tool_calls_does_not_move() {
    let scope = Shutdown::new();
    let (broken, cut) = breaking_off_after(&scope, |encoder| {
        let call = drawbridge_types::openai::ToolCall {
            id: "call_1".to_owned(),
            kind: "function".to_owned(),
            function: drawbridge_types::openai::FunctionCall {
                name: "f".to_owned(),
                arguments: "{}".to_owned(),
            },
        };
        // The choice's finish: a reader hands over tool calls whole, once it is read.
        let finish = br#"data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"kiro","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#;
        let mut frames = encoder.tool_call(0, &call).to_vec();
        frames.extend_from_slice(finish);
        frames.extend_from_slice(b"\n\n");
        Bytes::from(frames)
    })
    .await;
    let (live, backend) = trusting(&scope).await;
    let engine = engines(&[&broken, &live]);
    let (first, rest) = cut_after_first(&engine, &cut).await;
    assert!(matches!(first, Some(Ok(CompletionEvent::ToolCall { .. }))));
    assert!(matches!(&rest[..], [Err(_)]), "{rest:?}");
    assert_eq!(backend.chats(), 0);
    scope.cancel();
    assert!(scope.drain(Duration::from_secs(5)).await);
}

/// With every engine down the call is a 503 to retry, health says unhealthy, and no error
/// carries the engine key.
#[tokio::test]
async fn with_every_engine_down_the_call_fails_cleanly() {
    let engine = engines(&[&refusing().await, &refusing().await]);
    let error = chat(&engine).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unavailable);
    assert_eq!(error.retry_after, Some(Duration::from_secs(1)));
    assert!(!error.message.contains(SECRET), "{error}");
    let error = engine.models().await.unwrap_err();
    assert!(!error.to_string().contains(SECRET), "{error}");
    assert_eq!(engine.health().await.status, HealthStatus::Unhealthy);
    let none = HttpEngine::several::<&str>(&[], None, Duration::from_secs(1));
    assert_eq!(chat(&none).await.unwrap_err().kind, ErrorKind::Unavailable);
}

/// An engine that failed is passed over for [`REST`], and tried again after; each failure
/// in a row doubles the rest.
#[tokio::test]
async fn a_failed_engine_rests_and_is_tried_again() {
    let scope = Shutdown::new();
    let (rude, hung_up) = hanging_up(&scope).await;
    let (live, backend) = serving(&scope).await;
    let engine = engines(&[&rude, &live]);
    let tried = || hung_up.load(Ordering::SeqCst);
    let later = |by: Duration| async move {
        tokio::time::pause();
        tokio::time::advance(by).await;
        tokio::time::resume();
    };

    chat(&engine).await.unwrap();
    assert_eq!(tried(), 1);
    chat(&engine).await.unwrap();
    assert_eq!(tried(), 1, "resting: passed over");
    later(REST).await;
    chat(&engine).await.unwrap();
    assert_eq!(tried(), 2, "its rest is over: tried again");
    later(REST).await;
    chat(&engine).await.unwrap();
    assert_eq!(
        tried(),
        2,
        "a second failure in a row: it rests twice as long"
    );
    later(REST).await;
    chat(&engine).await.unwrap();
    assert_eq!(tried(), 3);
    assert_eq!(backend.chats(), 5);
    scope.cancel();
    assert!(scope.drain(Duration::from_secs(5)).await);
}

/// The rest doubles up to [`MAX_REST`], failures of calls under way together count once,
/// and an answer ends it; when every engine rests they are still tried, the one whose rest
/// ends first first.
#[tokio::test(start_paused = true)]
async fn rests_double_up_to_a_limit_and_end_with_an_answer() {
    let target = Target::new("http://engine:1/");
    assert_eq!(target.base, "http://engine:1");
    let start = Instant::now();
    let rest_after = |failures: u32| {
        let mut now = start;
        let target = Target::new("http://e");
        for _ in 0..failures {
            now = target.resting_until(now).unwrap_or(now);
            target.failed(now);
        }
        target.resting_until(now).map(|until| until - now)
    };
    assert_eq!(rest_after(0), None);
    assert_eq!(rest_after(1), Some(REST));
    assert_eq!(rest_after(2), Some(REST * 2));
    assert_eq!(rest_after(3), Some(REST * 4));
    assert_eq!(rest_after(10), Some(MAX_REST));
    assert_eq!(rest_after(100), Some(MAX_REST));

    target.failed(start);
    target.failed(start + Duration::from_secs(1));
    assert_eq!(
        target.rest().failures,
        1,
        "one failure while it already rests"
    );
    target.answered();
    assert_eq!(target.resting_until(start), None);
    assert_eq!(target.rest().failures, 0);

    let engine = engines(&["http://a", "http://b", "http://c"]);
    assert_eq!(engine.order(), [0, 1, 2]);
    engine.engines[0].failed(Instant::now());
    tokio::time::advance(Duration::from_secs(1)).await;
    engine.engines[2].failed(Instant::now());
    assert_eq!(engine.order(), [1, 0, 2]);
    tokio::time::advance(Duration::from_secs(1)).await;
    engine.engines[1].failed(Instant::now());
    assert_eq!(
        engine.order(),
        [0, 2, 1],
        "all rest: the earliest end first"
    );
    tokio::time::advance(REST).await;
    assert_eq!(engine.order(), [0, 1, 2]);
}
