//! The KeyRotation controller: generates a new key on schedule (or on demand), stores it
//! in the Secret in one atomic update with the previous keys kept, and rolls the targets.
pub mod keys;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::api::{
    ColonyOsRegistration, ColonyServer, Identity, KeyRotation, KeyRotationSpec, KeyRotationStatus, MaintenanceWindow,
    READY, ROTATE_NOW_ANNOTATION, ROTATING, RotationCadence, RotationPhase, STALLED, TargetKind, TargetsStatus,
};
use crate::colonyos::rpc;
use crate::controllers::common::{MANAGED_BY, OPERATOR, owner_ref};
use crate::controllers::{Spawned, primary, spawn_controller};
use crate::duration::parse_go_duration;
use crate::operator::Shutdown;
use crate::runtime::conditions::{Desired, merge};
use crate::runtime::{Context, Error, Result, apply_status, field_manager, fresh};
use crate::schedule::CronSchedule;

pub const NAME: &str = "keyrotation";
/// On the Secret: the rotation revision it holds (crash recovery compares it with status).
pub const REVISION_ANNOTATION: &str = "colony.zyeute.io/rotation-revision";
/// On a target Deployment's pod template: when the last rotation rolled it.
pub const ROTATED_AT_ANNOTATION: &str = "colony.zyeute.io/key-rotated-at";

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> Spawned {
    let (controller, synced) = primary(ctx.scoped_api::<KeyRotation>(), watcher::Config::default(), NAME);
    spawn_controller(NAME, controller, synced, reconcile, ctx, shutdown)
}

/// When the next rotation is due. `last` is the last rotation (or, before the first one,
/// the time the Secret's key came to be). Invalid cadence: an error naming the field.
pub fn next_rotation(spec: &KeyRotationSpec, last: DateTime<Utc>) -> std::result::Result<DateTime<Utc>, String> {
    match spec.cadence() {
        RotationCadence::Cron { schedule, time_zone } => CronSchedule::parse(schedule, time_zone)
            .map_err(|e| format!("spec.schedule: {e}"))?
            .next_after(last)
            .ok_or_else(|| "spec.schedule never fires".to_string()),
        RotationCadence::Interval(i) => {
            let d = parse_go_duration(i).map_err(|e| format!("spec.interval: {e}"))?;
            Ok(last + chrono::Duration::from_std(d).map_err(|_| "spec.interval is too long".to_string())?)
        }
    }
}

/// Why a rotation should happen now, if it should.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// The Secret has no key yet.
    Initial,
    /// The `rotate-now` annotation has a value not handled yet.
    Requested(String),
    Scheduled,
    NotYet(DateTime<Utc>),
}

pub fn due(
    spec: &KeyRotationSpec,
    status: Option<&KeyRotationStatus>,
    secret_has_key: bool,
    rotate_now: Option<&str>,
    anchor: DateTime<Utc>,
    now: DateTime<Utc>,
) -> std::result::Result<Due, String> {
    let next = next_rotation(spec, status.and_then(|s| s.last_rotation_time).unwrap_or(anchor))?;
    if !secret_has_key {
        return Ok(Due::Initial);
    }
    if let Some(v) = rotate_now
        && status.and_then(|s| s.handled_rotate_now.as_deref()) != Some(v)
    {
        return Ok(Due::Requested(v.to_string()));
    }
    if now >= next { Ok(Due::Scheduled) } else { Ok(Due::NotYet(next)) }
}

fn key_field(spec: &KeyRotationSpec) -> &'static str {
    if spec.key_type == crate::api::KeyType::Random { "key" } else { "prvkey" }
}

