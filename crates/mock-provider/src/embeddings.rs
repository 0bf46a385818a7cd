//! OpenAI's `POST /v1/embeddings` and `POST /v1/images/generations`, answered whole.
//!
//! Embeddings: one vector per input (a string, or an array of token ids read as its numbers
//! joined by spaces), derived from the input's text alone, so the same text always gets the
//! same vector: [`DIMENSIONS`] values by default (`dimensions` asks another count, up to
//! [`MAX_DIMENSIONS`]). `encoding_format: "base64"` sends each vector as the base64 of its
//! little-endian `f32`s, as OpenAI does. Usage: `prompt_tokens` (and `total_tokens`) is the
//! inputs' word count (a token id counts one).
//!
//! Images: `n` images (default 1) of a fixed 1×1 PNG, as `b64_json` or as a `url`, with the
//! usage a token-billed image model reports: `input_tokens` the prompt's words,
//! `output_tokens` [`IMAGE_TOKENS`] per image.
//!
//! Both honour the per-process settings (the key, `--fail-with`) and the directives of the
//! first input's text or of the prompt (`status`, `slow_first_byte`; see the crate docs).

use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::{Settings, error_body, error_response, parse, scripted_failure, words};

/// The length of a vector when the request does not ask for one.
pub const DIMENSIONS: usize = 8;
/// The longest vector the mock makes.
pub const MAX_DIMENSIONS: usize = 256;
/// What one image costs in output tokens.
pub const IMAGE_TOKENS: u64 = 100;
/// The image every answer holds: a 1×1 PNG, base64.
pub const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

/// The vector of `text`, `dims` long: each value in [-1, 1] from an FNV-1a hash of the text
/// and the value's index.
pub fn vector(text: &str, dims: usize) -> Vec<f32> {
    (0..dims)
        .map(|i| {
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
            for byte in text.bytes().chain((i as u64).to_le_bytes()) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
            ((hash % 2001) as f32 - 1000.0) / 1000.0
        })
        .collect()
}

/// Standard base64 (with padding) of `bytes`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Whether `headers` carry `settings`' key as a bearer token; else the 401 OpenAI answers.
fn refused(settings: &Settings, headers: &HeaderMap) -> Option<Response> {
    let key = settings.api_key.as_ref()?;
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if sent == Some(key.as_str()) {
        return None;
    }
    let shown: String = sent.unwrap_or_default().chars().take(6).collect();
    Some(error_response(
        401,
        error_body(401, &format!("Incorrect API key provided: {shown}***.")),
        None,
    ))
}

fn bad_request(message: &str) -> Response {
    error_response(400, error_body(400, message), None)
}

/// What comes before any answer: the key, `--fail-with`, the body as JSON, and the
/// directives of `text` (taken from the body).
async fn preflight(
    settings: &Settings,
    headers: &HeaderMap,
    body: &[u8],
    text: impl Fn(&Value) -> String,
) -> Result<(Value, String), Response> {
    if let Some(refusal) = refused(settings, headers) {
        return Err(refusal);
    }
    if let Some(status) = settings.fail_with {
        return Err(error_response(
            status,
            error_body(status, "The mock provider fails every request."),
            settings.retry_after,
        ));
    }
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return Err(bad_request(
            "We could not parse the JSON body of your request.",
        ));
    };
    let (script, cleaned) =
        parse(&text(&body)).map_err(|p| bad_request(&format!("mock directive: {p}")))?;
    if let Some((status, retry_after, message)) = scripted_failure(&script).await {
        return Err(error_response(
            status,
            error_body(status, message),
            retry_after,
        ));
    }
    Ok((body, cleaned))
}

