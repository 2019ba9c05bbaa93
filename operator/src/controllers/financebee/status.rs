//! The FinanceBee status as a pure function of what the reconciler observed and decided.
use chrono::{DateTime, SecondsFormat, Utc};

use super::escalation;
use super::restart::{Hold, RestartDecision};
use crate::api::{
    AVAILABLE, EscalationStatus, FinanceBeeStatus, READY, RECONCILING, RolloutStatus, STALLED, SUSPENDED,
};
use crate::runtime::conditions::{Desired, merge};

pub mod reason {
    pub const AVAILABLE: &str = "Available";
    pub const UNAVAILABLE: &str = "Unavailable";
    pub const MAINTENANCE: &str = "Maintenance";
    pub const RESTART_BUDGET_EXHAUSTED: &str = "RestartBudgetExhausted";
    pub const SERVER_UNHEALTHY: &str = "ServerUnhealthy";
    pub const PROGRESSING: &str = "Progressing";
}

/// Why the bee is deliberately scaled to 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pause {
    Suspended,
    Maintenance(Vec<String>),
}

impl Pause {
    pub fn hold(&self) -> Hold {
        match self {
            Self::Suspended => Hold::Suspended,
            Self::Maintenance(w) => Hold::Maintenance(w.clone()),
        }
    }
}

/// Available: not paused, no problem, and every desired replica available.
pub fn is_available(replicas: i32, available_replicas: i32, problem: bool, paused: bool) -> bool {
    !paused && !problem && available_replicas >= replicas.max(1)
}

/// When the current unavailability started: kept while it lasts, cleared when the bee is
/// available or deliberately stopped (planned maintenance is not a failure).
pub fn unavailable_since(
    previous: Option<DateTime<Utc>>,
    available: bool,
    paused: bool,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if available || paused { None } else { previous.or(Some(now)) }
}

pub struct Observed<'a> {
    pub generation: Option<i64>,
    pub previous: &'a FinanceBeeStatus,
    pub now: DateTime<Utc>,
    pub image: &'a str,
    pub replicas: i32,
    pub max_restarts: u32,
    /// (reason, message) of a problem that stops the bee from being reconciled.
    pub problem: Option<(String, String)>,
    pub pause: Option<Pause>,
    pub ready_replicas: i32,
    pub available_replicas: i32,
    pub restart: &'a RestartDecision,
    pub escalation: Option<EscalationStatus>,
    pub escalated: Desired,
    /// The rollback decision (None when no Deployment was built).
    pub rollout: Option<&'a crate::runtime::rollout::Decision>,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn pending_text(d: &RestartDecision) -> String {
    let first = &d.pending[0];
    let more = match d.pending.len() {
        1 => String::new(),
        n => format!(" and {} more", n - 1),
    };
    format!("pod {} needs a restart ({}){more}", first.pod, first.reason)
}

/// The Stalled message when the restart budget is used up (None: it is not).
pub fn exhausted_message(d: &RestartDecision, max_restarts: u32) -> Option<String> {
    let ex = d.exhausted.as_ref()?;
    let budget = match (max_restarts, ex.window_start, ex.resumes_at) {
        (0, _, _) => "restarts are disabled (maxRestarts 0)".to_string(),
        (_, Some(start), Some(resume)) => format!(
            "restart budget exhausted: {} of {max_restarts} restarts used in the window since {}; restarts resume at {}",
            ex.count,
            ts(start),
            ts(resume)
        ),
        _ => format!("restart budget exhausted: {} of {max_restarts} restarts used", ex.count),
    };
    Some(format!("{budget}; {}", pending_text(d)))
}

/// The message when a server hold keeps a needed restart from happening.
pub fn server_hold_message(d: &RestartDecision) -> Option<String> {
    match &d.hold {
        Some(h @ Hold::ServerUnhealthy { .. }) if !d.pending.is_empty() => {
            Some(format!("{}, but {}: not restarting", pending_text(d), h.message()))
        }
        _ => None,
    }
}

