//! SLO evaluation from the `colonies monitor` Prometheus gauges. Pure: no IO, `now` is
//! passed in.
//!
//! The gauges `colonies_server_processes_{waiting,running,successful,failed}` are lifetime
//! totals (waiting/running are current counts); `successful` and `failed` only grow, except
//! when the server's retention deletes old processes, which shrinks them. Rates are
//! therefore computed from the difference between two samples, and a shrinking counter
//! makes the rate unknown for that interval. A gauge that reads `-1` means the monitor's
//! fetch failed: unknown. Unknown is never a breach.
//!
//! Thresholds (names as in `spec.slo`):
//! - queue depth (= waiting) violates when `> maxQueueDepth`,
//! - completion rate violates when `< minCompletionRate`,
//! - error rate violates when `> maxErrorRate`.
//!
//! Equal to the limit is within the SLO. Completion and error rates are over completed
//! processes only (successful + failed); cancelled processes are not counted.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

pub const METRIC_WAITING: &str = "colonies_server_processes_waiting";
pub const METRIC_RUNNING: &str = "colonies_server_processes_running";
pub const METRIC_SUCCESSFUL: &str = "colonies_server_processes_successful";
pub const METRIC_FAILED: &str = "colonies_server_processes_failed";

/// The four process gauges; `None` = absent, unparsable, negative (`-1`) or not finite.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessCounts {
    pub waiting: Option<f64>,
    pub running: Option<f64>,
    pub successful: Option<f64>,
    pub failed: Option<f64>,
}

impl ProcessCounts {
    /// True when no gauge is known (e.g. the scrape returned something else entirely).
    pub fn is_empty(&self) -> bool {
        self.waiting.is_none() && self.running.is_none() && self.successful.is_none() && self.failed.is_none()
    }
}

/// Read the process gauges from Prometheus text exposition format.
///
/// Comments (`# HELP`, `# TYPE`, ...) and other metrics are ignored; labels are accepted
/// and ignored. Should a gauge appear in several series (different labels), the series are
/// summed; if any of them is unknown the gauge is unknown. A value that is negative (the
/// monitor's `-1`), NaN or infinite is unknown. An optional trailing timestamp is ignored.
pub fn parse_prometheus_text(text: &str) -> ProcessCounts {
    #[derive(Clone, Copy)]
    enum Acc {
        Absent,
        Known(f64),
        Unknown,
    }
    fn add(acc: Acc, v: Option<f64>) -> Acc {
        match (acc, v) {
            (Acc::Unknown, _) | (_, None) => Acc::Unknown,
            (Acc::Absent, Some(v)) => Acc::Known(v),
            (Acc::Known(a), Some(v)) => Acc::Known(a + v),
        }
    }
    fn get(acc: Acc) -> Option<f64> {
        match acc {
            Acc::Known(v) => Some(v),
            _ => None,
        }
    }

    let mut acc = [Acc::Absent; 4];
    for line in text.lines() {
        let Some((name, value)) = parse_sample_line(line) else {
            continue;
        };
        let idx = match name {
            METRIC_WAITING => 0,
            METRIC_RUNNING => 1,
            METRIC_SUCCESSFUL => 2,
            METRIC_FAILED => 3,
            _ => continue,
        };
        acc[idx] = add(acc[idx], value);
    }
    ProcessCounts { waiting: get(acc[0]), running: get(acc[1]), successful: get(acc[2]), failed: get(acc[3]) }
}

/// One sample line → (metric name, value when it is a usable count). `None` for comments,
/// blank and malformed lines.
fn parse_sample_line(line: &str) -> Option<(&str, Option<f64>)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    if rest.starts_with('{') {
        rest = skip_labels(rest)?;
    }
    let value = rest.split_whitespace().next()?;
    Some((name, parse_count(value)))
}

/// Skip a `{...}` label set, honouring quoted values with escapes; returns what follows.
fn skip_labels(s: &str) -> Option<&str> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quotes = false;
            }
        } else if c == '"' {
            in_quotes = true;
        } else if c == '}' {
            return Some(&s[i + 1..]);
        }
    }
    None
}

fn parse_count(v: &str) -> Option<f64> {
    let x: f64 = v.parse().ok()?;
    (x.is_finite() && x >= 0.0).then_some(x)
}

