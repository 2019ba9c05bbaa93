//! The ColonyServer status as a pure function of what the reconciler observed and decided.
use chrono::{DateTime, Utc};

use super::fallback::{FallbackDecision, FallbackState};
use super::monitor::Snapshot;
use crate::api::{
    ColonyServerStatus, FALLBACK_ACTIVE, FallbackOverride, FallbackStatus, HEALTHY, HealthStatus, READY, RECONCILING,
    STALLED, SloStatus,
};
use crate::runtime::conditions::{Desired, merge};

/// The state of the server's workload (managed servers only).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Workload {
    /// `managed: false`: nothing to run.
    #[default]
    Unmanaged,
    /// Rolling out (not all replicas updated and available yet).
    Progressing(String),
    Available,
    Failed(String),
}

pub struct Observed<'a> {
    pub generation: Option<i64>,
    pub previous: Option<&'a ColonyServerStatus>,
    pub snapshot: &'a Snapshot,
    pub decision: &'a FallbackDecision,
    pub override_: FallbackOverride,
    pub workload: Workload,
    /// The rollout decision, when the workload was reconciled (else the rollout status is
    /// kept as it was).
    pub rollout: Option<&'a crate::runtime::rollout::Decision>,
    /// (reason, message) of what stops the server from being reconciled: an invalid spec
    /// (`InvalidSpec`), or an object in the way that is not its own (`ConfigMapNotOwned`).
    pub problem: Option<(String, String)>,
    /// The flip notifications not delivered yet (see [`super::outbox::pending`]).
    pub notifications: Vec<crate::api::PendingNotification>,
    pub now: DateTime<Utc>,
}

/// The fallback memory as stored in status (so a restart keeps the flip budget).
pub fn fallback_state_from(status: Option<&ColonyServerStatus>) -> FallbackState {
    let Some(f) = status.and_then(|s| s.fallback.as_ref()) else {
        return FallbackState::default();
    };
    FallbackState {
        active: f.active,
        since: f.since,
        reason: f.reason.clone(),
        flips: f.recent_flips.clone(),
        // An output of the decision (recomputed from the flips every time), never read back
        // from the Stalled condition.
        stalled: false,
    }
}

