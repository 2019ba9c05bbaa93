//! FinanceBee: the Finance Bee executor (a pycolonies worker) as a Deployment, with restarts,
//! escalation when it stays down, and suspension.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::GoDuration;
use super::common::{
    HTTP_URL_PATTERN, LocalObjectReference, PodOverrides, RolloutStatus, SecretKeySelector, WebhookSpec,
    check_name_fits_label, name_fits_label_message, name_fits_label_rule,
};

/// CPU limit applied when `spec.resources` is unset (the systemd unit's share).
pub const DEFAULT_CPU_LIMIT: &str = "500m";
/// Memory limit applied when `spec.resources` is unset (the systemd unit's `MemoryMax`).
pub const DEFAULT_MEMORY_LIMIT: &str = "512Mi";
/// PagerDuty Events API v2 endpoint used when `escalation.pagerDuty.url` is unset.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// Desired state of a Finance Bee: the executor Deployment, its ColonyOS identity, how the
/// operator restarts it and whom it pages when it stays down.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "colony.zyeute.io",
    version = "v1alpha1",
    kind = "FinanceBee",
    namespaced,
    status = "FinanceBeeStatus",
    shortname = "fb",
    category = "colony",
    derive = "PartialEq",
    doc = "The Finance Bee: a ColonyOS executor run as a Deployment, restarted by the operator when it crashes or hangs, escalated when it stays unavailable.",
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "description": "Whether the bee is reconciled and available"}"#,
    printcolumn = r#"{"name": "Available", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Available\")].status", "description": "Whether the bee has its ready replicas"}"#,
    printcolumn = r#"{"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas", "description": "Ready replicas"}"#,
    printcolumn = r#"{"name": "Image", "type": "string", "jsonPath": ".status.currentImage", "description": "Image currently deployed"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    validation = Rule::new(name_fits_label_rule()).message(name_fits_label_message("FinanceBee", NAME_USED_FOR).as_str()),
)]
#[serde(rename_all = "camelCase")]
pub struct FinanceBeeSpec {
    /// Container image of the bee.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// Number of bee replicas (each is one executor process).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Compute resources of the bee container. Default: limits of 500m CPU and 512Mi memory
    /// (the systemd unit's limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment variables (e.g. `SUPABASE_URL`, `STRIPE_SECRET_KEY` from Secrets).
    /// The operator sets the `COLONIES_*`, `EXECUTOR_*` and `POLL_TIMEOUT` variables itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Whole Secrets or ConfigMaps exposed as environment variables (e.g. the Supabase and
    /// Stripe Secrets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,
    /// Scheduling overrides of the bee pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodOverrides>,
    /// The ColonyServer this bee works for (same namespace); its endpoint becomes
    /// `COLONIES_SERVER_HOST`, and its fallback and maintenance stop remediation.
    pub colony_server_ref: LocalObjectReference,
    /// Name of the colony the executor belongs to (`COLONIES_COLONY_NAME`).
    #[schemars(length(min = 1, max = 253))]
    pub colony_name: String,
    /// Executor name (`EXECUTOR_NAME`). Default: the name of this resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub executor_name: Option<String>,
    /// Executor type (`EXECUTOR_TYPE`); processes are assigned by type.
    #[serde(default = "default_executor_type")]
    #[schemars(length(min = 1, max = 253))]
    pub executor_type: String,
    /// Secret key holding the executor's private key (64 hex characters, secp256k1;
    /// `COLONIES_EXECUTOR_PRVKEY`).
    pub executor_key_secret_ref: SecretKeySelector,
    /// Long-poll timeout of process assignment (Go duration; `POLL_TIMEOUT` in seconds). At
    /// least `1s`.
    #[serde(default = "default_poll_timeout")]
    pub poll_timeout: PollTimeout,
    /// How the operator restarts a crashing or stuck bee.
    #[serde(default)]
    pub restart: RestartSpec,
    /// Whom to notify when the bee stays unavailable.
    #[serde(default)]
    pub escalation: EscalationSpec,
    /// Automatic rollback of a bad bee image to the last known good one, with the same rules
    /// as a ColonyServer's (a bee has no health probe: availability and crash loops decide).
    #[serde(default)]
    pub rollback: super::colonyserver::RollbackSpec,
    /// Scale the bee to zero and stop all remediation (reported as Suspended).
    #[serde(default)]
    pub suspend: bool,
}

