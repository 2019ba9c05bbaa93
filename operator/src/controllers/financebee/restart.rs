//! "Attempt restart" from the runbook, as a pure decision: which bee pod the operator deletes
//! (the Deployment replaces it) because the kubelet will not fix it — a pod that Failed or
//! was Evicted, one crash-looping past `crashLoopThreshold`, one pending or not ready for
//! longer than `stuckAfter` — within a budget of `maxRestarts` per `window`.
//!
//! Restarts are held while the bee is suspended, while a MaintenanceWindow stops it, and
//! while its ColonyServer is not Healthy: a bee failing because its server is down is not
//! fixed by restarting the bee.
//!
//! At most one pod is restarted per decision, and the restart is recorded in status *before*
//! the pod is deleted (the caller writes `status`, then deletes). A crash between the two
//! leaves `last.pod` naming a pod that still exists; the next decision deletes it again
//! without counting it twice.
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::core::v1::Pod;

use crate::api::{RestartRecord, RestartSpec, RestartStatus};
use crate::runtime::conditions::from_time;

/// `spec.restart` with its durations parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    pub max_restarts: u32,
    pub window: TimeDelta,
    pub crash_loop_threshold: i32,
    pub stuck_after: TimeDelta,
}

impl RestartPolicy {
    pub fn from_spec(spec: &RestartSpec) -> Result<Self, String> {
        Ok(Self {
            max_restarts: spec.max_restarts.max(0) as u32,
            window: TimeDelta::from_std(spec.window.check("spec.restart.window")?).unwrap_or(TimeDelta::MAX),
            crash_loop_threshold: spec.crash_loop_threshold.max(1),
            stuck_after: TimeDelta::from_std(spec.stuck_after.check("spec.restart.stuckAfter")?)
                .unwrap_or(TimeDelta::MAX),
        })
    }
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self::from_spec(&RestartSpec::default()).expect("the defaults parse")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

/// What the decision needs to know about one bee pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    pub phase: Phase,
    /// `status.reason == "Evicted"`.
    pub evicted: bool,
    /// Already being deleted: not ours to restart again.
    pub terminating: bool,
    pub created: DateTime<Utc>,
    pub ready: bool,
    /// When the Ready condition last turned False (absent: since creation).
    pub not_ready_since: Option<DateTime<Utc>>,
    /// Highest restart count among the pod's containers.
    pub restart_count: i32,
    /// Some container waits in CrashLoopBackOff.
    pub crash_looping: bool,
}

impl PodView {
    pub fn from_pod(pod: &Pod) -> Self {
        let status = pod.status.clone().unwrap_or_default();
        let phase = match status.phase.as_deref() {
            Some("Pending") | None => Phase::Pending,
            Some("Running") => Phase::Running,
            Some("Succeeded") => Phase::Succeeded,
            Some("Failed") => Phase::Failed,
            Some(_) => Phase::Unknown,
        };
        let ready_condition = status.conditions.iter().flatten().find(|c| c.type_ == "Ready");
        let ready = ready_condition.is_some_and(|c| c.status == "True");
        let not_ready_since =
            ready_condition.filter(|c| c.status != "True").and_then(|c| c.last_transition_time.as_ref()).map(from_time);
        let containers = status.container_statuses.unwrap_or_default();
        Self {
            name: pod.metadata.name.clone().unwrap_or_default(),
            phase,
            evicted: status.reason.as_deref() == Some("Evicted"),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            created: pod.metadata.creation_timestamp.as_ref().map(from_time).unwrap_or_default(),
            ready,
            not_ready_since,
            restart_count: containers.iter().map(|c| c.restart_count).max().unwrap_or(0),
            crash_looping: containers.iter().any(|c| {
                c.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.as_deref())
                    == Some("CrashLoopBackOff")
            }),
        }
    }
}

/// Why a pod is restarted, in order of precedence when several apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RestartReason {
    /// Phase Failed (or Succeeded): a Deployment's pod the kubelet will not run again.
    Failed,
    /// Evicted by the kubelet (resource pressure); the pod object stays behind.
    Evicted,
    /// A container restarted `crashLoopThreshold` times and the pod is not ready.
    CrashLoop,
    /// Pending, or running but not ready, for longer than `stuckAfter`.
    Stuck,
}

