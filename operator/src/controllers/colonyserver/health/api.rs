//! The API-level health check (`spec.health.api`): a signed `getcolonystatsmsg` with a colony
//! member's key, run after each successful `GET /health`.
//!
//! Why: colonies-server v1.9.12 leaks a PostgreSQL connection per successful change-ID
//! call; once its pool is exhausted every RPC hangs while `/health` (which touches no
//! database) still answers 200. Only a call through the API sees that. A call that hangs,
//! times out, errors or returns no statistics counts as a failed probe.
//!
//! [`judge`] and [`combine`] are pure; [`ApiCheck::run`] does the call.
use std::time::Duration;

use serde_json::{Value, json};

use super::probe::ProbeOutcome;
use crate::colonyos::rpc::{self, RpcError};

/// Why an API check failed. `Display` is short and free of URLs and key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiCheckError {
    #[error("API check timed out after {0:?}")]
    Timeout(Duration),
    #[error("API check failed: {0}")]
    Rpc(RpcError),
    #[error("API check returned no colony statistics")]
    NoStatistics,
    #[error("API check cannot sign: {0}")]
    Key(String),
}

/// The message the check sends.
pub fn stats_message(colony: &str) -> Value {
    json!({ "msgtype": "getcolonystatsmsg", "colonyname": colony })
}

/// The verdict on one reply: statistics (an object with an integer `waitingprocesses`) pass;
/// an error, an empty body (what a caller without rights gets) or anything else fails.
pub fn judge(reply: Result<Value, RpcError>) -> Result<(), ApiCheckError> {
    match reply {
        Ok(v) if v.get("waitingprocesses").is_some_and(Value::is_i64) => Ok(()),
        Ok(_) => Err(ApiCheckError::NoStatistics),
        Err(e) => Err(ApiCheckError::Rpc(e)),
    }
}

/// Folds the API check into the HTTP probe: healthy only when both pass. `api` is `None`
/// when no API check is configured, or when it was skipped because the HTTP probe failed.
pub fn combine(http: ProbeOutcome, api: Option<Result<(), ApiCheckError>>) -> ProbeOutcome {
    match api {
        Some(Err(e)) if http.healthy => ProbeOutcome { healthy: false, error: Some(e.to_string()), ..http },
        _ => http,
    }
}

/// A configured API check. The key is never shown (`Debug` shows the key's ID).
#[derive(Clone, Debug)]
pub struct ApiCheck {
    /// Base URL of the server's API (the ColonyServer's effective endpoint).
    pub endpoint: String,
    pub colony: String,
    /// The member's identity, or why it could not be loaded (every check then fails with it).
    pub key: Result<rpc::Identity, String>,
}

impl PartialEq for ApiCheck {
    fn eq(&self, other: &Self) -> bool {
        let id = |k: &Result<rpc::Identity, String>| k.as_ref().map(|i| i.id.clone()).map_err(Clone::clone);
        self.endpoint == other.endpoint && self.colony == other.colony && id(&self.key) == id(&other.key)
    }
}

impl ApiCheck {
    /// One signed `getcolonystatsmsg` to the endpoint, all of it within `timeout`.
    pub async fn run(&self, http: reqwest::Client, timeout: Duration) -> Result<(), ApiCheckError> {
        self.fetch(http, timeout).await.and_then(|reply| judge(Ok(reply)))
    }

