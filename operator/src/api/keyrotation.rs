//! KeyRotation: scheduled rotation of a key kept in a Secret (the runbook's monthly
//! generate-keys.sh / store-keys.sh / redeploy), optionally registered with ColonyOS first.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::{Message, Rule};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::GoDuration;
use super::common::{CRON_PATTERN, DNS_SUBDOMAIN_PATTERN, LocalObjectReference, TIME_ZONE_PATTERN, default_time_zone};

/// The runbook's cadence: 03:00 on the first day of every month.
pub const MONTHLY_SCHEDULE: &str = "0 3 1 * *";

/// RE2 regular expression on `spec.schedule` (as [`CRON_PATTERN`] admits it: fields
/// separated by spaces, minute first): the minute field names one minute, so two starts are
/// at least an hour apart (the same minimum as `spec.interval`; only where clocks go back by
/// half an hour can a start in the repeated half hour come twice, 30 minutes apart). A cron that fires more often
/// would rotate the key, register it and roll every workload that uses it each time: a
/// rotation storm, and keys dropped from the Secret before the pods that hold them have rolled.
pub const AT_MOST_HOURLY_PATTERN: &str = r"^[0-9]+ ";

/// Whether `schedule` fires at most once an hour ([`AT_MOST_HOURLY_PATTERN`]); the controller
/// checks it again for objects admitted before the rule existed.
pub fn fires_at_most_hourly(schedule: &str) -> bool {
    static RULE: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(AT_MOST_HOURLY_PATTERN).expect("a valid pattern"));
    RULE.is_match(schedule)
}

fn at_most_hourly_rule() -> Rule {
    Rule::new(format!("!has(self.schedule) || self.schedule.matches('{AT_MOST_HOURLY_PATTERN}')"))
        .message(Message::Message(
            "spec.schedule must fire at most once an hour: its minute field must be a single minute (e.g. \"0 3 1 * *\" for monthly, \"0 * * * *\" for hourly)".into(),
        ))
        .field_path(".schedule")
}

/// On a KeyRotation: acknowledges that the key Secret lost or changed the key
/// `status.currentKeyId` names. Its value must be that ID (so a stale acknowledgement never
/// accepts a later change): a replaced key is then adopted as current, a missing one is
/// generated afresh.
pub const ACCEPT_KEY_CHANGE_ANNOTATION: &str = "colony.zyeute.io/accept-key-change";

