//! Reconcile: gather inputs → validate → build → apply → decide the fallback → status.
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::NAME;
use super::builders::{self, ServerInputs};
use super::fallback::{self, FallbackInputs, FallbackPolicy};
use super::health::{ApiCheck, HealthThresholds, Prober, SloLimits};
use super::monitor::{self, Monitor, ProbeConfig, SloConfig, SloSource};
use super::outbox::{self, Outbox};
use super::status::{self, Observed, Workload};
use crate::api::WindowDemand;
use crate::api::{ApiCheckSpec, ColonyServer, FallbackOverride, PendingNotification};
use crate::colonyos::rpc::Identity;
use crate::runtime::Shutdown;
use crate::runtime::controller::{Spawned, primary_forgetting, spawn_controller};
use crate::runtime::notify::{self, RetryPolicy};
use crate::runtime::owned::{
    ConfigHasher, Converged, MANAGED_BY, OPERATOR, cached_live, converge_cached, converge_recorded, owned_by,
    pod_selector, secret_value,
};
use crate::runtime::rollout::{self, RolloutPolicy};
use crate::runtime::watch::{cached_watch, strip_object};
use crate::runtime::{Context, Error, Result, apply_status};

pub struct ServerContext {
    pub base: Arc<Context>,
    pub monitor: Monitor,
    pub http: reqwest::Client,
    /// Flip announcements (Events, notifications), in order per server, off the reconcile.
    pub notifications: notify::Ordered,
    /// Which recorded flip notifications this process has queued and finished.
    pub outbox: Outbox,
    /// Wakes a server's reconcile (a notification's delivery finished: status drops it).
    pub wake: mpsc::UnboundedSender<ObjectRef<ColonyServer>>,
    /// What the servers own, as watched: read instead of the API server.
    pub owned: Owned,
}

/// The caches of what servers own (by the operator's label).
pub struct Owned {
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub config_maps: Store<ConfigMap>,
}

/// The key under which a server's own version, and those of what it owns, are recorded.
fn version_key(cs: &ColonyServer) -> String {
    crate::runtime::object_key(NAME, cs)
}

impl AsRef<Context> for ServerContext {
    fn as_ref(&self) -> &Context {
        &self.base
    }
}

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> Spawned {
    let (wake_tx, wake_rx) = mpsc::unbounded_channel();
    let api: Api<ColonyServer> = ctx.scoped_api();
    let cfg = ctx.watch_config();
    // What the server owns is watched (and cached), so that a hand edit or a deletion is put
    // back at once; by its labels, so that neither the cluster's other objects nor the bees'
    // Deployments are delivered here.
    let owned = |app: &str| ctx.watch_config().labels(&format!("app.kubernetes.io/name={app},{MANAGED_BY}={OPERATOR}"));
    // The delete hook needs the context, which needs the controller's cache: it is set below.
    let for_hook: Arc<OnceLock<Arc<ServerContext>>> = Default::default();
    let hook = for_hook.clone();
    let (controller, synced) = primary_forgetting(api, cfg.clone(), NAME, move |cs: &ColonyServer| {
        if let Some(sctx) = hook.get() {
            forget(sctx, cs);
        }
    });
    let (deployments, deployment_events) =
        cached_watch(ctx.scoped_api::<Deployment>(), owned(builders::APP_LABEL), strip_object::<Deployment>);
    let (services, service_events) =
        cached_watch(ctx.scoped_api::<Service>(), owned(builders::APP_LABEL), strip_object::<Service>);
    let (config_maps, config_map_events) =
        cached_watch(ctx.scoped_api::<ConfigMap>(), owned(builders::FALLBACK_APP_LABEL), strip_object::<ConfigMap>);
    let controller = controller
        .owns_stream(deployment_events)
        .owns_stream(service_events)
        .owns_stream(config_map_events)
        // A window opening, closing or going away turns the fallback of its server.
        .reconcile_on(ctx.windows.triggers(|mw| {
            mw.namespace()
                .map(|ns| ObjectRef::<ColonyServer>::new(&mw.spec.colony_server_ref.name).within(&ns))
                .into_iter()
                .collect()
        }))
        .reconcile_on(UnboundedReceiverStream::new(wake_rx));
    // A changed Secret rolls the servers that reference it (their pod-template hash moves).
    // Metadata only: the operator never caches Secret data.
    let store = controller.store();
    let secrets = watcher(ctx.scoped_api::<PartialObjectMeta<Secret>>(), ctx.watch_config()).touched_objects();
    let controller = controller.watches_stream(secrets, move |secret: PartialObjectMeta<Secret>| {
        let ns = secret.namespace();
        let name = secret.name_any();
        store
            .state()
            .into_iter()
            .filter(|cs| cs.namespace() == ns && referenced_secrets(cs).contains(&name.as_str()))
            .map(|cs| ObjectRef::from_obj(cs.as_ref()))
            .collect::<Vec<_>>()
    });
    let prober = Prober::new().expect("the HTTP client for health probes");
    let server_ctx = Arc::new(ServerContext {
        monitor: Monitor::new(prober, ctx.metrics.clone(), wake_tx.clone(), controller.store()),
        http: crate::runtime::http::default_client(crate::runtime::http::Purpose::Webhook),
        notifications: notify::Ordered::default(),
        outbox: Outbox::default(),
        wake: wake_tx,
        owned: Owned { deployments, services, config_maps },
        base: ctx.clone(),
    });
    let _ = for_hook.set(server_ctx.clone());
    let announcements = server_ctx.clone();
    let spawned = spawn_controller(
        NAME,
        crate::runtime::controller::SERVER_CONCURRENT_RECONCILES,
        controller,
        synced,
        reconcile,
        server_ctx,
        shutdown,
    );
    // Once the controller has stopped, the flips it announced (Events, notifications) get a
    // bounded time to go out before the process exits; a panic is passed on at once.
    let controller = spawned.handle;
    let handle = tokio::spawn(async move {
        if let Err(e) = controller.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
        if !announcements.notifications.drain(ANNOUNCEMENTS_DRAIN).await {
            tracing::warn!(limit = ?ANNOUNCEMENTS_DRAIN, "flip announcements still queued at shutdown were dropped");
        }
    });
    Spawned { handle, synced: spawned.synced }
}