impl RestartReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "Failed",
            Self::Evicted => "Evicted",
            Self::CrashLoop => "CrashLoop",
            Self::Stuck => "Stuck",
        }
    }
}

impl fmt::Display for RestartReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pod that needs a restart. `detail` is for Events (it may change from one observation to
/// the next, so it never goes into status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub pod: String,
    pub reason: RestartReason,
    pub detail: String,
}

/// Why no restart may happen now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    Suspended,
    /// Names of the open MaintenanceWindows that stop the bee.
    Maintenance(Vec<String>),
    /// The referenced ColonyServer is not Healthy: it, not the bee, is the cause.
    ServerUnhealthy {
        server: String,
        detail: String,
    },
}

impl Hold {
    /// Short reason for conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Suspended => "Suspended",
            Self::Maintenance(_) => "Maintenance",
            Self::ServerUnhealthy { .. } => "ServerUnhealthy",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::Suspended => "the FinanceBee is suspended".into(),
            Self::Maintenance(w) => format!("MaintenanceWindow {} is open", w.join(", ")),
            Self::ServerUnhealthy { server, detail } => {
                format!("ColonyServer {server} is not Healthy ({detail}); the server is the cause")
            }
        }
    }
}

pub struct RestartInputs<'a> {
    pub policy: &'a RestartPolicy,
    pub pods: &'a [PodView],
    pub previous: Option<&'a RestartStatus>,
    pub hold: Option<Hold>,
    pub now: DateTime<Utc>,
}

/// The restart budget is used up: `count` restarts since `window_start`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exhausted {
    pub count: u32,
    pub window_start: Option<DateTime<Utc>>,
    /// When restarts are allowed again (None: `maxRestarts` is 0, never).
    pub resumes_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartDecision {
    /// The pod to delete now, if any.
    pub delete: Option<Candidate>,
    /// Whether `delete` is a new restart (false: re-deleting the pod recorded in
    /// `status.last`, whose delete did not happen).
    pub counted: bool,
    /// The restart status to write (equal to the previous one unless `counted`).
    pub status: Option<RestartStatus>,
    /// Pods that need a restart but do not get one now (held or over budget).
    pub pending: Vec<Candidate>,
    /// Set when `pending` is held back by the suspension, maintenance or the server.
    pub hold: Option<Hold>,
    /// Set when `pending` is held back by the budget: Stalled.
    pub exhausted: Option<Exhausted>,
    /// When to look again although nothing may change in the cluster: a stuck timer, or the
    /// end of an exhausted window.
    pub requeue_after: Option<Duration>,
}

enum Verdict {
    Restart(Candidate),
    /// Fine now, stuck at this time unless something changes.
    StuckAt(DateTime<Utc>),
    Fine,
}

fn classify(policy: &RestartPolicy, pod: &PodView, now: DateTime<Utc>) -> Verdict {
    let restart = |reason, detail: String| Verdict::Restart(Candidate { pod: pod.name.clone(), reason, detail });
    match pod.phase {
        Phase::Failed if pod.evicted => {
            return restart(RestartReason::Evicted, "the pod was evicted".into());
        }
        Phase::Failed | Phase::Succeeded => {
            return restart(RestartReason::Failed, format!("the pod terminated (phase {:?})", pod.phase));
        }
        _ => {}
    }
    if pod.ready {
        return Verdict::Fine;
    }
    if pod.restart_count >= policy.crash_loop_threshold {
        return restart(
            RestartReason::CrashLoop,
            format!("restartCount {} reached crashLoopThreshold {}", pod.restart_count, policy.crash_loop_threshold),
        );
    }
    let since = match pod.phase {
        Phase::Pending => pod.created,
        _ => pod.not_ready_since.unwrap_or(pod.created).max(pod.created),
    };
    // API timestamps have whole seconds: taking `since` as the end of its second means a pod
    // is never called stuck before it has really been so for `stuckAfter`.
    let due = since + TimeDelta::seconds(1) + policy.stuck_after;
    if now >= due {
        let state = if pod.phase == Phase::Pending { "pending" } else { "not ready" };
        let secs = (now - since).num_seconds();
        restart(RestartReason::Stuck, format!("{state} for {secs}s (stuckAfter {}s)", policy.stuck_after.num_seconds()))
    } else {
        Verdict::StuckAt(due)
    }
}

