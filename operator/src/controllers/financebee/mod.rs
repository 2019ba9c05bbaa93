//! The FinanceBee controller: runs the bee (Deployment), rolls it when its Secrets change,
//! scales it to 0 during maintenance or while suspended, restarts pods the kubelet will not
//! fix (`restart`), pages when the bee stays down (`escalation`), and mirrors its state.
//!
//! Pipeline (`reconcile`): gather (server, windows, Secrets, pods) → build and apply the
//! Deployment (`builders`) → decide restarts and escalation (pure) → status (pure, written
//! only on change) → act (delete the chosen pod, send the page) → requeue at the next timer.
pub mod builders;
pub mod escalation;
pub mod gather;
pub mod reconcile;
pub mod restart;
pub mod status;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::api::{ColonyServer, FinanceBee, MaintenanceWindow};
use crate::runtime::Context;
use crate::runtime::Shutdown;
use crate::runtime::controller::{CONCURRENT_RECONCILES, Spawned, primary_forgetting, spawn_controller};
use crate::runtime::owned::{INSTANCE_LABEL, MANAGED_BY, OPERATOR};
use crate::runtime::windows::WindowView;

pub const NAME: &str = "financebee";

/// The shared context plus what only this controller needs: an HTTP client for pages, the
/// in-flight notifications, and a way for a finished notification to wake the reconciler.
pub struct BeeContext {
    pub base: Arc<Context>,
    pub http: reqwest::Client,
    pub deliveries: escalation::Deliveries,
    pub wake: mpsc::UnboundedSender<ObjectRef<FinanceBee>>,
    /// What a reconcile reads: Deployments, pods, servers, Secret and ConfigMap versions.
    pub caches: gather::Caches,
}

impl BeeContext {
    async fn restart_event(&self, fb: &FinanceBee, pod: &str, note: String) {
        let related = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.to_string()),
            namespace: fb.namespace(),
            ..Default::default()
        };
        // The deleted pod is the related object, so that each restart is an Event of its
        // own rather than a repeat of the first in one series.
        self.base.event_related(fb, EventType::Warning, "PodRestarted", "Restart", note, Some(related)).await;
    }
}

impl AsRef<Context> for BeeContext {
    fn as_ref(&self) -> &Context {
        &self.base
    }
}

/// Label selector of every bee pod the operator runs.
pub fn bee_pod_selector() -> String {
    format!("app.kubernetes.io/name={},{MANAGED_BY}={OPERATOR}", builders::APP_LABEL)
}

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> Spawned {
    use crate::runtime::summary::{DeploymentSummary, PodSummary};
    use crate::runtime::watch::{cached_watch, grouped_watch, indexed_watch, strip_object};
    let (wake_tx, wake_rx) = mpsc::unbounded_channel();
    let cfg = ctx.watch_config();
    // The bees' Deployments only (not the servers'), by their labels.
    let owned =
        ctx.watch_config().labels(&format!("app.kubernetes.io/name={},{MANAGED_BY}={OPERATOR}", builders::APP_LABEL));
    // Every watch below also fills a cache the reconcile reads (pods belong to ReplicaSets,
    // not to the bee: they are mapped back by their instance label). Secrets and ConfigMaps
    // are watched by metadata only, kept as name and version: the bees that reference one
    // come from the controller's own cache, and their data is read only when it changed.
    // Deployments and pods are cached as summaries (`runtime::summary`): decoded into types
    // that hold only what the reconcile reads.
    let (deployments, deployment_events) =
        cached_watch(ctx.scoped_api::<DeploymentSummary>(), owned, strip_object::<DeploymentSummary>);
    let (pods, pods_by_bee, pod_events) = grouped_watch(
        ctx.scoped_api::<PodSummary>(),
        ctx.watch_config().labels(&bee_pod_selector()),
        PodSummary::strip,
        INSTANCE_LABEL,
    );
    let (servers, server_events) =
        cached_watch(ctx.scoped_api::<ColonyServer>(), cfg.clone(), strip_object::<ColonyServer>);
    let (secrets, secret_events) = indexed_watch(ctx.scoped_api::<PartialObjectMeta<Secret>>(), cfg.clone());
    let (config_maps, config_map_events) = indexed_watch(ctx.scoped_api::<PartialObjectMeta<ConfigMap>>(), cfg.clone());
    let bee_ctx = Arc::new(BeeContext {
        base: ctx.clone(),
        http: crate::runtime::http::default_client(crate::runtime::http::Purpose::Webhook),
        deliveries: Default::default(),
        wake: wake_tx,
        caches: gather::Caches::new(deployments, (pods, pods_by_bee), servers, secrets, config_maps),
    });
    let for_hook = bee_ctx.clone();
    let (controller, synced) =
        primary_forgetting(ctx.scoped_api::<FinanceBee>(), cfg.clone(), NAME, move |fb: &FinanceBee| {
            reconcile::forget(&for_hook, &fb.namespace().unwrap_or_default(), &fb.name_any())
        });
    let bees = controller.store();
    let (by_server, by_secret, by_config_map) = (bees.clone(), bees.clone(), bees);
    let controller = controller
        .owns_stream(deployment_events)
        .watches_stream(pod_events, |pod: PodSummary| bee_of_pod(&pod))
        // A server turning Healthy lifts a restart hold; turning unhealthy explains one.
        .watches_stream(server_events, move |cs: ColonyServer| {
            bees_where(&by_server, &cs, |fb| fb.spec.colony_server_ref.name == cs.name_any())
        })
        .watches_stream(secret_events, move |s: PartialObjectMeta<Secret>| {
            bees_where(&by_secret, &s, |fb| references_secret(fb, &s.name_any()))
        })
        .watches_stream(config_map_events, move |c: PartialObjectMeta<ConfigMap>| {
            bees_where(&by_config_map, &c, |fb| references_config_map(fb, &c.name_any()))
        })
        // A window opening or closing changes the replicas of the bees it targets; which
        // bees is for the reconciler to work out (selector and server), so every bee is
        // looked at.
        .reconcile_all_on(window_changes(&ctx.windows))
        .reconcile_on(UnboundedReceiverStream::new(wake_rx));
    spawn_controller(NAME, CONCURRENT_RECONCILES, controller, synced, reconcile::reconcile, bee_ctx, shutdown)
}

