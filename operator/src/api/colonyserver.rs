//! ColonyServer: a ColonyOS server (colonies-server) that the operator deploys or only watches,
//! its health probe, SLOs, the direct-processing fallback and automatic rollback.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::GoDuration;
use super::common::{
    CONFIG_KEY_PATTERN, DNS_SUBDOMAIN_PATTERN, FallbackOverride, HTTP_URL_PATTERN, PodOverrides, RolloutStatus,
    SecretKeySelector, WebhookSpec, check_name_fits_label, default_true, is_dns_1035_label, name_fits_label_message,
    name_fits_label_rule, name_is_dns_1035_label_rule,
};

/// Default port of colonies-server (`COLONIES_SERVER_HTTP_PORT`).
pub const DEFAULT_SERVER_PORT: i32 = 50080;
/// Default PostgreSQL port.
pub const DEFAULT_DATABASE_PORT: i32 = 5432;

/// What a ColonyServer's name labels (so it must fit in a label value).
const NAME_USED_FOR: &str = "the server's Deployment, pods and fallback ConfigMap";
/// Why a managed ColonyServer's name is an RFC 1035 label.
const MANAGED_NAME_MESSAGE: &str = "a managed ColonyServer name must be a DNS-1035 label (lowercase letters, \
     digits and '-', starting with a letter, no dots): it names the server's Service";

impl ColonyServerSpec {
    /// The checks of the schema's CEL rules that a value could have slipped past (objects
    /// admitted before a rule existed): the server's name, and every duration's minimum.
    pub fn check(&self, name: &str) -> Result<(), String> {
        check_name_fits_label("ColonyServer", name, NAME_USED_FOR)?;
        if self.managed && !is_dns_1035_label(name) {
            return Err(format!("metadata.name {name:?}: {MANAGED_NAME_MESSAGE}"));
        }
        self.health.check()?;
        if let Some(slo) = &self.slo {
            slo.check()?;
        }
        self.fallback.check()?;
        self.rollback.check("spec.rollback")
    }
}

/// Desired state of a ColonyOS server: how to run it (or where it runs), how to probe it, and
/// when to switch the Finance Bee's consumers to direct processing.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "colony.zyeute.io",
    version = "v1alpha1",
    kind = "ColonyServer",
    namespaced,
    status = "ColonyServerStatus",
    shortname = "cs",
    category = "colony",
    derive = "PartialEq",
    doc = "A ColonyOS server (colonies-server), deployed by the operator or monitored at an endpoint, with health probing, SLOs, the direct-processing fallback and automatic rollback.",
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "description": "Whether the server is reconciled and healthy"}"#,
    printcolumn = r#"{"name": "Healthy", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Healthy\")].status", "description": "Whether the health probe passes"}"#,
    printcolumn = r#"{"name": "Fallback", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"FallbackActive\")].status", "description": "Whether the direct-processing fallback is on"}"#,
    printcolumn = r#"{"name": "Image", "type": "string", "jsonPath": ".status.currentImage", "description": "Image currently deployed (differs from spec.image after a rollback)"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    validation = Rule::new(name_fits_label_rule()).message(name_fits_label_message("ColonyServer", NAME_USED_FOR).as_str()),
    validation = Rule::new(format!("!self.spec.managed || {}", name_is_dns_1035_label_rule())).message(MANAGED_NAME_MESSAGE),
)]
#[x_kube(
    validation = Rule::new("!self.managed || has(self.image)").message("spec.image is required when spec.managed is true").field_path(".image").reason(Reason::FieldValueRequired),
    validation = Rule::new("!self.managed || has(self.database)").message("spec.database is required when spec.managed is true").field_path(".database").reason(Reason::FieldValueRequired),
    validation = Rule::new("!self.managed || has(self.serverKeySecretRef)").message("spec.serverKeySecretRef is required when spec.managed is true").field_path(".serverKeySecretRef").reason(Reason::FieldValueRequired),
    validation = Rule::new("self.managed || has(self.endpoint)").message("spec.endpoint is required when spec.managed is false").field_path(".endpoint").reason(Reason::FieldValueRequired),
    validation = Rule::new("!self.managed || !self.tls.enabled || has(self.tls.secretName)").message("spec.tls.secretName is required when spec.tls.enabled is true").field_path(".tls.secretName").reason(Reason::FieldValueRequired),
)]
#[serde(rename_all = "camelCase")]
pub struct ColonyServerSpec {
    /// Whether the operator runs the server (Deployment and Service). false: the server runs
    /// elsewhere; the operator only probes it at `endpoint` and manages its fallback.
    #[serde(default = "default_true")]
    pub managed: bool,
    /// Server image, e.g. `colonyos/colonies:v1.9.12`. Required when `managed` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// Number of server replicas (managed only).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Compute resources of the server container (managed only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment variables of the server container (managed only); the operator sets
    /// the `COLONIES_*` variables itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Scheduling overrides of the server pods (managed only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodOverrides>,
    /// HTTP port of the server (`COLONIES_SERVER_HTTP_PORT`) and of its Service.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Base URL of the server's HTTP API (http:// or https://). Required when `managed` is
    /// false. Default: `http://<name>.<namespace>.svc:<port>` (https with `tls.enabled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = HTTP_URL_PATTERN))]
    pub endpoint: Option<String>,
    /// PostgreSQL database of the server (managed only; required when `managed` is true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseSpec>,
    /// Secret key holding the server owner's private key (64 hex characters, secp256k1).
    /// Required when `managed` is true; also used to sign server-level statistics calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_key_secret_ref: Option<SecretKeySelector>,
    /// TLS of the server's HTTP API (managed only; `caRef` applies to every server).
    #[serde(default)]
    pub tls: TlsSpec,
    /// Health probing of the server.
    #[serde(default)]
    pub health: HealthSpec,
    /// Service-level objectives; a breach lasting `for` turns the fallback on. Unset: no SLO
    /// checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<SloSpec>,
    /// The direct-processing fallback (`USE_COLONY_OS=false`) published in a ConfigMap.
    #[serde(default)]
    pub fallback: FallbackSpec,
    /// Automatic rollback of a server image that does not become healthy (managed only).
    #[serde(default)]
    pub rollback: RollbackSpec,
}

