//! MaintenanceWindow: planned maintenance of a ColonyServer (the runbook's "before / during /
//! after"): fallback on, Finance Bees stopped, then verified recovery.
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    CRON_PATTERN, LocalObjectReference, TIME_ZONE_PATTERN, default_time_zone, default_true, duration_schema,
    optional_duration_schema, optional_timestamp_schema,
};

/// Desired maintenance of a ColonyServer: when, what the operator does during it, and how it
/// verifies the server afterwards.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "colony.zyeute.io",
    version = "v1alpha1",
    kind = "MaintenanceWindow",
    namespaced,
    status = "MaintenanceWindowStatus",
    shortname = "mw",
    category = "colony",
    derive = "PartialEq",
    doc = "Planned maintenance of a ColonyServer: during the window the fallback is on and Finance Bees are stopped; afterwards the server must pass health probes before normal operation resumes.",
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "description": "Whether the window is reconciled"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Scheduled, Active, Verifying, Completed or Failed"}"#,
    printcolumn = r#"{"name": "Next", "type": "string", "jsonPath": ".status.nextStart", "description": "Start of the next window"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindowSpec {
    /// When the window is open: a one-off `start`/`end`, or a recurring `cron`/`duration`.
    pub schedule: WindowSchedule,
    /// The ColonyServer under maintenance (same namespace).
    pub colony_server_ref: LocalObjectReference,
    /// FinanceBees stopped during the window, by label. Unset or empty: every FinanceBee whose
    /// `colonyServerRef` is this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finance_bees: Option<LabelSelector>,
    /// What the operator does while the window is open.
    #[serde(default)]
    pub actions: MaintenanceActions,
    /// How recovery is verified after the window closes.
    #[serde(default)]
    pub verify: VerifySpec,
    /// Ignore the schedule (a window already open is closed normally).
    #[serde(default)]
    pub suspend: bool,
}

/// When a maintenance window is open: exactly one of the one-off form (`start` and `end`) and
/// the recurring form (`cron` and `duration`, in `timeZone`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("!((has(self.start) || has(self.end)) && (has(self.cron) || has(self.duration)))").message("spec.schedule must use either start/end (one-off) or cron/duration (recurring), not both"),
    validation = Rule::new("has(self.start) || has(self.end) || has(self.cron) || has(self.duration)").message("spec.schedule needs either start and end (one-off) or cron and duration (recurring)"),
    validation = Rule::new("has(self.start) == has(self.end)").message("spec.schedule.start and spec.schedule.end must be set together").reason(Reason::FieldValueRequired),
    validation = Rule::new("has(self.cron) == has(self.duration)").message("spec.schedule.cron and spec.schedule.duration must be set together").reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.start) || !has(self.end) || timestamp(self.end) > timestamp(self.start)").message("spec.schedule.end must be after spec.schedule.start").field_path(".end"),
)]
#[serde(rename_all = "camelCase")]
pub struct WindowSchedule {
    /// Start of a one-off window (RFC 3339, e.g. `2026-03-01T02:00:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_timestamp_schema")]
    pub start: Option<DateTime<Utc>>,
    /// End of a one-off window (RFC 3339), after `start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_timestamp_schema")]
    pub end: Option<DateTime<Utc>>,
    /// Start times of a recurring window: cron expression (five fields, minute hour
    /// day-of-month month day-of-week) in `timeZone`, e.g. `0 2 * * 0` for Sundays 02:00.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), regex(pattern = CRON_PATTERN))]
    pub cron: Option<String>,
    /// Length of each recurring window (Go duration, e.g. `2h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_duration_schema")]
    pub duration: Option<String>,
    /// IANA time zone of `cron` (ignored by the one-off form, whose times carry an offset).
    #[serde(default = "default_time_zone")]
    #[schemars(length(min = 1, max = 64), regex(pattern = TIME_ZONE_PATTERN))]
    pub time_zone: String,
}

impl Default for WindowSchedule {
    fn default() -> Self {
        Self { start: None, end: None, cron: None, duration: None, time_zone: default_time_zone() }
    }
}

