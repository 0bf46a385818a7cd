//! A small HTTP client for tests, on the same hyper stack the gateway uses.

use bytes::Bytes;
use drawbridge_types::sse::SseDecoder;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

#[derive(Clone)]
pub struct Client {
    base: String,
    key: Option<String>,
    inner: HyperClient<HttpConnector, Full<Bytes>>,
}

/// A whole answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The OpenAI error code of an error answer.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `data:` payloads of an SSE body, in order.
    pub fn sse_data(&self) -> Vec<String> {
        SseDecoder::new().push(&self.body)
    }

    /// The SSE payloads parsed as JSON, up to (not including) `[DONE]`, checking that `[DONE]`
    /// is the last event.
    pub fn sse_chunks(&self) -> Vec<Value> {
        let data = self.sse_data();
        assert_eq!(
            data.last().map(String::as_str),
            Some("[DONE]"),
            "stream must end with [DONE]: {}",
            self.text()
        );
        data[..data.len() - 1]
            .iter()
            .map(|d| {
                serde_json::from_str(d).unwrap_or_else(|e| panic!("chunk is not JSON ({e}): {d}"))
            })
            .collect()
    }

    /// The answer's text in an OpenAI SSE body: every chunk's `delta.content`, joined.
    pub fn sse_text(&self) -> String {
        self.sse_chunks()
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect()
    }
}

impl Client {
    pub fn new(base: impl Into<String>, key: Option<&str>) -> Self {
        Client {
            base: base.into(),
            key: key.map(str::to_owned),
            inner: HyperClient::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn with_key(&self, key: Option<&str>) -> Self {
        Client {
            key: key.map(str::to_owned),
            ..self.clone()
        }
    }

    pub async fn request(&self, method: Method, path: &str, body: impl Into<Bytes>) -> Reply {
        self.request_with_headers(method, path, body, &[]).await
    }

    /// [`Client::request`] with more headers.
    pub async fn request_with_headers(
        &self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(key) = &self.key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.into())).expect("request");
        let response = self.inner.request(request).await.expect("send request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("read body")
            .to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Send a POST and return as soon as the headers are in, with the body still streaming:
    /// read what you need, then drop it to hang up mid-answer.
    pub async fn post_streaming(
        &self,
        path: &str,
        body: &Value,
    ) -> (u16, http_body_util::BodyDataStream<hyper::body::Incoming>) {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(key) = &self.key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let body = serde_json::to_vec(body).expect("json");
        let request = request.body(Full::new(Bytes::from(body))).expect("request");
        let response = self.inner.request(request).await.expect("send request");
        (
            response.status().as_u16(),
            response.into_body().into_data_stream(),
        )
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, Bytes::new()).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.request(Method::POST, path, serde_json::to_vec(body).expect("json"))
            .await
    }

    pub async fn chat(&self, body: &Value) -> Reply {
        self.post_json("/v1/chat/completions", body).await
    }
}