fn default_replicas() -> i32 {
    1
}
fn default_port() -> i32 {
    DEFAULT_SERVER_PORT
}

impl Default for ColonyServerSpec {
    fn default() -> Self {
        Self {
            managed: true,
            image: None,
            replicas: default_replicas(),
            resources: None,
            env: Vec::new(),
            pod_template: None,
            port: default_port(),
            endpoint: None,
            database: None,
            server_key_secret_ref: None,
            tls: TlsSpec::default(),
            health: HealthSpec::default(),
            slo: None,
            fallback: FallbackSpec::default(),
            rollback: RollbackSpec::default(),
        }
    }
}

impl ColonyServerSpec {
    /// The URL the operator probes and calls: `spec.endpoint`, or the Service the operator
    /// creates for a managed server.
    pub fn effective_endpoint(&self, name: &str, namespace: &str) -> String {
        match &self.endpoint {
            Some(endpoint) => endpoint.trim_end_matches('/').to_string(),
            None => {
                let scheme = if self.managed && self.tls.enabled { "https" } else { "http" };
                format!("{scheme}://{name}.{namespace}.svc:{}", self.port)
            }
        }
    }

    /// The health URL: the effective endpoint plus `health.path`.
    pub fn health_url(&self, name: &str, namespace: &str) -> String {
        format!("{}{}", self.effective_endpoint(name, namespace), self.health.path)
    }
}

/// PostgreSQL connection of a managed server. The database name is always `postgres` (fixed
/// in colonies-server) and sslmode is disabled by the server.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Host name or address of PostgreSQL (`COLONIES_DB_HOST`).
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// Port of PostgreSQL (`COLONIES_DB_PORT`).
    #[serde(default = "default_database_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Secret key holding the database user name (`COLONIES_DB_USER`).
    pub user: SecretKeySelector,
    /// Secret key holding the database password (`COLONIES_DB_PASSWORD`).
    pub password: SecretKeySelector,
    /// Whether the database is TimescaleDB (`COLONIES_DB_TIMESCALEDB`).
    #[serde(default)]
    pub timescaledb: bool,
}

fn default_database_port() -> i32 {
    DEFAULT_DATABASE_PORT
}

