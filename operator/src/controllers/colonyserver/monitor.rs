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
use tracing::Instrument;

use super::health::{
    ApiCheck, BreachTransition, HealthCounter, HealthThresholds, ProbeOutcome, Prober, ProcessCounts, SloBreachTracker,
    SloEvaluation, SloLimits, SloSample, counts_from_statistics, evaluate, parse_prometheus_text,
};
use crate::api::ColonyServer;
use crate::runtime::metrics::{Metrics, SloFigures};

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
    /// A private CA (PEM) to trust (`spec.tls.caRef`), or why the one it names could not be
    /// loaded (missing, or not PEM): every probe and SLO sample then fails with it.
    pub ca: Result<Option<Vec<u8>>, String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SloConfig {
    pub source: SloSource,
    /// Time between two samples (`spec.slo.interval`, else the health interval).
    pub interval: Duration,
    pub limits: SloLimits,
    pub for_: chrono::TimeDelta,
}

/// Where the SLO figures come from (`spec.slo`: exactly one of them).
#[derive(Clone, Debug, PartialEq)]
pub enum SloSource {
    /// `metricsURL`: Prometheus text of a `colonies monitor`.
    Metrics(String),
    /// `statistics`: the server's own signed `getcolonystatsmsg`.
    Statistics(ApiCheck),
}

/// What the reconciler reads: the health verdict and the SLO breach state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub health: HealthCounter,
    pub probes: u64,
    pub slo: SloBreachTracker,
    /// The evaluation at the last breach transition (what status reports).
    pub slo_at_transition: Option<SloEvaluation>,
    /// SLO samples taken, failed ones included.
    pub slo_samples: u64,
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
        if config.slo.is_none() {
            // Figures of an SLO that is gone must not stay exported.
            self.metrics.forget_slo(key.namespace.as_deref().unwrap_or_default(), &key.name);
        }
        let state =
            Arc::new(Mutex::new(Snapshot { health: HealthCounter::new(config.thresholds), ..Default::default() }));
        // The CA was checked by the reconciler; a bundle that still fails leaves the public roots.
        let prober = match &config.ca {
            Ok(Some(pem)) => Prober::with_ca(Some(pem)).unwrap_or_else(|_| self.prober.clone()),
            Ok(None) | Err(_) => self.prober.clone(),
        };
        // The probe loop outlives the reconcile that started it: a span of its own.
        let span = tracing::info_span!(
            parent: None,
            "probe",
            namespace = %key.namespace.as_deref().unwrap_or_default(),
            object = %key.name,
        );
        let task = tokio::spawn(
            probe_loop(
                key.clone(),
                config.clone(),
                state.clone(),
                prober,
                self.metrics.clone(),
                self.wake.clone(),
                self.servers.clone(),
            )
            .instrument(span),
        );
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
    // The API check is a signed POST: its own client, which never follows a redirect. Built
    // only for a server that is called that way, and shared unless the server has its own CA
    // (a client holds its own copy of the trusted roots).
    let rpc_http = rpc_client(&config);
    let phase = phase_of(&key);
    let mut ticker = GridTicker::new(config.interval, phase);
    let mut slo_ticker = GridTicker::new(config.slo.as_ref().map_or(config.interval, |s| s.interval), phase);
    loop {
        let slo_turn = tokio::select! {
            _ = ticker.tick() => false,
            _ = slo_ticker.tick(), if config.slo.is_some() => true,
        };
        if servers.get(&key).is_none() {
            tracing::debug!("server deleted; probing stops");
            return;
        }
        let changed = match (&config.slo, slo_turn) {
            (Some(slo), true) => {
                let started = std::time::Instant::now();
                let counts = match &config.ca {
                    Ok(_) => sample(slo, &prober, &rpc_http, config.timeout).await,
                    Err(_) => None,
                };
                let latency = started.elapsed();
                if servers.get(&key).is_none() {
                    return;
                }
                let now: DateTime<Utc> = Utc::now();
                match counts {
                    Some(counts) => {
                        let sample = SloSample { at: now, counts };
                        let eval = evaluate(previous_sample.as_ref(), &sample, &slo.limits);
                        metrics.slo_sampled(&namespace, &key.name, latency, Some(&figures(&counts, &eval)));
                        let mut s = state.lock().expect("snapshot poisoned");
                        s.slo_samples += 1;
                        let t = s.slo.observe(&eval, now, slo.for_);
                        previous_sample = Some(sample);
                        if t != BreachTransition::Unchanged {
                            s.slo_at_transition = Some(eval);
                            true
                        } else {
                            false
                        }
                    }
                    None => {
                        // A failed sample: the figures are unknown (not zero); the breach state
                        // and the baseline stay as they are until a sample succeeds.
                        metrics.slo_sampled(&namespace, &key.name, latency, None);
                        state.lock().expect("snapshot poisoned").slo_samples += 1;
                        false
                    }
                }
            }
            _ => {
                let http = match &config.ca {
                    Ok(_) => prober.probe(&config.health_url, config.timeout).await,
                    Err(why) => ProbeOutcome {
                        healthy: false,
                        status: None,
                        latency: Duration::ZERO,
                        error: Some(format!("the server's certificate cannot be verified: {why}")),
                    },
                };
                let outcome = match &config.api {
                    Some(check) if http.healthy => {
                        let api = check.run(rpc_http.clone(), config.timeout).await;
                        super::health::api::combine(http, Some(api))
                    }
                    _ => http,
                };
                if servers.get(&key).is_none() {
                    // Deleted while the probe ran: its series are already dropped, keep them so.
                    return;
                }
                metrics.probe_observed(&namespace, &key.name, outcome.healthy, outcome.latency);
                let now: DateTime<Utc> = Utc::now();
                let mut s = state.lock().expect("snapshot poisoned");
                s.probes += 1;
                s.health.record(outcome.healthy, outcome.error.clone(), now).changed()
            }
        };
        if changed && wake.send(key.clone()).is_err() {
            return;
        }
    }
}