/// How long a stopping controller waits for its queued flip announcements.
const ANNOUNCEMENTS_DRAIN: Duration = Duration::from_secs(5);

/// A deleted server takes its probe task, its metric series and its retry backoff with it.
fn forget(sctx: &ServerContext, cs: &ColonyServer) {
    let (ns, name) = (cs.namespace().unwrap_or_default(), cs.name_any());
    sctx.monitor.remove(&ObjectRef::from_obj(cs));
    sctx.base.metrics.forget_server(&ns, &name);
    sctx.base.forget(NAME, &ns, &name);
    sctx.notifications.forget(&notification_key(cs));
    sctx.outbox.forget(&notification_key(cs));
    tracing::info!("server deleted: probes stopped, metric series dropped");
}

/// Names of the Secrets a server's pods read.
fn referenced_secrets(cs: &ColonyServer) -> Vec<&str> {
    let mut names = Vec::new();
    if let Some(db) = &cs.spec.database {
        names.push(db.user.name.as_str());
        names.push(db.password.name.as_str());
    }
    if let Some(key) = &cs.spec.server_key_secret_ref {
        names.push(key.name.as_str());
    }
    if let Some(api) = &cs.spec.health.api {
        names.push(api.key_secret_ref.name.as_str());
    }
    if let Some(stats) = cs.spec.slo.as_ref().and_then(|s| s.statistics.as_ref()) {
        names.push(stats.key_secret_ref.name.as_str());
    }
    names
}

/// The check of `spec.health.api`. A key that is missing or invalid makes every probe fail
/// with the reason (the API cannot be verified); a failed read of the Secret is retried.
async fn api_check(ctx: &Context, cs: &ColonyServer, spec: &ApiCheckSpec) -> Result<ApiCheck> {
    let ns = cs.namespace().unwrap_or_default();
    let sel = &spec.key_secret_ref;
    let key = match secret_value(&ctx.api::<Secret>(&ns), sel).await {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| format!("Secret {:?} key {:?} is not text", sel.name, sel.key))
            .and_then(|text| {
                Identity::from_private_hex(&text).map_err(|e| format!("Secret {:?} key {:?}: {e}", sel.name, sel.key))
            }),
        Err(Error::MissingReference(why)) => Err(why),
        Err(e) => return Err(e),
    };
    Ok(ApiCheck { endpoint: cs.spec.effective_endpoint(&cs.name_any(), &ns), colony: spec.colony_name.clone(), key })
}

/// The probe's timing, read from the spec's typed durations (each at least its minimum).
struct Timing {
    interval: Duration,
    timeout: Duration,
    slo_for: Duration,
    /// `spec.slo.interval`, else the health interval.
    slo_interval: Duration,
}