/// What a FinanceBee's name labels (so it must fit in a label value).
const NAME_USED_FOR: &str = "the bee's Deployment and pods";

/// Shortest `pollTimeout`: `POLL_TIMEOUT` is whole seconds, and 0 makes the executor spin.
pub type PollTimeout = GoDuration<1_000>;

fn default_replicas() -> i32 {
    1
}
fn default_executor_type() -> String {
    "finance-worker".into()
}
fn default_poll_timeout() -> PollTimeout {
    "10s".into()
}

impl Default for FinanceBeeSpec {
    fn default() -> Self {
        Self {
            image: String::new(),
            replicas: default_replicas(),
            resources: None,
            env: Vec::new(),
            env_from: Vec::new(),
            pod_template: None,
            colony_server_ref: LocalObjectReference::default(),
            colony_name: String::new(),
            executor_name: None,
            executor_type: default_executor_type(),
            executor_key_secret_ref: SecretKeySelector::default(),
            poll_timeout: default_poll_timeout(),
            restart: RestartSpec::default(),
            escalation: EscalationSpec::default(),
            rollback: Default::default(),
            suspend: false,
        }
    }
}

impl FinanceBeeSpec {
    /// The checks of the schema's CEL rules that a value could have slipped past (objects
    /// admitted before a rule existed): the bee's name, and every duration's minimum.
    pub fn check(&self, name: &str) -> Result<(), String> {
        check_name_fits_label("FinanceBee", name, NAME_USED_FOR)?;
        self.poll_timeout.check("spec.pollTimeout")?;
        self.restart.window.check("spec.restart.window")?;
        self.restart.stuck_after.check("spec.restart.stuckAfter")?;
        self.escalation.after.check("spec.escalation.after")?;
        if let Some(webhook) = &self.escalation.webhook {
            webhook.check("spec.escalation.webhook")?;
        }
        self.rollback.check("spec.rollback")
    }

    /// `executorName`, or the resource's name.
    pub fn effective_executor_name(&self, name: &str) -> String {
        self.executor_name.clone().unwrap_or_else(|| name.to_string())
    }

    /// `resources`, or limits of 500m CPU and 512Mi memory.
    pub fn effective_resources(&self) -> ResourceRequirements {
        self.resources.clone().unwrap_or_else(|| ResourceRequirements {
            limits: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity(DEFAULT_CPU_LIMIT.to_string())),
                ("memory".to_string(), Quantity(DEFAULT_MEMORY_LIMIT.to_string())),
            ])),
            ..Default::default()
        })
    }

    /// Replicas the Deployment should have: 0 while suspended.
    pub fn effective_replicas(&self) -> i32 {
        if self.suspend { 0 } else { self.replicas }
    }
}

/// Restarts by the operator (deleting a crashing or stuck pod), rate-limited.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestartSpec {
    /// Most restarts by the operator within `window`; then it stops and escalates.
    #[serde(default = "default_max_restarts")]
    #[schemars(range(min = 0, max = 100))]
    pub max_restarts: i32,
    /// The window `maxRestarts` applies to (Go duration). At least `1m`.
    #[serde(default = "default_restart_window")]
    pub window: RestartWindow,
    /// Container restarts (CrashLoopBackOff) after which the operator restarts the pod.
    #[serde(default = "default_crash_loop_threshold")]
    #[schemars(range(min = 1, max = 1000))]
    pub crash_loop_threshold: i32,
    /// Time a pod may stay pending or not ready before the operator restarts it (Go duration).
    /// At least `1s`.
    #[serde(default = "default_stuck_after")]
    pub stuck_after: StuckAfter,
}

/// Shortest `restart.window`: `maxRestarts` per window is the budget that stops a restart
/// loop; a window of seconds renews it faster than a pod can start.
pub type RestartWindow = GoDuration<60_000>;
/// Shortest `restart.stuckAfter`: a pod is never ready the instant it is created.
pub type StuckAfter = GoDuration<1_000>;