/// Where every probe grid starts: one instant for the whole process.
static GRID_ORIGIN: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();

/// The first instant after `now` on the grid of `period` that starts at `origin`.
fn next_on_grid(origin: tokio::time::Instant, now: tokio::time::Instant, period: Duration) -> tokio::time::Instant {
    let period_ns = period.as_nanos().max(1);
    let elapsed_ns = now.saturating_duration_since(origin).as_nanos();
    let steps = elapsed_ns / period_ns + 1;
    let offset = steps.saturating_mul(period_ns);
    origin + Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX))
}

/// How many phases of its interval the probe loops are spread over.
pub const PROBE_PHASES: u32 = 5;

/// The phase (`0..PROBE_PHASES`) of a server's probes: fixed by its name, so it is the same
/// after a restart of the loop or of the operator.
fn phase_of(key: &ObjectRef<ColonyServer>) -> u32 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.namespace.hash(&mut h);
    key.name.hash(&mut h);
    (h.finish() % u64::from(PROBE_PHASES)) as u32
}

/// A probe loop's clock: the first tick at once (a new server gets its verdict without
/// waiting a period), then every `period` on a grid shared by the process, at one of
/// [`PROBE_PHASES`] phases of the period.
///
/// The loops of one phase and interval therefore probe in the same instant: the runtime wakes
/// a few times per period for all servers instead of once per server, which is most of what
/// probing costs at rest (each wake-up is a task switch in the kernel; measured with 100
/// servers at 1 s, all in one instant cost a quarter of the CPU of spread-out ticks). The
/// phases keep a failure that hits every server at once (a network partition) from waking
/// every server's reconcile in the same instant: their fallback flips queue behind each other
/// at the API server, and the last one comes late. A tick missed by a slow probe is skipped,
/// not made up, so the loop stays on its grid.
struct GridTicker {
    immediate: bool,
    interval: tokio::time::Interval,
}

