//! Harness for the end-to-end tests: a client for the local control plane
//! (`KUBECONFIG=target/cluster/kubeconfig`), one namespace per test, polling with generous
//! deadlines, and the operator binary started as a real process.
use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rand::Rng;

pub mod chaos;
pub mod colonyos;
pub mod endpoint;
pub mod fixtures;
pub mod gitops;
pub mod operator;
pub mod policy;
pub mod proxy;
pub use endpoint::TestEndpoint;
pub use operator::OperatorProcess;

/// A generous default deadline: tests assert behaviour, never speed.
pub const DEADLINE: Duration = Duration::from_secs(90);

pub fn repo_root() -> PathBuf {
    // `cargo test` sets CARGO_MANIFEST_DIR when it runs a test, too: prefer that to the path
    // compiled in, which is stale when a shared target dir serves a checkout somewhere else.
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        return PathBuf::from(dir).parent().expect("tests/ has a parent").to_path_buf();
    }
    // A binary run directly (the bench, from `make bench`): the checkout it runs in, found
    // from the working directory, before the compiled-in one.
    let is_root = |d: &std::path::Path| d.join("crds").is_dir() && d.join("tests/src/lib.rs").is_file();
    std::env::current_dir()
        .ok()
        .and_then(|cwd| cwd.ancestors().find(|d| is_root(d)).map(std::path::Path::to_path_buf))
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
        })
}

pub async fn client() -> Client {
    let kubeconfig = std::env::var("KUBECONFIG").unwrap_or_default();
    assert!(
        !kubeconfig.is_empty(),
        "KUBECONFIG is not set: run the end-to-end tests through `make test` or `make e2e-test`"
    );
    Client::try_default().await.expect("a client for the local control plane")
}

/// Polls `check` every 250 ms until it returns `Some`, or panics after `deadline` naming what
/// it waited for and the last observation.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = tokio::time::Instant::now();
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(observed) => observed,
        };
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}; last observed: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A namespace of its own for one test, deleted by `cleanup`.
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let suffix: u32 = rand::rng().random_range(0..1_000_000);
        let name = format!("{prefix}-{suffix:06}");
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "colony.zyeute.io/e2e": "true" } }
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create test namespace");
        Self { name, client: client.clone() }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub async fn cleanup(self) {
        let _ = Api::<Namespace>::all(self.client.clone()).delete(&self.name, &DeleteParams::default()).await;
    }
}

/// Installs (server-side applies) every CRD in `crds/` and waits until each is Established.
pub async fn install_crds(client: &Client) -> anyhow::Result<Vec<String>> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let mut names = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(repo_root().join("crds"))?.collect::<Result<_, _>>()?;
    files.sort_by_key(|e| e.path());
    for entry in files {
        let text = std::fs::read_to_string(entry.path())?;
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&text).with_context(|| format!("parsing {}", entry.path().display()))?;
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        api.patch(&name, &PatchParams::apply("colony-e2e").force(), &Patch::Apply(&crd)).await?;
        names.push(name);
    }
    for name in &names {
        let api = api.clone();
        let n = name.clone();
        wait_for(&format!("CRD {name} Established"), DEADLINE, || {
            let api = api.clone();
            let n = n.clone();
            async move {
                let crd = api.get(&n).await.map_err(|e| e.to_string())?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if established { Ok(()) } else { Err("not established".into()) }
            }
        })
        .await;
    }
    Ok(names)
}

/// Runs `kubectl` (from the control plane's bin dir on PATH) with the test KUBECONFIG.
pub async fn kubectl(args: &[&str], stdin: Option<&str>) -> anyhow::Result<std::process::Output> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("kubectl")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running kubectl (is the control plane's bin dir on PATH?)")?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).await?;
        drop(pipe);
    }
    Ok(child.wait_with_output().await?)
}