/// The process counts of a `getcolonystatsmsg` reply (`waitingprocesses`,
/// `runningprocesses`, `successfulprocesses`, `failedprocesses`: integers, pkg/core/
/// statistics.go). `None` — a failed sample, never zeros — when the reply is not an object
/// with all four as non-negative integers: a caller without rights gets an empty body, and
/// anything else is not statistics either.
pub fn counts_from_statistics(reply: &serde_json::Value) -> Option<ProcessCounts> {
    let count = |field: &str| reply.get(field)?.as_u64().map(|v| v as f64);
    Some(ProcessCounts {
        waiting: Some(count("waitingprocesses")?),
        running: Some(count("runningprocesses")?),
        successful: Some(count("successfulprocesses")?),
        failed: Some(count("failedprocesses")?),
    })
}

/// One scrape, timestamped.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SloSample {
    pub at: DateTime<Utc>,
    pub counts: ProcessCounts,
}

/// The thresholds from `spec.slo` (without `for`, which the [`SloBreachTracker`] takes).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SloLimits {
    pub max_queue_depth: f64,
    pub min_completion_rate: f64,
    pub max_error_rate: f64,
}

impl Default for SloLimits {
    /// The CRD defaults (the runbook's targets): 10, 0.99, 0.01.
    fn default() -> Self {
        Self { max_queue_depth: 10.0, min_completion_rate: 0.99, max_error_rate: 0.01 }
    }
}

/// One violated objective, with the observed value and the limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "slo", rename_all = "camelCase")]
pub enum SloViolation {
    QueueDepth { value: f64, max: f64 },
    CompletionRate { value: f64, min: f64 },
    ErrorRate { value: f64, max: f64 },
}

impl SloViolation {
    /// CamelCase reason for conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            SloViolation::QueueDepth { .. } => "QueueDepthExceeded",
            SloViolation::CompletionRate { .. } => "CompletionRateTooLow",
            SloViolation::ErrorRate { .. } => "ErrorRateTooHigh",
        }
    }

    /// Short human message, e.g. `queue depth 12 > 10`.
    pub fn message(&self) -> String {
        match self {
            SloViolation::QueueDepth { value, max } => format!("queue depth {value} > {max}"),
            SloViolation::CompletionRate { value, min } => {
                format!("completion rate {:.2}% < {:.2}%", value * 100.0, min * 100.0)
            }
            SloViolation::ErrorRate { value, max } => {
                format!("error rate {:.2}% > {:.2}%", value * 100.0, max * 100.0)
            }
        }
    }
}

/// What one sample (against the previous one) says about the SLOs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SloEvaluation {
    /// `waiting` of the current sample.
    pub queue_depth: Option<f64>,
    /// Δsuccessful / (Δsuccessful + Δfailed) since the previous sample.
    pub completion_rate: Option<f64>,
    /// Δfailed / (Δsuccessful + Δfailed) since the previous sample.
    pub error_rate: Option<f64>,
    /// Empty when every known value is within its limit (unknown values never violate).
    pub violations: Vec<SloViolation>,
}

impl SloEvaluation {
    pub fn violating(&self) -> bool {
        !self.violations.is_empty()
    }
}

/// Evaluate `cur` against `limits`, computing rates from the difference with `prev`.
///
/// Rates are `None` (unknown, not a breach) when: there is no previous sample; either
/// sample lacks `successful` or `failed`; `cur` is not later than `prev`; a counter shrank
/// (retention deleted processes); or no process completed in between. The caller should
/// keep `cur` as the next `prev` in every case, so one shrink costs one interval.
pub fn evaluate(prev: Option<&SloSample>, cur: &SloSample, limits: &SloLimits) -> SloEvaluation {
    let queue_depth = cur.counts.waiting;
    let (completion_rate, error_rate) = match prev.and_then(|p| deltas(p, cur)) {
        Some((ds, df)) if ds + df > 0.0 => (Some(ds / (ds + df)), Some(df / (ds + df))),
        _ => (None, None),
    };
    let mut violations = Vec::new();
    if let Some(q) = queue_depth
        && q > limits.max_queue_depth
    {
        violations.push(SloViolation::QueueDepth { value: q, max: limits.max_queue_depth });
    }
    if let Some(c) = completion_rate
        && c < limits.min_completion_rate
    {
        violations.push(SloViolation::CompletionRate { value: c, min: limits.min_completion_rate });
    }
    if let Some(e) = error_rate
        && e > limits.max_error_rate
    {
        violations.push(SloViolation::ErrorRate { value: e, max: limits.max_error_rate });
    }
    SloEvaluation { queue_depth, completion_rate, error_rate, violations }
}