impl GridTicker {
    fn new(period: Duration, phase: u32) -> Self {
        let now = tokio::time::Instant::now();
        let origin = *GRID_ORIGIN.get_or_init(|| now) + period * phase.min(PROBE_PHASES) / PROBE_PHASES;
        let mut interval = tokio::time::interval_at(next_on_grid(origin, now, period), period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Self { immediate: true, interval }
    }

    async fn tick(&mut self) {
        if std::mem::take(&mut self.immediate) {
            return;
        }
        self.interval.tick().await;
    }
}

/// The RPC client of a server's probe loop (a cheap handle; see [`probe_loop`]).
fn rpc_client(config: &ProbeConfig) -> reqwest::Client {
    use crate::runtime::http::{Purpose, client};
    static SHARED: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let shared = || SHARED.get_or_init(|| crate::runtime::http::default_client(Purpose::Rpc)).clone();
    let calls_rpc =
        config.api.is_some() || matches!(config.slo.as_ref().map(|s| &s.source), Some(SloSource::Statistics(_)));
    match config.ca.as_ref().ok().and_then(Option::as_deref) {
        Some(pem) if calls_rpc => client(Purpose::Rpc, Some(pem)).unwrap_or_else(|_| shared()),
        _ => shared(),
    }
}

/// What the metrics export of one successful SLO sample.
fn figures(counts: &ProcessCounts, eval: &SloEvaluation) -> SloFigures {
    SloFigures {
        processes: [counts.waiting, counts.running, counts.successful, counts.failed],
        queue_depth: eval.queue_depth,
        completion_rate: eval.completion_rate,
        error_rate: eval.error_rate,
    }
}

/// One SLO sample from its source, within `timeout`; `None` when it failed (unreachable,
/// refused, or a reply that holds no process counts). Errors are logged at debug, without
/// URLs' secrets or key material (their `Display` has none).
async fn sample(
    slo: &SloConfig,
    prober: &Prober,
    rpc_http: &reqwest::Client,
    timeout: Duration,
) -> Option<ProcessCounts> {
    match &slo.source {
        SloSource::Metrics(url) => match prober.fetch_text(url, timeout, 1 << 20).await {
            Ok(text) => Some(parse_prometheus_text(&text)),
            Err(e) => {
                tracing::debug!(error = %e, "SLO scrape failed");
                None
            }
        },
        SloSource::Statistics(check) => match check.fetch(rpc_http.clone(), timeout).await {
            Ok(reply) => {
                let counts = counts_from_statistics(&reply);
                if counts.is_none() {
                    tracing::debug!("SLO statistics reply holds no process counts");
                }
                counts
            }
            Err(e) => {
                tracing::debug!(error = %e, "SLO statistics call failed");
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    /// Whether `t` is on the grid of `period` from `origin`, to the timer's resolution (1 ms).
    fn on_grid(t: Instant, origin: Instant, period: Duration) -> bool {
        let off = t.duration_since(origin).as_nanos() % period.as_nanos();
        off < 1_000_000 || period.as_nanos() - off < 1_000_000
    }

    fn about(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) < Duration::from_millis(1)
    }

    #[test]
    fn next_on_grid_is_the_first_grid_instant_strictly_after_now() {
        let origin = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(next_on_grid(origin, origin, s), origin + s);
        assert_eq!(next_on_grid(origin, origin + Duration::from_millis(1), s), origin + s);
        assert_eq!(next_on_grid(origin, origin + Duration::from_millis(999), s), origin + s);
        assert_eq!(next_on_grid(origin, origin + s, s), origin + 2 * s);
        assert_eq!(next_on_grid(origin, origin + Duration::from_millis(4_500), s), origin + 5 * s);
        // Another period keeps its own grid from the same origin.
        let p = Duration::from_millis(300);
        assert_eq!(next_on_grid(origin, origin + Duration::from_millis(700), p), origin + Duration::from_millis(900));
        // A clock read before the origin (another runtime's instant) still lands after it.
        assert_eq!(next_on_grid(origin + s, origin, s), origin + 2 * s);
        // A zero period cannot divide by zero.
        assert!(next_on_grid(origin, origin + s, Duration::ZERO) > origin + s);
    }

    #[tokio::test(start_paused = true)]
    async fn loops_started_apart_tick_together_after_their_first_tick() {
        let period = Duration::from_secs(1);
        let mut a = GridTicker::new(period, 0);
        a.tick().await; // at once
        tokio::time::advance(Duration::from_millis(300)).await;
        let mut b = GridTicker::new(period, 0);
        let before = Instant::now();
        b.tick().await; // at once too: a new server does not wait for the grid
        assert_eq!(Instant::now(), before);

        a.tick().await;
        let a_second = Instant::now();
        b.tick().await;
        let b_second = Instant::now();
        assert_eq!(a_second, b_second, "both loops probe in the same instant");
        let origin = *GRID_ORIGIN.get().expect("origin set");
        assert!(on_grid(a_second, origin, period));

        // A probe that overran two periods does not make the ticks up: the next one is
        // the next grid instant, not a burst.
        tokio::time::advance(Duration::from_millis(2_500)).await;
        a.tick().await;
        let late = Instant::now();
        a.tick().await;
        let after = Instant::now();
        assert!(on_grid(after, origin, period));
        assert!(after > late, "the missed ticks were skipped, not fired at once");
    }

    #[tokio::test(start_paused = true)]
    async fn another_phase_ticks_a_fixed_fraction_of_the_period_later() {
        let period = Duration::from_secs(1);
        let mut a = GridTicker::new(period, 0);
        let mut c = GridTicker::new(period, 2);
        a.tick().await;
        c.tick().await;
        a.tick().await;
        let a_at = Instant::now();
        c.tick().await;
        let c_at = Instant::now();
        assert!(about(c_at - a_at, period * 2 / PROBE_PHASES), "{:?}", c_at - a_at);
        // And stays there.
        a.tick().await;
        c.tick().await;
        assert!(about(Instant::now() - a_at, period + period * 2 / PROBE_PHASES));
    }

    #[test]
    fn each_process_count_is_exported_under_its_own_state() {
        use crate::runtime::metrics::SLO_PROCESS_STATES;
        let counts = ProcessCounts { waiting: Some(1.0), running: Some(2.0), successful: Some(3.0), failed: None };
        let eval =
            SloEvaluation { queue_depth: Some(1.0), completion_rate: Some(0.5), error_rate: None, violations: vec![] };
        let f = figures(&counts, &eval);
        let by_state: std::collections::HashMap<_, _> = SLO_PROCESS_STATES.into_iter().zip(f.processes).collect();
        assert_eq!(by_state["waiting"], Some(1.0));
        assert_eq!(by_state["running"], Some(2.0));
        assert_eq!(by_state["successful"], Some(3.0));
        assert_eq!(by_state["failed"], None);
        assert_eq!((f.queue_depth, f.completion_rate, f.error_rate), (Some(1.0), Some(0.5), None));
    }

    #[test]
    fn phases_are_fixed_by_the_name_and_spread_over_all_of_them() {
        let key = |n: usize| ObjectRef::<ColonyServer>::new(&format!("srv-{n:03}")).within("ns");
        assert_eq!(phase_of(&key(7)), phase_of(&key(7)));
        let mut per_phase = [0usize; PROBE_PHASES as usize];
        for n in 0..100 {
            per_phase[phase_of(&key(n)) as usize] += 1;
        }
        assert!(per_phase.iter().all(|&n| n > 0), "every phase is used: {per_phase:?}");
    }
}
