//! One module per controller: pure decisions, reconcile (IO), status. They share the
//! runtime (`crate::runtime`) and the helpers in `common`.
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::runtime::Shutdown;
use crate::runtime::leader;
use crate::runtime::{Context, Error, Result, error_policy};

pub mod colonyserver;
pub mod common;
pub mod drift;
pub mod financebee;
pub mod keyrotation;
pub mod maintenancewindow;
pub mod notify;
pub mod rollout;
pub mod windows;

/// A running controller: its task, and a future that resolves once its cache is synced.
pub struct Spawned {
    pub handle: JoinHandle<()>,
    pub synced: BoxFuture<'static, ()>,
}

/// Reconciles of one controller that run at once. Unbounded, a burst (a thousand bees
/// created together, every pod turning Ready) puts hundreds of reconciles on the API server
/// at the same time: each of their requests waits behind all the others, so every reconcile
/// takes seconds and the API server is busiest exactly when the cluster is. Bounded, the
/// rest wait in the controller's queue (deduplicated per object, so a waiting object is
/// reconciled once with its latest state) and each reconcile runs at the API server's speed.
pub const CONCURRENT_RECONCILES: u16 = 16;

/// Runs `controller` with the shared instrumentation (reconcile counter and duration,
/// per-object backoff reset on success) and error policy, until `shutdown`.
pub fn spawn_controller<K, C, F, Fut>(
    name: &'static str,
    controller: Controller<K>,
    synced: BoxFuture<'static, ()>,
    reconcile: F,
    ctx: Arc<C>,
    shutdown: Shutdown,
) -> Spawned
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    C: AsRef<Context> + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<C>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action>> + Send + 'static,
{
    let reconcile = Arc::new(reconcile);
    let stop = shutdown.clone();
    let instrumented = move |obj: Arc<K>, ctx: Arc<C>| {
        let reconcile = reconcile.clone();
        let stop = stop.clone();
        // Every line logged by a reconcile, and by the tasks it spawns, names its object.
        let span = tracing::info_span!(
            "reconcile",
            controller = name,
            namespace = %obj.namespace().unwrap_or_default(),
            object = %obj.name_any(),
        );
        async move {
            // A standby keeps its cache warm and holds the reconcile here until it leads
            // (or shuts down); a reconcile in flight is cancelled the moment the lease's
            // deadline passes.
            let gate = leader::gate();
            tokio::select! {
                _ = gate.leading() => {}
                _ = stop.wait() => return Ok(Action::await_change()),
            }
            fault_injection::maybe_panic(name, &obj.name_any());
            let key = crate::runtime::object_key(name, obj.as_ref());
            let _timer = (*ctx).as_ref().metrics.reconcile_started(name);
            let result = tokio::select! {
                r = reconcile(obj, ctx.clone()) => r,
                _ = gate.lost() => Err(Error::NotLeader),
            };
            match &result {
                Ok(action) => {
                    (*ctx).as_ref().succeeded(&key);
                    tracing::debug!(?action, "reconciled");
                }
                Err(e) => tracing::debug!(error = %e, "reconcile failed"),
            }
            result
        }
        .instrument(span)
    };
    let handle = tokio::spawn(
        controller
            .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENT_RECONCILES))
            .graceful_shutdown_on(shutdown.wait())
            .run(instrumented, error_policy::<K, C>(name), ctx)
            .for_each(move |res| async move {
                if let Err(e) = res {
                    tracing::debug!(controller = name, error = %e, "controller event");
                }
            }),
    );
    Spawned { handle, synced }
}

/// A controller for the primary kind `K`, with a future that resolves once its cache holds
/// the initial list. The readiness is taken from the watch stream itself: the cache's own
/// readiness signal wakes a single waiter, the controller's runner, which must not lose it.
pub fn primary<K>(api: Api<K>, config: watcher::Config, name: &'static str) -> (Controller<K>, BoxFuture<'static, ()>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    primary_forgetting(api, config, name, |_: &K| {})
}

/// [`primary`], with a hook called for every object the watch sees deleted, once the cache
/// no longer holds it: where a controller forgets what it kept per object (probe tasks,
/// in-memory maps, metric series). Linkerd's index has the same explicit delete hooks.
pub fn primary_forgetting<K>(
    api: Api<K>,
    config: watcher::Config,
    name: &'static str,
    on_delete: impl Fn(&K) + Send + 'static,
) -> (Controller<K>, BoxFuture<'static, ()>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    primary_into(api, config, name, on_delete, reflector::store::Writer::default(), |_: &watcher::Event<K>| {})
}