/// The two forms of a window schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScheduleForm<'a> {
    /// One window from `start` to `end`.
    OneOff { start: DateTime<Utc>, end: DateTime<Utc> },
    /// A window of `duration` starting at every `cron` time in `time_zone`.
    Recurring { cron: &'a str, duration: &'a str, time_zone: &'a str },
}

impl WindowSchedule {
    /// The form in use, or `None` when the fields do not make up exactly one complete form
    /// (the API server rejects such objects; this guards against bypassed validation).
    pub fn form(&self) -> Option<ScheduleForm<'_>> {
        match (self.start, self.end, self.cron.as_deref(), self.duration.as_deref()) {
            (Some(start), Some(end), None, None) if end > start => Some(ScheduleForm::OneOff { start, end }),
            (None, None, Some(cron), Some(duration)) => {
                Some(ScheduleForm::Recurring { cron, duration, time_zone: &self.time_zone })
            }
            _ => None,
        }
    }
}

/// What the operator does while a window is open.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceActions {
    /// Turn the server's direct-processing fallback on for the window.
    #[serde(default = "default_true")]
    pub enable_fallback: bool,
    /// Scale the selected FinanceBees to zero for the window and its verification (and after
    /// a failed verification with `onFailure: keepFallback`).
    #[serde(default = "default_true")]
    pub stop_finance_bees: bool,
}

impl Default for MaintenanceActions {
    fn default() -> Self {
        Self { enable_fallback: true, stop_finance_bees: true }
    }
}

/// Verification after the window closes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VerifySpec {
    /// Consecutive healthy probes of the server that complete the window.
    #[serde(default = "default_verify_success_threshold")]
    #[schemars(range(min = 1, max = 1000))]
    pub success_threshold: i32,
    /// Time allowed for verification (Go duration); then the window fails.
    #[serde(default = "default_verify_timeout")]
    #[schemars(schema_with = "duration_schema")]
    pub timeout: String,
    /// After a failed verification: `keepFallback` (the fallback stays on and the bees stay
    /// stopped until a human acts: set `onFailure: restore`, set `suspend: true`, or delete
    /// the window; the window is Stalled meanwhile) or `restore` (resume normal operation
    /// anyway).
    #[serde(default)]
    pub on_failure: OnFailure,
}

fn default_verify_success_threshold() -> i32 {
    3
}
fn default_verify_timeout() -> String {
    "10m".into()
}

impl Default for VerifySpec {
    fn default() -> Self {
        Self {
            success_threshold: default_verify_success_threshold(),
            timeout: default_verify_timeout(),
            on_failure: OnFailure::default(),
        }
    }
}

/// What happens when verification fails.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "camelCase")]
pub enum OnFailure {
    /// Keep the fallback on and the bees stopped until a human acts.
    #[default]
    KeepFallback,
    /// Resume normal operation.
    Restore,
}

/// Observed state of a MaintenanceWindow, written by the operator on transitions only.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindowStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Active, and Reconciling/Stalled while true.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Where the window is in its cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<WindowPhase>,
    /// The open (or verifying) window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_window: Option<WindowBounds>,
    /// Start of the next window; unset when none is coming.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Time>")]
    pub next_start: Option<DateTime<Utc>>,
    /// How the last window ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<WindowOutcome>,
    /// The last `colony.zyeute.io/end-now` value acted upon; a different value ends the open
    /// window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_end_now: Option<String>,
}

/// Where the window is in its cycle: Scheduled, Active, Verifying, Completed or Failed.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum WindowPhase {
    /// Waiting for the next window.
    #[default]
    Scheduled,
    /// The window is open.
    Active,
    /// The window closed; probing the server.
    Verifying,
    /// The last window ended and the server verified healthy (one-off: for good).
    Completed,
    /// Verification failed.
    Failed,
}

/// Start and end of one window.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WindowBounds {
    /// When the window opened.
    #[schemars(with = "Time")]
    pub start: DateTime<Utc>,
    /// When the window closes (or closed).
    #[schemars(with = "Time")]
    pub end: DateTime<Utc>,
}

