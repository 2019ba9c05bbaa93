//! Types and schema helpers shared by the four kinds: references, webhooks, pod overrides,
//! condition types, annotations and the rollout memory in status.
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Affinity, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::GoDuration;

/// API group of every kind.
pub const GROUP: &str = "colony.zyeute.io";
/// The only served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every kind.
pub const API_VERSION: &str = "colony.zyeute.io/v1alpha1";
/// `kubectl get colony` lists every kind.
pub const CATEGORY: &str = "colony";

// ---- condition types (kstatus: Ready always, Reconciling/Stalled only while true) ----
pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
/// ColonyServer: the health probe passes.
pub const HEALTHY: &str = "Healthy";
/// ColonyServer: the direct-processing fallback is on.
pub const FALLBACK_ACTIVE: &str = "FallbackActive";
/// ColonyServer: the last rollout was rolled back to the last known good image.
pub const ROLLED_BACK: &str = "RolledBack";
/// FinanceBee: the Deployment has its desired ready replicas.
pub const AVAILABLE: &str = "Available";
/// FinanceBee: unavailability was escalated (webhook / PagerDuty).
pub const ESCALATED: &str = "Escalated";
/// KeyRotation: a rotation is in progress.
pub const ROTATING: &str = "Rotating";
/// MaintenanceWindow: the window is open.
pub const ACTIVE: &str = "Active";
/// FinanceBee (and others with `spec.suspend`): reconciliation is suspended. Used as the `Ready`
/// reason, following Flux.
pub const SUSPENDED: &str = "Suspended";

// ---- annotations ----
/// On a ColonyServer: `on`, `off` or `auto` (absent = `auto`); overrides the fallback decision.
pub const FALLBACK_ANNOTATION: &str = "colony.zyeute.io/fallback";
/// On a KeyRotation: any new value forces one rotation (the handled value is kept in status).
pub const ROTATE_NOW_ANNOTATION: &str = "colony.zyeute.io/rotate-now";
/// On a MaintenanceWindow: any new value ends the current window early.
pub const END_NOW_ANNOTATION: &str = "colony.zyeute.io/end-now";

/// Value of the `colony.zyeute.io/fallback` annotation: `on`, `off` or `auto`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum FallbackOverride {
    /// Force the fallback on.
    On,
    /// Force the fallback off.
    Off,
    /// The operator decides (health, SLO, maintenance).
    #[default]
    Auto,
}

impl FallbackOverride {
    /// The annotation value, as written by users.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
            Self::Auto => "auto",
        }
    }

    /// Reads the override from an object's annotations: absent means `Auto`; an unknown value
    /// is an error (the controller reports it rather than guessing).
    pub fn from_annotations(annotations: Option<&BTreeMap<String, String>>) -> Result<Self, InvalidFallbackOverride> {
        match annotations.and_then(|a| a.get(FALLBACK_ANNOTATION)) {
            None => Ok(Self::Auto),
            Some(v) => v.parse(),
        }
    }
}

impl fmt::Display for FallbackOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The [`FALLBACK_ANNOTATION`] holds something other than `on`, `off` or `auto`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {FALLBACK_ANNOTATION} must be on, off or auto, not {0:?}")]
pub struct InvalidFallbackOverride(pub String);

impl FromStr for FallbackOverride {
    type Err = InvalidFallbackOverride;

    /// Case-insensitive, surrounding blanks ignored; an empty value means `auto`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" => Ok(Self::On),
            "off" | "false" => Ok(Self::Off),
            "auto" | "" => Ok(Self::Auto),
            _ => Err(InvalidFallbackOverride(s.to_string())),
        }
    }
}

// ---- references ----

/// RFC 1123 subdomain: the name of a Secret, ConfigMap or custom resource.
pub const DNS_SUBDOMAIN_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A key in a Secret or ConfigMap.
pub const CONFIG_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";
/// An `http://` or `https://` URL.
pub const HTTP_URL_PATTERN: &str = r"^https?://[^\s]+$";

