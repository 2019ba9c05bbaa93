//! Webhook deliveries (fallback flips, escalations): JSON POST with retries and exponential
//! backoff. The URL comes from a Secret and is never logged, put in an Event or in status:
//! errors describe what failed without it.
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("webhook answered HTTP {0} after {1} attempt(s)")]
    Status(u16, u32),
    #[error("webhook unreachable ({0}) after {1} attempt(s)")]
    Transport(&'static str, u32),
}

/// How a failed delivery is retried: `retries` more attempts, waiting `backoff`, doubled
/// after each attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub retries: u32,
    pub backoff: Duration,
}

fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_builder() {
        "invalid URL"
    } else {
        "request failed"
    }
}

/// POSTs `body` as JSON to `url` until a 2xx answer or the retries run out. Returns the
/// number of attempts made on success.
pub async fn deliver<T: Serialize>(
    client: &reqwest::Client,
    url: &str,
    body: &T,
    policy: RetryPolicy,
) -> Result<u32, DeliveryError> {
    let mut wait = policy.backoff;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = client.post(url).timeout(Duration::from_secs(10)).json(body).send().await;
        let err = match result {
            Ok(resp) if resp.status().is_success() => return Ok(attempt),
            Ok(resp) => DeliveryError::Status(resp.status().as_u16(), attempt),
            // `without_url` keeps the secret URL out of anything that might be displayed.
            Err(e) => DeliveryError::Transport(transport_kind(&e.without_url()), attempt),
        };
        if attempt > policy.retries {
            return Err(err);
        }
        tokio::time::sleep(wait).await;
        wait = wait.saturating_mul(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers the first `fail` requests with 503, then 200; counts requests.
    async fn server(fail: u32) -> (String, Arc<AtomicU32>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook?token=secret-token", listener.local_addr().unwrap());
        let count = Arc::new(AtomicU32::new(0));
        let c = count.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let n = c.fetch_add(1, Ordering::SeqCst);
                let mut buf = vec![0u8; 8192];
                let _ = s.read(&mut buf).await;
                let status = if n < fail { "503 Service Unavailable" } else { "200 OK" };
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes(),
                    )
                    .await;
            }
        });
        (url, count)
    }

    fn policy(retries: u32) -> RetryPolicy {
        RetryPolicy { retries, backoff: Duration::from_millis(10) }
    }

    #[tokio::test]
    async fn retries_until_success() {
        let (url, count) = server(2).await;
        let attempts = deliver(&reqwest::Client::new(), &url, &serde_json::json!({"a": 1}), policy(3)).await.unwrap();
        assert_eq!(attempts, 3);
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_after_retries_without_revealing_the_url() {
        let (url, count) = server(100).await;
        let err = deliver(&reqwest::Client::new(), &url, &serde_json::json!({}), policy(1)).await.unwrap_err();
        assert_eq!(err, DeliveryError::Status(503, 2));
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert!(!err.to_string().contains("secret-token"));
    }

    #[tokio::test]
    async fn unreachable_is_a_transport_error_without_the_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/hook?token=secret-token");
        let err = deliver(&reqwest::Client::new(), &url, &serde_json::json!({}), policy(0)).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Transport(_, 1)));
        assert!(!err.to_string().contains("secret-token"));
    }
}