    /// The reply to one signed `getcolonystatsmsg`, within `timeout` (the SLO's statistics
    /// source reads its counts). `Ok` holds whatever the server answered, even an empty body.
    pub async fn fetch(&self, http: reqwest::Client, timeout: Duration) -> Result<Value, ApiCheckError> {
        let identity = self.key.as_ref().map_err(|e| ApiCheckError::Key(e.clone()))?;
        let client = rpc::Client::new(http, &self.endpoint);
        match tokio::time::timeout(timeout, client.call(&stats_message(&self.colony), identity)).await {
            Ok(reply) => reply.map_err(ApiCheckError::Rpc),
            Err(_) => Err(ApiCheckError::Timeout(timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(healthy: bool) -> ProbeOutcome {
        ProbeOutcome {
            healthy,
            status: Some(if healthy { 200 } else { 503 }),
            latency: Duration::from_millis(3),
            error: (!healthy).then(|| "HTTP 503".to_string()),
        }
    }

    #[test]
    fn statistics_pass_everything_else_fails() {
        let stats = json!({ "colonies": 1, "waitingprocesses": 0, "runningprocesses": 2 });
        assert_eq!(judge(Ok(stats)), Ok(()));
        assert_eq!(judge(Ok(Value::Null)), Err(ApiCheckError::NoStatistics), "empty body: no rights");
        assert_eq!(judge(Ok(json!({}))), Err(ApiCheckError::NoStatistics));
        assert_eq!(judge(Ok(json!({ "waitingprocesses": "many" }))), Err(ApiCheckError::NoStatistics));
        let refused = RpcError::Rejected { status: 403, message: "not a member".into() };
        assert_eq!(judge(Err(refused.clone())), Err(ApiCheckError::Rpc(refused)));
        assert_eq!(judge(Err(RpcError::Transport("timeout"))), Err(ApiCheckError::Rpc(RpcError::Transport("timeout"))));
    }

    #[test]
    fn a_failed_api_check_fails_a_healthy_probe() {
        let combined = combine(outcome(true), Some(Err(ApiCheckError::Timeout(Duration::from_secs(2)))));
        assert!(!combined.healthy);
        assert_eq!(combined.status, Some(200), "the HTTP status stays what /health answered");
        assert_eq!(combined.error.as_deref(), Some("API check timed out after 2s"));
    }

    #[test]
    fn a_passing_or_absent_api_check_keeps_the_http_verdict() {
        assert_eq!(combine(outcome(true), Some(Ok(()))), outcome(true));
        assert_eq!(combine(outcome(true), None), outcome(true));
        assert_eq!(combine(outcome(false), None), outcome(false));
        let failed = combine(outcome(false), Some(Err(ApiCheckError::NoStatistics)));
        assert_eq!(failed.error.as_deref(), Some("HTTP 503"), "the HTTP failure is the one reported");
    }

    #[test]
    fn equality_and_debug_show_the_key_id_only() {
        let hex = "32087782a0314486d499315072c5a3018b78c7c9dce3cb299f780741543478ae";
        let a = ApiCheck {
            endpoint: "http://127.0.0.1:50080".into(),
            colony: "zyeute".into(),
            key: rpc::Identity::from_private_hex(hex).map_err(|e| e.to_string()),
        };
        assert_eq!(a, a.clone());
        let other = ApiCheck { key: Err("Secret \"k\" not found".into()), ..a.clone() };
        assert_ne!(a, other);
        assert!(!format!("{a:?}").contains(hex), "no key material in Debug");
    }

    #[tokio::test]
    async fn a_hanging_api_is_a_timeout_and_a_missing_key_fails() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts and never answers, like a server whose connection pool is exhausted.
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                open.push(s);
            }
        });
        let hex = "32087782a0314486d499315072c5a3018b78c7c9dce3cb299f780741543478ae";
        let check = ApiCheck {
            endpoint: format!("http://127.0.0.1:{port}"),
            colony: "zyeute".into(),
            key: rpc::Identity::from_private_hex(hex).map_err(|e| e.to_string()),
        };
        let timeout = Duration::from_millis(200);
        assert_eq!(check.run(reqwest::Client::new(), timeout).await, Err(ApiCheckError::Timeout(timeout)));
        let no_key = ApiCheck { key: Err("Secret \"k\" not found".into()), ..check };
        assert!(matches!(no_key.run(reqwest::Client::new(), timeout).await, Err(ApiCheckError::Key(_))));
        held.abort();
    }
}