/// TLS of a managed server's HTTP API.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Serve HTTPS (`COLONIES_TLS=true`). false sets `COLONIES_TLS=false`.
    #[serde(default)]
    pub enabled: bool,
    /// Name of a `kubernetes.io/tls` Secret (keys `tls.crt`, `tls.key`) mounted as the
    /// server's certificate and key. Required when `enabled` is true on a managed server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub secret_name: Option<String>,
    /// A private CA (PEM, one or more certificates) the operator trusts, next to the public
    /// roots, when it probes, scrapes or calls this server over HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_ref: Option<CaRef>,
}

/// Where a CA bundle is: a key of a ConfigMap or of a Secret in the resource's namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CaRef {
    /// `ConfigMap` (default) or `Secret`.
    #[serde(default)]
    pub kind: CaSourceKind,
    /// Name of the ConfigMap or Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// Key holding the PEM bundle.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = CONFIG_KEY_PATTERN))]
    pub key: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CaSourceKind {
    #[default]
    ConfigMap,
    Secret,
}

fn default_ca_key() -> String {
    "ca.crt".into()
}

/// Health probing: `GET <endpoint><path>` expecting HTTP 200.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("duration(self.timeout) <= duration(self.interval)").message("spec.health.timeout must not be longer than spec.health.interval (a probe ends before the next one starts)").field_path(".timeout"),
)]
#[serde(rename_all = "camelCase")]
pub struct HealthSpec {
    /// HTTP path of the health endpoint (colonies-server serves `/health`).
    #[serde(default = "default_health_path")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/[^\s]*$"))]
    pub path: String,
    /// Time between two probes (Go duration, e.g. `10s`). At least `1s`.
    #[serde(default = "default_health_interval")]
    pub interval: HealthInterval,
    /// Timeout of one probe (Go duration). At least `100ms`, and not longer than `interval`.
    #[serde(default = "default_health_timeout")]
    pub timeout: HealthTimeout,
    /// Consecutive failed probes before the server counts as down.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 1000))]
    pub failure_threshold: i32,
    /// Consecutive successful probes before a down server counts as up again.
    #[serde(default = "default_success_threshold")]
    #[schemars(range(min = 1, max = 1000))]
    pub success_threshold: i32,
    /// An API-level check run after each `GET <path>` that answered 200: a signed
    /// `getcolonystatsmsg` with a colony member's key, within `timeout`. An API that hangs,
    /// times out, errors or returns no statistics counts as a failed probe (colonies-server
    /// can hang every RPC while `/health` still answers 200). Unset: `/health` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiCheckSpec>,
}

/// The API-level health check: which colony to read and whose key signs the call.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApiCheckSpec {
    /// The colony whose statistics are read.
    #[schemars(length(min = 1, max = 253))]
    pub colony_name: String,
    /// Secret key holding the private key (64 hex characters) of a member of the colony: a
    /// user or an approved executor. A key that is missing or not a member fails every call
    /// (every probe of `spec.health.api`, every sample of `spec.slo.statistics`).
    pub key_secret_ref: SecretKeySelector,
}

/// Shortest `health.interval`: faster probing only loads the server.
pub type HealthInterval = GoDuration<1_000>;
/// Shortest `health.timeout`: below this a healthy server times out on network jitter.
pub type HealthTimeout = GoDuration<100>;

impl HealthSpec {
    /// The schema's duration rules, checked again by the controller.
    pub fn check(&self) -> Result<(), String> {
        let interval = self.interval.check("spec.health.interval")?;
        let timeout = self.timeout.check("spec.health.timeout")?;
        if timeout > interval {
            return Err(format!(
                "spec.health.timeout ({}) must not be longer than spec.health.interval ({})",
                self.timeout, self.interval
            ));
        }
        Ok(())
    }
}

fn default_health_path() -> String {
    "/health".into()
}
fn default_health_interval() -> HealthInterval {
    "10s".into()
}
fn default_health_timeout() -> HealthTimeout {
    "2s".into()
}
fn default_failure_threshold() -> i32 {
    3
}
fn default_success_threshold() -> i32 {
    2
}