fn until(now: DateTime<Utc>, t: DateTime<Utc>) -> Duration {
    (t - now).to_std().unwrap_or_default().max(Duration::from_secs(1))
}

pub fn decide(inputs: &RestartInputs) -> RestartDecision {
    let RestartInputs { policy, pods, now, .. } = *inputs;
    let previous = inputs.previous.cloned();

    let mut candidates = Vec::new();
    let mut next_stuck: Option<DateTime<Utc>> = None;
    for pod in pods.iter().filter(|p| !p.terminating) {
        match classify(policy, pod, now) {
            Verdict::Restart(c) => candidates.push(c),
            Verdict::StuckAt(t) => next_stuck = Some(next_stuck.map_or(t, |n| n.min(t))),
            Verdict::Fine => {}
        }
    }
    candidates.sort_by(|a, b| (a.reason, &a.pod).cmp(&(b.reason, &b.pod)));
    let stuck_requeue = next_stuck.map(|t| until(now, t));
    let mut decision = RestartDecision {
        delete: None,
        counted: false,
        status: previous.clone(),
        pending: Vec::new(),
        hold: None,
        exhausted: None,
        requeue_after: stuck_requeue,
    };
    if candidates.is_empty() {
        return decision;
    }
    if let Some(hold) = inputs.hold.clone() {
        decision.pending = candidates;
        decision.hold = Some(hold);
        return decision;
    }
    // The recorded restart whose delete never happened: finish it, do not count it again.
    let recorded = previous.as_ref().and_then(|s| s.last.as_ref());
    if let Some(i) = candidates.iter().position(|c| recorded.is_some_and(|r| r.pod == c.pod)) {
        decision.delete = Some(candidates.remove(i));
        decision.pending = candidates;
        return decision;
    }

    let prev = previous.unwrap_or_default();
    let window_start = prev.window_start.filter(|s| now < *s + policy.window);
    let used = if window_start.is_some() { prev.count.max(0) as u32 } else { 0 };
    if used >= policy.max_restarts {
        let resumes_at = match policy.max_restarts {
            0 => None,
            _ => window_start.map(|s| s + policy.window),
        };
        decision.requeue_after = [stuck_requeue, resumes_at.map(|t| until(now, t))].into_iter().flatten().min();
        decision.pending = candidates;
        decision.exhausted = Some(Exhausted { count: used, window_start, resumes_at });
        return decision;
    }
    let chosen = candidates.remove(0);
    decision.status = Some(RestartStatus {
        count: used as i32 + 1,
        window_start: Some(window_start.unwrap_or(now)),
        last: Some(RestartRecord { pod: chosen.pod.clone(), reason: chosen.reason.as_str().to_string(), time: now }),
    });
    decision.delete = Some(chosen);
    decision.counted = true;
    decision.pending = candidates;
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const NOW: i64 = 100_000;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn policy(max: u32) -> RestartPolicy {
        RestartPolicy {
            max_restarts: max,
            window: TimeDelta::minutes(30),
            crash_loop_threshold: 5,
            stuck_after: TimeDelta::minutes(5),
        }
    }

    /// Every kind of pod the decision distinguishes.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Kind {
        Healthy,
        /// Ready, with many restarts long ago: fine now.
        HealthyWithHistory,
        Failed,
        Succeeded,
        Evicted,
        CrashLoop,
        /// Crash-looping below the threshold, not ready for a short time.
        CrashLoopUnder,
        PendingShort,
        PendingLong,
        NotReadyShort,
        NotReadyLong,
        /// Not ready, Ready condition without a transition time, created long ago.
        NotReadyNoTransitionOld,
        UnknownLong,
        /// A failed pod already being deleted.
        TerminatingFailed,
    }

    const KINDS: [Kind; 14] = [
        Kind::Healthy,
        Kind::HealthyWithHistory,
        Kind::Failed,
        Kind::Succeeded,
        Kind::Evicted,
        Kind::CrashLoop,
        Kind::CrashLoopUnder,
        Kind::PendingShort,
        Kind::PendingLong,
        Kind::NotReadyShort,
        Kind::NotReadyLong,
        Kind::NotReadyNoTransitionOld,
        Kind::UnknownLong,
        Kind::TerminatingFailed,
    ];

    fn pod(name: &str, kind: Kind) -> PodView {
        let mut p = PodView {
            name: name.into(),
            phase: Phase::Running,
            evicted: false,
            terminating: false,
            created: t(NOW - 3600),
            ready: true,
            not_ready_since: None,
            restart_count: 0,
            crash_looping: false,
        };
        match kind {
            Kind::Healthy => {}
            Kind::HealthyWithHistory => p.restart_count = 50,
            Kind::Failed => {
                p.phase = Phase::Failed;
                p.ready = false;
            }
            Kind::Succeeded => {
                p.phase = Phase::Succeeded;
                p.ready = false;
            }
            Kind::Evicted => {
                p.phase = Phase::Failed;
                p.evicted = true;
                p.ready = false;
            }
            Kind::CrashLoop => {
                p.ready = false;
                p.crash_looping = true;
                p.restart_count = 5;
                p.not_ready_since = Some(t(NOW - 10));
            }
            Kind::CrashLoopUnder => {
                p.ready = false;
                p.crash_looping = true;
                p.restart_count = 4;
                p.not_ready_since = Some(t(NOW - 10));
            }
            Kind::PendingShort => {
                p.phase = Phase::Pending;
                p.ready = false;
                p.created = t(NOW - 60);
            }
            Kind::PendingLong => {
                p.phase = Phase::Pending;
                p.ready = false;
                p.created = t(NOW - 302);
            }
            Kind::NotReadyShort => {
                p.ready = false;
                p.not_ready_since = Some(t(NOW - 60));
            }
            Kind::NotReadyLong => {
                p.ready = false;
                p.not_ready_since = Some(t(NOW - 301));
            }
            Kind::NotReadyNoTransitionOld => p.ready = false,
            Kind::UnknownLong => {
                p.phase = Phase::Unknown;
                p.ready = false;
                p.not_ready_since = Some(t(NOW - 400));
            }
            Kind::TerminatingFailed => {
                p.phase = Phase::Failed;
                p.ready = false;
                p.terminating = true;
            }
        }
        p
    }

    /// The reason the rules give each kind, written independently of `classify`.
    fn expected_reason(kind: Kind) -> Option<RestartReason> {
        match kind {
            Kind::Failed | Kind::Succeeded => Some(RestartReason::Failed),
            Kind::Evicted => Some(RestartReason::Evicted),
            Kind::CrashLoop => Some(RestartReason::CrashLoop),
            Kind::PendingLong | Kind::NotReadyLong | Kind::NotReadyNoTransitionOld | Kind::UnknownLong => {
                Some(RestartReason::Stuck)
            }
            Kind::Healthy
            | Kind::HealthyWithHistory
            | Kind::CrashLoopUnder
            | Kind::PendingShort
            | Kind::NotReadyShort
            | Kind::TerminatingFailed => None,
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Budget {
        /// No restart status at all.
        Never,
        /// One restart in the open window.
        Some,
        /// `max` restarts in the open window.
        Full,
        /// `max` restarts in a window that has ended.
        Expired,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Last {
        Other,
        /// `last.pod` names the first pod: its recorded delete did not happen.
        ThisPod,
    }

    fn holds() -> [Option<Hold>; 4] {
        [
            None,
            Some(Hold::Suspended),
            Some(Hold::Maintenance(vec!["nightly".into()])),
            Some(Hold::ServerUnhealthy { server: "prod".into(), detail: "ProbeFailed".into() }),
        ]
    }

    fn previous(budget: Budget, last: Last, max: u32) -> Option<RestartStatus> {
        let record = |pod: &str| Some(RestartRecord { pod: pod.into(), reason: "Failed".into(), time: t(NOW - 100) });
        let last = match last {
            Last::Other => record("bee-gone"),
            Last::ThisPod => record("bee-a"),
        };
        match budget {
            Budget::Never => None,
            Budget::Some => Some(RestartStatus { count: 1, window_start: Some(t(NOW - 600)), last }),
            Budget::Full => Some(RestartStatus { count: max as i32, window_start: Some(t(NOW - 600)), last }),
            Budget::Expired => Some(RestartStatus { count: max as i32, window_start: Some(t(NOW - 1800)), last }),
        }
    }

    /// Every pair of pod kinds (a two-replica bee) × hold × budget × last record × max.
    #[test]
    fn decision_table_exhaustive() {
        let mut rows = 0;
        for max in [0u32, 1, 3] {
            let p = policy(max);
            for a in KINDS {
                for b in KINDS {
                    for hold in holds() {
                        for budget in [Budget::Never, Budget::Some, Budget::Full, Budget::Expired] {
                            for last in [Last::Other, Last::ThisPod] {
                                rows += 1;
                                let pods = [pod("bee-a", a), pod("bee-b", b)];
                                let prev = previous(budget, last, max);
                                let d = decide(&RestartInputs {
                                    policy: &p,
                                    pods: &pods,
                                    previous: prev.as_ref(),
                                    hold: hold.clone(),
                                    now: t(NOW),
                                });
                                check_row(max, a, b, &hold, budget, last, prev.as_ref(), &d);
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(rows, 3 * 14 * 14 * 4 * 4 * 2);
    }

    #[allow(clippy::too_many_arguments)]
    fn check_row(
        max: u32,
        a: Kind,
        b: Kind,
        hold: &Option<Hold>,
        budget: Budget,
        last: Last,
        prev: Option<&RestartStatus>,
        d: &RestartDecision,
    ) {
        let ctx = format!("max={max} a={a:?} b={b:?} hold={hold:?} budget={budget:?} last={last:?} -> {d:#?}");
        let mut wanted: Vec<(RestartReason, &str)> =
            [(a, "bee-a"), (b, "bee-b")].into_iter().filter_map(|(k, n)| expected_reason(k).map(|r| (r, n))).collect();
        wanted.sort();
        let all: Vec<(RestartReason, String)> =
            d.delete.iter().chain(&d.pending).map(|c| (c.reason, c.pod.clone())).collect();
        let mut sorted_all = all.clone();
        sorted_all.sort();
        assert_eq!(
            sorted_all,
            wanted.iter().map(|(r, n)| (*r, n.to_string())).collect::<Vec<_>>(),
            "every candidate is either deleted or pending: {ctx}"
        );

        let nothing_to_do = wanted.is_empty();
        let a_wanted = expected_reason(a).is_some();
        let open_used = match budget {
            Budget::Never | Budget::Expired => 0,
            Budget::Some => 1,
            Budget::Full => max,
        };
        if nothing_to_do {
            assert!(d.delete.is_none() && d.hold.is_none() && d.exhausted.is_none(), "{ctx}");
            assert_eq!(d.status.as_ref(), prev, "status untouched: {ctx}");
            return;
        }
        if let Some(h) = hold {
            assert!(d.delete.is_none(), "never restart while held: {ctx}");
            assert_eq!(d.hold.as_ref(), Some(h), "{ctx}");
            assert_eq!(d.status.as_ref(), prev, "{ctx}");
            assert!(d.exhausted.is_none(), "{ctx}");
            return;
        }
        assert!(d.hold.is_none(), "{ctx}");
        if last == Last::ThisPod && budget != Budget::Never && a_wanted {
            // The recorded restart is finished, not counted again — even over budget.
            let del = d.delete.as_ref().expect(&ctx);
            assert_eq!(del.pod, "bee-a", "{ctx}");
            assert!(!d.counted, "{ctx}");
            assert_eq!(d.status.as_ref(), prev, "{ctx}");
            return;
        }
        if open_used >= max {
            assert!(d.delete.is_none(), "over budget: {ctx}");
            let ex = d.exhausted.as_ref().expect(&ctx);
            assert_eq!(ex.count, open_used, "{ctx}");
            if max == 0 {
                assert_eq!(ex.resumes_at, None, "{ctx}");
            } else {
                assert_eq!(ex.resumes_at, Some(t(NOW - 600 + 1800)), "{ctx}");
                assert!(d.requeue_after.unwrap() <= Duration::from_secs(1200), "{ctx}");
            }
            assert_eq!(d.status.as_ref(), prev, "{ctx}");
            return;
        }
        // A new, counted restart of the first candidate in (reason, name) order.
        let del = d.delete.as_ref().expect(&ctx);
        assert_eq!((del.reason, del.pod.as_str()), wanted[0], "{ctx}");
        assert!(d.counted, "{ctx}");
        assert!(d.exhausted.is_none(), "{ctx}");
        let s = d.status.as_ref().expect(&ctx);
        assert_eq!(s.count as u32, open_used + 1, "{ctx}");
        let expected_start = match budget {
            Budget::Some | Budget::Full => t(NOW - 600),
            Budget::Never | Budget::Expired => t(NOW),
        };
        assert_eq!(s.window_start, Some(expected_start), "{ctx}");
        let rec = s.last.as_ref().expect(&ctx);
        assert_eq!(
            (rec.pod.as_str(), rec.reason.as_str(), rec.time),
            (del.pod.as_str(), del.reason.as_str(), t(NOW)),
            "{ctx}"
        );
        assert!(s.count as u32 <= max, "never over budget: {ctx}");
    }

    fn run(p: &RestartPolicy, pods: &[PodView], prev: Option<&RestartStatus>, now: i64) -> RestartDecision {
        decide(&RestartInputs { policy: p, pods, previous: prev, hold: None, now: t(now) })
    }

    #[test]
    fn stuck_timer_requeues_at_the_earliest_due_time() {
        let p = policy(3);
        let pods = [pod("a", Kind::PendingShort), pod("b", Kind::NotReadyShort), pod("c", Kind::Healthy)];
        let d = run(&p, &pods, None, NOW);
        assert!(d.delete.is_none());
        // PendingShort was created 60s ago, NotReadyShort turned not ready 60s ago: 240s,
        // plus the second their whole-second timestamps may hide.
        assert_eq!(d.requeue_after, Some(Duration::from_secs(241)));
        let d = run(&p, &pods, None, NOW + 240);
        assert!(d.delete.is_none(), "not early");
        // At the due time it is stuck.
        let d = run(&p, &pods, None, NOW + 241);
        assert_eq!(d.delete.as_ref().map(|c| c.reason), Some(RestartReason::Stuck));
        // Healthy pods: no timer at all.
        let d = run(&p, &[pod("c", Kind::Healthy)], None, NOW);
        assert_eq!(
            d,
            RestartDecision {
                delete: None,
                counted: false,
                status: None,
                pending: vec![],
                hold: None,
                exhausted: None,
                requeue_after: None,
            }
        );
    }

    #[test]
    fn a_crash_loop_is_restarted_max_times_per_window_then_stalls_then_resumes() {
        let p = policy(3);
        let mut status: Option<RestartStatus> = None;
        let mut deleted = vec![];
        // A new crash-looping pod appears every 20s (the replacement crash-loops too).
        for i in 0..6 {
            let now = NOW + 20 * i;
            let pods = [pod(&format!("bee-{i}"), Kind::CrashLoop)];
            let d = run(&p, &pods, status.as_ref(), now);
            if let Some(c) = &d.delete {
                assert!(d.counted);
                deleted.push(c.pod.clone());
                status = d.status.clone();
            } else {
                let ex = d.exhausted.expect("stalled once the budget is used");
                assert_eq!(ex.count, 3);
                assert_eq!(ex.resumes_at, Some(t(NOW) + TimeDelta::minutes(30)));
            }
        }
        assert_eq!(deleted, ["bee-0", "bee-1", "bee-2"]);
        let s = status.clone().unwrap();
        assert_eq!((s.count, s.window_start), (3, Some(t(NOW))));
        // The window ends: a new one starts with the next restart.
        let later = NOW + 1800;
        let d = run(&p, &[pod("bee-9", Kind::CrashLoop)], status.as_ref(), later);
        assert_eq!(d.delete.unwrap().pod, "bee-9");
        let s = d.status.unwrap();
        assert_eq!((s.count, s.window_start), (1, Some(t(later))));
    }

    #[test]
    fn one_restart_per_decision_in_reason_then_name_order() {
        let p = policy(10);
        let pods = [
            pod("z", Kind::Failed),
            pod("y", Kind::NotReadyLong),
            pod("x", Kind::CrashLoop),
            pod("w", Kind::Evicted),
            pod("a", Kind::Failed),
        ];
        let d = run(&p, &pods, None, NOW);
        assert_eq!(d.delete.unwrap().pod, "a");
        let order: Vec<_> = d.pending.iter().map(|c| c.pod.as_str()).collect();
        assert_eq!(order, ["z", "w", "x", "y"]);
    }

    #[test]
    fn replaying_the_same_observation_is_a_fixpoint_after_the_delete() {
        // After the restart is written and the pod is gone, the same instant decides nothing.
        let p = policy(3);
        let d = run(&p, &[pod("bee-a", Kind::Failed)], None, NOW);
        let after = d.status.clone();
        let d2 = run(&p, &[pod("bee-b", Kind::Healthy)], after.as_ref(), NOW);
        assert!(d2.delete.is_none());
        assert_eq!(d2.status, after, "status is written only on change");
    }

    #[test]
    fn hold_messages_name_the_cause() {
        let h = Hold::ServerUnhealthy { server: "prod".into(), detail: "ProbeFailed: connection refused".into() };
        assert_eq!(h.reason(), "ServerUnhealthy");
        assert!(h.message().contains("ColonyServer prod is not Healthy"));
        assert!(h.message().contains("connection refused"));
        assert_eq!(Hold::Maintenance(vec!["a".into(), "b".into()]).message(), "MaintenanceWindow a, b is open");
        assert_eq!(Hold::Suspended.reason(), "Suspended");
    }

    #[test]
    fn pod_view_reads_the_api_object() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "bee-1", "creationTimestamp": "2027-01-15T08:00:00Z"},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "False",
                                "lastTransitionTime": "2027-01-15T08:01:00Z"}],
                "containerStatuses": [
                    {"name": "bee", "image": "i", "imageID": "", "ready": false, "restartCount": 7,
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
                    {"name": "side", "image": "i", "imageID": "", "ready": true, "restartCount": 1,
                     "state": {"running": {}}}
                ]
            }
        }))
        .unwrap();
        let v = PodView::from_pod(&pod);
        assert_eq!(v.name, "bee-1");
        assert_eq!(v.phase, Phase::Running);
        assert!(!v.ready && v.crash_looping && !v.terminating && !v.evicted);
        assert_eq!(v.restart_count, 7);
        assert_eq!(v.not_ready_since.unwrap().to_rfc3339(), "2027-01-15T08:01:00+00:00");

        let evicted: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "bee-2", "deletionTimestamp": "2027-01-15T08:00:00Z"},
            "status": {"phase": "Failed", "reason": "Evicted"}
        }))
        .unwrap();
        let v = PodView::from_pod(&evicted);
        assert!(v.evicted && v.terminating && v.phase == Phase::Failed);
        let empty = PodView::from_pod(&Pod::default());
        assert_eq!(empty.phase, Phase::Pending);
    }

    #[test]
    fn policy_parses_the_spec() {
        let p = RestartPolicy::default();
        assert_eq!(p.max_restarts, 3);
        assert_eq!(p.window, TimeDelta::minutes(30));
        assert_eq!(p.crash_loop_threshold, 5);
        assert_eq!(p.stuck_after, TimeDelta::minutes(5));
        let bad = RestartSpec { window: "soon".into(), ..Default::default() };
        assert!(RestartPolicy::from_spec(&bad).unwrap_err().contains("spec.restart.window"));
    }
}
