//! A controllable HTTP server standing in for a ColonyOS server: `/health` answers 200 or
//! 503 as the test says, and every probe is counted at the server.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Default)]
struct State {
    failing: AtomicBool,
    successes: AtomicU64,
    failures: AtomicU64,
    metrics: std::sync::Mutex<String>,
    hooks: std::sync::Mutex<Vec<serde_json::Value>>,
    /// Answer `/hook` with 500 instead of 202.
    hook_failing: AtomicBool,
}

/// Reads one HTTP request: the request line and the body (by content-length).
async fn read_request(stream: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..].to_vec();
            return (head.lines().next().unwrap_or("").to_string(), body);
        }
    }
    (String::new(), Vec::new())
}

#[derive(Clone)]
pub struct TestEndpoint {
    pub port: u16,
    state: Arc<State>,
}

impl TestEndpoint {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind test endpoint");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let s = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let (line, body) = read_request(&mut stream).await;
                    let path =
                        line.split_whitespace().nth(1).unwrap_or("/").split('?').next().unwrap_or("/").to_string();
                    if path == "/metrics" {
                        let text = s.metrics.lock().unwrap().clone();
                        let _ = stream
                            .write_all(
                                format!(
                                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                                    text.len()
                                )
                                .as_bytes(),
                            )
                            .await;
                        return;
                    }
                    if path == "/hook" {
                        if let Ok(v) = serde_json::from_slice(&body) {
                            s.hooks.lock().unwrap().push(v);
                        }
                        let reply: &[u8] = if s.hook_failing.load(Ordering::SeqCst) {
                            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        } else {
                            b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        };
                        let _ = stream.write_all(reply).await;
                        return;
                    }
                    let status = if path != "/health" {
                        "404 Not Found"
                    } else if s.failing.load(Ordering::SeqCst) {
                        s.failures.fetch_add(1, Ordering::SeqCst);
                        "503 Service Unavailable"
                    } else {
                        s.successes.fetch_add(1, Ordering::SeqCst);
                        "200 OK"
                    };
                    let _ = stream
                        .write_all(
                            format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes(),
                        )
                        .await;
                });
            }
        });
        Self { port, state }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    pub fn successes(&self) -> u64 {
        self.state.successes.load(Ordering::SeqCst)
    }

    /// Sets the Prometheus text served on `/metrics`.
    pub fn set_metrics(&self, text: &str) {
        *self.state.metrics.lock().unwrap() = text.to_string();
    }

    /// Makes `/hook` answer 500 (it still records what it receives).
    pub fn set_hook_failing(&self, failing: bool) {
        self.state.hook_failing.store(failing, Ordering::SeqCst);
    }

    /// JSON bodies POSTed to `/hook`, in arrival order.
    pub fn hooks(&self) -> Vec<serde_json::Value> {
        self.state.hooks.lock().unwrap().clone()
    }

    pub fn failures(&self) -> u64 {
        self.state.failures.load(Ordering::SeqCst)
    }
}