/// Whether a due rotation may run now: `Ok(true)` with no window or an open one, `Ok(false)`
/// while it is closed, `Err` naming a `maintenanceWindowRef` that does not resolve (Stalled).
pub fn window_gate(name: Option<&str>, window: Option<&MaintenanceWindow>) -> std::result::Result<bool, String> {
    match (name, window) {
        (None, _) => Ok(true),
        (Some(n), None) => Err(format!("MaintenanceWindow {n:?} not found")),
        (Some(_), Some(mw)) => Ok(crate::controllers::maintenancewindow::is_open(mw)),
    }
}

async fn window_open(ctx: &Context, kr: &KeyRotation) -> Result<std::result::Result<bool, String>> {
    let name = kr.spec.maintenance_window_ref.as_ref().map(|r| r.name.as_str());
    let mw = match name {
        Some(n) => ctx.api::<MaintenanceWindow>(&kr.namespace().unwrap_or_default()).get_opt(n).await?,
        None => None,
    };
    Ok(window_gate(name, mw.as_ref()))
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
                        tracing::warn!(rotation = %kr.name_any(), target = %t.key(), error = %e, "could not roll target");
                        pending.push(t.key());
                    }
                }
            }
            TargetKind::FinanceBee | TargetKind::ColonyServer => rolled.push(t.key()),
        }
    }
    Ok(TargetsStatus { rolled, pending })
}

