//! Golden files for the dialect translations: each case's output is compared with the file
//! committed under `tests/golden/<dialect>/`; `UPDATE_GOLDEN=1` writes the files instead (then
//! review the diff).

#![allow(dead_code)] // each test binary uses its own part
#![allow(clippy::expect_used, clippy::unwrap_used, reason = "test helpers")]

use std::path::PathBuf;

use drawbridge_types::openai::FinishReason;
use drawbridge_types::{CompletionEvent, CompletionMeta, Finish, Metering, Usage};

/// Compare `actual` with `tests/golden/<dialect>/<name>`, or write it with `UPDATE_GOLDEN=1`.
pub fn check(dialect: &str, name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(dialect)
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("golden dir");
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "{}: {err} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "{} differs (UPDATE_GOLDEN=1 rewrites it; review the diff)",
        path.display()
    );
}

/// `value` as the golden files hold JSON: pretty, keys sorted, with a final newline.
pub fn pretty(value: &impl serde::Serialize) -> String {
    let value = sorted(serde_json::to_value(value).expect("serializable"));
    let mut text = serde_json::to_string_pretty(&value).expect("serializable");
    text.push('\n');
    text
}

/// `value` with every object's keys in order: the files do not depend on whether the build
/// has serde_json's `preserve_order` on (a workspace build does, through the ACP crates).
pub fn sorted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// A fixed identity, so the rendered answers are the same on every run.
pub fn meta(id: &str) -> CompletionMeta {
    CompletionMeta {
        id: id.to_owned(),
        created: 1_767_225_600,
        model: "kiro".to_owned(),
    }
}

pub fn finish(reason: FinishReason, prompt: u64, completion: u64) -> CompletionEvent {
    CompletionEvent::Finish(Finish {
        finish_reason: reason,
        usage: Usage::new(prompt, completion),
        metering: Metering::default(),
    })
}

pub fn text(s: &str) -> CompletionEvent {
    CompletionEvent::Delta(s.to_owned())
}

/// Arbitrary JSON made of a dialect's own vocabulary: objects whose keys are drawn from `keys`,
/// strings from `words` (or any short text), numbers and booleans, nested a few levels, for the
/// fuzz tests of the request decoders.
pub fn json_of(
    keys: Vec<&'static str>,
    words: Vec<&'static str>,
) -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};
    let keys = prop::sample::select(keys);
    let words = prop::sample::select(words);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (0u32..5).prop_map(|n| json!(n)),
        (-5.0f64..5.0).prop_map(|f| json!(f)),
        words.prop_map(|w| json!(w)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|pairs| {
                Value::Object(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

/// `body` with each event's data JSON's keys in order (see [`sorted`]): an SSE body
/// whose frames are `event: T` and `data: JSON` lines.
pub fn sorted_frames(body: &str) -> String {
    body.split_terminator("\n\n")
        .map(|frame| match frame.split_once("\ndata: ") {
            Some((event, data)) => {
                let data = sorted(serde_json::from_str(data).unwrap());
                format!("{event}\ndata: {data}\n\n")
            }
            None => format!("{frame}\n\n"),
        })
        .collect()
}
