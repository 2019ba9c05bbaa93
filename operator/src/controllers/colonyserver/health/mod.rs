//! HTTP health probing and SLO evaluation of ColonyOS servers.
//!
//! - [`probe`]: the HTTP side (bounded time, bounded memory, redacted errors).
//! - [`api`]: the optional API-level check (a signed `getcolonystatsmsg`), which sees an API
//!   that hangs behind a `/health` that still answers 200.
//! - [`slo`]: pure parsing of the `colonies monitor` Prometheus text and of the server's
//!   statistics reply, and SLO evaluation.
//! - [`HealthCounter`] (here): the pure consecutive-failure / consecutive-success state
//!   machine that turns individual probe results into the `Healthy` condition.
//!
//! Everything except [`probe::Prober`] is pure: time is passed in, nothing sleeps.

pub mod api;
pub mod probe;
pub mod slo;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use api::{ApiCheck, ApiCheckError};
pub use probe::{DEFAULT_BODY_CAP, ProbeError, ProbeOutcome, Prober};
pub use slo::{
    BreachTransition, ProcessCounts, SloBreachTracker, SloEvaluation, SloLimits, SloSample, SloViolation,
    counts_from_statistics, evaluate, parse_prometheus_text,
};

/// Longest `last_error` kept (it ends up in the resource status).
pub const MAX_ERROR_LEN: usize = 256;

/// `failureThreshold` / `successThreshold` from `spec.health`. A threshold of 0 is treated
/// as 1 (a single result is decisive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthThresholds {
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

impl Default for HealthThresholds {
    /// The CRD defaults: 3 failures, 2 successes.
    fn default() -> Self {
        Self { failure_threshold: 3, success_threshold: 2 }
    }
}

/// What a single [`HealthCounter::record`] did to the overall verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthTransition {
    /// The verdict (`healthy`) did not change. Counters may have moved; nothing needs
    /// to be written.
    Unchanged,
    /// The verdict became `Some(true)` (from unknown or from unhealthy).
    BecameHealthy,
    /// The verdict became `Some(false)` (from unknown or from healthy).
    BecameUnhealthy,
}

impl HealthTransition {
    /// True for the two transitions (the only times status should be written).
    pub fn changed(self) -> bool {
        !matches!(self, HealthTransition::Unchanged)
    }
}

/// Consecutive probe results → the `Healthy` verdict.
///
/// Design choices:
/// - **Starting state is unknown** (`healthy == None`). Neither "healthy" nor "unhealthy"
///   is assumed at operator start: the first decisive run sets it — `failure_threshold`
///   consecutive failures make it `Some(false)`, `success_threshold` consecutive successes
///   make it `Some(true)`. So a restart of the operator never turns the fallback on (or
///   off) on the strength of a single probe, and a server that is down at start-up is
///   reported down after exactly `failure_threshold` probes, as in steady state.
/// - Healthy flips to unhealthy at the `failure_threshold`-th consecutive failure, and back
///   at the `success_threshold`-th consecutive success. Results in between do not change
///   the verdict (hysteresis).
/// - `down_since` is the time of the **first** failure of the run that made it unhealthy
///   (when the outage started, not when we became sure of it); cleared on recovery.
/// - [`HealthCounter::healthy_since`] is the time of the first success of the current
///   run of successes, while the verdict is healthy. A single failed probe (below the
///   failure threshold) keeps the verdict healthy but restarts that clock: "continuous
///   health" for the fallback's `recoverAfter` means no failed probe at all.
/// - `last_error` is the latest failure's error (truncated to [`MAX_ERROR_LEN`]); it is
///   cleared when the verdict becomes healthy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCounter {
    pub thresholds: HealthThresholds,
    /// `None` until the first decisive run of results.
    pub healthy: Option<bool>,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub down_since: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// First failure of the current failure run (`None` while the last result was a success).
    pub failing_since: Option<DateTime<Utc>>,
    /// First success of the current success run (`None` while the last result was a failure).
    pub succeeding_since: Option<DateTime<Utc>>,
}