pub fn compute(o: &Observed) -> FinanceBeeStatus {
    let paused = o.pause.is_some();
    let available = is_available(o.replicas, o.available_replicas, o.problem.is_some(), paused);
    let replicas_text = if available {
        format!("{}/{} replicas ready", o.ready_replicas, o.replicas)
    } else {
        format!("{}/{} replicas available", o.available_replicas, o.replicas)
    };
    let exhausted = exhausted_message(o.restart, o.max_restarts);
    let server_hold = server_hold_message(o.restart);

    let (ready, ready_reason, ready_message) = match (&o.problem, &o.pause) {
        (Some((r, m)), _) => (false, r.clone(), m.clone()),
        (None, Some(Pause::Suspended)) => (true, SUSPENDED.to_string(), "suspended: scaled to 0".to_string()),
        (None, Some(Pause::Maintenance(w))) => {
            (true, reason::MAINTENANCE.to_string(), format!("stopped by MaintenanceWindow {}", w.join(", ")))
        }
        (None, None) => match (&exhausted, &server_hold) {
            (Some(m), _) => (false, reason::RESTART_BUDGET_EXHAUSTED.to_string(), format!("{replicas_text}; {m}")),
            (None, Some(m)) => (false, reason::SERVER_UNHEALTHY.to_string(), format!("{replicas_text}; {m}")),
            (None, None) if available => (true, reason::AVAILABLE.to_string(), replicas_text.clone()),
            (None, None) => (false, reason::UNAVAILABLE.to_string(), replicas_text.clone()),
        },
    };
    let available_reason = match (&o.problem, &o.pause) {
        (Some((r, _)), _) => r.clone(),
        (None, Some(Pause::Suspended)) => SUSPENDED.to_string(),
        (None, Some(Pause::Maintenance(_))) => reason::MAINTENANCE.to_string(),
        (None, None) if available => reason::AVAILABLE.to_string(),
        (None, None) => reason::UNAVAILABLE.to_string(),
    };
    let available_message = match &o.pause {
        Some(_) => ready_message.clone(),
        None => replicas_text.clone(),
    };
    let stalled = match (&o.problem, &exhausted) {
        (Some((r, m)), _) => Some((r.clone(), m.clone())),
        (None, Some(m)) if !paused => Some((reason::RESTART_BUDGET_EXHAUSTED.to_string(), m.clone())),
        _ => None,
    };
    let reconciling = !available && !paused && stalled.is_none();
    let desired = vec![
        Desired::new(READY, ready, ready_reason, ready_message.clone()),
        Desired::new(AVAILABLE, available, available_reason, available_message),
        Desired::new(RECONCILING, reconciling, reason::PROGRESSING, ready_message),
        match &stalled {
            Some((r, m)) => Desired::new(STALLED, true, r.clone(), m.clone()),
            None => Desired::new(STALLED, false, "", ""),
        },
        o.escalated.clone(),
    ]
    .into_iter()
    .chain(crate::runtime::rollout::condition(o.rollout, &o.previous.conditions))
    .collect::<Vec<_>>();
    FinanceBeeStatus {
        observed_generation: o.generation,
        conditions: merge(&o.previous.conditions, &desired, o.generation, o.now),
        ready_replicas: Some(o.ready_replicas),
        unavailable_since: unavailable_since(o.previous.unavailable_since, available, paused, o.now),
        restarts: o.restart.status.clone(),
        escalation: o.escalation.clone(),
        rollout: match o.rollout {
            Some(d) => d.status.clone(),
            // Not reconciled (a problem): the bee is reported on `spec.image`, as before.
            None => RolloutStatus { current_image: Some(o.image.to_string()), ..o.previous.rollout.clone() },
        },
    }
}