impl Default for HealthSpec {
    fn default() -> Self {
        Self {
            path: default_health_path(),
            interval: default_health_interval(),
            timeout: default_health_timeout(),
            failure_threshold: default_failure_threshold(),
            success_threshold: default_success_threshold(),
            api: None,
        }
    }
}

/// Service-level objectives, from the runbook: queue depth < 10, completion rate > 99 %,
/// error rate < 1 %. The figures come from exactly one source: `metricsURL` (a `colonies
/// monitor`) or `statistics` (the server's own signed `getcolonystatsmsg`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("has(self.metricsURL) != has(self.statistics)").message("spec.slo needs exactly one source: metricsURL or statistics"),
)]
#[serde(rename_all = "camelCase")]
pub struct SloSpec {
    /// URL of a Prometheus text endpoint with the `colonies_server_processes_*` gauges (e.g.
    /// `colonies monitor`). Exactly one of `metricsURL` and `statistics`.
    #[serde(rename = "metricsURL", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = HTTP_URL_PATTERN))]
    pub metrics_url: Option<String>,
    /// Read the figures from the server itself: a `getcolonystatsmsg` to the server's
    /// endpoint, signed with a colony member's key (the same shape as `spec.health.api`).
    /// Queue depth = waiting processes; completion and error rates from the difference of
    /// the lifetime counts between two samples. A refused, empty or undecodable reply is a
    /// failed sample (the SLO is unknown, never zero). Exactly one of `metricsURL` and
    /// `statistics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics: Option<ApiCheckSpec>,
    /// Time between two samples (Go duration). At least `1s`. Unset: `spec.health.interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<SloInterval>,
    /// Highest acceptable number of waiting processes.
    #[serde(default = "default_max_queue_depth")]
    #[schemars(range(min = 0))]
    pub max_queue_depth: i64,
    /// Lowest acceptable share of closed processes that succeeded, between two samples (0..1).
    #[serde(default = "default_min_completion_rate")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_completion_rate: f64,
    /// Highest acceptable share of closed processes that failed, between two samples (0..1).
    #[serde(default = "default_max_error_rate")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate: f64,
    /// How long a breach must last before it counts (Go duration). At least `1s`.
    #[serde(rename = "for", default = "default_slo_for")]
    pub for_: SloFor,
}

/// Shortest `slo.for`: a single sample must not flip the fallback.
pub type SloFor = GoDuration<1_000>;

/// Shortest `slo.interval`: each sample is a call to the server.
pub type SloInterval = GoDuration<1_000>;

impl SloSpec {
    /// The schema's rules, checked again by the controller. An SLO without a source (admitted
    /// before the rule existed) checks nothing, as it did then.
    pub fn check(&self) -> Result<(), String> {
        self.for_.check("spec.slo.for")?;
        if let Some(interval) = &self.interval {
            interval.check("spec.slo.interval")?;
        }
        if self.metrics_url.is_some() && self.statistics.is_some() {
            return Err("spec.slo needs exactly one source: metricsURL or statistics".into());
        }
        Ok(())
    }
}

fn default_max_queue_depth() -> i64 {
    10
}
fn default_min_completion_rate() -> f64 {
    0.99
}
fn default_max_error_rate() -> f64 {
    0.01
}
fn default_slo_for() -> SloFor {
    "5m".into()
}

impl Default for SloSpec {
    fn default() -> Self {
        Self {
            metrics_url: None,
            statistics: None,
            interval: None,
            max_queue_depth: default_max_queue_depth(),
            min_completion_rate: default_min_completion_rate(),
            max_error_rate: default_max_error_rate(),
            for_: default_slo_for(),
        }
    }
}

