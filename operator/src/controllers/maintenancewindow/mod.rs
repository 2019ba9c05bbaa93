//! The MaintenanceWindow controller: opens and closes windows on schedule and verifies the
//! server afterwards. The ColonyServer and FinanceBee controllers read its status.
pub mod decide;
#[cfg(test)]
mod seams;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use crate::api::{
    ACTIVE, ColonyServer, END_NOW_ANNOTATION, HEALTHY, MaintenanceWindow, MaintenanceWindowSpec,
    MaintenanceWindowStatus, OnFailure, READY, RECONCILING, STALLED, WindowPhase,
};
use crate::runtime::Shutdown;
use crate::runtime::conditions::{Desired, is_true, merge};
use crate::runtime::controller::{CONCURRENT_RECONCILES, Spawned, primary_into, spawn_controller};
use crate::runtime::windows::WindowFeed;
use crate::runtime::{Context, Result, apply_status, fresh};

pub const NAME: &str = "maintenancewindow";

/// The controller's watch also fills `feed`: the view of windows the other controllers read.
pub fn start(ctx: Arc<Context>, feed: WindowFeed, shutdown: Shutdown) -> Spawned {
    let for_hook = ctx.clone();
    let (writer, tap) = feed.into_parts();
    let (controller, synced) = primary_into(
        ctx.scoped_api::<MaintenanceWindow>(),
        ctx.watch_config(),
        NAME,
        move |mw| for_hook.forget(NAME, &mw.namespace().unwrap_or_default(), &mw.name_any()),
        writer,
        tap,
    );
    spawn_controller(NAME, CONCURRENT_RECONCILES, controller, synced, reconcile, ctx, shutdown)
}

/// What a human does to end a failure kept by `keepFallback` (in messages and docs).
pub const RESUME_HINT: &str =
    "set spec.verify.onFailure to restore, set spec.suspend to true, or delete the MaintenanceWindow";

/// The window's conditions, as a pure function of the decision and of whether its
/// ColonyServer exists. kstatus reads them: Reconciling while verifying, Stalled when a
/// human must act (invalid spec, missing server, failed verification); never both.
pub fn conditions(d: &decide::Decision, spec: &MaintenanceWindowSpec, server_found: bool) -> Vec<Desired> {
    let mut desired = vec![Desired::new(
        ACTIVE,
        d.phase == WindowPhase::Active,
        format!("{:?}", d.phase),
        match d.phase {
            WindowPhase::Active => "maintenance window open".to_string(),
            _ => "maintenance window closed".to_string(),
        },
    )];
    let outcome = || d.last_outcome.as_ref().and_then(|o| o.message.clone());
    let stalled: Option<(&str, String)> = if let Some(why) = &d.invalid {
        Some(("InvalidSpec", why.clone()))
    } else if !server_found {
        Some(("ServerNotFound", format!("ColonyServer {:?} not found", spec.colony_server_ref.name)))
    } else if d.phase == WindowPhase::Failed {
        let what = outcome().unwrap_or_else(|| "verification after the window failed".into());
        Some((
            "VerificationFailed",
            match spec.verify.on_failure {
                OnFailure::KeepFallback => format!(
                    "{what}; the fallback stays on and the FinanceBees stay stopped until a human acts: {RESUME_HINT}"
                ),
                OnFailure::Restore => format!("{what}; normal operation resumed (onFailure: restore)"),
            },
        ))
    } else {
        None
    };
    match stalled {
        Some((reason, message)) => {
            desired.push(Desired::new(READY, false, reason, message.clone()));
            desired.push(Desired::new(STALLED, true, reason, message));
            desired.push(Desired::new(RECONCILING, false, "", ""));
        }
        None => {
            desired.push(Desired::new(
                READY,
                true,
                "Reconciled",
                outcome().unwrap_or_else(|| "window schedule evaluated".into()),
            ));
            desired.push(Desired::new(STALLED, false, "", ""));
            let verifying = d.phase == WindowPhase::Verifying;
            desired.push(Desired::new(
                RECONCILING,
                verifying,
                "Verifying",
                "window closed, verifying the server's health (the fallback stays on, the bees stay stopped)",
            ));
        }
    }
    desired
}

