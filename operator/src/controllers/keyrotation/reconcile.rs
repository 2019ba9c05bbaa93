//! The reconcile: gather (the KeyRotation, its Secret, the window) → check the Secret against
//! status and decide (pure, `decide`) → rotate (register, write the Secret, roll the
//! targets) → status (written only on change) → requeue at the next timer.
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::decide::{self, Hold, SecretRecord, SecretView, Step, Tamper};
use super::{NAME, ROTATED_AT_ANNOTATION, keys, register, secret};
use crate::api::{
    ACCEPT_KEY_CHANGE_ANNOTATION, KeyRotation, KeyRotationStatus, MaintenanceWindow, READY, ROTATE_NOW_ANNOTATION,
    ROTATING, RotationPhase, STALLED, TargetKind, TargetsStatus,
};
use crate::runtime::conditions::{Desired, find, from_time, merge};
use crate::runtime::{Context, Result, apply_status, field_manager, fresh};

/// How the reconcile ended, for status.
enum Outcome {
    Idle,
    Held(Hold),
    Rotated,
    RegistrationFailed(String),
    Invalid(String),
    Tampered(Tamper),
    /// `spec.maintenanceWindowRef` names no window (a staged key is still finished).
    WindowNotFound(String),
    /// The API server refused the key Secret's write (a quota, an immutable Secret, a policy):
    /// nothing rotated; looked at again every 30 s.
    WriteRefused(String),
}

/// Whether a due rotation may run now: `Ok(true)` with no window or an open one, `Ok(false)`
/// while it is closed, `Err` naming a `maintenanceWindowRef` that does not resolve (Stalled).
pub fn window_gate(name: Option<&str>, window: Option<&MaintenanceWindow>) -> std::result::Result<bool, String> {
    match (name, window) {
        (None, _) => Ok(true),
        (Some(n), None) => Err(format!("MaintenanceWindow {n:?} not found")),
        (Some(_), Some(mw)) => Ok(mw.is_open()),
    }
}

async fn window_open(ctx: &Context, kr: &KeyRotation) -> Result<std::result::Result<bool, String>> {
    let name = kr.spec.maintenance_window_ref.as_ref().map(|r| r.name.as_str());
    let mw = match name {
        Some(n) => {
            ctx.windows.ready().await?;
            ctx.windows.get(&kr.namespace().unwrap_or_default(), n)
        }
        None => None,
    };
    Ok(window_gate(name, mw.as_deref()))
}

/// Rolls the targets: owned kinds roll through their controller (the Secret hash in their pod
/// template changes with the key); Deployments get a pod-template annotation.
async fn roll_targets(ctx: &Context, kr: &KeyRotation, at: DateTime<Utc>) -> Result<TargetsStatus> {
    let ns = kr.namespace().unwrap_or_default();
    let mut rolled = Vec::new();
    let mut pending = Vec::new();
    for t in &kr.spec.targets {
        match t.kind {
            TargetKind::Deployment => {
                let api: Api<Deployment> = ctx.api(&ns);
                let patch = json!({
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": { "name": t.name },
                    "spec": { "template": { "metadata": { "annotations": { ROTATED_AT_ANNOTATION: at.to_rfc3339() } } } }
                });
                match api.patch(&t.name, &PatchParams::apply(&field_manager(NAME)), &Patch::Apply(&patch)).await {
                    Ok(_) => rolled.push(t.key()),
                    Err(e) => {
                        tracing::warn!(target = %t.key(), error = %e, "could not roll target");
                        pending.push(t.key());
                    }
                }
            }
            TargetKind::FinanceBee | TargetKind::ColonyServer => rolled.push(t.key()),
        }
    }
    Ok(TargetsStatus { rolled, pending })
}

