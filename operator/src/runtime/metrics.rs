//! Prometheus metrics, one registry for the process, served on `/metrics`.
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub namespace: String,
    pub name: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlipLabels {
    pub namespace: String,
    pub name: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestartLabels {
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EscalationLabels {
    pub namespace: String,
    pub name: String,
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub namespace: String,
    pub name: String,
    pub target: String,
    pub action: String,
    pub result: String,
}

// Every value the per-object families take besides namespace and name: a deleted object's
// series are found by these (a family cannot be listed). Tests below keep them complete.
/// `result` of `health_probes`.
pub const PROBE_RESULTS: [&str; 2] = ["success", "failure"];
/// `state` of `fallback_flips`.
pub const FLIP_STATES: [&str; 2] = ["on", "off"];
/// `reason` of `finance_bee_restarts` (`RestartReason::as_str`).
pub const RESTART_REASONS: [&str; 4] = ["Failed", "Evicted", "CrashLoop", "Stuck"];
/// `action` of the escalation families (`Transition::as_str`).
pub const ESCALATION_ACTIONS: [&str; 2] = ["trigger", "resolve"];
/// `target` of `finance_bee_escalation_deliveries` (`Target::label`).
pub const DELIVERY_TARGETS: [&str; 2] = ["webhook", "pagerduty"];
/// `result` of `finance_bee_escalation_deliveries`.
pub const DELIVERY_RESULTS: [&str; 2] = ["success", "failure"];

fn latency_histogram() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    pub reconciliations: Family<ControllerLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    pub leader: Gauge,
    pub health_probes: Family<ProbeLabels, Counter>,
    pub health_probe_duration: Family<ObjectLabels, Histogram>,
    pub fallback_flips: Family<FlipLabels, Counter>,
    pub fallback_active: Family<ObjectLabels, Gauge>,
    pub notifications_failed: Family<ObjectLabels, Counter>,
    pub finance_bee_restarts: Family<RestartLabels, Counter>,
    pub finance_bee_escalations: Family<EscalationLabels, Counter>,
    pub finance_bee_escalated: Family<ObjectLabels, Gauge>,
    pub finance_bee_escalation_deliveries: Family<DeliveryLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("colony_operator");
        let reconciliations = Family::<ControllerLabels, Counter>::default();
        registry.register("reconciliations", "Reconciliations started, by controller", reconciliations.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, by controller and error label",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Family::<ControllerLabels, Histogram>::new_with_constructor(latency_histogram);
        registry.register("reconcile_duration_seconds", "Time spent in one reconciliation", reconcile_duration.clone());
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process holds the leader lease (or runs without leader election)",
            leader.clone(),
        );
        let health_probes = Family::<ProbeLabels, Counter>::default();
        registry.register("health_probes", "Health probes of ColonyOS servers, by result", health_probes.clone());
        let health_probe_duration = Family::<ObjectLabels, Histogram>::new_with_constructor(latency_histogram);
        registry.register("health_probe_duration_seconds", "Latency of health probes", health_probe_duration.clone());
        let fallback_flips = Family::<FlipLabels, Counter>::default();
        registry.register(
            "fallback_flips",
            "Flips of the direct-processing fallback, by new state",
            fallback_flips.clone(),
        );
        let fallback_active = Family::<ObjectLabels, Gauge>::default();
        registry.register("fallback_active", "1 while the fallback of a ColonyServer is on", fallback_active.clone());
        let notifications_failed = Family::<ObjectLabels, Counter>::default();
        registry.register(
            "notifications_failed",
            "Notification deliveries that failed after all retries",
            notifications_failed.clone(),
        );
        let finance_bee_restarts = Family::<RestartLabels, Counter>::default();
        registry.register(
            "finance_bee_restarts",
            "FinanceBee pods deleted by the operator to restart them, by reason",
            finance_bee_restarts.clone(),
        );
        let finance_bee_escalations = Family::<EscalationLabels, Counter>::default();
        registry.register(
            "finance_bee_escalations",
            "FinanceBee escalations, by action (trigger, resolve)",
            finance_bee_escalations.clone(),
        );
        let finance_bee_escalated = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "finance_bee_escalated",
            "1 while a FinanceBee's unavailability is escalated",
            finance_bee_escalated.clone(),
        );
        let finance_bee_escalation_deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "finance_bee_escalation_deliveries",
            "Escalation notifications, by target, action and result (after retries)",
            finance_bee_escalation_deliveries.clone(),
        );
        Self {
            registry,
            reconciliations,
            reconcile_errors,
            reconcile_duration,
            leader,
            health_probes,
            health_probe_duration,
            fallback_flips,
            fallback_active,
            notifications_failed,
            finance_bee_restarts,
            finance_bee_escalations,
            finance_bee_escalated,
            finance_bee_escalation_deliveries,
        }
    }
}

impl Metrics {
    /// Starts timing one reconciliation; the duration is observed when the guard drops.
    pub fn reconcile_started(&self, controller: &str) -> ReconcileTimer {
        let labels = ControllerLabels { controller: controller.to_string() };
        self.reconciliations.get_or_create(&labels).inc();
        ReconcileTimer {
            histogram: self.reconcile_duration.get_or_create(&labels).clone(),
            start: std::time::Instant::now(),
        }
    }

