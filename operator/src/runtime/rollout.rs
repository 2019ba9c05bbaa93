//! Automatic rollback, shared by every workload the operator runs (ColonyServer and
//! FinanceBee): which image to run, when an image becomes the last known good one, and when
//! a new image has failed and the last known good one runs again. Pure: the reconciler
//! observes, this decides.
//!
//! Rules:
//! - an image becomes *last known good* once it has been Available and Healthy for
//!   `stable_after` since it was deployed;
//! - a new image has *failed* when, before it became good, its rollout exceeded the
//!   progress deadline, its pods crash-loop, or health started failing after it was deployed
//!   and within `progress_deadline` of it;
//! - a failed image is not run again until `spec.image` changes (the failed list is for the
//!   current spec image only); the last known good image runs instead. The spec itself is
//!   never written: GitOps keeps owning it;
//! - with no last known good image (the first deploy), or `automatic: false`, nothing is
//!   rolled back: the failure is reported and the image keeps running.
//!
//! What is remembered between reconciles is the status's [`RolloutStatus`] (the same struct in
//! ColonyServer and FinanceBee): [`decide`] reads the previous one and returns the next one,
//! which the status writes back as is. Its `history` is oldest first, newest last.
use std::time::Duration;

use chrono::{DateTime, Utc};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;

use crate::api::{ImageHistoryEntry, RollbackSpec, RolloutFailure, RolloutOutcome, RolloutStatus};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutPolicy {
    pub automatic: bool,
    pub progress_deadline: Duration,
    pub stable_after: Duration,
    pub history_limit: usize,
}

/// What the reconciler saw of the workload running `history.last().image`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// All replicas updated and available.
    pub available: bool,
    /// The health verdict (`None` where the workload has no health probe of its own).
    pub healthy: Option<bool>,
    /// Start of the current outage, if unhealthy.
    pub unhealthy_since: Option<DateTime<Utc>>,
    pub progress_deadline_exceeded: bool,
    pub crash_looping: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolledBack {
    pub failed_image: String,
    pub to_image: String,
    /// Why the failed image was rolled back, as recorded in its history entry; None for a
    /// rollback recorded before history kept the reason.
    pub failure: Option<RolloutFailure>,
}

impl RolledBack {
    /// The failure's name, or [`PREVIOUSLY_FAILED`] when it was not recorded.
    pub fn reason(&self) -> &'static str {
        self.failure.map_or(PREVIOUSLY_FAILED, RolloutFailure::as_str)
    }
}

/// What a rollback shows whose history entry has no recorded failure (status written by a
/// version before `history[].failure`).
pub const PREVIOUSLY_FAILED: &str = "PreviouslyFailed";

/// A failed rollout that was not rolled back, and why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotRolledBack {
    pub failed_image: String,
    pub failure: RolloutFailure,
    pub why: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The image the workload must run.
    pub image: String,
    /// The rollout status to write: `current_image` is `image`.
    pub status: RolloutStatus,
    /// Set on the reconcile that decides a rollback (for the Event), and while the spec
    /// image stays a failed one (for the condition).
    pub rolled_back: Option<RolledBack>,
    /// True only on the reconcile that rolls back.
    pub newly_rolled_back: bool,
    /// A rollout failed but could not be rolled back (first deploy, or automatic off): the
    /// RolledBack condition reports it.
    pub failed_without_rollback: Option<NotRolledBack>,
    pub requeue_after: Option<Duration>,
}

impl RolloutPolicy {
    pub fn from_spec(spec: &RollbackSpec) -> Self {
        Self {
            automatic: spec.automatic,
            progress_deadline: spec.progress_deadline.get(),
            stable_after: spec.stable_after.get(),
            history_limit: spec.history_limit.max(1) as usize,
        }
    }
}

/// The image a Deployment's first container runs.
pub fn running_image(d: &Deployment) -> Option<String> {
    d.spec.template.spec.as_ref()?.containers.first()?.image.clone()
}

