//! The FinanceBee controller: runs the bee (Deployment), rolls it when its Secrets change,
//! scales it to 0 during maintenance or while suspended, and mirrors its availability.
pub mod builders;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::api::{
    AVAILABLE, ColonyServer, FinanceBee, FinanceBeeStatus, MaintenanceWindow, READY, RECONCILING,
    STALLED, SUSPENDED,
};
use crate::controllers::common::{ConfigHasher, apply_if_changed, secret_value};
use crate::controllers::{Spawned, spawn_controller};
use crate::operator::Shutdown;
use crate::runtime::conditions::{Desired, merge};
use crate::runtime::{Context, Error, Result, apply_status};
use builders::BeeInputs;

pub const NAME: &str = "financebee";

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> Spawned {
    let cfg = watcher::Config::default();
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=colony-operator");
    // A window opening or closing changes the replicas of the bees it targets; which bees
    // is for the reconciler to work out (selector and server), so every bee is looked at.
    let controller = Controller::new(ctx.scoped_api::<FinanceBee>(), cfg)
        .owns(ctx.scoped_api::<Deployment>(), owned)
        .reconcile_all_on(window_changes(ctx.scoped_api::<MaintenanceWindow>()));
    spawn_controller(NAME, controller, reconcile, ctx, shutdown)
}

/// A tick whenever a MaintenanceWindow's phase changes (per window, keyed by uid).
fn window_changes(api: Api<MaintenanceWindow>) -> impl futures::Stream<Item = ()> + Send + 'static {
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;
    watcher::watcher(api, watcher::Config::default())
        .applied_objects()
        .filter_map(|r| async move {
            r.ok().map(|mw| {
                (
                    mw.uid().unwrap_or_default(),
                    mw.status.and_then(|s| s.phase),
                )
            })
        })
        .scan(std::collections::HashMap::new(), |seen, (uid, phase)| {
            let changed = seen.insert(uid, phase) != Some(phase);
            async move { Some(changed) }
        })
        .filter_map(|changed| async move { changed.then_some(()) })
}

