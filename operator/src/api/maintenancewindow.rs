//! MaintenanceWindow: planned maintenance of a ColonyServer (the runbook's "before / during /
//! after"): fallback on, Finance Bees stopped, then verified recovery.
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::core::{Message, Rule};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::GoDuration;
use super::common::{
    CRON_PATTERN, LocalObjectReference, TIME_ZONE_PATTERN, default_time_zone, default_true, optional_timestamp_schema,
};
use crate::duration::format_go_duration;
use crate::schedule::CronSchedule;

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
    validation = cron_period_rule(&CRON_PERIODS[0]),
    validation = cron_period_rule(&CRON_PERIODS[1]),
    validation = cron_period_rule(&CRON_PERIODS[2]),
    validation = cron_period_rule(&CRON_PERIODS[3]),
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
    /// Length of each recurring window (Go duration, e.g. `2h`). At least `1m`, and shorter
    /// than the time between two starts of `cron` (a window must close before the next one
    /// opens): the API server rejects the cron shapes it can judge (every minute, every hour,
    /// daily, weekly); the operator checks every pair of successive starts in the coming year
    /// (at most 20,000 starts) and reports any other overlap as Stalled/InvalidSpec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<WindowDuration>,
    /// IANA time zone of `cron` (ignored by the one-off form, whose times carry an offset).
    #[serde(default = "default_time_zone")]
    #[schemars(length(min = 1, max = 64), regex(pattern = TIME_ZONE_PATTERN))]
    pub time_zone: String,
}

/// Shortest recurring window: cron has minute resolution.
pub type WindowDuration = GoDuration<60_000>;

/// A cron shape whose successive starts are never further apart than `period` (in any time
/// zone, on at least one day of the year), so a window of `period` or longer would overlap
/// the next one. CEL cannot evaluate cron, but it can recognise these shapes.
pub struct CronPeriod {
    /// How often such a cron fires, for the message.
    pub what: &'static str,
    /// RE2 regular expression on the cron expression (as [`CRON_PATTERN`] admits it: fields
    /// separated by spaces, minute first).
    pub pattern: &'static str,
    /// The longest time between two successive starts.
    pub period: Duration,
}

/// The cron shapes the API server judges. `L` and `#` in the weekday field (`5L`, `5#3`)
/// fire monthly, so the weekly shape excludes them.
pub const CRON_PERIODS: [CronPeriod; 4] = [
    CronPeriod { what: "every minute", pattern: r"^[*] ", period: Duration::from_secs(60) },
    CronPeriod { what: "every hour", pattern: r"^[^ ]+ +[*] ", period: Duration::from_secs(3600) },
    CronPeriod { what: "every day", pattern: r"^[^ ]+ +[^ ]+ +[*] +[*] +[*]$", period: Duration::from_secs(86_400) },
    CronPeriod {
        what: "every week",
        pattern: r"^[^ ]+ +[^ ]+ +[*] +[*] +[^ #Ll]+$",
        period: Duration::from_secs(7 * 86_400),
    },
];

