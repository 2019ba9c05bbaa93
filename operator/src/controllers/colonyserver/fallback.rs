//! The fallback decision: should `USE_COLONY_OS` be `false` (direct processing) right now?
//!
//! One pure function, [`decide`], of (policy, inputs, previous state, now). The reconciler
//! gathers the inputs (health counter, SLO tracker, Active MaintenanceWindows, the
//! `colony.zyeute.io/fallback` annotation), calls it, writes the ConfigMap
//! ([`configmap_value`]) and, when `flipped`, emits the Event, metric, status change and
//! notification.
//!
//! # Rules (in priority order)
//! 1. **Override wins.** `On`/`Off` from the annotation is a human decision and is always
//!    honoured at once: not delayed by `minHold`, not refused by the flip budget, and not
//!    counted against the budget (the budget exists to stop *automatic* flapping; a
//!    human's flips must not starve the automation of the flips it needs to protect
//!    traffic afterwards). While overridden the decision is never `stalled` (a human is in
//!    charge). Override flips do update `since`, so `minHold` after returning to `Auto` is
//!    measured from them.
//! 2. **Turn ON** when any cause holds: health failed (`failureThreshold` failures in a
//!    row), an SLO breached for its `for`, or an Active MaintenanceWindow targets the
//!    server. Turning ON is **never blocked**: protecting traffic beats hysteresis, so
//!    `minHold` does not delay it, and an exhausted flip budget does not refuse it (the
//!    flip happens, and the decision reports `stalled` with reason `FlipBudgetExhausted`
//!    so a human looks).
//! 3. **Turn OFF** only when no cause holds AND the server has been healthy continuously
//!    for `recoverAfter` AND `minHold` has passed since the last flip AND the flip budget
//!    allows it. The budget keeps one flip in reserve for a protective ON: an OFF is
//!    allowed only while `flips_in_last_hour + 1 <= maxFlipsPerHour - 1` (for
//!    `maxFlipsPerHour >= 2`). So an automatic sequence never exceeds `maxFlipsPerHour`
//!    flips in any rolling hour, and the fallback is never left OFF without budget to
//!    turn it back ON. When recovery is due but the budget forbids the OFF, the fallback
//!    stays ON, `stalled = true`, reason `FlipBudgetExhausted`; `stalled` clears by
//!    itself when enough flips age out of the hour (the OFF then happens).
//!    With `maxFlipsPerHour == 1` no reserve is possible: OFF is allowed once the ON has
//!    aged out, and a later protective ON exceeds the budget (stalled). With `0`, the
//!    automation never turns the fallback OFF (only an override does).
//! 4. Otherwise nothing changes.
//!
//! # Reasons (machine-friendly, CamelCase)
//! `Override`; the cause, by priority `MaintenanceWindow` > `HealthCheckFailed` >
//! `SLOBreached` (planned maintenance explains a failing health check, not the other way
//! round); `FlipBudgetExhausted` whenever `stalled`; `Recovering` while ON with no cause
//! left, waiting for `recoverAfter`/`minHold` (or for health to be reported); `Recovered`
//! after an automatic OFF; `NoCause` while OFF and nothing ever turned it on (or after an
//! override was removed).
//!
//! # Steady state is silent
//! `since` changes only on a flip; `flips` only gains an entry on an automatic flip and
//! loses entries as they age out of the hour; the reason and message depend only on the
//! inputs and state, never on `now` alone. Deciding again with the returned state and the
//! same inputs returns the same state (a fixpoint).
//!
//! # Requeue
//! `requeue_after` is set when time alone can change the answer: the end of
//! `recoverAfter`/`minHold` while recovering, and the moment enough flips age out of the
//! hour to clear `stalled` or allow a blocked OFF. Changes in the inputs are the
//! reconciler's business (watches, probe interval).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// Condition / event reasons produced by [`decide`].
pub mod reason {
    pub const OVERRIDE: &str = "Override";
    pub const MAINTENANCE_WINDOW: &str = "MaintenanceWindow";
    pub const HEALTH_CHECK_FAILED: &str = "HealthCheckFailed";
    pub const SLO_BREACHED: &str = "SLOBreached";
    pub const FLIP_BUDGET_EXHAUSTED: &str = "FlipBudgetExhausted";
    pub const RECOVERING: &str = "Recovering";
    pub const RECOVERED: &str = "Recovered";
    pub const NO_CAUSE: &str = "NoCause";
}

use crate::api::FALLBACK_ANNOTATION as OVERRIDE_ANNOTATION;

/// Length of the flip-budget window.
pub const FLIP_WINDOW: TimeDelta = TimeDelta::hours(1);

/// `spec.fallback` timing and budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FallbackPolicy {
    pub recover_after: Duration,
    pub min_hold: Duration,
    pub max_flips_per_hour: u32,
}

impl Default for FallbackPolicy {
    /// The CRD defaults: 5m, 2m, 4.
    fn default() -> Self {
        Self {
            recover_after: Duration::from_secs(5 * 60),
            min_hold: Duration::from_secs(2 * 60),
            max_flips_per_hour: 4,
        }
    }
}

/// The `colony.zyeute.io/fallback` annotation (parsed in `api::common`).
pub use crate::api::FallbackOverride as Override;

/// Everything [`decide`] needs to know about the world.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FallbackInputs {
    /// Consecutive failures >= failureThreshold.
    pub health_failed: bool,
    /// Start of the current continuous healthy streak; `None` when not healthy.
    pub healthy_since: Option<DateTime<Utc>>,
    /// An SLO has been violated for its `for` duration.
    pub slo_breached: bool,
    /// Names of Active MaintenanceWindows that target the server.
    pub maintenance_active: Vec<String>,
    pub override_: Override,
}

/// The decision's memory, kept by the controller between reconciles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FallbackState {
    pub active: bool,
    /// Time of the last flip (automatic or override); `None` = never flipped.
    pub since: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    /// Times of automatic flips within the last hour (sorted, pruned by [`decide`]).
    pub flips: Vec<DateTime<Utc>>,
    pub stalled: bool,
}