/// Desired rotation of one key: when, what kind of key, who must pick it up.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "colony.zyeute.io",
    version = "v1alpha1",
    kind = "KeyRotation",
    namespaced,
    status = "KeyRotationStatus",
    shortname = "kr",
    category = "colony",
    derive = "PartialEq",
    doc = "Scheduled rotation of a key kept in a Secret, optionally registered with ColonyOS before it becomes current, followed by a rollout of its consumers.",
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "description": "Whether the last rotation succeeded and the next is scheduled"}"#,
    printcolumn = r#"{"name": "Revision", "type": "integer", "jsonPath": ".status.revision", "description": "Number of rotations done"}"#,
    printcolumn = r#"{"name": "Last", "type": "date", "jsonPath": ".status.lastRotationTime", "description": "Time of the last rotation"}"#,
    printcolumn = r#"{"name": "Next", "type": "string", "jsonPath": ".status.nextRotationTime", "description": "Time of the next rotation"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("has(self.schedule) != has(self.interval)").message("exactly one of spec.schedule and spec.interval must be set (e.g. spec.schedule: \"0 3 1 * *\" for monthly)"),
    validation = Rule::new("self.keyType != 'random' || has(self.length)").message("spec.length is required when spec.keyType is random").field_path(".length").reason(Reason::FieldValueRequired),
    validation = Rule::new("self.keyType == 'random' || !has(self.length)").message("spec.length applies only to spec.keyType random").field_path(".length").reason(Reason::FieldValueForbidden),
    validation = at_most_hourly_rule(),
    validation = Rule::new("!has(self.colonyOS) || self.keyType == 'secp256k1'").message("spec.colonyOS requires spec.keyType secp256k1 (ColonyOS identities are secp256k1 keys)").field_path(".keyType"),
)]
#[serde(rename_all = "camelCase")]
pub struct KeyRotationSpec {
    /// Cron schedule (five fields, minute hour day-of-month month day-of-week) in `timeZone`;
    /// `0 3 1 * *` rotates monthly like the runbook. Exactly one of `schedule` and `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), regex(pattern = CRON_PATTERN))]
    pub schedule: Option<String>,
    /// IANA time zone of `schedule`.
    #[serde(default = "default_time_zone")]
    #[schemars(length(min = 1, max = 64), regex(pattern = TIME_ZONE_PATTERN))]
    pub time_zone: String,
    /// Time between rotations (Go duration, e.g. `720h`), counted from the last rotation.
    /// At least `1h`. Exactly one of `schedule` and `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<RotationInterval>,
    /// The Secret that holds the key (created if missing). Keys: `prvkey` and `id` for
    /// secp256k1 and ed25519, `key` for random; older keys as `previous.<key>`,
    /// `previous-2.<key>`, ...
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub secret_name: String,
    /// Kind of key: `secp256k1` (a ColonyOS identity: `prvkey` hex and its `id`), `ed25519`, or
    /// `random` (`length` random bytes, e.g. an HMAC secret).
    #[serde(default)]
    pub key_type: KeyType,
    /// Bytes of a `random` key (required for `random`, not allowed otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub length: Option<i32>,
    /// How many previous keys stay in the Secret.
    #[serde(default = "default_keep_previous")]
    #[schemars(range(min = 0, max = 10))]
    pub keep_previous: i32,
    /// Workloads rolled after each rotation so they load the new key. FinanceBee and
    /// ColonyServer roll through their controller; a Deployment gets a restart annotation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub targets: Vec<RotationTarget>,
    /// Rotate only while this MaintenanceWindow is active (a due rotation waits for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_window_ref: Option<LocalObjectReference>,
    /// Register the new key with the ColonyOS server (the change-ID call, signed with the old
    /// key) before it becomes current. Unset: the key is only replaced in the Secret.
    #[serde(rename = "colonyOS", default, skip_serializing_if = "Option::is_none")]
    pub colony_os: Option<ColonyOsRegistration>,
    /// Stop rotating (a rotation in progress is finished first).
    #[serde(default)]
    pub suspend: bool,
    /// What happens to the key Secret when this KeyRotation (or its CRD) is deleted:
    /// `Retain` (default, like cert-manager) leaves it in place, with no ownerReference (one
    /// left by an earlier operator version is removed); `Delete` gives the Secret an
    /// ownerReference to this KeyRotation so the garbage collector deletes it with it.
    #[serde(default)]
    pub secret_deletion_policy: SecretDeletionPolicy,
}

/// What happens to the key Secret when its KeyRotation is deleted.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SecretDeletionPolicy {
    /// The Secret stays (no ownerReference).
    #[default]
    Retain,
    /// The Secret is owned by the KeyRotation and garbage-collected with it.
    Delete,
}

fn default_keep_previous() -> i32 {
    1
}

/// Shortest `interval`: every rotation rolls the targets and, with `colonyOS`, changes an
/// identity on the server; more than one an hour is a loop, not a schedule.
pub type RotationInterval = GoDuration<3_600_000>;

impl Default for KeyRotationSpec {
    fn default() -> Self {
        Self {
            schedule: Some(MONTHLY_SCHEDULE.to_string()),
            time_zone: default_time_zone(),
            interval: None,
            secret_name: String::new(),
            key_type: KeyType::default(),
            length: None,
            keep_previous: default_keep_previous(),
            targets: Vec::new(),
            maintenance_window_ref: None,
            colony_os: None,
            suspend: false,
            secret_deletion_policy: SecretDeletionPolicy::default(),
        }
    }
}

/// When rotations happen, as set in the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotationCadence<'a> {
    /// A cron expression in an IANA time zone.
    Cron { schedule: &'a str, time_zone: &'a str },
    /// A Go duration after the last rotation.
    Interval(&'a RotationInterval),
}

impl KeyRotationSpec {
    /// The cadence: `schedule` (with `timeZone`) or `interval`. When both or neither are set
    /// (only possible if the API server's validation was bypassed) `schedule` wins, and the
    /// monthly default applies when neither is set.
    pub fn cadence(&self) -> RotationCadence<'_> {
        match (&self.schedule, &self.interval) {
            (Some(schedule), _) => RotationCadence::Cron { schedule, time_zone: &self.time_zone },
            (None, Some(interval)) => RotationCadence::Interval(interval),
            (None, None) => RotationCadence::Cron { schedule: MONTHLY_SCHEDULE, time_zone: &self.time_zone },
        }
    }
}

/// Kind of key.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// ECDSA secp256k1, the ColonyOS identity key.
    #[default]
    Secp256k1,
    /// Ed25519.
    Ed25519,
    /// `length` random bytes.
    Random,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Secp256k1 => "secp256k1",
            Self::Ed25519 => "ed25519",
            Self::Random => "random",
        }
    }
}

