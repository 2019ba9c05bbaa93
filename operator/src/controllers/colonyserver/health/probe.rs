//! HTTP probing of a ColonyOS server (`GET /health`) and bounded text fetches (the SLO
//! scrape).
//!
//! Guarantees:
//! - **Bounded time**: the whole exchange (connect, TLS, headers, body) runs under one
//!   `timeout`; a server that sends headers and then trickles or never finishes the body
//!   is a failure after `timeout`, not a hang.
//! - **Bounded memory**: at most `cap` bytes of body are read; a declared
//!   `Content-Length` above the cap fails before reading anything.
//! - **No secrets in errors**: error strings never contain the URL (reqwest's errors
//!   embed it, including userinfo and query); we build our own short labels and redact
//!   anything URL-shaped that a lower layer might have put in a message.
//! - **Never panics**.
//!
//! Environment proxies (`HTTP_PROXY`, ...) are ignored, like Kubernetes' own HTTP probes:
//! the operator talks to the server directly. Use [`Prober::with_client`] for anything else.

use std::error::Error as StdError;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::runtime::http;

/// Default body cap: 64 KiB (a health body is empty; a Prometheus page is a few KiB).
pub const DEFAULT_BODY_CAP: usize = http::PROBE_BODY_CAP;
/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = http::PROBE_REDIRECTS;

/// Why a probe or fetch failed. `Display` is short, human and free of URLs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProbeError {
    #[error("invalid endpoint URL")]
    InvalidUrl,
    #[error("timed out after {}", fmt_duration(*.0))]
    Timeout(Duration),
    #[error("connection refused")]
    ConnectionRefused,
    #[error("DNS resolution failed: {0}")]
    Dns(String),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("too many redirects")]
    TooManyRedirects,
    #[error("HTTP {0}")]
    Status(u16),
    #[error("response body larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("reading response body failed: {0}")]
    Body(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("HTTP client setup failed: {0}")]
    Client(String),
}

impl ProbeError {
    /// A stable CamelCase label (for metrics labels and condition reasons).
    pub fn kind(&self) -> &'static str {
        match self {
            ProbeError::InvalidUrl => "InvalidURL",
            ProbeError::Timeout(_) => "Timeout",
            ProbeError::ConnectionRefused => "ConnectionRefused",
            ProbeError::Dns(_) => "DNSFailure",
            ProbeError::Connect(_) => "ConnectFailed",
            ProbeError::TooManyRedirects => "TooManyRedirects",
            ProbeError::Status(_) => "HTTPStatus",
            ProbeError::BodyTooLarge(_) => "BodyTooLarge",
            ProbeError::Body(_) => "BodyReadFailed",
            ProbeError::Request(_) => "RequestFailed",
            ProbeError::Client(_) => "ClientSetupFailed",
        }
    }
}

/// The result of one health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// 2xx and the (capped) body read completed within the timeout.
    pub healthy: bool,
    /// The final HTTP status, when one was received.
    pub status: Option<u16>,
    /// Wall time of the whole probe (until success or failure).
    pub latency: Duration,
    /// Short, human, URL-free error when unhealthy.
    pub error: Option<String>,
}

/// An HTTP prober; cheap to clone (shares the connection pool).
#[derive(Debug, Clone)]
pub struct Prober {
    client: reqwest::Client,
}

impl Prober {
    /// The operator's probe client (`runtime::http`, purpose Probe): rustls, at most
    /// [`MAX_REDIRECTS`] redirects, a connect timeout, no environment proxies.
    pub fn new() -> Result<Self, ProbeError> {
        Self::with_ca(None)
    }

    /// The probe client trusting `ca_pem` (a private CA, PEM) next to the public roots.
    pub fn with_ca(ca_pem: Option<&[u8]>) -> Result<Self, ProbeError> {
        let client = http::client(http::Purpose::Probe, ca_pem).map_err(|e| ProbeError::Client(e.to_string()))?;
        Ok(Self { client })
    }