pub fn compute(o: &Observed) -> ColonyServerStatus {
    let prev = o.previous.cloned().unwrap_or_default();
    let health = &o.snapshot.health;
    let healthy = health.healthy;

    // Health details change only when the verdict flips: steady state is silent.
    let previous_verdict = crate::runtime::conditions::find(&prev.conditions, HEALTHY).map(|c| c.status == "True");
    let health_status = if previous_verdict == healthy && prev.health.is_some() {
        prev.health.clone()
    } else if healthy.is_some() {
        Some(HealthStatus {
            consecutive_failures: health.consecutive_failures as i32,
            consecutive_successes: health.consecutive_successes as i32,
            down_since: health.down_since,
            last_error: health.last_error.clone(),
        })
    } else {
        prev.health.clone()
    };

    let slo_status = match (&o.snapshot.slo_at_transition, o.snapshot.slo.breached()) {
        (Some(eval), breached) => Some(SloStatus {
            breached,
            since: if breached { o.snapshot.slo.breach_started } else { None },
            reason: eval.violations.first().map(|v| v.reason().to_string()),
            queue_depth: eval.queue_depth.map(|q| q as i64),
            completion_rate: eval.completion_rate,
            error_rate: eval.error_rate,
        }),
        (None, _) => prev.slo.clone(),
    };

    let d = o.decision;
    let fallback = FallbackStatus {
        active: d.active,
        since: d.new_state.since,
        reason: Some(d.reason.clone()),
        flips_last_hour: d.new_state.flips_last_hour() as i32,
        recent_flips: d.new_state.flips.clone(),
        override_: (o.override_ != FallbackOverride::Auto).then_some(o.override_),
        pending_notifications: o.notifications.clone(),
    };

    let mut desired = Vec::new();
    desired.push(match healthy {
        Some(true) => Desired::new(HEALTHY, true, "ProbeSucceeded", "health probes succeed"),
        Some(false) => Desired::new(
            HEALTHY,
            false,
            "ProbeFailed",
            format!("health probe failing: {}", health.last_error.as_deref().unwrap_or("unknown error")),
        ),
        None => Desired::new(HEALTHY, false, "Probing", "waiting for enough health probes to decide"),
    });
    desired.push(Desired::new(
        FALLBACK_ACTIVE,
        d.active,
        d.reason.clone(),
        if d.active { format!("direct-processing fallback on: {}", d.message) } else { d.message.clone() },
    ));
    let (ready, reason, message) = if let Some((reason, why)) = &o.problem {
        (false, reason.as_str(), why.clone())
    } else {
        match (&o.workload, healthy) {
            (Workload::Failed(why), _) => (false, "WorkloadFailed", why.clone()),
            (Workload::Progressing(why), _) => (false, "Progressing", why.clone()),
            (_, Some(true)) => (true, "Healthy", "server is healthy".to_string()),
            (_, Some(false)) => (false, "Unhealthy", "server health probes fail".to_string()),
            (_, None) => (false, "Probing", "waiting for the first health verdict".to_string()),
        }
    };
    desired.push(Desired::new(READY, ready, reason, message));
    // Stalled (a human must act) and Reconciling (the operator is getting there) exclude each
    // other: out of flip budget while probing is Stalled.
    let stalled = o.problem.clone().or_else(|| {
        d.new_state.stalled.then(|| (super::fallback::reason::FLIP_BUDGET_EXHAUSTED.to_string(), d.message.clone()))
    });
    let progressing = stalled.is_none() && (matches!(o.workload, Workload::Progressing(_)) || healthy.is_none());
    desired.push(Desired::new(RECONCILING, progressing, "Progressing", "rolling out or probing"));
    desired.extend(crate::runtime::rollout::condition(o.rollout, &prev.conditions));
    let (stalled_reason, stalled_message) =
        stalled.clone().unwrap_or_else(|| (super::fallback::reason::FLIP_BUDGET_EXHAUSTED.to_string(), String::new()));
    desired.push(Desired::new(STALLED, stalled.is_some(), stalled_reason, stalled_message));

    ColonyServerStatus {
        observed_generation: o.generation,
        conditions: merge(&prev.conditions, &desired, o.generation, o.now),
        rollout: crate::runtime::rollout::next_status(o.rollout, &prev.rollout),
        health: health_status,
        slo: slo_status,
        fallback: Some(fallback),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::colonyserver::fallback::{self, FallbackInputs, FallbackPolicy, FallbackState};
    use crate::runtime::conditions::{find, is_true};
    use chrono::TimeZone;

    fn observed<'a>(
        snapshot: &'a Snapshot,
        decision: &'a FallbackDecision,
        problem: Option<(String, String)>,
    ) -> Observed<'a> {
        Observed {
            generation: Some(1),
            previous: None,
            snapshot,
            decision,
            override_: FallbackOverride::Auto,
            workload: Workload::Unmanaged,
            rollout: None,
            problem,
            notifications: Vec::new(),
            now: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        }
    }

    #[test]
    fn an_object_in_the_way_stalls_the_server_naming_it() {
        let snapshot = Snapshot::default();
        let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let decision =
            fallback::decide(&FallbackPolicy::default(), &FallbackInputs::default(), &Default::default(), now);
        let msg = "ConfigMap flags exists and is not managed by this ColonyServer; rename spec.fallback.configMapName or delete it";
        let status = compute(&observed(&snapshot, &decision, Some(("ConfigMapNotOwned".into(), msg.into()))));
        let stalled = find(&status.conditions, STALLED).expect("Stalled");
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str(), stalled.message.as_str()),
            ("True", "ConfigMapNotOwned", msg)
        );
        let ready = find(&status.conditions, READY).expect("Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "ConfigMapNotOwned"));

        let fine = compute(&observed(&snapshot, &decision, None));
        assert!(find(&fine.conditions, STALLED).is_none(), "Stalled appears only when true");
    }

    fn decision(stalled: bool) -> FallbackDecision {
        FallbackDecision {
            active: stalled,
            reason: if stalled { "FlipBudgetExhausted" } else { "Healthy" }.into(),
            message: "m".into(),
            flipped: false,
            new_state: FallbackState { stalled, ..Default::default() },
            requeue_after: None,
        }
    }

    /// Every workload state × health verdict × valid or not × flip budget spent or not, each
    /// from every previous Reconciling/Stalled: never Reconciling and Stalled at once, and
    /// Stalled exactly when the spec is invalid or the budget is spent.
    #[test]
    fn never_reconciling_and_stalled_at_once() {
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let workloads = [
            Workload::Unmanaged,
            Workload::Progressing("1/2".into()),
            Workload::Available,
            Workload::Failed("deadline".into()),
        ];
        let mut previous_states = vec![None];
        for healthy in [None, Some(true), Some(false)] {
            for workload in &workloads {
                for invalid in [None, Some("spec.health.interval: bad".to_string())] {
                    for budget_spent in [false, true] {
                        for previous in previous_states.clone() {
                            let mut snapshot = Snapshot::default();
                            snapshot.health.healthy = healthy;
                            let d = decision(budget_spent);
                            let s = compute(&Observed {
                                generation: Some(1),
                                previous: previous.as_ref(),
                                snapshot: &snapshot,
                                decision: &d,
                                override_: FallbackOverride::Auto,
                                workload: workload.clone(),
                                rollout: None,
                                problem: invalid.clone().map(|m| ("InvalidSpec".to_string(), m)),
                                notifications: Vec::new(),
                                now,
                            });
                            let (r, st) = (is_true(&s.conditions, RECONCILING), is_true(&s.conditions, STALLED));
                            let case = format!("{healthy:?} {workload:?} {invalid:?} spent={budget_spent}");
                            assert!(!(r && st), "both Reconciling and Stalled: {case}");
                            assert_eq!(st, invalid.is_some() || budget_spent, "Stalled: {case}");
                            if !st && (healthy.is_none() || matches!(workload, Workload::Progressing(_))) {
                                assert!(r, "Reconciling while probing or rolling out: {case}");
                            }
                            previous_states.push(Some(s));
                        }
                        previous_states.truncate(4);
                    }
                }
            }
        }
    }
}