/// A TCP port free on every address, below the kernel's ephemeral range: a process started
/// later binds it, and in between no outgoing connection on the machine can be handed it (a
/// port from `bind(0)` is an ephemeral one, and was taken that way once).
pub fn free_port() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    let mut rng = rand::rng();
    if ephemeral_low > 12_000 {
        for _ in 0..500 {
            let port = rng.random_range(10_000..ephemeral_low);
            let free = |host: &str| std::net::TcpListener::bind((host, port)).is_ok();
            if free("0.0.0.0") && free("127.0.0.1") {
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn ensure(cond: bool, msg: impl Into<String>) -> anyhow::Result<()> {
    if cond { Ok(()) } else { bail!(msg.into()) }
}

/// Applies a YAML document into `namespace` with kubectl (server-side apply).
pub async fn apply_yaml(namespace: &str, yaml: &str) {
    let out = kubectl(&["apply", "--server-side", "--force-conflicts", "-n", namespace, "-f", "-"], Some(yaml))
        .await
        .unwrap();
    assert!(out.status.success(), "kubectl apply failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The local control plane's directory: its binaries, logs and config (cluster name from
/// `COLONY_CLUSTER_NAME`, as in tests/cluster/lib.sh).
pub fn cluster_dir() -> PathBuf {
    let cluster = std::env::var("COLONY_CLUSTER_NAME").unwrap_or_else(|_| "colony".into());
    repo_root().join(format!("target/cluster/kwok/clusters/{cluster}"))
}

/// The API server's audit log of the local control plane.
pub fn audit_log_path() -> PathBuf {
    cluster_dir().join("logs/audit.log")
}

/// Sends `signal` (e.g. "STOP", "CONT") to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
    assert!(ok.is_ok_and(|s| s.success()), "kill -{signal} {pid}");
}

/// The audit log's text, the files the API server rotated away (`audit-<time>.log` beside
/// `audit.log`) included, oldest first: a busy test run can fill and rotate `audit.log`.
pub fn audit_log_text() -> String {
    let path = audit_log_path();
    let mut rotated: Vec<PathBuf> = path
        .parent()
        .and_then(|dir| std::fs::read_dir(dir).ok())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("audit-") && n.ends_with(".log"))
        })
        .collect();
    rotated.sort();
    rotated.push(path);
    rotated.iter().filter_map(|p| std::fs::read_to_string(p).ok()).collect::<Vec<_>>().join("\n")
}

/// Writes by the operator (user agent `colony-operator/...`) to objects in `namespace`, as
/// recorded in the API server's audit log between `since` and now.
pub fn operator_writes(namespace: &str, since: std::time::SystemTime) -> Vec<String> {
    let text = audit_log_text();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["userAgent"].as_str().is_some_and(|ua| ua.starts_with("colony-operator/")))
        .filter(|e| e["objectRef"]["namespace"].as_str() == Some(namespace))
        .filter(|e| matches!(e["verb"].as_str(), Some("create" | "update" | "patch" | "delete")))
        .filter(|e| e["stage"].as_str() == Some("ResponseComplete"))
        .filter(|e| e["requestReceivedTimestamp"].as_str().and_then(parse_audit_time).is_some_and(|t| t >= since))
        .map(|e| {
            format!(
                "{} {}/{}{}",
                e["verb"].as_str().unwrap_or(""),
                e["objectRef"]["resource"].as_str().unwrap_or(""),
                e["objectRef"]["name"].as_str().unwrap_or(""),
                e["objectRef"]["subresource"].as_str().map(|s| format!("/{s}")).unwrap_or_default()
            )
        })
        .collect()
}

/// One write in the audit log, with who made it.
#[derive(Debug, Clone)]
pub struct AuditWrite {
    pub at: std::time::SystemTime,
    pub user_agent: String,
    pub verb: String,
    /// `resource/name[/subresource]`.
    pub object: String,
    pub code: i64,
}

