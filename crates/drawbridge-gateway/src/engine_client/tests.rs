use drawbridge_types::openai::{FinishReason, TokenSource, UsageDetails};
use drawbridge_types::{ChunkEncoder, CompletionEvent, CompletionMeta, Finish, Metering, Usage};

use super::answer::{Body, events};
use futures::StreamExt;

use super::*;

fn body(frames: Vec<Bytes>) -> Body {
    futures::stream::iter(frames.into_iter().map(Ok)).boxed()
}

/// The engine's keep-alive comments become keep-alive events in order, and the usage
/// details of its usage chunk survive the hop.
#[tokio::test]
async fn keep_alives_and_usage_details_cross_the_hop() {
    let mut encoder = ChunkEncoder::new(CompletionMeta::new("kiro"), true).exposing_metering();
    let details = UsageDetails {
        tokens: TokenSource::Reported,
        credits: Some(0.5),
        context_usage_percent: Some(12.5),
        tool_choice_unmet: false,
    };
    let finish = Finish {
        finish_reason: FinishReason::Stop,
        usage: Usage::new(3, 4).with_details(details),
        metering: Metering {
            accounts: vec!["acct-1".into()],
            credits: 0.5,
            tokens_estimated: false,
        },
    };
    // A keep-alive split across two reads, then another with the text's frame.
    let keep_alive = encoder.keep_alive();
    let mut second = keep_alive[4..].to_vec();
    second.extend_from_slice(&encoder.keep_alive());
    second.extend_from_slice(&encoder.delta("hi"));
    let frames = vec![
        keep_alive.slice(..4),
        Bytes::from(second),
        encoder.finish(&finish),
    ];
    let got: Vec<_> = events(body(frames)).collect().await;
    assert_eq!(
        got,
        vec![
            Ok(CompletionEvent::KeepAlive),
            Ok(CompletionEvent::KeepAlive),
            Ok(CompletionEvent::Delta("hi".into())),
            Ok(CompletionEvent::Finish(finish)),
        ]
    );
}

/// An engine stream committed by keep-alives that then fails ends with its error.
#[tokio::test]
async fn an_error_after_keep_alives_is_the_answers_end() {
    let mut encoder = ChunkEncoder::new(CompletionMeta::new("kiro"), true);
    let frames = vec![
        encoder.keep_alive(),
        encoder.error(&ApiError::new(ErrorKind::Timeout, "nobody answered")),
    ];
    let got: Vec<_> = events(body(frames)).collect().await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], Ok(CompletionEvent::KeepAlive));
    assert!(
        matches!(&got[1], Err(e) if e.kind == ErrorKind::Timeout),
        "{got:?}"
    );
}