async fn reconcile(cached: Arc<MaintenanceWindow>, ctx: Arc<Context>) -> Result<Action> {
    let ns = cached.namespace().unwrap_or_default();
    let api: Api<MaintenanceWindow> = ctx.api(&ns);
    let Some(mw) = fresh(&api, cached.as_ref()).await? else { return Ok(Action::await_change()) };
    let now = Utc::now();
    let server = ctx.api::<ColonyServer>(&ns).get_opt(&mw.spec.colony_server_ref.name).await?;
    let server_healthy = server.as_ref().and_then(|s| s.status.as_ref()).map(|s| is_true(&s.conditions, HEALTHY));
    let current: Option<MaintenanceWindowStatus> = mw.status.clone();
    let d = decide::decide(&decide::Inputs {
        spec: &mw.spec,
        previous: current.as_ref(),
        server_healthy,
        end_now: mw.annotations().get(END_NOW_ANNOTATION).map(String::as_str),
        now,
    });
    let previous_phase = current.as_ref().and_then(|s| s.phase);
    let desired = conditions(&d, &mw.spec, server.is_some());
    let previous = current.clone().unwrap_or_default();
    let status = MaintenanceWindowStatus {
        observed_generation: mw.metadata.generation,
        conditions: merge(&previous.conditions, &desired, mw.metadata.generation, now),
        phase: Some(d.phase),
        current_window: d.current_window.clone(),
        next_start: d.next_start,
        last_outcome: d.last_outcome.clone(),
        handled_end_now: d.handled_end_now.clone(),
    };
    ctx.metrics.conditions_observed(NAME, &ns, &mw.name_any(), &status.conditions);
    apply_status(&api, &mw, NAME, current.as_ref(), &status).await?;
    if previous_phase != Some(d.phase) && d.invalid.is_none() {
        let (type_, reason) = match d.phase {
            WindowPhase::Active => (EventType::Normal, "WindowOpened"),
            WindowPhase::Verifying => (EventType::Normal, "WindowClosed"),
            WindowPhase::Completed => (EventType::Normal, "VerificationSucceeded"),
            WindowPhase::Failed => (EventType::Warning, "VerificationFailed"),
            WindowPhase::Scheduled => (EventType::Normal, "WindowScheduled"),
        };
        ctx.event(&mw, type_, reason, "Schedule", format!("phase {:?} -> {:?}", previous_phase, d.phase)).await;
    }
    // A missing server is looked for again (no watch on servers from here).
    let limit = if server.is_none() { Duration::from_secs(30) } else { Duration::from_secs(3600) };
    Ok(match (&d.invalid, d.requeue_after) {
        (Some(_), _) => Action::await_change(),
        (None, Some(after)) => Action::requeue(after.min(limit)),
        (None, None) => Action::requeue(limit),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{LocalObjectReference, WindowSchedule};
    use crate::runtime::conditions::merge;

    fn decision(phase: WindowPhase, invalid: bool) -> decide::Decision {
        decide::Decision {
            phase,
            current_window: None,
            next_start: None,
            last_outcome: None,
            handled_end_now: None,
            requeue_after: None,
            invalid: invalid.then(|| "spec.schedule.cron: bad".to_string()),
        }
    }

    fn spec(on_failure: OnFailure) -> MaintenanceWindowSpec {
        MaintenanceWindowSpec {
            schedule: WindowSchedule {
                cron: Some("0 2 * * 0".into()),
                duration: Some("1h".into()),
                ..Default::default()
            },
            colony_server_ref: LocalObjectReference::new("prod"),
            finance_bees: None,
            actions: Default::default(),
            verify: crate::api::VerifySpec { on_failure, ..Default::default() },
            suspend: false,
        }
    }

    const PHASES: [WindowPhase; 5] = [
        WindowPhase::Scheduled,
        WindowPhase::Active,
        WindowPhase::Verifying,
        WindowPhase::Completed,
        WindowPhase::Failed,
    ];

    /// Every phase × valid or not × server found or not × onFailure: never Reconciling and
    /// Stalled at once; Stalled exactly when a human must act; Ready is never True then.
    #[test]
    fn conditions_over_all_inputs() {
        let now = chrono::Utc::now();
        for phase in PHASES {
            for invalid in [false, true] {
                for found in [false, true] {
                    for on_failure in [OnFailure::KeepFallback, OnFailure::Restore] {
                        let out =
                            merge(&[], &conditions(&decision(phase, invalid), &spec(on_failure), found), None, now);
                        let case = format!("{phase:?} invalid={invalid} found={found} {on_failure:?}");
                        let (r, st, ready) = (is_true(&out, RECONCILING), is_true(&out, STALLED), is_true(&out, READY));
                        assert!(!(r && st), "{case}");
                        assert_eq!(st, invalid || !found || phase == WindowPhase::Failed, "{case}");
                        assert_eq!(ready, !st, "{case}");
                        assert_eq!(r, !st && phase == WindowPhase::Verifying, "{case}");
                    }
                }
            }
        }
    }

    #[test]
    fn missing_server_and_kept_failure_say_what_to_do() {
        let out = conditions(&decision(WindowPhase::Scheduled, false), &spec(OnFailure::KeepFallback), false);
        let stalled = out.iter().find(|c| c.type_ == STALLED).unwrap();
        assert_eq!(
            (stalled.reason.as_str(), stalled.message.as_str()),
            ("ServerNotFound", "ColonyServer \"prod\" not found")
        );
        let out = conditions(&decision(WindowPhase::Failed, false), &spec(OnFailure::KeepFallback), true);
        let stalled = out.iter().find(|c| c.type_ == STALLED).unwrap();
        assert_eq!(stalled.reason, "VerificationFailed");
        assert!(stalled.message.contains(RESUME_HINT), "{}", stalled.message);
    }
}