/// Every write (create, update, patch, delete) to objects in `namespace` recorded in the
/// audit log, by any client, oldest first.
pub fn audit_writes(namespace: &str) -> Vec<AuditWrite> {
    let text = audit_log_text();
    let mut out: Vec<AuditWrite> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["objectRef"]["namespace"].as_str() == Some(namespace))
        .filter(|e| matches!(e["verb"].as_str(), Some("create" | "update" | "patch" | "delete")))
        .filter(|e| e["stage"].as_str() == Some("ResponseComplete"))
        .filter_map(|e| {
            Some(AuditWrite {
                at: e["requestReceivedTimestamp"].as_str().and_then(parse_audit_time)?,
                user_agent: e["userAgent"].as_str().unwrap_or("").to_string(),
                verb: e["verb"].as_str().unwrap_or("").to_string(),
                object: format!(
                    "{}/{}{}",
                    e["objectRef"]["resource"].as_str().unwrap_or(""),
                    e["objectRef"]["name"].as_str().unwrap_or(""),
                    e["objectRef"]["subresource"].as_str().map(|s| format!("/{s}")).unwrap_or_default()
                ),
                code: e["responseStatus"]["code"].as_i64().unwrap_or(0),
            })
        })
        .collect();
    out.sort_by_key(|w| w.at);
    out
}

/// An audit log timestamp (RFC 3339, e.g. `2026-11-27T21:20:00.123456Z`).
pub fn parse_audit_time(s: &str) -> Option<std::time::SystemTime> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(std::time::SystemTime::from)
}

/// The `USE_COLONY_OS` value the fallback ConfigMap `config_map` publishes (None: no such
/// ConfigMap or key yet).
pub async fn use_colony_os(cms: &Api<k8s_openapi::api::core::v1::ConfigMap>, config_map: &str) -> Option<String> {
    cms.get_opt(config_map).await.ok().flatten().and_then(|c| c.data).and_then(|d| d.get("USE_COLONY_OS").cloned())
}

/// The Events (events.k8s.io) about the object `name` in `ns` (none when they cannot be listed).
pub async fn events_regarding(ns: &TestNamespace, name: &str) -> Vec<k8s_openapi::api::events::v1::Event> {
    let api: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    api.list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// Reasons and notes of the Events about the object `name` in `ns`; a series counts as many
/// as it holds.
pub async fn events_about(ns: &TestNamespace, name: &str) -> Vec<(String, String)> {
    events_regarding(ns, name)
        .await
        .into_iter()
        .flat_map(|e| {
            let n = e.series.as_ref().map(|s| s.count).unwrap_or(1) as usize;
            vec![(e.reason.unwrap_or_default(), e.note.unwrap_or_default()); n]
        })
        .collect()
}

/// Waits until an Event about `name` has `reason` and a note that contains `note`.
pub async fn wait_event(ns: &TestNamespace, name: &str, reason: &str, note: &str) {
    wait_for(&format!("an Event {reason} about {name}"), DEADLINE, || async {
        let events = events_about(ns, name).await;
        if events.iter().any(|(r, n)| r == reason && n.contains(note)) { Ok(()) } else { Err(format!("{events:?}")) }
    })
    .await
}

/// Waits until the fallback ConfigMap `config_map` publishes `USE_COLONY_OS=want`.
/// Waits until ColonyServer `name`'s condition `type_` has status `want`; the server then.
pub async fn wait_server_condition(
    api: &Api<colony_operator::api::ColonyServer>,
    name: &str,
    type_: &str,
    want: &str,
) -> colony_operator::api::ColonyServer {
    wait_for(&format!("{name} {type_}={want}"), DEADLINE, || async {
        let cs = api.get(name).await.map_err(|e| e.to_string())?;
        let condition = cs.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == type_));
        match condition {
            Some(c) if c.status == want => Ok(cs),
            other => Err(format!("{:?}", other.map(|c| (&c.status, &c.reason, &c.message)))),
        }
    })
    .await
}

pub async fn wait_use_colony_os(
    cms: &Api<k8s_openapi::api::core::v1::ConfigMap>,
    config_map: &str,
    want: &str,
    what: &str,
) {
    wait_for(what, DEADLINE, || async {
        match use_colony_os(cms, config_map).await {
            Some(v) if v == want => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}