/// The bee a pod belongs to, from its instance label.
pub fn bee_of_pod(pod: &impl ResourceExt) -> Option<ObjectRef<FinanceBee>> {
    let labels = pod.labels();
    if labels.get("app.kubernetes.io/name").map(String::as_str) != Some(builders::APP_LABEL) {
        return None;
    }
    let name = labels.get(INSTANCE_LABEL)?;
    Some(ObjectRef::new(name).within(&pod.namespace()?))
}

/// The cached bees in `obj`'s namespace for which `pred` holds.
fn bees_where<K: ResourceExt>(
    store: &Store<FinanceBee>,
    obj: &K,
    pred: impl Fn(&FinanceBee) -> bool,
) -> Vec<ObjectRef<FinanceBee>> {
    let ns = obj.namespace();
    store
        .state()
        .iter()
        .filter(|fb| fb.namespace() == ns && pred(fb))
        .map(|fb| ObjectRef::from_obj(fb.as_ref()))
        .collect()
}

/// Whether the bee's pods read the Secret `name` (so a change must roll them).
pub fn references_secret(fb: &FinanceBee, name: &str) -> bool {
    gather::sources(fb).iter().any(|s| matches!(s, gather::Source::Secret(n) if n == name))
}

/// Whether the bee's pods read the ConfigMap `name`.
pub fn references_config_map(fb: &FinanceBee, name: &str) -> bool {
    gather::sources(fb).iter().any(|s| matches!(s, gather::Source::ConfigMap(n) if n == name))
}

/// A tick whenever a MaintenanceWindow's spec or phase changes, or a window goes away (and
/// after a gap in the view's events, when anything may have).
fn window_changes(view: &WindowView) -> impl futures::Stream<Item = ()> + Send + 'static {
    use futures::StreamExt;
    view.events()
        .scan(WindowPhases::default(), |phases, event| {
            let changed = event.is_none_or(|e| phases.observe(&e));
            async move { Some(changed) }
        })
        .filter_map(|changed| async move { changed.then_some(()) })
}

/// What of a window decides which bees it stops: its spec (by generation) and its phase.
type Phase = (Option<i64>, Option<crate::api::WindowPhase>);

/// The last phase seen of each window (by uid); a deleted window is forgotten, and so is one
/// that a re-list no longer returns (deleted while the watch was down).
#[derive(Default)]
struct WindowPhases {
    seen: std::collections::HashMap<String, Phase>,
    relisting: Option<std::collections::HashMap<String, Phase>>,
}

