//! Running a controller: the primary watch that feeds it, and the task that runs its
//! reconciles with the shared instrumentation, leader gate and error policy.
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

use super::Shutdown;
use super::leader;
use super::watch::strip_object;
use super::{Context, Error, Result, error_policy};

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

/// Reconciles of the ColonyServer controller that run at once. A server's reconcile is where
/// its fallback flips, and a partition fails every server at once: the servers of one probe
/// phase (a fifth of them) decide in the same instant, every 200 ms at 1 s probes, and each
/// flip's ConfigMap write is the first request of its reconcile. A flip's reconcile holds its
/// place for its ConfigMap and status writes, 0.3-1 s under that load, so the next phases
/// arrive while the earlier ones still run. At 16, and then at 32, the later phases waited
/// for places before their flip could start: `make bench` splits the operator's part of a
/// flip at the ConfigMap write, and at 32 its time before the API server received the write
/// was 724 ms at p99 (its time at the API server 379 ms); at 64, three phases of the bench's
/// 100 servers at once, 244 ms (237 ms at the API server, which the extra requests did not
/// crowd). A single run at 128 on an earlier day, before the split, had found the flips
/// later than at 32 (841 against 250 ms at p99), within what that figure spreads from run
/// to run (461-1182 ms at 32 on the same code).
pub const SERVER_CONCURRENT_RECONCILES: u16 = 64;

/// Runs `controller` with the shared instrumentation (reconcile counter and duration,
/// per-object backoff reset on success) and error policy, until `shutdown`; at most
/// `concurrency` reconciles run at once ([`CONCURRENT_RECONCILES`] for most controllers).
#[allow(clippy::too_many_arguments)]
pub fn spawn_controller<K, C, F, Fut>(
    name: &'static str,
    concurrency: u16,
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
            let timer = (*ctx).as_ref().metrics.reconcile_started(name);
            let result = tokio::select! {
                r = super::api_time::scope(timer.api_wait(), reconcile(obj, ctx.clone())) => r,
                _ = gate.lost() => Err(Error::NotLeader),
            };
            drop(timer);
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
            .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
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