/// One rotation: the key (the staged one, or a new one), its registration with ColonyOS when
/// asked for, then one Secret write that makes it current and records what status will say.
#[allow(clippy::too_many_arguments)]
async fn rotate(
    ctx: &Context,
    kr: &KeyRotation,
    secrets: &Api<Secret>,
    current: Option<Secret>,
    view: &SecretView,
    status: &mut KeyRotationStatus,
    step: (decide::Due, bool, Option<String>),
    now: DateTime<Utc>,
) -> Result<Outcome> {
    let (due, finish_staged, handles) = step;
    let data = secret::data_of(current.as_ref());
    let staged = finish_staged.then(|| keys::pending_key(&data)).flatten();
    let key = staged.unwrap_or_else(|| {
        keys::generate(kr.spec.key_type, kr.spec.length.unwrap_or(32).max(1) as usize, &mut keys::os_random)
    });
    let mut current = current;
    if let (Some(reg), Some(old), Some(s)) = (&kr.spec.colony_os, data.get("prvkey"), current.clone()) {
        match register::register(ctx, kr, reg, secrets, s, &data, &key, old, &SecretRecord::of(status)).await {
            Ok(written) => current = Some(written),
            Err(message) => {
                tracing::warn!(error = %message, "could not register the new key");
                ctx.event(kr, EventType::Warning, "RegistrationFailed", "Register", message.clone()).await;
                return Ok(Outcome::RegistrationFailed(message));
            }
        }
    }
    let mut next = status.clone();
    next.revision += 1;
    next.previous_key_id =
        next.current_key_id.take().or_else(|| view.key_id.clone()).or_else(|| next.previous_key_id.take());
    next.current_key_id = Some(key.id.clone());
    next.last_rotation_time = Some(now);
    next.next_rotation_time = decide::next_rotation(&kr.spec, now).ok();
    if handles.is_some() {
        next.handled_rotate_now = handles;
    }
    let new_data = keys::rotate_data(&keys::without_pending(&data), &key, kr.spec.keep_previous.max(0) as usize);
    match secret::write(secrets, kr, current, new_data, &SecretRecord::of(&next)).await {
        Ok(_) => {}
        Err(e) if e.is_refusal() => {
            let why = format!("the API server refused the write of Secret {:?}: {}", kr.spec.secret_name, e.brief());
            tracing::warn!(error = %e, "could not write the key Secret");
            return Ok(Outcome::WriteRefused(why));
        }
        Err(e) => return Err(e),
    }
    next.targets = Some(roll_targets(ctx, kr, now).await?);
    *status = next;
    tracing::info!(revision = status.revision, key_id = %key.id, "rotated key");
    let note = format!("revision {}, new key id {} ({due:?})", status.revision, key.id);
    ctx.event(kr, EventType::Normal, "KeyRotated", "Rotate", note).await;
    Ok(Outcome::Rotated)
}

/// The conditions and phase for `outcome` (pure).
fn conditions(kr: &KeyRotation, status: &KeyRotationStatus, outcome: &Outcome) -> (RotationPhase, Vec<Desired>) {
    let pending = status.targets.as_ref().is_some_and(|t| !t.pending.is_empty());
    let mut desired = vec![Desired::new(ROTATING, pending, "RollingOut", "targets pending")];
    let mut stalled = |reason: &str, why: String| {
        desired.push(Desired::new(READY, false, reason, why.clone()));
        desired.push(Desired::new(STALLED, true, reason, why));
    };
    let phase = match outcome {
        Outcome::Invalid(why) => {
            stalled("InvalidSpec", why.clone());
            RotationPhase::Failed
        }
        Outcome::Tampered(t) => {
            stalled(t.reason(), t.message(&kr.name_any(), &kr.spec.secret_name, &decide::accept_token(status)));
            RotationPhase::Failed
        }
        Outcome::WindowNotFound(why) => {
            stalled("WindowNotFound", why.clone());
            RotationPhase::Failed
        }
        Outcome::WriteRefused(why) => {
            stalled("SecretWriteRefused", why.clone());
            RotationPhase::Failed
        }
        Outcome::RegistrationFailed(why) => {
            desired.push(Desired::new(READY, false, "RegistrationFailed", why.clone()));
            desired.push(Desired::new(STALLED, false, "", ""));
            RotationPhase::Registering
        }
        Outcome::Idle | Outcome::Held(_) | Outcome::Rotated => {
            let (reason, msg) = match outcome {
                Outcome::Held(Hold::Suspended) => ("Rotated", "suspended".to_string()),
                Outcome::Held(Hold::WaitingForWindow) => {
                    ("WaitingForWindow", "rotation due, waiting for the maintenance window".to_string())
                }
                _ => ("Rotated", format!("revision {}", status.revision)),
            };
            desired.push(Desired::new(READY, !pending, reason, msg));
            desired.push(Desired::new(STALLED, false, "", ""));
            if pending { RotationPhase::RollingOut } else { RotationPhase::Idle }
        }
    };
    (phase, desired)
}