/// The Deployment controller says the rollout of the current template missed its deadline.
/// Only a status that has observed the current generation says so: right after a template
/// write, the status still carries the previous rollout's conditions, and a
/// `ProgressDeadlineExceeded` left there by an earlier image must not be blamed on the new one.
/// (When the controller picks up a new template it creates its ReplicaSet and resets
/// `Progressing` before it records the new `observedGeneration`.)
pub fn progress_deadline_exceeded(d: &Deployment) -> bool {
    status_is_current(d)
        && d.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_.as_deref() == Some("Progressing") && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            })
        })
}

/// The Deployment's status has observed its current generation (its template as written).
fn status_is_current(d: &Deployment) -> bool {
    d.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Every replica updated and available, for the Deployment's current generation. During a
/// rolling update the old template's pods still count as available, so the rollout must also
/// be over: no pod beyond the wanted count (no old one left) and none unavailable.
pub fn fully_available(d: &Deployment) -> bool {
    let status = d.status.clone().unwrap_or_default();
    let want = d.spec.replicas.unwrap_or(1);
    status_is_current(d)
        && status.updated_replicas.unwrap_or(0) >= want
        && status.available_replicas.unwrap_or(0) >= want
        && status.replicas.unwrap_or(0) <= want
        && status.unavailable_replicas.unwrap_or(0) == 0
}

/// The image a pod's first container runs: the release the pod belongs to.
pub fn pod_image(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.containers.first()?.image.as_deref()
}

/// A pod with a container waiting in CrashLoopBackOff.
pub fn crash_looping(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.container_statuses.as_ref()).is_some_and(|cs| {
        cs.iter().any(|c| {
            c.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.as_deref())
                == Some("CrashLoopBackOff")
        })
    })
}

/// What counts of the live workload: only a Deployment that runs the image under
/// evaluation (the newest history entry) says anything about that image, and only that
/// image's pods: a pod of the previous release still crash-looping while the new one rolls
/// out is not the new image's failure.
pub fn observe(
    live: Option<&Deployment>,
    memory: &RolloutStatus,
    pods: &[Pod],
    healthy: Option<bool>,
    unhealthy_since: Option<DateTime<Utc>>,
) -> Observation {
    let evaluating = memory.history.last().map(|e| e.image.clone());
    match live {
        Some(d) if running_image(d).is_some() && running_image(d) == evaluating => Observation {
            available: fully_available(d),
            healthy,
            unhealthy_since,
            progress_deadline_exceeded: progress_deadline_exceeded(d),
            // (`evaluating` is Some here: a pod of no known image is not counted.)
            crash_looping: pods.iter().filter(|p| pod_image(p) == evaluating.as_deref()).any(crash_looping),
        },
        _ => Observation::default(),
    }
}