    /// Use a caller-built client (custom CA, proxy, ...). The timeout and body caps of
    /// [`Prober::probe`] and [`Prober::fetch_text`] still apply.
    pub fn with_client(client: reqwest::Client) -> Self {
        Self { client }
    }

    /// The underlying HTTP client (shared connection pool), for the API check's RPC.
    pub fn http_client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// `GET url`: healthy when a 2xx arrives and the body (capped at
    /// [`DEFAULT_BODY_CAP`]; a larger body is a failure) is read completely, all within
    /// `timeout`.
    pub async fn probe(&self, url: &str, timeout: Duration) -> ProbeOutcome {
        let started = Instant::now();
        let result = self.get_capped(url, timeout, DEFAULT_BODY_CAP).await;
        let latency = started.elapsed();
        match result {
            Ok((status, _body)) => ProbeOutcome { healthy: true, status: Some(status), latency, error: None },
            Err((status, err)) => ProbeOutcome { healthy: false, status, latency, error: Some(err.to_string()) },
        }
    }

    /// `GET url` and return the body as text (lossy UTF-8). Non-2xx, more than `cap`
    /// bytes, or not done within `timeout` are errors.
    pub async fn fetch_text(&self, url: &str, timeout: Duration, cap: usize) -> Result<String, ProbeError> {
        let (_, body) = self.get_capped(url, timeout, cap).await.map_err(|(_, e)| e)?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// The shared GET: returns the 2xx status and body, or the status (if any) and error.
    async fn get_capped(
        &self,
        url: &str,
        timeout: Duration,
        cap: usize,
    ) -> Result<(u16, Vec<u8>), (Option<u16>, ProbeError)> {
        let parsed = reqwest::Url::parse(url).map_err(|_| (None, ProbeError::InvalidUrl))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err((None, ProbeError::InvalidUrl));
        }
        // Status observed so far, readable after a timeout of the whole exchange.
        let mut seen_status: Option<u16> = None;
        let exchange = async {
            let mut resp = self
                .client
                .get(parsed)
                // Belt and braces: reqwest's own deadline as well as ours.
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| classify(&e, timeout))?;
            let status = resp.status().as_u16();
            seen_status = Some(status);
            if !resp.status().is_success() {
                // Do not read the body of an error reply; dropping `resp` closes it.
                return Err(ProbeError::Status(status));
            }
            if let Some(len) = resp.content_length()
                && len > cap as u64
            {
                return Err(ProbeError::BodyTooLarge(cap));
            }
            let mut body: Vec<u8> = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| classify(&e, timeout))? {
                if body.len().saturating_add(chunk.len()) > cap {
                    return Err(ProbeError::BodyTooLarge(cap));
                }
                body.extend_from_slice(&chunk);
            }
            Ok((status, body))
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_elapsed) => Err(ProbeError::Timeout(timeout)),
        };
        result.map_err(|e| (seen_status, e))
    }
}

/// Map a reqwest error to a URL-free [`ProbeError`].
fn classify(e: &reqwest::Error, timeout: Duration) -> ProbeError {
    if e.is_timeout() {
        return ProbeError::Timeout(timeout);
    }
    if e.is_redirect() {
        return ProbeError::TooManyRedirects;
    }
    if e.is_builder() {
        return ProbeError::InvalidUrl;
    }
    if e.is_connect() {
        if chain_has_io_kind(e, std::io::ErrorKind::ConnectionRefused) {
            return ProbeError::ConnectionRefused;
        }
        if chain_has_io_kind(e, std::io::ErrorKind::TimedOut) {
            return ProbeError::Timeout(timeout);
        }
        if chain_mentions(e, "dns error") {
            return ProbeError::Dns(root_cause(e));
        }
        return ProbeError::Connect(root_cause(e));
    }
    if e.is_body() || e.is_decode() {
        return ProbeError::Body(root_cause(e));
    }
    ProbeError::Request(root_cause(e))
}

