//! Calling our own HTTP endpoints (the gateway's cron route, the probes,
//! `/metrics`) from tests, the demo and the CLI's service runner, with
//! reqwest: plain HTTP, no proxy, a fresh connection per request (so a test
//! sees each request on its own, as a CronJob's `curl` does) and a 10 s
//! limit. The response keeps what tests check byte for byte: the status,
//! every header (names lower-case) and the body.

use std::{net::SocketAddr, sync::OnceLock, time::Duration};

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body (transfer encoding already decoded).
    pub body: String,
}

impl HttpResponse {
    /// The first header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        // The workspace builds reqwest with rustls and no default crypto
        // provider (Sentry's transport shares it): install ring, as
        // tally-telemetry does, though plain HTTP never uses it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client with no TLS and no proxy builds")
    })
}

/// Sends `method path` to `addr` with these headers and body, and reads the
/// whole response. Any method name HTTP allows as a token may be sent.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<HttpResponse> {
    let method = reqwest::Method::from_bytes(method.as_bytes())?;
    let mut builder = client().request(method.clone(), format!("http://{addr}{path}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    if !body.is_empty() || method == reqwest::Method::POST {
        builder = builder.body(body.to_vec());
    }
    let response = builder
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{method} {path} on {addr}: {e}"))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .text()
        .await
        .map_err(|e| anyhow::anyhow!("{method} {path} on {addr}: reading the body: {e}"))?;
    Ok(HttpResponse { status, headers, body })
}

/// `GET path` with no extra headers.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<HttpResponse> {
    request(addr, "GET", path, &[], b"").await
}