impl HealthCounter {
    pub fn new(thresholds: HealthThresholds) -> Self {
        Self { thresholds, ..Self::default() }
    }

    /// Record one probe result at `now`; returns whether the verdict changed.
    pub fn record(&mut self, ok: bool, error: Option<String>, now: DateTime<Utc>) -> HealthTransition {
        let failure_threshold = self.thresholds.failure_threshold.max(1);
        let success_threshold = self.thresholds.success_threshold.max(1);
        if ok {
            self.consecutive_failures = 0;
            self.failing_since = None;
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            if self.succeeding_since.is_none() {
                self.succeeding_since = Some(now);
            }
            if self.healthy != Some(true) && self.consecutive_successes >= success_threshold {
                self.healthy = Some(true);
                self.down_since = None;
                self.last_error = None;
                return HealthTransition::BecameHealthy;
            }
        } else {
            self.consecutive_successes = 0;
            self.succeeding_since = None;
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            if self.failing_since.is_none() {
                self.failing_since = Some(now);
            }
            self.last_error = Some(truncate_error(error.as_deref().unwrap_or("probe failed")));
            if self.healthy != Some(false) && self.consecutive_failures >= failure_threshold {
                self.healthy = Some(false);
                self.down_since = self.failing_since;
                return HealthTransition::BecameUnhealthy;
            }
        }
        HealthTransition::Unchanged
    }

    /// `consecutive_failures >= failure_threshold`: the fallback's "health failed" input.
    pub fn health_failed(&self) -> bool {
        self.consecutive_failures >= self.thresholds.failure_threshold.max(1)
    }

    /// Start of the current uninterrupted healthy streak; `None` unless the verdict is
    /// healthy and the last result was a success. Feeds the fallback's `recoverAfter`.
    pub fn healthy_since(&self) -> Option<DateTime<Utc>> {
        if self.healthy == Some(true) && self.consecutive_successes > 0 { self.succeeding_since } else { None }
    }
}

