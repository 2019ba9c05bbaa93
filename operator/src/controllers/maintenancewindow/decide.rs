//! Where a MaintenanceWindow stands, as a pure function of its spec, its previous status,
//! the health of its ColonyServer and `now`.
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::{
    MaintenanceWindowSpec, MaintenanceWindowStatus, OnFailure, ScheduleForm, WindowBounds, WindowOutcome, WindowPhase,
};
use crate::schedule::{CronSchedule, Window, WindowState, one_off, recurring};

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub phase: WindowPhase,
    pub current_window: Option<WindowBounds>,
    pub next_start: Option<DateTime<Utc>>,
    pub last_outcome: Option<WindowOutcome>,
    pub handled_end_now: Option<String>,
    /// Reconcile again after this long (a boundary or a verification deadline).
    pub requeue_after: Option<Duration>,
    /// Set when the spec cannot be evaluated.
    pub invalid: Option<String>,
}

pub struct Inputs<'a> {
    pub spec: &'a MaintenanceWindowSpec,
    pub previous: Option<&'a MaintenanceWindowStatus>,
    /// Healthy condition of the ColonyServer (None: unknown or missing).
    pub server_healthy: Option<bool>,
    /// Value of the `colony.zyeute.io/end-now` annotation.
    pub end_now: Option<&'a str>,
    pub now: DateTime<Utc>,
}

fn window_state(spec: &MaintenanceWindowSpec, now: DateTime<Utc>) -> Result<WindowState, String> {
    spec.check(now)?;
    match spec.schedule.form() {
        Some(ScheduleForm::OneOff { start, end }) => Ok(one_off(start, end, now)),
        Some(ScheduleForm::Recurring { cron, duration, time_zone }) => {
            let schedule = CronSchedule::parse(cron, time_zone).map_err(|e| format!("spec.schedule.cron: {e}"))?;
            Ok(recurring(&schedule, duration.time_delta(), now))
        }
        None => Err("spec.schedule needs either start and end, or cron and duration".into()),
    }
}

fn until(now: DateTime<Utc>, t: DateTime<Utc>) -> Duration {
    (t - now).to_std().unwrap_or(Duration::ZERO) + Duration::from_secs(1)
}

fn bounds(w: Window) -> WindowBounds {
    WindowBounds { start: w.start, end: w.end }
}

pub fn decide(i: &Inputs) -> Decision {
    let prev = i.previous.cloned().unwrap_or_default();
    let mut d = Decision {
        phase: prev.phase.unwrap_or_default(),
        current_window: None,
        next_start: None,
        last_outcome: prev.last_outcome.clone(),
        handled_end_now: prev.handled_end_now.clone(),
        requeue_after: None,
        invalid: None,
    };
    let state = match window_state(i.spec, i.now) {
        Ok(s) => s,
        Err(e) => {
            d.invalid = Some(e);
            return d;
        }
    };
    d.next_start = state.next_start;
    if i.spec.suspend {
        d.phase = WindowPhase::Scheduled;
        d.requeue_after = None;
        return d;
    }
    let recorded = |w: &Window| prev.last_outcome.as_ref().is_some_and(|o| o.start == w.start);

    // A window that is open and not yet finished (or ended early by the annotation).
    if let Some(w) = state.current.filter(|w| !recorded(w)) {
        let end_requested = i.end_now.is_some() && i.end_now.map(String::from) != prev.handled_end_now;
        if !end_requested {
            d.phase = WindowPhase::Active;
            d.current_window = Some(bounds(w));
            d.requeue_after = Some(until(i.now, w.end));
            return d;
        }
        // Ended early: verify from now on, as if the window had ended at this instant.
        d.handled_end_now = i.end_now.map(String::from);
        return verify(i, d, Window { start: w.start, end: i.now });
    }
    // The latest window has closed: verify it unless its outcome is recorded.
    let latest_closed = match (state.current, prev.current_window.as_ref()) {
        // The schedule's current window was already recorded (ended early): that one.
        (Some(w), _) if recorded(&w) => None,
        (_, Some(cw)) if prev.last_outcome.as_ref().is_none_or(|o| o.start != cw.start) => {
            Some(Window { start: cw.start, end: cw.end.min(i.now) })
        }
        // A window that passed while the operator was away: verified only if the last status
        // saw it coming (a window that ended before the resource existed is not).
        _ => state.previous.filter(|w| !recorded(w) && prev.next_start == Some(w.start)),
    };
    if let Some(w) = latest_closed {
        return verify(i, d, w);
    }
    // A failure kept by `keepFallback` holds (fallback on, bees stopped) until a human acts or
    // the next window opens; otherwise a recurring window goes back to Scheduled.
    let keep_failure = i.spec.verify.on_failure == OnFailure::KeepFallback;
    d.phase = match prev.last_outcome.as_ref().map(|o| o.result) {
        Some(WindowPhase::Failed) if state.next_start.is_none() || keep_failure => WindowPhase::Failed,
        Some(WindowPhase::Completed) if state.next_start.is_none() => WindowPhase::Completed,
        _ => WindowPhase::Scheduled,
    };
    d.requeue_after = state.next_start.map(|t| until(i.now, t));
    d
}

