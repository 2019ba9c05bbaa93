//! `make bench`: the operator (release build) at fleet scale on the local control plane.
//!
//! One run creates the fleet (ColonyServers probed every second against local endpoints,
//! FinanceBees with their Secrets, spread over namespaces) next to unrelated Secrets,
//! ConfigMaps and pods, and measures: time until every resource is Ready against the
//! controller-manager alone bringing up the same number of pods (the floor); the operator's
//! RSS and CPU from /proc; reconcile durations from its own histogram; API requests and
//! writes from the audit log by its user agent; Secret change to new pod template against a
//! bare watch client; first failed probe to fallback flip; Failed pod to its deletion.
//! Output: target/bench/report.md with SVG plots beside it.
mod plots;
mod report;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use colony_operator::api::{ColonyServer, FinanceBee};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret};
use kube::api::{DeleteParams, ListParams, PartialObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BENCH_LABEL: &str = "colony.zyeute.io/bench";
const CONFIG_HASH: &str = "colony.zyeute.io/config-hash";
const FAIL_LABEL: &str = "colony.zyeute.io/test-fail";
/// Probe settings of every server: the flip is due `FAILURE_THRESHOLD` probes after the
/// first failure.
const FAILURE_THRESHOLD: u32 = 3;
const INTERVAL_S: f64 = 1.0;
/// `rollback.stableAfter` of every bee: its last timed status write (the image recorded as
/// known good) is due this long after it is available.
const STABLE_AFTER: &str = "30s";

/// The fleet; `SMALL=1` takes a tenth of it.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub namespaces: usize,
    pub servers: usize,
    pub bees: usize,
    pub unrelated_secrets: usize,
    pub unrelated_config_maps: usize,
    pub unrelated_pods: usize,
    pub secret_changes: usize,
    pub restarts: usize,
    pub rest_window: Duration,
}

impl Scale {
    fn full() -> Self {
        Self {
            namespaces: 20,
            servers: 100,
            bees: 1000,
            unrelated_secrets: 2500,
            unrelated_config_maps: 2500,
            unrelated_pods: 1000,
            secret_changes: 100,
            restarts: 100,
            rest_window: Duration::from_secs(30),
        }
    }

    fn small() -> Self {
        Self {
            namespaces: 2,
            servers: 10,
            bees: 100,
            unrelated_secrets: 250,
            unrelated_config_maps: 250,
            unrelated_pods: 100,
            secret_changes: 10,
            restarts: 10,
            rest_window: Duration::from_secs(30),
        }
    }
}

// ------------------------------------------------------------------------------------
// Progress line and the operator's resource samples
// ------------------------------------------------------------------------------------

pub struct Progress {
    start: Instant,
    phase: Mutex<String>,
    detail: Mutex<String>,
    rss_mib: Mutex<f64>,
}

impl Progress {
    fn phase(&self, p: &str) {
        *self.phase.lock().unwrap() = p.to_string();
        self.detail.lock().unwrap().clear();
        eprintln!("\r\x1b[K[bench] {:>6.1}s  {p}", self.start.elapsed().as_secs_f64());
    }

    fn detail(&self, d: String) {
        *self.detail.lock().unwrap() = d;
    }

    fn line(&self) -> String {
        format!(
            "[bench] {:>6.1}s  {}: {}  (operator RSS {:.1} MiB)",
            self.start.elapsed().as_secs_f64(),
            self.phase.lock().unwrap(),
            self.detail.lock().unwrap(),
            self.rss_mib.lock().unwrap()
        )
    }
}

/// One sample of the operator process.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Seconds since the bench started.
    pub t: f64,
    pub rss_mib: f64,
    /// Percent of one core over the last interval.
    pub cpu_pct: f64,
    /// The operator's open TCP connections to the API server.
    pub api_connections: usize,
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// (VmRSS KiB, VmHWM KiB, utime+stime ticks) of `pid`.
fn proc_stats(pid: u32) -> Option<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((kib("VmRSS:")?, kib("VmHWM:")?, ticks))
}

/// The established TCP connections of `pid` to `port`: its socket inodes (/proc/<pid>/fd)
/// looked up in the network namespace's tables (/proc/net/tcp, tcp6).
fn connections_to(pid: u32, port: u16) -> Option<usize> {
    let inodes: HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect();
    let tables = ["/proc/net/tcp", "/proc/net/tcp6"].map(|t| std::fs::read_to_string(t).unwrap_or_default());
    Some(tables.iter().map(|t| count_connections(t, port, &inodes)).sum())
}

/// Rows of a /proc/net/tcp table that are established (state 01), go to remote `port` and
/// belong to one of `inodes`.
pub fn count_connections(table: &str, port: u16, inodes: &HashSet<u64>) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            // sl local_address rem_address st tx_queue:rx_queue tr:when retrnsmt uid timeout inode
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 9
                && f[3] == "01"
                && f[2].rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok()) == Some(port)
                && f[9].parse::<u64>().is_ok_and(|i| inodes.contains(&i))
        })
        .count()
}

/// The port of the kubeconfig's `server:` URL.
pub fn server_port(kubeconfig: &str) -> Option<u16> {
    let url = kubeconfig.lines().find_map(|l| l.trim().strip_prefix("server:"))?.trim();
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest).split('/').next()?;
    match authority.rsplit_once(':') {
        Some((_, port)) => port.parse().ok(),
        None => Some(if url.starts_with("http://") { 80 } else { 443 }),
    }
}

// ------------------------------------------------------------------------------------
// Health endpoints: one listener per server, health switchable per server
// ------------------------------------------------------------------------------------

#[derive(Default)]
struct EndpointState {
    failing: AtomicBool,
    /// When each failed probe of the current outage was served, up to `FAILURE_THRESHOLD`.
    failures: Mutex<Vec<Instant>>,
}

struct Endpoints {
    ports: Vec<u16>,
    states: Vec<Arc<EndpointState>>,
}

impl Endpoints {
    async fn start(n: usize) -> anyhow::Result<Self> {
        let mut ports = Vec::new();
        let mut states = Vec::new();
        for _ in 0..n {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            ports.push(listener.local_addr()?.port());
            let state = Arc::new(EndpointState::default());
            states.push(state.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve_probe(stream, state.clone()));
                }
            });
        }
        Ok(Self { ports, states })
    }

    fn set_failing(&self, i: usize, failing: bool) {
        let s = &self.states[i];
        s.failures.lock().unwrap().clear();
        s.failing.store(failing, Ordering::SeqCst);
    }

    fn first_failure(&self, i: usize) -> Option<Instant> {
        self.states[i].failures.lock().unwrap().first().copied()
    }

    /// The failed probe that makes the verdict (the `FAILURE_THRESHOLD`-th), once served.
    fn deciding_failure(&self, i: usize) -> Option<Instant> {
        self.states[i].failures.lock().unwrap().get(FAILURE_THRESHOLD as usize - 1).copied()
    }
}

/// Answers requests on one connection (keep-alive) until the client closes it.
async fn serve_probe(mut stream: tokio::net::TcpStream, state: Arc<EndpointState>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        buf.drain(..end);
        let reply: &[u8] = if state.failing.load(Ordering::SeqCst) {
            let mut failures = state.failures.lock().unwrap();
            if failures.len() < FAILURE_THRESHOLD as usize {
                failures.push(Instant::now());
            }
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
        };
        if stream.write_all(reply).await.is_err() {
            return;
        }
    }
}

// ------------------------------------------------------------------------------------
// Cluster helpers
// ------------------------------------------------------------------------------------

fn obj<K: DeserializeOwned>(v: serde_json::Value) -> K {
    serde_json::from_value(v).expect("a valid manifest")
}

/// Creates every object (namespace, object) with bounded concurrency; an existing one is kept.
async fn create_all<K>(client: &Client, items: Vec<(String, K)>, progress: &Progress, what: &str) -> anyhow::Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let total = items.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    futures::stream::iter(items)
        .map(|(ns, o)| {
            let api: Api<K> = Api::namespaced(client.clone(), &ns);
            let done = &done;
            async move {
                let r = match api.create(&PostParams::default(), &o).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                    Err(e) => Err(anyhow::Error::from(e).context(format!("creating {what} {}/{}", ns, o.name_any()))),
                };
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                progress.detail(format!("{what} {n}/{total}"));
                r
            }
        })
        .buffer_unordered(24)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

