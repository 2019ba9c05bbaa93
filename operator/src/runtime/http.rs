//! Every HTTP client the operator uses outside Kubernetes is built here: health probes and
//! SLO scrapes (GET), fallback and escalation webhooks and PagerDuty (POST), ColonyOS RPC
//! (signed POST). Each one has
//! - a **total deadline** per request (connect, TLS, headers and body), on top of the
//!   caller's own;
//! - a **body cap**: callers read replies with [`read_capped`]; a larger body is a failure,
//!   and a declared `Content-Length` above the cap fails before anything is read;
//! - **no proxy** from the environment (`HTTP_PROXY`, ...): the operator calls the URL it
//!   was given, directly;
//! - a **redirect policy**: none for POSTs (a signed or secret-bearing request is never
//!   re-sent to another place), at most [`PROBE_REDIRECTS`] for GETs;
//! - optionally a **private CA** (PEM, from `spec.tls.caRef`) trusted next to the public
//!   roots.
//!
//! Senders that have effects (webhooks, pages, RPCs) also ask [`allowed`]: a replica that
//! is not, or no longer, the leader sends nothing.
use std::time::Duration;

use crate::api::{CaRef, CaSourceKind};
use crate::runtime::leader::{self, NotLeader};

/// Redirects a GET probe or scrape follows before failing.
pub const PROBE_REDIRECTS: usize = 3;
/// Body cap of a health probe.
pub const PROBE_BODY_CAP: usize = 64 * 1024;
/// Body cap of an SLO scrape (Prometheus text) and of a ColonyOS RPC reply.
pub const METRICS_BODY_CAP: usize = 1 << 20;
pub const RPC_BODY_CAP: usize = 1 << 20;
/// Webhook and PagerDuty replies are not read at all (only the status line counts).
pub const WEBHOOK_BODY_CAP: usize = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `GET spec.endpoint + /health`.
    Probe,
    /// `GET spec.slo.metricsURL`.
    Metrics,
    /// `POST` of a JSON notification (fallback flips, escalations, PagerDuty events).
    Webhook,
    /// `POST <endpoint>/api` of a signed ColonyOS message.
    Rpc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub connect_timeout: Duration,
    /// Upper bound of a whole request; callers may use a shorter one.
    pub timeout: Duration,
    pub body_cap: usize,
    pub redirects: usize,
}