/// A workload rolled after a rotation.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct RotationTarget {
    /// Kind of the workload.
    pub kind: TargetKind,
    /// Name of the workload, in the namespace of this resource.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
}

impl RotationTarget {
    /// `Kind/name`, as listed in `status.targets`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind.as_str(), self.name)
    }
}

/// Kind of a rotation target.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TargetKind {
    FinanceBee,
    ColonyServer,
    Deployment,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FinanceBee => "FinanceBee",
            Self::ColonyServer => "ColonyServer",
            Self::Deployment => "Deployment",
        }
    }
}

/// Registration of the new key with a ColonyOS server before it becomes current.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("self.identity == 'server' || has(self.colonyName)").message("spec.colonyOS.colonyName is required unless spec.colonyOS.identity is server").field_path(".colonyName").reason(Reason::FieldValueRequired),
)]
#[serde(rename_all = "camelCase")]
pub struct ColonyOsRegistration {
    /// The ColonyServer to call (same namespace).
    pub colony_server_ref: LocalObjectReference,
    /// Whose key this is: `executor` (changeexecutoridmsg), `user` (changeuseridmsg),
    /// `colony` (changecolonyidmsg) or `server` (changeserveridmsg).
    pub identity: Identity,
    /// The colony of the identity (required except for `server`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub colony_name: Option<String>,
}

/// A ColonyOS identity whose ID changes with the key.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Identity {
    Executor,
    User,
    Colony,
    Server,
}

/// Observed state of a KeyRotation, written by the operator on transitions only.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KeyRotationStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Rotating, and Reconciling/Stalled while true.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Number of completed rotations (0 before the first).
    #[serde(default)]
    pub revision: i64,
    /// When the current key became current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Time>")]
    pub last_rotation_time: Option<DateTime<Utc>>,
    /// When the next rotation is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Time>")]
    pub next_rotation_time: Option<DateTime<Utc>>,
    /// Public ID (secp256k1: the ColonyOS ID) or fingerprint of the current key; never the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_key_id: Option<String>,
    /// Public ID or fingerprint of the previous key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_key_id: Option<String>,
    /// Step of the rotation state machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RotationPhase>,
    /// Rollout of the targets after the last rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<TargetsStatus>,
    /// The last `colony.zyeute.io/rotate-now` value acted upon; a different value forces a
    /// rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_rotate_now: Option<String>,
}

/// Step of the rotation state machine: Idle, Generating, Registering, RollingOut or Failed.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RotationPhase {
    /// Waiting for the next rotation.
    #[default]
    Idle,
    /// Generating the new key and staging it in the Secret.
    Generating,
    /// Registering the new key with ColonyOS.
    Registering,
    /// Rolling the targets.
    RollingOut,
    /// The last attempt failed; see the conditions.
    Failed,
}