fn condition_true(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

/// The requests by verb, resource and subresource: how many, and the API server's own time
/// for them (p50 / p99), one kind per line.
fn requests_by_kind<'a>(requests: impl Iterator<Item = &'a Request>) -> String {
    // Per kind: how many, and the API server's times of those that have one.
    let mut by_kind: BTreeMap<String, (usize, Vec<f64>)> = BTreeMap::new();
    for r in requests {
        let kind = match r.subresource.as_str() {
            "" => format!("{} {}", r.verb, r.resource),
            sub => format!("{} {}/{sub}", r.verb, r.resource),
        };
        let (count, times) = by_kind.entry(kind).or_default();
        *count += 1;
        times.extend(r.latency_ms);
    }
    let mut out = format!("{:>7}  {:<32} {:>16}\n", "count", "request", "API server p50/p99");
    for (kind, (count, times)) in by_kind {
        let times = sorted(times);
        let time = if times.is_empty() {
            "—".to_string()
        } else {
            format!("{:.0} / {:.0} ms", quantile(&times, 0.5), quantile(&times, 0.99))
        };
        out.push_str(&format!("{count:>7}  {kind:<32} {time:>16}\n"));
    }
    out
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

async fn kubectl_ok(args: &[&str]) -> anyhow::Result<String> {
    let out = colony_e2e::kubectl(args, None).await?;
    if !out.status.success() {
        bail!("kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Deletes the namespaces a previous run left and waits until they are gone.
async fn clean_previous(client: &Client, progress: &Progress) -> anyhow::Result<()> {
    let nss: Api<Namespace> = Api::all(client.clone());
    let lp = ListParams::default().labels(&format!("{BENCH_LABEL}=true"));
    for ns in nss.list(&lp).await? {
        let _ = nss.delete(&ns.name_any(), &DeleteParams::default()).await;
    }
    let start = Instant::now();
    loop {
        let left = nss.list(&lp).await?.items.len();
        if left == 0 {
            return Ok(());
        }
        progress.detail(format!("{left} namespaces of a previous run still terminating"));
        if start.elapsed() > Duration::from_secs(600) {
            bail!("namespaces of a previous run did not go away in 10 min");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn ensure_nodes(client: &Client, pods: usize, progress: &Progress) -> anyhow::Result<usize> {
    // kwok nodes hold 110 pods each; keep headroom for pods still terminating.
    let want = pods.div_ceil(100) + 2;
    let cluster = std::env::var("COLONY_CLUSTER_NAME").unwrap_or_else(|_| "colony".into());
    let nodes: Api<Node> = Api::all(client.clone());
    let have = nodes.list(&ListParams::default()).await?.items.len();
    if have < want {
        progress.detail(format!("kwokctl scale node --replicas {want}"));
        let out = tokio::process::Command::new("kwokctl")
            .args(["scale", "node", "--name", &cluster, "--replicas", &want.to_string()])
            .env(
                "KWOK_WORKDIR",
                std::env::var_os("KWOK_WORKDIR")
                    .unwrap_or_else(|| colony_e2e::repo_root().join("target/cluster/kwok").into_os_string()),
            )
            .output()
            .await
            .context("running kwokctl (is the control plane's bin dir on PATH?)")?;
        if !out.status.success() {
            bail!("kwokctl scale node: {}", String::from_utf8_lossy(&out.stderr));
        }
        kubectl_ok(&["wait", "--for=condition=Ready", "node", "--all", "--timeout=180s"]).await?;
    }
    Ok(want.max(have))
}

/// Polls `count` (ready, total) every 500 ms until ready == total; the times (seconds since
/// `start`) at which the count of ready objects grew.
async fn wait_all_ready<F, Fut>(
    what: &str,
    start: Instant,
    timeout: Duration,
    progress: &Progress,
    mut count: F,
) -> anyhow::Result<Vec<(f64, usize)>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(usize, usize)>>,
{
    let mut curve = vec![(0.0, 0)];
    loop {
        let (ready, total) = count().await?;
        let t = start.elapsed().as_secs_f64();
        if curve.last().unwrap().1 != ready {
            curve.push((t, ready));
        }
        progress.detail(format!("{what}: {ready}/{total} Ready after {t:.0}s"));
        if ready == total && total > 0 {
            return Ok(curve);
        }
        if start.elapsed() > timeout {
            bail!("{what}: only {ready}/{total} Ready after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ------------------------------------------------------------------------------------
// The operator: process, metrics
// ------------------------------------------------------------------------------------

fn operator_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("COLONY_BENCH_OPERATOR") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| colony_e2e::repo_root().join("target"));
    target.join("release/colony-operator")
}

/// How long the operator has reconciled nothing, from its reconcile counters.
struct Quiet {
    reconciles: f64,
    since: Instant,
}

impl Default for Quiet {
    fn default() -> Self {
        Self { reconciles: 0.0, since: Instant::now() }
    }
}

impl Quiet {
    /// Reads the counters; a change restarts the quiet time.
    async fn observe(&mut self, admin_port: u16) -> anyhow::Result<()> {
        let n: f64 = reconcile_counts(&scrape(admin_port).await?).values().sum();
        if n != self.reconciles {
            (self.reconciles, self.since) = (n, Instant::now());
        }
        Ok(())
    }

    fn for_(&self) -> Duration {
        self.since.elapsed()
    }
}

impl std::fmt::Display for Quiet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.0} reconciles so far; quiet for {:.0} s", self.reconciles, self.for_().as_secs_f64())
    }
}

/// Starts the operator binary with its admin server on `admin_port`, logging to `log`.
fn start_operator(binary: &Path, admin_port: u16, log: &Path) -> anyhow::Result<tokio::process::Child> {
    let log = std::fs::File::create(log)?;
    tokio::process::Command::new(binary)
        .args(["run", "--admin-addr", &format!("127.0.0.1:{admin_port}")])
        .env("RUST_LOG", "info,kube=warn")
        .stdout(std::process::Stdio::from(log.try_clone()?))
        .stderr(std::process::Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

async fn scrape(admin_port: u16) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", admin_port)).await?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).to_string();
    Ok(text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// Cumulative buckets (le, count) of the reconcile histogram per controller.
pub fn reconcile_histograms(metrics: &str) -> BTreeMap<String, Vec<(f64, f64)>> {
    histograms(metrics, "colony_operator_reconcile_duration_seconds")
}

/// Cumulative buckets (le, count) of histogram `family` per controller.
pub fn histograms(metrics: &str, family: &str) -> BTreeMap<String, Vec<(f64, f64)>> {
    let prefix = format!("{family}_bucket{{");
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix(prefix.as_str()) else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else { continue };
        let label = |k: &str| {
            labels.split(',').find_map(|kv| kv.strip_prefix(&format!("{k}=\"")).map(|v| v.trim_end_matches('"')))
        };
        let (Some(controller), Some(le)) = (label("controller"), label("le")) else { continue };
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) };
        out.entry(controller.to_string()).or_default().push((le, value.trim().parse().unwrap_or(0.0)));
    }
    for buckets in out.values_mut() {
        buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    }
    out
}

/// Reconcile counts per controller.
fn reconcile_counts(metrics: &str) -> BTreeMap<String, f64> {
    reconcile_histograms(metrics).into_iter().map(|(c, b)| (c, b.last().map(|x| x.1).unwrap_or(0.0))).collect()
}

/// The observations of a cumulative histogram since an earlier scrape of it (`earlier`:
/// None when it had none then).
pub fn histogram_delta(later: &[(f64, f64)], earlier: Option<&Vec<(f64, f64)>>) -> Vec<(f64, f64)> {
    later
        .iter()
        .map(|&(le, n)| (le, n - earlier.and_then(|b| b.iter().find(|x| x.0 == le)).map_or(0.0, |x| x.1)))
        .collect()
}

/// The `q` quantile of a cumulative histogram, interpolated linearly inside its bucket (as
/// Prometheus' histogram_quantile does); infinite when it falls in the +Inf bucket.
pub fn histogram_quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    if total == 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let (mut prev_le, mut prev_count) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return f64::INFINITY;
            }
            let within = if count > prev_count { (rank - prev_count) / (count - prev_count) } else { 1.0 };
            return prev_le + (le - prev_le) * within;
        }
        (prev_le, prev_count) = (le, count);
    }
    f64::INFINITY
}

// ------------------------------------------------------------------------------------
// Audit log: the operator's requests
// ------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Request {
    pub at: SystemTime,
    pub verb: String,
    pub resource: String,
    pub subresource: String,
    /// The object's name (empty for a list or watch).
    pub name: String,
    /// From the API server receiving the request to its response (the audit event's
    /// `stageTimestamp` at ResponseComplete): what the API server took, queueing included.
    pub latency_ms: Option<f64>,
}

/// Every request by the operator's user agent in the audit log (each request once), and
/// whether the log records reads at all.
fn operator_requests() -> anyhow::Result<(Vec<Request>, bool)> {
    // The API server rotates its audit log (audit-<time>.log beside audit.log): read them all.
    let path = colony_e2e::audit_log_path();
    let dir = path.parent().context("audit log directory")?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("audit") && n.ends_with(".log"))
        })
        .collect();
    files.sort();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut reads_logged = false;
    let lines = files
        .iter()
        .map(std::fs::File::open)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flat_map(|f| std::io::BufRead::lines(std::io::BufReader::new(f)));
    for line in lines {
        let line = line?;
        if !reads_logged && (line.contains("\"verb\":\"list\"") || line.contains("\"verb\":\"watch\"")) {
            reads_logged = true;
        }
        if !line.contains("colony-operator/") {
            continue;
        }
        let Ok(e) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if !e["userAgent"].as_str().is_some_and(|ua| ua.starts_with("colony-operator/")) {
            continue;
        }
        let id = e["auditID"].as_str().unwrap_or_default().to_string();
        if !seen.insert(id) {
            continue;
        }
        let Some(at) = e["requestReceivedTimestamp"].as_str().and_then(colony_e2e::parse_audit_time) else { continue };
        let done = e["stageTimestamp"].as_str().and_then(colony_e2e::parse_audit_time);
        out.push(Request {
            at,
            verb: e["verb"].as_str().unwrap_or_default().to_string(),
            resource: e["objectRef"]["resource"].as_str().unwrap_or_default().to_string(),
            subresource: e["objectRef"]["subresource"].as_str().unwrap_or_default().to_string(),
            name: e["objectRef"]["name"].as_str().unwrap_or_default().to_string(),
            latency_ms: done.and_then(|d| d.duration_since(at).ok()).map(|d| d.as_secs_f64() * 1000.0),
        });
    }
    out.sort_by_key(|r| r.at);
    Ok((out, reads_logged))
}