/// (Δsuccessful, Δfailed) when both are known and neither shrank.
fn deltas(prev: &SloSample, cur: &SloSample) -> Option<(f64, f64)> {
    if cur.at <= prev.at {
        return None;
    }
    let ds = cur.counts.successful? - prev.counts.successful?;
    let df = cur.counts.failed? - prev.counts.failed?;
    (ds >= 0.0 && df >= 0.0).then_some((ds, df))
}

/// What one [`SloBreachTracker::observe`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreachTransition {
    Unchanged,
    /// The violation has now lasted `for`: the breach is in force (fallback input).
    BreachStarted,
    /// A breach in force ended (a sample within the SLOs).
    BreachEnded,
}

/// "Violating continuously for at least `for`" as a pure state machine, kept in memory by
/// the controller (serializable, so it can also be put somewhere durable).
///
/// Rules:
/// - an evaluation with violations starts (or continues) the violating streak;
///   `violating_since` is the time of the first violating evaluation of the streak;
/// - the breach is in force once `now - violating_since >= for` (with `for == 0`, at the
///   first violating evaluation); `breach_started` is the `now` at which that was
///   observed;
/// - an evaluation without violations ends the streak and any breach. That includes
///   evaluations where values are unknown: unknown is not a breach. This matters for
///   recovery: while the fallback is on ColonyOS receives no new work, so rates become
///   unknown; if unknown kept a breach alive the fallback could never turn off.
///
/// Timestamps only change on transitions (steady state is silent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SloBreachTracker {
    pub violating_since: Option<DateTime<Utc>>,
    pub breach_started: Option<DateTime<Utc>>,
}