/// The direct-processing fallback: a ConfigMap key that consumers read (`USE_COLONY_OS`);
/// `"false"` while the fallback is on, `"true"` otherwise.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FallbackSpec {
    /// Name of the ConfigMap the operator writes. Default: `<name>-fallback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub config_map_name: Option<String>,
    /// Key in the ConfigMap.
    #[serde(default = "default_fallback_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = CONFIG_KEY_PATTERN))]
    pub key: String,
    /// Continuous health required before the fallback is turned off again (Go duration). At
    /// least `1s`.
    #[serde(default = "default_recover_after")]
    pub recover_after: RecoverAfter,
    /// Shortest time the fallback stays in one state (Go duration). At least `1s`.
    #[serde(default = "default_min_hold")]
    pub min_hold: FallbackHold,
    /// Most flips in any hour; beyond that the fallback stays on and the resource reports
    /// Stalled for a human.
    #[serde(default = "default_max_flips_per_hour")]
    #[schemars(range(min = 1, max = 60))]
    pub max_flips_per_hour: i32,
    /// Webhook notified on every flip: a JSON POST `{server, namespace, state, reason, time,
    /// id}`, sent at least once (deduplicate by `id`). Unset: Events and metrics only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<WebhookSpec>,
}

/// Shortest `fallback.recoverAfter`: one healthy probe must not end the fallback.
pub type RecoverAfter = GoDuration<1_000>;
/// Shortest `fallback.minHold`: the fallback must not flip back and forth within a second.
pub type FallbackHold = GoDuration<1_000>;

impl FallbackSpec {
    /// The schema's duration rules, checked again by the controller.
    pub fn check(&self) -> Result<(), String> {
        self.recover_after.check("spec.fallback.recoverAfter")?;
        self.min_hold.check("spec.fallback.minHold")?;
        match &self.notify {
            Some(notify) => notify.check("spec.fallback.notify"),
            None => Ok(()),
        }
    }
}

fn default_fallback_key() -> String {
    "USE_COLONY_OS".into()
}
fn default_recover_after() -> RecoverAfter {
    "5m".into()
}
fn default_min_hold() -> FallbackHold {
    "2m".into()
}
fn default_max_flips_per_hour() -> i32 {
    4
}

impl Default for FallbackSpec {
    fn default() -> Self {
        Self {
            config_map_name: None,
            key: default_fallback_key(),
            recover_after: default_recover_after(),
            min_hold: default_min_hold(),
            max_flips_per_hour: default_max_flips_per_hour(),
            notify: None,
        }
    }
}

impl FallbackSpec {
    /// `configMapName`, or `<server name>-fallback`.
    pub fn effective_config_map_name(&self, server_name: &str) -> String {
        self.config_map_name.clone().unwrap_or_else(|| format!("{server_name}-fallback"))
    }
}

/// Automatic rollback of a managed server's image.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RollbackSpec {
    /// Roll back to the last known good image when a new image does not become ready and
    /// healthy within `progressDeadline`.
    #[serde(default = "default_true")]
    pub automatic: bool,
    /// Time a new image has to become ready and healthy (Go duration). At least `30s`.
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline: ProgressDeadline,
    /// Continuous health after which a new image becomes the last known good one (Go
    /// duration). At least `1s`.
    #[serde(default = "default_stable_after")]
    pub stable_after: StableAfter,
    /// Number of entries kept in `status.history`.
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: i32,
}

/// Shortest `rollback.progressDeadline`: pulling an image and starting a pod takes longer;
/// a shorter deadline rolls back every new image.
pub type ProgressDeadline = GoDuration<30_000>;
/// Shortest `rollback.stableAfter`.
pub type StableAfter = GoDuration<1_000>;

impl RollbackSpec {
    /// The schema's duration rules, checked again by the controller; `path` is where this
    /// spec sits (`spec.rollback`).
    pub fn check(&self, path: &str) -> Result<(), String> {
        self.progress_deadline.check(&format!("{path}.progressDeadline"))?;
        self.stable_after.check(&format!("{path}.stableAfter")).map(drop)
    }
}

fn default_progress_deadline() -> ProgressDeadline {
    "10m".into()
}
fn default_stable_after() -> StableAfter {
    "5m".into()
}
fn default_history_limit() -> i32 {
    5
}

impl Default for RollbackSpec {
    fn default() -> Self {
        Self {
            automatic: true,
            progress_deadline: default_progress_deadline(),
            stable_after: default_stable_after(),
            history_limit: default_history_limit(),
        }
    }
}

/// Observed state of a ColonyServer, written by the operator on transitions only.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ColonyServerStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Healthy, FallbackActive, RolledBack, and Reconciling/Stalled while true.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The rollout memory: `currentImage`, `lastKnownGoodImage`, `failedImages`, `history`.
    #[serde(flatten)]
    pub rollout: RolloutStatus,
    /// Health probe state, updated when the server goes down or comes back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    /// Last SLO sample, recorded when a breach starts or ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<SloStatus>,
    /// State of the direct-processing fallback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackStatus>,
}

