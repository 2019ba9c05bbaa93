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
                    let mut buf = vec![0u8; 4096];
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    let request = String::from_utf8_lossy(&buf[..n]);
                    let path = request.split_whitespace().nth(1).unwrap_or("/");
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

    pub fn failures(&self) -> u64 {
        self.state.failures.load(Ordering::SeqCst)
    }
}
