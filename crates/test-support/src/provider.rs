//! `mock-provider`, the OpenAI-compatible upstream of the provider-account tests, started as a
//! real process on port 0: over plain HTTP, or over HTTPS with the test certificates of
//! `tests/fixtures/tls` (its CA in [`test_ca`]).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

use crate::process::Process;

/// A test-only TLS file: `ca.pem` (the CA), `server.pem` and `server.key` (`127.0.0.1`,
/// `localhost`).
pub fn tls_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tls")
        .join(name)
}

/// The CA that signed the mock's test certificate, for `provider.ca_file`.
pub fn test_ca() -> PathBuf {
    tls_fixture("ca.pem")
}

/// A running mock upstream.
pub struct MockProvider {
    process: Process,
    tls: bool,
}

impl MockProvider {
    /// A plain-HTTP mock that wants `key`; `env` adds its knobs (e.g.
    /// `MOCK_PROVIDER_FAIL_WITH`).
    pub async fn start(dir: &Path, key: &str, env: &[(&str, &str)]) -> MockProvider {
        Self::launch(dir, key, env, false).await
    }

    /// An HTTPS mock with the test certificate (HTTP/2 and HTTP/1.1 offered; add
    /// `MOCK_PROVIDER_HTTP1_ONLY=true` to `env` for HTTP/1.1 only).
    pub async fn start_tls(dir: &Path, key: &str, env: &[(&str, &str)]) -> MockProvider {
        Self::launch(dir, key, env, true).await
    }

    async fn launch(dir: &Path, key: &str, env: &[(&str, &str)], tls: bool) -> MockProvider {
        // The harness passes `--config` to every binary; the mock ignores it.
        let config = dir.join("mock-provider.yaml");
        std::fs::write(&config, "").expect("write the mock's config");
        let cert = tls_fixture("server.pem");
        let private = tls_fixture("server.key");
        let (cert, private) = (cert.display().to_string(), private.display().to_string());
        let mut env = env.to_vec();
        env.push(("MOCK_PROVIDER_API_KEY", key));
        if tls {
            env.push(("MOCK_PROVIDER_TLS_CERT", &cert));
            env.push(("MOCK_PROVIDER_TLS_KEY", &private));
        }
        let listener = if tls { "https" } else { "http" };
        let process = Process::start("mock-provider", &config, &env, &[listener]).await;
        MockProvider { process, tls }
    }

    /// `scheme://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        if self.tls {
            format!("https://{}", self.process.addr("https"))
        } else {
            format!("http://{}", self.process.addr("http"))
        }
    }

    /// The base URL of its OpenAI-compatible API (`…/v1`; also its Anthropic API's).
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.origin())
    }

    /// The base URL of its API for accounts of `kind` (`openai`, `anthropic`, `gemini`).
    pub fn base_url_for(&self, kind: &str) -> String {
        match kind {
            "gemini" => format!("{}/v1beta", self.origin()),
            _ => self.base_url(),
        }
    }

    /// Its `GET /stats`: `chat_requests`, and `http_versions` (`http/1.1`, `h2`).
    pub async fn stats(&self) -> Value {
        let mut roots = rustls::RootCertStore::empty();
        let ca = CertificateDer::from_pem_file(test_ca()).expect("the test CA");
        roots.add(ca).expect("the test CA is a certificate");
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector({
                let mut http = HttpConnector::new();
                http.enforce_http(false);
                http
            });
        let client: Client<_, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build(connector);
        let request = Request::get(format!("{}/stats", self.origin()))
            .body(Empty::new())
            .expect("a stats request");
        let response = client.request(request).await.expect("the mock's stats");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the stats body")
            .to_bytes();
        serde_json::from_slice(&body).expect("stats are JSON")
    }

    /// How many chat requests it received.
    pub async fn requests(&self) -> u64 {
        self.stats().await["chat_requests"]
            .as_u64()
            .expect("chat_requests")
    }
}