impl FallbackState {
    /// `status.fallback.flipsLastHour`.
    pub fn flips_last_hour(&self) -> u32 {
        u32::try_from(self.flips.len()).unwrap_or(u32::MAX)
    }
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackDecision {
    /// Fallback on (`USE_COLONY_OS=false`).
    pub active: bool,
    /// CamelCase reason (see [`reason`]).
    pub reason: String,
    /// Short human explanation (no secrets, no `now`-dependent text).
    pub message: String,
    /// `active` differs from the previous state's.
    pub flipped: bool,
    pub new_state: FallbackState,
    /// Reconcile again after this long: time alone could change the answer then.
    pub requeue_after: Option<Duration>,
}

/// The decision when the fallback ConfigMap could not be written: the state stays as it was,
/// so status records no flip the ConfigMap does not show and none is announced. `why` is the
/// message of the FallbackActive condition.
pub fn hold(state: &FallbackState, why: String) -> FallbackDecision {
    FallbackDecision {
        active: state.active,
        reason: state.reason.clone().unwrap_or_else(|| reason::NO_CAUSE.to_string()),
        message: why,
        flipped: false,
        new_state: state.clone(),
        requeue_after: None,
    }
}

/// The ConfigMap value of the `USE_COLONY_OS` key: `"false"` while the fallback is active.
pub fn configmap_value(active: bool) -> &'static str {
    if active { "false" } else { "true" }
}

/// Flips an OFF may bring the count to, keeping one in reserve for a protective ON.
fn off_budget(max_flips_per_hour: u32) -> u32 {
    if max_flips_per_hour >= 2 { max_flips_per_hour - 1 } else { max_flips_per_hour }
}