fn default_max_restarts() -> i32 {
    3
}
fn default_restart_window() -> RestartWindow {
    "30m".into()
}
fn default_crash_loop_threshold() -> i32 {
    5
}
fn default_stuck_after() -> StuckAfter {
    "5m".into()
}

impl Default for RestartSpec {
    fn default() -> Self {
        Self {
            max_restarts: default_max_restarts(),
            window: default_restart_window(),
            crash_loop_threshold: default_crash_loop_threshold(),
            stuck_after: default_stuck_after(),
        }
    }
}

/// Escalation when the bee stays unavailable (the runbook: page on-call after 15 minutes).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EscalationSpec {
    /// Unavailability that triggers the escalation (Go duration). At least `1s`.
    #[serde(default = "default_escalate_after")]
    pub after: EscalateAfter,
    /// Generic JSON webhook notified on trigger and on resolve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
    /// PagerDuty incident (Events API v2), deduplicated by the resource's UID and resolved on
    /// recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pager_duty: Option<PagerDutySpec>,
}

/// Shortest `escalation.after`: zero pages on-call for every blip of unavailability.
pub type EscalateAfter = GoDuration<1_000>;

fn default_escalate_after() -> EscalateAfter {
    "15m".into()
}

impl Default for EscalationSpec {
    fn default() -> Self {
        Self { after: default_escalate_after(), webhook: None, pager_duty: None }
    }
}

/// PagerDuty Events API v2 target.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PagerDutySpec {
    /// Secret key holding the integration's routing key.
    pub routing_key_secret_ref: SecretKeySelector,
    /// Severity of the event.
    #[serde(default)]
    pub severity: PagerDutySeverity,
    /// Events API endpoint. Default: `https://events.pagerduty.com/v2/enqueue` (override for a
    /// regional service or a test receiver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = HTTP_URL_PATTERN))]
    pub url: Option<String>,
}

impl PagerDutySpec {
    /// `url`, or the public Events API v2 endpoint.
    pub fn effective_url(&self) -> &str {
        self.url.as_deref().unwrap_or(PAGERDUTY_EVENTS_URL)
    }
}

/// PagerDuty event severity.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum PagerDutySeverity {
    #[default]
    Critical,
    Error,
    Warning,
    Info,
}

/// Observed state of a FinanceBee, written by the operator on transitions only.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FinanceBeeStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Available, Escalated, and Reconciling/Stalled while true.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Ready replicas of the bee Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// When the bee became unavailable; unset while it is available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Time>")]
    pub unavailable_since: Option<DateTime<Utc>>,
    /// Restarts by the operator in the current window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<RestartStatus>,
    /// State of the escalation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<EscalationStatus>,
    /// The rollout memory: `currentImage`, `lastKnownGoodImage`, `failedImages`, `history`.
    #[serde(flatten)]
    pub rollout: RolloutStatus,
}

/// Restarts by the operator.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RestartStatus {
    /// Restarts in the window that started at `windowStart`.
    #[serde(default)]
    pub count: i32,
    /// Start of the current restart window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Time>")]
    pub window_start: Option<DateTime<Utc>>,
    /// The most recent restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<RestartRecord>,
}

/// One restart by the operator.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestartRecord {
    /// The pod that was deleted.
    pub pod: String,
    /// Why (e.g. `CrashLoopBackOff`, `Stuck`).
    pub reason: String,
    /// When.
    #[schemars(with = "Time")]
    pub time: DateTime<Utc>,
}

/// State of the escalation.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EscalationStatus {
    /// Triggered while the bee is unavailable beyond `escalation.after`; Resolved after it
    /// recovered.
    pub state: EscalationState,
    /// When the state was entered.
    #[schemars(with = "Time")]
    pub since: DateTime<Utc>,
    /// Where the notification of this state stands: the record a restarted operator reads, so
    /// that a notification recorded as sent is never sent again. Absent in status written
    /// before the field existed (the Escalated condition's reason is read once instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<EscalationDelivery>,
}