pub async fn reconcile(cached: Arc<KeyRotation>, ctx: Arc<Context>) -> Result<Action> {
    let ns = cached.namespace().unwrap_or_default();
    let now = Utc::now();
    let api: Api<KeyRotation> = ctx.api(&ns);
    let Some(kr) = fresh(&api, cached.as_ref()).await? else { return Ok(Action::await_change()) };
    let secrets: Api<Secret> = ctx.api(&ns);
    let current: Option<KeyRotationStatus> = kr.status.clone();
    let previous = current.clone().unwrap_or_default();

    let mut found = secrets.get_opt(&kr.spec.secret_name).await?;
    if let Some(s) = found.take() {
        found = Some(secret::ensure_ownership(&secrets, &kr, s).await?);
    }
    let view = secret::view(&kr.spec, found.as_ref());
    let anchor = kr.creation_timestamp().map(|t| from_time(&t)).unwrap_or(now);
    let base = KeyRotationStatus { observed_generation: kr.metadata.generation, ..previous.clone() };
    let accept = kr.annotations().get(ACCEPT_KEY_CHANGE_ANNOTATION).map(String::as_str);

    let (mut status, outcome) = match decide::check_secret(&base, &view, accept, now) {
        Err(tamper) => (base, Outcome::Tampered(tamper)),
        Ok(mut status) => {
            let rotate_now = kr.annotations().get(ROTATE_NOW_ANNOTATION).map(String::as_str);
            let gate = window_open(&ctx, &kr).await?;
            let open = gate == Ok(true);
            let outcome = match decide::next_step(&kr.spec, &status, &view, rotate_now, open, anchor, now) {
                Err(why) => Outcome::Invalid(why),
                Ok(Step::Wait(next)) => {
                    status.next_rotation_time = Some(next);
                    Outcome::Idle
                }
                Ok(Step::Held(hold)) => Outcome::Held(hold),
                Ok(Step::Rotate { due, finish_staged, handles }) => {
                    let step = (due, finish_staged, handles);
                    rotate(&ctx, &kr, &secrets, found, &view, &mut status, step, now).await?
                }
            };
            let outcome = match (outcome, gate) {
                (Outcome::Idle | Outcome::Held(_) | Outcome::Rotated, Err(why)) => Outcome::WindowNotFound(why),
                (outcome, _) => outcome,
            };
            (status, outcome)
        }
    };
    if status.next_rotation_time.is_none() {
        status.next_rotation_time = decide::next_rotation(&kr.spec, status.last_rotation_time.unwrap_or(anchor)).ok();
    }
    let (phase, desired) = conditions(&kr, &status, &outcome);
    status.phase = Some(phase);
    status.conditions = merge(&previous.conditions, &desired, kr.metadata.generation, now);
    if let Outcome::Tampered(t) = &outcome
        && find(&previous.conditions, STALLED).map(|c| c.reason.as_str()) != Some(t.reason())
    {
        tracing::warn!(reason = t.reason(), "key Secret changed behind the operator's back");
        let note = find(&status.conditions, STALLED).map(|c| c.message.clone()).unwrap_or_default();
        ctx.event(&kr, EventType::Warning, t.reason(), "Check", note).await;
    }
    ctx.metrics.conditions_observed(NAME, &ns, &kr.name_any(), &status.conditions);
    ctx.metrics.key_rotation_scheduled(&ns, &kr.name_any(), status.next_rotation_time);
    apply_status(&api, &kr, NAME, current.as_ref(), &status).await?;

    let wait = match &outcome {
        Outcome::Invalid(_) => return Ok(Action::await_change()),
        // The window view wakes a rotation when its window opens, appears or changes: the
        // hourly look is only a safety net.
        Outcome::Held(Hold::WaitingForWindow) => Duration::from_secs(3600),
        Outcome::Tampered(_)
        | Outcome::RegistrationFailed(_)
        | Outcome::WindowNotFound(_)
        | Outcome::WriteRefused(_) => Duration::from_secs(30),
        _ if status.targets.as_ref().is_some_and(|t| !t.pending.is_empty()) => Duration::from_secs(30),
        _ => status
            .next_rotation_time
            .map(|t| (t - now).to_std().unwrap_or_default() + Duration::from_secs(1))
            .unwrap_or(Duration::from_secs(3600))
            .min(Duration::from_secs(3600)),
    };
    Ok(Action::requeue(wait))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::KeyRotationSpec;

    #[test]
    fn a_window_reference_that_does_not_resolve_is_an_error_naming_it() {
        let spec =
            serde_yaml::from_str("schedule: {cron: '0 2 * * 0', duration: 1h}\ncolonyServerRef: {name: prod}").unwrap();
        let mut mw = MaintenanceWindow::new("nightly", spec);
        assert_eq!(window_gate(None, None), Ok(true));
        assert_eq!(window_gate(Some("nightly"), None), Err("MaintenanceWindow \"nightly\" not found".into()));
        assert_eq!(window_gate(Some("nightly"), Some(&mw)), Ok(false), "closed");
        mw.status = Some(crate::api::MaintenanceWindowStatus {
            phase: Some(crate::api::WindowPhase::Active),
            ..Default::default()
        });
        assert_eq!(window_gate(Some("nightly"), Some(&mw)), Ok(true), "open");
    }

    #[test]
    fn a_missing_window_is_stalled_naming_it() {
        let why = "MaintenanceWindow \"nightly\" not found".to_string();
        let (phase, d) = conditions(&kr(), &KeyRotationStatus::default(), &Outcome::WindowNotFound(why.clone()));
        assert_eq!(phase, RotationPhase::Failed);
        let stalled = find_desired(&d, STALLED).unwrap();
        assert!(stalled.status && stalled.reason == "WindowNotFound" && stalled.message == why);
        assert!(!find_desired(&d, READY).unwrap().status);
    }

    fn kr() -> KeyRotation {
        KeyRotation::new("bee-key", KeyRotationSpec { secret_name: "bee-secret".into(), ..Default::default() })
    }

    fn find_desired<'a>(d: &'a [Desired], type_: &str) -> Option<&'a Desired> {
        d.iter().find(|c| c.type_ == type_)
    }

    #[test]
    fn tampering_stalls_with_its_reason_and_the_way_out() {
        let status = KeyRotationStatus { revision: 2, current_key_id: Some("abc".into()), ..Default::default() };
        let (phase, d) = conditions(&kr(), &status, &Outcome::Tampered(Tamper::Missing { lost: "abc".into() }));
        assert_eq!(phase, RotationPhase::Failed);
        let stalled = find_desired(&d, STALLED).unwrap();
        assert!(stalled.status && stalled.reason == "KeyMissing");
        assert!(stalled.message.contains("accept-key-change=abc"), "{}", stalled.message);
        let ready = find_desired(&d, READY).unwrap();
        assert!(!ready.status && ready.reason == "KeyMissing");
    }

    #[test]
    fn other_outcomes() {
        let status = KeyRotationStatus { revision: 2, ..Default::default() };
        let (phase, d) = conditions(&kr(), &status, &Outcome::RegistrationFailed("403".into()));
        assert_eq!(phase, RotationPhase::Registering);
        assert_eq!(find_desired(&d, READY).unwrap().reason, "RegistrationFailed");
        assert!(!find_desired(&d, STALLED).unwrap().status, "a failed registration is retried, not stalled");
        let (_, d) = conditions(&kr(), &status, &Outcome::Held(Hold::WaitingForWindow));
        assert_eq!(find_desired(&d, READY).unwrap().reason, "WaitingForWindow");
        let (phase, d) = conditions(&kr(), &status, &Outcome::Rotated);
        assert_eq!(phase, RotationPhase::Idle);
        assert!(find_desired(&d, READY).unwrap().status);
        let rolling = KeyRotationStatus {
            targets: Some(TargetsStatus { rolled: vec![], pending: vec!["Deployment/app".into()] }),
            ..status
        };
        let (phase, d) = conditions(&kr(), &rolling, &Outcome::Idle);
        assert_eq!(phase, RotationPhase::RollingOut);
        assert!(find_desired(&d, ROTATING).unwrap().status && !find_desired(&d, READY).unwrap().status);
        let (phase, d) = conditions(&kr(), &rolling, &Outcome::Invalid("spec.schedule: bad".into()));
        assert_eq!(phase, RotationPhase::Failed);
        assert_eq!(find_desired(&d, STALLED).unwrap().reason, "InvalidSpec");
    }
}