fn to_delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// `t + d`, saturating at the end of time instead of panicking.
fn add(t: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Longest `requeue_after` returned: an earlier reconcile is harmless, an absurd sleep
/// is not.
pub const MAX_REQUEUE: Duration = Duration::from_secs(24 * 60 * 60);

/// When the (sorted) `flips` will have aged down to at most `target` entries; `None` if
/// already there.
fn aged_down_to(flips: &[DateTime<Utc>], target: u32) -> Option<DateTime<Utc>> {
    let target = target as usize;
    if flips.len() <= target {
        return None;
    }
    // The oldest `len - target` flips must leave; the last of them leaves last.
    Some(add(flips[flips.len() - target - 1], FLIP_WINDOW))
}

/// The highest-priority cause for the fallback, with a human message.
fn cause(inputs: &FallbackInputs) -> Option<(&'static str, String)> {
    if !inputs.maintenance_active.is_empty() {
        let mut names = inputs.maintenance_active.clone();
        names.sort();
        names.dedup();
        let noun = if names.len() == 1 { "MaintenanceWindow" } else { "MaintenanceWindows" };
        return Some((reason::MAINTENANCE_WINDOW, format!("{noun} {} active", names.join(", "))));
    }
    if inputs.health_failed {
        return Some((reason::HEALTH_CHECK_FAILED, "health check failed failureThreshold times in a row".into()));
    }
    if inputs.slo_breached {
        return Some((reason::SLO_BREACHED, "SLO breached for its `for` duration".into()));
    }
    None
}

/// Decide whether the fallback is active. See the module documentation for the rules.
pub fn decide(
    policy: &FallbackPolicy,
    inputs: &FallbackInputs,
    state: &FallbackState,
    now: DateTime<Utc>,
) -> FallbackDecision {
    let mut flips: Vec<DateTime<Utc>> = state.flips.iter().copied().filter(|t| now - *t < FLIP_WINDOW).collect();
    flips.sort();
    let max = policy.max_flips_per_hour;
    let count = |f: &Vec<DateTime<Utc>>| u32::try_from(f.len()).unwrap_or(u32::MAX);
    let over_budget_msg = |n: u32| {
        format!(
            "{n} automatic flips in the last hour (maxFlipsPerHour {max}): fallback held on; check the server, or set the {OVERRIDE_ANNOTATION} annotation"
        )
    };

    // Result pieces; `since` follows `active`.
    let active: bool;
    let why: String;
    let message: String;
    let mut stalled = false;
    let mut wake: Vec<DateTime<Utc>> = Vec::new();

    match inputs.override_ {
        Override::On | Override::Off => {
            active = inputs.override_ == Override::On;
            why = reason::OVERRIDE.into();
            message = format!("{OVERRIDE_ANNOTATION}={} set", inputs.override_);
        }
        Override::Auto => {
            if let Some((cause_reason, cause_msg)) = cause(inputs) {
                active = true;
                if !state.active {
                    // Protective ON: never blocked, recorded against the budget.
                    flips.push(now);
                }
                let n = count(&flips);
                stalled = n > max;
                if stalled {
                    why = reason::FLIP_BUDGET_EXHAUSTED.into();
                    message = format!("{cause_msg}; {}", over_budget_msg(n));
                    wake.extend(aged_down_to(&flips, max));
                } else {
                    why = cause_reason.into();
                    message = cause_msg;
                }
            } else if state.active {
                let n = count(&flips);
                let healthy_enough_at = inputs.healthy_since.map(|h| add(h, to_delta(policy.recover_after)));
                let hold_until = state.since.map(|s| add(s, to_delta(policy.min_hold)));
                let ready_at = healthy_enough_at.map(|r| hold_until.map_or(r, |h| r.max(h)));
                let off_allowed_by_budget = n < off_budget(max);
                match ready_at {
                    Some(at) if at <= now && off_allowed_by_budget => {
                        active = false;
                        flips.push(now);
                        why = reason::RECOVERED.into();
                        message = format!("healthy for recoverAfter ({}s)", policy.recover_after.as_secs());
                    }
                    Some(at) if at <= now => {
                        // Recovery is due; only the budget holds it back.
                        active = true;
                        stalled = true;
                        why = reason::FLIP_BUDGET_EXHAUSTED.into();
                        message = format!("recovered, but {}", over_budget_msg(n));
                        if off_budget(max) > 0 {
                            wake.extend(aged_down_to(&flips, off_budget(max) - 1));
                        }
                    }
                    _ => {
                        active = true;
                        stalled = n > max;
                        if stalled {
                            why = reason::FLIP_BUDGET_EXHAUSTED.into();
                            message = over_budget_msg(n);
                            wake.extend(aged_down_to(&flips, max));
                        } else {
                            why = reason::RECOVERING.into();
                            message = match inputs.healthy_since {
                                Some(h) => format!(
                                    "no cause left; healthy since {}, waiting for recoverAfter ({}s) and minHold ({}s)",
                                    h.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                                    policy.recover_after.as_secs(),
                                    policy.min_hold.as_secs()
                                ),
                                None => "no cause left; waiting for the server to be reported healthy".into(),
                            };
                        }
                        wake.extend(ready_at.filter(|at| *at > now));
                    }
                }
            } else {
                active = false;
                why = match state.reason.as_deref() {
                    Some(r @ (reason::RECOVERED | reason::NO_CAUSE)) => r.to_string(),
                    _ => reason::NO_CAUSE.into(),
                };
                message = if why == reason::RECOVERED {
                    format!("healthy for recoverAfter ({}s)", policy.recover_after.as_secs())
                } else {
                    "no cause for fallback".into()
                };
            }
        }
    }

    let flipped = active != state.active;
    let new_state = FallbackState {
        active,
        since: if flipped { Some(now) } else { state.since },
        reason: Some(why.clone()),
        flips,
        stalled,
    };
    let requeue_after = wake
        .into_iter()
        .filter(|at| *at > now)
        .min()
        .and_then(|at| (at - now).to_std().ok())
        .map(|d| d.min(MAX_REQUEUE));
    FallbackDecision { active, reason: why, message, flipped, new_state, requeue_after }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_keeps_the_state_as_it_was() {
        let state = FallbackState {
            active: true,
            since: Some(DateTime::from_timestamp(1_700_000_000, 0).unwrap()),
            reason: Some(reason::HEALTH_CHECK_FAILED.into()),
            flips: vec![DateTime::from_timestamp(1_700_000_000, 0).unwrap()],
            stalled: false,
        };
        let d = hold(&state, "the ConfigMap could not be written".into());
        assert_eq!((d.active, d.flipped, &d.new_state, d.requeue_after), (true, false, &state, None));
        assert_eq!(
            (d.reason.as_str(), d.message.as_str()),
            ("HealthCheckFailed", "the ConfigMap could not be written")
        );
        let never = hold(&FallbackState::default(), "m".into());
        assert_eq!((never.active, never.flipped, never.reason.as_str()), (false, false, "NoCause"));
        assert_eq!(never.new_state, FallbackState::default());
    }
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    fn policy() -> FallbackPolicy {
        FallbackPolicy::default() // recover 300s, hold 120s, 4 flips/h
    }

    const NOW: i64 = 100_000;

    // ---------------------------------------------------------------------------------
    // Exhaustive decision table
    // ---------------------------------------------------------------------------------

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Hold {
        NeverFlipped,
        Within,
        Passed,
    }
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Budget {
        /// no flips in the last hour (plus one that has aged out)
        Fresh,
        /// max-1 flips: an OFF would eat the reserve
        Reserve,
        /// max flips
        Full,
        /// max+1 flips (an earlier protective ON went over)
        Over,
    }
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Streak {
        NotHealthy,
        Short,
        Long,
    }

    fn flips_for(b: Budget, max: u32) -> Vec<DateTime<Utc>> {
        let n = match b {
            Budget::Fresh => 0,
            Budget::Reserve => max - 1,
            Budget::Full => max,
            Budget::Over => max + 1,
        };
        // One aged-out flip (exactly an hour old) that must be pruned, then n recent ones
        // spread over the last 50 minutes, unsorted.
        let mut v = vec![t(NOW) - FLIP_WINDOW];
        for i in 0..n as i64 {
            v.push(t(NOW - 3000 + 600 * i));
        }
        v.reverse();
        v
    }

    struct Case {
        health_failed: bool,
        slo: bool,
        maint: bool,
        ov: Override,
        active: bool,
        hold: Hold,
        budget: Budget,
        streak: Streak,
        prev_reason: Option<&'static str>,
    }

    fn build(c: &Case) -> (FallbackInputs, FallbackState) {
        let p = policy();
        let inputs = FallbackInputs {
            health_failed: c.health_failed,
            healthy_since: match c.streak {
                Streak::NotHealthy => None,
                Streak::Short => Some(t(NOW - 60)),
                Streak::Long => Some(t(NOW - 3600)),
            },
            slo_breached: c.slo,
            maintenance_active: if c.maint { vec!["nightly".into()] } else { vec![] },
            override_: c.ov,
        };
        let state = FallbackState {
            active: c.active,
            since: match c.hold {
                Hold::NeverFlipped => None,
                Hold::Within => Some(t(NOW - 60)),
                Hold::Passed => Some(t(NOW - 1800)),
            },
            reason: c.prev_reason.map(String::from),
            flips: flips_for(c.budget, p.max_flips_per_hour),
            stalled: false,
        };
        (inputs, state)
    }

    /// The rules, written independently as a declarative table oracle:
    /// (active, reason, stalled).
    fn oracle(c: &Case) -> (bool, &'static str, bool) {
        let max = policy().max_flips_per_hour;
        let n = match c.budget {
            Budget::Fresh => 0,
            Budget::Reserve => max - 1,
            Budget::Full => max,
            Budget::Over => max + 1,
        };
        let cause = if c.maint {
            Some(reason::MAINTENANCE_WINDOW)
        } else if c.health_failed {
            Some(reason::HEALTH_CHECK_FAILED)
        } else if c.slo {
            Some(reason::SLO_BREACHED)
        } else {
            None
        };
        match (c.ov, cause, c.active) {
            (Override::On, _, _) => (true, reason::OVERRIDE, false),
            (Override::Off, _, _) => (false, reason::OVERRIDE, false),
            // protective ON / staying ON with a cause
            (Override::Auto, Some(r), was) => {
                let after = if was { n } else { n + 1 };
                if after > max { (true, reason::FLIP_BUDGET_EXHAUSTED, true) } else { (true, r, false) }
            }
            // recovery candidate
            (Override::Auto, None, true) => {
                let ready = c.streak == Streak::Long && c.hold != Hold::Within;
                match (ready, c.budget) {
                    (true, Budget::Fresh) => (false, reason::RECOVERED, false),
                    (true, _) => (true, reason::FLIP_BUDGET_EXHAUSTED, true),
                    (false, Budget::Over) => (true, reason::FLIP_BUDGET_EXHAUSTED, true),
                    (false, _) => (true, reason::RECOVERING, false),
                }
            }
            (Override::Auto, None, false) => match c.prev_reason {
                Some(reason::RECOVERED) => (false, reason::RECOVERED, false),
                _ => (false, reason::NO_CAUSE, false),
            },
        }
    }

    fn all_cases() -> Vec<Case> {
        let mut v = Vec::new();
        for health_failed in [false, true] {
            for slo in [false, true] {
                for maint in [false, true] {
                    for ov in [Override::Auto, Override::On, Override::Off] {
                        for active in [false, true] {
                            for hold in [Hold::NeverFlipped, Hold::Within, Hold::Passed] {
                                for budget in [Budget::Fresh, Budget::Reserve, Budget::Full, Budget::Over] {
                                    for streak in [Streak::NotHealthy, Streak::Short, Streak::Long] {
                                        for prev_reason in [
                                            None,
                                            Some(reason::RECOVERED),
                                            Some(reason::OVERRIDE),
                                            Some(reason::HEALTH_CHECK_FAILED),
                                        ] {
                                            v.push(Case {
                                                health_failed,
                                                slo,
                                                maint,
                                                ov,
                                                active,
                                                hold,
                                                budget,
                                                streak,
                                                prev_reason,
                                            });
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        v
    }

    #[test]
    fn decision_table_exhaustive() {
        let p = policy();
        let cases = all_cases();
        assert_eq!(cases.len(), 8 * 3 * 2 * 3 * 4 * 3 * 4);
        for c in &cases {
            let (inputs, state) = build(c);
            let d = decide(&p, &inputs, &state, t(NOW));
            let ctx = format!(
                "case hf={} slo={} mw={} ov={:?} active={} hold={:?} budget={:?} streak={:?} prev={:?} -> {:?}",
                c.health_failed, c.slo, c.maint, c.ov, c.active, c.hold, c.budget, c.streak, c.prev_reason, d
            );
            let (want_active, want_reason, want_stalled) = oracle(c);
            assert_eq!(d.active, want_active, "{ctx}");
            assert_eq!(d.reason, want_reason, "{ctx}");
            assert_eq!(d.new_state.stalled, want_stalled, "{ctx}");

            // Invariants that hold for every row.
            assert_eq!(d.flipped, d.active != state.active, "{ctx}");
            assert_eq!(d.new_state.active, d.active, "{ctx}");
            assert_eq!(d.new_state.reason.as_deref(), Some(d.reason.as_str()), "{ctx}");
            if d.flipped {
                assert_eq!(d.new_state.since, Some(t(NOW)), "{ctx}");
            } else {
                assert_eq!(d.new_state.since, state.since, "timestamps only move on a flip: {ctx}");
            }
            // Pruned to the hour, sorted; an automatic flip adds exactly `now`.
            assert!(d.new_state.flips.iter().all(|f| t(NOW) - *f < FLIP_WINDOW), "{ctx}");
            assert!(d.new_state.flips.windows(2).all(|w| w[0] <= w[1]), "{ctx}");
            let recent = state.flips.iter().filter(|f| t(NOW) - **f < FLIP_WINDOW).count();
            let counted = d.flipped && c.ov == Override::Auto;
            assert_eq!(d.new_state.flips.len(), recent + usize::from(counted), "{ctx}");
            if counted {
                assert!(d.new_state.flips.contains(&t(NOW)), "{ctx}");
            }
            // Safety: in auto mode, a cause always means fallback on.
            if c.ov == Override::Auto && (c.health_failed || c.slo || c.maint) {
                assert!(d.active, "{ctx}");
            }
            // An override is always honoured and never stalls.
            match c.ov {
                Override::On => assert!(d.active && !d.new_state.stalled, "{ctx}"),
                Override::Off => assert!(!d.active && !d.new_state.stalled, "{ctx}"),
                Override::Auto => {}
            }
            // Stalled implies active and the FlipBudgetExhausted reason.
            if d.new_state.stalled {
                assert!(d.active && d.reason == reason::FLIP_BUDGET_EXHAUSTED, "{ctx}");
            }
            // OFF never happens automatically within minHold or before recoverAfter.
            if c.ov == Override::Auto && state.active && !d.active {
                assert!(c.hold != Hold::Within && c.streak == Streak::Long, "{ctx}");
            }
            // Fixpoint: same inputs, same instant → nothing changes.
            let again = decide(&p, &inputs, &d.new_state, t(NOW));
            assert!(!again.flipped, "{ctx}");
            assert_eq!(again.new_state, d.new_state, "{ctx}");
            assert_eq!(again.reason, d.reason, "{ctx}");
            // Requeue, when given, is in the future and changes nothing before it.
            if let Some(r) = d.requeue_after {
                assert!(r > Duration::ZERO, "{ctx}");
            }
        }
    }

    /// Hand-written rows, to read the table at a glance.
    #[test]
    fn decision_table_readable_rows() {
        use Budget::*;
        use Hold::*;
        use Override::*;
        use Streak::*;
        #[rustfmt::skip]
        type Row = (bool, bool, bool, Override, bool, Hold, Budget, Streak, bool, &'static str, bool);
        let rows: &[Row] = &[
            // hf    slo    mw     ov    active hold          budget   streak      => active reason                      stalled
            (false, false, false, Auto, false, NeverFlipped, Fresh, Long, false, "NoCause", false),
            (true, false, false, Auto, false, NeverFlipped, Fresh, NotHealthy, true, "HealthCheckFailed", false),
            (false, true, false, Auto, false, Passed, Fresh, Long, true, "SLOBreached", false),
            (false, false, true, Auto, false, Passed, Fresh, Long, true, "MaintenanceWindow", false),
            (true, true, true, Auto, false, Passed, Fresh, NotHealthy, true, "MaintenanceWindow", false),
            (true, true, false, Auto, false, Passed, Fresh, NotHealthy, true, "HealthCheckFailed", false),
            // ON is not blocked by minHold
            (true, false, false, Auto, false, Within, Fresh, NotHealthy, true, "HealthCheckFailed", false),
            // ON is not blocked by the budget, but stalls when it goes over
            (true, false, false, Auto, false, Passed, Reserve, NotHealthy, true, "HealthCheckFailed", false),
            (true, false, false, Auto, false, Passed, Full, NotHealthy, true, "FlipBudgetExhausted", true),
            // recovery
            (false, false, false, Auto, true, Passed, Fresh, Long, false, "Recovered", false),
            (false, false, false, Auto, true, Passed, Fresh, Short, true, "Recovering", false),
            (false, false, false, Auto, true, Passed, Fresh, NotHealthy, true, "Recovering", false),
            (false, false, false, Auto, true, Within, Fresh, Long, true, "Recovering", false),
            (false, false, false, Auto, true, NeverFlipped, Fresh, Long, false, "Recovered", false),
            // recovery blocked by the budget (reserve kept for a protective ON)
            (false, false, false, Auto, true, Passed, Reserve, Long, true, "FlipBudgetExhausted", true),
            (false, false, false, Auto, true, Passed, Full, Long, true, "FlipBudgetExhausted", true),
            (false, false, false, Auto, true, Passed, Reserve, Short, true, "Recovering", false),
            // overrides win over everything
            (true, true, true, Off, true, Within, Over, NotHealthy, false, "Override", false),
            (false, false, false, On, false, Within, Over, Long, true, "Override", false),
            (false, false, false, Off, false, Passed, Fresh, Long, false, "Override", false),
            (true, false, false, On, true, Passed, Fresh, NotHealthy, true, "Override", false),
        ];
        let p = policy();
        for (i, &(hf, slo, mw, ov, active, hold, budget, streak, want_active, want_reason, want_stalled)) in
            rows.iter().enumerate()
        {
            let c = Case { health_failed: hf, slo, maint: mw, ov, active, hold, budget, streak, prev_reason: None };
            let (inputs, state) = build(&c);
            let d = decide(&p, &inputs, &state, t(NOW));
            assert_eq!(
                (d.active, d.reason.as_str(), d.new_state.stalled),
                (want_active, want_reason, want_stalled),
                "row {i}: {d:?}"
            );
        }
    }

    // ---------------------------------------------------------------------------------
    // Scenarios over simulated time
    // ---------------------------------------------------------------------------------

    fn auto(health_failed: bool, healthy_since: Option<DateTime<Utc>>) -> FallbackInputs {
        FallbackInputs { health_failed, healthy_since, ..Default::default() }
    }

    #[test]
    fn initial_state_healthy_is_silent() {
        let p = policy();
        let mut s = FallbackState::default();
        let d = decide(&p, &auto(false, Some(t(0))), &s, t(0));
        assert!(!d.active && !d.flipped);
        assert_eq!(d.reason, reason::NO_CAUSE);
        assert_eq!(d.requeue_after, None);
        s = d.new_state;
        for i in 1..500 {
            let d = decide(&p, &auto(false, Some(t(0))), &s, t(i * 10));
            assert!(!d.flipped);
            assert_eq!(d.new_state, s, "steady state must not change the state");
            assert_eq!(d.requeue_after, None);
        }
    }

    #[test]
    fn unknown_health_at_start_does_not_turn_on() {
        let d = decide(&policy(), &auto(false, None), &FallbackState::default(), t(0));
        assert!(!d.active);
    }

    #[test]
    fn recovery_only_after_recover_after() {
        let p = policy();
        let d = decide(&p, &auto(true, None), &FallbackState::default(), t(0));
        assert!(d.active && d.flipped);
        assert_eq!(d.reason, reason::HEALTH_CHECK_FAILED);
        assert_eq!(d.requeue_after, None, "health input, not time, changes this");
        let mut s = d.new_state;

        // Health is back from t=1000 (long after minHold).
        let back = Some(t(1000));
        let d = decide(&p, &auto(false, back), &s, t(1000));
        assert!(d.active && !d.flipped);
        assert_eq!(d.reason, reason::RECOVERING);
        assert_eq!(d.requeue_after, Some(Duration::from_secs(300)));
        s = d.new_state;

        let d = decide(&p, &auto(false, back), &s, t(1299));
        assert!(d.active);
        assert_eq!(d.requeue_after, Some(Duration::from_secs(1)));
        assert_eq!(d.new_state, s, "waiting changes nothing");

        // A blip restarts the streak: healthy again from 1299.
        let d = decide(&p, &auto(false, Some(t(1299))), &s, t(1300));
        assert!(d.active);
        assert_eq!(d.requeue_after, Some(Duration::from_secs(299)));
        let s2 = d.new_state;

        let d = decide(&p, &auto(false, back), &s2, t(1300));
        assert!(!d.active && d.flipped);
        assert_eq!(d.reason, reason::RECOVERED);
        assert_eq!(d.new_state.since, Some(t(1300)));
        assert_eq!(d.new_state.flips, vec![t(0), t(1300)]);
        assert_eq!(d.requeue_after, None);
    }

    #[test]
    fn min_hold_delays_off_but_not_on() {
        let p = policy();
        // Maintenance turns it on while the server is healthy all along.
        let healthy = Some(t(-10_000));
        let mw = FallbackInputs {
            healthy_since: healthy,
            maintenance_active: vec!["mw-b".into(), "mw-a".into(), "mw-b".into()],
            ..Default::default()
        };
        let d = decide(&p, &mw, &FallbackState::default(), t(0));
        assert!(d.active && d.flipped);
        assert_eq!(d.reason, reason::MAINTENANCE_WINDOW);
        assert_eq!(d.message, "MaintenanceWindows mw-a, mw-b active");
        let s = d.new_state;

        // The window ends after 30s: recovered long ago, but minHold (120s) holds it.
        let d = decide(&p, &auto(false, healthy), &s, t(30));
        assert!(d.active);
        assert_eq!(d.reason, reason::RECOVERING);
        assert_eq!(d.requeue_after, Some(Duration::from_secs(90)));
        let d = decide(&p, &auto(false, healthy), &d.new_state, t(120));
        assert!(!d.active && d.flipped);
        let s = d.new_state;

        // 10s later the health check fails: ON at once, minHold notwithstanding.
        let d = decide(&p, &auto(true, None), &s, t(130));
        assert!(d.active && d.flipped);
        assert_eq!(d.reason, reason::HEALTH_CHECK_FAILED);
        assert_eq!(d.new_state.flips, vec![t(0), t(120), t(130)]);
    }

    #[test]
    fn cause_change_while_on_changes_reason_not_since() {
        let p = policy();
        let mw = FallbackInputs { maintenance_active: vec!["mw".into()], health_failed: true, ..Default::default() };
        let d = decide(&p, &mw, &FallbackState::default(), t(0));
        assert_eq!(d.reason, reason::MAINTENANCE_WINDOW);
        let d = decide(&p, &auto(true, None), &d.new_state, t(60));
        assert!(!d.flipped);
        assert_eq!(d.reason, reason::HEALTH_CHECK_FAILED);
        assert_eq!(d.new_state.since, Some(t(0)));
        let slo = FallbackInputs { slo_breached: true, ..Default::default() };
        let d = decide(&p, &slo, &d.new_state, t(120));
        assert_eq!(d.reason, reason::SLO_BREACHED);
        assert_eq!(d.new_state.since, Some(t(0)));
        assert_eq!(d.new_state.flips, vec![t(0)]);
    }

    /// Simulate a flapping server in 10s steps; check the budget and safety invariants.
    fn simulate_flapping(max: u32, minutes: i64) -> Vec<(DateTime<Utc>, FallbackDecision)> {
        let p = FallbackPolicy {
            recover_after: Duration::from_secs(60),
            min_hold: Duration::from_secs(30),
            max_flips_per_hour: max,
        };
        let mut s = FallbackState::default();
        let mut out = Vec::new();
        let mut healthy_since: Option<DateTime<Utc>> = None;
        for step in 0..(minutes * 6) {
            let now = t(step * 10);
            // Down for 1 minute out of every 4, for the first hour; healthy afterwards.
            let down = step < 360 && (step / 6) % 4 == 0;
            if down {
                healthy_since = None;
            } else if healthy_since.is_none() {
                healthy_since = Some(now);
            }
            let d = decide(&p, &auto(down, healthy_since), &s, now);
            if down {
                assert!(d.active, "a failing server is always in fallback ({now})");
            }
            s = d.new_state.clone();
            out.push((now, d));
        }
        out
    }

    fn flip_times(run: &[(DateTime<Utc>, FallbackDecision)]) -> Vec<DateTime<Utc>> {
        run.iter().filter(|(_, d)| d.flipped).map(|(at, _)| *at).collect()
    }

    fn max_in_rolling_hour(flips: &[DateTime<Utc>]) -> usize {
        flips
            .iter()
            .map(|end| flips.iter().filter(|f| **f <= *end && *end - **f < FLIP_WINDOW).count())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn flapping_is_capped_then_stalled_then_recovers() {
        for max in [2u32, 3, 4, 5, 6] {
            let run = simulate_flapping(max, 180);
            let flips = flip_times(&run);
            assert!(max_in_rolling_hour(&flips) <= max as usize, "max={max}: {flips:?}");
            // It stalled at some point while flapping...
            let first_stall = run.iter().position(|(_, d)| d.new_state.stalled).expect("stalls");
            assert_eq!(run[first_stall].1.reason, reason::FLIP_BUDGET_EXHAUSTED);
            assert!(run[first_stall].1.active);
            // ...requeued for when the budget frees up...
            assert!(run[first_stall].1.requeue_after.is_some());
            // ...and after the flapping stops and flips age out, it is OFF and not stalled.
            let (_, last) = run.last().unwrap();
            assert!(!last.active && !last.new_state.stalled, "max={max}: {last:?}");
            assert_eq!(last.reason, reason::RECOVERED);
            // Every flip after the stall is explained by aging-out, never a budget overrun.
            for (at, d) in &run {
                assert!(d.new_state.flips.len() <= max as usize, "max={max} at {at}: {d:?}");
            }
        }
    }

    #[test]
    fn flapping_with_budget_four_uses_three_then_stalls() {
        let run = simulate_flapping(4, 60);
        let flips = flip_times(&run);
        // ON (0s), OFF, ON, then OFF would leave no reserve: stalled.
        assert_eq!(flips.len(), 3, "{flips:?}");
        let stalled: Vec<_> = run.iter().filter(|(_, d)| d.new_state.stalled).collect();
        assert!(!stalled.is_empty());
        assert!(stalled.iter().all(|(_, d)| d.active));
    }

    #[test]
    fn stalled_clears_when_flips_age_out() {
        let p = policy(); // 4/h, recover 300s, hold 120s
        let healthy_forever = Some(t(-100_000));
        // Three automatic flips in the last hour, fallback on, server fine.
        let s = FallbackState {
            active: true,
            since: Some(t(1200)),
            reason: Some(reason::HEALTH_CHECK_FAILED.into()),
            flips: vec![t(0), t(600), t(1200)],
            stalled: false,
        };
        let d = decide(&p, &auto(false, healthy_forever), &s, t(2000));
        assert!(d.active && !d.flipped && d.new_state.stalled);
        assert_eq!(d.reason, reason::FLIP_BUDGET_EXHAUSTED);
        // The first flip leaves the hour at t(3600): then 2 remain and an OFF fits.
        assert_eq!(d.requeue_after, Some(Duration::from_secs(1600)));
        let s = d.new_state;
        let d2 = decide(&p, &auto(false, healthy_forever), &s, t(3599));
        assert!(d2.active && d2.new_state.stalled);
        assert_eq!(d2.new_state, s, "still silent while stalled");
        let d3 = decide(&p, &auto(false, healthy_forever), &s, t(3600));
        assert!(!d3.active && d3.flipped && !d3.new_state.stalled);
        assert_eq!(d3.reason, reason::RECOVERED);
        assert_eq!(d3.new_state.flips, vec![t(600), t(1200), t(3600)]);
    }

    #[test]
    fn protective_on_beyond_budget_stalls_until_aged_out() {
        let p = policy();
        // Four flips (e.g. the last OFF came from before an override); now the server fails.
        let s = FallbackState {
            active: false,
            since: Some(t(1800)),
            reason: Some(reason::RECOVERED.into()),
            flips: vec![t(0), t(600), t(1200), t(1800)],
            stalled: false,
        };
        let d = decide(&p, &auto(true, None), &s, t(2000));
        assert!(d.active && d.flipped && d.new_state.stalled);
        assert_eq!(d.reason, reason::FLIP_BUDGET_EXHAUSTED);
        assert!(d.message.starts_with("health check failed"), "{}", d.message);
        assert_eq!(d.new_state.flips.len(), 5);
        // 5 flips; back to 4 when t(0) ages out at 3600.
        assert_eq!(d.requeue_after, Some(Duration::from_secs(1600)));
        let d2 = decide(&p, &auto(true, None), &d.new_state, t(3600));
        assert!(d2.active && !d2.flipped && !d2.new_state.stalled);
        assert_eq!(d2.reason, reason::HEALTH_CHECK_FAILED);
        assert_eq!(d2.new_state.since, Some(t(2000)));
    }

    #[test]
    fn overrides_are_honoured_and_not_counted() {
        let p = policy();
        let failing = FallbackInputs { health_failed: true, override_: Override::Off, ..Default::default() };
        let s = FallbackState {
            active: true,
            since: Some(t(990)),
            reason: Some("HealthCheckFailed".into()),
            flips: vec![t(100), t(200), t(300), t(400), t(990)],
            stalled: true,
        };
        // Off while failing, within minHold, budget over: honoured.
        let d = decide(&p, &failing, &s, t(1000));
        assert!(!d.active && d.flipped && !d.new_state.stalled);
        assert_eq!(d.reason, reason::OVERRIDE);
        assert_eq!(d.new_state.flips, s.flips, "override flips are not counted");
        assert_eq!(d.new_state.since, Some(t(1000)));
        assert_eq!(d.requeue_after, None);
        assert_eq!(d.message, "colony.zyeute.io/fallback=off set");
        // On while healthy.
        let on = FallbackInputs { healthy_since: Some(t(0)), override_: Override::On, ..Default::default() };
        let d2 = decide(&p, &on, &d.new_state, t(1001));
        assert!(d2.active && d2.flipped);
        assert_eq!(d2.new_state.flips, s.flips);
        // Back to auto while failing: ON stays (no flip); budget still over → stalled.
        let d3 = decide(&p, &auto(true, None), &d2.new_state, t(1002));
        assert!(d3.active && !d3.flipped && d3.new_state.stalled);
        // Back to auto while off and failing: protective ON at once.
        let d4 = decide(&p, &auto(true, None), &d.new_state, t(1002));
        assert!(d4.active && d4.flipped);
    }

    #[test]
    fn override_on_matching_state_only_changes_reason() {
        let p = policy();
        let s = FallbackState {
            active: true,
            since: Some(t(5)),
            reason: Some("HealthCheckFailed".into()),
            flips: vec![t(5)],
            stalled: false,
        };
        let d = decide(&p, &FallbackInputs { override_: Override::On, ..Default::default() }, &s, t(50));
        assert!(!d.flipped);
        assert_eq!(d.new_state.since, Some(t(5)));
        assert_eq!(d.reason, reason::OVERRIDE);
    }

    #[test]
    fn after_override_removed_off_reason_is_no_cause() {
        let p = policy();
        let s = FallbackState {
            active: false,
            since: Some(t(5)),
            reason: Some(reason::OVERRIDE.into()),
            flips: vec![],
            stalled: false,
        };
        let d = decide(&p, &auto(false, Some(t(0))), &s, t(50));
        assert!(!d.active && !d.flipped);
        assert_eq!(d.reason, reason::NO_CAUSE);
    }

    #[test]
    fn min_hold_after_override_flip_applies_to_auto_off() {
        let p = policy();
        let s = FallbackState {
            active: true,
            since: Some(t(1000)),
            reason: Some(reason::OVERRIDE.into()),
            flips: vec![],
            stalled: false,
        };
        let d = decide(&p, &auto(false, Some(t(0))), &s, t(1060));
        assert!(d.active);
        assert_eq!(d.reason, reason::RECOVERING);
        assert_eq!(d.requeue_after, Some(Duration::from_secs(60)));
        let d = decide(&p, &auto(false, Some(t(0))), &s, t(1120));
        assert!(!d.active && d.flipped);
    }

    #[test]
    fn requeue_is_the_later_of_recover_after_and_min_hold() {
        let p = policy();
        let s = FallbackState {
            active: true,
            since: Some(t(0)),
            reason: Some("SLOBreached".into()),
            flips: vec![t(0)],
            stalled: false,
        };
        // healthy from 10: recover at 310, hold until 120 → 310
        let d = decide(&p, &auto(false, Some(t(10))), &s, t(20));
        assert_eq!(d.requeue_after, Some(Duration::from_secs(290)));
        // healthy since long ago: hold until 120
        let d = decide(&p, &auto(false, Some(t(-9999))), &s, t(20));
        assert_eq!(d.requeue_after, Some(Duration::from_secs(100)));
    }

    #[test]
    fn budget_of_one_and_zero() {
        let p1 = FallbackPolicy { max_flips_per_hour: 1, ..policy() };
        let healthy = Some(t(-99_999));
        let d = decide(&p1, &auto(true, None), &FallbackState::default(), t(0));
        assert!(d.active && !d.new_state.stalled);
        let d = decide(&p1, &auto(false, healthy), &d.new_state, t(600));
        assert!(d.active && d.new_state.stalled, "the ON used the only flip");
        assert_eq!(d.requeue_after, Some(Duration::from_secs(3000)));
        let d = decide(&p1, &auto(false, healthy), &d.new_state, t(3600));
        assert!(!d.active && d.flipped, "OFF once the ON aged out");
        let d = decide(&p1, &auto(true, None), &d.new_state, t(3700));
        assert!(d.active && d.flipped && d.new_state.stalled, "protective ON beyond budget");

        let p0 = FallbackPolicy { max_flips_per_hour: 0, ..policy() };
        let d = decide(&p0, &auto(true, None), &FallbackState::default(), t(0));
        assert!(d.active && d.new_state.stalled);
        let d = decide(&p0, &auto(false, healthy), &d.new_state, t(10_000));
        assert!(d.active && d.new_state.stalled, "never off automatically with budget 0");
        assert_eq!(d.requeue_after, None);
        assert!(d.new_state.flips.is_empty());
    }

    #[test]
    fn zero_durations_recover_immediately() {
        let p = FallbackPolicy { recover_after: Duration::ZERO, min_hold: Duration::ZERO, max_flips_per_hour: 10 };
        let d = decide(&p, &auto(true, None), &FallbackState::default(), t(0));
        let d = decide(&p, &auto(false, Some(t(0))), &d.new_state, t(0));
        assert!(!d.active && d.flipped);
    }

    #[test]
    fn huge_durations_do_not_panic() {
        let p = FallbackPolicy {
            recover_after: Duration::from_secs(u64::MAX),
            min_hold: Duration::from_secs(u64::MAX),
            max_flips_per_hour: u32::MAX,
        };
        let s = FallbackState { active: true, since: Some(t(0)), ..Default::default() };
        let d = decide(&p, &auto(false, Some(t(0))), &s, t(10));
        assert!(d.active);
        assert_eq!(d.requeue_after, Some(MAX_REQUEUE));
        let far = DateTime::<Utc>::MAX_UTC - TimeDelta::seconds(10);
        let s = FallbackState { active: true, since: Some(far), flips: vec![far], ..Default::default() };
        let d = decide(&policy(), &auto(false, Some(far)), &s, far);
        assert!(d.active);
    }

    #[test]
    fn future_healthy_since_waits() {
        let p = policy();
        let s = FallbackState { active: true, since: Some(t(0)), ..Default::default() };
        let d = decide(&p, &auto(false, Some(t(1000))), &s, t(500));
        assert!(d.active);
        assert_eq!(d.requeue_after, Some(Duration::from_secs(800)));
    }

    #[test]
    fn configmap_values() {
        assert_eq!(configmap_value(true), "false");
        assert_eq!(configmap_value(false), "true");
    }

    #[test]
    fn state_serde_round_trip() {
        let s = FallbackState {
            active: true,
            since: Some(t(1)),
            reason: Some("SLOBreached".into()),
            flips: vec![t(1)],
            stalled: false,
        };
        let back: FallbackState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.flips_last_hour(), 1);
    }

    /// Pseudo-random inputs over simulated time (no rand crate: a fixed LCG).
    #[test]
    fn randomized_invariants() {
        let mut seed: u64 = 0x5eed_cafe;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        for max in [2u32, 3, 4, 7] {
            let p = FallbackPolicy {
                recover_after: Duration::from_secs(120),
                min_hold: Duration::from_secs(60),
                max_flips_per_hour: max,
            };
            let mut s = FallbackState::default();
            let mut healthy_since: Option<DateTime<Utc>> = None;
            let mut flips = Vec::new();
            for step in 0..5000i64 {
                let now = t(step * 15);
                let failed = next() % 7 == 0;
                if failed {
                    healthy_since = None
                } else if healthy_since.is_none() {
                    healthy_since = Some(now)
                }
                let inputs = FallbackInputs {
                    health_failed: failed,
                    healthy_since,
                    slo_breached: next() % 23 == 0,
                    maintenance_active: if next() % 41 == 0 { vec!["mw".into()] } else { vec![] },
                    override_: Override::Auto,
                };
                let d = decide(&p, &inputs, &s, now);
                let any_cause = inputs.health_failed || inputs.slo_breached || !inputs.maintenance_active.is_empty();
                if any_cause {
                    assert!(d.active);
                }
                if d.flipped {
                    flips.push(now);
                    if !d.active {
                        let hs = healthy_since.unwrap();
                        assert!(now - hs >= TimeDelta::seconds(120));
                        assert!(s.since.is_none_or(|since| now - since >= TimeDelta::seconds(60)));
                    }
                } else {
                    assert_eq!(d.new_state.since, s.since);
                }
                s = d.new_state;
            }
            assert!(max_in_rolling_hour(&flips) <= max as usize, "max={max}");
            assert!(!flips.is_empty());
        }
    }
}
