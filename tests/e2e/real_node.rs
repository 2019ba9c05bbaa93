//! The real node tier: containers really run (containerd + runc + a real kubelet, see
//! tests/cluster/node-up.sh), next to the kwok tier's simulated pods.
//! - The Helm chart installs the operator from its image (`make image`) on the real node,
//!   under the `restricted` Pod Security level with its own ServiceAccount and only the
//!   chart's RBAC; it reaches the API server through the in-cluster address (the
//!   `kubernetes` Service, routed by kube-proxy); two replicas elect a leader; deleting the
//!   leader's pod hands over to the other replica, which reconciles.
//! - A FinanceBee whose container really exits 1 goes into a real CrashLoopBackOff; the
//!   operator's restart budget acts and stalls it. A release whose image does not exist, or
//!   whose container crashes, rolls back to the last known good image.
//! - A key rotation rolls real pods, and the new pods log the fingerprint of the new key.
//! - A FinanceBee of the real executor image (`localhost/colony-bee:1`, the colonies Go SDK)
//!   executes a process submitted to the real server: the server records it successful, by
//!   the bee's executor.
//!
//! These tests never skip: without the real node they fail and say how to get one.
use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use colony_e2e::{
    DEADLINE, OperatorProcess, TestEndpoint, TestNamespace, apply_yaml, client, install_crds, kubectl, repo_root,
    wait_for,
};
use colony_operator::api::{ColonyServer, FinanceBee};
use colony_operator::runtime::rollout::{crash_looping, running_image};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};

const NODE: &str = "real-node";
const TAINT: &str = "colony.zyeute.io/real-node";
const TESTBEE: &str = "localhost/colony-testbee:1";
const TESTBEE_CRASH: &str = "localhost/colony-testbee:crash";
/// A tag that does not exist: the kubelet cannot pull it, the rollout misses its deadline.
const TESTBEE_MISSING: &str = "localhost/colony-testbee:no-such-tag";
/// Real containers start in seconds, crash loops back off for 10 s and more: more room than
/// the kwok tier's default.
const LONG: Duration = Duration::from_secs(240);

/// Fails (never skips) unless the real node is there and Ready.
async fn require_real_node(client: &Client) {
    let how = "these tests need the real node: run `make cluster-up REAL_NODE=1` (root, and the Debian \
               packages containerd, runc, containernetworking-plugins, iptables; tests/cluster/node-up.sh \
               names what is missing)";
    let node = Api::<Node>::all(client.clone())
        .get_opt(NODE)
        .await
        .unwrap_or_else(|e| panic!("reading node {NODE}: {e}"))
        .unwrap_or_else(|| panic!("no node `{NODE}` in the cluster: {how}"));
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    assert!(ready, "node `{NODE}` is not Ready: {how}");
}

/// The YAML of a podTemplate (FinanceBee) that puts the pods on the real node.
const ON_REAL_NODE: &str = r#"{nodeSelector: {"colony.zyeute.io/real-node": "true"}, tolerations: [{key: colony.zyeute.io/real-node, operator: Exists, effect: NoSchedule}]}"#;

/// The operator image from `make image`, imported into the real node's containerd once per
/// test binary; returns its name.
async fn operator_image() -> String {
    static IMPORTED: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    IMPORTED
        .get_or_init(|| async {
            let dir = repo_root().join("target/image");
            let archive = dir.join("colony-operator.tar");
            let name = std::fs::read_to_string(dir.join("name")).unwrap_or_default().trim().to_string();
            assert!(
                archive.exists() && !name.is_empty(),
                "{} is missing: run `make image` first (make test does)",
                archive.display()
            );
            let out = tokio::process::Command::new(repo_root().join("tests/cluster/node-import.sh"))
                .arg(&archive)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output()
                .await
                .expect("run tests/cluster/node-import.sh");
            assert!(out.status.success(), "importing the operator image: {}", String::from_utf8_lossy(&out.stderr));
            name
        })
        .await
        .clone()
}

fn is_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn node_of(p: &Pod) -> String {
    p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default()
}

/// The first container's status: (containerID, restartCount, waiting reason, last exit code,
/// last finishedAt).
fn container(p: &Pod) -> (String, i32, Option<String>, Option<i32>, Option<SystemTime>) {
    let Some(c) = p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).and_then(|c| c.first()) else {
        return (String::new(), 0, None, None, None);
    };
    let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.clone());
    let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    (
        c.container_id.clone().unwrap_or_default(),
        c.restart_count,
        waiting,
        last.map(|t| t.exit_code),
        last.and_then(|t| t.finished_at.as_ref()).map(|t| SystemTime::from(t.0)),
    )
}

async fn pods_with(pods: &Api<Pod>, selector: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(selector)).await.map(|l| l.items).unwrap_or_default()
}

async fn logs(ns: &str, pod: &str) -> String {
    let out = kubectl(&["logs", "-n", ns, pod], None).await.unwrap();
    assert!(out.status.success(), "kubectl logs {pod}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn fingerprint(key: &str) -> String {
    let sum = Sha256::digest(key.as_bytes());
    sum.iter().map(|b| format!("{b:02x}")).collect::<String>()[..16].to_string()
}

/// Writes to `resource` objects in `namespace` by `user`, from the API server's audit log.
fn writes_by(user: &str, namespace: &str, resource: &str) -> Vec<String> {
    let text = colony_e2e::audit_log_text();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["user"]["username"].as_str() == Some(user))
        .filter(|e| e["objectRef"]["namespace"].as_str() == Some(namespace))
        .filter(|e| e["objectRef"]["resource"].as_str() == Some(resource))
        .filter(|e| matches!(e["verb"].as_str(), Some("create" | "update" | "patch")))
        .filter(|e| e["stage"].as_str() == Some("ResponseComplete"))
        .filter(|e| e["responseStatus"]["code"].as_i64().is_some_and(|c| c < 300))
        .map(|e| {
            format!(
                "{}{}",
                e["objectRef"]["name"].as_str().unwrap_or(""),
                e["objectRef"]["subresource"].as_str().map(|s| format!("/{s}")).unwrap_or_default()
            )
        })
        .collect()
}