/// Cut an error message to [`MAX_ERROR_LEN`] bytes on a char boundary.
pub fn truncate_error(s: &str) -> String {
    if s.len() <= MAX_ERROR_LEN {
        return s.to_string();
    }
    let mut end = MAX_ERROR_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    fn counter(f: u32, s: u32) -> HealthCounter {
        HealthCounter::new(HealthThresholds { failure_threshold: f, success_threshold: s })
    }

    #[test]
    fn starts_unknown() {
        let c = counter(3, 2);
        assert_eq!(c.healthy, None);
        assert!(!c.health_failed());
        assert_eq!(c.healthy_since(), None);
    }

    #[test]
    fn unknown_to_unhealthy_at_failure_threshold() {
        let mut c = counter(3, 2);
        assert_eq!(c.record(false, Some("e1".into()), t(0)), HealthTransition::Unchanged);
        assert_eq!(c.record(false, Some("e2".into()), t(10)), HealthTransition::Unchanged);
        assert_eq!(c.healthy, None);
        assert!(!c.health_failed());
        assert_eq!(c.record(false, Some("e3".into()), t(20)), HealthTransition::BecameUnhealthy);
        assert_eq!(c.healthy, Some(false));
        assert!(c.health_failed());
        assert_eq!(c.down_since, Some(t(0)), "down since the first failure of the run");
        assert_eq!(c.last_error.as_deref(), Some("e3"));
        // more failures: no transition, down_since stays
        assert_eq!(c.record(false, Some("e4".into()), t(30)), HealthTransition::Unchanged);
        assert_eq!(c.down_since, Some(t(0)));
        assert_eq!(c.consecutive_failures, 4);
    }

    #[test]
    fn unknown_to_healthy_at_success_threshold() {
        let mut c = counter(3, 2);
        assert_eq!(c.record(true, None, t(0)), HealthTransition::Unchanged);
        assert_eq!(c.healthy, None);
        assert_eq!(c.healthy_since(), None, "not healthy until the threshold");
        assert_eq!(c.record(true, None, t(10)), HealthTransition::BecameHealthy);
        assert_eq!(c.healthy, Some(true));
        assert_eq!(c.healthy_since(), Some(t(0)), "streak starts at its first success");
        assert_eq!(c.record(true, None, t(20)), HealthTransition::Unchanged);
        assert_eq!(c.healthy_since(), Some(t(0)));
    }

    #[test]
    fn healthy_to_unhealthy_and_back() {
        let mut c = counter(3, 2);
        c.record(true, None, t(0));
        c.record(true, None, t(10));
        assert_eq!(c.healthy, Some(true));
        for (i, at) in [20, 30].into_iter().enumerate() {
            assert_eq!(c.record(false, Some(format!("x{i}")), t(at)), HealthTransition::Unchanged);
            assert_eq!(c.healthy, Some(true));
            assert_eq!(c.healthy_since(), None, "a failed probe breaks continuous health");
        }
        assert_eq!(c.record(false, Some("boom".into()), t(40)), HealthTransition::BecameUnhealthy);
        assert_eq!(c.down_since, Some(t(20)));
        assert_eq!(c.record(true, None, t(50)), HealthTransition::Unchanged);
        assert_eq!(c.healthy, Some(false));
        assert_eq!(c.down_since, Some(t(20)));
        assert!(!c.health_failed(), "failure run broken");
        assert_eq!(c.record(true, None, t(60)), HealthTransition::BecameHealthy);
        assert_eq!(c.down_since, None);
        assert_eq!(c.last_error, None);
        assert_eq!(c.healthy_since(), Some(t(50)));
    }

    #[test]
    fn intermittent_failures_below_threshold_do_not_flip() {
        let mut c = counter(3, 2);
        c.record(true, None, t(0));
        c.record(true, None, t(1));
        for i in 0..20 {
            let ok = i % 3 != 0; // fail, ok, ok, fail, ...
            assert_eq!(c.record(ok, None, t(2 + i)), HealthTransition::Unchanged);
        }
        assert_eq!(c.healthy, Some(true));
    }

    #[test]
    fn alternating_from_unknown_never_decides() {
        let mut c = counter(2, 2);
        for i in 0..10 {
            assert_eq!(c.record(i % 2 == 0, None, t(i)), HealthTransition::Unchanged);
        }
        assert_eq!(c.healthy, None);
    }

    #[test]
    fn thresholds_of_zero_or_one_are_immediate() {
        for th in [0, 1] {
            let mut c = counter(th, th);
            assert_eq!(c.record(false, None, t(0)), HealthTransition::BecameUnhealthy);
            assert_eq!(c.last_error.as_deref(), Some("probe failed"));
            assert_eq!(c.down_since, Some(t(0)));
            assert_eq!(c.record(true, None, t(1)), HealthTransition::BecameHealthy);
            assert_eq!(c.record(false, None, t(2)), HealthTransition::BecameUnhealthy);
            assert_eq!(c.down_since, Some(t(2)));
        }
    }

    #[test]
    fn last_error_truncated() {
        let mut c = counter(3, 2);
        let long = "é".repeat(1000);
        c.record(false, Some(long), t(0));
        let e = c.last_error.unwrap();
        assert!(e.len() <= MAX_ERROR_LEN + '…'.len_utf8());
        assert!(e.ends_with('…'));
    }

    #[test]
    fn changed_helper() {
        assert!(!HealthTransition::Unchanged.changed());
        assert!(HealthTransition::BecameHealthy.changed());
        assert!(HealthTransition::BecameUnhealthy.changed());
    }

    #[test]
    fn serde_round_trip() {
        let mut c = counter(3, 2);
        c.record(false, Some("e".into()), t(0));
        let json = serde_json::to_string(&c).unwrap();
        let back: HealthCounter = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
    }
}
