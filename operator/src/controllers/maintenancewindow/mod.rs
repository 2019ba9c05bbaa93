//! The MaintenanceWindow controller: opens and closes windows on schedule and verifies the
//! server afterwards. The ColonyServer and FinanceBee controllers read its status.
pub mod decide;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::api::{
    ACTIVE, ColonyServer, END_NOW_ANNOTATION, HEALTHY, MaintenanceWindow, MaintenanceWindowStatus, OnFailure, READY,
    STALLED, WindowPhase,
};
use crate::controllers::{Spawned, primary, spawn_controller};
use crate::operator::Shutdown;
use crate::runtime::conditions::{Desired, is_true, merge};
use crate::runtime::{Context, Result, apply_status, fresh};

pub const NAME: &str = "maintenancewindow";

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> Spawned {
    let (controller, synced) = primary(ctx.scoped_api::<MaintenanceWindow>(), watcher::Config::default(), NAME);
    spawn_controller(NAME, controller, synced, reconcile, ctx, shutdown)
}

/// Whether a window's status asks its ColonyServer to keep the fallback on: while open,
/// while verifying, and after a failed verification unless `onFailure: restore`.
pub fn holds_fallback(mw: &MaintenanceWindow) -> bool {
    if !mw.spec.actions.enable_fallback || mw.spec.suspend {
        return false;
    }
    match mw.status.as_ref().and_then(|s| s.phase) {
        Some(WindowPhase::Active | WindowPhase::Verifying) => true,
        Some(WindowPhase::Failed) => mw.spec.verify.on_failure == OnFailure::KeepFallback,
        _ => false,
    }
}

/// Whether the window is open (bees stop only while it is open).
pub fn is_open(mw: &MaintenanceWindow) -> bool {
    !mw.spec.suspend && mw.status.as_ref().and_then(|s| s.phase) == Some(WindowPhase::Active)
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
    let mut desired = vec![Desired::new(
        ACTIVE,
        d.phase == WindowPhase::Active,
        format!("{:?}", d.phase),
        match d.phase {
            WindowPhase::Active => "maintenance window open".to_string(),
            _ => "maintenance window closed".to_string(),
        },
    )];
    match &d.invalid {
        Some(why) => {
            desired.push(Desired::new(READY, false, "InvalidSpec", why.clone()));
            desired.push(Desired::new(STALLED, true, "InvalidSpec", why.clone()));
        }
        None => {
            let failed = d.phase == WindowPhase::Failed;
            desired.push(Desired::new(
                READY,
                !failed,
                if failed { "VerificationFailed" } else { "Reconciled" },
                d.last_outcome
                    .as_ref()
                    .and_then(|o| o.message.clone())
                    .unwrap_or_else(|| "window schedule evaluated".into()),
            ));
            desired.push(Desired::new(STALLED, false, "", ""));
        }
    }
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
    Ok(match (&d.invalid, d.requeue_after) {
        (Some(_), _) => Action::await_change(),
        (None, Some(after)) => Action::requeue(after.min(Duration::from_secs(3600))),
        (None, None) => Action::requeue(Duration::from_secs(3600)),
    })
}