/// Waits until the audit log holds a write of ColonyServer `what` (`name/subresource`) by
/// `user`: the API server logs a request's completion after it has answered, so a status
/// already visible may not be in the log yet.
async fn wait_written_by(user: &str, namespace: &str, what: &str) {
    wait_for(&format!("{user} to have written {what}"), DEADLINE, || async {
        let writes = writes_by(user, namespace, "colonyservers");
        if writes.iter().any(|w| w == what) { Ok(()) } else { Err(format!("writes so far: {writes:?}")) }
    })
    .await;
}

async fn helm(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new("helm")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("run helm (is the control plane's bin dir on PATH?)")
}

/// An unmanaged ColonyServer whose status shows that an operator reconciled it.
fn server_yaml(name: &str) -> String {
    colony_e2e::fixtures::unmanaged_server(name, "http://127.0.0.1:9", colony_e2e::fixtures::FAST_HEALTH, "")
}

async fn wait_reconciled(servers: &Api<ColonyServer>, name: &str) {
    wait_for(&format!("ColonyServer {name} reconciled (status written)"), DEADLINE, || async {
        let cs = servers.get(name).await.map_err(|e| e.to_string())?;
        let s = cs.status.as_ref();
        let healthy = s.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Healthy"));
        match (s.and_then(|s| s.observed_generation), healthy) {
            (Some(_), Some(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

// ------------------------------------------------------------------------------------
// The operator's image, installed by the chart, on the real node
// ------------------------------------------------------------------------------------

#[tokio::test]
async fn chart_runs_the_operator_image_on_the_real_node_and_leadership_hands_over() {
    let client = client().await;
    require_real_node(&client).await;
    let image = operator_image().await;
    let (repository, tag) = image.rsplit_once(':').expect("image name with a tag");
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-real-chart").await;
    let out = kubectl(
        &["label", "namespace", &ns.name, "pod-security.kubernetes.io/enforce=restricted", "--overwrite"],
        None,
    )
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let release = "op";
    let sa = format!("system:serviceaccount:{}:{release}-colony-operator", ns.name);
    let chart = repo_root().join("charts/colony-operator");
    let (repo_set, tag_set, ns_set) =
        (format!("image.repository={repository}"), format!("image.tag={tag}"), format!("watchNamespace={}", ns.name));
    let out = helm(&[
        "install",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        &ns.name,
        "--skip-crds",
        "--wait",
        "--timeout",
        "3m",
        "--set",
        &repo_set,
        "--set",
        &tag_set,
        "--set",
        "image.pullPolicy=Never",
        "--set",
        "replicaCount=2",
        "--set",
        &ns_set,
        "--set",
        "logFormat=text",
        "--set-string",
        "nodeSelector.colony\\.zyeute\\.io/real-node=true",
        "--set",
        &format!("tolerations[0].key={TAINT}"),
        "--set",
        "tolerations[0].operator=Exists",
        "--set",
        "tolerations[0].effect=NoSchedule",
    ])
    .await;
    let helm_out = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        let pods = kubectl(&["get", "pods,events", "-n", &ns.name, "-o", "wide"], None).await.unwrap();
        panic!("helm install: {helm_out}\n{}", String::from_utf8_lossy(&pods.stdout));
    }

    // Two real containers of the image, on the real node, Ready: their caches synced, over
    // the in-cluster address (the pods have no other way to the API server).
    let pods: Api<Pod> = ns.api();
    let selector = format!("app.kubernetes.io/instance={release}");
    let operator_pods = pods_with(&pods, &selector).await;
    assert_eq!(operator_pods.len(), 2, "two replicas");
    for p in &operator_pods {
        assert_eq!(node_of(p), NODE, "{} runs on the real node", p.name_any());
        assert!(is_ready(p), "{} Ready", p.name_any());
        let (id, ..) = container(p);
        assert!(id.starts_with("containerd://"), "a real container: {id:?}");
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some(format!("{release}-colony-operator").as_str()));
        assert_eq!(spec.containers[0].image.as_deref(), Some(image.as_str()));
    }
    let env_host = kubectl(&["get", "svc", "kubernetes", "-n", "default", "-o", "jsonpath={.spec.clusterIP}"], None)
        .await
        .unwrap();
    let cluster_ip = String::from_utf8_lossy(&env_host.stdout).to_string();
    let log0 = logs(&ns.name, &operator_pods[0].name_any()).await;
    assert!(!log0.contains("error trying to connect"), "the operator reached the API server at {cluster_ip}: {log0}");

    // It reconciles, as its ServiceAccount.
    let servers: Api<ColonyServer> = ns.api();
    apply_yaml(&ns.name, &server_yaml("one")).await;
    wait_reconciled(&servers, "one").await;
    wait_written_by(&sa, &ns.name, "one/status").await;

    // The leader holds the Lease; deleting its pod hands over to the other replica.
    let leases: Api<Lease> = ns.api();
    let lease_name = colony_operator::runtime::leader::LEASE_NAME;
    let names: BTreeSet<String> = operator_pods.iter().map(|p| p.name_any()).collect();
    let leader = wait_for("a leader among the two pods", DEADLINE, || async {
        let l = leases.get(lease_name).await.map_err(|e| e.to_string())?;
        let holder = l.spec.and_then(|s| s.holder_identity).unwrap_or_default();
        if names.contains(&holder) { Ok(holder) } else { Err(format!("holder {holder:?}")) }
    })
    .await;
    let killed = Instant::now();
    pods.delete(&leader, &DeleteParams::default()).await.unwrap();
    // The leader releases the Lease as it stops; the standby, or the replacement pod the
    // Deployment starts meanwhile, takes it: another live replica on the real node.
    let new_leader = wait_for("another replica to take the Lease", DEADLINE, || async {
        let l = leases.get(lease_name).await.map_err(|e| e.to_string())?;
        let holder = l.spec.and_then(|s| s.holder_identity).unwrap_or_default();
        if holder.is_empty() || holder == leader {
            return Err(format!("holder {holder:?}"));
        }
        match pods.get_opt(&holder).await.map_err(|e| e.to_string())? {
            Some(p) if is_ready(&p) && node_of(&p) == NODE => Ok(holder),
            other => Err(format!("holder {holder:?} is not a Ready pod on {NODE}: {:?}", other.map(|p| p.status))),
        }
    })
    .await;
    let role = if names.contains(&new_leader) { "the standby" } else { "the replacement pod" };
    println!(
        "leadership handed over from {leader} to {role} {new_leader} {:?} after the leader's pod was deleted",
        killed.elapsed()
    );
    apply_yaml(&ns.name, &server_yaml("two")).await;
    wait_reconciled(&servers, "two").await;
    // The new leader reconciles, as the chart's ServiceAccount.
    wait_written_by(&sa, &ns.name, "two/status").await;

    let out = helm(&["uninstall", release, "--namespace", &ns.name, "--wait"]).await;
    assert!(out.status.success(), "helm uninstall: {}", String::from_utf8_lossy(&out.stderr));
    ns.cleanup().await;
}

// ------------------------------------------------------------------------------------
// FinanceBee: real crashes
// ------------------------------------------------------------------------------------

struct BeeSetup {
    ns: TestNamespace,
    op: OperatorProcess,
    _server: TestEndpoint,
}

/// A namespace, the operator (a process on the host, watching the namespace), a healthy
/// unmanaged ColonyServer and the bee's key.
async fn bee_setup(prefix: &str) -> BeeSetup {
    let client = client().await;
    require_real_node(&client).await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, prefix).await;
    let server = TestEndpoint::start().await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    apply_yaml(&ns.name, &colony_e2e::fixtures::bee_surroundings(&server.url())).await;
    op.wait_ready().await;
    let servers: Api<ColonyServer> = ns.api();
    wait_for("srv Healthy", DEADLINE, || async {
        let cs = servers.get("srv").await.map_err(|e| e.to_string())?;
        let healthy = cs.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Healthy"));
        match healthy {
            Some(c) if c.status == "True" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    BeeSetup { ns, op, _server: server }
}

fn bee_yaml(image: &str, restart: &str, rollback: &str) -> String {
    format!(
        r#"apiVersion: colony.zyeute.io/v1alpha1
kind: FinanceBee
metadata:
  name: bee
spec:
  image: {image}
  colonyServerRef: {{name: srv}}
  colonyName: zyeute
  executorKeySecretRef: {{name: bee-key, key: prvkey}}
  podTemplate: {ON_REAL_NODE}
  resources: {{limits: {{cpu: 100m, memory: 64Mi}}}}
  restart: {restart}
  escalation: {{after: 1h}}
  rollback: {rollback}
"#
    )
}

fn condition(fb: &FinanceBee, type_: &str) -> Option<(String, String, String)> {
    fb.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The Events about `name`: (reason, note, eventTime).
async fn events(ns: &TestNamespace, name: &str) -> Vec<(String, String, Option<SystemTime>)> {
    colony_e2e::events_regarding(ns, name)
        .await
        .into_iter()
        .map(|e| {
            let at = e.event_time.as_ref().map(|t| SystemTime::from(t.0));
            (e.reason.unwrap_or_default(), e.note.unwrap_or_default(), at)
        })
        .collect()
}

#[tokio::test]
async fn real_crash_loop_uses_the_restart_budget_then_stalls() {
    let s = bee_setup("e2e-real-crash").await;
    // No earlier image ran, so there is nothing to roll back to: the restart budget acts.
    apply_yaml(
        &s.ns.name,
        &bee_yaml(TESTBEE_CRASH, "{maxRestarts: 2, window: 30m, crashLoopThreshold: 1, stuckAfter: 1h}", "{}"),
    )
    .await;
    let bees: Api<FinanceBee> = s.ns.api();
    let pods: Api<Pod> = s.ns.api();

    // Every pod seen: its last real termination (exit code, when), and when it was deleted.
    #[derive(Default, Debug, Clone)]
    struct Seen {
        exit: Option<i32>,
        crashed_at: Option<SystemTime>,
        container: String,
        node: String,
        crash_loop: bool,
    }
    let seen: Arc<Mutex<BTreeMap<String, Seen>>> = Default::default();
    let fb = wait_for("Stalled by the restart budget", LONG, || {
        let (bees, pods, seen) = (bees.clone(), pods.clone(), seen.clone());
        async move {
            for p in pods_with(&pods, "app.kubernetes.io/instance=bee").await {
                let (id, _, waiting, exit, finished) = container(&p);
                let mut all = seen.lock().unwrap();
                let e = all.entry(p.name_any()).or_default();
                e.node = node_of(&p);
                if !id.is_empty() {
                    e.container = id;
                }
                if exit.is_some() {
                    e.exit = exit;
                    e.crashed_at = finished;
                }
                e.crash_loop |= waiting.as_deref() == Some("CrashLoopBackOff");
            }
            let fb = bees.get("bee").await.map_err(|e| e.to_string())?;
            match condition(&fb, "Stalled") {
                Some((st, r, _)) if st == "True" && r == "RestartBudgetExhausted" => Ok(fb),
                other => Err(format!("{other:?}; pods {:?}", seen.lock().unwrap())),
            }
        }
    })
    .await;
    let (_, _, message) = condition(&fb, "Stalled").unwrap();
    assert!(message.contains("2 of 2 restarts used"), "{message}");
    let r = fb.status.as_ref().and_then(|s| s.restarts.clone()).unwrap();
    assert_eq!(r.count, 2);
    assert_eq!(r.last.as_ref().map(|l| l.reason.as_str()), Some("CrashLoop"));

    // The restarted pods really crashed: real containers on the real node, exit code 1,
    // CrashLoopBackOff reported by the kubelet.
    let evs = events(&s.ns, "bee").await;
    let restarted: Vec<_> = evs.iter().filter(|(r, ..)| r == "PodRestarted").collect();
    assert_eq!(restarted.len(), 2, "{evs:?}");
    let seen = seen.lock().unwrap().clone();
    let mut delays = Vec::new();
    for (_, note, at) in &restarted {
        let (pod, info) = seen.iter().find(|(name, _)| note.contains(name.as_str())).unwrap_or_else(|| {
            panic!("the restarted pod named in {note:?} was seen: {seen:?}");
        });
        assert_eq!(info.node, NODE, "{pod}");
        assert!(info.container.starts_with("containerd://"), "{pod}: {info:?}");
        assert_eq!(info.exit, Some(1), "{pod} exited 1: {info:?}");
        // The kubelet backed off restarting it (its Event), whether or not a poll caught the
        // pod's CrashLoopBackOff state before the operator deleted it.
        let backoff = events(&s.ns, pod)
            .await
            .iter()
            .any(|(r, n, _)| r == "BackOff" && n.contains("restarting failed container"));
        assert!(info.crash_loop || backoff, "{pod} was in CrashLoopBackOff: {info:?}");
        if let (Some(crashed), Some(acted)) = (info.crashed_at, at) {
            delays.push(acted.duration_since(crashed).unwrap_or_default());
        }
    }
    // The bee's output reached the kubelet's log: the container really ran.
    // The last restarted pod may still be terminating on the node; once it is gone, one
    // crash-looping pod is left alone (the budget is spent).
    let survivor = wait_for("one bee pod left once the restarted ones are gone", DEADLINE, || async {
        let live = pods_with(&pods, "app.kubernetes.io/instance=bee").await;
        let names: Vec<String> = live.iter().map(|p| p.name_any()).collect();
        if live.len() == 1 && live[0].metadata.deletion_timestamp.is_none() {
            Ok(live)
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await;
    let mut text = String::new();
    for args in [vec![], vec!["--previous"]] {
        let mut a = vec!["logs", "-n", s.ns.name.as_str(), "--tail=5"];
        let name = survivor[0].name_any();
        a.push(&name);
        a.extend(args);
        let out = kubectl(&a, None).await.unwrap();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        text.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert!(text.contains("exiting with code 1"), "{text}");
    println!("time from a real container's last crash to the operator's restart (PodRestarted): {delays:?}");
    assert!(!s.op.logs().contains(&"1".repeat(64)), "no key in the operator's log");
    drop(s.op);
    s.ns.cleanup().await;
}

#[tokio::test]
async fn missing_image_and_crashing_release_roll_back_on_the_real_node() {
    let s = bee_setup("e2e-real-rollback").await;
    // stableAfter longer than the kubelet's first crash back-off (10 s): a release that
    // crashes is never up that long, so it cannot count as good.
    apply_yaml(&s.ns.name, &bee_yaml(TESTBEE, "{crashLoopThreshold: 50}", "{stableAfter: 20s, progressDeadline: 30s}"))
        .await;
    let bees: Api<FinanceBee> = s.ns.api();
    let deployments: Api<Deployment> = s.ns.api();
    let pods: Api<Pod> = s.ns.api();
    let image_of = |d: &Deployment| d.spec.template.spec.as_ref().unwrap().containers[0].image.clone().unwrap();
    wait_last_known_good(&bees, TESTBEE).await;

    let missing = TESTBEE_MISSING;
    bees.patch("bee", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"image": missing}}))).await.unwrap();
    let waiting: Arc<Mutex<BTreeSet<String>>> = Default::default();
    let fb = wait_for("a rollback from the missing image", LONG, || {
        let (bees, deployments, pods, waiting) = (bees.clone(), deployments.clone(), pods.clone(), waiting.clone());
        async move {
            for p in pods_with(&pods, "app.kubernetes.io/instance=bee").await {
                if let (_, _, Some(w), ..) = container(&p) {
                    waiting.lock().unwrap().insert(w);
                }
            }
            let fb = bees.get("bee").await.map_err(|e| e.to_string())?;
            let d = deployments.get("bee").await.map_err(|e| e.to_string())?;
            match condition(&fb, "RolledBack") {
                Some((st, _, m)) if st == "True" && m.contains(missing) && image_of(&d) == TESTBEE => Ok(fb),
                other => {
                    Err(format!("{other:?}, deployment runs {}, waiting {:?}", image_of(&d), waiting.lock().unwrap()))
                }
            }
        }
    })
    .await;
    let seen = waiting.lock().unwrap().clone();
    assert!(
        seen.iter().any(|w| w == "ErrImagePull" || w == "ImagePullBackOff"),
        "the kubelet reported the missing image: {seen:?}"
    );
    let (_, _, message) = condition(&fb, "RolledBack").unwrap();
    assert!(message.contains("ProgressDeadlineExceeded"), "{message}");
    assert_eq!(fb.status.as_ref().unwrap().rollout.failed_images, [missing]);
    assert_eq!(fb.spec.image, missing, "spec is never written");

    // A release whose container exits 1: a real CrashLoopBackOff, then back to the good one.
    bees.patch("bee", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"image": TESTBEE_CRASH}})))
        .await
        .unwrap();
    let fb = wait_for("a rollback from the crashing image", LONG, || async {
        let fb = bees.get("bee").await.map_err(|e| e.to_string())?;
        let d = deployments.get("bee").await.map_err(|e| e.to_string())?;
        match condition(&fb, "RolledBack") {
            Some((st, _, m)) if st == "True" && m.contains(TESTBEE_CRASH) && image_of(&d) == TESTBEE => Ok(fb),
            other => Err(format!("{other:?}, deployment runs {}", image_of(&d))),
        }
    })
    .await;
    let (_, _, message) = condition(&fb, "RolledBack").unwrap();
    assert!(message.contains("CrashLoopBackOff"), "{message}");
    let status = fb.status.as_ref().unwrap();
    assert_eq!(status.rollout.failed_images, [TESTBEE_CRASH]);
    assert_eq!(status.rollout.last_known_good_image.as_deref(), Some(TESTBEE));
    let evs = events(&s.ns, "bee").await;
    // (Events of the same reason about the same object form one series, so one is enough.)
    assert!(evs.iter().any(|(r, ..)| r == "RolledBack"), "{evs:?}");
    drop(s.op);
    s.ns.cleanup().await;
}

/// Holds the local control plane's kube-controller-manager stopped (SIGSTOP) until dropped,
/// also when the test panics: Deployments keep the status they had. One test at a time.
struct FrozenControllerManager(u32, #[allow(dead_code)] tokio::sync::MutexGuard<'static, ()>);

static CONTROLLER_MANAGER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl FrozenControllerManager {
    async fn freeze() -> Self {
        let alone = CONTROLLER_MANAGER.lock().await;
        let binary = colony_e2e::cluster_dir().join("bin/kube-controller-manager");
        let out = std::process::Command::new("pgrep").args(["-f", &binary.display().to_string()]).output().unwrap();
        let pids: Vec<u32> =
            String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect();
        assert_eq!(pids.len(), 1, "one kube-controller-manager at {}: {pids:?}", binary.display());
        colony_e2e::signal(pids[0], "STOP");
        Self(pids[0], alone)
    }
}

impl Drop for FrozenControllerManager {
    fn drop(&mut self) {
        colony_e2e::signal(self.0, "CONT");
    }
}

/// Waits until the bee has recorded `image` as its last known good one.
async fn wait_last_known_good(bees: &Api<FinanceBee>, image: &str) -> FinanceBee {
    wait_for(&format!("{image} to become the last known good image"), LONG, || async {
        let fb = bees.get("bee").await.map_err(|e| e.to_string())?;
        let good = fb.status.as_ref().and_then(|s| s.rollout.last_known_good_image.clone());
        if good.as_deref() == Some(image) { Ok(fb) } else { Err(format!("{good:?}")) }
    })
    .await
}

/// A Deployment's status still carries the last rollout's ProgressDeadlineExceeded when the
/// next image is written to its template, until the Deployment controller looks at it: that
/// verdict is not the new image's.
#[tokio::test]
async fn a_deadline_the_previous_image_missed_is_not_blamed_on_the_next_one() {
    previous_failure_not_blamed_on_the_next_image("e2e-real-stale", TESTBEE_MISSING, "ProgressDeadlineExceeded").await;
}

/// The previous image's pods still crash-loop when the next image is written to the template
/// (they go once the new ones are available): their crash loop is not the new image's.
#[tokio::test]
async fn a_crash_loop_the_previous_image_left_is_not_blamed_on_the_next_one() {
    previous_failure_not_blamed_on_the_next_image("e2e-real-stale-crash", TESTBEE_CRASH, "CrashLoopBackOff").await;
}

/// A bee with `automatic: false` fails on `first` with `failure` (a missing image past its
/// deadline, a crashing one in CrashLoopBackOff) and stays there; then, with the controller-manager held stopped, so that
/// the Deployment keeps the status and the pods of `first` for certain, its image becomes a
/// good one and the operator reconciles it: the good image is not blamed, and is judged on its
/// own rollout once the controller-manager runs again.
async fn previous_failure_not_blamed_on_the_next_image(prefix: &str, first: &str, failure: &str) {
    let s = bee_setup(prefix).await;
    apply_yaml(
        &s.ns.name,
        &bee_yaml(first, "{crashLoopThreshold: 50}", "{automatic: false, stableAfter: 5s, progressDeadline: 30s}"),
    )
    .await;
    let bees: Api<FinanceBee> = s.ns.api();
    let deployments: Api<Deployment> = s.ns.api();
    let pods: Api<Pod> = s.ns.api();
    wait_for("the first image to fail", LONG, || async {
        let fb = bees.get("bee").await.map_err(|e| e.to_string())?;
        match condition(&fb, "RolledBack") {
            Some((st, r, m)) if st == "False" && r == "RolloutFailed" && m.contains(first) && m.contains(failure) => {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let frozen = FrozenControllerManager::freeze().await;
    bees.patch("bee", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"image": TESTBEE}}))).await.unwrap();
    wait_for("the new image in the template", DEADLINE, || async {
        let d = deployments.get("bee").await.map_err(|e| e.to_string())?;
        let image = running_image(&d);
        if image.as_deref() == Some(TESTBEE) { Ok(()) } else { Err(format!("{image:?}")) }
    })
    .await;
    let d = deployments.get("bee").await.unwrap();
    let status = d.status.clone().unwrap();
    assert!(
        status.observed_generation < d.metadata.generation,
        "the controller-manager has not seen the new template: {status:?}"
    );
    let old_verdict = status.conditions.unwrap_or_default().iter().any(|c| c.reason.as_deref() == Some(failure));
    // (The kubelet runs on: between two crashes a container waits in CrashLoopBackOff.)
    wait_for("the first image's failure still there", DEADLINE, || async {
        let old_pods = pods_with(&pods, "app.kubernetes.io/instance=bee").await;
        if old_verdict || old_pods.iter().any(crash_looping) { Ok(()) } else { Err(format!("no {failure}")) }
    })
    .await;
    // The operator reconciles the bee against exactly that Deployment and those pods: two
    // pokes, each waited for until a reconcile has started after it. A bee is reconciled once
    // at a time, so the second start means the first reconcile (and any status it wrote) is
    // over.
    for poke in ["1", "2"] {
        let before = s.op.reconciles("financebee").await;
        let annotation = json!({"metadata": {"annotations": {"e2e.colony.zyeute.io/poke": poke}}});
        bees.patch("bee", &PatchParams::default(), &Patch::Merge(&annotation)).await.unwrap();
        s.op.wait_reconciles("financebee", before, 1).await;
    }
    let fb = bees.get("bee").await.unwrap();
    let rolled_back = condition(&fb, "RolledBack");
    assert!(
        matches!(&rolled_back, Some((st, r, _)) if st == "False" && r == "NotRolledBack"),
        "the new image is not blamed: {rolled_back:?}"
    );
    drop(frozen);

    // Once the controller-manager runs again, the new image is judged on its own rollout.
    let fb = wait_last_known_good(&bees, TESTBEE).await;
    let status = fb.status.as_ref().unwrap();
    assert!(status.rollout.failed_images.is_empty(), "{:?}", status.rollout.failed_images);
    let entry = status.rollout.history.last().unwrap();
    assert_eq!((entry.image.as_str(), entry.failure), (TESTBEE, None));
    drop(s.op);
    s.ns.cleanup().await;
}

// ------------------------------------------------------------------------------------
// KeyRotation: real pods carry the new key
// ------------------------------------------------------------------------------------

#[tokio::test]
async fn key_rotation_rolls_real_pods_onto_the_new_key() {
    let client = client().await;
    require_real_node(&client).await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-real-kr").await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    apply_yaml(
        &ns.name,
        &format!(
            r#"apiVersion: colony.zyeute.io/v1alpha1
kind: KeyRotation
metadata:
  name: bee-key
spec:
  interval: 720h
  secretName: bee-key
  keyType: secp256k1
  keepPrevious: 1
  targets: [{{kind: Deployment, name: app}}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: 1
  selector: {{matchLabels: {{app: app}}}}
  template:
    metadata: {{labels: {{app: app}}}}
    spec:
      nodeSelector: {{"{TAINT}": "true"}}
      tolerations: [{{key: {TAINT}, operator: Exists, effect: NoSchedule}}]
      terminationGracePeriodSeconds: 5
      containers:
      - name: app
        image: {TESTBEE}
        imagePullPolicy: Never
        env:
        - name: COLONIES_EXECUTOR_PRVKEY
          valueFrom: {{secretKeyRef: {{name: bee-key, key: prvkey}}}}
"#
        ),
    )
    .await;
    let secrets: Api<Secret> = ns.api();
    let pods: Api<Pod> = ns.api();
    let key = |s: &Secret| String::from_utf8_lossy(&s.data.as_ref().unwrap()["prvkey"].0).to_string();

    // The running pod's fingerprint, once exactly one Ready pod runs.
    let running = |want: String| {
        let (pods, ns_name) = (pods.clone(), ns.name.clone());
        async move {
            wait_for(&format!("one Ready pod logging fingerprint {want}"), LONG, || {
                let (pods, ns_name, want) = (pods.clone(), ns_name.clone(), want.clone());
                async move {
                    let all = pods_with(&pods, "app=app").await;
                    let live: Vec<_> = all.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
                    let [p] = live.as_slice() else { return Err(format!("{} pods", live.len())) };
                    if !is_ready(p) {
                        return Err(format!("{} not Ready", p.name_any()));
                    }
                    assert_eq!(node_of(p), NODE);
                    let out = kubectl(&["logs", "-n", &ns_name, &p.name_any()], None).await.unwrap();
                    let text = String::from_utf8_lossy(&out.stdout).to_string();
                    if text.contains(&format!("executor key fingerprint: {want}")) {
                        Ok((p.name_any(), text))
                    } else {
                        Err(format!("{} logs {text:?}", p.name_any()))
                    }
                }
            })
            .await
        }
    };

    let first = wait_for("the first key", DEADLINE, || async {
        secrets.get_opt("bee-key").await.map_err(|e| e.to_string())?.ok_or("no Secret yet".to_string())
    })
    .await;
    let prv1 = key(&first);
    let (pod1, log1) = running(fingerprint(&prv1)).await;

    let patch = json!({ "metadata": { "annotations": { "colony.zyeute.io/rotate-now": "1" } } });
    Api::<colony_operator::api::KeyRotation>::namespaced(client.clone(), &ns.name)
        .patch("bee-key", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let second = wait_for("the second key", DEADLINE, || async {
        let s = secrets.get("bee-key").await.map_err(|e| e.to_string())?;
        if key(&s) != prv1 { Ok(s) } else { Err("same key".into()) }
    })
    .await;
    let prv2 = key(&second);
    let (pod2, log2) = running(fingerprint(&prv2)).await;
    assert_ne!(pod1, pod2, "a new pod");
    assert_ne!(fingerprint(&prv1), fingerprint(&prv2));
    for (log, secret) in [(&log1, &prv1), (&log2, &prv2)] {
        assert!(!log.contains(secret.as_str()), "the workload logs a fingerprint, never the key");
    }
    assert!(!op.logs().contains(&prv1) && !op.logs().contains(&prv2), "no key in the operator's log");
    drop(op);
    ns.cleanup().await;
}

// ------------------------------------------------------------------------------------
// A managed ColonyServer: the real colonies server in a pod
// ------------------------------------------------------------------------------------

/// The bridge's address on the host (tests/cluster/node-lib.sh NODE_GATEWAY): the pods reach
/// the host's PostgreSQL there.
const NODE_GATEWAY: &str = "10.244.77.1";
const POD_CIDR: &str = "10.244.77.0/24";

fn colonies_image() -> String {
    let versions = std::fs::read_to_string(repo_root().join("tests/cluster/versions.env")).unwrap();
    let version = versions.lines().find_map(|l| l.strip_prefix("COLONIES_VERSION=")).expect("COLONIES_VERSION");
    format!("localhost/colonies:{}", version.trim())
}

#[tokio::test]
async fn managed_colonies_server_on_the_real_node_survives_a_killed_container() {
    use colony_e2e::colonyos::{Options, RealColonyOs};
    use k8s_openapi::api::core::v1::ConfigMap;
    let client = client().await;
    require_real_node(&client).await;
    install_crds(&client).await.unwrap();
    // PostgreSQL on the host, also on the bridge; the database is set up (tables, a colony)
    // by the same server version on the host, which then stops: the pod's server takes over.
    let options = Options { db_also_listen: Some((NODE_GATEWAY.into(), POD_CIDR.into())), ..Options::default() };
    let mut colonyos = RealColonyOs::start("real-node-server", options).await;
    colonyos.stop_server().await;
    let ns = TestNamespace::new(&client, "e2e-real-server").await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    op.wait_ready().await;
    let pg = &colonyos.postgres;
    let server_yaml = |endpoint: &str| {
        format!(
            r#"apiVersion: colony.zyeute.io/v1alpha1
kind: ColonyServer
metadata:
  name: srv
spec:
  managed: true
  image: {image}
  port: 50080
  {endpoint}
  database:
    host: {NODE_GATEWAY}
    port: {port}
    user: {{name: db, key: username}}
    password: {{name: db, key: password}}
  serverKeySecretRef: {{name: server-key, key: prvkey}}
  podTemplate: {ON_REAL_NODE}
  health: {{interval: 1s, timeout: 1s, failureThreshold: 1, successThreshold: 1}}
  fallback: {{recoverAfter: 3s, minHold: 1s, maxFlipsPerHour: 10}}
"#,
            image = colonies_image(),
            port = pg.port,
        )
    };
    apply_yaml(
        &ns.name,
        &format!(
            r#"apiVersion: v1
kind: Secret
metadata:
  name: db
stringData:
  username: "{user}"
  password: "{password}"
---
apiVersion: v1
kind: Secret
metadata:
  name: server-key
stringData:
  prvkey: "{key}"
"#,
            user = pg.user,
            password = pg.password,
            key = colonyos.server_key.prvkey
        ),
    )
    .await;
    apply_yaml(&ns.name, &server_yaml("")).await;

    // The server's pod runs on the real node; the operator probes it at its pod IP.
    let pods: Api<Pod> = ns.api();
    let pod = wait_for("the server's pod Ready on the real node", LONG, || async {
        let all = pods_with(&pods, "app.kubernetes.io/instance=srv").await;
        match all.iter().find(|p| is_ready(p)) {
            Some(p) => Ok(p.clone()),
            None => Err(format!(
                "{:?}",
                all.iter().map(|p| (p.name_any(), container(p).2, container(p).1)).collect::<Vec<_>>()
            )),
        }
    })
    .await;
    assert_eq!(node_of(&pod), NODE);
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("a pod IP");
    assert!(ip.starts_with("10.244.77."), "a real pod IP from the bridge network: {ip}");
    apply_yaml(&ns.name, &server_yaml(&format!("endpoint: http://{ip}:50080"))).await;
    let servers: Api<ColonyServer> = ns.api();
    let cms: Api<ConfigMap> = ns.api();
    let healthy = |want: &'static str| {
        let servers = servers.clone();
        async move {
            wait_for(&format!("srv Healthy={want}"), LONG, || async {
                let cs = servers.get("srv").await.map_err(|e| e.to_string())?;
                let c = cs.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Healthy").cloned());
                match c {
                    Some(c) if c.status == want => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            })
            .await
        }
    };
    let use_colony_os = |want: &'static str| {
        let cms = cms.clone();
        async move {
            wait_for(&format!("USE_COLONY_OS={want}"), LONG, || async {
                let v = cms
                    .get_opt("srv-fallback")
                    .await
                    .map_err(|e| e.to_string())?
                    .and_then(|c| c.data)
                    .and_then(|d| d.get("USE_COLONY_OS").cloned());
                if v.as_deref() == Some(want) { Ok(()) } else { Err(format!("{v:?}")) }
            })
            .await
        }
    };
    healthy("True").await;
    use_colony_os("true").await;
    // The server really serves its API from the pod, on the shared database: the CLI on the
    // host, at the pod IP, lists the executor the host's setup registered.
    let executor_key = colonyos.executor_key.prvkey.clone();
    let env = [
        ("COLONIES_SERVER_HOST", ip.as_str()),
        ("COLONIES_SERVER_PORT", "50080"),
        ("COLONIES_SERVER_HTTP_PORT", "50080"),
        ("COLONIES_PRVKEY", executor_key.as_str()),
    ];
    let out = colonyos.cli(&env, &["executor", "ls"]).await;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("finance-bee"), "colonies CLI against the pod: {text}");

    // Kill the server's container (SIGKILL through containerd): the fallback flips on, the
    // kubelet restarts the container in the same pod, the fallback recovers. The kubelet's
    // first restart is immediate: when the new container answers before a probe saw the old
    // one gone, it is killed again (the kubelet then backs off), at most three times.
    let node_lib = repo_root().join("tests/cluster/node-lib.sh");
    let mut kills = 0;
    let mut first_kill = None;
    let (flipped, first_id, restarts_before) = loop {
        let (container_id, restarts, ..) = container(&pods.get(&pod.name_any()).await.unwrap());
        let id = container_id.trim_start_matches("containerd://").to_string();
        assert!(!id.is_empty(), "a running server container");
        let kill = tokio::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                ". {} && ctr --address \"$NODE_SOCK\" -n k8s.io tasks kill -s SIGKILL {id}",
                node_lib.display()
            ))
            .output()
            .await
            .unwrap();
        assert!(kill.status.success(), "ctr tasks kill: {}", String::from_utf8_lossy(&kill.stderr));
        kills += 1;
        let killed = Instant::now();
        first_kill.get_or_insert((killed, container_id.clone(), restarts));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut on = false;
        while Instant::now() < deadline {
            let v = cms
                .get_opt("srv-fallback")
                .await
                .unwrap()
                .and_then(|c| c.data)
                .and_then(|d| d.get("USE_COLONY_OS").cloned());
            if v.as_deref() == Some("false") {
                on = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if on {
            let (_, id, restarts) = first_kill.clone().unwrap();
            break (killed.elapsed(), id, restarts);
        }
        assert!(kills < 3, "the fallback did not turn on after {kills} kills of the server's container");
        // Wait for the kubelet's restart before killing the new container.
        wait_for("the kubelet to restart the container", LONG, || async {
            let p = pods.get(&pod.name_any()).await.map_err(|e| e.to_string())?;
            let (new_id, _, _, _, _) = container(&p);
            let running = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .and_then(|c| c.state.as_ref())
                .is_some_and(|s| s.running.is_some());
            if new_id != container_id && running { Ok(()) } else { Err(new_id) }
        })
        .await;
    };
    let killed = first_kill.unwrap().0;
    let p = wait_for("the kubelet to restart the container", LONG, || async {
        let p = pods.get(&pod.name_any()).await.map_err(|e| e.to_string())?;
        let (new_id, restarts, ..) = container(&p);
        if restarts > restarts_before && new_id != first_id { Ok(p) } else { Err(format!("{new_id} {restarts}")) }
    })
    .await;
    assert_eq!(p.status.as_ref().and_then(|s| s.pod_ip.clone()).as_deref(), Some(ip.as_str()), "same pod");
    let (_, _, _, exit, _) = container(&p);
    assert_eq!(exit, Some(137), "the killed container's exit code");
    use_colony_os("true").await;
    healthy("True").await;
    println!(
        "fallback on {flipped:?} after the server's container was killed ({kills} kill(s)); off again {:?} after the first",
        killed.elapsed()
    );
    drop(op);
    ns.cleanup().await;
    drop(colonyos);
}

// ------------------------------------------------------------------------------------
// A FinanceBee that really works: the colony-bee executor against the real server
// ------------------------------------------------------------------------------------

/// The real ColonyOS executor built from the colonies Go SDK (tests/cluster/node/bee).
const BEE: &str = "localhost/colony-bee:1";

#[tokio::test]
async fn finance_bee_of_the_executor_image_executes_a_submitted_process() {
    use colony_e2e::colonyos::{Options, RealColonyOs};
    let client = client().await;
    require_real_node(&client).await;
    install_crds(&client).await.unwrap();
    // The real server on the host, with its own PostgreSQL, the colony `zyeute`, the executor
    // `finance-bee` (type finance-worker, added and approved by the colony owner) and a user.
    // It listens on every address: the operator probes it, and the bee's pod reaches it, at the
    // bridge's address.
    let colonyos = RealColonyOs::start("real-node-bee", Options::default()).await;
    let ns = TestNamespace::new(&client, "e2e-real-work").await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    op.wait_ready().await;
    let endpoint = format!("http://{NODE_GATEWAY}:{}", colonyos.port);
    let executor = colonyos.executor_key.clone();
    apply_yaml(
        &ns.name,
        &format!(
            r#"apiVersion: v1
kind: Secret
metadata:
  name: bee-key
stringData:
  prvkey: "{key}"
---
{server}
---
apiVersion: colony.zyeute.io/v1alpha1
kind: FinanceBee
metadata:
  name: bee
spec:
  image: {BEE}
  colonyServerRef: {{name: srv}}
  colonyName: {colony}
  executorType: finance-worker
  executorKeySecretRef: {{name: bee-key, key: prvkey}}
  pollTimeout: 2s
  podTemplate: {ON_REAL_NODE}
"#,
            key = executor.prvkey,
            server = colony_e2e::fixtures::unmanaged_server("srv", &endpoint, colony_e2e::fixtures::FAST_HEALTH, ""),
            colony = colonyos.colony_name,
        ),
    )
    .await;

    // The bee's real container, on the real node, started with the executor's identity from
    // the environment the operator gave it.
    let pods: Api<Pod> = ns.api();
    let pod = wait_for("the bee's pod Ready on the real node, logging its executor ID", LONG, || async {
        let all = pods_with(&pods, "app.kubernetes.io/instance=bee").await;
        let Some(p) = all.iter().find(|p| is_ready(p)) else {
            return Err(format!("{:?}", all.iter().map(|p| (p.name_any(), container(p).2)).collect::<Vec<_>>()));
        };
        let out = kubectl(&["logs", "-n", &ns.name, &p.name_any()], None).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains(&format!("executor ID {}", executor.id)) { Ok(p.clone()) } else { Err(text) }
    })
    .await;
    assert_eq!(node_of(&pod), NODE);

    // A user submits a process; the bee assigns it and closes it successful: the server says
    // so, and names the bee's executor.
    let submitted = Instant::now();
    colonyos.submit("pay").await;
    let user = colonyos.user_key.prvkey.clone();
    let process = wait_for("the submitted process successful, executed by the bee's executor", LONG, || async {
        let out = colonyos.cli(&[("COLONIES_PRVKEY", user.as_str())], &["process", "pss", "--json"]).await;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let list: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
        list.into_iter()
            .find(|p| p["state"] == 2 && p["spec"]["funcname"] == "pay")
            .ok_or(format!("no successful process yet: {text} {}", String::from_utf8_lossy(&out.stderr)))
    })
    .await;
    let elapsed = submitted.elapsed();
    assert_eq!(process["assignedexecutorid"].as_str(), Some(executor.id.as_str()), "{process}");
    let id = process["processid"].as_str().expect("a process ID").to_string();
    let log = logs(&ns.name, &pod.name_any()).await;
    assert!(log.contains(&format!("assigned process {id}: func \"pay\"")), "{log}");
    assert!(log.contains(&format!("closed process {id} successful")), "{log}");
    assert!(!log.contains(&executor.prvkey), "the bee never logs its key");
    println!("the bee executed process {id} {elapsed:?} after it was submitted");
    drop(op);
    ns.cleanup().await;
    drop(colonyos);
}