fn cron_period_rule(p: &CronPeriod) -> Rule {
    let period = format_go_duration(p.period);
    Rule::new(format!(
        "!has(self.cron) || !has(self.duration) || !self.cron.matches('{}') || duration(self.duration) < duration('{period}')",
        p.pattern
    ))
    .message(Message::Message(format!(
        "spec.schedule.duration must be shorter than the time between two starts of spec.schedule.cron, which \
         fires {} (at most {period} apart)",
        p.what
    )))
    .field_path(".duration")
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
    Recurring { cron: &'a str, duration: &'a WindowDuration, time_zone: &'a str },
}

impl WindowSchedule {
    /// The form in use, or `None` when the fields do not make up exactly one complete form
    /// (the API server rejects such objects; this guards against bypassed validation).
    pub fn form(&self) -> Option<ScheduleForm<'_>> {
        match (self.start, self.end, self.cron.as_deref(), self.duration.as_ref()) {
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
    /// Time allowed for verification (Go duration); then the window fails. At least `10s`.
    #[serde(default = "default_verify_timeout")]
    pub timeout: VerifyTimeout,
    /// After a failed verification: `keepFallback` (the fallback stays on and the bees stay
    /// stopped until a human acts: set `onFailure: restore`, set `suspend: true`, or delete
    /// the window; the window is Stalled meanwhile) or `restore` (resume normal operation
    /// anyway).
    #[serde(default)]
    pub on_failure: OnFailure,
}

/// Shortest `verify.timeout`: verification needs `successThreshold` probes in a row.
pub type VerifyTimeout = GoDuration<10_000>;

impl MaintenanceWindowSpec {
    /// The checks of the schema's CEL rules that a value could have slipped past (objects
    /// admitted before a rule existed), and the one CEL cannot make: a recurring window must
    /// close before the next one opens, for every pair of successive starts in the year after
    /// `now` (see [`CronSchedule::starts_within`]).
    pub fn check(&self, now: DateTime<Utc>) -> Result<(), String> {
        self.verify.timeout.check("spec.verify.timeout")?;
        let (Some(cron), Some(duration)) = (&self.schedule.cron, &self.schedule.duration) else {
            return Ok(());
        };
        let d = duration.check("spec.schedule.duration")?;
        let schedule =
            CronSchedule::parse(cron, &self.schedule.time_zone).map_err(|e| format!("spec.schedule.cron: {e}"))?;
        let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        // The message names the gap, not when it happens, so it stays the same as time passes
        // (a status written once, not on every reconcile).
        match schedule.starts_within(d, now) {
            Some((a, b)) => Err(format!(
                "spec.schedule.duration ({duration}) must be shorter than the time between two starts of \
                 spec.schedule.cron ({cron:?} in {}): two successive starts are only {} apart",
                self.schedule.time_zone,
                format_go_duration((b - a).to_std().unwrap_or_default()),
            )),
            None => Ok(()),
        }
    }
}

fn default_verify_success_threshold() -> i32 {
    3
}
fn default_verify_timeout() -> VerifyTimeout {
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

impl MaintenanceWindow {
    /// The phase of the window, as its controller last recorded it.
    fn phase(&self) -> Option<WindowPhase> {
        self.status.as_ref().and_then(|s| s.phase)
    }

    /// Whether the window, by its recorded phase, keeps an action (`enable_fallback`,
    /// `stop_finance_bees`) in force: while open, while verifying the server, and after a
    /// failed verification with `onFailure: keepFallback` until a human acts
    /// (`onFailure: restore`, `suspend: true`, or deleting the window).
    fn keeps(&self, action: bool) -> bool {
        if !action || self.spec.suspend {
            return false;
        }
        match self.phase() {
            Some(WindowPhase::Active | WindowPhase::Verifying) => true,
            Some(WindowPhase::Failed) => self.spec.verify.on_failure == OnFailure::KeepFallback,
            _ => false,
        }
    }

    /// Whether the window asks its ColonyServer to keep the fallback on.
    pub fn holds_fallback(&self) -> bool {
        self.keeps(self.spec.actions.enable_fallback)
    }

    /// Whether the window keeps its FinanceBees at 0 replicas.
    pub fn stops_bees(&self) -> bool {
        self.keeps(self.spec.actions.stop_finance_bees)
    }

    /// Whether the window is open (a key rotation waiting for it may run).
    pub fn is_open(&self) -> bool {
        !self.spec.suspend && self.phase() == Some(WindowPhase::Active)
    }
}

/// What the open windows require of one ColonyServer (and its bees): the one rule every
/// controller asks, over the windows of the server's namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowDemand<'a> {
    /// The server's fallback stays on.
    Fallback,
    /// The bee with these labels is stopped.
    StopBee(&'a std::collections::BTreeMap<String, String>),
}

/// Names (sorted) of the windows among `windows` that target the server `server` and demand
/// `demand` now.
pub fn windows_demanding<'a>(
    windows: impl IntoIterator<Item = &'a MaintenanceWindow>,
    server: &str,
    demand: WindowDemand<'_>,
) -> Vec<String> {
    let mut names: Vec<String> = windows
        .into_iter()
        .filter(|w| w.spec.colony_server_ref.name == server)
        .filter(|w| match demand {
            WindowDemand::Fallback => w.holds_fallback(),
            WindowDemand::StopBee(labels) => {
                w.stops_bees() && super::selector_matches(w.spec.finance_bees.as_ref(), labels)
            }
        })
        .map(|w| w.metadata.name.clone().unwrap_or_default())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

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
            Some(ScheduleForm::Recurring { cron: "0 2 * * 0", duration: &"2h".into(), time_zone: "UTC" })
        );
    }

    fn recurring(cron: &str, duration: &str, time_zone: &str) -> MaintenanceWindowSpec {
        serde_yaml::from_str(&format!(
            "schedule: {{cron: \"{cron}\", duration: \"{duration}\", timeZone: {time_zone}}}\ncolonyServerRef: {{name: c}}\n"
        ))
        .unwrap()
    }

    #[test]
    fn check_rejects_windows_that_overlap_the_next_one() {
        let now = t("2026-11-29T12:00:00Z");
        assert_eq!(recurring("0 2 * * 0", "2h", "UTC").check(now), Ok(()));
        assert_eq!(recurring("0 2 * * 0", "167h59m", "UTC").check(now), Ok(()));
        let e = recurring("0 2 * * 0", "168h", "UTC").check(now).unwrap_err();
        assert!(e.starts_with("spec.schedule.duration (168h) must be shorter than the time between two starts"), "{e}");
        assert!(e.contains("only 168h apart"), "{e}");
        // Not a shape CEL judges: 02:00 and 04:00 on Sundays.
        assert!(recurring("0 2,4 * * 0", "2h", "UTC").check(now).unwrap_err().contains("only 2h apart"));
        assert_eq!(recurring("0 2,4 * * 0", "1h59m", "UTC").check(now), Ok(()));
        // Daylight saving: 23h30m fits a UTC day, not the day Paris moves its clocks forward.
        assert_eq!(recurring("30 3 * * *", "23h30m", "UTC").check(now), Ok(()));
        let e = recurring("30 3 * * *", "23h30m", "Europe/Paris").check(now).unwrap_err();
        assert!(e.contains("only 23h apart"), "{e}");
    }

    #[test]
    fn check_applies_the_minimums() {
        let now = t("2026-11-29T12:00:00Z");
        let e = recurring("0 2 * * 0", "59s", "UTC").check(now).unwrap_err();
        assert_eq!(e, "spec.schedule.duration: \"59s\" is shorter than the minimum of 1m");
        let mut spec = recurring("0 2 * * 0", "1m", "UTC");
        assert_eq!(spec.check(now), Ok(()));
        spec.verify.timeout = "9s".into();
        assert!(spec.check(now).unwrap_err().starts_with("spec.verify.timeout"));
        let e = recurring("0 2 * * 8", "1h", "UTC").check(now).unwrap_err();
        assert!(e.starts_with("spec.schedule.cron"), "{e}");
        // The one-off form has no cron to check.
        let one_off: MaintenanceWindowSpec = serde_yaml::from_str(
            "schedule: {start: \"2026-03-01T02:00:00Z\", end: \"2026-03-01T02:00:30Z\"}\ncolonyServerRef: {name: c}\n",
        )
        .unwrap();
        assert_eq!(one_off.check(now), Ok(()));
    }

    /// The cron shapes the API server judges are sound: every cron of that shape really starts
    /// twice within the shape's period, so CEL never rejects a window the operator would run.
    #[test]
    fn cron_periods_never_reject_a_fitting_window() {
        let now = t("2026-11-29T12:00:00Z");
        let samples: [&[&str]; 4] = [
            &["* * * * *", "* 3 * * 1", "* */2 1 1 *"],
            &["0 * * * *", "15,45 * 1 1 *", "*/30 * * * 6"],
            &["0 2 * * *", "30 */6 * * *", "59 23 * * *", "0 0,12 * * *"],
            &["0 2 * * 0", "0 2 * * MON-FRI", "0 3 * * 6", "0 0 * * 1,4", "0 2 * * */3"],
        ];
        for (p, crons) in CRON_PERIODS.iter().zip(samples) {
            let re = regex::Regex::new(p.pattern).unwrap();
            for cron in crons {
                assert!(re.is_match(cron), "{cron:?} should be judged {}", p.what);
                for tz in ["UTC", "Europe/Paris", "America/Santiago", "Australia/Lord_Howe"] {
                    let s = CronSchedule::parse(cron, tz).unwrap();
                    let period = chrono::Duration::from_std(p.period).unwrap();
                    assert!(s.starts_within(period, now).is_some(), "{cron:?} in {tz}: two starts within {}", p.what);
                }
            }
        }
        // Shapes CEL leaves to the operator (monthly weekdays, days of the month, months).
        for cron in ["0 2 * * 5#3", "0 2 * * 5L", "0 2 1 * *", "0 2 * 1 *", "0 2 1 * 1", "*/5 2 1 * *"] {
            for p in &CRON_PERIODS {
                assert!(!regex::Regex::new(p.pattern).unwrap().is_match(cron), "{cron:?} judged {}", p.what);
            }
        }
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

    fn window_spec(server: &str) -> MaintenanceWindowSpec {
        serde_yaml::from_str(&format!(
            "schedule: {{cron: '0 2 * * 0', duration: 1h}}\ncolonyServerRef: {{name: {server}}}\n"
        ))
        .unwrap()
    }

    fn window(name: &str, server: &str, phase: WindowPhase) -> MaintenanceWindow {
        let mut mw = MaintenanceWindow::new(name, window_spec(server));
        mw.status = Some(MaintenanceWindowStatus { phase: Some(phase), ..Default::default() });
        mw
    }

    #[test]
    fn windows_demanding_picks_the_windows_of_the_server_that_demand_it_now() {
        let mut tier = window("b-tier", "prod", WindowPhase::Active);
        tier.spec.finance_bees = Some(LabelSelector {
            match_labels: Some([("tier".to_string(), "finance".to_string())].into()),
            ..Default::default()
        });
        let mut no_fallback = window("c-bees-only", "prod", WindowPhase::Verifying);
        no_fallback.spec.actions.enable_fallback = false;
        let windows = [
            window("z-active", "prod", WindowPhase::Active),
            tier,
            no_fallback,
            window("a-other-server", "staging", WindowPhase::Active),
            window("d-scheduled", "prod", WindowPhase::Scheduled),
            window("e-completed", "prod", WindowPhase::Completed),
        ];
        assert_eq!(windows_demanding(&windows, "prod", WindowDemand::Fallback), ["b-tier", "z-active"]);
        let finance = [("tier".to_string(), "finance".to_string())].into();
        assert_eq!(
            windows_demanding(&windows, "prod", WindowDemand::StopBee(&finance)),
            ["b-tier", "c-bees-only", "z-active"]
        );
        assert_eq!(
            windows_demanding(&windows, "prod", WindowDemand::StopBee(&BTreeMap::new())),
            ["c-bees-only", "z-active"]
        );
        assert!(windows_demanding(&windows, "nowhere", WindowDemand::Fallback).is_empty());
    }

    #[test]
    fn only_an_active_unsuspended_window_is_open() {
        for phase in [WindowPhase::Scheduled, WindowPhase::Verifying, WindowPhase::Completed, WindowPhase::Failed] {
            assert!(!window("w", "prod", phase).is_open(), "{phase:?}");
        }
        let mut active = window("w", "prod", WindowPhase::Active);
        assert!(active.is_open());
        active.spec.suspend = true;
        assert!(!active.is_open());
    }

    #[test]
    fn bees_stay_stopped_while_verifying_and_after_a_kept_failure() {
        let mut mw = MaintenanceWindow::new("w", window_spec("prod"));
        for (phase, stops) in [
            (WindowPhase::Scheduled, false),
            (WindowPhase::Active, true),
            (WindowPhase::Verifying, true),
            (WindowPhase::Completed, false),
            (WindowPhase::Failed, true),
        ] {
            mw.status = Some(MaintenanceWindowStatus { phase: Some(phase), ..Default::default() });
            assert_eq!(mw.stops_bees(), stops, "{phase:?}");
        }
        mw.spec.verify.on_failure = OnFailure::Restore;
        assert!(!mw.stops_bees(), "restore lets them run after a failure");
        mw.spec.verify.on_failure = OnFailure::KeepFallback;
        mw.spec.suspend = true;
        assert!(!mw.stops_bees(), "suspending the window lets them run");
        mw.spec.suspend = false;
        mw.spec.actions.stop_finance_bees = false;
        assert!(!mw.stops_bees());
    }
}
