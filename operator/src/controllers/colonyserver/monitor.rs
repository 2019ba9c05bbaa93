//! One background task per ColonyServer probes its health (and scrapes its SLO metrics) on
//! its own interval. The tasks keep their counters in memory and wake the reconciler only
//! when a verdict changes, so a healthy server costs probes but no API calls.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::api::ColonyServer;
use crate::health::{
    ApiCheck, BreachTransition, HealthCounter, HealthThresholds, Prober, SloBreachTracker, SloEvaluation, SloLimits,
    SloSample, evaluate, parse_prometheus_text,
};
use crate::runtime::metrics::Metrics;

/// Everything a probe task needs; a change restarts the task with fresh counters.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeConfig {
    pub health_url: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub thresholds: HealthThresholds,
    pub slo: Option<SloConfig>,
    /// `spec.health.api`: run after each successful HTTP probe.
    pub api: Option<ApiCheck>,
    /// A private CA (PEM) to trust (`spec.tls.caRef`).
    pub ca: Option<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SloConfig {
    pub metrics_url: String,
    pub limits: SloLimits,
    pub for_: chrono::TimeDelta,
}

/// What the reconciler reads: the health verdict and the SLO breach state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub health: HealthCounter,
    pub probes: u64,
    pub slo: SloBreachTracker,
    /// The evaluation at the last breach transition (what status reports).
    pub slo_at_transition: Option<SloEvaluation>,
}

struct Entry {
    config: ProbeConfig,
    state: Arc<Mutex<Snapshot>>,
    task: JoinHandle<()>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Monitor {
    prober: Prober,
    metrics: Arc<Metrics>,
    wake: mpsc::UnboundedSender<ObjectRef<ColonyServer>>,
    servers: Store<ColonyServer>,
    entries: Mutex<HashMap<ObjectRef<ColonyServer>, Entry>>,
}

impl Monitor {
    /// `servers` is the controller's cache: a task stops once its server is gone.
    pub fn new(
        prober: Prober,
        metrics: Arc<Metrics>,
        wake: mpsc::UnboundedSender<ObjectRef<ColonyServer>>,
        servers: Store<ColonyServer>,
    ) -> Self {
        Self { prober, metrics, wake, servers, entries: Mutex::new(HashMap::new()) }
    }

    /// Makes sure a task probes `key` with `config`, and returns what it has seen so far.
    pub fn ensure(&self, key: ObjectRef<ColonyServer>, config: ProbeConfig) -> Snapshot {
        let mut entries = self.entries.lock().expect("monitor poisoned");
        if let Some(e) = entries.get(&key)
            && e.config == config
            && !e.task.is_finished()
        {
            return e.state.lock().expect("snapshot poisoned").clone();
        }
        let state =
            Arc::new(Mutex::new(Snapshot { health: HealthCounter::new(config.thresholds), ..Default::default() }));
        // The CA was checked by the reconciler; a bundle that still fails leaves the public roots.
        let prober = match &config.ca {
            Some(pem) => Prober::with_ca(Some(pem)).unwrap_or_else(|_| self.prober.clone()),
            None => self.prober.clone(),
        };
        let task = tokio::spawn(probe_loop(
            key.clone(),
            config.clone(),
            state.clone(),
            prober,
            self.metrics.clone(),
            self.wake.clone(),
            self.servers.clone(),
        ));
        entries.insert(key, Entry { config, state: state.clone(), task });

        state.lock().expect("snapshot poisoned").clone()
    }

    pub fn remove(&self, key: &ObjectRef<ColonyServer>) {
        self.entries.lock().expect("monitor poisoned").remove(key);
    }

    /// How many servers have a probe task.
    pub fn len(&self) -> usize {
        self.entries.lock().expect("monitor poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

async fn probe_loop(
    key: ObjectRef<ColonyServer>,
    config: ProbeConfig,
    state: Arc<Mutex<Snapshot>>,
    prober: Prober,
    metrics: Arc<Metrics>,
    wake: mpsc::UnboundedSender<ObjectRef<ColonyServer>>,
    servers: Store<ColonyServer>,
) {
    let namespace = key.namespace.clone().unwrap_or_default();
    let mut previous_sample: Option<SloSample> = None;
    // The API check is a signed POST: its own client, which never follows a redirect.
    let rpc_http = crate::runtime::http::client(crate::runtime::http::Purpose::Rpc, config.ca.as_deref())
        .unwrap_or_else(|_| crate::runtime::http::default_client(crate::runtime::http::Purpose::Rpc));
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if servers.get(&key).is_none() {
            tracing::debug!(server = %key.name, "server deleted; probing stops");
            return;
        }
        let http = prober.probe(&config.health_url, config.timeout).await;
        let outcome = match &config.api {
            Some(check) if http.healthy => {
                let api = check.run(rpc_http.clone(), config.timeout).await;
                crate::health::api::combine(http, Some(api))
            }
            _ => http,
        };
        if servers.get(&key).is_none() {
            // Deleted while the probe ran: its series are already dropped, keep them so.
            return;
        }
        metrics.probe_observed(&namespace, &key.name, outcome.healthy, outcome.latency);
        let now: DateTime<Utc> = Utc::now();
        let mut changed = {
            let mut s = state.lock().expect("snapshot poisoned");
            s.probes += 1;
            s.health.record(outcome.healthy, outcome.error.clone(), now).changed()
        };
        if let Some(slo) = &config.slo {
            let sample = match prober.fetch_text(&slo.metrics_url, config.timeout, 1 << 20).await {
                Ok(text) => Some(SloSample { at: now, counts: parse_prometheus_text(&text) }),
                Err(e) => {
                    tracing::debug!(server = %key.name, error = %e, "SLO scrape failed");
                    None
                }
            };
            if let Some(sample) = sample {
                let eval = evaluate(previous_sample.as_ref(), &sample, &slo.limits);
                let mut s = state.lock().expect("snapshot poisoned");
                let t = s.slo.observe(&eval, now, slo.for_);
                if t != BreachTransition::Unchanged {
                    s.slo_at_transition = Some(eval);
                    changed = true;
                }
                previous_sample = Some(sample);
            }
        }
        if changed && wake.send(key.clone()).is_err() {
            return;
        }
    }
}