/// A key in a Secret in the resource's namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
pub struct SecretKeySelector {
    /// Name of the Secret, in the namespace of this resource.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253), regex(pattern = CONFIG_KEY_PATTERN))]
    pub key: String,
}

impl SecretKeySelector {
    pub fn new(name: impl Into<String>, key: impl Into<String>) -> Self {
        Self { name: name.into(), key: key.into() }
    }
}

/// A reference to another object of the expected kind in the namespace of this resource.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
pub struct LocalObjectReference {
    /// Name of the referenced object, in the namespace of this resource.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
}

impl LocalObjectReference {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// A generic JSON webhook whose URL is kept in a Secret (URLs of chat webhooks are credentials).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// Secret key holding the webhook URL (http:// or https://). The operator POSTs a JSON
    /// document describing the event.
    pub url_secret_ref: SecretKeySelector,
    /// How many times a failed delivery is retried (0 = no retry).
    #[serde(default = "default_webhook_retries")]
    #[schemars(range(min = 0, max = 10))]
    pub retries: i32,
    /// Delay before the first retry; doubled for every further retry. At least `100ms`.
    #[serde(default = "default_webhook_backoff")]
    pub backoff: WebhookBackoff,
}

/// A webhook's retry backoff; at least 100ms: retries closer together than this hammer a
/// receiver that is down.
pub type WebhookBackoff = GoDuration<100>;

fn default_webhook_retries() -> i32 {
    3
}
fn default_webhook_backoff() -> WebhookBackoff {
    "5s".into()
}

impl WebhookSpec {
    pub fn new(url_secret_ref: SecretKeySelector) -> Self {
        Self { url_secret_ref, retries: default_webhook_retries(), backoff: default_webhook_backoff() }
    }

    /// The checks of the schema's CEL rules, for objects admitted before the rules existed;
    /// `path` is where this webhook sits (e.g. `spec.fallback.notify`).
    pub fn check(&self, path: &str) -> Result<(), String> {
        self.backoff.check(&format!("{path}.backoff")).map(drop)
    }
}

/// Scheduling overrides for the pods the operator creates.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Node labels the pods must match (pod `spec.nodeSelector`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pods (pod `spec.tolerations`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity rules of the pods (pod `spec.affinity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
}

// ---- schema helpers ----

// ---- selectors ----

/// Whether `selector` (None or empty: everything) matches `labels`, by kube's own label
/// selector semantics; a selector with an unknown operator (which the API server would
/// reject) matches nothing.
pub fn selector_matches(
    selector: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> bool {
    use kube::core::{Selector, SelectorExt};
    match selector {
        None => true,
        Some(s) => Selector::try_from(s.clone()).is_ok_and(|s| s.matches(labels)),
    }
}

// ---- names ----

/// Longest label value. The operator labels what it creates with the owner's name
/// (`app.kubernetes.io/instance`), so that name must fit in a label value.
pub const MAX_LABEL_VALUE_LENGTH: usize = 63;

/// RFC 1035 label: what a Service name must be (lowercase letters, digits and `-`, starting
/// with a letter, ending with a letter or digit, no dots), at most 63 characters.
pub const DNS_1035_LABEL_PATTERN: &str = r"^[a-z]([-a-z0-9]*[a-z0-9])?$";

/// CEL rule (at the root of a kind) keeping `metadata.name` usable as a label value.
pub fn name_fits_label_rule() -> String {
    format!("self.metadata.name.size() <= {MAX_LABEL_VALUE_LENGTH}")
}

/// CEL rule (at the root of a kind) requiring `metadata.name` to be an RFC 1035 label.
pub fn name_is_dns_1035_label_rule() -> String {
    format!(
        "self.metadata.name.size() <= {MAX_LABEL_VALUE_LENGTH} && self.metadata.name.matches('{DNS_1035_LABEL_PATTERN}')"
    )
}

/// The message of [`name_fits_label_rule`]: `used_for` says what the name labels.
pub fn name_fits_label_message(kind: &str, used_for: &str) -> String {
    format!(
        "a {kind} name must be at most {MAX_LABEL_VALUE_LENGTH} characters: it is the app.kubernetes.io/instance \
         label value of {used_for}"
    )
}

/// Controller-side twin of [`name_fits_label_rule`].
pub fn check_name_fits_label(kind: &str, name: &str, used_for: &str) -> Result<(), String> {
    if name.len() > MAX_LABEL_VALUE_LENGTH {
        return Err(format!("metadata.name ({} characters): {}", name.len(), name_fits_label_message(kind, used_for)));
    }
    Ok(())
}

/// Whether `name` matches [`DNS_1035_LABEL_PATTERN`] and is at most 63 characters (the
/// unit tests check this function against the pattern).
pub fn is_dns_1035_label(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LABEL_VALUE_LENGTH
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

/// An RFC 3339 time with an explicit offset (`2026-03-01T02:00:00Z`, `...+01:00`), as accepted
/// by CEL's `timestamp()` and chrono.
pub const RFC3339_PATTERN: &str =
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$";

/// Schema of an optional RFC 3339 timestamp written by users (`Option<DateTime<Utc>>`).
pub fn optional_timestamp_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": ["string", "null"],
        "format": "date-time",
        "pattern": RFC3339_PATTERN,
        "maxLength": 64,
    })
}