/// How a window ended.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WindowOutcome {
    /// When the window opened.
    #[schemars(with = "Time")]
    pub start: DateTime<Utc>,
    /// When the window closed.
    #[schemars(with = "Time")]
    pub end: DateTime<Utc>,
    /// `Completed` or `Failed`.
    pub result: WindowPhase,
    /// Details, e.g. why verification failed or that the window was ended early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn minimal_yaml_gets_the_contract_defaults() {
        let spec: MaintenanceWindowSpec =
            serde_yaml::from_str("schedule: {cron: \"0 2 * * 0\", duration: 2h}\ncolonyServerRef: {name: colonies}\n")
                .unwrap();
        assert_eq!(spec.schedule.time_zone, "UTC");
        assert_eq!(spec.finance_bees, None);
        assert!(spec.actions.enable_fallback && spec.actions.stop_finance_bees);
        assert_eq!(spec.verify, VerifySpec::default());
        assert_eq!(spec.verify.success_threshold, 3);
        assert_eq!(spec.verify.timeout, "10m");
        assert_eq!(spec.verify.on_failure, OnFailure::KeepFallback);
        assert!(!spec.suspend);
        assert_eq!(
            spec.schedule.form(),
            Some(ScheduleForm::Recurring { cron: "0 2 * * 0", duration: "2h", time_zone: "UTC" })
        );
    }

    #[test]
    fn one_off_form_with_offsets() {
        let spec: MaintenanceWindowSpec = serde_yaml::from_str(
            "schedule: {start: \"2026-03-01T02:00:00-05:00\", end: \"2026-03-01T04:00:00-05:00\"}\n\
             colonyServerRef: {name: colonies}\nverify: {onFailure: restore}\n",
        )
        .unwrap();
        assert_eq!(
            spec.schedule.form(),
            Some(ScheduleForm::OneOff { start: t("2026-03-01T07:00:00Z"), end: t("2026-03-01T09:00:00Z") })
        );
        assert_eq!(spec.verify.on_failure, OnFailure::Restore);
        assert_eq!(serde_json::to_value(spec.verify.on_failure).unwrap(), "restore");
        assert_eq!(serde_json::to_value(OnFailure::KeepFallback).unwrap(), "keepFallback");
    }

    #[test]
    fn incomplete_or_mixed_forms_have_no_form() {
        let base = WindowSchedule::default();
        assert_eq!(base.form(), None);
        let start = Some(t("2026-03-01T02:00:00Z"));
        let end = Some(t("2026-03-01T04:00:00Z"));
        assert_eq!(WindowSchedule { start, ..base.clone() }.form(), None);
        assert_eq!(WindowSchedule { start: end, end: start, ..base.clone() }.form(), None);
        assert_eq!(WindowSchedule { cron: Some("0 2 * * 0".into()), ..base.clone() }.form(), None);
        let both = WindowSchedule { start, end, cron: Some("0 2 * * 0".into()), duration: Some("2h".into()), ..base };
        assert_eq!(both.form(), None);
    }

    #[test]
    fn status_round_trips() {
        let status = MaintenanceWindowStatus {
            phase: Some(WindowPhase::Verifying),
            current_window: Some(WindowBounds { start: t("2026-03-01T02:00:00Z"), end: t("2026-03-01T04:00:00Z") }),
            next_start: Some(t("2026-03-08T02:00:00Z")),
            last_outcome: Some(WindowOutcome {
                start: t("2026-02-22T02:00:00Z"),
                end: t("2026-02-22T04:00:00Z"),
                result: WindowPhase::Completed,
                message: None,
            }),
            ..Default::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["phase"], "Verifying");
        assert_eq!(json["currentWindow"]["end"], "2026-03-01T04:00:00Z");
        assert_eq!(json["lastOutcome"]["result"], "Completed");
        assert_eq!(serde_json::from_value::<MaintenanceWindowStatus>(json).unwrap(), status);
    }
}