/// Whether `selector` (None or empty: everything) matches `labels`.
pub fn selector_matches(
    selector: Option<&LabelSelector>,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let Some(sel) = selector else { return true };
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// Names of open MaintenanceWindows that stop this bee.
async fn stopping_windows(ctx: &Context, fb: &FinanceBee) -> Result<Vec<String>> {
    let ns = fb.namespace().unwrap_or_default();
    let windows = ctx
        .api::<MaintenanceWindow>(&ns)
        .list(&Default::default())
        .await?;
    Ok(windows
        .items
        .into_iter()
        .filter(|w| {
            w.spec.colony_server_ref.name == fb.spec.colony_server_ref.name
                && w.spec.actions.stop_finance_bees
        })
        .filter(crate::controllers::maintenancewindow::is_open)
        .filter(|w| selector_matches(w.spec.finance_bees.as_ref(), fb.labels()))
        .map(|w| w.name_any())
        .collect())
}

/// Hash of everything the pod reads from Secrets and ConfigMaps.
async fn config_hash(ctx: &Context, fb: &FinanceBee) -> Result<String> {
    let ns = fb.namespace().unwrap_or_default();
    let secrets: Api<Secret> = ctx.api(&ns);
    let config_maps: Api<ConfigMap> = ctx.api(&ns);
    let mut h = ConfigHasher::default();
    let key = &fb.spec.executor_key_secret_ref;
    h.add(
        &format!("secret/{}", key.name),
        &key.key,
        &secret_value(&secrets, key).await?,
    );
    for e in &fb.spec.env {
        if let Some(r) = e
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
        {
            let sel = crate::api::SecretKeySelector::new(r.name.clone(), r.key.clone());
            match secret_value(&secrets, &sel).await {
                Ok(v) => h.add(&format!("secret/{}", r.name), &r.key, &v),
                Err(e) if r.optional == Some(true) => {
                    tracing::debug!(error = %e, "optional secret missing")
                }
                Err(e) => return Err(e),
            }
        }
    }
    for src in &fb.spec.env_from {
        if let Some(r) = &src.secret_ref {
            match secrets.get_opt(&r.name).await? {
                Some(s) => h.add_secret(&s),
                None if r.optional == Some(true) => {}
                None => {
                    return Err(Error::MissingReference(format!(
                        "Secret {:?} not found",
                        r.name
                    )));
                }
            }
        }
        if let Some(r) = &src.config_map_ref {
            match config_maps.get_opt(&r.name).await? {
                Some(c) => h.add_config_map(&c),
                None if r.optional == Some(true) => {}
                None => {
                    return Err(Error::MissingReference(format!(
                        "ConfigMap {:?} not found",
                        r.name
                    )));
                }
            }
        }
    }
    Ok(h.finish())
}

async fn reconcile(fb: Arc<FinanceBee>, ctx: Arc<Context>) -> Result<Action> {
    let ns = fb.namespace().unwrap_or_default();
    let name = fb.name_any();
    let now = Utc::now();
    let api: Api<FinanceBee> = ctx.api(&ns);
    let previous = fb.status.clone().unwrap_or_default();

    let server = ctx
        .api::<ColonyServer>(&ns)
        .get_opt(&fb.spec.colony_server_ref.name)
        .await?;
    let mut problem: Option<(String, String)> = None;
    let mut deployment_status = None;
    let windows = stopping_windows(&ctx, &fb).await?;
    let replicas = if fb.spec.suspend || !windows.is_empty() {
        0
    } else {
        fb.spec.replicas
    };
    match &server {
        None => {
            problem = Some((
                "ServerNotFound".into(),
                format!(
                    "ColonyServer {:?} not found",
                    fb.spec.colony_server_ref.name
                ),
            ))
        }
        Some(cs) => {
            let endpoint = cs.spec.effective_endpoint(&cs.name_any(), &ns);
            match (builders::host_port(&endpoint), config_hash(&ctx, &fb).await) {
                (None, _) => {
                    problem = Some((
                        "InvalidServerEndpoint".into(),
                        "the ColonyServer endpoint is not a URL".into(),
                    ))
                }
                (_, Err(Error::MissingReference(m))) => {
                    problem = Some(("MissingReference".into(), m))
                }
                (_, Err(e)) => return Err(e),
                (Some((host, port, tls)), Ok(hash)) => {
                    let inputs = BeeInputs {
                        server_host: host,
                        server_port: port,
                        server_tls: tls,
                        replicas,
                        config_hash: hash,
                    };
                    let deployments: Api<Deployment> = ctx.api(&ns);
                    if apply_if_changed(&deployments, builders::deployment(&fb, &inputs)?, NAME)
                        .await?
                    {
                        tracing::info!(bee = %name, replicas, "applied Deployment");
                    }
                    deployment_status = deployments.get_opt(&name).await?.and_then(|d| d.status);
                }
            }
        }
    }

    let ready_replicas = deployment_status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let available_replicas = deployment_status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    let paused = replicas == 0;
    let available = !paused && available_replicas >= fb.spec.replicas.max(1) && problem.is_none();
    let unavailable_since = if available || paused {
        None
    } else {
        previous.unavailable_since.or(Some(now))
    };
    let mut desired = vec![];
    let (ready, reason, message) = match (&problem, paused) {
        (Some((r, m)), _) => (false, r.clone(), m.clone()),
        (None, true) if fb.spec.suspend => (
            true,
            SUSPENDED.to_string(),
            "suspended: scaled to 0".to_string(),
        ),
        (None, true) => (
            true,
            "Maintenance".to_string(),
            format!("stopped by MaintenanceWindow {}", windows.join(", ")),
        ),
        (None, false) if available => (
            true,
            "Available".to_string(),
            format!("{ready_replicas}/{} replicas ready", fb.spec.replicas),
        ),
        (None, false) => (
            false,
            "Unavailable".to_string(),
            format!(
                "{available_replicas}/{} replicas available",
                fb.spec.replicas
            ),
        ),
    };
    desired.push(Desired::new(READY, ready, reason.clone(), message.clone()));
    desired.push(Desired::new(
        AVAILABLE,
        available,
        reason.clone(),
        message.clone(),
    ));
    desired.push(Desired::new(
        RECONCILING,
        !available && !paused && problem.is_none(),
        "RollingOut",
        message.clone(),
    ));
    desired.push(Desired::new(STALLED, problem.is_some(), reason, message));
    let status = FinanceBeeStatus {
        observed_generation: fb.metadata.generation,
        conditions: merge(&previous.conditions, &desired, fb.metadata.generation, now),
        ready_replicas: Some(ready_replicas),
        unavailable_since,
        current_image: Some(fb.spec.image.clone()),
        ..previous.clone()
    };
    apply_status(&api, fb.as_ref(), NAME, fb.status.as_ref(), &status).await?;
    Ok(if problem.is_some() {
        Action::requeue(Duration::from_secs(30))
    } else {
        Action::requeue(Duration::from_secs(300))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use std::collections::BTreeMap;

    #[test]
    fn selector_semantics() {
        let labels = BTreeMap::from([("tier".to_string(), "finance".to_string())]);
        assert!(selector_matches(None, &labels));
        assert!(
            selector_matches(Some(&LabelSelector::default()), &labels),
            "empty selects everything"
        );
        let by_label = LabelSelector {
            match_labels: Some(BTreeMap::from([("tier".into(), "finance".into())])),
            ..Default::default()
        };
        assert!(selector_matches(Some(&by_label), &labels));
        assert!(!selector_matches(Some(&by_label), &BTreeMap::new()));
        let expr = |op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            ..Default::default()
        };
        assert!(selector_matches(
            Some(&expr("In", &["finance", "x"])),
            &labels
        ));
        assert!(!selector_matches(
            Some(&expr("NotIn", &["finance"])),
            &labels
        ));
        assert!(selector_matches(Some(&expr("Exists", &[])), &labels));
        assert!(!selector_matches(Some(&expr("DoesNotExist", &[])), &labels));
        assert!(!selector_matches(Some(&expr("Bogus", &[])), &labels));
    }
}