/// A five-field cron expression (minute hour day-of-month month day-of-week), e.g.
/// `0 3 1 * *`. Only the shape is checked here; the operator parses the fields.
pub const CRON_PATTERN: &str = r"^[0-9A-Za-z*?/,#-]+( +[0-9A-Za-z*?/,#-]+){4}$";

/// An IANA time zone name (`UTC`, `Europe/Paris`, `America/Argentina/Buenos_Aires`).
pub const TIME_ZONE_PATTERN: &str = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$";

pub(crate) fn default_time_zone() -> String {
    "UTC".into()
}

pub(crate) fn default_true() -> bool {
    true
}

/// What the rollback rules remember between reconciles, the same for every workload the
/// operator runs: embedded (flattened) in ColonyServer's and FinanceBee's status, so its fields
/// sit at the top of `status`. Read and written as a whole by `runtime::rollout`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Image the workload's Deployment runs: `spec.image`, or the last known good image after
    /// a rollback (on a ColonyServer, managed servers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_image: Option<String>,
    /// Last image that stayed available (and healthy, where probed) for
    /// `rollback.stableAfter`; the rollback target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_known_good_image: Option<String>,
    /// Images that were rolled back; the operator does not deploy them again until
    /// `spec.image` changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_images: Vec<String>,
    /// The last images deployed, oldest first and newest last (at most
    /// `rollback.historyLimit`), with when and how each rollout ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<ImageHistoryEntry>,
}

/// One deployed image.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageHistoryEntry {
    /// The image.
    pub image: String,
    /// When the operator deployed it.
    #[schemars(with = "Time")]
    pub deployed_at: DateTime<Utc>,
    /// What became of it.
    pub outcome: RolloutOutcome,
    /// Why it was rolled back (`RolledBack` only). The RolledBack condition and Event show it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<RolloutFailure>,
}

/// Why a rollout failed.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RolloutFailure {
    /// The Deployment passed `rollback.progressDeadline` without becoming available.
    ProgressDeadlineExceeded,
    /// Its pods crash-looped.
    CrashLoopBackOff,
    /// The server's health check failed within `rollback.progressDeadline` of the rollout.
    HealthCheckFailed,
}

impl RolloutFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutFailure::ProgressDeadlineExceeded => "ProgressDeadlineExceeded",
            RolloutFailure::CrashLoopBackOff => "CrashLoopBackOff",
            RolloutFailure::HealthCheckFailed => "HealthCheckFailed",
        }
    }
}

