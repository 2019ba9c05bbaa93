//! Webhook deliveries (fallback flips, escalations): JSON POST with retries and exponential
//! backoff. The URL comes from a Secret and is never logged, put in an Event or in status:
//! errors describe what failed without it.
//!
//! The client comes from `runtime::http` (purpose Webhook): no redirects (a POST is never
//! re-sent elsewhere), no environment proxy, 10 s per attempt, the reply body is not read.
//! A replica that is not the leader sends nothing. [`Ordered`] delivers the notifications
//! of one object in the order they were queued.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::runtime::http;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("webhook answered HTTP {0} after {1} attempt(s)")]
    Status(u16, u32),
    #[error("webhook unreachable ({0}) after {1} attempt(s)")]
    Transport(&'static str, u32),
    #[error("webhook not sent: this replica is not the leader")]
    NotLeader,
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
        if http::allowed().is_err() {
            return Err(DeliveryError::NotLeader);
        }
        let result = client.post(url).json(body).send().await;
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

/// One queue per key (a server), each drained by its own task: a notification is sent only
/// after the previous one for the same key is done (delivered or given up), so a late "on"
/// never arrives after a newer "off". Different keys do not wait for each other.
#[derive(Default)]
pub struct Ordered {
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<BoxFuture<'static, ()>>>>,
    /// Jobs queued and not finished, and a signal when that count reaches zero.
    pending: std::sync::Arc<(std::sync::atomic::AtomicUsize, tokio::sync::Notify)>,
}

impl Ordered {
    /// Runs `job` after every job queued before it under `key`, in the span of the caller
    /// (the reconcile that queued it).
    pub fn push(&self, key: String, job: BoxFuture<'static, ()>) {
        use std::sync::atomic::Ordering;
        let pending = self.pending.clone();
        pending.0.fetch_add(1, Ordering::SeqCst);
        let job = async move {
            job.await;
            if pending.0.fetch_sub(1, Ordering::SeqCst) == 1 {
                pending.1.notify_waiters();
            }
        }
        .in_current_span()
        .boxed();
        let mut queues = self.queues.lock().expect("notification queues poisoned");
        let job = match queues.get(&key) {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<BoxFuture<'static, ()>>();
        let _ = tx.send(job);
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                job.await;
            }
        });
        queues.insert(key, tx);
    }

    /// Drops the queue of `key` (its object was deleted): jobs already queued still run, in
    /// order, and then its task ends.
    pub fn forget(&self, key: &str) {
        self.queues.lock().expect("notification queues poisoned").remove(key);
    }

    /// Waits until every job queued so far has finished, for at most `limit`; whether they
    /// all did. At shutdown: what a reconcile announced is sent before the process exits.
    pub async fn drain(&self, limit: Duration) -> bool {
        use std::sync::atomic::Ordering;
        let (count, idle) = &*self.pending;
        tokio::time::timeout(limit, async {
            loop {
                let notified = idle.notified();
                if count.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await
        .is_ok()
    }

    /// How many keys have a queue.
    pub fn len(&self) -> usize {
        self.queues.lock().expect("notification queues poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn drain_waits_for_the_queued_jobs() {
        let ordered = Ordered::default();
        assert!(ordered.drain(Duration::from_millis(10)).await, "nothing queued");
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let done = Arc::new(AtomicU32::new(0));
        let d = done.clone();
        ordered.push(
            "a".into(),
            Box::pin(async move {
                let _ = wait.await;
                d.fetch_add(1, Ordering::SeqCst);
            }),
        );
        let d = done.clone();
        ordered.push(
            "b".into(),
            Box::pin(async move {
                d.fetch_add(1, Ordering::SeqCst);
            }),
        );
        assert!(!ordered.drain(Duration::from_millis(200)).await, "a job is still waiting");
        release.send(()).unwrap();
        assert!(ordered.drain(Duration::from_secs(5)).await);
        assert_eq!(done.load(Ordering::SeqCst), 2);
    }

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
    async fn one_keys_jobs_run_in_order_others_do_not_wait() {
        let ordered = Ordered::default();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (i, delay) in [(0, 200u64), (1, 0), (2, 50)] {
            let tx = tx.clone();
            ordered.push(
                "srv".into(),
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    let _ = tx.send(format!("srv-{i}"));
                }),
            );
        }
        let other = tx.clone();
        ordered.push(
            "other".into(),
            Box::pin(async move {
                let _ = other.send("other".to_string());
            }),
        );
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap());
        }
        assert_eq!(got, ["other", "srv-0", "srv-1", "srv-2"]);
    }

    #[tokio::test]
    async fn a_forgotten_key_still_delivers_what_was_queued_then_goes() {
        let ordered = Ordered::default();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..3 {
            let tx = tx.clone();
            ordered.push(
                "srv".into(),
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let _ = tx.send(i);
                }),
            );
        }
        assert_eq!(ordered.len(), 1);
        ordered.forget("srv");
        assert!(ordered.is_empty(), "the deleted server's queue is gone");
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap());
        }
        assert_eq!(got, [0, 1, 2], "what was queued before the delete is still delivered, in order");
    }

    #[tokio::test]
    async fn retries_until_success() {
        let (url, count) = server(2).await;
        let attempts =
            deliver(&http::default_client(http::Purpose::Webhook), &url, &serde_json::json!({"a": 1}), policy(3))
                .await
                .unwrap();
        assert_eq!(attempts, 3);
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_after_retries_without_revealing_the_url() {
        let (url, count) = server(100).await;
        let err = deliver(&http::default_client(http::Purpose::Webhook), &url, &serde_json::json!({}), policy(1))
            .await
            .unwrap_err();
        assert_eq!(err, DeliveryError::Status(503, 2));
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert!(!err.to_string().contains("secret-token"));
    }

    #[tokio::test]
    async fn unreachable_is_a_transport_error_without_the_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/hook?token=secret-token");
        let err = deliver(&http::default_client(http::Purpose::Webhook), &url, &serde_json::json!({}), policy(0))
            .await
            .unwrap_err();
        assert!(matches!(err, DeliveryError::Transport(_, 1)));
        assert!(!err.to_string().contains("secret-token"));
    }
}
