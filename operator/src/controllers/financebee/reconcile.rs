//! Reconcile: gather inputs → apply the Deployment → decide restarts and escalation (pure)
//! → write status (only on change) → act on the decisions → requeue at the next timer.
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{self, Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::builders::{self, BeeInputs};
use super::escalation::{self, Delivery, Incident, Job, Next, OnDelete, Outcome, Target, Transition};
use super::restart::{self, Hold, PodView, RestartDecision, RestartInputs, RestartPolicy};
use super::status::{self, Observed, Pause};
use super::{BeeContext, NAME};
use tracing::Instrument;

use crate::api::WindowDemand;
use crate::api::{ColonyServer, ESCALATED, EscalationState, FinanceBee, HEALTHY, STALLED};
use crate::runtime::conditions::find;
use crate::runtime::metrics::{DeliveryLabels, EscalationLabels, ObjectLabels, RestartLabels};
use crate::runtime::notify::{self, RetryPolicy};
use crate::runtime::owned::{Converged, Seen, converge_summarized, owned_by, secret_value};
use crate::runtime::rollout;
use crate::runtime::{Context, Error, Result, apply_status, object_key};

/// Retries of a PagerDuty delivery (the spec has no knob for it; the webhook has).
const PAGERDUTY_RETRY: RetryPolicy = RetryPolicy { retries: 3, backoff: Duration::from_secs(2) };

/// Names of the MaintenanceWindows that stop this bee (open, verifying, or failed and kept).
async fn stopping_windows(ctx: &Context, fb: &FinanceBee) -> Result<Vec<String>> {
    ctx.windows.ready().await?;
    let ns = fb.namespace().unwrap_or_default();
    Ok(ctx.windows.demanding(&ns, &fb.spec.colony_server_ref.name, WindowDemand::StopBee(fb.labels())))
}

/// A Deployment of the bee's name that is someone else's: never taken over (nor judged by
/// the rollback rules).
fn deployment_not_owned(live: Option<&Deployment>, fb: &FinanceBee) -> bool {
    live.is_some_and(|d| !owned_by(fb, d, builders::APP_LABEL))
}

/// The hold a ColonyServer's health puts on restarts: None while its Healthy condition is
/// True.
fn server_hold(cs: &ColonyServer) -> Option<Hold> {
    let conditions = cs.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or(&[]);
    let detail = match find(conditions, HEALTHY) {
        Some(c) if c.status == "True" => return None,
        Some(c) => format!("{}: {}", c.reason, c.message),
        None => "no health verdict yet".to_string(),
    };
    Some(Hold::ServerUnhealthy { server: cs.name_any(), detail })
}

/// Which image the bee runs: spec.image, or the last known good one after a failed rollout
/// (the rules shared with ColonyServer, in `runtime::rollout`).
fn decide_rollout(
    fb: &FinanceBee,
    live: Option<&Deployment>,
    pods: &[Pod],
    previous: &crate::api::FinanceBeeStatus,
    now: chrono::DateTime<Utc>,
) -> rollout::Decision {
    let memory = &previous.rollout;
    // A bee has no health endpoint: availability and crash loops judge its image.
    let observation = rollout::observe(live, memory, pods, None, None);
    rollout::decide(&rollout::RolloutPolicy::from_spec(&fb.spec.rollback), &fb.spec.image, &observation, memory, now)
}

/// On a bee while a page may be open at the receivers: deleting the bee resolves it first.
pub const FINALIZER: &str = "colony.zyeute.io/resolve-escalation";

/// How long a deleted bee waits for the resolve of its open page to be delivered (retried
/// with the reconcile backoff) before it is let go anyway, with a Warning Event.
pub const RESOLVE_ON_DELETE_GIVE_UP: Duration = Duration::from_secs(120);

fn has_targets(fb: &FinanceBee) -> bool {
    fb.spec.escalation.webhook.is_some() || fb.spec.escalation.pager_duty.is_some()
}

pub async fn reconcile(cached: Arc<FinanceBee>, bctx: Arc<BeeContext>) -> Result<Action> {
    let ns = cached.namespace().unwrap_or_default();
    let api: Api<FinanceBee> = bctx.base.api(&ns);
    // Restarts and pages are counted in status: start from an object that holds this
    // controller's last write (the cache when it is known to, else the API server's).
    let version_key = object_key(NAME, cached.as_ref());
    let Some((fb, _)) = bctx.base.versions.latest(&api, &version_key, cached.as_ref()).await? else {
        return Ok(Action::await_change());
    };
    let open = escalation::page_open(fb.status.as_ref(), has_targets(&fb));
    let deleting = fb.metadata.deletion_timestamp.is_some();
    let has_finalizer = fb.finalizers().iter().any(|f| f == FINALIZER);
    // The finalizer is there only while a page is open: a bee with nothing to resolve is
    // deleted at once, even with no operator running.
    // A finalizer the API server will not add or remove (a policy on the bee's metadata, a
    // webhook that is down) never holds the bee's restarts, page or resolve: they go on
    // without it, and it is tried again at the next reconcile.
    if has_finalizer || (open && !deleting) {
        let bctx2 = bctx.clone();
        if has_finalizer
            && !open
            && !deleting
            && let Err(e) = release_finalizer(&api, &fb).await
        {
            tracing::warn!(error = %e, "could not remove the finalizer; trying again at the next reconcile");
        }
        let fb = Arc::new(fb);
        let handled = finalizer(&api, FINALIZER, fb.clone(), |event| async move {
            match event {
                FinalizerEvent::Apply(fb) => apply(fb, bctx2).await.map(|(action, _)| action),
                FinalizerEvent::Cleanup(fb) => cleanup(fb, bctx2).await,
            }
        })
        .await;
        return match handled {
            Err(finalizer::Error::AddFinalizer(e)) => {
                tracing::warn!(error = %e, "could not add the finalizer that resolves the page if the bee is deleted");
                let note = format!(
                    "could not add finalizer {FINALIZER} ({}): deleting this bee now would not resolve its open page",
                    Error::Kube(e).brief()
                );
                bctx.base.event(fb.as_ref(), EventType::Warning, "FinalizerNotAdded", "Escalate", note).await;
                apply(fb, bctx).await.map(|(action, _)| action)
            }
            other => other.map_err(|e| match e {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
                finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => Error::Kube(e),
                other => Error::External(other.to_string()),
            }),
        };
    }
    if deleting {
        return Ok(Action::await_change());
    }
    let read = fb.resource_version();
    let (action, written) = apply(Arc::new(fb), bctx.clone()).await?;
    bctx.base.versions.remember_left(&version_key, read, written);
    Ok(action)
}

/// Removes the finalizer once nothing is left to resolve. The merge patch carries the
/// resourceVersion read: a concurrent change to the finalizers fails it (and it is retried)
/// instead of dropping someone else's.
async fn release_finalizer(api: &Api<FinanceBee>, fb: &FinanceBee) -> Result<()> {
    let others: Vec<&String> = fb.finalizers().iter().filter(|f| *f != FINALIZER).collect();
    let patch = serde_json::json!({
        "metadata": { "finalizers": others, "resourceVersion": fb.resource_version() }
    });
    api.patch(&fb.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// The bee is being deleted with a page open: send one resolve, record it, let the object go.
/// A resolve that keeps failing is retried with backoff (5 s doubling) and given up after
/// [`escalation::MAX_RESOLVES_ON_DELETE`] failures or [`RESOLVE_ON_DELETE_GIVE_UP`], with a
/// Warning Event: deletion is never blocked forever.
async fn cleanup(fb: Arc<FinanceBee>, bctx: Arc<BeeContext>) -> Result<Action> {
    let ctx = &bctx.base;
    let (ns, name) = (fb.namespace().unwrap_or_default(), fb.name_any());
    let key = format!("{ns}/{name}");
    let now = Utc::now();
    let deleting_for = fb
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| (now - crate::runtime::conditions::from_time(t)).to_std().unwrap_or_default())
        .unwrap_or_default();
    let open = escalation::page_open(fb.status.as_ref(), has_targets(&fb));
    let in_flight = bctx.deliveries.in_flight(&key);
    let (failed, wait) = bctx.deliveries.resolve_backoff(&key);
    match escalation::on_delete(open, in_flight, None, failed, deleting_for, RESOLVE_ON_DELETE_GIVE_UP) {
        OnDelete::Release => return Ok(Action::await_change()),
        // An error keeps the finalizer (Ok would let the object go) and requeues.
        OnDelete::Wait => return Err(Error::External("resolve on deletion: a notification is in flight".into())),
        _ => {}
    }
    if let Some(wait) = wait.filter(|_| deleting_for < RESOLVE_ON_DELETE_GIVE_UP) {
        return Err(Error::External(format!("resolve on deletion: next attempt in {}s", wait.as_secs().max(1))));
    }
    let previous = fb.status.clone().unwrap_or_default();
    let since = match &previous.escalation {
        Some(e) if e.state == EscalationState::Resolved => e.since,
        _ => now,
    };
    let resolved = crate::api::EscalationStatus::new(EscalationState::Resolved, since);
    let incident = Incident {
        namespace: ns.clone(),
        name: name.clone(),
        uid: fb.uid().unwrap_or_default(),
        transition: Transition::Resolve,
        since,
        unavailable_since: previous.unavailable_since,
        after: fb.spec.escalation.after.to_string(),
        detail: "FinanceBee deleted".into(),
    };
    let outcome = send(&bctx, &fb, &incident).await;
    let delivery = escalation::delivery_of(&outcome);
    let sent = matches!(delivery, Delivery::Sent(_));
    let failed =
        if sent { failed } else { bctx.deliveries.resolve_failed(&key, crate::runtime::error::backoff(failed)) };
    match escalation::on_delete(open, false, Some(sent), failed, deleting_for, RESOLVE_ON_DELETE_GIVE_UP) {
        OnDelete::Release => {
            // Recorded before the finalizer goes: a retry after a failed removal resends nothing.
            let mut status = previous.clone();
            status.escalation = escalation::with_delivery(Some(resolved.clone()), &delivery);
            let condition = escalation::condition(Some(&resolved), &delivery, fb.spec.escalation.after.as_str());
            status.conditions =
                crate::runtime::conditions::merge(&previous.conditions, &[condition], fb.metadata.generation, now);
            let api: Api<FinanceBee> = ctx.api(&ns);
            apply_status(&api, fb.as_ref(), NAME, fb.status.as_ref(), &status).await?;
            tracing::info!("deleted with an open escalation: resolved it");
            let note = "FinanceBee deleted: its open escalation was resolved".to_string();
            ctx.event(fb.as_ref(), EventType::Normal, "EscalationResolved", "Escalate", note).await;
            Ok(Action::await_change())
        }
        OnDelete::GiveUp => {
            let Delivery::Failed(why) = delivery else { unreachable!("only a failed resolve is given up") };
            tracing::warn!(error = %why, "could not resolve the escalation of a deleted bee: giving up");
            let note = format!(
                "FinanceBee deleted, but its open escalation could not be resolved ({failed} attempts in {}s; {why}): resolve the incident by hand",
                deleting_for.as_secs()
            );
            ctx.event(fb.as_ref(), EventType::Warning, "EscalationResolveAbandoned", "Escalate", note).await;
            Ok(Action::await_change())
        }
        _ => {
            let Delivery::Failed(why) = delivery else { unreachable!("only a failed resolve is retried") };
            let note = format!("resolve on deletion failed (attempt {failed}), retrying: {why}");
            ctx.event(fb.as_ref(), EventType::Warning, "EscalationDeliveryFailed", "Escalate", note).await;
            Err(Error::External(format!("resolve on deletion failed (attempt {failed}): {why}")))
        }
    }
}

/// Forgets what is kept for the deleted bee `namespace/name`: its notifications, metric
/// series and retry backoff.
pub fn forget(bctx: &BeeContext, namespace: &str, name: &str) {
    bctx.deliveries.forget(&format!("{namespace}/{name}"));
    bctx.caches.forget(namespace, name);
    bctx.base.metrics.forget_bee(namespace, name);
    bctx.base.forget(NAME, namespace, name);
    tracing::info!("bee deleted: its notifications and metric series are dropped");
}

/// What a bee's reconcile starts from: the caches, the window view and the spec's own check.
struct Gathered {
    /// The bee's pods: they judge a new image (rollback) and may need a restart.
    pods: Vec<Pod>,
    server: Option<ColonyServer>,
    pause: Option<Pause>,
    policy: RestartPolicy,
    after: TimeDelta,
    /// An invalid spec value (one admitted before the schema's rules existed).
    invalid: Option<String>,
}

async fn gather(bctx: &BeeContext, fb: &FinanceBee) -> Result<Gathered> {
    let ctx = &bctx.base;
    let (ns, name) = (fb.namespace().unwrap_or_default(), fb.name_any());
    let caches = &bctx.caches;
    caches.ready().await?;
    let windows = stopping_windows(ctx, fb).await?;
    let pause = if fb.spec.suspend {
        Some(Pause::Suspended)
    } else if !windows.is_empty() {
        Some(Pause::Maintenance(windows))
    } else {
        None
    };
    let policy = RestartPolicy::from_spec(&fb.spec.restart);
    // The spec's own check first: values admitted before the schema's rules existed.
    let after = fb.spec.check(&name).map(|()| fb.spec.escalation.after.time_delta());
    let invalid = match (&policy, &after) {
        (Err(m), _) | (_, Err(m)) => Some(m.clone()),
        _ => None,
    };
    Ok(Gathered {
        pods: caches.pods(&ns, &name),
        server: caches.server(ctx, &ns, &fb.spec.colony_server_ref.name).await?,
        pause,
        policy: policy.unwrap_or_default(),
        after: after.unwrap_or(TimeDelta::minutes(15)),
        invalid,
    })
}

/// What applying the bee's Deployment left.
#[derive(Default)]
struct Workload {
    /// (reason, message) of what keeps the bee from running.
    problem: Option<(String, String)>,
    deployment: Option<k8s_openapi::api::apps::v1::DeploymentStatus>,
    rollout: Option<rollout::Decision>,
    /// The Deployment write failed for a reason that may pass (a server error, a webhook that
    /// is down): the bee is judged on the Deployment as it is, and the reconcile fails once
    /// restarts and paging are done, to be retried.
    write_error: Option<Error>,
}

impl Workload {
    fn problem(reason: &str, message: String) -> Result<Self> {
        Ok(Self { problem: Some((reason.into(), message)), ..Default::default() })
    }
}

/// Converges the bee's Deployment on the image the rollout rules pick, scaled to 0 while the
/// bee is paused; or says what stops it (an invalid spec, a missing server or reference, a
/// Deployment of its name that is someone else's).
async fn apply_workload(
    bctx: &BeeContext,
    fb: &FinanceBee,
    g: &Gathered,
    previous: &crate::api::FinanceBeeStatus,
    now: chrono::DateTime<Utc>,
) -> Result<Workload> {
    let ctx = &bctx.base;
    let (ns, name) = (fb.namespace().unwrap_or_default(), fb.name_any());
    if let Some(m) = &g.invalid {
        return Workload::problem("InvalidSpec", m.clone());
    }
    let Some(cs) = &g.server else {
        return Workload::problem(
            "ServerNotFound",
            format!("ColonyServer {:?} not found", fb.spec.colony_server_ref.name),
        );
    };
    let endpoint = cs.spec.effective_endpoint(&cs.name_any(), &ns);
    let deployments: Api<Deployment> = ctx.api(&ns);
    let version_key = object_key(NAME, fb);
    // The cached summary of the Deployment (what the decisions below read); none cached: the
    // API server says whether there is one (perhaps someone else's).
    let seen = async {
        Ok::<_, Error>(match bctx.caches.deployment(&ns, &name) {
            Some(d) => Seen::Summary(Some(d)),
            None => Seen::Whole(deployments.get_opt(&name).await?),
        })
    };
    // A new bee reads both (whether its Deployment exists, and its Secrets for the hash):
    // side by side, one round trip instead of two before its first write.
    let (seen, hash) = tokio::join!(seen, bctx.caches.config_hash(ctx, fb));
    let seen = seen?;
    let live = seen.as_ref();
    let ((host, port, tls), hash) = match (builders::host_port(&endpoint), hash) {
        (None, _) => {
            return Workload::problem("InvalidServerEndpoint", "the ColonyServer endpoint is not a URL".into());
        }
        (_, Err(Error::MissingReference(m))) => return Workload::problem("MissingReference", m),
        (_, Err(e)) => return Err(e),
        (_, Ok(_)) if deployment_not_owned(live, fb) => {
            return Workload::problem(
                "DeploymentNotOwned",
                format!(
                    "Deployment {name} exists and is not managed by this FinanceBee; delete it or give the FinanceBee another name"
                ),
            );
        }
        (Some(host_port), Ok(hash)) => (host_port, hash),
    };
    let decision = decide_rollout(fb, live, &g.pods, previous, now);
    let replicas = if g.pause.is_some() { 0 } else { fb.spec.replicas };
    let inputs = BeeInputs {
        image: decision.image.clone(),
        server_host: host,
        server_port: port,
        server_tls: tls,
        replicas,
        config_hash: hash,
    };
    let desired = builders::deployment(fb, &inputs)?;
    let live_status = live.and_then(|d| d.status.clone());
    let converged = match converge_summarized(&deployments, &ctx.versions, &version_key, seen, desired, NAME).await {
        Ok(converged) => converged,
        // A quota, a policy webhook or a field the API server rejects: a human must act, and
        // the bee says so (and pages if it stays unavailable) instead of failing silently.
        Err(e) if e.is_refusal() => {
            let why = format!("the API server refused Deployment {name}: {}", e.brief());
            return Workload::problem("DeploymentRefused", why);
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not write the Deployment; judging the bee on the one that runs");
            return Ok(Workload { deployment: live_status, write_error: Some(e), ..Default::default() });
        }
    };
    if let Converged::Written { fields, .. } = &converged {
        tracing::info!(replicas, image = %decision.image, ?fields, "applied Deployment");
    }
    if let Some(rb) = decision.rolled_back.as_ref().filter(|_| decision.newly_rolled_back) {
        tracing::warn!(failed = %rb.failed_image, to = %rb.to_image, reason = rb.reason(), "rolled back");
        ctx.event(fb, EventType::Warning, "RolledBack", "Rollback", rollout::event_note(rb)).await;
    }
    Ok(Workload {
        problem: None,
        deployment: converged.object().and_then(|d| d.status),
        rollout: Some(decision),
        write_error: None,
    })
}

/// Where the bee's page stands: the escalation decision (pure), the notification it needs,
/// and what is known of that notification's delivery.
struct Paging {
    esc: escalation::EscalationDecision,
    job: Option<Job>,
    next: Next,
    delivery: Delivery,
}

fn paging(
    bctx: &BeeContext,
    key: &str,
    after: TimeDelta,
    unavailable_since: Option<chrono::DateTime<Utc>>,
    previous: &crate::api::FinanceBeeStatus,
    now: chrono::DateTime<Utc>,
) -> Paging {
    let esc = escalation::decide(after, unavailable_since, previous.escalation.as_ref(), now);
    let job = esc.status.as_ref().map(Job::for_status);
    let recorded = match esc.transition {
        Some(_) => None,
        None => escalation::recorded_delivery(find(&previous.conditions, ESCALATED), esc.status.as_ref()),
    };
    let next = match &job {
        Some(j) => bctx.deliveries.next(key, j, recorded.as_ref()),
        None => Next::Idle(None),
    };
    let delivery = match (&next, &recorded) {
        (Next::Record(outcome), _) => escalation::delivery_of(outcome),
        (_, Some(d)) => d.clone(),
        (_, None) => Delivery::Pending,
    };
    Paging { esc, job, next, delivery }
}

/// Reconciles a live bee: gather → apply the Deployment → decide restarts and paging (pure)
/// → write status (only on change; it is the record of restarts and pages, so it is written
/// before acting) → act → requeue at the next timer. Returns the action and the bee as its
/// status write returned it (None: nothing to write).
async fn apply(fb: Arc<FinanceBee>, bctx: Arc<BeeContext>) -> Result<(Action, Option<FinanceBee>)> {
    let ctx = &bctx.base;
    let (ns, name) = (fb.namespace().unwrap_or_default(), fb.name_any());
    let now = Utc::now();
    let previous = fb.status.clone().unwrap_or_default();
    let g = gather(&bctx, &fb).await?;
    let mut workload = apply_workload(&bctx, &fb, &g, &previous, now).await?;
    let write_error = workload.write_error.take();
    let problem = workload.problem.clone();

    // Restarts: a pure decision over the pods as cached now.
    let pods: Vec<PodView> =
        if problem.is_none() { g.pods.iter().map(PodView::from_pod).collect() } else { Vec::new() };
    let hold = match &g.pause {
        Some(p) => Some(p.hold()),
        None => g.server.as_ref().and_then(server_hold),
    };
    let restart = restart::decide(&RestartInputs {
        policy: &g.policy,
        pods: &pods,
        previous: previous.restarts.as_ref(),
        hold,
        now,
    });

    // Paging.
    let ready_replicas = workload.deployment.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    let available_replicas = workload.deployment.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
    let paused = g.pause.is_some();
    let available = status::is_available(fb.spec.replicas, available_replicas, problem.is_some(), paused);
    let unavailable_since = status::unavailable_since(previous.unavailable_since, available, paused, now);
    let key = format!("{ns}/{name}");
    let Paging { esc, job, next, delivery } = paging(&bctx, &key, g.after, unavailable_since, &previous, now);

    // Status.
    let new_status = status::compute(&Observed {
        generation: fb.metadata.generation,
        previous: &previous,
        now,
        image: &fb.spec.image,
        replicas: fb.spec.replicas,
        max_restarts: g.policy.max_restarts,
        problem: problem.clone(),
        pause: g.pause.clone(),
        ready_replicas,
        available_replicas,
        restart: &restart,
        escalation: escalation::with_delivery(esc.status.clone(), &delivery),
        escalated: escalation::condition(esc.status.as_ref(), &delivery, fb.spec.escalation.after.as_str()),
        rollout: workload.rollout.as_ref(),
    });
    ctx.metrics.conditions_observed(NAME, &ns, &name, &new_status.conditions);
    let api: Api<FinanceBee> = ctx.api(&ns);
    let written = apply_status(&api, fb.as_ref(), NAME, fb.status.as_ref(), &new_status).await?;

    // Act: the page first. A restart the API server refuses (a policy protecting the pod, a
    // missing permission) fails the reconcile, which retries it; it must not hold the page.
    let labels = ObjectLabels::of(fb.as_ref());
    ctx.metrics
        .finance_bee_escalated
        .get_or_create(&labels)
        .set(i64::from(esc.status.as_ref().is_some_and(|s| s.state == EscalationState::Triggered)));
    if let Some(tr) = esc.transition {
        announce_transition(ctx, &fb, tr, fb.spec.escalation.after.as_str()).await;
    }
    let mut retry_after = None;
    match (&next, &job) {
        (Next::Send, Some(job)) => {
            let incident = Incident {
                namespace: ns.clone(),
                name: name.clone(),
                uid: fb.uid().unwrap_or_default(),
                transition: job.transition,
                since: job.since,
                unavailable_since,
                after: fb.spec.escalation.after.to_string(),
                detail: format!("{available_replicas}/{} replicas available", fb.spec.replicas),
            };
            bctx.deliveries.begin(&key, job);
            spawn_delivery(bctx.clone(), fb.clone(), key.clone(), job.clone(), incident);
        }
        (Next::Record(_), Some(job)) => bctx.deliveries.forget_sent(&key, job),
        (Next::Idle(wait), _) => retry_after = *wait,
        _ => {}
    }
    act_on_restart(&bctx, &fb, &restart, &previous, &g.policy).await?;
    if let Some(e) = write_error {
        return Err(e);
    }

    // Requeue at the next timer.
    let timers =
        [restart.requeue_after, esc.requeue_after, retry_after, workload.rollout.and_then(|d| d.requeue_after)];
    let default = if problem.is_some() { Duration::from_secs(30) } else { Duration::from_secs(300) };
    let requeue = timers.into_iter().flatten().min().unwrap_or(default).min(default);
    Ok((Action::requeue(requeue.max(Duration::from_secs(1))), written))
}

/// Deletes the pod the decision chose (its restart is already in status), and publishes
/// the Events of the restart, of a budget running out and of a hold starting.
async fn act_on_restart(
    bctx: &BeeContext,
    fb: &FinanceBee,
    d: &RestartDecision,
    previous: &crate::api::FinanceBeeStatus,
    policy: &RestartPolicy,
) -> Result<()> {
    let ctx = &bctx.base;
    let ns = fb.namespace().unwrap_or_default();
    if let Some(c) = &d.delete {
        let pods: Api<Pod> = ctx.api(&ns);
        match pods.delete(&c.pod, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        let count = d.status.as_ref().map(|s| s.count).unwrap_or(0);
        tracing::info!(pod = %c.pod, reason = %c.reason, count, "restarted pod");
        if d.counted {
            ctx.metrics
                .finance_bee_restarts
                .get_or_create(&RestartLabels {
                    namespace: ns.clone(),
                    name: fb.name_any(),
                    reason: c.reason.as_str().into(),
                })
                .inc();
        }
        let note = format!(
            "deleted pod {} ({}: {}); restart {count} of {} in the window",
            c.pod, c.reason, c.detail, policy.max_restarts
        );
        bctx.restart_event(fb, &c.pod, note).await;
    }
    let was = |type_: &str, reason: &str| find(&previous.conditions, type_).is_some_and(|c| c.reason == reason);
    if let Some(m) = status::exhausted_message(d, policy.max_restarts)
        && !was(STALLED, status::reason::RESTART_BUDGET_EXHAUSTED)
    {
        tracing::warn!("{m}");
        let reason = "RestartBudgetExhausted";
        ctx.event(fb, EventType::Warning, reason, "Restart", m).await;
    }
    if let Some(m) = status::server_hold_message(d)
        && !was(crate::api::READY, status::reason::SERVER_UNHEALTHY)
    {
        tracing::info!("{m}");
        ctx.event(fb, EventType::Warning, "RestartHeld", "Restart", m).await;
    }
    Ok(())
}

async fn announce_transition(ctx: &Context, fb: &FinanceBee, tr: Transition, after: &str) {
    let labels = ObjectLabels::of(fb);
    ctx.metrics
        .finance_bee_escalations
        .get_or_create(&EscalationLabels { namespace: labels.namespace, name: labels.name, action: tr.as_str().into() })
        .inc();
    let (type_, reason, note) = match tr {
        Transition::Trigger => {
            (EventType::Warning, "Escalated", format!("unavailable for more than {after}: escalating"))
        }
        Transition::Resolve => {
            (EventType::Normal, "EscalationResolved", "recovered: resolving the escalation".to_string())
        }
    };
    match tr {
        Transition::Trigger => tracing::warn!(transition = tr.as_str(), "{note}"),
        Transition::Resolve => tracing::info!(transition = tr.as_str(), "{note}"),
    }
    ctx.event(fb, type_, reason, "Escalate", note).await;
}

/// Sends one notification in the background; when it is done (after its retries), the
/// outcome is handed to the reconciler, which records it in status.
fn spawn_delivery(bctx: Arc<BeeContext>, fb: Arc<FinanceBee>, key: String, job: Job, incident: Incident) {
    let span = tracing::info_span!("deliver", action = job.transition.as_str());
    tokio::spawn(async move {
        let outcome = send(&bctx, &fb, &incident).await;
        let ctx = &bctx.base;
        let labels = ObjectLabels::of(fb.as_ref());
        for (target, result) in &outcome {
            ctx.metrics
                .finance_bee_escalation_deliveries
                .get_or_create(&DeliveryLabels {
                    namespace: labels.namespace.clone(),
                    name: labels.name.clone(),
                    target: target.label().into(),
                    action: job.transition.as_str().into(),
                    result: if result.is_ok() { "success" } else { "failure" }.into(),
                })
                .inc();
            match result {
                Ok(()) => {
                    tracing::info!(target = target.label(), action = job.transition.as_str(), "escalation delivered");
                    ctx.event(
                        fb.as_ref(),
                        EventType::Normal,
                        "EscalationDelivered",
                        "Escalate",
                        format!("sent {} to {}", job.transition.as_str(), target.display()),
                    )
                    .await;
                }
                Err(e) => {
                    ctx.metrics.notifications_failed.get_or_create(&labels).inc();
                    tracing::warn!(target = target.label(), action = job.transition.as_str(), error = %e, "escalation delivery failed");
                    ctx.event(
                        fb.as_ref(),
                        EventType::Warning,
                        "EscalationDeliveryFailed",
                        "Escalate",
                        format!("{} to {} failed: {e}", job.transition.as_str(), target.display()),
                    )
                    .await;
                }
            }
        }
        bctx.deliveries.finish(&key, &job, outcome);
        let _ = bctx.wake.send(ObjectRef::from_obj(fb.as_ref()));
    }
    .instrument(span));
}

/// Delivers `incident` to every configured target. Errors name the target and what failed,
/// never the URL or the routing key.
async fn send(bctx: &BeeContext, fb: &FinanceBee, incident: &Incident) -> Outcome {
    let secrets: Api<Secret> = bctx.base.api(&fb.namespace().unwrap_or_default());
    let read = |sel| {
        let secrets = secrets.clone();
        async move {
            secret_value(&secrets, &sel)
                .await
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                .map_err(|e| e.to_string())
        }
    };
    let mut outcome = Vec::new();
    if let Some(w) = &fb.spec.escalation.webhook {
        let policy = RetryPolicy { retries: w.retries.max(0) as u32, backoff: w.backoff.get() };
        let result = match read(w.url_secret_ref.clone()).await {
            Ok(url) => notify::deliver(&bctx.http, &url, &incident.webhook_body(), policy)
                .await
                .map(|_| ())
                .map_err(|e| delivery_error(&e)),
            Err(e) => Err(e),
        };
        outcome.push((Target::Webhook, result));
    }
    if let Some(pd) = &fb.spec.escalation.pager_duty {
        let result = match read(pd.routing_key_secret_ref.clone()).await {
            Ok(key) => {
                let body = incident.pagerduty_body(&key, pd.severity);
                notify::deliver(&bctx.http, pd.effective_url(), &body, PAGERDUTY_RETRY)
                    .await
                    .map(|_| ())
                    .map_err(|e| delivery_error(&e))
            }
            Err(e) => Err(e),
        };
        outcome.push((Target::PagerDuty, result));
    }
    outcome
}

/// The delivery error without its "webhook" subject: the outcome names the target.
fn delivery_error(e: &notify::DeliveryError) -> String {
    let text = e.to_string();
    text.strip_prefix("webhook ").unwrap_or(&text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ColonyServerSpec;
    use crate::runtime::owned::CONFIG_HASH_ANNOTATION;
    use crate::runtime::owned::INSTANCE_LABEL;
    use crate::runtime::testing::{self, Reply};
    use crate::runtime::watch::{GroupIndex, VersionIndex};
    use http::Method;
    use kube::runtime::reflector;

    fn context() -> (Arc<BeeContext>, testing::ApiServer) {
        let (base, api) = testing::context();
        let (wake, _) = tokio::sync::mpsc::unbounded_channel();
        let caches = super::super::gather::Caches::new(
            reflector::store().0,
            (reflector::store().0, GroupIndex::by_label(INSTANCE_LABEL)),
            reflector::store().0,
            VersionIndex::default(),
            VersionIndex::default(),
        );
        let http = crate::runtime::http::default_client(crate::runtime::http::Purpose::Webhook);
        (Arc::new(BeeContext { base, http, deliveries: Default::default(), wake, caches }), api)
    }

    /// The builders' bee, named `bee`.
    fn bee() -> FinanceBee {
        let mut fb = super::builders::tests::bee();
        fb.metadata.name = Some("bee".into());
        fb
    }

    #[tokio::test]
    async fn a_new_bee_asks_for_its_deployment_and_its_secret_side_by_side() {
        let (bctx, mut api) = context();
        let mut server = ColonyServer::new("prod", ColonyServerSpec::default());
        server.metadata.namespace = Some("colony".into());
        let gathered = Gathered {
            pods: Vec::new(),
            server: Some(server),
            pause: None,
            policy: RestartPolicy::default(),
            after: TimeDelta::minutes(5),
            invalid: None,
        };
        let fb = bee();
        let run = tokio::spawn(async move {
            let previous = crate::api::FinanceBeeStatus::default();
            apply_workload(&bctx, &fb, &gathered, &previous, Utc::now()).await.map(|_| ())
        });
        // Neither read is answered until both have been sent: the second is not waiting for
        // the first.
        let (_, deployment) = api.receive(Method::GET, "/apis/apps/v1/namespaces/colony/deployments/bee").await;
        let (_, secret) = api.receive(Method::GET, "/api/v1/namespaces/colony/secrets/bee-key").await;
        deployment.reply(Reply::not_found());
        let mut key = Secret::default();
        key.metadata.name = Some("bee-key".into());
        key.metadata.namespace = Some("colony".into());
        key.data = Some([("prvkey".to_string(), k8s_openapi::ByteString(b"k".to_vec()))].into());
        secret.reply(Reply::ok(&key));
        // Then the Deployment is created (server-side apply), with the Secret's hash.
        let (created, pending) = api.receive(Method::PATCH, "/apis/apps/v1/namespaces/colony/deployments/bee").await;
        assert_eq!(
            created.param("fieldManager").as_deref(),
            Some(crate::runtime::context::field_manager(NAME).as_str())
        );
        assert!(created.body["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION].is_string());
        pending.reply(Reply::Echo);
        run.abort();
    }
}