/// After a window: Verifying until the server is healthy (Completed) or the verification
/// timeout passes (Failed). The fallback stays on while verifying.
fn verify(i: &Inputs, mut d: Decision, w: Window) -> Decision {
    let deadline = w.end + i.spec.verify.timeout.time_delta();
    d.current_window = Some(bounds(w));
    if i.server_healthy == Some(true) {
        d.phase = WindowPhase::Completed;
        d.current_window = None;
        d.last_outcome = Some(WindowOutcome {
            start: w.start,
            end: w.end,
            result: WindowPhase::Completed,
            message: Some("server healthy after maintenance".into()),
        });
        if d.next_start.is_some() {
            d.phase = WindowPhase::Scheduled;
        }
        d.requeue_after = d.next_start.map(|t| until(i.now, t));
        return d;
    }
    if i.now >= deadline {
        d.phase = WindowPhase::Failed;
        d.current_window = None;
        d.last_outcome = Some(WindowOutcome {
            start: w.start,
            end: w.end,
            result: WindowPhase::Failed,
            message: Some(format!("server not healthy within {} after the window", i.spec.verify.timeout)),
        });
        d.requeue_after = d.next_start.map(|t| until(i.now, t));
        return d;
    }
    d.phase = WindowPhase::Verifying;
    d.requeue_after = Some(until(i.now, deadline).min(Duration::from_secs(5)));
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{LocalObjectReference, WindowSchedule};
    use chrono::TimeZone;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, h, m, 0).unwrap()
    }

    fn one_off_spec() -> MaintenanceWindowSpec {
        MaintenanceWindowSpec {
            schedule: WindowSchedule { start: Some(t(2, 0)), end: Some(t(4, 0)), ..Default::default() },
            colony_server_ref: LocalObjectReference::new("prod"),
            finance_bees: None,
            actions: Default::default(),
            verify: Default::default(),
            suspend: false,
        }
    }

    fn step(
        spec: &MaintenanceWindowSpec,
        prev: Option<&MaintenanceWindowStatus>,
        healthy: Option<bool>,
        now: DateTime<Utc>,
    ) -> (Decision, MaintenanceWindowStatus) {
        step_end_now(spec, prev, healthy, None, now)
    }

    /// Whether a window in the phase `d` decided keeps the fallback on: the rule that runs
    /// (`MaintenanceWindow::holds_fallback`, read from the recorded phase).
    fn holds(spec: &MaintenanceWindowSpec, d: &Decision) -> bool {
        let mut mw = crate::api::MaintenanceWindow::new("w", spec.clone());
        mw.status = Some(MaintenanceWindowStatus { phase: Some(d.phase), ..Default::default() });
        mw.holds_fallback()
    }

    fn step_end_now(
        spec: &MaintenanceWindowSpec,
        prev: Option<&MaintenanceWindowStatus>,
        healthy: Option<bool>,
        end_now: Option<&str>,
        now: DateTime<Utc>,
    ) -> (Decision, MaintenanceWindowStatus) {
        let d = decide(&Inputs { spec, previous: prev, server_healthy: healthy, end_now, now });
        let status = MaintenanceWindowStatus {
            phase: Some(d.phase),
            current_window: d.current_window.clone(),
            next_start: d.next_start,
            last_outcome: d.last_outcome.clone(),
            handled_end_now: d.handled_end_now.clone(),
            ..Default::default()
        };
        (d, status)
    }

    #[test]
    fn one_off_lifecycle_scheduled_active_verifying_completed() {
        let spec = one_off_spec();
        let (d, s) = step(&spec, None, Some(true), t(1, 0));
        assert_eq!(d.phase, WindowPhase::Scheduled);
        assert_eq!(d.next_start, Some(t(2, 0)));
        assert!(!holds(&spec, &d));
        assert_eq!(d.requeue_after, Some(Duration::from_secs(3601)));
        let (d, s) = step(&spec, Some(&s), Some(true), t(2, 0));
        assert_eq!(d.phase, WindowPhase::Active);
        assert!(holds(&spec, &d));
        let (d, s) = step(&spec, Some(&s), Some(false), t(4, 0));
        assert_eq!(d.phase, WindowPhase::Verifying, "server not healthy yet");
        assert!(holds(&spec, &d), "fallback stays on while verifying");
        let (d, _) = step(&spec, Some(&s), Some(true), t(4, 1));
        assert_eq!(d.phase, WindowPhase::Completed);
        assert!(!holds(&spec, &d));
        assert_eq!(d.last_outcome.unwrap().result, WindowPhase::Completed);
    }

    #[test]
    fn verification_timeout_fails_and_keeps_fallback_by_default() {
        let spec = one_off_spec();
        let (_, s) = step(&spec, None, None, t(3, 0));
        let (d, s) = step(&spec, Some(&s), Some(false), t(4, 5));
        assert_eq!(d.phase, WindowPhase::Verifying);
        let (d, s) = step(&spec, Some(&s), Some(false), t(4, 10));
        assert_eq!(d.phase, WindowPhase::Failed);
        assert!(holds(&spec, &d));
        let (d2, _) = step(&spec, Some(&s), Some(false), t(5, 0));
        assert_eq!(d2.phase, WindowPhase::Failed, "stays failed");
        assert!(holds(&spec, &d2));
        let mut restore = spec.clone();
        restore.verify.on_failure = OnFailure::Restore;
        let (d3, _) = step(&restore, Some(&s), Some(false), t(5, 0));
        assert!(!holds(&restore, &d3), "restore gives traffic back to Colony OS");
    }

    #[test]
    fn end_now_ends_an_active_window_once() {
        let spec = one_off_spec();
        let (_, s) = step(&spec, None, Some(true), t(2, 30));
        let (d, s) = step_end_now(&spec, Some(&s), Some(true), Some("1"), t(2, 40));
        assert_eq!(d.phase, WindowPhase::Completed, "healthy server completes at once");
        assert_eq!(d.handled_end_now.as_deref(), Some("1"));
        let (d, _) = step_end_now(&spec, Some(&s), Some(true), Some("1"), t(2, 50));
        assert_eq!(d.phase, WindowPhase::Completed, "the same annotation value does not reopen the window");
        assert!(!holds(&spec, &d));
    }

    #[test]
    fn recurring_window_returns_to_scheduled_with_next_start() {
        let mut spec = one_off_spec();
        spec.schedule =
            WindowSchedule { cron: Some("0 2 * * 0".into()), duration: Some("2h".into()), ..Default::default() };
        let (d, s) = step(&spec, None, Some(true), t(3, 0));
        assert_eq!(d.phase, WindowPhase::Active);
        let (d, _) = step(&spec, Some(&s), Some(true), t(4, 0));
        assert_eq!(d.phase, WindowPhase::Scheduled);
        assert_eq!(d.next_start, Some(Utc.with_ymd_and_hms(2026, 12, 6, 2, 0, 0).unwrap()));
        assert_eq!(d.last_outcome.unwrap().result, WindowPhase::Completed);
    }

    #[test]
    fn recurring_window_keeps_a_kept_failure_until_the_next_window() {
        let mut spec = one_off_spec();
        spec.schedule =
            WindowSchedule { cron: Some("0 2 * * 0".into()), duration: Some("2h".into()), ..Default::default() };
        let (_, s) = step(&spec, None, Some(false), t(3, 0));
        let (d, s) = step(&spec, Some(&s), Some(false), t(4, 0));
        assert_eq!(d.phase, WindowPhase::Verifying);
        let (d, s) = step(&spec, Some(&s), Some(false), t(4, 10));
        assert_eq!(d.phase, WindowPhase::Failed);
        let (d, s) = step(&spec, Some(&s), Some(true), t(5, 0));
        assert_eq!(d.phase, WindowPhase::Failed, "kept for a human, even once the server is healthy");
        assert!(holds(&spec, &d));
        let next = Utc.with_ymd_and_hms(2026, 12, 6, 2, 0, 0).unwrap();
        assert_eq!(d.next_start, Some(next));
        let (d, _) = step(&spec, Some(&s), Some(true), next);
        assert_eq!(d.phase, WindowPhase::Active, "the next window opens");
        let mut restore = spec.clone();
        restore.verify.on_failure = OnFailure::Restore;
        let (d, _) = step(&restore, Some(&s), Some(false), t(5, 0));
        assert_eq!(d.phase, WindowPhase::Scheduled, "restore: back to the schedule");
        assert!(!holds(&spec, &d));
    }

    #[test]
    fn suspended_window_never_activates() {
        let mut spec = one_off_spec();
        spec.suspend = true;
        let (d, _) = step(&spec, None, Some(true), t(3, 0));
        assert_eq!(d.phase, WindowPhase::Scheduled);
        assert!(!holds(&spec, &d));
    }

    #[test]
    fn invalid_cron_is_reported() {
        let mut spec = one_off_spec();
        spec.schedule =
            WindowSchedule { cron: Some("0 25 * * *".into()), duration: Some("1h".into()), ..Default::default() };
        let d = decide(&Inputs { spec: &spec, previous: None, server_healthy: None, end_now: None, now: t(0, 0) });
        assert!(d.invalid.unwrap().contains("spec.schedule.cron"));
    }

    #[test]
    fn window_created_after_it_ended_is_not_verified() {
        let spec = one_off_spec();
        let (d, s) = step(&spec, None, Some(false), t(6, 0));
        assert_eq!(d.phase, WindowPhase::Scheduled, "a window that passed before the resource existed is ignored");
        assert!(!holds(&spec, &d));
        let (d, _) = step(&spec, Some(&s), Some(false), t(6, 1));
        assert_eq!(d.phase, WindowPhase::Scheduled, "on every later look too");
        // The same for a recurring window (its last occurrence ended before the resource).
        let mut recurring = spec.clone();
        recurring.schedule =
            WindowSchedule { cron: Some("0 2 * * 0".into()), duration: Some("1h".into()), ..Default::default() };
        let (_, s) = step(&recurring, None, Some(false), t(13, 0));
        let (d, _) = step(&recurring, Some(&s), Some(false), t(13, 1));
        assert_eq!(d.phase, WindowPhase::Scheduled);
        assert!(d.last_outcome.is_none(), "nothing verified");
    }

    #[test]
    fn window_missed_while_the_operator_was_away_is_verified() {
        let mut spec = one_off_spec();
        spec.schedule =
            WindowSchedule { cron: Some("0 2 * * 0".into()), duration: Some("1h".into()), ..Default::default() };
        let (d, s) = step(&spec, None, Some(true), t(1, 0));
        assert_eq!(d.next_start, Some(t(2, 0)));
        let (d, _) = step(&spec, Some(&s), Some(true), t(3, 30));
        assert_eq!(d.phase, WindowPhase::Scheduled);
        assert_eq!(d.last_outcome.map(|o| (o.start, o.result)), Some((t(2, 0), WindowPhase::Completed)));
    }
}