    pub fn reconcile_failed(&self, controller: &str, error_label: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels { controller: controller.to_string(), error: error_label.to_string() })
            .inc();
    }

    pub fn probe_observed(&self, namespace: &str, name: &str, healthy: bool, latency: Duration) {
        let result = if healthy { "success" } else { "failure" };
        self.health_probes
            .get_or_create(&ProbeLabels { namespace: namespace.into(), name: name.into(), result: result.into() })
            .inc();
        self.health_probe_duration
            .get_or_create(&ObjectLabels { namespace: namespace.into(), name: name.into() })
            .observe(latency.as_secs_f64());
    }

    /// Drops every series of the deleted ColonyServer `namespace/name`: a gone object must
    /// not be exported forever (a dashboard would show a fallback that no longer exists).
    pub fn forget_server(&self, namespace: &str, name: &str) {
        let object = ObjectLabels { namespace: namespace.into(), name: name.into() };
        for result in PROBE_RESULTS {
            self.health_probes.remove(&ProbeLabels {
                namespace: namespace.into(),
                name: name.into(),
                result: result.into(),
            });
        }
        self.health_probe_duration.remove(&object);
        for state in FLIP_STATES {
            self.fallback_flips.remove(&FlipLabels {
                namespace: namespace.into(),
                name: name.into(),
                state: state.into(),
            });
        }
        self.fallback_active.remove(&object);
        self.notifications_failed.remove(&object);
    }

    /// Drops every series of the deleted FinanceBee `namespace/name`.
    pub fn forget_bee(&self, namespace: &str, name: &str) {
        let object = ObjectLabels { namespace: namespace.into(), name: name.into() };
        for reason in RESTART_REASONS {
            self.finance_bee_restarts.remove(&RestartLabels {
                namespace: namespace.into(),
                name: name.into(),
                reason: reason.into(),
            });
        }
        for action in ESCALATION_ACTIONS {
            self.finance_bee_escalations.remove(&EscalationLabels {
                namespace: namespace.into(),
                name: name.into(),
                action: action.into(),
            });
            for target in DELIVERY_TARGETS {
                for result in DELIVERY_RESULTS {
                    self.finance_bee_escalation_deliveries.remove(&DeliveryLabels {
                        namespace: namespace.into(),
                        name: name.into(),
                        target: target.into(),
                        action: action.into(),
                        result: result.into(),
                    });
                }
            }
        }
        self.finance_bee_escalated.remove(&object);
        self.notifications_failed.remove(&object);
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

pub struct ReconcileTimer {
    histogram: Histogram,
    start: std::time::Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_reconcile_metrics_per_controller() {
        let m = Metrics::default();
        drop(m.reconcile_started("colonyserver"));
        m.reconcile_failed("colonyserver", "kube");
        let text = m.render();
        assert!(text.contains(r#"colony_operator_reconciliations_total{controller="colonyserver"} 1"#), "{text}");
        assert!(
            text.contains(r#"colony_operator_reconcile_errors_total{controller="colonyserver",error="kube"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"colony_operator_reconcile_duration_seconds_count{controller="colonyserver"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    /// Every series a ColonyServer and a FinanceBee can have, with every label value the
    /// code uses.
    fn populate(m: &Metrics, ns: &str, name: &str) {
        use crate::controllers::financebee::escalation::{Target, Transition};
        use crate::controllers::financebee::restart::RestartReason;
        let object = ObjectLabels { namespace: ns.into(), name: name.into() };
        for healthy in [true, false] {
            m.probe_observed(ns, name, healthy, Duration::from_millis(5));
        }
        for state in FLIP_STATES {
            m.fallback_flips
                .get_or_create(&FlipLabels { namespace: ns.into(), name: name.into(), state: state.into() })
                .inc();
        }
        m.fallback_active.get_or_create(&object).set(1);
        m.notifications_failed.get_or_create(&object).inc();
        for reason in [RestartReason::Failed, RestartReason::Evicted, RestartReason::CrashLoop, RestartReason::Stuck] {
            let labels = RestartLabels { namespace: ns.into(), name: name.into(), reason: reason.as_str().into() };
            m.finance_bee_restarts.get_or_create(&labels).inc();
        }
        for action in [Transition::Trigger, Transition::Resolve] {
            let labels = EscalationLabels { namespace: ns.into(), name: name.into(), action: action.as_str().into() };
            m.finance_bee_escalations.get_or_create(&labels).inc();
            for target in [Target::Webhook, Target::PagerDuty] {
                for result in DELIVERY_RESULTS {
                    let labels = DeliveryLabels {
                        namespace: ns.into(),
                        name: name.into(),
                        target: target.label().into(),
                        action: action.as_str().into(),
                        result: result.into(),
                    };
                    m.finance_bee_escalation_deliveries.get_or_create(&labels).inc();
                }
            }
        }
        m.finance_bee_escalated.get_or_create(&object).set(1);
    }

    fn series_of(text: &str, ns: &str, name: &str) -> Vec<String> {
        let needle = format!("namespace=\"{ns}\",name=\"{name}\"");
        text.lines().filter(|l| l.contains(&needle)).map(String::from).collect()
    }

    #[test]
    fn forgetting_a_deleted_object_drops_all_its_series_and_only_its() {
        let m = Metrics::default();
        populate(&m, "ns", "gone");
        populate(&m, "ns", "kept");
        assert!(series_of(&m.render(), "ns", "gone").len() > 20);
        m.forget_server("ns", "gone");
        m.forget_bee("ns", "gone");
        let text = m.render();
        assert_eq!(series_of(&text, "ns", "gone"), Vec::<String>::new());
        assert_eq!(
            series_of(&text, "ns", "kept").len(),
            series_of(
                &{
                    let fresh = Metrics::default();
                    populate(&fresh, "ns", "kept");
                    fresh.render()
                },
                "ns",
                "kept"
            )
            .len(),
            "the other object's series stay"
        );
    }
}