/// The Escalated condition's desired form for the reconciler (re-exported for brevity).
pub use escalation::condition as escalated_condition;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ESCALATED, RestartRecord, RestartStatus};
    use crate::controllers::financebee::escalation::Delivery;
    use crate::controllers::financebee::restart::{Candidate, Exhausted, RestartReason};
    use crate::runtime::conditions::{find, is_true};
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn quiet() -> RestartDecision {
        RestartDecision {
            delete: None,
            counted: false,
            status: None,
            pending: vec![],
            hold: None,
            exhausted: None,
            requeue_after: None,
        }
    }

    fn candidate(pod: &str, reason: RestartReason) -> Candidate {
        Candidate { pod: pod.into(), reason, detail: "d".into() }
    }

    fn observed<'a>(prev: &'a FinanceBeeStatus, restart: &'a RestartDecision) -> Observed<'a> {
        Observed {
            generation: Some(2),
            previous: prev,
            now: t(100),
            image: "bee:1",
            replicas: 1,
            max_restarts: 3,
            problem: None,
            pause: None,
            ready_replicas: 1,
            available_replicas: 1,
            restart,
            escalation: None,
            escalated: escalated_condition(None, &Delivery::Pending, "15m"),
            rollout: None,
        }
    }

    fn cond<'a>(s: &'a FinanceBeeStatus, type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
        find(&s.conditions, type_).map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
    }

    #[test]
    fn available_bee_is_ready_and_quiet() {
        let prev = FinanceBeeStatus::default();
        let r = quiet();
        let s = compute(&observed(&prev, &r));
        assert_eq!(cond(&s, READY), Some(("True", "Available", "1/1 replicas ready")));
        assert_eq!(cond(&s, AVAILABLE).unwrap().0, "True");
        assert!(cond(&s, RECONCILING).is_none() && cond(&s, STALLED).is_none());
        assert_eq!(cond(&s, ESCALATED).unwrap().1, "NotEscalated");
        assert_eq!(s.unavailable_since, None);
        assert_eq!(s.observed_generation, Some(2));
        // Computing again from the result at a later instant changes nothing.
        let mut o = observed(&s, &r);
        o.now = t(5000);
        assert_eq!(compute(&o), s);
    }

    #[test]
    fn unavailability_is_timed_from_its_start_and_cleared_by_pause() {
        let prev = FinanceBeeStatus::default();
        let r = quiet();
        let mut o = observed(&prev, &r);
        o.available_replicas = 0;
        o.ready_replicas = 0;
        let s = compute(&o);
        assert_eq!(s.unavailable_since, Some(t(100)));
        assert_eq!(cond(&s, READY), Some(("False", "Unavailable", "0/1 replicas available")));
        assert_eq!(cond(&s, RECONCILING).unwrap().0, "True");
        let mut o2 = observed(&s, &r);
        o2.available_replicas = 0;
        o2.ready_replicas = 0;
        o2.now = t(700);
        assert_eq!(compute(&o2).unavailable_since, Some(t(100)), "kept while it lasts");
        o2.pause = Some(Pause::Maintenance(vec!["nightly".into()]));
        let paused = compute(&o2);
        assert_eq!(paused.unavailable_since, None);
        assert_eq!(cond(&paused, READY), Some(("True", "Maintenance", "stopped by MaintenanceWindow nightly")));
        o2.pause = Some(Pause::Suspended);
        assert_eq!(cond(&compute(&o2), READY).unwrap().1, "Suspended");
    }

    #[test]
    fn exhausted_budget_is_stalled_with_when_it_resumes() {
        let prev = FinanceBeeStatus::default();
        let mut r = quiet();
        r.pending = vec![candidate("bee-x", RestartReason::CrashLoop)];
        r.exhausted = Some(Exhausted { count: 3, window_start: Some(t(0)), resumes_at: Some(t(1800)) });
        r.status = Some(RestartStatus {
            count: 3,
            window_start: Some(t(0)),
            last: Some(RestartRecord { pod: "bee-w".into(), reason: "CrashLoop".into(), time: t(50) }),
        });
        let mut o = observed(&prev, &r);
        o.available_replicas = 0;
        let s = compute(&o);
        let (st, reason, msg) = cond(&s, STALLED).unwrap();
        assert_eq!((st, reason), ("True", "RestartBudgetExhausted"));
        assert!(msg.contains("3 of 3 restarts used"), "{msg}");
        assert!(msg.contains("restarts resume at 2027-01-15T08:30:00Z"), "{msg}");
        assert!(msg.contains("pod bee-x needs a restart (CrashLoop)"), "{msg}");
        assert_eq!(cond(&s, READY).unwrap().1, "RestartBudgetExhausted");
        assert!(cond(&s, RECONCILING).is_none(), "Stalled, not Reconciling");
        assert_eq!(s.restarts, r.status);

        r.exhausted = Some(Exhausted { count: 0, window_start: None, resumes_at: None });
        let mut o = observed(&prev, &r);
        o.max_restarts = 0;
        assert!(cond(&compute(&o), STALLED).unwrap().2.contains("restarts are disabled"));
    }

    #[test]
    fn server_hold_names_the_server_as_the_cause() {
        let prev = FinanceBeeStatus::default();
        let mut r = quiet();
        r.pending = vec![candidate("bee-x", RestartReason::CrashLoop), candidate("bee-y", RestartReason::Stuck)];
        r.hold =
            Some(Hold::ServerUnhealthy { server: "prod".into(), detail: "ProbeFailed: connection refused".into() });
        let mut o = observed(&prev, &r);
        o.available_replicas = 0;
        let s = compute(&o);
        let (st, reason, msg) = cond(&s, READY).unwrap();
        assert_eq!((st, reason), ("False", "ServerUnhealthy"));
        assert!(
            msg.contains("pod bee-x needs a restart (CrashLoop) and 1 more, but ColonyServer prod is not Healthy (ProbeFailed: connection refused); the server is the cause: not restarting"),
            "{msg}"
        );
        assert!(cond(&s, STALLED).is_none(), "waiting for the server is not stalled");
        // A suspension hold is not reported as the server's fault.
        r.hold = Some(Hold::Suspended);
        let mut o = observed(&prev, &r);
        o.pause = Some(Pause::Suspended);
        assert_eq!(cond(&compute(&o), READY).unwrap().1, "Suspended");
    }

    #[test]
    fn problems_win_and_stall() {
        let prev = FinanceBeeStatus::default();
        let r = quiet();
        let mut o = observed(&prev, &r);
        o.problem = Some(("ServerNotFound".into(), "ColonyServer \"x\" not found".into()));
        let s = compute(&o);
        assert_eq!(cond(&s, READY).unwrap().1, "ServerNotFound");
        assert_eq!(cond(&s, STALLED).unwrap().1, "ServerNotFound");
        assert!(!is_true(&s.conditions, AVAILABLE));
    }

    #[test]
    fn escalation_is_carried_into_status() {
        let prev = FinanceBeeStatus::default();
        let r = quiet();
        let mut o = observed(&prev, &r);
        let esc = EscalationStatus::new(crate::api::EscalationState::Triggered, t(90));
        o.escalation = Some(esc.clone());
        o.escalated = escalated_condition(Some(&esc), &Delivery::Sent("notified PagerDuty".into()), "3s");
        let s = compute(&o);
        assert_eq!(s.escalation, Some(esc));
        let (st, reason, msg) = cond(&s, ESCALATED).unwrap();
        assert_eq!((st, reason), ("True", "TriggerSent"));
        assert_eq!(msg, "escalated at 2027-01-15T08:01:30Z after 3s unavailable; notified PagerDuty");
    }

    /// Every problem × pause × restart budget × availability, from a previous status that
    /// had Reconciling and one that had Stalled: never both at once.
    #[test]
    fn never_reconciling_and_stalled_at_once() {
        let empty = FinanceBeeStatus::default();
        let stalled_before = {
            let r = quiet();
            let mut o = observed(&empty, &r);
            o.problem = Some(("MissingReference".into(), "m".into()));
            compute(&o)
        };
        let reconciling_before = {
            let r = quiet();
            let mut o = observed(&empty, &r);
            o.available_replicas = 0;
            compute(&o)
        };
        for prev in [FinanceBeeStatus::default(), stalled_before, reconciling_before] {
            for problem in [None, Some(("ServerNotFound".to_string(), "m".to_string()))] {
                for pause in [None, Some(Pause::Suspended), Some(Pause::Maintenance(vec!["w".into()]))] {
                    for exhausted in [false, true] {
                        for available_replicas in [0, 1] {
                            let mut r = quiet();
                            if exhausted {
                                r.pending = vec![candidate("bee-x", RestartReason::CrashLoop)];
                                r.exhausted = Some(Exhausted { count: 3, window_start: None, resumes_at: None });
                            }
                            let mut o = observed(&prev, &r);
                            o.problem = problem.clone();
                            o.pause = pause.clone();
                            o.available_replicas = available_replicas;
                            let s = compute(&o);
                            let case = format!("{problem:?} {pause:?} exhausted={exhausted} {available_replicas}");
                            let (rec, st) = (is_true(&s.conditions, RECONCILING), is_true(&s.conditions, STALLED));
                            assert!(!(rec && st), "both: {case}");
                            assert_eq!(st, problem.is_some() || (exhausted && pause.is_none()), "Stalled: {case}");
                        }
                    }
                }
            }
        }
    }
}