fn timing(cs: &ColonyServer) -> Timing {
    let spec = &cs.spec;
    Timing {
        interval: spec.health.interval.get(),
        timeout: spec.health.timeout.get(),
        slo_for: spec.slo.as_ref().map_or(Duration::ZERO, |s| s.for_.get()),
        slo_interval: match spec.slo.as_ref().and_then(|s| s.interval.as_ref()) {
            Some(i) => i.get(),
            None => spec.health.interval.get(),
        },
    }
}

fn fallback_policy(cs: &ColonyServer) -> FallbackPolicy {
    let f = &cs.spec.fallback;
    FallbackPolicy {
        recover_after: f.recover_after.get(),
        min_hold: f.min_hold.get(),
        max_flips_per_hour: f.max_flips_per_hour.max(1) as u32,
    }
}

/// The MaintenanceWindows that keep this server's fallback on.
async fn active_windows(ctx: &Context, cs: &ColonyServer) -> Result<Vec<String>> {
    ctx.windows.ready().await?;
    Ok(ctx.windows.demanding(&cs.namespace().unwrap_or_default(), &cs.name_any(), WindowDemand::Fallback))
}

/// Resolves the Secrets the server references: their hash (rolls the pods on change) and
/// the server ID derived from the server key.
async fn server_inputs(ctx: &Context, cs: &ColonyServer, image: String) -> Result<ServerInputs> {
    let secrets: Api<Secret> = ctx.api(&cs.namespace().unwrap_or_default());
    let mut hasher = ConfigHasher::default();
    if let Some(db) = &cs.spec.database {
        for sel in [&db.user, &db.password] {
            hasher.add(&format!("secret/{}", sel.name), &sel.key, &secret_value(&secrets, sel).await?);
        }
    }
    let mut server_id = None;
    if let Some(sel) = &cs.spec.server_key_secret_ref {
        let key = secret_value(&secrets, sel).await?;
        hasher.add(&format!("secret/{}", sel.name), &sel.key, &key);
        let text = String::from_utf8(key)
            .map_err(|_| Error::InvalidSpec(format!("Secret {:?} key {:?} is not text", sel.name, sel.key)))?;
        server_id = Some(
            crate::colonyos::crypto::id_from_private_hex(&text)
                .map_err(|e| Error::InvalidSpec(format!("Secret {:?} key {:?}: {e}", sel.name, sel.key)))?,
        );
    }
    Ok(ServerInputs { image, server_id, config_hash: hasher.finish() })
}

/// Observes the running server and decides which image it must run.
async fn decide_rollout(
    ctx: &Context,
    cs: &ColonyServer,
    spec_image: &str,
    live: Option<&Deployment>,
    snapshot: &super::monitor::Snapshot,
    status: Option<&crate::api::ColonyServerStatus>,
    now: chrono::DateTime<Utc>,
) -> Result<rollout::Decision> {
    let policy = RolloutPolicy::from_spec(&cs.spec.rollback);
    let memory = status.map(|s| s.rollout.clone()).unwrap_or_default();
    let pods = match live {
        Some(_) => {
            ctx.api::<Pod>(&cs.namespace().unwrap_or_default())
                .list(&ListParams::default().labels(&pod_selector(builders::APP_LABEL, &cs.name_any())))
                .await?
                .items
        }
        None => Vec::new(),
    };
    let observation = rollout::observe(live, &memory, &pods, snapshot.health.healthy, snapshot.health.down_since);
    Ok(rollout::decide(&policy, spec_image, &observation, &memory, now))
}

/// How often a server looks again at what it needs and does not watch: an object in the way
/// that is not its own, a CA that could not be loaded.
const UNWATCHED_RECHECK: Duration = Duration::from_secs(15);

/// What to do about a workload object in the way.
const RENAME_SERVER: &str = "delete it or give the ColonyServer another name";

/// (reason, message) of an object in the way that is not the server's, e.g.
/// `ConfigMapNotOwned`.
fn not_owned_problem(kind: &str, name: &str, hint: &str) -> (String, String) {
    (format!("{kind}NotOwned"), format!("{kind} {name} exists and is not managed by this ColonyServer; {hint}"))
}

/// Logs a write to the server's workload, naming the fields that differed.
fn log_written<K: kube::Resource<DynamicType = ()>>(c: &Converged<K>, image: &str) {
    if let Converged::Written { fields, .. } = c {
        tracing::info!(kind = %K::kind(&()), image = %image, ?fields, "applied");
    }
}