impl WindowPhases {
    /// Whether `event` changes which bees windows stop.
    fn observe(&mut self, event: &watcher::Event<MaintenanceWindow>) -> bool {
        let entry = |mw: &MaintenanceWindow| {
            (mw.uid().unwrap_or_default(), (mw.metadata.generation, mw.status.as_ref().and_then(|s| s.phase)))
        };
        match event {
            watcher::Event::Apply(mw) => {
                let (uid, phase) = entry(mw);
                self.seen.insert(uid, phase) != Some(phase)
            }
            watcher::Event::Delete(mw) => self.seen.remove(&entry(mw).0).is_some(),
            watcher::Event::Init => {
                self.relisting = Some(Default::default());
                false
            }
            watcher::Event::InitApply(mw) => {
                let (uid, phase) = entry(mw);
                self.relisting.get_or_insert_with(Default::default).insert(uid, phase);
                false
            }
            watcher::Event::InitDone => {
                let listed = self.relisting.take().unwrap_or_default();
                let changed = listed != self.seen;
                self.seen = listed;
                changed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bee(spec_yaml: &str) -> FinanceBee {
        let spec = serde_yaml::from_str(spec_yaml).unwrap();
        let mut fb = FinanceBee::new("finance", spec);
        fb.metadata.namespace = Some("colony".into());
        fb
    }

    const SPEC: &str = "image: bee:1\ncolonyServerRef: {name: prod}\ncolonyName: zyeute\n\
                        executorKeySecretRef: {name: bee-key, key: prvkey}\n\
                        env: [{name: STRIPE, valueFrom: {secretKeyRef: {name: stripe, key: k}}}]\n\
                        envFrom: [{secretRef: {name: supabase}}, {configMapRef: {name: tuning}}]\n";

    #[test]
    fn window_phases_tick_on_change_and_forget_deleted_windows() {
        use crate::api::{MaintenanceWindowStatus, WindowPhase};
        let window = |uid: &str, phase: WindowPhase| {
            let spec =
                serde_yaml::from_str("schedule: {cron: '0 2 * * 0', duration: 1h}\ncolonyServerRef: {name: prod}")
                    .unwrap();
            let mut mw = MaintenanceWindow::new(uid, spec);
            mw.metadata.uid = Some(uid.into());
            mw.status = Some(MaintenanceWindowStatus { phase: Some(phase), ..Default::default() });
            mw
        };
        let mut p = WindowPhases::default();
        assert!(!p.observe(&watcher::Event::Init));
        assert!(!p.observe(&watcher::Event::InitApply(window("a", WindowPhase::Scheduled))));
        assert!(p.observe(&watcher::Event::InitDone), "first list");
        assert!(!p.observe(&watcher::Event::Apply(window("a", WindowPhase::Scheduled))), "same phase");
        assert!(p.observe(&watcher::Event::Apply(window("a", WindowPhase::Active))));
        assert!(p.observe(&watcher::Event::Apply(window("b", WindowPhase::Failed))));
        let mut changed = window("b", WindowPhase::Failed);
        changed.metadata.generation = Some(2);
        assert!(p.observe(&watcher::Event::Apply(changed)), "a spec change (onFailure: restore, say)");
        assert!(p.observe(&watcher::Event::Delete(window("b", WindowPhase::Failed))), "a window gone frees bees");
        assert_eq!(p.seen.len(), 1, "and is forgotten");
        // Deleted while the watch was down: the re-list forgets it and ticks.
        assert!(!p.observe(&watcher::Event::Init));
        assert!(p.observe(&watcher::Event::InitDone));
        assert!(p.seen.is_empty());
    }

    #[test]
    fn referenced_secrets_and_config_maps() {
        let fb = bee(SPEC);
        for s in ["bee-key", "stripe", "supabase"] {
            assert!(references_secret(&fb, s), "{s}");
        }
        assert!(!references_secret(&fb, "tuning"));
        assert!(!references_secret(&fb, "other"));
        assert!(references_config_map(&fb, "tuning"));
        assert!(!references_config_map(&fb, "supabase"));
    }

    #[test]
    fn pods_map_to_their_bee_by_instance_label() {
        let pod: crate::runtime::summary::PodSummary = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "finance-7d9-abc", "namespace": "colony", "labels": {
                "app.kubernetes.io/name": "finance-bee",
                "app.kubernetes.io/instance": "finance",
                "app.kubernetes.io/managed-by": "colony-operator"}}
        }))
        .unwrap();
        assert_eq!(bee_of_pod(&pod), Some(ObjectRef::new("finance").within("colony")));
        let mut server_pod = pod.clone();
        server_pod.labels_mut().insert("app.kubernetes.io/name".into(), "colony-server".into());
        assert_eq!(bee_of_pod(&server_pod), None);
        assert!(bee_pod_selector().contains("app.kubernetes.io/name=finance-bee"));
    }
}