impl SloBreachTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Is a breach in force?
    pub fn breached(&self) -> bool {
        self.breach_started.is_some()
    }

    /// Feed one evaluation observed at `now`; `for_` is `spec.slo.for` (negative = 0).
    pub fn observe(&mut self, eval: &SloEvaluation, now: DateTime<Utc>, for_: TimeDelta) -> BreachTransition {
        if !eval.violating() {
            self.violating_since = None;
            return if self.breach_started.take().is_some() {
                BreachTransition::BreachEnded
            } else {
                BreachTransition::Unchanged
            };
        }
        let since = *self.violating_since.get_or_insert(now);
        if self.breach_started.is_none() && now - since >= for_.max(TimeDelta::zero()) {
            self.breach_started = Some(now);
            return BreachTransition::BreachStarted;
        }
        BreachTransition::Unchanged
    }

    /// When the current streak would become a breach if it keeps violating: the time to
    /// schedule the next evaluation at. `None` when not violating or already breached.
    pub fn breach_due_at(&self, for_: TimeDelta) -> Option<DateTime<Utc>> {
        match (self.violating_since, self.breach_started) {
            (Some(since), None) => {
                Some(since.checked_add_signed(for_.max(TimeDelta::zero())).unwrap_or(DateTime::<Utc>::MAX_UTC))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    fn counts(w: f64, r: f64, s: f64, f: f64) -> ProcessCounts {
        let k = |v: f64| (v >= 0.0).then_some(v);
        ProcessCounts { waiting: k(w), running: k(r), successful: k(s), failed: k(f) }
    }

    fn sample(at: i64, w: f64, s: f64, f: f64) -> SloSample {
        SloSample { at: t(at), counts: counts(w, 0.0, s, f) }
    }

    const MONITOR_OUTPUT: &str = "\
# HELP colonies_server_colonies Number of colonies
# TYPE colonies_server_colonies gauge
colonies_server_colonies 1
# HELP colonies_server_processes_waiting Number of waiting processes
# TYPE colonies_server_processes_waiting gauge
colonies_server_processes_waiting 4
# HELP colonies_server_processes_running Number of running processes
# TYPE colonies_server_processes_running gauge
colonies_server_processes_running 2
# HELP colonies_server_processes_successful Number of successful processes
# TYPE colonies_server_processes_successful gauge
colonies_server_processes_successful 1.234e+03
# HELP colonies_server_processes_failed Number of failed processes
# TYPE colonies_server_processes_failed gauge
colonies_server_processes_failed 7
colonies_server_workflows_failed 99
go_goroutines 42
";

    #[test]
    fn parses_monitor_output() {
        let c = parse_prometheus_text(MONITOR_OUTPUT);
        assert_eq!(
            c,
            ProcessCounts { waiting: Some(4.0), running: Some(2.0), successful: Some(1234.0), failed: Some(7.0) }
        );
        assert!(!c.is_empty());
    }

    #[test]
    fn minus_one_is_unknown() {
        let c = parse_prometheus_text(
            "colonies_server_processes_waiting -1\ncolonies_server_processes_running 0\ncolonies_server_processes_successful -1\ncolonies_server_processes_failed -1e+00\n",
        );
        assert_eq!(c, ProcessCounts { waiting: None, running: Some(0.0), successful: None, failed: None });
    }

    #[test]
    fn nan_inf_garbage_are_unknown() {
        for v in ["NaN", "+Inf", "-Inf", "abc", "", "1,5"] {
            let c = parse_prometheus_text(&format!("colonies_server_processes_waiting {v}\n"));
            assert_eq!(c.waiting, None, "{v:?}");
        }
    }

    #[test]
    fn empty_and_unrelated_text() {
        assert!(parse_prometheus_text("").is_empty());
        assert!(parse_prometheus_text("<html>502 Bad Gateway</html>").is_empty());
        assert!(parse_prometheus_text("# colonies_server_processes_waiting 5\n").is_empty(), "comment");
        // A longer name that merely starts with ours is another metric.
        assert!(parse_prometheus_text("colonies_server_processes_waiting_total 5\n").is_empty());
        assert!(parse_prometheus_text("xcolonies_server_processes_waiting 5\n").is_empty());
    }

    #[test]
    fn labels_timestamps_whitespace_and_crlf() {
        let c = parse_prometheus_text(
            "  colonies_server_processes_waiting{colony=\"a}b\",x=\"q\\\"}\"} 3 1700000000000\r\n\
             colonies_server_processes_running{} 1\r\n\
             colonies_server_processes_successful\t10\n\
             colonies_server_processes_failed{broken 5\n",
        );
        assert_eq!(c.waiting, Some(3.0));
        assert_eq!(c.running, Some(1.0));
        assert_eq!(c.successful, Some(10.0));
        assert_eq!(c.failed, None, "unterminated label set is skipped");
    }

    #[test]
    fn multiple_series_are_summed_and_any_unknown_poisons() {
        let c = parse_prometheus_text(
            "colonies_server_processes_waiting{colony=\"a\"} 3\n\
             colonies_server_processes_waiting{colony=\"b\"} 4\n\
             colonies_server_processes_failed{colony=\"a\"} 3\n\
             colonies_server_processes_failed{colony=\"b\"} -1\n\
             colonies_server_processes_failed{colony=\"c\"} 2\n",
        );
        assert_eq!(c.waiting, Some(7.0));
        assert_eq!(c.failed, None);
    }

    #[test]
    fn name_without_value_is_ignored() {
        let c =
            parse_prometheus_text("colonies_server_processes_waiting\ncolonies_server_processes_waiting{a=\"b\"}\n");
        assert!(c.is_empty());
    }

    #[test]
    fn evaluate_without_prev_only_queue_depth() {
        let l = SloLimits::default();
        let e = evaluate(None, &sample(0, 3.0, 100.0, 0.0), &l);
        assert_eq!(e.queue_depth, Some(3.0));
        assert_eq!(e.completion_rate, None);
        assert_eq!(e.error_rate, None);
        assert!(!e.violating());

        let e = evaluate(None, &sample(0, 11.0, 100.0, 50.0), &l);
        assert_eq!(e.violations, vec![SloViolation::QueueDepth { value: 11.0, max: 10.0 }]);
    }

    #[test]
    fn queue_depth_boundary() {
        let l = SloLimits::default();
        assert!(!evaluate(None, &sample(0, 10.0, 0.0, 0.0), &l).violating(), "equal to max is fine");
        assert!(evaluate(None, &sample(0, 10.5, 0.0, 0.0), &l).violating());
        assert!(!evaluate(None, &sample(0, -1.0, 0.0, 0.0), &l).violating(), "unknown never violates");
    }

    #[test]
    fn rates_from_deltas() {
        let l = SloLimits::default();
        let prev = sample(0, 0.0, 1000.0, 10.0);
        // 198 successes, 2 failures: completion 0.99, error 0.01 — exactly on the limits.
        let e = evaluate(Some(&prev), &sample(60, 0.0, 1198.0, 12.0), &l);
        assert_eq!(e.completion_rate, Some(0.99));
        assert_eq!(e.error_rate, Some(0.01));
        assert!(!e.violating(), "{e:?}");
        // 97 successes, 3 failures: both violated.
        let e = evaluate(Some(&prev), &sample(60, 0.0, 1097.0, 13.0), &l);
        assert_eq!(e.completion_rate, Some(0.97));
        assert_eq!(e.error_rate, Some(0.03));
        assert_eq!(
            e.violations,
            vec![
                SloViolation::CompletionRate { value: 0.97, min: 0.99 },
                SloViolation::ErrorRate { value: 0.03, max: 0.01 }
            ]
        );
        // all successes
        let e = evaluate(Some(&prev), &sample(60, 0.0, 1050.0, 10.0), &l);
        assert_eq!((e.completion_rate, e.error_rate), (Some(1.0), Some(0.0)));
        // all failures
        let e = evaluate(Some(&prev), &sample(60, 0.0, 1000.0, 11.0), &l);
        assert_eq!((e.completion_rate, e.error_rate), (Some(0.0), Some(1.0)));
        assert_eq!(e.violations.len(), 2);
    }

    #[test]
    fn no_completions_is_unknown_not_breach() {
        let l = SloLimits::default();
        let prev = sample(0, 0.0, 1000.0, 10.0);
        let e = evaluate(Some(&prev), &sample(60, 0.0, 1000.0, 10.0), &l);
        assert_eq!((e.completion_rate, e.error_rate), (None, None));
        assert!(!e.violating());
    }

    #[test]
    fn shrinking_counter_is_unknown() {
        let l = SloLimits::default();
        let prev = sample(0, 0.0, 1000.0, 10.0);
        for cur in [sample(60, 0.0, 10.0, 11.0), sample(60, 0.0, 1100.0, 0.0), sample(60, 0.0, 5.0, 1.0)] {
            let e = evaluate(Some(&prev), &cur, &l);
            assert_eq!((e.completion_rate, e.error_rate), (None, None), "{cur:?}");
            assert!(!e.violating());
        }
        // waiting may shrink freely: it is a gauge of the current queue
        let e = evaluate(Some(&sample(0, 50.0, 0.0, 0.0)), &sample(60, 11.0, 0.0, 0.0), &l);
        assert!(e.violating());
    }

    #[test]
    fn unknown_counters_make_rates_unknown() {
        let l = SloLimits::default();
        let prev = sample(0, 0.0, 1000.0, 10.0);
        for cur in [sample(60, 0.0, -1.0, 20.0), sample(60, 0.0, 1100.0, -1.0)] {
            let e = evaluate(Some(&prev), &cur, &l);
            assert_eq!((e.completion_rate, e.error_rate), (None, None));
        }
        let e = evaluate(Some(&sample(0, 0.0, -1.0, 10.0)), &sample(60, 0.0, 1100.0, 20.0), &l);
        assert_eq!(e.completion_rate, None);
    }

    #[test]
    fn samples_out_of_order_are_unknown() {
        let l = SloLimits::default();
        let prev = sample(60, 0.0, 1000.0, 10.0);
        for at in [60, 0] {
            let e = evaluate(Some(&prev), &sample(at, 0.0, 1000.0, 500.0), &l);
            assert_eq!(e.error_rate, None);
        }
    }

    #[test]
    fn violation_reasons_and_messages() {
        let v = SloViolation::QueueDepth { value: 12.0, max: 10.0 };
        assert_eq!(v.reason(), "QueueDepthExceeded");
        assert_eq!(v.message(), "queue depth 12 > 10");
        let v = SloViolation::CompletionRate { value: 0.5, min: 0.99 };
        assert_eq!(v.reason(), "CompletionRateTooLow");
        assert_eq!(v.message(), "completion rate 50.00% < 99.00%");
        let v = SloViolation::ErrorRate { value: 0.5, max: 0.01 };
        assert_eq!(v.reason(), "ErrorRateTooHigh");
        assert_eq!(v.message(), "error rate 50.00% > 1.00%");
    }

    fn violating() -> SloEvaluation {
        SloEvaluation {
            queue_depth: Some(20.0),
            violations: vec![SloViolation::QueueDepth { value: 20.0, max: 10.0 }],
            ..Default::default()
        }
    }

    fn fine() -> SloEvaluation {
        SloEvaluation { queue_depth: Some(1.0), ..Default::default() }
    }

    const FOR: TimeDelta = TimeDelta::minutes(5);

    #[test]
    fn breach_after_for_of_continuous_violation() {
        let mut tr = SloBreachTracker::new();
        assert_eq!(tr.observe(&violating(), t(0), FOR), BreachTransition::Unchanged);
        assert_eq!(tr.violating_since, Some(t(0)));
        assert_eq!(tr.breach_due_at(FOR), Some(t(300)));
        assert_eq!(tr.observe(&violating(), t(120), FOR), BreachTransition::Unchanged);
        assert_eq!(tr.observe(&violating(), t(299), FOR), BreachTransition::Unchanged);
        assert!(!tr.breached());
        assert_eq!(tr.observe(&violating(), t(300), FOR), BreachTransition::BreachStarted);
        assert!(tr.breached());
        assert_eq!(tr.breach_started, Some(t(300)));
        assert_eq!(tr.breach_due_at(FOR), None);
        // steady: nothing changes
        let before = tr.clone();
        assert_eq!(tr.observe(&violating(), t(600), FOR), BreachTransition::Unchanged);
        assert_eq!(tr, before);
        assert_eq!(tr.observe(&fine(), t(610), FOR), BreachTransition::BreachEnded);
        assert_eq!(tr, SloBreachTracker::default());
        assert_eq!(tr.observe(&fine(), t(620), FOR), BreachTransition::Unchanged);
    }

    #[test]
    fn interruption_restarts_the_clock() {
        let mut tr = SloBreachTracker::new();
        tr.observe(&violating(), t(0), FOR);
        tr.observe(&violating(), t(200), FOR);
        tr.observe(&fine(), t(250), FOR);
        assert_eq!(tr.violating_since, None);
        tr.observe(&violating(), t(260), FOR);
        assert_eq!(tr.observe(&violating(), t(400), FOR), BreachTransition::Unchanged, "only 140s of the new streak");
        assert_eq!(tr.observe(&violating(), t(560), FOR), BreachTransition::BreachStarted);
    }

    #[test]
    fn unknown_evaluation_is_not_a_violation() {
        let mut tr = SloBreachTracker::new();
        tr.observe(&violating(), t(0), FOR);
        tr.observe(&violating(), t(300), FOR);
        assert!(tr.breached());
        let unknown = SloEvaluation::default();
        assert_eq!(tr.observe(&unknown, t(310), FOR), BreachTransition::BreachEnded);
        assert!(!tr.breached());
    }

    #[test]
    fn zero_or_negative_for_breaches_immediately() {
        for f in [TimeDelta::zero(), TimeDelta::seconds(-5)] {
            let mut tr = SloBreachTracker::new();
            assert_eq!(tr.observe(&violating(), t(0), f), BreachTransition::BreachStarted);
            assert_eq!(tr.breach_started, Some(t(0)));
        }
    }

    #[test]
    fn late_first_observation_after_long_gap_still_needs_for() {
        // A streak starts at its first violating observation, not before.
        let mut tr = SloBreachTracker::new();
        tr.observe(&fine(), t(0), FOR);
        assert_eq!(tr.observe(&violating(), t(10_000), FOR), BreachTransition::Unchanged);
        assert_eq!(tr.observe(&violating(), t(10_300), FOR), BreachTransition::BreachStarted);
    }

    #[test]
    fn end_to_end_text_to_breach() {
        let limits = SloLimits::default();
        let mut tr = SloBreachTracker::new();
        let mut prev: Option<SloSample> = None;
        let mut breached_at = None;
        // 10% errors every minute.
        for i in 0..10i64 {
            let text = format!(
                "colonies_server_processes_waiting 2\ncolonies_server_processes_successful {}\ncolonies_server_processes_failed {}\n",
                1000 + 90 * i,
                10 * i
            );
            let cur = SloSample { at: t(60 * i), counts: parse_prometheus_text(&text) };
            let eval = evaluate(prev.as_ref(), &cur, &limits);
            if tr.observe(&eval, cur.at, FOR) == BreachTransition::BreachStarted {
                breached_at = Some(cur.at);
            }
            prev = Some(cur);
        }
        // First rate at t=60; 5 minutes later, t=360.
        assert_eq!(breached_at, Some(t(360)));
    }

    fn stats(w: i64, r: i64, s: i64, f: i64) -> serde_json::Value {
        serde_json::json!({
            "colonies": 1, "executors": 1, "activeexecutors": 1, "unregisteredexecutors": 0,
            "waitingprocesses": w, "runningprocesses": r, "successfulprocesses": s,
            "failedprocesses": f, "cancelledprocesses": 0, "waitingworkflows": 0,
            "runningworkflows": 0, "successfulworkflows": 0, "failedworkflows": 0,
            "cancelledworkflows": 0
        })
    }

    #[test]
    fn statistics_reply_to_counts() {
        assert_eq!(
            counts_from_statistics(&stats(4, 1, 20, 3)),
            Some(ProcessCounts { waiting: Some(4.0), running: Some(1.0), successful: Some(20.0), failed: Some(3.0) })
        );
        assert_eq!(counts_from_statistics(&stats(0, 0, 0, 0)).map(|c| c.waiting), Some(Some(0.0)));
    }

    #[test]
    fn empty_or_undecodable_statistics_are_a_failed_sample_not_zero() {
        use serde_json::json;
        // What a caller without rights gets: an empty body.
        assert_eq!(counts_from_statistics(&serde_json::Value::Null), None);
        assert_eq!(counts_from_statistics(&json!({})), None);
        assert_eq!(counts_from_statistics(&json!("")), None);
        assert_eq!(counts_from_statistics(&json!([1, 2])), None);
        let mut partial = stats(1, 0, 2, 0);
        partial.as_object_mut().unwrap().remove("failedprocesses");
        assert_eq!(counts_from_statistics(&partial), None, "one count missing");
        for bad in [json!(-1), json!("3"), json!(1.5), json!(null)] {
            let mut v = stats(1, 0, 2, 0);
            v["waitingprocesses"] = bad.clone();
            assert_eq!(counts_from_statistics(&v), None, "{bad}");
        }
    }

    #[test]
    fn statistics_samples_to_rates() {
        let l = SloLimits::default();
        let at = |s: i64, v: serde_json::Value| SloSample { at: t(s), counts: counts_from_statistics(&v).unwrap() };
        let first = at(0, stats(6, 0, 0, 0));
        let e = evaluate(None, &first, &l);
        assert_eq!((e.queue_depth, e.completion_rate, e.error_rate), (Some(6.0), None, None), "one sample: no rate");
        // 3 closed successfully, 1 failed since the first sample.
        let second = at(10, stats(2, 0, 3, 1));
        let e = evaluate(Some(&first), &second, &l);
        assert_eq!((e.queue_depth, e.completion_rate, e.error_rate), (Some(2.0), Some(0.75), Some(0.25)));
        assert_eq!(e.violations.len(), 2);
        // Nothing closed since: 0 closed processes is unknown, not 0 % and not a breach.
        let third = at(20, stats(2, 0, 3, 1));
        let e = evaluate(Some(&second), &third, &l);
        assert_eq!((e.completion_rate, e.error_rate), (None, None));
        assert!(!e.violating());
        // Retention shrank the lifetime counts: that interval is unknown (never negative)
        // and the shrunk sample is the new baseline.
        let shrunk = at(30, stats(2, 0, 1, 0));
        let e = evaluate(Some(&third), &shrunk, &l);
        assert_eq!((e.completion_rate, e.error_rate), (None, None));
        let after = at(40, stats(2, 0, 2, 1));
        let e = evaluate(Some(&shrunk), &after, &l);
        assert_eq!((e.completion_rate, e.error_rate), (Some(0.5), Some(0.5)));
    }

    #[test]
    fn serde_round_trips() {
        let mut tr = SloBreachTracker::new();
        tr.observe(&violating(), t(0), TimeDelta::zero());
        let back: SloBreachTracker = serde_json::from_str(&serde_json::to_string(&tr).unwrap()).unwrap();
        assert_eq!(back, tr);
        let e = violating();
        let back: SloEvaluation = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }
}