/// [`primary_forgetting`], with the cache `writer` given (its readers are shared beyond this
/// controller) and `tap` called with every event once the cache has applied it.
pub fn primary_into<K>(
    api: Api<K>,
    config: watcher::Config,
    name: &'static str,
    on_delete: impl Fn(&K) + Send + 'static,
    writer: reflector::store::Writer<K>,
    tap: impl Fn(&watcher::Event<K>) + Send + 'static,
) -> (Controller<K>, BoxFuture<'static, ()>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let reader = writer.as_reader();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut tx = Some(tx);
    // The cache holds what reconciles read, not the API server's bookkeeping.
    let events = watcher::watcher(api, config).modify(strip_object::<K>).inspect(move |event| {
        if let Ok(watcher::Event::InitDone) = event
            && let Some(tx) = tx.take()
        {
            let _ = tx.send(());
        }
    });
    let trigger = reflector::reflector(writer, events)
        .inspect(move |event| {
            if let Ok(event) = event {
                tap(event);
            }
            if let Ok(watcher::Event::Delete(obj)) = event {
                tracing::debug!(controller = name, object = %obj.name_any(), "deleted: forgetting its state");
                on_delete(obj);
            }
        })
        .applied_objects();
    let synced = async move {
        match rx.await {
            Ok(()) => tracing::debug!(controller = name, "cache synced"),
            Err(_) => tracing::warn!(controller = name, "cache never synced"),
        }
    }
    .boxed();
    (Controller::for_stream(trigger, reader), synced)
}

/// A test-only fault: `COLONY_OPERATOR_FAULT_INJECT_PANIC=<controller>/<object name>` makes
/// that reconcile panic, to prove that a dead controller task fails the process. Compiled
/// into debug builds only.
mod fault_injection {
    #[cfg(debug_assertions)]
    pub fn maybe_panic(controller: &str, object: &str) {
        if std::env::var("COLONY_OPERATOR_FAULT_INJECT_PANIC").is_ok_and(|v| v == format!("{controller}/{object}")) {
            panic!("fault injection: reconcile of {controller}/{object} panics");
        }
    }

    #[cfg(not(debug_assertions))]
    #[inline(always)]
    pub fn maybe_panic(_controller: &str, _object: &str) {}
}

/// The controllers in the order [`start_all`] returns their tasks.
pub const NAMES: [&str; 4] = [colonyserver::NAME, financebee::NAME, keyrotation::NAME, maintenancewindow::NAME];

/// Starts every controller; returns their tasks and their cache-synced signals.
/// `windows` fills the view of MaintenanceWindows in `ctx`; the MaintenanceWindow controller
/// starts last, so that every other controller subscribed to the view's events before its
/// watch begins.
pub fn start_all(
    ctx: Arc<Context>,
    windows: windows::WindowFeed,
    shutdown: Shutdown,
) -> (Vec<JoinHandle<()>>, Vec<BoxFuture<'static, ()>>) {
    let all = [
        colonyserver::start(ctx.clone(), shutdown.clone()),
        financebee::start(ctx.clone(), shutdown.clone()),
        keyrotation::start(ctx.clone(), shutdown.clone()),
        maintenancewindow::start(ctx, windows, shutdown),
    ];
    all.into_iter().map(|s| (s.handle, s.synced)).unzip()
}

/// What a cached copy never needs: who wrote which field (`managedFields`, often the larger
/// part of an object) and kubectl's copy of the last applied manifest.
pub fn strip_bookkeeping(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// [`strip_bookkeeping`] of any object, for [`cached_watch`].
pub fn strip_object<K: Resource>(obj: &mut K) {
    strip_bookkeeping(obj.meta_mut());
}

/// A watch of `K` kept in a store that a controller reads instead of the API server, with
/// `strip` applied to every object before it is stored; the stream of touched objects
/// triggers the controller (`owns_stream`, `watches_stream`), each after the store has it.
pub fn cached_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    strip: fn(&mut K),
) -> (reflector::Store<K>, impl futures::Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher::watcher(api, config).modify(strip)).touched_objects();
    (reader, stream)
}

/// Waits (up to 30 s) until `store` holds its first list: before that, "absent" is unknown.
pub async fn store_ready<K>(store: &reflector::Store<K>, what: &'static str) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    match tokio::time::timeout(windows::READY_WAIT, store.wait_until_ready()).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Error::CacheNotSynced(what)),
    }
}

