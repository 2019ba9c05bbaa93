//! The state every controller shares.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{Error, Result, backoff};
use super::metrics::Metrics;
use super::windows::WindowView;

/// Name of the reporting controller in Events and the prefix of every field manager.
pub const OPERATOR_NAME: &str = "colony-operator";

/// Process-wide settings that controllers read.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Watch only this namespace (None: all namespaces).
    pub namespace: Option<String>,
    /// How every watch fills its cache.
    pub initial_list: super::watch::InitialList,
}

pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// Every MaintenanceWindow, from the one watch of them.
    pub windows: WindowView,
    /// Per object, the version known to hold its controller's last write.
    pub versions: super::versions::Versions,
    recorder: Recorder,
    failures: Mutex<HashMap<String, u32>>,
}

/// The key under which a controller keeps what it knows of one object (retry backoff, the
/// version it last left, what it owns): `<controller>/<namespace>/<name>`.
pub fn object_key<K: ResourceExt>(controller: &str, obj: &K) -> String {
    key_of(controller, &obj.namespace().unwrap_or_default(), &obj.name_any())
}

fn key_of(controller: &str, namespace: &str, name: &str) -> String {
    format!("{controller}/{namespace}/{name}")
}

/// An Api over `namespace`, or over all namespaces (the operator's scope, `--namespace`).
pub fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The field manager of one controller for server-side apply.
pub fn field_manager(controller: &str) -> String {
    format!("{OPERATOR_NAME}/{controller}")
}

impl AsRef<Context> for Context {
    fn as_ref(&self) -> &Context {
        self
    }
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, settings: Settings, windows: WindowView) -> Self {
        let reporter = Reporter { controller: OPERATOR_NAME.into(), instance: std::env::var("POD_NAME").ok() };
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            metrics,
            settings,
            windows,
            versions: Default::default(),
            recorder,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// An Api for a namespaced kind: the object's namespace.
    pub fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The configuration every watch starts from (how it fills its cache).
    pub fn watch_config(&self) -> kube::runtime::watcher::Config {
        self.settings.initial_list.config()
    }

    /// An Api over every namespace the operator watches (`--namespace`, or all).
    pub fn scoped_api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        scoped_api(&self.client, self.settings.namespace.as_deref())
    }

    /// Publishes an Event about `obj`. A failure to publish is logged, never fatal: the
    /// action it describes has already happened.
    pub async fn event<K>(&self, obj: &K, type_: EventType, reason: &str, action: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        self.event_related(obj, type_, reason, action, note, None).await
    }

    /// An Event about `obj` that names a second object (a restarted pod, say): Events with
    /// different related objects stay separate instead of merging into one series.
    pub async fn event_related<K>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
        related: Option<k8s_openapi::api::core::v1::ObjectReference>,
    ) where
        K: Resource<DynamicType = ()>,
    {
        let ev = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: related };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }

    /// Records a successful reconcile of `key`, resetting its backoff.
    pub fn succeeded(&self, key: &str) {
        self.failures.lock().expect("failure map poisoned").remove(key);
    }

    /// Forgets what is kept about the deleted object `namespace/name` of `controller`: its
    /// retry backoff.
    pub fn forget(&self, controller: &str, namespace: &str, name: &str) {
        self.metrics.forget_conditions(controller, namespace, name);
        let key = key_of(controller, namespace, name);
        self.versions.forget(&key);
        self.failures.lock().expect("failure map poisoned").remove(&key);
    }

    /// How many objects have a retry backoff on record (for tests of deletion).
    pub fn backoffs(&self) -> usize {
        self.failures.lock().expect("failure map poisoned").len()
    }

    /// Records a failed reconcile of `key` and returns how long to wait before the next try.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().expect("failure map poisoned");
        let n = failures.entry(key.to_string()).or_insert(0);
        let wait = backoff(*n);
        *n = n.saturating_add(1);
        wait
    }
}

/// The shared error policy: count the error, publish nothing (the reconciler already set
/// conditions), requeue with per-object exponential backoff. Invalid specs wait for a change.
pub fn error_policy<K, C>(controller: &'static str) -> impl Fn(Arc<K>, &Error, Arc<C>) -> Action
where
    K: Resource + ResourceExt,
    C: AsRef<Context>,
{
    move |obj, err, ctx| {
        let ctx: &Context = (*ctx).as_ref();
        ctx.metrics.reconcile_failed(controller, err.label());
        let key = format!("{controller}/{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
        tracing::warn!(controller, object = %key, error = %err, label = err.label(), "reconcile failed");
        if err.is_permanent() { Action::await_change() } else { Action::requeue(ctx.failed(&key)) }
    }
}

/// The object as the API server has it now. Reconcilers that count or announce things
/// (flips, rotations, window transitions) start from this, not from the watch cache, which
/// may not hold their own last status write yet (they would act twice).
pub async fn fresh<K>(api: &Api<K>, cached: &K) -> Result<Option<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    Ok(api.get_opt(&cached.name_any()).await?)
}

/// Writes `status` to the status subresource with server-side apply, only when it differs
/// from `current` (steady state must produce no writes). Returns the object as written
/// when it wrote, None when there was nothing to write.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    obj: &K,
    controller: &str,
    current: Option<&S>,
    status: &S,
) -> Result<Option<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(None);
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(&field_manager(controller)).force();
    let written = api.patch_status(&obj.name_any(), &params, &Patch::Apply(&patch)).await.map_err(Error::Kube)?;
    Ok(Some(written))
}

#[cfg(test)]
mod tests {
    #[test]
    fn field_manager_is_per_controller() {
        assert_eq!(super::field_manager("colonyserver"), "colony-operator/colonyserver");
    }
}