impl EscalationStatus {
    /// A state entered at `since`, its notification not recorded yet.
    pub fn new(state: EscalationState, since: DateTime<Utc>) -> Self {
        Self { state, since, delivery: None }
    }
}

/// Where the notification of an escalation state stands.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EscalationDelivery {
    /// `Pending` (not sent yet, or sent and not recorded before a restart), `Sent` or `Failed`.
    pub result: DeliveryResult,
    /// Who was notified, or which target failed and why (never a URL or a key).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Result of the notification of an escalation state.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryResult {
    Pending,
    Sent,
    Failed,
}

/// State of an escalation.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EscalationState {
    Triggered,
    Resolved,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RolloutOutcome;

    const MINIMAL: &str = "image: bee:1\ncolonyServerRef: {name: colonies}\ncolonyName: zyeute\n\
                           executorKeySecretRef: {name: bee-key, key: prvkey}\n";

    #[test]
    fn minimal_yaml_gets_the_contract_defaults() {
        let spec: FinanceBeeSpec = serde_yaml::from_str(MINIMAL).unwrap();
        assert_eq!(spec.replicas, 1);
        assert_eq!(spec.executor_type, "finance-worker");
        assert_eq!(spec.poll_timeout, "10s");
        assert_eq!(spec.restart, RestartSpec::default());
        assert_eq!((spec.restart.max_restarts, spec.restart.window.as_str()), (3, "30m"));
        assert_eq!(spec.restart.crash_loop_threshold, 5);
        assert_eq!(spec.restart.stuck_after, "5m");
        assert_eq!(spec.escalation.after, "15m");
        assert!(spec.escalation.webhook.is_none() && spec.escalation.pager_duty.is_none());
        assert!(!spec.suspend);
        assert_eq!(spec.colony_server_ref.name, "colonies");
        assert_eq!(spec.executor_key_secret_ref, SecretKeySelector::new("bee-key", "prvkey"));
        let expected = FinanceBeeSpec {
            image: "bee:1".into(),
            colony_server_ref: LocalObjectReference::new("colonies"),
            colony_name: "zyeute".into(),
            executor_key_secret_ref: SecretKeySelector::new("bee-key", "prvkey"),
            ..Default::default()
        };
        assert_eq!(spec, expected);
    }

    #[test]
    fn required_fields_are_required() {
        for field in ["image", "colonyServerRef", "colonyName", "executorKeySecretRef"] {
            let yaml: String = MINIMAL.lines().filter(|l| !l.starts_with(field)).map(|l| format!("{l}\n")).collect();
            let err = serde_yaml::from_str::<FinanceBeeSpec>(&yaml).unwrap_err();
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn effective_values() {
        let mut spec: FinanceBeeSpec = serde_yaml::from_str(MINIMAL).unwrap();
        assert_eq!(spec.effective_executor_name("finance-bee"), "finance-bee");
        spec.executor_name = Some("bee-1".into());
        assert_eq!(spec.effective_executor_name("finance-bee"), "bee-1");

        let limits = spec.effective_resources().limits.unwrap();
        assert_eq!(limits["cpu"], Quantity("500m".into()));
        assert_eq!(limits["memory"], Quantity("512Mi".into()));
        let own = ResourceRequirements {
            requests: Some(BTreeMap::from([("cpu".into(), Quantity("1".into()))])),
            ..Default::default()
        };
        spec.resources = Some(own.clone());
        assert_eq!(spec.effective_resources(), own);

        assert_eq!(spec.effective_replicas(), 1);
        spec.suspend = true;
        assert_eq!(spec.effective_replicas(), 0);
    }

    #[test]
    fn pager_duty_defaults() {
        let pd: PagerDutySpec = serde_yaml::from_str("routingKeySecretRef: {name: pd, key: routing-key}\n").unwrap();
        assert_eq!(pd.severity, PagerDutySeverity::Critical);
        assert_eq!(pd.effective_url(), PAGERDUTY_EVENTS_URL);
        let pd = PagerDutySpec { url: Some("http://receiver:8080/v2/enqueue".into()), ..pd };
        assert_eq!(pd.effective_url(), "http://receiver:8080/v2/enqueue");
        let webhook: WebhookSpec = serde_yaml::from_str("urlSecretRef: {name: hook, key: url}\n").unwrap();
        assert_eq!(webhook, WebhookSpec::new(SecretKeySelector::new("hook", "url")));
        assert_eq!((webhook.retries, webhook.backoff.as_str()), (3, "5s"));
    }

    #[test]
    fn status_serializes_the_contract_names() {
        let t = DateTime::parse_from_rfc3339("2026-03-01T02:00:00+01:00").unwrap().with_timezone(&Utc);
        let status = FinanceBeeStatus {
            ready_replicas: Some(0),
            unavailable_since: Some(t),
            restarts: Some(RestartStatus {
                count: 2,
                window_start: Some(t),
                last: Some(RestartRecord { pod: "bee-0".into(), reason: "CrashLoopBackOff".into(), time: t }),
            }),
            escalation: Some(EscalationStatus::new(EscalationState::Triggered, t)),
            ..Default::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["unavailableSince"], "2026-03-01T01:00:00Z");
        assert_eq!(json["restarts"]["last"]["pod"], "bee-0");
        assert_eq!(json["escalation"]["state"], "Triggered");
        assert_eq!(serde_json::from_value::<FinanceBeeStatus>(json).unwrap(), status);
    }

    /// A status as the operator wrote it before the rollout fields became one embedded
    /// `RolloutStatus`: every field set, in that version's order.
    const STORED_STATUS: &str = r#"{
        "observedGeneration": 7,
        "conditions": [{"type": "Ready", "status": "True", "observedGeneration": 7,
            "lastTransitionTime": "2026-03-01T03:00:00Z", "reason": "Available", "message": "1/1 replicas ready"}],
        "readyReplicas": 1,
        "restarts": {"count": 1, "windowStart": "2026-03-01T01:00:00Z",
            "last": {"pod": "bee-0", "reason": "CrashLoopBackOff", "time": "2026-03-01T01:05:00Z"}},
        "escalation": {"state": "Resolved", "since": "2026-03-01T02:30:00Z",
            "delivery": {"result": "Sent", "detail": "webhook"}},
        "currentImage": "example.invalid/finance-bee:1",
        "lastKnownGoodImage": "example.invalid/finance-bee:1",
        "failedImages": ["example.invalid/finance-bee:2-bad"],
        "history": [
            {"image": "example.invalid/finance-bee:1", "deployedAt": "2026-03-01T00:00:00Z", "outcome": "Stable"},
            {"image": "example.invalid/finance-bee:2-bad", "deployedAt": "2026-03-01T02:00:00Z", "outcome": "RolledBack"}
        ]
    }"#;

    #[test]
    fn a_stored_status_reads_into_the_embedded_rollout_status_and_writes_back_the_same() {
        let stored: serde_json::Value = serde_json::from_str(STORED_STATUS).unwrap();
        let status: FinanceBeeStatus = serde_json::from_value(stored.clone()).unwrap();
        let r = &status.rollout;
        assert_eq!(r.current_image.as_deref(), Some("example.invalid/finance-bee:1"));
        assert_eq!(r.last_known_good_image.as_deref(), Some("example.invalid/finance-bee:1"));
        assert_eq!(r.failed_images, ["example.invalid/finance-bee:2-bad"]);
        let history: Vec<_> = r.history.iter().map(|e| (e.image.as_str(), e.outcome)).collect();
        assert_eq!(
            history,
            [
                ("example.invalid/finance-bee:1", RolloutOutcome::Stable),
                ("example.invalid/finance-bee:2-bad", RolloutOutcome::RolledBack),
            ],
            "read in stored order: oldest first, newest last"
        );
        assert_eq!(status.ready_replicas, Some(1));
        assert_eq!(status.restarts.as_ref().map(|r| r.count), Some(1));
        assert_eq!(status.escalation.as_ref().map(|e| e.state), Some(EscalationState::Resolved));
        assert!(status.escalation.as_ref().is_some_and(|e| e.delivery.is_some()));
        assert_eq!(serde_json::to_value(&status).unwrap(), stored, "written back field for field");
    }
}