fn sources<'a>(e: &'a (dyn StdError + 'static)) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let mut next = Some(e);
    std::iter::from_fn(move || {
        let cur = next?;
        next = cur.source();
        Some(cur)
    })
}

fn chain_has_io_kind(e: &reqwest::Error, kind: std::io::ErrorKind) -> bool {
    sources(e).any(|s| s.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == kind))
}

fn chain_mentions(e: &reqwest::Error, needle: &str) -> bool {
    // Only the sources: the top-level reqwest error's Display carries the URL.
    sources(e).skip(1).any(|s| s.to_string().contains(needle))
}

/// The innermost cause's message, redacted and shortened.
fn root_cause(e: &reqwest::Error) -> String {
    let last = sources(e).skip(1).last();
    match last {
        Some(s) => redact(&s.to_string()),
        None => "unknown error".to_string(),
    }
}

/// Replace anything URL-shaped with `<url>` and cap the length. Lower layers do not put
/// URLs in their messages, but this keeps a userinfo or query secret out of status and
/// logs even if one ever did.
fn redact(msg: &str) -> String {
    let words: Vec<String> = msg
        .split_whitespace()
        .map(|w| {
            if w.contains("://") || w.contains('@') || w.contains('?') {
                "<redacted>".to_string()
            } else {
                w.to_string()
            }
        })
        .collect();
    super::truncate_error(&words.join(" "))
}

fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// What the inline test server does with each connection after reading the request head.
    #[derive(Clone)]
    enum Behaviour {
        /// Send this complete response.
        Respond(&'static [u8]),
        /// Send this head, then `piece` every 100ms forever.
        Trickle(&'static [u8], &'static [u8]),
        /// Accept and never answer.
        Silent,
    }

    async fn read_head(sock: &mut TcpStream) {
        let mut buf = Vec::new();
        let mut tmp = [0u8; 1024];
        loop {
            match sock.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    buf.extend_from_slice(&tmp[..n]);
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() > 64 * 1024 {
                        return;
                    }
                }
            }
        }
    }

    async fn serve(behaviour: Behaviour) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let behaviour = behaviour.clone();
                tokio::spawn(async move {
                    read_head(&mut sock).await;
                    match behaviour {
                        Behaviour::Respond(bytes) => {
                            let _ = sock.write_all(bytes).await;
                            let _ = sock.shutdown().await;
                        }
                        Behaviour::Trickle(head, piece) => {
                            let _ = sock.write_all(head).await;
                            loop {
                                if sock.write_all(piece).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                        Behaviour::Silent => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    /// A streaming server: `head` then zeros until the client disconnects.
    async fn serve_stream(head: &'static [u8], written: Arc<AtomicUsize>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let written = written.clone();
                tokio::spawn(async move {
                    read_head(&mut sock).await;
                    if sock.write_all(head).await.is_err() {
                        return;
                    }
                    let chunk = vec![b'0'; 16 * 1024];
                    // Stop after 64 MiB no matter what, so a buggy client cannot make the
                    // test run forever.
                    for _ in 0..4096 {
                        if sock.write_all(&chunk).await.is_err() {
                            return;
                        }
                        written.fetch_add(chunk.len(), Ordering::Relaxed);
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    fn prober() -> Prober {
        Prober::new().expect("client builds")
    }

    const T: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn ok_200_is_healthy() {
        let url = serve(Behaviour::Respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")).await;
        let out = prober().probe(&format!("{url}/health"), T).await;
        assert!(out.healthy, "{out:?}");
        assert_eq!(out.status, Some(200));
        assert_eq!(out.error, None);
    }

    #[tokio::test]
    async fn ok_204_and_small_body_are_healthy() {
        let url = serve(Behaviour::Respond(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")).await;
        let out = prober().probe(&url, T).await;
        assert!(out.healthy, "{out:?}");
        assert_eq!(out.status, Some(204));

        let url =
            serve(Behaviour::Respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")).await;
        let out = prober().probe(&url, T).await;
        assert!(out.healthy, "{out:?}");
    }

    #[tokio::test]
    async fn status_503_is_unhealthy() {
        let url = serve(Behaviour::Respond(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndown",
        ))
        .await;
        let out = prober().probe(&format!("{url}/health"), T).await;
        assert!(!out.healthy);
        assert_eq!(out.status, Some(503));
        assert_eq!(out.error.as_deref(), Some("HTTP 503"));
    }

    #[tokio::test]
    async fn status_404_and_302_without_location_are_unhealthy() {
        let url =
            serve(Behaviour::Respond(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
                .await;
        let out = prober().probe(&format!("{url}/api/v1/health"), T).await;
        assert!(!out.healthy);
        assert_eq!(out.status, Some(404));

        let url =
            serve(Behaviour::Respond(b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")).await;
        let out = prober().probe(&url, T).await;
        assert!(!out.healthy);
        assert_eq!(out.status, Some(302));
    }

    #[tokio::test]
    async fn redirect_loop_is_unhealthy() {
        // Redirects to itself forever.
        let url = serve(Behaviour::Respond(
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /again\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ))
        .await;
        let out = prober().probe(&url, T).await;
        assert!(!out.healthy);
        assert_eq!(out.error.as_deref(), Some("too many redirects"), "{out:?}");
    }

    #[tokio::test]
    async fn connection_refused_is_unhealthy() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let out = prober().probe(&format!("http://{addr}/health"), T).await;
        assert!(!out.healthy);
        assert_eq!(out.status, None);
        assert_eq!(out.error.as_deref(), Some("connection refused"), "{out:?}");
    }

    #[tokio::test]
    async fn dns_failure_is_unhealthy() {
        // `.invalid` is reserved (RFC 2606) and never resolves. Without network the
        // resolver may fail differently; either way it is unhealthy and URL-free.
        let out = prober().probe("http://user:hunter2@colony-server.invalid:50080/health?token=s3cret", T).await;
        assert!(!out.healthy);
        let err = out.error.unwrap();
        assert!(!err.contains("hunter2") && !err.contains("s3cret") && !err.contains("colony-server"), "{err}");
    }

    #[tokio::test]
    async fn errors_never_contain_url_secrets() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let out = prober().probe(&format!("http://admin:pa55word@{addr}/health?key=topsecret"), T).await;
        let err = out.error.unwrap();
        assert!(!err.contains("pa55word") && !err.contains("topsecret") && !err.contains("admin"), "{err}");

        let url =
            serve(Behaviour::Respond(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")).await;
        let url = url.replace("http://", "http://admin:pa55word@");
        let out = prober().probe(&format!("{url}/health?key=topsecret"), T).await;
        let err = out.error.unwrap();
        assert!(!err.contains("pa55word") && !err.contains("topsecret"), "{err}");
    }

    #[tokio::test]
    async fn invalid_urls_are_unhealthy() {
        for url in ["", "not a url", "ftp://example.com/health", "http://", "unix:/tmp/x"] {
            let out = prober().probe(url, T).await;
            assert!(!out.healthy, "{url}");
            assert_eq!(out.error.as_deref(), Some("invalid endpoint URL"), "{url}");
        }
    }

    #[tokio::test]
    async fn trickling_body_times_out() {
        // A declared length that is never reached.
        let url = serve(Behaviour::Trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", b"x")).await;
        let out = prober().probe(&url, Duration::from_millis(500)).await;
        assert!(!out.healthy);
        assert_eq!(out.status, Some(200), "the status line arrived");
        assert_eq!(out.error.as_deref(), Some("timed out after 500ms"), "{out:?}");
    }

    #[tokio::test]
    async fn endless_chunked_trickle_times_out() {
        // Chunked encoding that never sends the final chunk.
        let url =
            serve(Behaviour::Trickle(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"1\r\nx\r\n")).await;
        let out = prober().probe(&url, Duration::from_millis(500)).await;
        assert!(!out.healthy);
        assert_eq!(out.error.as_deref(), Some("timed out after 500ms"), "{out:?}");
        let err = prober().fetch_text(&url, Duration::from_millis(300), 1024).await.unwrap_err();
        assert_eq!(err, ProbeError::Timeout(Duration::from_millis(300)));
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let url = serve(Behaviour::Silent).await;
        let out = prober().probe(&url, Duration::from_millis(300)).await;
        assert!(!out.healthy);
        assert_eq!(out.status, None);
        assert_eq!(out.error.as_deref(), Some("timed out after 300ms"), "{out:?}");
    }

    #[tokio::test]
    async fn endless_body_is_capped_not_read_fully() {
        let written = Arc::new(AtomicUsize::new(0));
        let url = serve_stream(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", written.clone()).await;
        let out = prober().probe(&url, Duration::from_secs(10)).await;
        assert!(!out.healthy);
        assert_eq!(out.error.as_deref(), Some("response body larger than 65536 bytes"), "{out:?}");
        // The server stops writing once we hang up; it never got to its 64 MiB.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(written.load(Ordering::Relaxed) < 64 * 1024 * 1024);
    }

    #[tokio::test]
    async fn huge_declared_length_fails_before_reading() {
        let written = Arc::new(AtomicUsize::new(0));
        let url = serve_stream(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10737418240\r\nConnection: close\r\n\r\n",
            written.clone(),
        )
        .await;
        let out = prober().probe(&url, Duration::from_secs(10)).await;
        assert!(!out.healthy);
        assert_eq!(out.status, Some(200));
        assert_eq!(out.error.as_deref(), Some("response body larger than 65536 bytes"));
    }

    #[tokio::test]
    async fn fetch_text_reads_body_and_enforces_cap() {
        let url = serve(Behaviour::Respond(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 36\r\nConnection: close\r\n\r\ncolonies_server_processes_waiting 3\n",
        ))
        .await;
        let text = prober().fetch_text(&url, T, DEFAULT_BODY_CAP).await.unwrap();
        assert_eq!(text, "colonies_server_processes_waiting 3\n");
        let err = prober().fetch_text(&url, T, 10).await.unwrap_err();
        assert_eq!(err, ProbeError::BodyTooLarge(10));
        assert_eq!(err.kind(), "BodyTooLarge");

        let url =
            serve(Behaviour::Respond(b"HTTP/1.1 500 Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")).await;
        assert_eq!(prober().fetch_text(&url, T, 1024).await.unwrap_err(), ProbeError::Status(500));

        let written = Arc::new(AtomicUsize::new(0));
        let url = serve_stream(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", written).await;
        assert_eq!(
            prober().fetch_text(&url, Duration::from_secs(10), 1000).await.unwrap_err(),
            ProbeError::BodyTooLarge(1000)
        );
    }

    #[tokio::test]
    async fn prober_is_reusable_across_many_probes() {
        let url = serve(Behaviour::Respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")).await;
        let p = prober();
        for _ in 0..5 {
            assert!(p.probe(&url, T).await.healthy);
        }
    }

    #[test]
    fn redact_removes_url_like_tokens() {
        assert_eq!(redact("error for http://u:p@h/x?y=z now"), "error for <redacted> now");
        assert_eq!(redact("token a@b"), "token <redacted>");
        assert_eq!(redact("plain message"), "plain message");
    }

    #[test]
    fn error_display_and_kinds() {
        assert_eq!(ProbeError::Timeout(Duration::from_secs(2)).to_string(), "timed out after 2s");
        assert_eq!(ProbeError::Timeout(Duration::from_millis(1500)).to_string(), "timed out after 1500ms");
        assert_eq!(ProbeError::Status(503).to_string(), "HTTP 503");
        assert_eq!(ProbeError::ConnectionRefused.kind(), "ConnectionRefused");
        assert_eq!(ProbeError::Dns("x".into()).kind(), "DNSFailure");
    }
}