/// The `RolledBack` condition for a workload under rollback rules (none without a decision).
/// Its message is computed from the decision, whose reason comes from the failed image's
/// history entry, so it stays the same on later reconciles (no write). Only a rollback
/// recorded before history kept the reason ([`PREVIOUSLY_FAILED`]) keeps the message of
/// `previous`, so that an upgrade does not rewrite it.
pub fn condition(
    decision: Option<&Decision>,
    previous: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<crate::runtime::conditions::Desired> {
    use crate::runtime::conditions::{Desired, find};
    let d = decision?;
    Some(match &d.rolled_back {
        Some(rb) => {
            let legacy = rb
                .failure
                .is_none()
                .then(|| find(previous, crate::api::ROLLED_BACK))
                .flatten()
                .filter(|c| c.status == "True" && c.message.contains(&rb.failed_image))
                .map(|c| c.message.clone());
            Desired::new(crate::api::ROLLED_BACK, true, "RolledBack", legacy.unwrap_or_else(|| event_note(rb)))
        }
        None => match &d.failed_without_rollback {
            Some(nr) => Desired::new(
                crate::api::ROLLED_BACK,
                false,
                "RolloutFailed",
                format!("image {} failed ({}); not rolled back: {}", nr.failed_image, nr.failure, nr.why),
            ),
            None => Desired::new(crate::api::ROLLED_BACK, false, "NotRolledBack", "running spec.image"),
        },
    })
}

/// The Event text of a rollback decided now.
pub fn event_note(rb: &RolledBack) -> String {
    format!("image {} failed ({}); running the last known good image {}", rb.failed_image, rb.reason(), rb.to_image)
}

fn failure_reason(
    obs: &Observation,
    deployed_at: DateTime<Utc>,
    policy: &RolloutPolicy,
    now: DateTime<Utc>,
) -> Option<RolloutFailure> {
    if obs.progress_deadline_exceeded {
        return Some(RolloutFailure::ProgressDeadlineExceeded);
    }
    if obs.crash_looping {
        return Some(RolloutFailure::CrashLoopBackOff);
    }
    let within_deadline = now - deployed_at <= chrono::Duration::from_std(policy.progress_deadline).unwrap_or_default();
    match (obs.healthy, obs.unhealthy_since) {
        (Some(false), Some(since)) if since >= deployed_at && within_deadline => {
            Some(RolloutFailure::HealthCheckFailed)
        }
        _ => None,
    }
}

/// The rollout status a reconcile writes: the decision's, or the previous one unchanged when
/// no decision was made (the workload was not reconciled).
pub fn next_status(decision: Option<&Decision>, previous: &RolloutStatus) -> RolloutStatus {
    decision.map_or_else(|| previous.clone(), |d| d.status.clone())
}

/// Which image runs, and the rollout status that follows from `memory` (the previous one).
pub fn decide(
    policy: &RolloutPolicy,
    spec_image: &str,
    obs: &Observation,
    memory: &RolloutStatus,
    now: DateTime<Utc>,
) -> Decision {
    let mut d = decide_image(policy, spec_image, obs, memory, now);
    d.status.current_image = Some(d.image.clone());
    d
}

fn decide_image(
    policy: &RolloutPolicy,
    spec_image: &str,
    obs: &Observation,
    memory: &RolloutStatus,
    now: DateTime<Utc>,
) -> Decision {
    let mut m = memory.clone();
    // A failed image is remembered only while it is the spec image.
    m.failed_images.retain(|i| i == spec_image);

    if m.failed_images.iter().any(|i| i == spec_image)
        && let Some(good) = m.last_known_good_image.clone()
    {
        let failure = m
            .history
            .iter()
            .rev()
            .find(|e| e.image == spec_image && e.outcome == RolloutOutcome::RolledBack)
            .and_then(|e| e.failure);
        return Decision {
            image: good.clone(),
            rolled_back: Some(RolledBack { failed_image: spec_image.into(), to_image: good, failure }),
            status: m,
            newly_rolled_back: false,
            failed_without_rollback: None,
            requeue_after: None,
        };
    }

    // Record a new deploy.
    if m.history.last().map(|e| e.image.as_str()) != Some(spec_image) {
        if let Some(last) = m.history.last_mut()
            && last.outcome == RolloutOutcome::Progressing
        {
            last.outcome = RolloutOutcome::Superseded;
        }
        m.history.push(ImageHistoryEntry {
            image: spec_image.into(),
            deployed_at: now,
            outcome: RolloutOutcome::Progressing,
            failure: None,
        });
    }
    let limit = policy.history_limit.max(1);
    if m.history.len() > limit {
        let excess = m.history.len() - limit;
        m.history.drain(..excess);
    }
    let entry = m.history.last().cloned().expect("a history entry for the spec image");
    let mut d = Decision {
        image: spec_image.into(),
        status: m,
        rolled_back: None,
        newly_rolled_back: false,
        failed_without_rollback: None,
        requeue_after: None,
    };
    if entry.outcome != RolloutOutcome::Progressing {
        return d;
    }
    let age = (now - entry.deployed_at).to_std().unwrap_or_default();
    if let Some(failure) = failure_reason(obs, entry.deployed_at, policy, now) {
        match d.status.last_known_good_image.clone() {
            Some(good) if policy.automatic && good != spec_image => {
                d.status.failed_images.push(spec_image.into());
                let entry = d.status.history.last_mut().expect("entry");
                entry.outcome = RolloutOutcome::RolledBack;
                entry.failure = Some(failure);
                d.image = good.clone();
                d.rolled_back =
                    Some(RolledBack { failed_image: spec_image.into(), to_image: good, failure: Some(failure) });
                d.newly_rolled_back = true;
            }
            good => {
                let why = match good {
                    _ if !policy.automatic => "rollback.automatic is false",
                    None => "no image has been stable yet",
                    Some(_) => "it is the last known good image",
                };
                d.failed_without_rollback = Some(NotRolledBack { failed_image: spec_image.into(), failure, why });
            }
        }
        return d;
    }
    let healthy_enough = obs.healthy != Some(false);
    if obs.available && healthy_enough && age >= policy.stable_after {
        d.status.last_known_good_image = Some(spec_image.into());
        d.status.history.last_mut().expect("entry").outcome = RolloutOutcome::Stable;
    } else {
        // Time alone can make it stable or end the health-failure window.
        let next = if age < policy.stable_after { policy.stable_after - age } else { Duration::from_secs(30) };
        d.requeue_after = Some(next + Duration::from_millis(500));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn policy() -> RolloutPolicy {
        RolloutPolicy {
            automatic: true,
            progress_deadline: Duration::from_secs(600),
            stable_after: Duration::from_secs(300),
            history_limit: 3,
        }
    }

    fn good() -> Observation {
        Observation { available: true, healthy: Some(true), ..Default::default() }
    }

    /// Runs v1 until stable, then returns the memory.
    fn stable_v1() -> RolloutStatus {
        let d = decide(&policy(), "v1", &good(), &RolloutStatus::default(), t(0));
        let d = decide(&policy(), "v1", &good(), &d.status, t(300));
        assert_eq!(d.status.last_known_good_image.as_deref(), Some("v1"));
        d.status
    }

    #[test]
    fn first_deploy_becomes_good_after_stable_after() {
        let d = decide(&policy(), "v1", &good(), &RolloutStatus::default(), t(0));
        assert_eq!(d.image, "v1");
        assert_eq!(d.status.last_known_good_image, None);
        assert_eq!(d.requeue_after, Some(Duration::from_millis(300_500)));
        let d2 = decide(&policy(), "v1", &good(), &d.status, t(299));
        assert_eq!(d2.status.last_known_good_image, None, "not before stable_after");
        let d3 = decide(&policy(), "v1", &good(), &d2.status, t(300));
        assert_eq!(d3.status.last_known_good_image.as_deref(), Some("v1"));
        assert_eq!(d3.status.history.last().unwrap().outcome, RolloutOutcome::Stable);
        assert_eq!(
            decide(&policy(), "v1", &good(), &d3.status, t(900)).status,
            d3.status,
            "steady state changes nothing"
        );
    }

    #[test]
    fn a_rollout_in_progress_is_not_fully_available() {
        use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
        let d = |replicas, updated, available, unavailable| Deployment {
            metadata: kube::api::ObjectMeta { generation: Some(2), ..Default::default() },
            spec: DeploymentSpec { replicas: Some(1), ..Default::default() },
            status: Some(DeploymentStatus {
                observed_generation: Some(2),
                replicas: Some(replicas),
                updated_replicas: Some(updated),
                available_replicas: Some(available),
                unavailable_replicas: Some(unavailable),
                ..Default::default()
            }),
        };
        // The new pod cannot start (image missing, crashing); the old one still serves.
        assert!(!fully_available(&d(2, 1, 1, 1)));
        assert!(!fully_available(&d(1, 1, 0, 1)));
        assert!(fully_available(&d(1, 1, 1, 0)));
    }

    /// A Deployment whose template runs `image`, at `generation`, its status observed at
    /// `observed` with the previous rollout's `ProgressDeadlineExceeded` still on it.
    fn timed_out_deployment(image: &str, generation: i64, observed: i64) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d", "generation": generation},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}},
            "status": {"observedGeneration": observed, "replicas": 1, "updatedReplicas": 0, "availableReplicas": 1,
                       "unavailableReplicas": 1,
                       "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}
        }))
        .unwrap()
    }

    fn pod(image: Option<&str>, waiting: &str) -> Pod {
        let spec = image.map(|i| serde_json::json!({"containers": [{"name": "c", "image": i}]}));
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": spec,
            "status": {"containerStatuses": [{"name": "c", "image": "", "imageID": "", "ready": false, "restartCount": 3,
                                              "state": {"waiting": {"reason": waiting}}}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_deadline_the_previous_image_missed_is_not_blamed_on_the_new_one() {
        // v1 is good, v2 missed its deadline and was rolled back to v1, and v3 is written to
        // the template before the Deployment controller has looked at it: the status still
        // carries v2's ProgressDeadlineExceeded.
        let m = stable_v1();
        let v2 = decide(&policy(), "v2", &good(), &m, t(1000));
        let v2 =
            decide(&policy(), "v2", &Observation { progress_deadline_exceeded: true, ..good() }, &v2.status, t(1700));
        assert_eq!(v2.image, "v1");
        let v3 = decide(&policy(), "v3", &good(), &v2.status, t(1701));
        assert_eq!(v3.image, "v3");
        let stale = timed_out_deployment("v3", 7, 6);
        assert!(!progress_deadline_exceeded(&stale), "status of generation 6 says nothing of generation 7");
        let obs = observe(Some(&stale), &v3.status, &[], None, None);
        assert!(!obs.progress_deadline_exceeded);
        let d = decide(&policy(), "v3", &obs, &v3.status, t(1702));
        assert_eq!((d.image.as_str(), d.rolled_back.is_none()), ("v3", true), "v3 is not rolled back");
        // Once the controller has observed generation 7, its verdict is about v3.
        let observed = timed_out_deployment("v3", 7, 7);
        assert!(progress_deadline_exceeded(&observed));
        let obs = observe(Some(&observed), &v3.status, &[], None, None);
        let d = decide(&policy(), "v3", &obs, &v3.status, t(2400));
        assert_eq!(d.rolled_back.map(|r| r.reason()), Some("ProgressDeadlineExceeded"));
        // Without a status nothing has exceeded anything.
        let mut bare = observed.clone();
        bare.status = None;
        assert!(!progress_deadline_exceeded(&bare));
    }

    #[test]
    fn a_crash_loop_of_the_previous_release_is_not_blamed_on_the_new_one() {
        let m = stable_v1();
        let v2 = decide(&policy(), "v2", &good(), &m, t(1000)).status;
        let live = timed_out_deployment("v2", 3, 2);
        let crash_looping = |pods: &[Pod]| observe(Some(&live), &v2, pods, None, None).crash_looping;
        assert!(!crash_looping(&[pod(Some("v1"), "CrashLoopBackOff"), pod(Some("v2"), "ContainerCreating")]));
        assert!(!crash_looping(&[pod(None, "CrashLoopBackOff")]), "a pod of no known release");
        assert!(crash_looping(&[pod(Some("v1"), "ContainerCreating"), pod(Some("v2"), "CrashLoopBackOff")]));
        assert_eq!(pod_image(&pod(Some("v2"), "x")), Some("v2"));
    }

    #[test]
    fn unavailable_or_unhealthy_is_not_good_yet() {
        let unavailable = Observation { available: false, ..good() };
        let d = decide(&policy(), "v1", &unavailable, &RolloutStatus::default(), t(0));
        let d = decide(&policy(), "v1", &unavailable, &d.status, t(1000));
        assert_eq!(d.status.last_known_good_image, None);
    }

    #[test]
    fn each_failure_signal_rolls_back_to_last_known_good() {
        let signals = [
            (Observation { progress_deadline_exceeded: true, ..good() }, "ProgressDeadlineExceeded"),
            (Observation { crash_looping: true, available: false, ..good() }, "CrashLoopBackOff"),
            (Observation { healthy: Some(false), unhealthy_since: Some(t(1010)), ..good() }, "HealthCheckFailed"),
        ];
        for (obs, reason) in signals {
            let m = stable_v1();
            let d = decide(&policy(), "v2", &good(), &m, t(1000));
            assert_eq!(d.image, "v2");
            let d = decide(&policy(), "v2", &obs, &d.status, t(1020));
            assert_eq!(d.image, "v1", "{reason}");
            assert!(d.newly_rolled_back);
            let rb = d.rolled_back.clone().unwrap();
            assert_eq!((rb.failed_image.as_str(), rb.to_image.as_str(), rb.reason()), ("v2", "v1", reason));
            assert_eq!(d.status.history.last().unwrap().failure.map(RolloutFailure::as_str), Some(reason));
            assert_eq!(d.status.failed_images, ["v2"]);
            assert_eq!(d.status.history.last().unwrap().outcome, RolloutOutcome::RolledBack);
            // Not retried while the spec stays v2, even once healthy again.
            let again = decide(&policy(), "v2", &good(), &d.status, t(5000));
            assert_eq!(again.image, "v1");
            assert!(!again.newly_rolled_back);
            assert!(again.rolled_back.is_some());
            // A new spec image is tried.
            let v3 = decide(&policy(), "v3", &good(), &again.status, t(6000));
            assert_eq!(v3.image, "v3");
            assert!(v3.status.failed_images.is_empty());
        }
    }

    #[test]
    fn an_outage_that_started_before_the_deploy_is_not_blamed_on_it() {
        let m = stable_v1();
        let d = decide(&policy(), "v2", &good(), &m, t(1000));
        let obs = Observation { healthy: Some(false), unhealthy_since: Some(t(900)), ..good() };
        let d = decide(&policy(), "v2", &obs, &d.status, t(1010));
        assert_eq!(d.image, "v2");
        assert!(d.rolled_back.is_none());
    }

    #[test]
    fn health_failure_after_the_progress_deadline_is_not_a_rollout_failure() {
        let mut p = policy();
        p.stable_after = Duration::from_secs(5000);
        let m = stable_v1();
        let d = decide(&p, "v2", &good(), &m, t(1000));
        let obs = Observation { healthy: Some(false), unhealthy_since: Some(t(1700)), ..good() };
        let d = decide(&p, "v2", &obs, &d.status, t(1700));
        assert_eq!(d.image, "v2", "600s deadline passed");
    }

    #[test]
    fn no_rollback_without_a_good_image_or_when_disabled_is_reported() {
        let d = decide(&policy(), "v1", &good(), &RolloutStatus::default(), t(0));
        let bad = Observation { crash_looping: true, ..Default::default() };
        let d = decide(&policy(), "v1", &bad, &d.status, t(10));
        assert_eq!(d.image, "v1");
        let nr = d.failed_without_rollback.clone().expect("reported");
        assert_eq!((nr.failure, nr.why), (RolloutFailure::CrashLoopBackOff, "no image has been stable yet"));
        let c = condition(Some(&d), &[]).unwrap();
        assert_eq!((c.status, c.reason.as_str()), (false, "RolloutFailed"));
        assert_eq!(c.message, "image v1 failed (CrashLoopBackOff); not rolled back: no image has been stable yet");

        let mut manual = policy();
        manual.automatic = false;
        let m = stable_v1();
        let d = decide(&manual, "v2", &good(), &m, t(1000));
        let d = decide(&manual, "v2", &bad, &d.status, t(1010));
        assert_eq!(d.image, "v2");
        assert_eq!(d.failed_without_rollback.as_ref().map(|n| n.why), Some("rollback.automatic is false"));
        // Once healthy, nothing is reported any more.
        let healthy = decide(&manual, "v2", &good(), &d.status, t(1020));
        assert_eq!(condition(Some(&healthy), &[]).map(|c| c.reason), Some("NotRolledBack".to_string()));
    }

    #[test]
    fn rolled_back_condition_keeps_the_original_failure() {
        let m = stable_v1();
        let d = decide(&policy(), "v2", &good(), &m, t(1000));
        let first = decide(&policy(), "v2", &Observation { crash_looping: true, ..good() }, &d.status, t(1010));
        let c1 = condition(Some(&first), &[]).unwrap();
        assert!(c1.status && c1.message.contains("CrashLoopBackOff"), "{c1:?}");
        assert_eq!(
            first.status.history.last().map(|e| (e.outcome, e.failure)),
            Some((RolloutOutcome::RolledBack, Some(RolloutFailure::CrashLoopBackOff))),
            "the reason is recorded in status"
        );
        let previous = crate::runtime::conditions::merge(&[], std::slice::from_ref(&c1), None, t(1010));
        let later = decide(&policy(), "v2", &good(), &first.status, t(1100));
        assert_eq!(later.rolled_back.as_ref().map(|r| r.reason()), Some("CrashLoopBackOff"));
        assert_eq!(
            condition(Some(&later), &[]),
            Some(c1.clone()),
            "computed from status alone, not from the condition"
        );
        // A condition edited by hand is put back from status, not kept.
        let mut edited = previous.clone();
        edited[0].message = "image v2 failed (something else); running v1".into();
        assert_eq!(condition(Some(&later), &edited), Some(c1), "the message does not change");
        let fresh = decide(&policy(), "v3", &good(), &later.status, t(1200));
        assert!(!condition(Some(&fresh), &previous).unwrap().status);
        assert_eq!(condition(None, &previous), None);
    }

    /// The rollout part of a status written before `RolloutStatus` existed: v2 was rolled
    /// back to v1 and `spec.image` is still v2.
    const STORED: &str = r#"{
        "observedGeneration": 3,
        "currentImage": "v1",
        "lastKnownGoodImage": "v1",
        "failedImages": ["v2"],
        "history": [
            {"image": "v0", "deployedAt": "2027-01-15T08:00:00Z", "outcome": "Superseded"},
            {"image": "v1", "deployedAt": "2027-01-15T08:10:00Z", "outcome": "Stable"},
            {"image": "v2", "deployedAt": "2027-01-15T08:20:00Z", "outcome": "RolledBack"}
        ]
    }"#;

    #[test]
    fn a_stored_status_decides_as_before_the_upgrade() {
        for stored in [
            serde_json::from_str::<crate::api::ColonyServerStatus>(STORED).unwrap().rollout,
            serde_json::from_str::<crate::api::FinanceBeeStatus>(STORED).unwrap().rollout,
        ] {
            assert_eq!(stored.history.last().map(|e| e.image.as_str()), Some("v2"), "newest last");
            // Still on the failed spec image: v1 keeps running, nothing is rolled back again,
            // and the status is unchanged (no write).
            let d = decide(&policy(), "v2", &good(), &stored, t(0));
            assert_eq!(d.image, "v1");
            assert!(!d.newly_rolled_back);
            assert_eq!(d.rolled_back.as_ref().map(|r| (r.failure, r.reason())), Some((None, PREVIOUSLY_FAILED)));
            assert_eq!(d.status, stored);
            // The RolledBack condition the previous version wrote stays word for word: the
            // stored history has no failure reason to compute it from.
            let written = "image v2 failed (CrashLoopBackOff); running the last known good image v1";
            let previous = crate::runtime::conditions::merge(
                &[],
                &[crate::runtime::conditions::Desired::new(crate::api::ROLLED_BACK, true, "RolledBack", written)],
                None,
                t(0),
            );
            assert_eq!(condition(Some(&d), &previous).map(|c| c.message), Some(written.to_string()));
            assert_eq!(next_status(Some(&d), &RolloutStatus::default()), stored);
            // Back on v1: it is the newest entry no longer, so it is deployed as a new rollout
            // (as before the upgrade), and the failed image is forgotten.
            let back = decide(&policy(), "v1", &good(), &stored, t(0));
            assert_eq!((back.image.as_str(), back.status.current_image.as_deref()), ("v1", Some("v1")));
            assert!(back.status.failed_images.is_empty() && !back.newly_rolled_back);
            assert_eq!(
                back.status.history.last().map(|e| (e.image.as_str(), e.outcome)),
                Some(("v1", RolloutOutcome::Progressing))
            );
        }
    }

    #[test]
    fn without_a_decision_the_rollout_status_is_kept() {
        let m = stable_v1();
        assert_eq!(next_status(None, &m), m);
        let d = decide(&policy(), "v2", &good(), &m, t(1000));
        assert_eq!(d.status.current_image.as_deref(), Some("v2"), "current image is the decided one");
        assert_eq!(next_status(Some(&d), &m), d.status);
    }

    #[test]
    fn history_is_bounded_and_superseded_rollouts_are_marked() {
        let mut m = RolloutStatus::default();
        for (i, img) in ["a", "b", "c", "d"].iter().enumerate() {
            m = decide(&policy(), img, &Observation::default(), &m, t(i as i64)).status;
        }
        let images: Vec<_> = m.history.iter().map(|e| e.image.as_str()).collect();
        assert_eq!(images, ["b", "c", "d"]);
        assert_eq!(m.history[0].outcome, RolloutOutcome::Superseded);
        assert_eq!(m.history[2].outcome, RolloutOutcome::Progressing);
    }
}