/// The controller whose objects a request is on, by the bench's names: a server's objects
/// (its Deployment, Service, fallback ConfigMap, Events) are named after `srv-NNN`, a bee's
/// (its Deployment, key Secret, Events) after `bee-NNNN`.
fn controller_of(name: &str) -> Option<&'static str> {
    if name.starts_with("srv-") {
        Some("colonyserver")
    } else if name.starts_with("bee-") {
        Some("financebee")
    } else {
        None
    }
}

/// One flip as the bench saw it, by the wall clock (the audit log's clock).
#[derive(Debug, Clone)]
pub struct FlipMoments {
    pub config_map: String,
    pub deciding: SystemTime,
    pub seen: SystemTime,
}

/// The operator's part of a flip (deciding failed probe → flip seen), split at the write of
/// the fallback ConfigMap: before the API server received it (the wake-up, the reconcile's
/// turn, its reads, the client), the API server's own time for it, and after the API server
/// answered until the bench's watch had it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlipSplit {
    pub to_api_ms: f64,
    pub api_ms: f64,
    pub to_watch_ms: f64,
}

/// The first write of the flip's ConfigMap the API server received between the deciding
/// probe and the flip seen (less `slack`: the bench's and the audit log's clocks are read
/// apart), and where the operator's part of the flip went. None when the log has no such
/// write (then the flip is left out of the split, not guessed).
fn split_flip(flip: &FlipMoments, requests: &[Request], slack: Duration) -> Option<FlipSplit> {
    let from = flip.deciding.checked_sub(slack)?;
    let write = requests.iter().find(|r| {
        r.verb == "patch"
            && r.resource == "configmaps"
            && r.subresource.is_empty()
            && r.name == flip.config_map
            && r.at >= from
            && r.at <= flip.seen
    })?;
    let ms = |a: SystemTime, b: SystemTime| match b.duration_since(a) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    };
    let api_ms = write.latency_ms?;
    let answered = write.at + Duration::from_secs_f64(api_ms / 1000.0);
    Some(FlipSplit { to_api_ms: ms(flip.deciding, write.at), api_ms, to_watch_ms: ms(answered, flip.seen) })
}

fn is_write(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch" | "delete" | "deletecollection")
}

// ------------------------------------------------------------------------------------
// The run
// ------------------------------------------------------------------------------------

/// Everything measured; the report is written from it.
#[derive(Default)]
pub struct Results {
    pub scale: Option<Scale>,
    pub nodes: usize,
    pub busy_load: f64,
    pub floor_ready_s: f64,
    pub floor_curve: Vec<(f64, usize)>,
    pub fleet_ready_s: f64,
    /// From all Ready until the operator reconciled nothing for 15 s.
    pub settle_s: f64,
    pub fleet_curve: Vec<(f64, usize)>,
    pub samples: Vec<Sample>,
    pub phases: Vec<(String, f64, f64)>,
    pub rss_peak_mib: f64,
    pub rss_rest_mib: f64,
    /// The operator's TCP connections to the API server at the end of the rest window.
    pub api_connections_rest: usize,
    /// The same, of an operator started into the whole fleet once it settled.
    pub rss_restart_rest_mib: f64,
    /// From that start until no reconcile for 15 s.
    pub restart_settle_s: f64,
    pub cpu_rest_pct: f64,
    pub reconcile: BTreeMap<String, (f64, f64, f64)>,
    /// The same, counting only the reconciles after the fleet settled (Secret changes,
    /// flips, restarts).
    pub reconcile_after_fleet: BTreeMap<String, (f64, f64, f64)>,
    /// The same as `reconcile`, less each reconcile's time waiting for its API requests:
    /// the operator's own part.
    pub reconcile_self: BTreeMap<String, (f64, f64, f64)>,
    /// Per controller: p50, p99 (seconds) and count of the reconciles' API requests as the
    /// operator waited for them, during fleet creation (the audit figure's window).
    pub request_client_fleet: BTreeMap<String, (f64, f64, f64)>,
    /// The API server's time for each of the operator's requests (watches excluded) during
    /// fleet creation, sorted: a reconcile that makes one request cannot be faster.
    pub api_latency_fleet_ms: Vec<f64>,
    /// The same, per controller whose objects the requests are on ([`controller_of`]),
    /// sorted: next to the time the controller's reconciles waited for the same requests.
    pub api_latency_fleet_by_controller: BTreeMap<String, Vec<f64>>,
    pub requests_per_reconcile: Option<f64>,
    pub requests_fleet: usize,
    pub reconciles_fleet: f64,
    pub requests_rest: Option<usize>,
    pub writes_per_min_rest: f64,
    pub writes_rest: Vec<String>,
    pub secret_latency_ms: Vec<f64>,
    pub secret_floor_ms: Vec<f64>,
    pub flip_latency_ms: Vec<f64>,
    /// Of each flip: first failed probe -> the failed probe that decides (the probes' schedule).
    pub flip_probes_ms: Vec<f64>,
    /// Of each flip: the deciding failed probe -> the flip seen (the operator's part).
    pub flip_decided_ms: Vec<f64>,
    /// Reconciles by controller from the servers failing until they are all Healthy again.
    pub flip_reconciles: BTreeMap<String, f64>,
    /// Of each flip, by the wall clock: its ConfigMap's name, the deciding failed probe and
    /// the flip seen by the bench's watch (matched with the audit log afterwards).
    pub flip_moments: Vec<FlipMoments>,
    /// From the servers failing until every fallback is on.
    pub flip_window: Option<(SystemTime, SystemTime)>,
    /// The operator's part of each flip split at its ConfigMap write, as the API server
    /// logged it ([`split_flip`]).
    pub flip_split: Vec<FlipSplit>,
    pub restart_latency_ms: Vec<f64>,
}

struct Bench {
    client: Client,
    scale: Scale,
    progress: Arc<Progress>,
    namespaces: Vec<String>,
}

