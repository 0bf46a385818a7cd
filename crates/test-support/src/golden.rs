//! What golden-file tests outside `drawbridge-types` share with its own (`tests/common` there):
//! JSON compared with its keys sorted, so a file does not depend on whether the build has
//! serde_json's `preserve_order` on (a workspace build does, through the ACP crates).

use serde_json::Value;

/// `value` with every object's keys in order.
pub fn sorted(value: Value) -> Value {
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

/// `value` as golden files hold JSON: pretty, keys sorted, with a final newline.
pub fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(&sorted(value.clone())).unwrap_or_default();
    text.push('\n');
    text
}