/// The resourceVersion of every object of a kind, by namespace and name: all a controller
/// needs to keep of objects it watches only to notice changes (Secrets, ConfigMaps), at a
/// fraction of a store's memory (a string pair per object, not a whole metadata).
#[derive(Clone, Default)]
pub struct VersionIndex {
    versions: Arc<std::sync::RwLock<std::collections::HashMap<String, String>>>,
}

impl VersionIndex {
    /// The version of `namespace/name`, if the watch has seen it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<String> {
        self.versions.read().expect("version index poisoned").get(&index_key(namespace, name)).cloned()
    }

    /// Objects indexed.
    pub fn len(&self) -> usize {
        self.versions.read().expect("version index poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies one watch event; a re-list replaces the index whole once it is complete.
    fn apply<K: Resource>(
        &self,
        event: &watcher::Event<K>,
        relisting: &mut Option<std::collections::HashMap<String, String>>,
    ) {
        let entry = |o: &K| {
            let m = o.meta();
            (
                index_key(m.namespace.as_deref().unwrap_or_default(), m.name.as_deref().unwrap_or_default()),
                m.resource_version.clone().unwrap_or_default(),
            )
        };
        let mut versions = self.versions.write().expect("version index poisoned");
        match event {
            watcher::Event::Apply(o) => {
                let (k, v) = entry(o);
                versions.insert(k, v);
            }
            watcher::Event::Delete(o) => {
                versions.remove(&entry(o).0);
            }
            watcher::Event::Init => *relisting = Some(Default::default()),
            watcher::Event::InitApply(o) => {
                let (k, v) = entry(o);
                relisting.get_or_insert_with(Default::default).insert(k, v);
            }
            watcher::Event::InitDone => *versions = relisting.take().unwrap_or_default(),
        }
    }
}

fn index_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// A metadata-only watch of `K` that fills a [`VersionIndex`]; its stream of touched objects
/// (each after the index has it, with nothing but name and namespace kept) triggers a
/// controller (`watches_stream`).
pub fn indexed_watch<K>(
    api: Api<kube::core::PartialObjectMeta<K>>,
    config: watcher::Config,
) -> (
    VersionIndex,
    impl futures::Stream<Item = std::result::Result<kube::core::PartialObjectMeta<K>, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    kube::core::PartialObjectMeta<K>: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug + Send,
{
    let index = VersionIndex::default();
    let writer = index.clone();
    let mut relisting = None;
    let stream = watcher::watcher(api, config)
        .inspect(move |event| {
            if let Ok(event) = event {
                writer.apply(event, &mut relisting);
            }
        })
        .modify(|o: &mut kube::core::PartialObjectMeta<K>| {
            let m = &mut o.metadata;
            *m = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: m.name.take(),
                namespace: m.namespace.take(),
                ..Default::default()
            };
        })
        .touched_objects();
    (index, stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use kube::core::PartialObjectMeta;

    fn meta(ns: &str, name: &str, rv: &str) -> PartialObjectMeta<Secret> {
        let mut m = PartialObjectMeta::<Secret>::default();
        m.metadata.namespace = Some(ns.into());
        m.metadata.name = Some(name.into());
        m.metadata.resource_version = Some(rv.into());
        m
    }

    #[test]
    fn the_version_index_follows_changes_deletes_and_relists() {
        let index = VersionIndex::default();
        let mut relisting = None;
        let mut apply = |e: watcher::Event<PartialObjectMeta<Secret>>| index.apply(&e, &mut relisting);
        apply(watcher::Event::Init);
        apply(watcher::Event::InitApply(meta("a", "key", "1")));
        apply(watcher::Event::InitApply(meta("b", "key", "2")));
        assert_eq!(index.get("a", "key"), None, "nothing is known before the list is complete");
        apply(watcher::Event::InitDone);
        assert_eq!((index.get("a", "key"), index.get("b", "key")), (Some("1".into()), Some("2".into())));
        apply(watcher::Event::Apply(meta("a", "key", "3")));
        apply(watcher::Event::Delete(meta("b", "key", "2")));
        assert_eq!((index.get("a", "key"), index.get("b", "key")), (Some("3".into()), None));
        // A re-list after a gap: what it no longer returns is gone (deleted while unwatched).
        apply(watcher::Event::Init);
        apply(watcher::Event::InitApply(meta("c", "key", "9")));
        assert_eq!(index.get("a", "key"), Some("3".into()), "the old index serves until the list is complete");
        apply(watcher::Event::InitDone);
        assert_eq!((index.get("a", "key"), index.get("c", "key")), (None, Some("9".into())));
        assert_eq!(index.len(), 1);
    }
}