fn ns_of(i: usize, scale: &Scale) -> usize {
    i % scale.namespaces
}

impl Bench {
    fn server_name(i: usize) -> String {
        format!("srv-{i:03}")
    }

    fn bee_name(i: usize) -> String {
        format!("bee-{i:04}")
    }

    /// The namespace of server `i` and of bee `i` (bees follow a server of their namespace).
    fn server_ns(&self, i: usize) -> &str {
        &self.namespaces[ns_of(i, &self.scale)]
    }

    fn bee_server(&self, i: usize) -> usize {
        // Bee i lives in namespace i % N, next to servers j with j % N == i % N.
        let per_ns = self.scale.servers / self.scale.namespaces;
        let slot = (i / self.scale.namespaces) % per_ns.max(1);
        slot * self.scale.namespaces + ns_of(i, &self.scale)
    }

    async fn create_namespaces(&self, names: &[String]) -> anyhow::Result<()> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        for name in names {
            let ns: Namespace = obj(json!({"metadata": {"name": name, "labels": {BENCH_LABEL: "true"}}}));
            match api.create(&PostParams::default(), &ns).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Pods need the `default` ServiceAccount, which a controller creates.
        for name in names {
            let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(self.client.clone(), name);
            for _ in 0..120 {
                if sas.get_opt("default").await?.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Ok(())
    }

    async fn unrelated(&self) -> anyhow::Result<()> {
        let s = &self.scale;
        let n = |i: usize| self.namespaces[i % s.namespaces].clone();
        let secrets = (0..s.unrelated_secrets)
            .map(|i| {
                (
                    n(i),
                    obj::<Secret>(
                        json!({"metadata": {"name": format!("other-{i:05}"), "labels": {"app": "unrelated"}},
                    "stringData": {"token": format!("{i:064}"), "config.yaml": "a: 1\nb: [1, 2, 3]\n".repeat(8)}}),
                    ),
                )
            })
            .collect();
        create_all(&self.client, secrets, &self.progress, "unrelated Secrets").await?;
        let cms = (0..s.unrelated_config_maps)
            .map(|i| {
                (
                    n(i),
                    obj::<ConfigMap>(
                        json!({"metadata": {"name": format!("other-{i:05}"), "labels": {"app": "unrelated"}},
                    "data": {"settings.json": format!("{{\"id\": {i}, \"pad\": \"{}\"}}", "x".repeat(512))}}),
                    ),
                )
            })
            .collect();
        create_all(&self.client, cms, &self.progress, "unrelated ConfigMaps").await?;
        let pods = (0..s.unrelated_pods)
            .map(|i| (n(i), obj::<Pod>(pod_json(&format!("other-{i:05}"), "unrelated"))))
            .collect();
        create_all(&self.client, pods, &self.progress, "unrelated pods").await?;
        Ok(())
    }

    /// The controller-manager alone: as many single-replica Deployments as bees, until
    /// every one is available; then they are deleted.
    async fn floor(&self, res: &mut Results) -> anyhow::Result<()> {
        let ns = "bench-floor".to_string();
        self.create_namespaces(std::slice::from_ref(&ns)).await?;
        let start = Instant::now();
        let deployments = (0..self.scale.bees)
            .map(|i| {
                let name = format!("floor-{i:04}");
                let mut pod = pod_json(&name, "floor");
                let template = json!({"metadata": pod["metadata"].take(), "spec": pod["spec"].take()});
                (
                    ns.clone(),
                    obj::<Deployment>(json!({
                        "metadata": {"name": name},
                        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "floor", "instance": name}}, "template": template}
                    })),
                )
            })
            .collect();
        create_all(&self.client, deployments, &self.progress, "floor Deployments").await?;
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
        res.floor_curve =
            wait_all_ready("floor Deployments", start, Duration::from_secs(900), &self.progress, || async {
                let list = api.list(&ListParams::default()).await?;
                let ready = list
                    .items
                    .iter()
                    .filter(|d| d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0) >= 1)
                    .count();
                Ok((ready, self.scale.bees))
            })
            .await?;
        res.floor_ready_s = start.elapsed().as_secs_f64();
        self.progress.detail("deleting the floor namespace".into());
        let nss: Api<Namespace> = Api::all(self.client.clone());
        nss.delete(&ns, &DeleteParams::default()).await?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(300) {
            let left = pods.list_metadata(&ListParams::default().limit(1)).await?.items.len();
            if left == 0 {
                break;
            }
            self.progress.detail("floor pods terminating".into());
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(())
    }

    async fn fleet(&self, endpoints: &Endpoints, res: &mut Results) -> anyhow::Result<()> {
        let s = &self.scale;
        let start = Instant::now();
        let servers = (0..s.servers)
            .map(|i| {
                (
                    self.server_ns(i).to_string(),
                    obj::<ColonyServer>(json!({
                        "apiVersion": "colony.zyeute.io/v1alpha1", "kind": "ColonyServer",
                        "metadata": {"name": Self::server_name(i)},
                        "spec": {
                            "managed": false,
                            "endpoint": format!("http://127.0.0.1:{}", endpoints.ports[i]),
                            "health": {"interval": "1s", "timeout": "1s", "failureThreshold": FAILURE_THRESHOLD, "successThreshold": 1},
                            "fallback": {"recoverAfter": "2s", "minHold": "1s", "maxFlipsPerHour": 20}
                        }
                    })),
                )
            })
            .collect();
        create_all(&self.client, servers, &self.progress, "ColonyServers").await?;
        let keys = (0..s.bees)
            .map(|i| {
                (
                    self.namespaces[ns_of(i, s)].clone(),
                    obj::<Secret>(json!({"metadata": {"name": format!("{}-key", Self::bee_name(i))},
                        "stringData": {"prvkey": format!("{i:064x}")}})),
                )
            })
            .collect();
        create_all(&self.client, keys, &self.progress, "bee Secrets").await?;
        let bees = (0..s.bees)
            .map(|i| {
                let name = Self::bee_name(i);
                (
                    self.namespaces[ns_of(i, s)].clone(),
                    obj::<FinanceBee>(json!({
                        "apiVersion": "colony.zyeute.io/v1alpha1", "kind": "FinanceBee",
                        "metadata": {"name": name},
                        "spec": {
                            "image": "example.invalid/finance-bee:1",
                            "colonyServerRef": {"name": Self::server_name(self.bee_server(i))},
                            "colonyName": "zyeute",
                            "executorKeySecretRef": {"name": format!("{name}-key"), "key": "prvkey"},
                            // The image is recorded as known good this long after it is
                            // available: a status write per bee that "at rest" waits out.
                            "rollback": {"stableAfter": STABLE_AFTER},
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}
                        }
                    })),
                )
            })
            .collect();
        create_all(&self.client, bees, &self.progress, "FinanceBees").await?;
        let servers: Api<ColonyServer> = Api::all(self.client.clone());
        let bees: Api<FinanceBee> = Api::all(self.client.clone());
        let total = s.servers + s.bees;
        res.fleet_curve = wait_all_ready(
            "ColonyServers and FinanceBees",
            start,
            Duration::from_secs(1200),
            &self.progress,
            || async {
                let cs = servers.list(&ListParams::default()).await?;
                let fb = bees.list(&ListParams::default()).await?;
                let ready = cs
                    .items
                    .iter()
                    .filter(|c| c.status.as_ref().is_some_and(|st| condition_true(&st.conditions, "Ready")))
                    .count()
                    + fb.items
                        .iter()
                        .filter(|b| b.status.as_ref().is_some_and(|st| condition_true(&st.conditions, "Ready")))
                        .count();
                Ok((ready, total))
            },
        )
        .await?;
        res.fleet_ready_s = start.elapsed().as_secs_f64();
        Ok(())
    }

    /// Secret change -> new pod-template hash, next to a bare metadata watch of Secrets.
    async fn secret_rollout(&self, res: &mut Results) -> anyhow::Result<()> {
        let secrets_seen: Arc<Mutex<HashMap<String, (String, Instant)>>> = Default::default();
        let hashes_seen: Arc<Mutex<HashMap<String, (String, Instant)>>> = Default::default();
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        {
            let seen = secrets_seen.clone();
            let api: Api<PartialObjectMeta<Secret>> = Api::all(self.client.clone());
            let tx = ready_tx.clone();
            tokio::spawn(async move {
                let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
                while let Some(ev) = stream.next().await {
                    match ev {
                        Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                            let key = format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
                            seen.lock()
                                .unwrap()
                                .insert(key, (o.resource_version().unwrap_or_default(), Instant::now()));
                        }
                        Ok(watcher::Event::InitDone) => {
                            let _ = tx.send(());
                        }
                        _ => {}
                    }
                }
            });
        }
        {
            let seen = hashes_seen.clone();
            let api: Api<Deployment> = Api::all(self.client.clone());
            let cfg = watcher::Config::default().labels("app.kubernetes.io/name=finance-bee");
            tokio::spawn(async move {
                let mut stream = watcher::watcher(api, cfg).boxed();
                while let Some(ev) = stream.next().await {
                    match ev {
                        Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) => {
                            let hash = d
                                .spec
                                .template
                                .metadata
                                .as_ref()
                                .and_then(|m| m.annotations.as_ref())
                                .and_then(|a| a.get(CONFIG_HASH).cloned())
                                .unwrap_or_default();
                            let key = format!("{}/{}", d.namespace().unwrap_or_default(), d.name_any());
                            let mut map = seen.lock().unwrap();
                            if map.get(&key).is_none_or(|(h, _)| *h != hash) {
                                map.insert(key, (hash, Instant::now()));
                            }
                        }
                        Ok(watcher::Event::InitDone) => {
                            let _ = ready_tx.send(());
                        }
                        _ => {}
                    }
                }
            });
        }
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(120), ready_rx.recv()).await.context("watches synced")?;
        }
        let n = self.scale.secret_changes;
        for k in 0..n {
            // Spread over namespaces and servers.
            let i = (k * self.scale.bees / n + k) % self.scale.bees;
            let ns = self.namespaces[ns_of(i, &self.scale)].clone();
            let bee = Self::bee_name(i);
            let secret_key = format!("{ns}/{bee}-key");
            let deploy_key = format!("{ns}/{bee}");
            let hash_before = hashes_seen.lock().unwrap().get(&deploy_key).map(|h| h.0.clone());
            let Some(hash_before) = hash_before else { bail!("no Deployment {deploy_key} seen") };
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
            let sent = Instant::now();
            let patched = api
                .patch(
                    &format!("{bee}-key"),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"stringData": {"prvkey": format!("{:064x}", 1_000_000 + k)}})),
                )
                .await?;
            let rv = patched.resource_version().unwrap_or_default();
            let deadline = Instant::now() + Duration::from_secs(60);
            let (mut floor, mut rolled) = (None, None);
            while floor.is_none() || rolled.is_none() {
                if floor.is_none()
                    && let Some((seen_rv, at)) = secrets_seen.lock().unwrap().get(&secret_key)
                    && *seen_rv == rv
                {
                    floor = Some(at.duration_since(sent));
                }
                if rolled.is_none()
                    && let Some((h, at)) = hashes_seen.lock().unwrap().get(&deploy_key)
                    && *h != hash_before
                {
                    rolled = Some(at.saturating_duration_since(sent));
                }
                if Instant::now() > deadline {
                    bail!("Secret {secret_key}: no new pod template within 60 s (floor seen: {floor:?})");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            res.secret_floor_ms.push(floor.unwrap().as_secs_f64() * 1000.0);
            res.secret_latency_ms.push(rolled.unwrap().as_secs_f64() * 1000.0);
            self.progress.detail(format!(
                "{}/{n} Secrets changed; last: template after {:.0} ms, bare watch after {:.0} ms",
                k + 1,
                res.secret_latency_ms.last().unwrap(),
                res.secret_floor_ms.last().unwrap()
            ));
            // One by one: the rollout of the previous one settles first.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Ok(())
    }

    /// Every endpoint fails at once; first failed probe served -> fallback ConfigMap flip.
    async fn flip(&self, endpoints: &Endpoints, res: &mut Results) -> anyhow::Result<()> {
        let flipped: Arc<Mutex<HashMap<String, (String, Instant)>>> = Default::default();
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        {
            let seen = flipped.clone();
            let api: Api<ConfigMap> = Api::all(self.client.clone());
            let cfg = watcher::Config::default().labels("app.kubernetes.io/managed-by=colony-operator");
            tokio::spawn(async move {
                let mut stream = watcher::watcher(api, cfg).boxed();
                while let Some(ev) = stream.next().await {
                    match ev {
                        Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => {
                            let v = c.data.as_ref().and_then(|d| d.get("USE_COLONY_OS").cloned()).unwrap_or_default();
                            let key = format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any());
                            let mut map = seen.lock().unwrap();
                            if map.get(&key).is_none_or(|(old, _)| *old != v) {
                                map.insert(key, (v, Instant::now()));
                            }
                        }
                        Ok(watcher::Event::InitDone) => {
                            let _ = ready_tx.send(());
                        }
                        _ => {}
                    }
                }
            });
        }
        tokio::time::timeout(Duration::from_secs(120), ready_rx.recv()).await.context("ConfigMap watch synced")?;
        let key = |i: usize| format!("{}/{}-fallback", self.server_ns(i), Self::server_name(i));
        let value = |i: usize| flipped.lock().unwrap().get(&key(i)).map(|v| v.0.clone());
        for i in 0..self.scale.servers {
            if value(i).as_deref() != Some("true") {
                bail!("{} is {:?} before the servers fail", key(i), value(i));
            }
        }
        for i in 0..self.scale.servers {
            endpoints.set_failing(i, true);
        }
        let start = Instant::now();
        // The bench's instants on the wall clock, for the audit log.
        let wall_start = SystemTime::now();
        let wall = |at: Instant| match at.checked_duration_since(start) {
            Some(after) => wall_start + after,
            None => wall_start - start.duration_since(at),
        };
        loop {
            let done = (0..self.scale.servers).filter(|&i| value(i).as_deref() == Some("false")).count();
            self.progress.detail(format!("{done}/{} fallbacks on", self.scale.servers));
            if done == self.scale.servers {
                break;
            }
            if start.elapsed() > Duration::from_secs(120) {
                bail!("only {done}/{} fallbacks on after 120 s", self.scale.servers);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for i in 0..self.scale.servers {
            let first = endpoints.first_failure(i).context("an endpoint served no failed probe")?;
            let deciding =
                endpoints.deciding_failure(i).context("an endpoint served fewer failed probes than the threshold")?;
            let at = flipped.lock().unwrap().get(&key(i)).unwrap().1;
            res.flip_latency_ms.push(at.saturating_duration_since(first).as_secs_f64() * 1000.0);
            res.flip_probes_ms.push(deciding.saturating_duration_since(first).as_secs_f64() * 1000.0);
            res.flip_decided_ms.push(at.saturating_duration_since(deciding).as_secs_f64() * 1000.0);
            res.flip_moments.push(FlipMoments {
                config_map: format!("{}-fallback", Self::server_name(i)),
                deciding: wall(deciding),
                seen: wall(at),
            });
        }
        res.flip_window = Some((wall_start, SystemTime::now()));
        // Healthy again, and wait for the servers to be Ready before the next phase (a bee's
        // restart waits for a healthy server).
        for i in 0..self.scale.servers {
            endpoints.set_failing(i, false);
        }
        let servers: Api<ColonyServer> = Api::all(self.client.clone());
        let total = self.scale.servers;
        wait_all_ready(
            "ColonyServers healthy again",
            Instant::now(),
            Duration::from_secs(300),
            &self.progress,
            || async {
                let cs = servers.list(&ListParams::default()).await?;
                let ready = cs
                    .items
                    .iter()
                    .filter(|c| c.status.as_ref().is_some_and(|st| condition_true(&st.conditions, "Healthy")))
                    .count();
                Ok((ready, total))
            },
        )
        .await?;
        Ok(())
    }

    /// Pods of `restarts` bees fail at once; each pod's Failed phase -> its deletion.
    async fn restart(&self, res: &mut Results) -> anyhow::Result<()> {
        // Bees Ready again (after the flip, their servers are).
        let bees: Api<FinanceBee> = Api::all(self.client.clone());
        let total = self.scale.bees;
        wait_all_ready("FinanceBees Ready again", Instant::now(), Duration::from_secs(300), &self.progress, || async {
            let fb = bees.list(&ListParams::default()).await?;
            let ready = fb
                .items
                .iter()
                .filter(|b| b.status.as_ref().is_some_and(|st| condition_true(&st.conditions, "Ready")))
                .count();
            Ok((ready, total))
        })
        .await?;
        #[derive(Default, Clone, Copy)]
        struct Seen {
            failed: Option<Instant>,
            deleted: Option<Instant>,
        }
        let seen: Arc<Mutex<HashMap<String, Seen>>> = Default::default();
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        {
            let seen = seen.clone();
            let api: Api<Pod> = Api::all(self.client.clone());
            let cfg = watcher::Config::default().labels("app.kubernetes.io/name=finance-bee");
            tokio::spawn(async move {
                let mut stream = watcher::watcher(api, cfg).boxed();
                while let Some(ev) = stream.next().await {
                    let now = Instant::now();
                    match ev {
                        Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                            let key = format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any());
                            let mut map = seen.lock().unwrap();
                            let e = map.entry(key).or_default();
                            if e.failed.is_none()
                                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
                            {
                                e.failed = Some(now);
                            }
                            if e.deleted.is_none() && p.metadata.deletion_timestamp.is_some() {
                                e.deleted = Some(now);
                            }
                        }
                        Ok(watcher::Event::Delete(p)) => {
                            let key = format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any());
                            let mut map = seen.lock().unwrap();
                            let e = map.entry(key).or_default();
                            e.deleted.get_or_insert(now);
                        }
                        Ok(watcher::Event::InitDone) => {
                            let _ = ready_tx.send(());
                        }
                        _ => {}
                    }
                }
            });
        }
        tokio::time::timeout(Duration::from_secs(120), ready_rx.recv()).await.context("pod watch synced")?;
        // One running pod of each of the first `restarts` bees (spread over namespaces).
        let pods: Api<Pod> = Api::all(self.client.clone());
        let list = pods.list(&ListParams::default().labels("app.kubernetes.io/name=finance-bee")).await?;
        let mut chosen = Vec::new();
        for i in 0..self.scale.restarts {
            let ns = &self.namespaces[ns_of(i, &self.scale)];
            let bee = Self::bee_name(i);
            let pod = list.items.iter().find(|p| {
                p.namespace().as_deref() == Some(ns)
                    && p.labels().get("app.kubernetes.io/instance") == Some(&bee)
                    && p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            });
            let Some(pod) = pod else { bail!("no running pod of bee {ns}/{bee}") };
            chosen.push((ns.clone(), pod.name_any()));
        }
        futures::stream::iter(chosen.clone())
            .map(|(ns, name)| {
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
                async move {
                    api.patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"labels": {FAIL_LABEL: "true"}}})),
                    )
                    .await
                }
            })
            .buffer_unordered(50)
            .try_collect::<Vec<_>>()
            .await?;
        let start = Instant::now();
        loop {
            let map = seen.lock().unwrap().clone();
            let done: Vec<f64> = chosen
                .iter()
                .filter_map(|(ns, name)| {
                    let s = map.get(&format!("{ns}/{name}"))?;
                    Some(s.deleted?.saturating_duration_since(s.failed?).as_secs_f64() * 1000.0)
                })
                .collect();
            self.progress.detail(format!("{}/{} failed pods deleted", done.len(), chosen.len()));
            if done.len() == chosen.len() {
                res.restart_latency_ms = done;
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(180) {
                bail!("only {}/{} failed pods deleted after 180 s", done.len(), chosen.len());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn pod_json(name: &str, app: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "labels": {"app": app, "instance": name}},
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "main", "image": format!("example.invalid/{app}:1"),
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
            }]
        }
    })
}