/// Health probe state.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HealthStatus {
    /// Consecutive failed probes at the last transition.
    #[serde(default)]
    pub consecutive_failures: i32,
    /// Consecutive successful probes at the last transition.
    #[serde(default)]
    pub consecutive_successes: i32,
    /// When the server was declared down; unset while it is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Time>")]
    pub down_since: Option<DateTime<Utc>>,
    /// Error of the probe that declared the server down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The SLO sample at the start or end of a breach.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SloStatus {
    /// Whether an SLO is currently breached.
    #[serde(default)]
    pub breached: bool,
    /// When the current breach (or the last recovery) started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Time>")]
    pub since: Option<DateTime<Utc>>,
    /// Which objectives were breached, e.g. `queueDepth 14 > 10`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Waiting processes in the sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<i64>,
    /// Completion rate between the two samples (0..1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_rate: Option<f64>,
    /// Error rate between the two samples (0..1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
}

/// State of the direct-processing fallback.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FallbackStatus {
    /// Whether the fallback is on (`USE_COLONY_OS=false`).
    #[serde(default)]
    pub active: bool,
    /// When the fallback last flipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Time>")]
    pub since: Option<DateTime<Utc>>,
    /// Why the fallback is in its current state (e.g. `HealthCheckFailed`, `SLOBreached`,
    /// `MaintenanceWindow`, `Override`, `Recovered`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Flips during the last hour.
    #[serde(default)]
    pub flips_last_hour: i32,
    /// Times of the flips during the last hour, oldest first (for the `maxFlipsPerHour` limit
    /// across operator restarts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<Time>")]
    pub recent_flips: Vec<DateTime<Utc>>,
    /// The `colony.zyeute.io/fallback` annotation in effect when the decision was made.
    #[serde(rename = "override", default, skip_serializing_if = "Option::is_none")]
    pub override_: Option<FallbackOverride>,
    /// Flip notifications (`spec.fallback.notify`) recorded with their flip and not delivered
    /// yet, oldest first. Each stays until its delivery is done (sent, or given up after its
    /// retries), so that an operator restart or a status reply lost on the way sends it still:
    /// at least once, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_notifications: Vec<PendingNotification>,
}