fn workload_state(d: Option<&Deployment>) -> Workload {
    let Some(d) = d else {
        return Workload::Progressing("Deployment not created yet".into());
    };
    if rollout::progress_deadline_exceeded(d) {
        return Workload::Failed("Deployment exceeded its progress deadline".into());
    }
    if rollout::fully_available(d) {
        return Workload::Available;
    }
    let status = d.status.clone().unwrap_or_default();
    let available = status.available_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    Workload::Progressing(format!("{available}/{} replicas available, {updated} updated", d.spec.replicas.unwrap_or(1)))
}

fn override_from(cs: &ColonyServer) -> (FallbackOverride, Option<String>) {
    match FallbackOverride::from_annotations(Some(cs.annotations())) {
        Ok(o) => (o, None),
        Err(e) => (FallbackOverride::Auto, Some(e.to_string())),
    }
}

pub(super) async fn reconcile(cached: Arc<ColonyServer>, sctx: Arc<ServerContext>) -> Result<Action> {
    let ctx = &sctx.base;
    let ns = cached.namespace().unwrap_or_default();
    let now = Utc::now();
    let api: Api<ColonyServer> = ctx.api(&ns);
    // Flips are counted in status: start from an object that holds this controller's last
    // write (the cache when it is known to, else the API server's).
    let key = version_key(&cached);
    let Some((cs, _)) = ctx.versions.latest(&api, &key, cached.as_ref()).await? else {
        return Ok(Action::await_change());
    };
    let cs = Arc::new(cs);
    let current_status = cs.status.clone();
    // A flip whose status write committed but whose reply was lost is in status now:
    // announced here, late, once.
    let recorded = current_status.as_ref().and_then(|s| s.fallback.as_ref());
    if sctx.outbox.flip_owed(&notification_key(&cs), recorded.and_then(|f| f.since))
        && let Some(f) = recorded
    {
        announce_flip(&sctx, &cs, &recorded_flip(f));
    }

    // Gather: the spec's own check, the override, and the probe task's verdicts.
    let invalid = cs.spec.check(&cs.name_any()).err();
    let (override_, bad_override) = override_from(&cs);
    if let Some(msg) = &bad_override {
        tracing::warn!("{msg}; treating it as auto");
    }
    let Probed { snapshot, recheck } = probe(&sctx, &cs, invalid.is_none()).await?;

    // Decide and apply: the workload (with automatic rollback), then the fallback. A workload
    // the API server refuses (a quota, a policy webhook) or cannot take now is reported in
    // status and retried, but never stops the fallback from following health.
    let mut workload = WorkloadOutcome::default();
    let mut workload_error = None;
    let mut unresolved = None;
    if cs.spec.managed && invalid.is_none() {
        match apply_workload(&sctx, &cs, &snapshot, now).await {
            Ok(Ok(w)) => workload = w,
            Ok(Err(problem)) => unresolved = Some(problem),
            Err(e) => {
                workload.state = Workload::Failed(format!("applying the Deployment or Service failed: {}", e.brief()));
                workload_error = Some(e);
            }
        }
    }
    let FallbackOutcome { decision, problem: fallback_problem, error: fallback_error } =
        apply_fallback(&sctx, &cs, &snapshot, override_, now).await?;
    let not_owned = workload.not_owned.clone().or(fallback_problem);
    // The flip's notification is recorded by the status write that records the flip, and
    // stays there until its delivery is done (the outbox).
    let outbox::Pending { kept: notifications, dropped } = outbox::pending(
        current_status.as_ref().and_then(|s| s.fallback.as_ref()).map_or(&[][..], |f| &f.pending_notifications),
        decision.flipped.then(|| outbox::of_flip(decision.active, &decision.reason, now)),
        cs.spec.fallback.notify.is_some(),
        sctx.outbox.done(&notification_key(&cs)),
    );

    // Status, only when it changed.
    let new_status = status::compute(&Observed {
        generation: cs.metadata.generation,
        previous: current_status.as_ref(),
        snapshot: &snapshot,
        decision: &decision,
        override_,
        workload: workload.state,
        rollout: workload.rollout.as_ref(),
        problem: invalid
            .clone()
            .map(|m| ("InvalidSpec".to_string(), m))
            .or_else(|| unresolved.clone())
            .or_else(|| not_owned.clone()),
        notifications,
        now,
    });
    ctx.metrics.conditions_observed(NAME, &ns, &cs.name_any(), &new_status.conditions);
    let written = apply_status(&api, cs.as_ref(), NAME, current_status.as_ref(), &new_status).await?;
    ctx.versions.remember_left(&key, cs.resource_version(), written);
    // A flip is announced once status records it: a status write that fails leaves the flip
    // to the retry, which decides it again from the unchanged status and announces it then
    // (announced before the write, an API server restart between the two sent it twice), or
    // finds it recorded (the reply was lost) and announces that.
    let since = new_status.fallback.as_ref().and_then(|f| f.since);
    if sctx.outbox.flip_owed(&notification_key(&cs), since) {
        announce_flip(&sctx, &cs, &Flip::of(&decision));
    }
    // Those pushed out of status unsent are lost: what this process had not queued (read
    // before the queueing below moves the mark past them).
    let lost = sctx.outbox.unqueued(&notification_key(&cs), &dropped);
    // Reported before anything can fail: the dropped ones exist only in this reconcile.
    report_lost(&sctx, &cs, &lost).await;
    // The notifications status holds and this process has not sent: the flip's own, or what
    // a lost reply, a restart or the previous leader left undelivered.
    let recorded = new_status.fallback.as_ref().map_or(&[][..], |f| &f.pending_notifications);
    send_notifications(&sctx, &cs, recorded).await?;
    // A failed write, once status says so: retried with backoff.
    if let Some(e) = fallback_error.or(workload_error) {
        return Err(e);
    }

    if invalid.is_some() {
        return Ok(Action::await_change());
    }
    // The fallback's own timers (recoverAfter, minHold) run whatever else is wrong; an object
    // in the way is not watched (it is not the operator's): look again.
    let requeue = [
        decision.requeue_after,
        workload.rollout.as_ref().and_then(|r| r.requeue_after),
        recheck,
        not_owned.is_some().then_some(UNWATCHED_RECHECK),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(Duration::from_secs(300))
    .max(Duration::from_secs(1));
    Ok(Action::requeue(requeue))
}

/// What the probe task reports to a reconcile.
struct Probed {
    snapshot: monitor::Snapshot,
    /// A reference the probes need could not be loaded (the CA of `spec.tls.caRef`), so every
    /// probe fails: it is not watched, so look again after this long.
    recheck: Option<Duration>,
}

/// Starts, updates or (for an invalid spec) stops the server's probe task; returns its latest
/// verdicts. A CA that is missing or not PEM makes every probe fail with the reason (the
/// server cannot be verified, so the fallback decides as for any failing server); a failed
/// read of it fails the reconcile, which retries.
async fn probe(sctx: &ServerContext, cs: &ColonyServer, valid: bool) -> Result<Probed> {
    let ctx = &sctx.base;
    let (ns, name) = (cs.namespace().unwrap_or_default(), cs.name_any());
    let key = ObjectRef::from_obj(cs);
    if !valid {
        sctx.monitor.remove(&key);
        return Ok(Probed { snapshot: Default::default(), recheck: None });
    }
    let ca = match &cs.spec.tls.ca_ref {
        Some(r) => match crate::runtime::http::ca_bundle(&ctx.client, &ns, r).await {
            Ok(pem) => Ok(Some(pem)),
            Err(Error::MissingReference(why) | Error::InvalidSpec(why)) => Err(why),
            Err(e) => return Err(e),
        },
        None => Ok(None),
    };
    let recheck = ca.is_err().then_some(UNWATCHED_RECHECK);
    let api_probe = match &cs.spec.health.api {
        Some(spec) => Some(api_check(ctx, cs, spec).await?),
        None => None,
    };
    let slo_source = match cs.spec.slo.as_ref() {
        Some(s) => match (&s.metrics_url, &s.statistics) {
            (Some(url), _) => Some(SloSource::Metrics(url.clone())),
            (None, Some(spec)) => Some(SloSource::Statistics(api_check(ctx, cs, spec).await?)),
            (None, None) => None,
        },
        None => None,
    };
    let t = timing(cs);
    let slo = cs.spec.slo.as_ref().zip(slo_source).map(|(s, source)| SloConfig {
        source,
        interval: t.slo_interval,
        limits: SloLimits {
            max_queue_depth: s.max_queue_depth as f64,
            min_completion_rate: s.min_completion_rate,
            max_error_rate: s.max_error_rate,
        },
        for_: chrono::TimeDelta::from_std(t.slo_for).unwrap_or_default(),
    });
    let config = ProbeConfig {
        health_url: cs.spec.health_url(&name, &ns),
        interval: t.interval,
        timeout: t.timeout,
        thresholds: HealthThresholds {
            failure_threshold: cs.spec.health.failure_threshold.max(1) as u32,
            success_threshold: cs.spec.health.success_threshold.max(1) as u32,
        },
        slo,
        api: api_probe,
        ca,
    };
    Ok(Probed { snapshot: sctx.monitor.ensure(key, config), recheck })
}

/// What applying a managed server's workload left.
#[derive(Default)]
struct WorkloadOutcome {
    state: Workload,
    rollout: Option<rollout::Decision>,
    /// (reason, message) of a Deployment or Service in the way that is not the server's.
    not_owned: Option<(String, String)>,
}

/// Converges a managed server's Deployment and Service on the image the rollout decides.
/// `Ok(Err((reason, why)))`: the spec or a reference it names is invalid or missing (reported;
/// a created Secret wakes the server).
async fn apply_workload(
    sctx: &ServerContext,
    cs: &Arc<ColonyServer>,
    snapshot: &monitor::Snapshot,
    now: chrono::DateTime<Utc>,
) -> Result<std::result::Result<WorkloadOutcome, (String, String)>> {
    let ctx = &sctx.base;
    let (ns, name) = (cs.namespace().unwrap_or_default(), cs.name_any());
    let Some(spec_image) = cs.spec.image.clone() else {
        return Ok(Err(("InvalidSpec".into(), "spec.image is required when spec.managed is true".into())));
    };
    let deployments: Api<Deployment> = ctx.api(&ns);
    let key = version_key(cs);
    let live = cached_live(&deployments, &sctx.owned.deployments, &ctx.versions, &key, &name).await?;
    if live.as_ref().is_some_and(|d| !owned_by(cs.as_ref(), d, builders::APP_LABEL)) {
        let not_owned = Some(not_owned_problem("Deployment", &name, RENAME_SERVER));
        return Ok(Ok(WorkloadOutcome { state: Workload::Unmanaged, not_owned, ..Default::default() }));
    }
    let decision = decide_rollout(ctx, cs, &spec_image, live.as_ref(), snapshot, cs.status.as_ref(), now).await?;
    let inputs = match server_inputs(ctx, cs, decision.image.clone()).await {
        Ok(inputs) => inputs,
        Err(Error::InvalidSpec(msg)) => return Ok(Err(("InvalidSpec".into(), msg))),
        Err(Error::MissingReference(msg)) => return Ok(Err(("MissingReference".into(), msg))),
        Err(e) => return Err(e),
    };
    let desired = builders::deployment(cs, &inputs)?;
    let converged = converge_recorded(&deployments, &ctx.versions, &key, live, desired, NAME).await?;
    log_written(&converged, &decision.image);
    let services = ctx.api::<Service>(&ns);
    let service =
        converge_cached(&services, &sctx.owned.services, &ctx.versions, &key, builders::service(cs)?, NAME).await?;
    log_written(&service, &decision.image);
    let not_owned = matches!(service, Converged::NotOwned).then(|| not_owned_problem("Service", &name, RENAME_SERVER));
    if decision.newly_rolled_back {
        let rb = decision.rolled_back.clone().expect("a rollback");
        tracing::warn!(failed = %rb.failed_image, to = %rb.to_image, reason = rb.reason(), "rolled back");
        ctx.event(cs.as_ref(), EventType::Warning, "RolledBack", "Rollback", rollout::event_note(&rb)).await;
    }
    Ok(Ok(WorkloadOutcome { state: workload_state(converged.object().as_ref()), rollout: Some(decision), not_owned }))
}

/// Decides the fallback from the probe's verdicts, the open maintenance windows and the
/// override; writes the ConfigMap when it differs and announces a flip. Also returns the
/// problem of a ConfigMap in the way that is not the server's.
async fn apply_fallback(
    sctx: &Arc<ServerContext>,
    cs: &Arc<ColonyServer>,
    snapshot: &monitor::Snapshot,
    override_: FallbackOverride,
    now: chrono::DateTime<Utc>,
) -> Result<FallbackOutcome> {
    let ctx = &sctx.base;
    let (ns, name) = (cs.namespace().unwrap_or_default(), cs.name_any());
    let inputs = FallbackInputs {
        health_failed: snapshot.health.health_failed(),
        healthy_since: snapshot.health.healthy_since(),
        slo_breached: snapshot.slo.breached(),
        maintenance_active: active_windows(ctx, cs).await?,
        override_,
    };
    let previous_state = status::fallback_state_from(cs.status.as_ref());
    let decision = fallback::decide(&fallback_policy(cs), &inputs, &previous_state, now);
    let fallback_cm = builders::fallback_config_map(cs, decision.active)?;
    let cm_name = fallback_cm.name_any();
    let mut not_owned = None;
    let config_maps = ctx.api::<ConfigMap>(&ns);
    let store = &sctx.owned.config_maps;
    let converged = match converge_cached(&config_maps, store, &ctx.versions, &version_key(cs), fallback_cm, NAME).await
    {
        Ok(converged) => converged,
        // Refused (a quota, a policy) or failing: the ConfigMap does not show the decision, so
        // status keeps the state it has, says why, and the reconcile fails to be retried.
        Err(e) => {
            let why = format!("writing the fallback ConfigMap {cm_name} failed: {}", e.brief());
            tracing::warn!(configmap = %cm_name, error = %e, "could not write the fallback ConfigMap");
            let decision = fallback::hold(&previous_state, format!("unchanged: {why}"));
            return Ok(FallbackOutcome {
                decision,
                problem: Some(("FallbackWriteFailed".into(), why)),
                error: Some(e),
            });
        }
    };
    match converged {
        Converged::NotOwned => {
            // Never adopted: the garbage collector would delete it with the server.
            let hint = "rename spec.fallback.configMapName or delete it";
            not_owned = Some(not_owned_problem("ConfigMap", &cm_name, hint));
        }
        Converged::Written { fields, .. } => {
            tracing::info!(configmap = %cm_name, value = fallback::configmap_value(decision.active), ?fields, "applied fallback ConfigMap");
        }
        Converged::InSync(_) => {}
    }
    let metric_labels = crate::runtime::metrics::ObjectLabels { namespace: ns.clone(), name: name.clone() };
    ctx.metrics.fallback_active.get_or_create(&metric_labels).set(i64::from(decision.active));
    Ok(FallbackOutcome { decision, problem: not_owned, error: None })
}

/// What deciding and writing the fallback left.
struct FallbackOutcome {
    decision: fallback::FallbackDecision,
    /// (reason, message) of a ConfigMap in the way that is not the server's, or of a write
    /// that failed.
    problem: Option<(String, String)>,
    /// The failed write, returned once status says so (the reconcile is retried).
    error: Option<Error>,
}

/// What a flip's announcement says.
struct Flip {
    active: bool,
    reason: String,
    message: String,
}

impl Flip {
    /// The flip this reconcile decided.
    fn of(decision: &fallback::FallbackDecision) -> Self {
        Flip { active: decision.active, reason: decision.reason.clone(), message: decision.message.clone() }
    }
}

/// The flip status records, announced after the reply to the write that recorded it was lost.
fn recorded_flip(f: &crate::api::FallbackStatus) -> Flip {
    let at = f.since.map_or_else(|| "an unknown time".to_string(), |t| t.to_rfc3339());
    Flip {
        active: f.active,
        reason: f.reason.clone().unwrap_or_else(|| "Unknown".into()),
        message: format!("flipped at {at}, announced late: the reply to the status write that recorded it was lost"),
    }
}

/// A flip: log line, metric and Event (its notification goes through the outbox). The Event
/// is published in the background, in order with the server's other flip announcements: the
/// reconcile that flipped goes on at once (in a partition, every flip's reconcile is waited
/// for by the next flips, and the Event was a third of its requests).
fn announce_flip(sctx: &Arc<ServerContext>, cs: &Arc<ColonyServer>, decision: &Flip) {
    let ctx = &sctx.base;
    let state = if decision.active { "on" } else { "off" };
    tracing::info!(state, reason = %decision.reason, "fallback flipped");
    ctx.metrics
        .fallback_flips
        .get_or_create(&crate::runtime::metrics::FlipLabels {
            namespace: cs.namespace().unwrap_or_default(),
            name: cs.name_any(),
            state: state.into(),
        })
        .inc();
    let (type_, reason) =
        if decision.active { (EventType::Warning, "FallbackEnabled") } else { (EventType::Normal, "FallbackDisabled") };
    let note = format!(
        "{}={} ({}: {})",
        cs.spec.fallback.key,
        fallback::configmap_value(decision.active),
        decision.reason,
        decision.message
    );
    let (for_event, server) = (sctx.clone(), cs.clone());
    sctx.notifications.push(
        notification_key(cs),
        Box::pin(async move {
            for_event.base.event(server.as_ref(), type_, reason, "FlipFallback", note).await;
        }),
    );
}

/// The queue of a server's flip announcements (Events, notifications, in order), and its
/// key in the outbox.
fn notification_key(cs: &ColonyServer) -> String {
    format!("{}/{}", cs.namespace().unwrap_or_default(), cs.name_any())
}

/// Identifies a flip's notification across its deliveries: the server's UID and the flip's
/// time.
fn notification_id(cs: &ColonyServer, n: &PendingNotification) -> String {
    format!("{}/{}", cs.uid().unwrap_or_default(), n.at.to_rfc3339())
}

/// Queues the delivery of the recorded notifications this process has not queued yet, after
/// the server's earlier announcements. Each delivery, once done, leaves the outbox and wakes
/// the server, whose status then drops it. Failures are counted, logged and reported as an
/// Event, never with the URL. A URL Secret that cannot be read now (not a missing one) fails
/// the reconcile, which retries with the notifications still recorded.
async fn send_notifications(
    sctx: &Arc<ServerContext>,
    cs: &Arc<ColonyServer>,
    recorded: &[PendingNotification],
) -> Result<()> {
    let key = notification_key(cs);
    let unsent = sctx.outbox.unqueued(&key, recorded);
    let Some(spec) = cs.spec.fallback.notify.clone().filter(|_| !unsent.is_empty()) else {
        return Ok(());
    };
    let ns = cs.namespace().unwrap_or_default();
    let url = match secret_value(&sctx.base.api::<Secret>(&ns), &spec.url_secret_ref).await {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).trim().to_string()),
        Err(Error::MissingReference(why)) => Err(why),
        Err(e) => return Err(e),
    };
    let policy = RetryPolicy { retries: spec.retries.max(0) as u32, backoff: spec.backoff.get() };
    for n in unsent {
        sctx.outbox.queued(&key, n.at);
        let body = json!({
            "server": cs.name_any(),
            "namespace": ns,
            "state": n.state,
            "reason": n.reason,
            "time": n.at.to_rfc3339(),
            // The same for every delivery of this flip's notification (sent at least once):
            // what a receiver deduplicates by.
            "id": notification_id(cs, &n),
        });
        let (job_ctx, cs, url, job_key) = (sctx.clone(), cs.clone(), url.clone(), key.clone());
        sctx.notifications.push(
            key.clone(),
            Box::pin(async move {
                let (sctx, key) = (job_ctx, job_key);
                let result = match &url {
                    Ok(url) => match notify::deliver(&sctx.http, url, &body, policy).await {
                        Ok(_) => Ok(()),
                        // Not the leader (any more): the next leader sends it from status.
                        Err(notify::DeliveryError::NotLeader) => return,
                        Err(e) => Err(e.to_string()),
                    },
                    Err(why) => Err(why.clone()),
                };
                if let Err(e) = result {
                    let labels = crate::runtime::metrics::ObjectLabels::of(cs.as_ref());
                    sctx.base.metrics.notifications_failed.get_or_create(&labels).inc();
                    tracing::warn!(error = %e, "fallback notification failed");
                    sctx.base.event(cs.as_ref(), EventType::Warning, "NotificationFailed", "Notify", e).await;
                }
                sctx.outbox.finished(&key, n.at);
                let _ = sctx.wake.send(ObjectRef::from_obj(cs.as_ref()));
            }),
        );
    }
    Ok(())
}

/// Reports the notifications that newer flips pushed out of status before this process
/// queued them (more than [`outbox::MAX_PENDING`] undelivered): they will never be sent, so
/// each counts as a failed delivery (the `ColonyFlipNotificationFailed` alert), with a
/// warning and an Event. Called once status no longer holds them.
async fn report_lost(sctx: &ServerContext, cs: &ColonyServer, lost: &[PendingNotification]) {
    let Some(oldest) = lost.first() else { return };
    let labels = crate::runtime::metrics::ObjectLabels::of(cs);
    sctx.base.metrics.notifications_failed.get_or_create(&labels).inc_by(lost.len() as u64);
    let note = format!(
        "{} flip notification(s) dropped undelivered, the oldest of {}: more than {} were waiting for delivery",
        lost.len(),
        oldest.at.to_rfc3339(),
        outbox::MAX_PENDING
    );
    tracing::warn!(dropped = lost.len(), oldest = %oldest.at.to_rfc3339(), "fallback notifications dropped undelivered");
    sctx.base.event(cs, EventType::Warning, "NotificationFailed", "Notify", note).await;
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>(_: T) {}
    let _ = |cs: Arc<ColonyServer>, ctx: Arc<ServerContext>| is_send(reconcile(cs, ctx));
}