/// Rollout of the targets, as `Kind/name`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TargetsStatus {
    /// Targets rolled since the last rotation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rolled: Vec<String>,
    /// Targets still to roll.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hourly rule, CEL's pattern and the controller's check alike, admits exactly the
    /// schedules whose starts are never less than an hour apart, daylight-saving changes
    /// included (checked against the cron itself over a year), with one exception: in a zone
    /// whose clocks go back half an hour (Lord Howe Island), a start in the repeated half hour
    /// comes twice, 30 minutes apart, once a year.
    #[test]
    fn the_hourly_rule_admits_exactly_the_schedules_an_hour_apart() {
        use crate::schedule::CronSchedule;
        let now = DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z").unwrap().with_timezone(&Utc);
        let re = regex::Regex::new(AT_MOST_HOURLY_PATTERN).unwrap();
        let under_an_hour = chrono::Duration::minutes(59);
        let under_half_an_hour = chrono::Duration::minutes(29);
        for cron in ["0 3 1 * *", "0 * * * *", "59 */2 * * *", "5 0,1 * * *", "30 1-3 * * *", "0 2 * * 5#3"] {
            assert!(re.is_match(cron) && fires_at_most_hourly(cron), "{cron:?} should be admitted");
            for tz in ["UTC", "Europe/Paris", "America/Santiago"] {
                let starts = CronSchedule::parse(cron, tz).unwrap().starts_within(under_an_hour, now);
                assert_eq!(starts, None, "{cron:?} in {tz}: two starts under an hour apart");
            }
            let lord_howe = CronSchedule::parse(cron, "Australia/Lord_Howe").unwrap();
            assert_eq!(lord_howe.starts_within(under_half_an_hour, now), None, "{cron:?} on Lord Howe");
        }
        // The exception, as it is: the repeated 01:30 on Lord Howe in April.
        let lord_howe = CronSchedule::parse("30 1-3 * * *", "Australia/Lord_Howe").unwrap();
        let (a, b) = lord_howe.starts_within(under_an_hour, now).expect("the repeated half hour");
        assert_eq!(b - a, chrono::Duration::minutes(30));
        for cron in ["* * * * *", "*/5 * * * *", "0,30 * * * *", "0-1 3 * * *", "*/59 * 1 * *", "? * * * *"] {
            assert!(!re.is_match(cron) && !fires_at_most_hourly(cron), "{cron:?} should be rejected");
            let starts = CronSchedule::parse(cron, "UTC").ok().and_then(|s| s.starts_within(under_an_hour, now));
            assert!(starts.is_some() || cron.starts_with('?'), "{cron:?} fires more than hourly");
        }
        // Not cron at all: the parser's error, not this rule's, is the one that applies.
        assert!(!fires_at_most_hourly("") && !fires_at_most_hourly("5"));
    }

    #[test]
    fn minimal_yaml_gets_the_contract_defaults() {
        let spec: KeyRotationSpec = serde_yaml::from_str("schedule: \"0 3 1 * *\"\nsecretName: bee-key\n").unwrap();
        assert_eq!(spec.time_zone, "UTC");
        assert_eq!(spec.key_type, KeyType::Secp256k1);
        assert_eq!(spec.keep_previous, 1);
        assert!(spec.targets.is_empty() && spec.colony_os.is_none() && !spec.suspend);
        assert_eq!(spec.secret_deletion_policy, SecretDeletionPolicy::Retain, "key Secrets outlive their KeyRotation");
        assert_eq!(spec, KeyRotationSpec { secret_name: "bee-key".into(), ..Default::default() });
        assert_eq!(spec.cadence(), RotationCadence::Cron { schedule: "0 3 1 * *", time_zone: "UTC" });
    }

    #[test]
    fn cadence() {
        let spec: KeyRotationSpec = serde_yaml::from_str("interval: 720h\nsecretName: k\n").unwrap();
        assert_eq!(spec.cadence(), RotationCadence::Interval(&"720h".into()));
        let neither = KeyRotationSpec { schedule: None, ..spec.clone() };
        let neither = KeyRotationSpec { interval: None, ..neither };
        assert_eq!(neither.cadence(), RotationCadence::Cron { schedule: MONTHLY_SCHEDULE, time_zone: "UTC" });
    }

    #[test]
    fn enums_serialize_as_the_contract_spells_them() {
        let spec: KeyRotationSpec = serde_yaml::from_str(
            "interval: 1h\nsecretName: k\nkeyType: random\nlength: 32\ntargets:\n- {kind: FinanceBee, name: bee}\n\
             - {kind: Deployment, name: web}\ncolonyOS: {colonyServerRef: {name: cs}, identity: executor, colonyName: z}\n",
        )
        .unwrap();
        assert_eq!(spec.key_type, KeyType::Random);
        assert_eq!(spec.length, Some(32));
        assert_eq!(spec.targets[0].key(), "FinanceBee/bee");
        assert_eq!(spec.targets[1].kind, TargetKind::Deployment);
        assert_eq!(spec.colony_os.as_ref().unwrap().identity, Identity::Executor);
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["keyType"], "random");
        assert_eq!(json["colonyOS"]["identity"], "executor");
        for k in [KeyType::Secp256k1, KeyType::Ed25519, KeyType::Random] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        for k in [TargetKind::FinanceBee, TargetKind::ColonyServer, TargetKind::Deployment] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert!(serde_yaml::from_str::<KeyRotationSpec>("interval: 1h\nsecretName: k\nkeyType: rsa\n").is_err());
    }

    #[test]
    fn status_round_trips() {
        let t = DateTime::parse_from_rfc3339("2026-03-01T03:00:00Z").unwrap().with_timezone(&Utc);
        let status = KeyRotationStatus {
            revision: 4,
            last_rotation_time: Some(t),
            phase: Some(RotationPhase::RollingOut),
            targets: Some(TargetsStatus {
                rolled: vec!["FinanceBee/bee".into()],
                pending: vec!["Deployment/web".into()],
            }),
            handled_rotate_now: Some("2026-03-01".into()),
            ..Default::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["phase"], "RollingOut");
        assert_eq!(json["lastRotationTime"], "2026-03-01T03:00:00Z");
        assert_eq!(serde_json::from_value::<KeyRotationStatus>(json).unwrap(), status);
    }
}