/// A flip notification waiting for delivery.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PendingNotification {
    /// When the fallback flipped (the notification's `time`).
    #[schemars(with = "Time")]
    pub at: DateTime<Utc>,
    /// The state it flipped to: `on` (fallback active) or `off`.
    pub state: String,
    /// Why it flipped (the notification's `reason`).
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ImageHistoryEntry, RolloutOutcome};

    fn minimal() -> ColonyServerSpec {
        serde_yaml::from_str("image: colonyos/colonies:v1.9.12\n").unwrap()
    }

    #[test]
    fn minimal_yaml_gets_the_contract_defaults() {
        let spec = minimal();
        assert!(spec.managed);
        assert_eq!(spec.replicas, 1);
        assert_eq!(spec.port, 50080);
        assert_eq!(spec.endpoint, None);
        assert!(!spec.tls.enabled);
        assert_eq!(spec.health, HealthSpec::default());
        assert_eq!(spec.health.path, "/health");
        assert_eq!(spec.health.interval, "10s");
        assert_eq!(spec.health.timeout, "2s");
        assert_eq!((spec.health.failure_threshold, spec.health.success_threshold), (3, 2));
        assert_eq!(spec.slo, None);
        assert_eq!(spec.fallback.key, "USE_COLONY_OS");
        assert_eq!(spec.fallback.recover_after, "5m");
        assert_eq!(spec.fallback.min_hold, "2m");
        assert_eq!(spec.fallback.max_flips_per_hour, 4);
        assert_eq!(spec.fallback.notify, None);
        assert!(spec.rollback.automatic);
        assert_eq!(spec.rollback.progress_deadline, "10m");
        assert_eq!(spec.rollback.stable_after, "5m");
        assert_eq!(spec.rollback.history_limit, 5);
        assert_eq!(ColonyServerSpec { image: spec.image.clone(), ..Default::default() }, spec);
    }

    #[test]
    fn nested_defaults_fill_partial_objects() {
        let spec: ColonyServerSpec = serde_yaml::from_str(
            "managed: false\nendpoint: http://x:1\nhealth: {interval: 30s}\nslo: {maxQueueDepth: 20}\n\
             database: {host: db, user: {name: s, key: u}, password: {name: s, key: p}}\n",
        )
        .unwrap();
        assert_eq!(spec.health.interval, "30s");
        assert_eq!(spec.health.timeout, "2s");
        let slo = spec.slo.unwrap();
        assert_eq!(slo.max_queue_depth, 20);
        assert_eq!(slo.min_completion_rate, 0.99);
        assert_eq!(slo.max_error_rate, 0.01);
        assert_eq!(slo.for_, "5m");
        let db = spec.database.unwrap();
        assert_eq!(db.port, 5432);
        assert!(!db.timescaledb);
    }

    #[test]
    fn effective_endpoint() {
        let mut spec = minimal();
        assert_eq!(spec.effective_endpoint("colonies", "prod"), "http://colonies.prod.svc:50080");
        assert_eq!(spec.health_url("colonies", "prod"), "http://colonies.prod.svc:50080/health");
        spec.tls.enabled = true;
        spec.port = 443;
        assert_eq!(spec.effective_endpoint("colonies", "prod"), "https://colonies.prod.svc:443");
        spec.endpoint = Some("https://colonies.example.com/".into());
        assert_eq!(spec.effective_endpoint("colonies", "prod"), "https://colonies.example.com");
        assert_eq!(spec.health_url("colonies", "prod"), "https://colonies.example.com/health");
    }

    #[test]
    fn effective_fallback_config_map_name() {
        let mut spec = minimal();
        assert_eq!(spec.fallback.effective_config_map_name("colonies"), "colonies-fallback");
        spec.fallback.config_map_name = Some("use-colony-os".into());
        assert_eq!(spec.fallback.effective_config_map_name("colonies"), "use-colony-os");
    }

    #[test]
    fn field_names_follow_the_contract() {
        let slo = serde_json::to_value(SloSpec { metrics_url: Some("http://m/metrics".into()), ..Default::default() })
            .unwrap();
        assert!(slo.get("metricsURL").is_some() && slo.get("for").is_some(), "{slo}");
        let status = FallbackStatus { override_: Some(FallbackOverride::On), ..Default::default() };
        assert_eq!(serde_json::to_value(status).unwrap()["override"], "on");
    }

    #[test]
    fn slo_sources_and_interval_are_checked_again_by_the_controller() {
        let stats = ApiCheckSpec {
            colony_name: "zyeute".into(),
            key_secret_ref: SecretKeySelector { name: "ops-key".into(), key: "prvkey".into() },
        };
        let slo: SloSpec = serde_yaml::from_str(
            "statistics: {colonyName: zyeute, keySecretRef: {name: ops-key, key: prvkey}}\ninterval: 15s\n",
        )
        .unwrap();
        assert_eq!(slo.statistics.as_ref(), Some(&stats));
        assert_eq!(slo.interval.as_ref().map(GoDuration::as_str), Some("15s"));
        assert_eq!(slo.check(), Ok(()));
        let both = SloSpec { metrics_url: Some("http://m/metrics".into()), ..slo.clone() };
        assert!(both.check().unwrap_err().contains("exactly one source"));
        let fast = SloSpec { interval: Some("500ms".into()), ..slo.clone() };
        assert!(fast.check().unwrap_err().starts_with("spec.slo.interval"));
        // Admitted before the rule: no source checks nothing, as it did then.
        assert_eq!(SloSpec::default().check(), Ok(()));
    }

    #[test]
    fn status_round_trips_with_rfc3339_times() {
        let t = DateTime::parse_from_rfc3339("2026-03-01T02:00:00Z").unwrap().with_timezone(&Utc);
        let status = ColonyServerStatus {
            observed_generation: Some(2),
            rollout: RolloutStatus {
                current_image: Some("colonyos/colonies:v1.9.12".into()),
                history: vec![ImageHistoryEntry {
                    image: "a".into(),
                    deployed_at: t,
                    outcome: RolloutOutcome::RolledBack,
                    failure: Some(crate::api::RolloutFailure::CrashLoopBackOff),
                }],
                ..Default::default()
            },
            health: Some(HealthStatus { consecutive_failures: 3, down_since: Some(t), ..Default::default() }),
            fallback: Some(FallbackStatus {
                active: true,
                since: Some(t),
                recent_flips: vec![t],
                flips_last_hour: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["currentImage"], "colonyos/colonies:v1.9.12", "the rollout fields sit at the top");
        assert_eq!(json["health"]["downSince"], "2026-03-01T02:00:00Z");
        assert_eq!(json["history"][0]["deployedAt"], "2026-03-01T02:00:00Z");
        assert_eq!(json["history"][0]["outcome"], "RolledBack");
        assert!(json.get("conditions").is_none(), "empty lists are omitted");
        assert_eq!(serde_json::from_value::<ColonyServerStatus>(json).unwrap(), status);
        assert_eq!(serde_json::from_str::<ColonyServerStatus>("{}").unwrap(), ColonyServerStatus::default());
    }

    /// A status as the operator wrote it before the rollout fields became one embedded
    /// `RolloutStatus`: every field set, in that version's order.
    const STORED_STATUS: &str = r#"{
        "observedGeneration": 4,
        "conditions": [{"type": "RolledBack", "status": "True", "observedGeneration": 4,
            "lastTransitionTime": "2026-03-01T02:10:00Z", "reason": "RolledBack",
            "message": "image colonyos/colonies:v2 failed (CrashLoopBackOff); running the last known good image colonyos/colonies:v1"}],
        "currentImage": "colonyos/colonies:v1",
        "lastKnownGoodImage": "colonyos/colonies:v1",
        "failedImages": ["colonyos/colonies:v2"],
        "health": {"consecutiveFailures": 0, "consecutiveSuccesses": 3},
        "slo": {"breached": false, "queueDepth": 2, "completionRate": 1.0, "errorRate": 0.0},
        "fallback": {"active": false, "since": "2026-03-01T01:00:00Z", "reason": "Recovered", "flipsLastHour": 0},
        "history": [
            {"image": "colonyos/colonies:v0", "deployedAt": "2026-02-01T00:00:00Z", "outcome": "Superseded"},
            {"image": "colonyos/colonies:v1", "deployedAt": "2026-02-02T00:00:00Z", "outcome": "Stable"},
            {"image": "colonyos/colonies:v2", "deployedAt": "2026-03-01T02:00:00Z", "outcome": "RolledBack"}
        ]
    }"#;

    #[test]
    fn a_stored_status_reads_into_the_embedded_rollout_status_and_writes_back_the_same() {
        let stored: serde_json::Value = serde_json::from_str(STORED_STATUS).unwrap();
        let status: ColonyServerStatus = serde_json::from_value(stored.clone()).unwrap();
        let r = &status.rollout;
        assert_eq!(r.current_image.as_deref(), Some("colonyos/colonies:v1"));
        assert_eq!(r.last_known_good_image.as_deref(), Some("colonyos/colonies:v1"));
        assert_eq!(r.failed_images, ["colonyos/colonies:v2"]);
        let history: Vec<_> = r.history.iter().map(|e| (e.image.as_str(), e.outcome)).collect();
        assert_eq!(
            history,
            [
                ("colonyos/colonies:v0", RolloutOutcome::Superseded),
                ("colonyos/colonies:v1", RolloutOutcome::Stable),
                ("colonyos/colonies:v2", RolloutOutcome::RolledBack),
            ],
            "read in stored order: oldest first, newest last"
        );
        assert_eq!(status.observed_generation, Some(4));
        assert_eq!(status.conditions.len(), 1);
        assert_eq!(status.health.as_ref().map(|h| h.consecutive_successes), Some(3));
        assert_eq!(status.slo.as_ref().and_then(|s| s.queue_depth), Some(2));
        assert_eq!(status.fallback.as_ref().and_then(|f| f.reason.as_deref()), Some("Recovered"));
        assert_eq!(serde_json::to_value(&status).unwrap(), stored, "written back field for field");
    }
}