fn load_avg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("\n[bench] error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run() -> anyhow::Result<bool> {
    let small = std::env::var("SMALL").is_ok_and(|v| !v.is_empty() && v != "0");
    let scale = if small { Scale::small() } else { Scale::full() };
    let out_dir = colony_e2e::repo_root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let binary = operator_binary();
    if !binary.exists() {
        bail!("{} is missing: `make bench` builds it (cargo build --release -p colony-operator)", binary.display());
    }
    let progress = Arc::new(Progress {
        start: Instant::now(),
        phase: Mutex::new("starting".into()),
        detail: Mutex::new(String::new()),
        rss_mib: Mutex::new(0.0),
    });
    let tty = std::io::stderr().is_terminal();
    {
        let p = progress.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                n += 1;
                if tty {
                    eprint!("\r\x1b[K{}", p.line());
                    let _ = std::io::stderr().flush();
                } else if n.is_multiple_of(10) {
                    eprintln!("{}", p.line());
                }
            }
        });
    }
    // The kubeconfig path is one per checkout: never load the fleet into another cluster.
    let cluster = std::env::var("COLONY_CLUSTER_NAME").unwrap_or_else(|_| "colony".into());
    let kubeconfig = std::fs::read_to_string(std::env::var("KUBECONFIG").unwrap_or_default()).unwrap_or_default();
    let context = kubeconfig.lines().find_map(|l| l.strip_prefix("current-context:")).map(str::trim);
    if context != Some(format!("kwok-{cluster}").as_str()) {
        bail!("the kubeconfig points at {context:?}, not the cluster {cluster:?}: take the other cluster down first");
    }
    let api_port = server_port(&kubeconfig).context("no server: URL in the kubeconfig")?;
    eprintln!("[bench] fleet: {scale:?}");
    let client = colony_e2e::client().await;
    let mut res = Results { scale: Some(scale), busy_load: load_avg(), ..Default::default() };
    let bench_start = progress.start;
    let since = |i: Instant| i.duration_since(bench_start).as_secs_f64();
    let phase_mark = |res: &mut Results, name: &str, from: Instant| {
        res.phases.push((name.to_string(), since(from), since(Instant::now())));
    };

    progress.phase("cleaning up a previous run");
    clean_previous(&client, &progress).await?;
    colony_e2e::install_crds(&client).await?;
    let pods_needed = scale.bees * 2 + scale.unrelated_pods;
    progress.phase("adding kwok nodes");
    res.nodes = ensure_nodes(&client, pods_needed, &progress).await?;

    let namespaces: Vec<String> = (0..scale.namespaces).map(|i| format!("bench-{i:02}")).collect();
    let bench = Bench { client: client.clone(), scale, progress: progress.clone(), namespaces: namespaces.clone() };
    bench.create_namespaces(&namespaces).await?;

    let t = Instant::now();
    progress.phase("floor: the controller-manager alone brings up as many pods as bees");
    bench.floor(&mut res).await?;
    phase_mark(&mut res, "floor", t);

    let t = Instant::now();
    progress.phase("unrelated Secrets, ConfigMaps and pods");
    bench.unrelated().await?;
    phase_mark(&mut res, "unrelated objects", t);

    let endpoints = Endpoints::start(scale.servers).await?;
    progress.phase("starting the operator (release build)");
    let admin_port = colony_e2e::free_port();
    let mut child = start_operator(&binary, admin_port, &out_dir.join("operator.log"))?;
    let pid = child.id().context("operator pid")?;
    let samples: Arc<Mutex<Vec<Sample>>> = Default::default();
    let hwm_kib = Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let (samples, progress, hwm) = (samples.clone(), progress.clone(), hwm_kib.clone());
        let hz = clock_ticks();
        tokio::spawn(async move {
            let mut last: Option<(Instant, u64)> = None;
            loop {
                let Some((rss, peak, ticks)) = proc_stats(pid) else { return };
                let now = Instant::now();
                let cpu = last.map(|(t, tk)| (ticks - tk) as f64 / hz / now.duration_since(t).as_secs_f64() * 100.0);
                if let Some(cpu) = cpu {
                    samples.lock().unwrap().push(Sample {
                        t: now.duration_since(bench_start).as_secs_f64(),
                        rss_mib: rss as f64 / 1024.0,
                        cpu_pct: cpu,
                        api_connections: connections_to(pid, api_port).unwrap_or(0),
                    });
                }
                hwm.store(peak, Ordering::Relaxed);
                *progress.rss_mib.lock().unwrap() = rss as f64 / 1024.0;
                last = Some((now, ticks));
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
        });
    }
    let ready_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(m) = scrape(admin_port).await
            && !m.is_empty()
        {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", admin_port)).await?;
            s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await?;
            let mut b = Vec::new();
            s.read_to_end(&mut b).await?;
            if String::from_utf8_lossy(&b).starts_with("HTTP/1.1 200") {
                break;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("the operator exited ({status}); see target/bench/operator.log");
        }
        if Instant::now() > ready_deadline {
            bail!("the operator was not ready within 120 s; see target/bench/operator.log");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let metrics_before = scrape(admin_port).await?;
    let fleet_from = SystemTime::now();
    let t = Instant::now();
    progress.phase("fleet: ColonyServers, FinanceBees and their Secrets, until all Ready");
    bench.fleet(&endpoints, &mut res).await?;
    phase_mark(&mut res, "fleet", t);

    let t = Instant::now();
    progress.phase("settling: every image recorded as known good, then no reconcile for 15 s");
    // All Ready is not the end of the operator's work: statuses catch up after the pods, and
    // each bee records its image as known good `stableAfter` after it is available (a timed
    // write that is work, not noise): at rest starts once none is left to do.
    let settle_start = Instant::now();
    let mut quiet = Quiet::default();
    quiet.observe(admin_port).await?;
    let bees: Api<FinanceBee> = Api::all(bench.client.clone());
    let mut pending = usize::MAX;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        quiet.observe(admin_port).await?;
        if pending > 0 && quiet.for_() >= Duration::from_secs(5) {
            let listed = bees.list(&ListParams::default()).await?;
            pending = listed
                .iter()
                .filter(|b| b.status.as_ref().and_then(|s| s.rollout.last_known_good_image.as_ref()).is_none())
                .count();
        }
        progress.detail(format!(
            "{quiet}; {} bees still to record a known-good image",
            if pending == usize::MAX { "?".to_string() } else { pending.to_string() }
        ));
        if pending == 0 && quiet.for_() >= Duration::from_secs(15) {
            break;
        }
        if settle_start.elapsed() > Duration::from_secs(600) {
            bail!("the operator did not settle within 10 min after the fleet was Ready");
        }
    }
    res.settle_s = settle_start.elapsed().as_secs_f64();
    phase_mark(&mut res, "settling", t);
    let t = Instant::now();
    progress.phase("at rest: measuring");
    let metrics_settled = scrape(admin_port).await?;
    let fleet_to = SystemTime::now();
    let rest_from = SystemTime::now();
    let rest_start = Instant::now();
    let rest_ticks = proc_stats(pid).context("operator stats")?.2;
    tokio::time::sleep(scale.rest_window).await;
    let (rss_rest, _, ticks) = proc_stats(pid).context("operator stats")?;
    let rest_to = SystemTime::now();
    res.cpu_rest_pct = (ticks - rest_ticks) as f64 / clock_ticks() / rest_start.elapsed().as_secs_f64() * 100.0;
    res.rss_rest_mib = rss_rest as f64 / 1024.0;
    res.api_connections_rest = connections_to(pid, api_port).unwrap_or(0);
    phase_mark(&mut res, "at rest", t);

    let t = Instant::now();
    progress.phase("Secret change -> rollout");
    bench.secret_rollout(&mut res).await?;
    phase_mark(&mut res, "Secret changes", t);

    let t = Instant::now();
    progress.phase("health -> flip");
    let before_flips = reconcile_counts(&scrape(admin_port).await?);
    bench.flip(&endpoints, &mut res).await?;
    let after_flips = reconcile_counts(&scrape(admin_port).await?);
    res.flip_reconciles =
        after_flips.iter().map(|(c, n)| (c.clone(), n - before_flips.get(c).copied().unwrap_or(0.0))).collect();
    phase_mark(&mut res, "health flips", t);

    let t = Instant::now();
    progress.phase("restart: pods fail at once");
    bench.restart(&mut res).await?;
    phase_mark(&mut res, "restarts", t);

    let metrics_end = scrape(admin_port).await?;
    res.rss_peak_mib = hwm_kib.load(Ordering::Relaxed) as f64 / 1024.0;
    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    res.samples = samples.lock().unwrap().clone();

    // An operator is restarted into its fleet (an upgrade, a new leader): it lists everything
    // at once and reconciles every object in one burst, where the first one grew with the
    // fleet. Its resident set at rest afterwards is the other half of "RSS at rest".
    let t = Instant::now();
    progress.phase("restart into the fleet: a new operator settles, then rests");
    let admin_port = colony_e2e::free_port();
    let mut child = start_operator(&binary, admin_port, &out_dir.join("operator-restarted.log"))?;
    let pid = child.id().context("operator pid")?;
    let settle_start = Instant::now();
    let mut quiet = Quiet::default();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Until its admin server listens.
        if quiet.observe(admin_port).await.is_err() {
            continue;
        }
        progress.detail(quiet.to_string());
        if quiet.reconciles > 0.0 && quiet.for_() >= Duration::from_secs(15) {
            break;
        }
        if settle_start.elapsed() > Duration::from_secs(600) {
            bail!("the restarted operator did not settle within 10 min");
        }
    }
    res.restart_settle_s = settle_start.elapsed().as_secs_f64();
    tokio::time::sleep(scale.rest_window).await;
    res.rss_restart_rest_mib = proc_stats(pid).context("operator stats")?.0 as f64 / 1024.0;
    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    phase_mark(&mut res, "restart into the fleet", t);

    progress.phase("reading the audit log and the metrics");
    for (controller, buckets) in reconcile_histograms(&metrics_end) {
        let count = buckets.last().map(|b| b.1).unwrap_or(0.0);
        res.reconcile
            .insert(controller, (histogram_quantile(&buckets, 0.5), histogram_quantile(&buckets, 0.99), count));
    }
    for (controller, buckets) in histograms(&metrics_end, "colony_operator_reconcile_self_duration_seconds") {
        let count = buckets.last().map(|b| b.1).unwrap_or(0.0);
        res.reconcile_self
            .insert(controller, (histogram_quantile(&buckets, 0.5), histogram_quantile(&buckets, 0.99), count));
    }
    let settled_histograms = reconcile_histograms(&metrics_settled);
    for (controller, buckets) in reconcile_histograms(&metrics_end) {
        let after = histogram_delta(&buckets, settled_histograms.get(&controller));
        let count = after.last().map(|b| b.1).unwrap_or(0.0);
        res.reconcile_after_fleet
            .insert(controller, (histogram_quantile(&after, 0.5), histogram_quantile(&after, 0.99), count));
    }
    const REQUESTS: &str = "colony_operator_reconcile_api_request_duration_seconds";
    let requests_before = histograms(&metrics_before, REQUESTS);
    for (controller, buckets) in histograms(&metrics_settled, REQUESTS) {
        let during = histogram_delta(&buckets, requests_before.get(&controller));
        let count = during.last().map(|b| b.1).unwrap_or(0.0);
        res.request_client_fleet
            .insert(controller, (histogram_quantile(&during, 0.5), histogram_quantile(&during, 0.99), count));
    }
    let (requests, reads_logged) = operator_requests()?;
    let in_window = |a: SystemTime, b: SystemTime| requests.iter().filter(move |r| r.at >= a && r.at < b);
    let (before, settled) = (reconcile_counts(&metrics_before), reconcile_counts(&metrics_settled));
    res.reconciles_fleet = settled.iter().map(|(c, n)| n - before.get(c).copied().unwrap_or(0.0)).sum();
    res.requests_fleet = in_window(fleet_from, fleet_to).count();
    res.api_latency_fleet_ms =
        in_window(fleet_from, fleet_to).filter(|r| r.verb != "watch").filter_map(|r| r.latency_ms).collect();
    res.api_latency_fleet_ms.sort_by(f64::total_cmp);
    for r in in_window(fleet_from, fleet_to).filter(|r| r.verb != "watch") {
        if let (Some(controller), Some(latency)) = (controller_of(&r.name), r.latency_ms) {
            res.api_latency_fleet_by_controller.entry(controller.to_string()).or_default().push(latency);
        }
    }
    res.api_latency_fleet_by_controller.values_mut().for_each(|v| v.sort_by(f64::total_cmp));
    if reads_logged && res.reconciles_fleet > 0.0 {
        res.requests_per_reconcile = Some(res.requests_fleet as f64 / res.reconciles_fleet);
        res.requests_rest = Some(in_window(rest_from, rest_to).count());
    }
    let writes: Vec<&Request> = in_window(rest_from, rest_to).filter(|r| is_write(&r.verb)).collect();
    res.writes_per_min_rest = writes.len() as f64 / scale.rest_window.as_secs_f64() * 60.0;
    res.writes_rest = writes.iter().map(|r| format!("{} {}", r.verb, r.resource)).collect();
    std::fs::write(out_dir.join("requests-fleet.txt"), requests_by_kind(in_window(fleet_from, fleet_to)))?;
    if let Some((from, to)) = res.flip_window {
        std::fs::write(out_dir.join("requests-flips.txt"), requests_by_kind(in_window(from, to)))?;
    }
    res.flip_split =
        res.flip_moments.iter().filter_map(|f| split_flip(f, &requests, Duration::from_millis(20))).collect();

    std::fs::write(
        out_dir.join("samples.csv"),
        std::iter::once("seconds,rss_mib,cpu_percent_of_a_core,api_connections\n".to_string())
            .chain(
                res.samples
                    .iter()
                    .map(|s| format!("{:.1},{:.2},{:.2},{}\n", s.t, s.rss_mib, s.cpu_pct, s.api_connections)),
            )
            .collect::<String>(),
    )?;
    plots::write_all(&out_dir, &res)?;
    let (table, all_pass) = report::write(&out_dir, &res)?;
    eprintln!("\r\x1b[K\n{table}");
    eprintln!("[bench] report: {}", out_dir.join("report.md").display());
    if !small {
        // The namespaces stay for inspection until the next run or `make cluster-down`.
    }
    Ok(all_pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = r#"# TYPE colony_operator_reconcile_duration_seconds histogram
colony_operator_reconcile_duration_seconds_bucket{controller="financebee",le="0.01"} 50
colony_operator_reconcile_duration_seconds_bucket{controller="financebee",le="0.1"} 90
colony_operator_reconcile_duration_seconds_bucket{controller="financebee",le="+Inf"} 100
colony_operator_reconcile_self_duration_seconds_bucket{controller="financebee",le="0.01"} 99
colony_operator_reconcile_self_duration_seconds_bucket{controller="financebee",le="0.1"} 100
colony_operator_reconcile_self_duration_seconds_bucket{controller="financebee",le="+Inf"} 100
"#;

    #[test]
    fn each_family_is_read_on_its_own() {
        let whole = reconcile_histograms(METRICS);
        assert_eq!(whole["financebee"], vec![(0.01, 50.0), (0.1, 90.0), (f64::INFINITY, 100.0)]);
        assert_eq!(histogram_quantile(&whole["financebee"], 0.5), 0.01);
        assert!(histogram_quantile(&whole["financebee"], 0.99).is_infinite());
        let own = histograms(METRICS, "colony_operator_reconcile_self_duration_seconds");
        assert_eq!(own["financebee"], vec![(0.01, 99.0), (0.1, 100.0), (f64::INFINITY, 100.0)]);
        assert!((histogram_quantile(&own["financebee"], 0.99) - 0.01).abs() < 1e-9);
    }

    #[test]
    fn a_delta_holds_only_the_observations_since_the_earlier_scrape() {
        let later = vec![(0.01, 50.0), (0.1, 90.0), (f64::INFINITY, 100.0)];
        let earlier = vec![(0.01, 40.0), (0.1, 40.0), (f64::INFINITY, 40.0)];
        assert_eq!(histogram_delta(&later, Some(&earlier)), vec![(0.01, 10.0), (0.1, 50.0), (f64::INFINITY, 60.0)]);
        // A family the earlier scrape did not have yet: everything is new.
        assert_eq!(histogram_delta(&later, None), later);
    }

    #[test]
    fn only_established_connections_of_the_process_to_the_port_count() {
        // 127.0.0.1:40000 -> 127.0.0.1:6443 (0x192B), established, inode 100; the same port in
        // TIME_WAIT (06); another process's connection (inode 300); a connection elsewhere.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:9C40 0100007F:192B 01 00000000:00000000 00:00000000 00000000     0        0 100 1 0 20 4 30 10 -1
   1: 0100007F:9C41 0100007F:192B 06 00000000:00000000 00:00000000 00000000     0        0 0 1 0 20 4 30 10 -1
   2: 0100007F:9C42 0100007F:192B 01 00000000:00000000 00:00000000 00000000     0        0 300 1 0 20 4 30 10 -1
   3: 0100007F:9C43 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 101 1 0 20 4 30 10 -1
";
        let ours: HashSet<u64> = [100, 101].into();
        assert_eq!(count_connections(table, 6443, &ours), 1);
        assert_eq!(count_connections(table, 8080, &ours), 1);
        assert_eq!(count_connections(table, 9999, &ours), 0);
    }

    fn request(verb: &str, resource: &str, subresource: &str, name: &str, latency_ms: Option<f64>) -> Request {
        Request {
            at: SystemTime::UNIX_EPOCH,
            verb: verb.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            name: name.into(),
            latency_ms,
        }
    }

    #[test]
    fn requests_are_told_apart_by_verb_resource_and_subresource() {
        let requests = [
            request("patch", "financebees", "status", "bee-0001", Some(10.0)),
            request("patch", "financebees", "status", "bee-0002", Some(30.0)),
            request("patch", "financebees", "", "bee-0001", Some(500.0)),
            request("get", "secrets", "", "bee-0001-key", None),
        ];
        let table = requests_by_kind(requests.iter());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[1].contains("get secrets") && lines[1].trim_end().ends_with('—'), "{table}");
        assert!(lines[2].starts_with("      1  patch financebees ") && lines[2].ends_with("500 / 500 ms"), "{table}");
        assert!(
            lines[3].starts_with("      2  patch financebees/status") && lines[3].ends_with("30 / 30 ms"),
            "{table}"
        );
    }

    #[test]
    fn a_request_belongs_to_the_controller_its_object_is_named_after() {
        assert_eq!(controller_of("srv-007-fallback"), Some("colonyserver"));
        assert_eq!(controller_of("srv-007.1873a0c1d2e3f4a5"), Some("colonyserver"));
        assert_eq!(controller_of("bee-0042-key"), Some("financebee"));
        assert_eq!(controller_of("unrelated-17"), None);
        assert_eq!(controller_of(""), None);
    }

    #[test]
    fn the_api_port_is_read_from_the_kubeconfig() {
        assert_eq!(server_port("clusters:\n- cluster:\n    server: https://127.0.0.1:32766\n"), Some(32766));
        assert_eq!(server_port("    server: https://api.example\n"), Some(443));
        assert_eq!(server_port("kind: Config\n"), None);
    }

    #[test]
    fn a_flip_is_split_at_the_first_write_of_its_config_map_between_the_probe_and_the_watch() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let write = |name: &str, sub: &str, ms: u64, latency: f64| Request {
            at: at(ms),
            ..request("patch", "configmaps", sub, name, Some(latency))
        };
        let flip = FlipMoments { config_map: "srv-001-fallback".into(), deciding: at(100), seen: at(400) };
        let requests = [
            // Before the deciding probe (the server's creation): not the flip's.
            write("srv-001-fallback", "", 10, 5.0),
            // Another server's ConfigMap.
            write("srv-002-fallback", "", 150, 7.0),
            write("srv-001-fallback", "", 250, 120.0),
            // A second write of the same flip (a merge patch after the apply): the split
            // starts from the first.
            write("srv-001-fallback", "", 380, 10.0),
        ];
        let split = split_flip(&flip, &requests, Duration::from_millis(20)).expect("the flip's write");
        assert_eq!(split, FlipSplit { to_api_ms: 150.0, api_ms: 120.0, to_watch_ms: 30.0 });
        // Received a little before the bench's reading of the deciding probe (two clocks):
        // within the slack it is the flip's write, and that part is negative, not hidden.
        let early = [write("srv-001-fallback", "", 90, 50.0)];
        let split = split_flip(&flip, &early, Duration::from_millis(20)).expect("within the slack");
        assert_eq!(split.to_api_ms, -10.0);
        // No write of it in the log: no split (not a guess).
        assert_eq!(split_flip(&flip, &requests[..2], Duration::from_millis(20)), None);
        // A read of it is not a write.
        let read = [Request { at: at(200), ..request("get", "configmaps", "", "srv-001-fallback", Some(1.0)) }];
        assert_eq!(split_flip(&flip, &read, Duration::from_millis(20)), None);
    }
}
