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
}