/// The inputs of an embeddings request as texts (token ids joined by spaces).
fn inputs(body: &Value) -> Option<Vec<String>> {
    let ids = |items: &[Value]| -> Option<String> {
        let ids: Option<Vec<String>> = items
            .iter()
            .map(|t| t.as_u64().map(|n| n.to_string()))
            .collect();
        ids.map(|ids| ids.join(" "))
    };
    match body.get("input")? {
        Value::String(text) => Some(vec![text.clone()]),
        Value::Array(items) if items.iter().all(Value::is_u64) && !items.is_empty() => {
            Some(vec![ids(items)?])
        }
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Some(text.clone()),
                Value::Array(tokens) => ids(tokens),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// `POST /v1/embeddings`.
pub async fn embeddings(settings: &Settings, headers: &HeaderMap, body: &[u8]) -> Response {
    let first = |body: &Value| {
        inputs(body)
            .and_then(|i| i.into_iter().next())
            .unwrap_or_default()
    };
    let (body, _) = match preflight(settings, headers, body, first).await {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let Some(model) = body.get("model").and_then(Value::as_str) else {
        return bad_request("you must provide a model parameter");
    };
    let Some(texts) = inputs(&body) else {
        return bad_request("'input' must be a string or an array");
    };
    let dims = match body.get("dimensions").and_then(Value::as_u64) {
        None => DIMENSIONS,
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX).min(MAX_DIMENSIONS),
    };
    let base64_format = match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return bad_request(&format!("Invalid value for 'encoding_format': '{other}'."));
        }
    };
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let values = vector(text, dims);
            let embedding = if base64_format {
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                json!(base64(&bytes))
            } else {
                json!(values)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    let tokens: u64 = texts.iter().map(|t| words(t)).sum();
    axum::Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    }))
    .into_response()
}

/// `POST /v1/images/generations`.
pub async fn images(settings: &Settings, headers: &HeaderMap, body: &[u8]) -> Response {
    let prompt = |body: &Value| {
        body.get("prompt")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (body, prompt) = match preflight(settings, headers, body, prompt).await {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    if body.get("prompt").and_then(Value::as_str).is_none() {
        return bad_request("Missing required parameter: 'prompt'.");
    }
    let n = body
        .get("n")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 10);
    let as_url = body.get("response_format").and_then(Value::as_str) == Some("url");
    let data: Vec<Value> = (0..n)
        .map(|i| {
            if as_url {
                json!({ "url": format!("https://images.mock-provider.invalid/{i}.png") })
            } else {
                json!({ "b64_json": PNG_BASE64 })
            }
        })
        .collect();
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let input = words(&prompt);
    let output = IMAGE_TOKENS * n;
    axum::Json(json!({
        "created": created,
        "data": data,
        "usage": { "input_tokens": input, "output_tokens": output, "total_tokens": input + output },
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn vectors_depend_on_the_text_alone() {
        assert_eq!(vector("a", 8), vector("a", 8));
        assert_ne!(vector("a", 8), vector("b", 8));
        assert_eq!(vector("a", 3).len(), 3);
        assert!(vector("hello", 64).iter().all(|v| (-1.0..=1.0).contains(v)));
    }

    #[tokio::test]
    async fn base64_vectors_are_the_float_ones_little_endian() {
        let settings = Settings::default();
        let headers = HeaderMap::new();
        let read = |response: Response| async {
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            serde_json::from_slice::<Value>(&bytes).unwrap()
        };
        let floats =
            read(embeddings(&settings, &headers, br#"{"model":"e","input":["x y","z"]}"#).await)
                .await;
        let encoded = read(
            embeddings(
                &settings,
                &headers,
                br#"{"model":"e","input":["x y","z"],"encoding_format":"base64"}"#,
            )
            .await,
        )
        .await;
        assert_eq!(floats["usage"]["prompt_tokens"], 3);
        let first: Vec<f32> =
            serde_json::from_value(floats["data"][0]["embedding"].clone()).unwrap();
        let bytes: Vec<u8> = first.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(encoded["data"][0]["embedding"], base64(&bytes));
    }

    #[tokio::test]
    async fn directives_and_the_key_apply() {
        let settings = Settings {
            api_key: Some("k".into()),
            ..Settings::default()
        };
        let mut headers = HeaderMap::new();
        let response = embeddings(&settings, &headers, br#"{"model":"e","input":"x"}"#).await;
        assert_eq!(response.status(), 401);
        headers.insert(header::AUTHORIZATION, "Bearer k".parse().unwrap());
        let response = embeddings(
            &settings,
            &headers,
            br#"{"model":"e","input":"x [[provider:status code=429 retry_after=3]]"}"#,
        )
        .await;
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let response = images(&settings, &headers, br#"{"prompt":"a cat","n":2}"#).await;
        assert_eq!(response.status(), 200);
    }
}
