//! The error type every controller returns. Each variant has a short, stable label used in
//! metrics and Events; messages never carry secret values.
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a request.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The spec is invalid in a way the schema cannot express; retrying will not help.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// A referenced object (Secret, ColonyServer, ...) does not exist or lacks a key.
    #[error("missing reference: {0}")]
    MissingReference(String),
    /// A request to something outside Kubernetes (a webhook, a ColonyOS server) failed.
    #[error("external call failed: {0}")]
    External(String),
    /// Serialising an object failed: a bug, reported rather than hidden.
    #[error("serialization: {0}")]
    Serialization(#[from] serde_json::Error),
    /// The leader lease was not renewed in time: the reconcile was cancelled.
    #[error("not the leader: reconcile cancelled")]
    NotLeader,
    /// A shared cache the decision needs has not received its first list yet.
    #[error("cache not synced: {0}")]
    CacheNotSynced(&'static str),
}

impl Error {
    /// Short label for metrics (`error` label) and Event reasons.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::MissingReference(_) => "missing_reference",
            Error::External(_) => "external",
            Error::Serialization(_) => "serialization",
            Error::NotLeader => "not_leader",
            Error::CacheNotSynced(_) => "cache_not_synced",
        }
    }

    /// Event reason in PascalCase.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeError",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::MissingReference(_) => "MissingReference",
            Error::External(_) => "ExternalCallFailed",
            Error::Serialization(_) => "SerializationError",
            Error::NotLeader => "NotLeader",
            Error::CacheNotSynced(_) => "CacheNotSynced",
        }
    }

    /// The error in one line for status: an API server's refusal as its own message and
    /// reason (not the whole response), anything else as displayed.
    pub fn brief(&self) -> String {
        match self {
            Error::Kube(kube::Error::Api(s)) => format!("{} ({} {})", s.message, s.code, s.reason),
            e => e.to_string(),
        }
    }

    /// The API server refused the request for what it asked (forbidden by a quota or a
    /// policy, invalid, not found): asking again will not help until a human changes
    /// something. A conflict or throttling is not a refusal; neither is a server error.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if (400..500).contains(&s.code) && s.code != 409 && s.code != 429)
    }

    /// An invalid spec waits for the user to change it; everything else is transient.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Error::InvalidSpec(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Requeue delay after the `attempt`-th consecutive failure: 5s doubling, capped at 5 minutes.
pub fn backoff(attempt: u32) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << attempt.min(6));
    Duration::from_secs(secs.min(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::from_secs(5));
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(40));
        assert_eq!(backoff(6), Duration::from_secs(300));
        assert_eq!(backoff(60), Duration::from_secs(300));
    }

    #[test]
    fn labels_are_distinct() {
        let errors = [
            Error::InvalidSpec("x".into()),
            Error::MissingReference("x".into()),
            Error::External("x".into()),
            Error::Serialization(serde_json::from_str::<u8>("x").unwrap_err()),
        ];
        let mut labels: Vec<_> = errors.iter().map(Error::label).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), errors.len());
        assert!(errors[0].is_permanent());
        assert!(!errors[2].is_permanent());
    }

    fn api_error(code: u16, reason: &str, message: &str) -> Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": code, "reason": reason, "message": message,
        }))
        .unwrap();
        Error::Kube(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn refusals_are_the_api_servers_4xx_other_than_conflict_and_throttling() {
        for (code, reason) in [(400, "BadRequest"), (403, "Forbidden"), (404, "NotFound"), (422, "Invalid")] {
            assert!(api_error(code, reason, "m").is_refusal(), "{code}");
        }
        for (code, reason) in [(409, "Conflict"), (429, "TooManyRequests"), (500, "InternalError"), (504, "Timeout")] {
            assert!(!api_error(code, reason, "m").is_refusal(), "{code}");
        }
        assert!(!Error::InvalidSpec("x".into()).is_refusal());
        assert!(!Error::External("x".into()).is_refusal());
    }

    #[test]
    fn brief_is_the_api_servers_message_in_one_line() {
        let e = api_error(403, "Forbidden", "deployments.apps \"b\" is forbidden: exceeded quota: q");
        assert_eq!(e.brief(), "deployments.apps \"b\" is forbidden: exceeded quota: q (403 Forbidden)");
        assert_eq!(Error::External("hook down".into()).brief(), "external call failed: hook down");
    }
}