async fn reconcile(cached: Arc<KeyRotation>, ctx: Arc<Context>) -> Result<Action> {
    let ns = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let now = Utc::now();
    let api: Api<KeyRotation> = ctx.api(&ns);
    let Some(kr) = fresh(&api, cached.as_ref()).await? else { return Ok(Action::await_change()) };
    let kr = Arc::new(kr);
    let secrets: Api<Secret> = ctx.api(&ns);
    let current: Option<KeyRotationStatus> = kr.status.clone();
    let previous = current.clone().unwrap_or_default();
    let mut status = KeyRotationStatus { observed_generation: kr.metadata.generation, ..previous.clone() };

    let secret = secrets.get_opt(&kr.spec.secret_name).await?;
    let data: BTreeMap<String, Vec<u8>> =
        secret.as_ref().and_then(|s| s.data.clone()).unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
    let secret_revision: i64 = secret
        .as_ref()
        .and_then(|s| s.annotations().get(REVISION_ANNOTATION).and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    // A crash after the Secret was written but before status: adopt what the Secret holds.
    if secret_revision > status.revision {
        status.revision = secret_revision;
        status.current_key_id = data.get("id").map(|v| String::from_utf8_lossy(v).to_string());
        status.previous_key_id = data.get("previous.id").map(|v| String::from_utf8_lossy(v).to_string());
        status.last_rotation_time.get_or_insert(now);
    }
    let anchor = kr.creation_timestamp().map(|t| crate::runtime::conditions::from_time(&t)).unwrap_or(now);
    let rotate_now = kr.annotations().get(ROTATE_NOW_ANNOTATION).map(String::as_str);
    let due = due(&kr.spec, Some(&status), data.contains_key(key_field(&kr.spec)), rotate_now, anchor, now);

    let mut invalid = None;
    let mut waiting_for_window = false;
    let mut registration_error: Option<String> = None;
    let gate = window_open(&ctx, &kr).await?;
    let missing_window = gate.as_ref().err().cloned();
    match due {
        Err(e) => invalid = Some(e),
        Ok(Due::NotYet(next)) => status.next_rotation_time = Some(next),
        Ok(_) if kr.spec.suspend => {}
        Ok(d) if d != Due::Initial && gate != Ok(true) => waiting_for_window = true,
        Ok(d) => {
            // A key staged by an interrupted rotation is finished, not replaced.
            let key = keys::pending_key(&data).unwrap_or_else(|| {
                keys::generate(kr.spec.key_type, kr.spec.length.unwrap_or(32).max(1) as usize, &mut keys::os_random)
            });
            let mut secret = secret;
            if let (Some(reg), Some(old)) = (&kr.spec.colony_os, data.get("prvkey")) {
                status.phase = Some(RotationPhase::Registering);
                match register(&ctx, &kr, reg, &secrets, secret.clone(), &data, &key, old).await {
                    Ok(updated) => secret = Some(updated),
                    Err(message) => {
                        tracing::warn!(rotation = %name, error = %message, "could not register the new key");
                        ctx.event(kr.as_ref(), EventType::Warning, "RegistrationFailed", "Register", message.clone())
                            .await;
                        registration_error = Some(message);
                    }
                }
            }
            if registration_error.is_none() {
                let data = keys::without_pending(&data);
                let new_data = keys::rotate_data(&data, &key, kr.spec.keep_previous.max(0) as usize);
                let revision = status.revision + 1;
                write_secret(&secrets, &kr, secret, new_data, revision).await?;
                status.revision = revision;
                status.previous_key_id = status
                    .current_key_id
                    .take()
                    .or_else(|| data.get("id").map(|v| String::from_utf8_lossy(v).to_string()));
                status.current_key_id = Some(key.id.clone());
                status.last_rotation_time = Some(now);
                status.next_rotation_time = next_rotation(&kr.spec, now).ok();
                if let Due::Requested(v) = &d {
                    status.handled_rotate_now = Some(v.clone());
                }
                status.targets = Some(roll_targets(&ctx, &kr, now).await?);
                tracing::info!(rotation = %name, revision, key_id = %key.id, "rotated key");
                ctx.event(
                    kr.as_ref(),
                    EventType::Normal,
                    "KeyRotated",
                    "Rotate",
                    format!("revision {revision}, new key id {} ({:?})", key.id, d),
                )
                .await;
            }
        }
    }
    if status.next_rotation_time.is_none() {
        status.next_rotation_time = next_rotation(&kr.spec, status.last_rotation_time.unwrap_or(anchor)).ok();
    }
    let pending = status.targets.as_ref().is_some_and(|t| !t.pending.is_empty());
    status.phase = Some(if registration_error.is_some() {
        RotationPhase::Registering
    } else if invalid.is_some() {
        RotationPhase::Failed
    } else if pending {
        RotationPhase::RollingOut
    } else {
        RotationPhase::Idle
    });
    let mut desired = vec![Desired::new(ROTATING, pending, "RollingOut", "targets pending")];
    match &invalid {
        Some(why) => {
            desired.push(Desired::new(READY, false, "InvalidSpec", why.clone()));
            desired.push(Desired::new(STALLED, true, "InvalidSpec", why.clone()));
        }
        None if missing_window.is_some() => {
            let why = missing_window.clone().unwrap_or_default();
            desired.push(Desired::new(READY, false, "WindowNotFound", why.clone()));
            desired.push(Desired::new(STALLED, true, "WindowNotFound", why));
        }
        None if registration_error.is_some() => {
            let why = registration_error.clone().unwrap_or_default();
            desired.push(Desired::new(READY, false, "RegistrationFailed", why.clone()));
            desired.push(Desired::new(STALLED, false, "", ""));
        }
        None => {
            let msg = if kr.spec.suspend {
                "suspended".to_string()
            } else if waiting_for_window {
                "rotation due, waiting for the maintenance window".to_string()
            } else {
                format!("revision {}", status.revision)
            };
            desired.push(Desired::new(
                READY,
                !pending,
                if waiting_for_window { "WaitingForWindow" } else { "Rotated" },
                msg,
            ));
            desired.push(Desired::new(STALLED, false, "", ""));
        }
    }
    status.conditions = merge(&previous.conditions, &desired, kr.metadata.generation, now);
    apply_status(&api, kr.as_ref(), NAME, current.as_ref(), &status).await?;

    if invalid.is_some() {
        return Ok(Action::await_change());
    }
    let wait = if waiting_for_window || pending || registration_error.is_some() || missing_window.is_some() {
        Duration::from_secs(30)
    } else {
        status
            .next_rotation_time
            .map(|t| (t - now).to_std().unwrap_or_default() + Duration::from_secs(1))
            .unwrap_or(Duration::from_secs(3600))
            .min(Duration::from_secs(3600))
    };
    Ok(Action::requeue(wait))
}

/// One atomic write: create, or replace with the resourceVersion read (a concurrent change
/// fails the write and the reconcile retries from fresh state).
async fn write_secret(
    api: &Api<Secret>,
    kr: &KeyRotation,
    existing: Option<Secret>,
    data: BTreeMap<String, Vec<u8>>,
    revision: i64,
) -> Result<Secret> {
    let data: BTreeMap<String, ByteString> = data.into_iter().map(|(k, v)| (k, ByteString(v))).collect();
    match existing {
        Some(mut s) => {
            s.data = Some(data);
            s.string_data = None;
            s.annotations_mut().insert(REVISION_ANNOTATION.into(), revision.to_string());
            Ok(api
                .replace(
                    &kr.spec.secret_name,
                    &PostParams { field_manager: Some(field_manager(NAME)), ..Default::default() },
                    &s,
                )
                .await
                .map_err(Error::Kube)?)
        }
        None => {
            let s = Secret {
                metadata: ObjectMeta {
                    name: Some(kr.spec.secret_name.clone()),
                    namespace: kr.namespace(),
                    labels: Some(BTreeMap::from([(MANAGED_BY.to_string(), OPERATOR.to_string())])),
                    annotations: Some(BTreeMap::from([(REVISION_ANNOTATION.to_string(), revision.to_string())])),
                    owner_references: Some(vec![owner_ref(kr)?]),
                    ..Default::default()
                },
                data: Some(data),
                type_: Some("Opaque".into()),
                ..Default::default()
            };
            Ok(api
                .create(&PostParams { field_manager: Some(field_manager(NAME)), ..Default::default() }, &s)
                .await
                .map_err(Error::Kube)?)
        }
    }
}

/// Registers `key` with the ColonyOS server before it becomes current. The server replaces
/// the identity's ID in place and the old key stops working at once, so the new key is
/// first staged in the Secret (`pending.*`): after a crash, the next reconcile finds it
/// and asks the server which of the two keys it accepts. Returns the Secret as written.
#[allow(clippy::too_many_arguments)]
async fn register(
    ctx: &Context,
    kr: &KeyRotation,
    reg: &ColonyOsRegistration,
    secrets: &Api<Secret>,
    secret: Option<Secret>,
    data: &BTreeMap<String, Vec<u8>>,
    key: &keys::GeneratedKey,
    old_private: &[u8],
) -> std::result::Result<Secret, String> {
    let ns = kr.namespace().unwrap_or_default();
    let server = ctx
        .api::<ColonyServer>(&ns)
        .get_opt(&reg.colony_server_ref.name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("ColonyServer {:?} not found", reg.colony_server_ref.name))?;
    let client = rpc::Client::new(reqwest::Client::new(), &server.spec.effective_endpoint(&server.name_any(), &ns));
    let old = rpc::Identity::from_private_hex(&String::from_utf8_lossy(old_private))
        .map_err(|e| format!("current key: {e}"))?;
    let new_hex = key.fields.get("prvkey").map(|v| String::from_utf8_lossy(v).to_string()).unwrap_or_default();
    let new = rpc::Identity::from_private_hex(&new_hex).map_err(|e| format!("new key: {e}"))?;
    let kind = match reg.identity {
        Identity::Executor => rpc::IdentityKind::Executor,
        Identity::User => rpc::IdentityKind::User,
        Identity::Colony => rpc::IdentityKind::Colony,
        Identity::Server => rpc::IdentityKind::Server,
    };
    let colony = reg.colony_name.clone().unwrap_or_default();

    // Stage the new key, unless an interrupted rotation already did.
    let mut secret = secret.ok_or("the Secret disappeared")?;
    if keys::pending_key(data).is_none() {
        let mut staged = data.clone();
        for (k, v) in &key.fields {
            staged.insert(format!("{}{k}", keys::PENDING_PREFIX), v.clone());
        }
        let revision = kr.status.as_ref().map(|s| s.revision).unwrap_or(0);
        secret = write_secret(secrets, kr, Some(secret), staged, revision).await.map_err(|e| e.to_string())?;
    } else if client.probe(&rpc::probe_message(kind, &colony), &new).await.is_ok() {
        // The server already switched to the staged key before the interruption.
        return Ok(secret);
    }
    match client.call(&rpc::change_id_message(kind, &colony, &new.id), &old).await {
        Ok(_) => Ok(secret),
        // The change may have happened with its reply lost: ask with the new key.
        Err(e) => match client.probe(&rpc::probe_message(kind, &colony), &new).await {
            Ok(_) => Ok(secret),
            Err(_) => Err(format!("registering the new key with ColonyServer {:?} failed: {e}", server.name_any())),
        },
    }
}

#[cfg(test)]
mod tests {
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

    use super::*;
    use chrono::TimeZone;

    fn at(d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, h, 0, 0).unwrap()
    }

    fn monthly() -> KeyRotationSpec {
        KeyRotationSpec { schedule: Some("0 3 1 * *".into()), secret_name: "k".into(), ..Default::default() }
    }

    #[test]
    fn initial_key_is_generated_at_once() {
        assert_eq!(due(&monthly(), None, false, None, at(27, 0), at(27, 0)), Ok(Due::Initial));
    }

    #[test]
    fn monthly_rotation_waits_for_the_first_of_the_month() {
        let spec = monthly();
        let next = Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap();
        assert_eq!(due(&spec, None, true, None, at(27, 0), at(27, 0)), Ok(Due::NotYet(next)));
        assert_eq!(due(&spec, None, true, None, at(27, 0), next), Ok(Due::Scheduled));
        let status = KeyRotationStatus { last_rotation_time: Some(next), ..Default::default() };
        let after = Utc.with_ymd_and_hms(2027, 1, 1, 3, 0, 0).unwrap();
        assert_eq!(due(&spec, Some(&status), true, None, at(27, 0), next), Ok(Due::NotYet(after)));
    }

    #[test]
    fn interval_counts_from_the_last_rotation() {
        let spec = KeyRotationSpec {
            schedule: None,
            interval: Some("720h".into()),
            secret_name: "k".into(),
            ..Default::default()
        };
        let status = KeyRotationStatus { last_rotation_time: Some(at(1, 0)), ..Default::default() };
        assert_eq!(
            due(&spec, Some(&status), true, None, at(1, 0), at(30, 23)),
            Ok(Due::NotYet(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()))
        );
        assert_eq!(
            due(&spec, Some(&status), true, None, at(1, 0), Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()),
            Ok(Due::Scheduled)
        );
    }

    #[test]
    fn rotate_now_annotation_is_handled_once() {
        let spec = monthly();
        assert_eq!(due(&spec, None, true, Some("a"), at(27, 0), at(27, 0)), Ok(Due::Requested("a".into())));
        let status = KeyRotationStatus { handled_rotate_now: Some("a".into()), ..Default::default() };
        assert!(matches!(due(&spec, Some(&status), true, Some("a"), at(27, 0), at(27, 0)), Ok(Due::NotYet(_))));
        assert_eq!(due(&spec, Some(&status), true, Some("b"), at(27, 0), at(27, 0)), Ok(Due::Requested("b".into())));
    }

    #[test]
    fn bad_cadence_names_the_field() {
        let spec =
            KeyRotationSpec { schedule: Some("0 99 * * *".into()), secret_name: "k".into(), ..Default::default() };
        assert!(due(&spec, None, true, None, at(1, 0), at(1, 0)).unwrap_err().contains("spec.schedule"));
    }
}