impl Purpose {
    pub fn limits(self) -> Limits {
        let connect_timeout = Duration::from_secs(5);
        match self {
            Purpose::Probe => Limits {
                connect_timeout,
                timeout: Duration::from_secs(30),
                body_cap: PROBE_BODY_CAP,
                redirects: PROBE_REDIRECTS,
            },
            Purpose::Metrics => Limits {
                connect_timeout,
                timeout: Duration::from_secs(30),
                body_cap: METRICS_BODY_CAP,
                redirects: PROBE_REDIRECTS,
            },
            Purpose::Webhook => {
                Limits { connect_timeout, timeout: Duration::from_secs(10), body_cap: WEBHOOK_BODY_CAP, redirects: 0 }
            }
            Purpose::Rpc => {
                Limits { connect_timeout, timeout: Duration::from_secs(10), body_cap: RPC_BODY_CAP, redirects: 0 }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("the CA bundle is not valid PEM")]
    InvalidCa,
    #[error("HTTP client setup failed")]
    Setup,
}

/// The client for `purpose`, trusting `ca_pem` (one or more PEM certificates) in addition to
/// the public roots.
pub fn client(purpose: Purpose, ca_pem: Option<&[u8]>) -> Result<reqwest::Client, ClientError> {
    let limits = purpose.limits();
    let redirect = match limits.redirects {
        0 => reqwest::redirect::Policy::none(),
        n => reqwest::redirect::Policy::limited(n),
    };
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .redirect(redirect)
        .connect_timeout(limits.connect_timeout)
        .timeout(limits.timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(2)
        .user_agent(concat!("colony-operator/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|_| ClientError::InvalidCa)?;
        if certs.is_empty() {
            return Err(ClientError::InvalidCa);
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|_| ClientError::Setup)
}

/// The client for `purpose` without a private CA; building it cannot fail for lack of input.
pub fn default_client(purpose: Purpose) -> reqwest::Client {
    client(purpose, None).expect("an HTTP client without a custom CA")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
    #[error("reading the response body failed")]
    Read { timeout: bool },
}

/// Reads at most `cap` bytes of `resp`'s body; a longer body (declared or sent) is an error.
/// The request's own deadline bounds the time.
pub async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|len| len > cap as u64) {
        return Err(BodyError::TooLarge(cap));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| BodyError::Read { timeout: e.is_timeout() })? {
        if body.len().saturating_add(chunk.len()) > cap {
            return Err(BodyError::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Whether this replica may send requests that have effects (it leads, or runs without
/// leader election).
pub fn allowed() -> Result<(), NotLeader> {
    if leader::gate().may_act() { Ok(()) } else { Err(NotLeader) }
}

/// The PEM bundle `r` points to, in `namespace`, checked to hold at least one certificate.
/// A missing object or key is a missing reference; anything but PEM certificates is an
/// invalid spec. The bundle is read on every reconcile (a change is seen at the next one).
pub async fn ca_bundle(kube_client: &kube::Client, namespace: &str, r: &CaRef) -> crate::runtime::Result<Vec<u8>> {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use kube::Api;
    let (kind, bytes) = match r.kind {
        CaSourceKind::ConfigMap => {
            let cm = Api::<ConfigMap>::namespaced(kube_client.clone(), namespace).get_opt(&r.name).await?;
            let bytes = cm.and_then(|c| {
                let text = c.data.and_then(|mut d| d.remove(&r.key)).map(String::into_bytes);
                text.or_else(|| c.binary_data.and_then(|mut d| d.remove(&r.key)).map(|b| b.0))
            });
            ("ConfigMap", bytes)
        }
        CaSourceKind::Secret => {
            let secret = Api::<Secret>::namespaced(kube_client.clone(), namespace).get_opt(&r.name).await?;
            ("Secret", secret.and_then(|s| s.data).and_then(|mut d| d.remove(&r.key)).map(|b| b.0))
        }
    };
    let pem = bytes.ok_or_else(|| {
        crate::runtime::Error::MissingReference(format!(
            "spec.tls.caRef: {kind} {:?} (key {:?}) does not exist or lacks the key",
            r.name, r.key
        ))
    })?;
    client(Purpose::Probe, Some(&pem)).map_err(|_| {
        crate::runtime::Error::InvalidSpec(format!(
            "spec.tls.caRef: {kind} {:?} key {:?} is not a PEM certificate bundle",
            r.name, r.key
        ))
    })?;
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves `reply` to every connection; counts connections.
    async fn serve(reply: &'static [u8]) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(reply).await;
                });
            }
        });
        (url, count)
    }

    #[test]
    fn posts_never_follow_redirects_gets_follow_a_few() {
        assert_eq!(Purpose::Webhook.limits().redirects, 0);
        assert_eq!(Purpose::Rpc.limits().redirects, 0);
        assert_eq!(Purpose::Probe.limits().redirects, PROBE_REDIRECTS);
        assert_eq!(Purpose::Probe.limits().body_cap, 64 * 1024);
        assert_eq!(Purpose::Metrics.limits().body_cap, 1 << 20);
    }

    #[tokio::test]
    async fn a_post_is_not_resent_on_a_redirect() {
        let (url, count) =
            serve(b"HTTP/1.1 307 Temporary Redirect\r\nlocation: /elsewhere\r\ncontent-length: 0\r\n\r\n").await;
        let resp = default_client(Purpose::Rpc).post(format!("{url}/api")).body("{}").send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 307);
        assert_eq!(count.load(Ordering::SeqCst), 1, "the signed POST was sent once");
    }

    #[tokio::test]
    async fn bodies_above_the_cap_fail() {
        let (url, _) = serve(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789").await;
        let c = default_client(Purpose::Probe);
        assert_eq!(read_capped(c.get(&url).send().await.unwrap(), 10).await.unwrap().len(), 10);
        assert_eq!(read_capped(c.get(&url).send().await.unwrap(), 9).await, Err(BodyError::TooLarge(9)));
        // Without a Content-Length, counted while reading.
        let (url, _) = serve(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n0123456789").await;
        assert_eq!(read_capped(c.get(&url).send().await.unwrap(), 9).await, Err(BodyError::TooLarge(9)));
    }

    #[test]
    fn a_bad_ca_is_refused() {
        assert_eq!(client(Purpose::Probe, Some(b"not a certificate")).unwrap_err(), ClientError::InvalidCa);
    }
}