impl std::fmt::Display for RolloutFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of a deployed image.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RolloutOutcome {
    /// Still within `progressDeadline` / `stableAfter`.
    Progressing,
    /// Stayed healthy for `stableAfter`; became the last known good image.
    Stable,
    /// Did not become healthy and was rolled back.
    RolledBack,
    /// Replaced by a newer image before it was judged.
    Superseded,
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    #[test]
    fn fallback_override_parses() {
        assert_eq!("on".parse(), Ok(FallbackOverride::On));
        assert_eq!(" OFF ".parse(), Ok(FallbackOverride::Off));
        assert_eq!("auto".parse(), Ok(FallbackOverride::Auto));
        assert_eq!("".parse(), Ok(FallbackOverride::Auto));
        assert_eq!("true".parse(), Ok(FallbackOverride::On));
        assert_eq!("false".parse(), Ok(FallbackOverride::Off));
        assert_eq!("maybe".parse::<FallbackOverride>(), Err(InvalidFallbackOverride("maybe".into())));
        for o in [FallbackOverride::On, FallbackOverride::Off, FallbackOverride::Auto] {
            assert_eq!(o.as_str().parse(), Ok(o));
            assert_eq!(serde_json::to_value(o).unwrap(), serde_json::json!(o.as_str()));
        }
    }

    #[test]
    fn dns_1035_label_check_agrees_with_the_pattern() {
        let pattern = regex::Regex::new(DNS_1035_LABEL_PATTERN).unwrap();
        let long = "a".repeat(63);
        let too_long = "a".repeat(64);
        for name in [
            "a",
            "colonies",
            "colonies-1",
            "a-b-c",
            "z9",
            "",
            "1colonies",
            "-a",
            "a-",
            "colonies.prod",
            "Colonies",
            "col_onies",
            "a--b",
            "é",
            &long,
            &too_long,
        ] {
            let want = pattern.is_match(name) && name.len() <= MAX_LABEL_VALUE_LENGTH;
            assert_eq!(is_dns_1035_label(name), want, "{name:?}");
        }
        assert!(is_dns_1035_label(&long) && !is_dns_1035_label(&too_long));
        assert!(name_is_dns_1035_label_rule().contains(DNS_1035_LABEL_PATTERN));
    }

    #[test]
    fn name_length_check_names_the_rule() {
        assert_eq!(check_name_fits_label("FinanceBee", &"b".repeat(63), "its pods"), Ok(()));
        let e = check_name_fits_label("FinanceBee", &"b".repeat(64), "its pods").unwrap_err();
        assert!(
            e.contains("64 characters") && e.contains("at most 63") && e.contains("label value of its pods"),
            "{e}"
        );
    }

    #[test]
    fn fallback_override_from_annotations() {
        assert_eq!(FallbackOverride::from_annotations(None), Ok(FallbackOverride::Auto));
        let mut a = BTreeMap::new();
        assert_eq!(FallbackOverride::from_annotations(Some(&a)), Ok(FallbackOverride::Auto));
        a.insert(FALLBACK_ANNOTATION.to_string(), "on".to_string());
        assert_eq!(FallbackOverride::from_annotations(Some(&a)), Ok(FallbackOverride::On));
        a.insert(FALLBACK_ANNOTATION.to_string(), "sideways".to_string());
        let err = FallbackOverride::from_annotations(Some(&a)).unwrap_err();
        assert!(err.to_string().contains("sideways"));
    }

    #[test]
    fn selector_semantics() {
        let labels = BTreeMap::from([("tier".to_string(), "finance".to_string())]);
        assert!(selector_matches(None, &labels));
        assert!(selector_matches(Some(&LabelSelector::default()), &labels), "empty selects everything");
        let by_label = LabelSelector {
            match_labels: Some(BTreeMap::from([("tier".into(), "finance".into())])),
            ..Default::default()
        };
        assert!(selector_matches(Some(&by_label), &labels));
        assert!(!selector_matches(Some(&by_label), &BTreeMap::new()));
        let expr = |op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            ..Default::default()
        };
        assert!(selector_matches(Some(&expr("In", &["finance", "x"])), &labels));
        assert!(!selector_matches(Some(&expr("NotIn", &["finance"])), &labels));
        assert!(selector_matches(Some(&expr("Exists", &[])), &labels));
        assert!(!selector_matches(Some(&expr("DoesNotExist", &[])), &labels));
        assert!(!selector_matches(Some(&expr("Bogus", &[])), &labels));
    }
}
