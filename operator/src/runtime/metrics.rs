//! Prometheus metrics, one registry for the process, served on `/metrics`.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use std::sync::atomic::AtomicU64;

use super::api_time::ApiWait;
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

impl ObjectLabels {
    /// The labels of `obj`'s series.
    pub fn of(obj: &impl kube::ResourceExt) -> Self {
        Self { namespace: obj.namespace().unwrap_or_default(), name: obj.name_any() }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SloStateLabels {
    pub namespace: String,
    pub name: String,
    pub state: String,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    pub controller: String,
    pub namespace: String,
    pub name: String,
    /// The condition's type (`type` is a Rust keyword).
    pub condition: String,
    pub reason: String,
}

/// A condition series of one object: its type and reason.
type ConditionKey = (String, String);

// Every value the per-object families take besides namespace and name: a deleted object's
// series are found by these (a family cannot be listed). Tests below keep them complete.
/// `result` of `health_probes`.
pub const PROBE_RESULTS: [&str; 2] = ["success", "failure"];
/// `result` of `slo_samples`.
pub const SLO_SAMPLE_RESULTS: [&str; 2] = ["success", "failure"];
/// `state` of `slo_processes`.
pub const SLO_PROCESS_STATES: [&str; 4] = ["waiting", "running", "successful", "failed"];
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

/// The figures of one successful SLO sample, as they are exported: the processes in each of
/// [`SLO_PROCESS_STATES`] (in that order), the queue depth, and the completion and error rates.
/// `None` is unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SloFigures {
    pub processes: [Option<f64>; 4],
    pub queue_depth: Option<f64>,
    pub completion_rate: Option<f64>,
    pub error_rate: Option<f64>,
}

fn latency_histogram() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

/// A reconcile's duration: finer below 5 ms, where most reconciles that make no request end
/// (with 5 ms as the first bucket, a p50 of them read as about 3 ms whatever they took).
/// Per controller only, so the extra buckets cost a few series.
fn reconcile_histogram() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    pub reconciliations: Family<ControllerLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    pub reconcile_self_duration: Family<ControllerLabels, Histogram>,
    pub reconcile_api_request_duration: Family<ControllerLabels, Histogram>,
    pub leader: Gauge,
    pub health_probes: Family<ProbeLabels, Counter>,
    pub health_probe_duration: Family<ObjectLabels, Histogram>,
    pub slo_samples: Family<ProbeLabels, Counter>,
    pub slo_sample_duration: Family<ObjectLabels, Histogram>,
    pub slo_processes: Family<SloStateLabels, Gauge>,
    pub slo_queue_depth: Family<ObjectLabels, Gauge>,
    pub slo_completion_rate: Family<ObjectLabels, Gauge<f64, AtomicU64>>,
    pub slo_error_rate: Family<ObjectLabels, Gauge<f64, AtomicU64>>,
    pub fallback_flips: Family<FlipLabels, Counter>,
    pub fallback_active: Family<ObjectLabels, Gauge>,
    pub notifications_failed: Family<ObjectLabels, Counter>,
    pub finance_bee_restarts: Family<RestartLabels, Counter>,
    pub finance_bee_escalations: Family<EscalationLabels, Counter>,
    pub finance_bee_escalated: Family<ObjectLabels, Gauge>,
    pub finance_bee_escalation_deliveries: Family<DeliveryLabels, Counter>,
    pub conditions: Family<ConditionLabels, Gauge>,
    pub key_rotation_next: Family<ObjectLabels, Gauge<f64, AtomicU64>>,
    /// The condition series each object has now (controller, namespace, name), so that a
    /// condition that went away or changed its reason is removed, not kept at its old value.
    exported_conditions: Mutex<HashMap<(String, String, String), Vec<ConditionKey>>>,
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
        let reconcile_duration = Family::<ControllerLabels, Histogram>::new_with_constructor(reconcile_histogram);
        registry.register("reconcile_duration_seconds", "Time spent in one reconciliation", reconcile_duration.clone());
        let reconcile_self_duration = Family::<ControllerLabels, Histogram>::new_with_constructor(reconcile_histogram);
        registry.register(
            "reconcile_self_duration_seconds",
            "Time of one reconciliation outside its requests to the Kubernetes API server",
            reconcile_self_duration.clone(),
        );
        let reconcile_api_request_duration =
            Family::<ControllerLabels, Histogram>::new_with_constructor(reconcile_histogram);
        registry.register(
            "reconcile_api_request_duration_seconds",
            "Time of each request a reconciliation makes to the Kubernetes API server, as the operator waits for it (from sending to the response's headers, connection and client queueing included)",
            reconcile_api_request_duration.clone(),
        );
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
        let slo_samples = Family::<ProbeLabels, Counter>::default();
        registry.register(
            "slo_samples",
            "SLO samples of ColonyOS servers, by result (a refused, empty or undecodable reply is a failure)",
            slo_samples.clone(),
        );
        let slo_sample_duration = Family::<ObjectLabels, Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "slo_sample_duration_seconds",
            "Latency of one SLO sample (the statistics call or the metrics scrape)",
            slo_sample_duration.clone(),
        );
        let slo_processes = Family::<SloStateLabels, Gauge>::default();
        registry.register(
            "slo_processes",
            "Process counts of the last SLO sample, by state (waiting and running now; successful and failed lifetime totals)",
            slo_processes.clone(),
        );
        let slo_queue_depth = Family::<ObjectLabels, Gauge>::default();
        registry.register("slo_queue_depth", "Waiting processes in the last SLO sample", slo_queue_depth.clone());
        let slo_completion_rate = Family::<ObjectLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "slo_completion_rate",
            "Share of closed processes that succeeded between the last two SLO samples (absent: unknown)",
            slo_completion_rate.clone(),
        );
        let slo_error_rate = Family::<ObjectLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "slo_error_rate",
            "Share of closed processes that failed between the last two SLO samples (absent: unknown)",
            slo_error_rate.clone(),
        );
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
        let conditions = Family::<ConditionLabels, Gauge>::default();
        registry.register(
            "condition",
            "Status conditions of the custom resources: 1 while True, 0 while False, by controller, object, condition and reason (absent: the object does not have that condition now)",
            conditions.clone(),
        );
        let key_rotation_next = Family::<ObjectLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "key_rotation_next_timestamp_seconds",
            "When the next rotation of a KeyRotation is due (status.nextRotationTime), in Unix seconds",
            key_rotation_next.clone(),
        );
        Self {
            registry,
            conditions,
            key_rotation_next,
            exported_conditions: Mutex::new(HashMap::new()),
            reconciliations,
            reconcile_errors,
            reconcile_duration,
            reconcile_self_duration,
            reconcile_api_request_duration,
            leader,
            health_probes,
            health_probe_duration,
            slo_samples,
            slo_sample_duration,
            slo_processes,
            slo_queue_depth,
            slo_completion_rate,
            slo_error_rate,
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
            self_histogram: self.reconcile_self_duration.get_or_create(&labels).clone(),
            api_wait: ApiWait::observing(self.reconcile_api_request_duration.get_or_create(&labels).clone()),
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

    /// One SLO sample of server `namespace/name`: its latency, and its figures when it
    /// succeeded. A figure that is unknown (a failed sample, a rate without closed processes
    /// or across a shrink) is removed rather than exported as a number.
    pub fn slo_sampled(&self, namespace: &str, name: &str, latency: Duration, figures: Option<&SloFigures>) {
        let object = ObjectLabels { namespace: namespace.into(), name: name.into() };
        let result = if figures.is_some() { "success" } else { "failure" };
        self.slo_samples
            .get_or_create(&ProbeLabels { namespace: namespace.into(), name: name.into(), result: result.into() })
            .inc();
        self.slo_sample_duration.get_or_create(&object).observe(latency.as_secs_f64());
        let figures = figures.copied().unwrap_or_default();
        for (state, value) in SLO_PROCESS_STATES.into_iter().zip(figures.processes) {
            let labels = SloStateLabels { namespace: namespace.into(), name: name.into(), state: state.into() };
            match value {
                Some(v) => {
                    self.slo_processes.get_or_create(&labels).set(v as i64);
                }
                None => {
                    self.slo_processes.remove(&labels);
                }
            }
        }
        match figures.queue_depth {
            Some(q) => {
                self.slo_queue_depth.get_or_create(&object).set(q as i64);
            }
            None => {
                self.slo_queue_depth.remove(&object);
            }
        }
        for (family, value) in
            [(&self.slo_completion_rate, figures.completion_rate), (&self.slo_error_rate, figures.error_rate)]
        {
            match value {
                Some(v) => {
                    family.get_or_create(&object).set(v);
                }
                None => {
                    family.remove(&object);
                }
            }
        }
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
        self.forget_slo(namespace, name);
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

    /// Drops the SLO series of server `namespace/name` (deleted, or its SLO removed).
    pub fn forget_slo(&self, namespace: &str, name: &str) {
        let object = ObjectLabels { namespace: namespace.into(), name: name.into() };
        for result in SLO_SAMPLE_RESULTS {
            self.slo_samples.remove(&ProbeLabels {
                namespace: namespace.into(),
                name: name.into(),
                result: result.into(),
            });
        }
        self.slo_sample_duration.remove(&object);
        for state in SLO_PROCESS_STATES {
            self.slo_processes.remove(&SloStateLabels {
                namespace: namespace.into(),
                name: name.into(),
                state: state.into(),
            });
        }
        self.slo_queue_depth.remove(&object);
        self.slo_completion_rate.remove(&object);
        self.slo_error_rate.remove(&object);
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

    /// The status conditions the reconcile of `controller` computed for `namespace/name` (on
    /// every reconcile, written or not: a restarted operator exports them again). Series of
    /// conditions the object no longer has, or had with another reason, are removed.
    pub fn conditions_observed(&self, controller: &str, namespace: &str, name: &str, conditions: &[Condition]) {
        let labels = |(condition, reason): &ConditionKey| ConditionLabels {
            controller: controller.into(),
            namespace: namespace.into(),
            name: name.into(),
            condition: condition.clone(),
            reason: reason.clone(),
        };
        let now: Vec<(ConditionKey, i64)> =
            conditions.iter().map(|c| ((c.type_.clone(), c.reason.clone()), i64::from(c.status == "True"))).collect();
        let mut exported = self.exported_conditions.lock().expect("condition map poisoned");
        let before = exported
            .insert((controller.into(), namespace.into(), name.into()), now.iter().map(|(k, _)| k.clone()).collect())
            .unwrap_or_default();
        for gone in before.iter().filter(|k| !now.iter().any(|(n, _)| n == *k)) {
            self.conditions.remove(&labels(gone));
        }
        for (key, value) in &now {
            self.conditions.get_or_create(&labels(key)).set(*value);
        }
    }

    /// Drops the condition series of the deleted object `namespace/name` of `controller`.
    pub fn forget_conditions(&self, controller: &str, namespace: &str, name: &str) {
        let mut exported = self.exported_conditions.lock().expect("condition map poisoned");
        for (condition, reason) in
            exported.remove(&(controller.into(), namespace.into(), name.into())).unwrap_or_default()
        {
            self.conditions.remove(&ConditionLabels {
                controller: controller.into(),
                namespace: namespace.into(),
                name: name.into(),
                condition,
                reason,
            });
        }
    }

    /// The next rotation time of KeyRotation `namespace/name` (None: unknown, not exported).
    pub fn key_rotation_scheduled(&self, namespace: &str, name: &str, next: Option<chrono::DateTime<chrono::Utc>>) {
        let object = ObjectLabels { namespace: namespace.into(), name: name.into() };
        match next {
            Some(t) => {
                self.key_rotation_next.get_or_create(&object).set(t.timestamp_millis() as f64 / 1000.0);
            }
            None => {
                self.key_rotation_next.remove(&object);
            }
        }
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Observes a reconcile's duration, and its own time (the duration less the time its API
/// requests took, gathered in [`ReconcileTimer::api_wait`]), when dropped.
pub struct ReconcileTimer {
    histogram: Histogram,
    self_histogram: Histogram,
    api_wait: ApiWait,
    start: std::time::Instant,
}

impl ReconcileTimer {
    /// Where the reconcile's API requests add their time (see [`super::api_time::scope`]).
    pub fn api_wait(&self) -> &ApiWait {
        &self.api_wait
    }
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        let took = self.start.elapsed();
        self.histogram.observe(took.as_secs_f64());
        self.self_histogram.observe(took.saturating_sub(self.api_wait.get()).as_secs_f64());
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

    #[test]
    fn reconcile_durations_below_a_millisecond_keep_their_bucket() {
        let m = Metrics::default();
        let labels = ControllerLabels { controller: "financebee".into() };
        m.reconcile_duration.get_or_create(&labels).observe(0.0003);
        m.reconcile_self_duration.get_or_create(&labels).observe(0.002);
        let text = m.render();
        for line in [
            r#"colony_operator_reconcile_duration_seconds_bucket{le="0.0005",controller="financebee"} 1"#,
            r#"colony_operator_reconcile_self_duration_seconds_bucket{le="0.001",controller="financebee"} 0"#,
            r#"colony_operator_reconcile_self_duration_seconds_bucket{le="0.0025",controller="financebee"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
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
        let figures = SloFigures {
            processes: [Some(1.0), Some(0.0), Some(3.0), Some(1.0)],
            queue_depth: Some(1.0),
            completion_rate: Some(0.75),
            error_rate: Some(0.25),
        };
        m.slo_sampled(ns, name, Duration::from_millis(3), None);
        m.slo_sampled(ns, name, Duration::from_millis(3), Some(&figures));
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

    #[test]
    fn slo_figures_per_server_and_unknown_is_absent() {
        let m = Metrics::default();
        let figures = SloFigures {
            processes: [Some(6.0), Some(1.0), Some(4.0), Some(2.0)],
            queue_depth: Some(6.0),
            completion_rate: Some(2.0 / 3.0),
            error_rate: Some(1.0 / 3.0),
        };
        m.slo_sampled("ns", "srv", Duration::from_millis(4), Some(&figures));
        let text = m.render();
        for line in [
            r#"colony_operator_slo_queue_depth{namespace="ns",name="srv"} 6"#,
            r#"colony_operator_slo_processes{namespace="ns",name="srv",state="failed"} 2"#,
            r#"colony_operator_slo_samples_total{namespace="ns",name="srv",result="success"} 1"#,
            r#"colony_operator_slo_sample_duration_seconds_count{namespace="ns",name="srv"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(text.contains(r#"colony_operator_slo_error_rate{namespace="ns",name="srv"} 0.333"#), "{text}");
        // A failed sample: the figures are unknown, not zero.
        m.slo_sampled("ns", "srv", Duration::from_millis(4), None);
        let text = m.render();
        assert!(text.contains(r#"colony_operator_slo_samples_total{namespace="ns",name="srv",result="failure"} 1"#));
        for family in ["slo_queue_depth", "slo_error_rate", "slo_completion_rate", "slo_processes"] {
            assert!(!text.contains(&format!("colony_operator_{family}{{")), "{family} absent: {text}");
        }
    }

    fn condition(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: "m".into(),
            observed_generation: None,
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        }
    }

    #[test]
    fn conditions_are_exported_and_a_gone_condition_or_reason_is_removed() {
        let m = Metrics::default();
        m.conditions_observed(
            "maintenancewindow",
            "ns",
            "mw",
            &[condition("Ready", "False", "VerificationFailed"), condition("Stalled", "True", "VerificationFailed")],
        );
        let text = m.render();
        for line in [
            r#"colony_operator_condition{controller="maintenancewindow",namespace="ns",name="mw",condition="Ready",reason="VerificationFailed"} 0"#,
            r#"colony_operator_condition{controller="maintenancewindow",namespace="ns",name="mw",condition="Stalled",reason="VerificationFailed"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        // Resumed: Stalled is gone, Ready is True with another reason.
        m.conditions_observed("maintenancewindow", "ns", "mw", &[condition("Ready", "True", "Completed")]);
        let text = m.render();
        assert!(!text.contains("VerificationFailed"), "{text}");
        assert!(!text.contains(r#"condition="Stalled""#), "{text}");
        assert!(
            text.contains(r#"colony_operator_condition{controller="maintenancewindow",namespace="ns",name="mw",condition="Ready",reason="Completed"} 1"#),
            "{text}"
        );
        m.conditions_observed("keyrotation", "ns", "mw", &[condition("Ready", "True", "Rotated")]);
        m.forget_conditions("maintenancewindow", "ns", "mw");
        let text = m.render();
        assert!(!text.contains(r#"controller="maintenancewindow""#), "{text}");
        assert!(
            text.contains(r#"controller="keyrotation""#),
            "another controller's object of the same name stays: {text}"
        );
    }

    #[test]
    fn next_rotation_is_unix_seconds_and_unknown_is_absent() {
        let m = Metrics::default();
        let t = chrono::DateTime::from_timestamp(1_800_000_000, 500_000_000).unwrap();
        m.key_rotation_scheduled("ns", "kr", Some(t));
        let text = m.render();
        assert!(
            text.contains(
                r#"colony_operator_key_rotation_next_timestamp_seconds{namespace="ns",name="kr"} 1800000000.5"#
            ),
            "{text}"
        );
        m.key_rotation_scheduled("ns", "kr", None);
        assert!(!m.render().contains("key_rotation_next_timestamp_seconds{"));
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
