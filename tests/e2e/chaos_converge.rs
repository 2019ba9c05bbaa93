//! Fault suite: what the operator owns converges. Hand edits of the fields it manages and
//! deletions of its objects (the server's Deployment and Service, the fallback ConfigMap in
//! both directions, the bee's Deployment) are put back; edits of fields it does not manage
//! make no write; an object of the same name that is not the operator's is never taken over.
//!
//! Each fault's time to be put back is measured (polling every 50 ms) and every kind is one
//! row of the fault table (`colony_e2e::chaos`): `stuck` counts faults never put back,
//! `doubled` the operator's writes to the object beyond one per fault (from the audit log).
use std::future::Future;

use futures::StreamExt;
use std::time::{Duration, Instant, SystemTime};

use colony_e2e::chaos::{self, Row};
use colony_e2e::{
    DEADLINE, OperatorProcess, TestEndpoint, TestNamespace, apply_yaml, client, install_crds, operator_writes, wait_for,
};
use colony_operator::api::{ColonyServer, FinanceBee};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

const POLL: Duration = Duration::from_millis(50);
const SERVER_IMAGE: &str = "colonyos/colonies:v1.9.12";
const BEE_IMAGE: &str = "example.invalid/finance-bee:1";

// ------------------------------------------------------------------------------------
// Setup
// ------------------------------------------------------------------------------------

struct Setup {
    ns: TestNamespace,
    op: OperatorProcess,
    endpoint: TestEndpoint,
}

/// A namespace with its own operator and a local endpoint standing in for the server.
async fn setup(prefix: &str) -> Setup {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, prefix).await;
    let endpoint = TestEndpoint::start().await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    op.wait_ready().await;
    Setup { ns, op, endpoint }
}

/// A managed ColonyServer `prod` (Deployment, Service, fallback ConfigMap) probed at the
/// endpoint, and a FinanceBee `bee` working for it.
fn server_and_bee(endpoint: &TestEndpoint) -> String {
    format!("{}---\n{}", server("prod", endpoint), bee("prod"))
}

/// A managed ColonyServer `name` probed at the endpoint, with its database and key Secrets.
fn server(name: &str, endpoint: &TestEndpoint) -> String {
    let health = "{interval: 1s, timeout: 1s, failureThreshold: 2, successThreshold: 1}";
    let extra = "  fallback: {recoverAfter: 2s, minHold: 1s}\n";
    colony_e2e::fixtures::managed_server(name, &endpoint.url(), SERVER_IMAGE, health, extra)
}

/// The FinanceBee `bee` working for `server`, and its executor key.
fn bee(server: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: bee-key
stringData:
  prvkey: "{key}"
---
apiVersion: colony.zyeute.io/v1alpha1
kind: FinanceBee
metadata:
  name: bee
spec:
  image: {BEE_IMAGE}
  colonyServerRef: {{name: {server}}}
  colonyName: zyeute
  executorKeySecretRef: {{name: bee-key, key: prvkey}}
"#,
        key = "1".repeat(64)
    )
}

fn condition(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<(String, String, String)> {
    conditions.iter().find(|c| c.type_ == type_).map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the managed server and the bee run: Deployments available, Service there.
async fn wait_running(ns: &TestNamespace) {
    colony_e2e::wait_server_condition(&ns.api(), "prod", "Ready", "True").await;
    let deployments: Api<Deployment> = ns.api();
    for name in ["prod", "bee"] {
        wait_for(&format!("Deployment {name} available"), DEADLINE, || async {
            let d = deployments.get_opt(name).await.map_err(|e| e.to_string())?.ok_or("missing")?;
            let available = d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
            if available >= 1 { Ok(()) } else { Err(format!("{available} available")) }
        })
        .await;
    }
    let services: Api<Service> = ns.api();
    wait_for("Service prod", DEADLINE, || async {
        services.get_opt("prod").await.map_err(|e| e.to_string())?.map(|_| ()).ok_or_else(|| "missing".to_string())
    })
    .await;
}

// ------------------------------------------------------------------------------------
// Measuring
// ------------------------------------------------------------------------------------

/// Polls `check` every 50 ms from `start`: the time until it held, or None after DEADLINE.
async fn put_back_after<F, Fut>(start: Instant, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > DEADLINE {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One kind of fault: how often it was injected, how long each took to be put back, how
/// many never were, and the operator's writes to the object meanwhile.
struct Tally {
    fault: String,
    object: String,
    since: SystemTime,
    times: Vec<Duration>,
    stuck: usize,
}

impl Tally {
    /// `object` as the audit log names it, e.g. "deployments/prod".
    fn new(fault: &str, object: &str) -> Self {
        Self { fault: fault.into(), object: object.into(), since: SystemTime::now(), times: Vec::new(), stuck: 0 }
    }

    fn add(&mut self, took: Option<Duration>) {
        match took {
            Some(d) => self.times.push(d),
            None => {
                eprintln!("{}: not put back within {DEADLINE:?}", self.fault);
                self.stuck += 1
            }
        }
    }

    fn injected(&self) -> usize {
        self.times.len() + self.stuck
    }

    /// Records the row and returns it; the audit log is read up to a marker write, so every
    /// operator write made before now is counted.
    async fn record(self, ns: &TestNamespace) -> Row {
        flush_audit_log(ns).await;
        let codes = operator_write_codes(&ns.name, self.since, &self.object);
        let writes: Vec<u64> = codes.iter().copied().filter(|c| *c < 300).collect();
        let refused = codes.len() - writes.len();
        let secs: Vec<f64> = self.times.iter().map(Duration::as_secs_f64).collect();
        let mean = if secs.is_empty() { 0.0 } else { secs.iter().sum::<f64>() / secs.len() as f64 };
        let max = secs.iter().copied().fold(0.0, f64::max);
        let row = Row {
            fault: self.fault.clone(),
            injected: self.injected(),
            lost: 0,
            doubled: writes.len().saturating_sub(self.injected()),
            stuck: self.stuck,
            figures: format!(
                "put back in {mean:.2} s (max {max:.2} s); {} operator writes ({refused} refused)",
                writes.len()
            ),
        };
        println!("{}: {row:?}; write status codes {codes:?}", self.fault);
        chaos::record(&row);
        row
    }
}

/// Status codes of the operator's write requests to `object` ("deployments/prod") in
/// `namespace` since `since`, from the audit log (a refused request, 4xx, wrote nothing).
fn operator_write_codes(namespace: &str, since: SystemTime, object: &str) -> Vec<u64> {
    let text = colony_e2e::audit_log_text();
    let since: chrono::DateTime<chrono::Utc> = since.into();
    text.lines()
        // Cheap text filters first: the log holds every test's writes.
        .filter(|l| l.contains(namespace) && l.contains("colony-operator/"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["userAgent"].as_str().is_some_and(|ua| ua.starts_with("colony-operator/")))
        .filter(|e| e["objectRef"]["namespace"].as_str() == Some(namespace))
        .filter(|e| e["stage"].as_str() == Some("ResponseComplete"))
        .filter(|e| matches!(e["verb"].as_str(), Some("create" | "update" | "patch" | "delete")))
        .filter(|e| {
            let resource = e["objectRef"]["resource"].as_str().unwrap_or_default();
            let name = e["objectRef"]["name"].as_str().unwrap_or_default();
            e["objectRef"]["subresource"].is_null() && format!("{resource}/{name}") == object
        })
        .filter(|e| {
            e["requestReceivedTimestamp"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| t >= since)
        })
        .map(|e| e["responseStatus"]["code"].as_u64().unwrap_or(0))
        .collect()
}

/// Writes a marker ConfigMap and waits until the audit log holds it: every write that
/// completed before it is in the log by then.
async fn flush_audit_log(ns: &TestNamespace) {
    let name = format!("audit-marker-{}", SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos());
    // Applied (the name is in the URL, so the audit event names it).
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
    ns.api::<ConfigMap>().patch(&name, &PatchParams::apply("colony-e2e"), &Patch::Apply(&cm)).await.unwrap();
    let needle = format!("\"name\":\"{name}\"");
    wait_for("the audit log to hold the marker write", DEADLINE, || async {
        let text = colony_e2e::audit_log_text();
        if text.contains(&needle) { Ok(()) } else { Err(format!("{} bytes, no marker", text.len())) }
    })
    .await;
}

/// Asserts that every fault was put back and that none caused extra writes.
fn assert_converged(rows: &[Row]) {
    for row in rows {
        assert_eq!(row.stuck, 0, "{}: {} of {} faults never put back", row.fault, row.stuck, row.injected);
        assert_eq!(row.doubled, 0, "{}: more than one operator write per fault ({})", row.fault, row.figures);
    }
}

fn merge(value: serde_json::Value) -> Patch<serde_json::Value> {
    Patch::Merge(value)
}

/// A hand edit, as `kubectl edit` / `kubectl patch` makes it (field manager of its own).
fn by_hand() -> PatchParams {
    PatchParams { field_manager: Some("kubectl-edit".into()), ..Default::default() }
}

fn container(d: &Deployment) -> k8s_openapi::api::core::v1::Container {
    d.spec.template.spec.as_ref().unwrap().containers[0].clone()
}

fn env_value(d: &Deployment, name: &str) -> Option<String> {
    container(d).env.unwrap_or_default().into_iter().find(|e| e.name == name).and_then(|e| e.value)
}

fn env_names(d: &Deployment) -> Vec<String> {
    container(d).env.unwrap_or_default().into_iter().map(|e| e.name).collect()
}

/// Hand edits of the managed fields of a Deployment (replicas, image, an env value, an
/// added env entry), then its deletion; each must be put back. Returns the two rows.
async fn deployment_faults(ns: &TestNamespace, name: &str, image: &str, env: (&str, &str), label: &str) -> Vec<Row> {
    let api: Api<Deployment> = ns.api();
    let reference = api.get(name).await.unwrap();
    let want_replicas = reference.spec.replicas;
    let want_env = env_value(&reference, env.0);
    assert_eq!(want_env.as_deref(), Some(env.1), "the {label} Deployment sets {}", env.0);
    let want_names = env_names(&reference);
    let container_name = container(&reference).name;
    let matches = |d: &Deployment| {
        d.spec.replicas == want_replicas
            && container(d).image.as_deref() == Some(image)
            && env_value(d, env.0) == want_env
            && env_names(d) == want_names
    };
    let edits = [
        json!({"spec": {"replicas": 0}}),
        json!({"spec": {"template": {"spec": {"containers": [{"name": container_name, "image": "example.invalid/evil:1"}]}}}}),
        json!({"spec": {"template": {"spec": {"containers": [{"name": container_name, "env": [{"name": env.0, "value": "edited-by-hand"}]}]}}}}),
        json!({"spec": {"template": {"spec": {"containers": [{"name": container_name, "env": [{"name": "ADDED_BY_HAND", "value": "1"}]}]}}}}),
    ];
    let mut edit = Tally::new(
        &format!("{label} Deployment hand edit (replicas, image, env value, env added)"),
        &format!("deployments/{name}"),
    );
    for round in 0..chaos::count(1, 3) {
        for patch in &edits {
            let start = Instant::now();
            // Strategic merge: lists merge by name, as kubectl's patches do.
            api.patch(name, &by_hand(), &Patch::Strategic(patch.clone())).await.unwrap();
            let took = put_back_after(start, || async { api.get(name).await.is_ok_and(|d| matches(&d)) }).await;
            println!("{label} round {round} {patch}: {took:?}");
            edit.add(took);
        }
    }
    let edit = edit.record(ns).await;

    let mut deleted = Tally::new(&format!("{label} Deployment deleted"), &format!("deployments/{name}"));
    for _ in 0..chaos::count(1, 3) {
        let old_uid = api.get(name).await.unwrap().uid();
        let start = Instant::now();
        api.delete(name, &DeleteParams::background()).await.unwrap();
        let took = put_back_after(start, || async {
            api.get_opt(name).await.ok().flatten().is_some_and(|d| d.uid() != old_uid && matches(&d))
        })
        .await;
        deleted.add(took);
    }
    vec![edit, deleted.record(ns).await]
}

// ------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------

// Multi-threaded: the test endpoint keeps answering probes while the test reads the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_server_deployment_and_service_are_put_back() {
    let s = setup("e2e-chaos-server").await;
    apply_yaml(&s.ns.name, &server_and_bee(&s.endpoint)).await;
    wait_running(&s.ns).await;
    let mut rows = deployment_faults(&s.ns, "prod", SERVER_IMAGE, ("TZ", "UTC"), "server").await;

    // The Service: its port and selector edited (a value changed, a key added), then deleted.
    let services: Api<Service> = s.ns.api();
    let reference = services.get("prod").await.unwrap().spec.unwrap();
    let want_selector = reference.selector.clone();
    let want_ports: Vec<(Option<String>, i32)> =
        reference.ports.clone().unwrap().iter().map(|p| (p.name.clone(), p.port)).collect();
    let matches = |svc: &Service| {
        let spec = svc.spec.clone().unwrap_or_default();
        let ports: Vec<_> = spec.ports.unwrap_or_default().iter().map(|p| (p.name.clone(), p.port)).collect();
        spec.selector == want_selector && ports == want_ports
    };
    let edits = [
        json!({"spec": {"ports": [{"name": "http", "port": 9999, "targetPort": "http", "protocol": "TCP"}]}}),
        json!({"spec": {"selector": {"app.kubernetes.io/instance": "someone-else"}}}),
        json!({"spec": {"selector": {"tier": "added-by-hand"}}}),
    ];
    let mut edit = Tally::new("server Service hand edit (port, selector value, selector key added)", "services/prod");
    for _ in 0..chaos::count(1, 3) {
        for patch in &edits {
            let start = Instant::now();
            services.patch("prod", &by_hand(), &merge(patch.clone())).await.unwrap();
            let took = put_back_after(start, || async { services.get("prod").await.is_ok_and(|s| matches(&s)) }).await;
            println!("service {patch}: {took:?}");
            edit.add(took);
        }
    }
    rows.push(edit.record(&s.ns).await);
    let mut deleted = Tally::new("server Service deleted", "services/prod");
    for _ in 0..chaos::count(1, 3) {
        let old_uid = services.get("prod").await.unwrap().uid();
        let start = Instant::now();
        services.delete("prod", &DeleteParams::default()).await.unwrap();
        let took = put_back_after(start, || async {
            services.get_opt("prod").await.ok().flatten().is_some_and(|svc| svc.uid() != old_uid && matches(&svc))
        })
        .await;
        deleted.add(took);
    }
    rows.push(deleted.record(&s.ns).await);
    assert_converged(&rows);
    drop(s.op);
    s.ns.cleanup().await;
}

// Multi-threaded: the test endpoint keeps answering probes while the test reads the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_bee_deployment_is_put_back() {
    let s = setup("e2e-chaos-bee").await;
    apply_yaml(&s.ns.name, &server_and_bee(&s.endpoint)).await;
    wait_running(&s.ns).await;
    let rows = deployment_faults(&s.ns, "bee", BEE_IMAGE, ("COLONIES_COLONY_NAME", "zyeute"), "bee").await;
    assert_converged(&rows);
    drop(s.op);
    s.ns.cleanup().await;
}

fn unmanaged(name: &str, endpoint: &TestEndpoint, fallback: &str) -> String {
    format!(
        r#"apiVersion: colony.zyeute.io/v1alpha1
kind: ColonyServer
metadata:
  name: {name}
spec:
  managed: false
  endpoint: {url}
  health: {{interval: 1s, timeout: 1s, failureThreshold: 2, successThreshold: 1}}
  fallback: {fallback}
"#,
        url = endpoint.url()
    )
}

// Multi-threaded: the test endpoint keeps answering probes while the test reads the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_fallback_config_map_is_put_back_both_ways() {
    let s = setup("e2e-chaos-fallback").await;
    apply_yaml(&s.ns.name, &unmanaged("srv", &s.endpoint, "{recoverAfter: 2s, minHold: 1s}")).await;
    let servers: Api<ColonyServer> = s.ns.api();
    let cms: Api<ConfigMap> = s.ns.api();
    let value = || async {
        cms.get_opt("srv-fallback")
            .await
            .ok()
            .flatten()
            .and_then(|c| c.data)
            .and_then(|d| d.get("USE_COLONY_OS").cloned())
    };
    colony_e2e::wait_server_condition(&servers, "srv", "Healthy", "True").await;
    colony_e2e::wait_server_condition(&servers, "srv", "FallbackActive", "False").await;
    assert_eq!(value().await.as_deref(), Some("true"));

    /// Sets USE_COLONY_OS by hand and measures until the operator's value is back.
    async fn set_by_hand(cms: &Api<ConfigMap>, hand: &str, want: &str, tally: &mut Tally) {
        let start = Instant::now();
        cms.patch("srv-fallback", &by_hand(), &merge(json!({"data": {"USE_COLONY_OS": hand}}))).await.unwrap();
        let took = put_back_after(start, || async {
            cms.get("srv-fallback")
                .await
                .ok()
                .and_then(|c| c.data)
                .and_then(|d| d.get("USE_COLONY_OS").cloned())
                .as_deref()
                == Some(want)
        })
        .await;
        tally.add(took);
    }
    async fn delete(cms: &Api<ConfigMap>, want: &str, tally: &mut Tally) {
        let old_uid = cms.get("srv-fallback").await.unwrap().uid();
        let start = Instant::now();
        cms.delete("srv-fallback", &DeleteParams::default()).await.unwrap();
        let took = put_back_after(start, || async {
            cms.get_opt("srv-fallback").await.ok().flatten().is_some_and(|c| {
                c.uid() != old_uid && c.data.and_then(|d| d.get("USE_COLONY_OS").cloned()).as_deref() == Some(want)
            })
        })
        .await;
        tally.add(took);
    }

    let mut rows = Vec::new();
    // Healthy: a human turns the fallback on by hand in the ConfigMap (not the annotation).
    let mut healthy = Tally::new(
        "fallback ConfigMap set to \"false\" by hand while the server is healthy",
        "configmaps/srv-fallback",
    );
    for _ in 0..chaos::count(2, 5) {
        set_by_hand(&cms, "false", "true", &mut healthy).await;
    }
    rows.push(healthy.record(&s.ns).await);
    let mut deleted_healthy =
        Tally::new("fallback ConfigMap deleted while the server is healthy", "configmaps/srv-fallback");
    for _ in 0..chaos::count(1, 3) {
        delete(&cms, "true", &mut deleted_healthy).await;
    }
    rows.push(deleted_healthy.record(&s.ns).await);

    // Down: the fallback is on; setting "true" by hand would send work to a dead server.
    s.endpoint.set_failing(true);
    colony_e2e::wait_server_condition(&servers, "srv", "FallbackActive", "True").await;
    assert_eq!(value().await.as_deref(), Some("false"));
    let mut down =
        Tally::new("fallback ConfigMap set to \"true\" by hand while the server is down", "configmaps/srv-fallback");
    for _ in 0..chaos::count(2, 5) {
        set_by_hand(&cms, "true", "false", &mut down).await;
    }
    rows.push(down.record(&s.ns).await);
    let mut deleted_down = Tally::new("fallback ConfigMap deleted while the server is down", "configmaps/srv-fallback");
    for _ in 0..chaos::count(1, 3) {
        delete(&cms, "false", &mut deleted_down).await;
    }
    rows.push(deleted_down.record(&s.ns).await);
    let cs = servers.get("srv").await.unwrap();
    assert_eq!(cs.status.unwrap().fallback.unwrap().flips_last_hour, 1, "putting the value back is not a flip");
    assert_converged(&rows);
    drop(s.op);
    s.ns.cleanup().await;
}

/// `colony_operator_reconcile_duration_seconds_count{controller=...}` from /metrics.
async fn reconciles(op: &OperatorProcess, controller: &str) -> u64 {
    let (_, text) = op.get("/metrics").await.unwrap_or_default();
    let prefix = "colony_operator_reconcile_duration_seconds_count{";
    text.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(&format!("controller=\"{controller}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

// Multi-threaded: the test endpoint keeps answering probes while the test reads the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_steady_state_is_silent_while_reconciles_run() {
    let s = setup("e2e-chaos-steady").await;
    apply_yaml(&s.ns.name, &server_and_bee(&s.endpoint)).await;
    wait_running(&s.ns).await;
    let deployments: Api<Deployment> = s.ns.api();
    let services: Api<Service> = s.ns.api();
    let cms: Api<ConfigMap> = s.ns.api();
    // Settled: both rollouts complete and reported.
    for name in ["prod", "bee"] {
        wait_for(&format!("Deployment {name} rolled out"), DEADLINE, || async {
            let d = deployments.get(name).await.map_err(|e| e.to_string())?;
            let st = d.status.clone().unwrap_or_default();
            let want = d.spec.replicas.unwrap_or(1);
            let done = st.observed_generation == d.metadata.generation
                && [st.replicas, st.updated_replicas, st.ready_replicas, st.available_replicas] == [Some(want); 4];
            if done { Ok(()) } else { Err(format!("{st:?}")) }
        })
        .await;
    }
    let servers: Api<ColonyServer> = s.ns.api();
    colony_e2e::wait_server_condition(&servers, "prod", "Ready", "True").await;
    let bees: Api<FinanceBee> = s.ns.api();
    wait_for("bee Available", DEADLINE, || async {
        let fb = bees.get("bee").await.map_err(|e| e.to_string())?;
        let conditions = fb.status.map(|s| s.conditions).unwrap_or_default();
        match condition(&conditions, "Available") {
            Some((st, ..)) if st == "True" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    flush_audit_log(&s.ns).await;

    let since = SystemTime::now();
    let status_before = serde_json::to_string_pretty(&servers.get("prod").await.unwrap().status).unwrap();
    let server_before = reconciles(&s.op, "colonyserver").await;
    let bee_before = reconciles(&s.op, "financebee").await;
    let probes_before = s.endpoint.successes();
    // Edits of fields the operator does not manage: each wakes a reconcile (the objects are
    // watched), none may cause a write.
    // (A Deployment's generation moves with its annotations, and a rollout is not steady
    // state: Deployments get a label.)
    let note = |n: u32| merge(json!({"metadata": {"annotations": {"example.com/note": format!("touched {n}")}}}));
    let label = |n: u32| merge(json!({"metadata": {"labels": {"example.com/note": format!("touched-{n}")}}}));
    for n in 0..3 {
        let (server_seen, bee_seen) = (reconciles(&s.op, "colonyserver").await, reconciles(&s.op, "financebee").await);
        deployments.patch("prod", &by_hand(), &label(n)).await.unwrap();
        services.patch("prod", &by_hand(), &note(n)).await.unwrap();
        cms.patch("prod-fallback", &by_hand(), &merge(json!({"data": {"UNRELATED": format!("{n}")}}))).await.unwrap();
        deployments.patch("bee", &by_hand(), &label(n)).await.unwrap();
        wait_for(&format!("round {n} of edits reconciled"), DEADLINE, || async {
            let server = reconciles(&s.op, "colonyserver").await;
            let bee = reconciles(&s.op, "financebee").await;
            if server > server_seen && bee > bee_seen { Ok(()) } else { Err(format!("{server} / {bee} reconciles")) }
        })
        .await;
    }
    // ConfigMaps that are not the operator's are not even delivered to the server's
    // controller (its watch selects the operator's label): a hundred of them wake almost
    // nothing. The server's own ConfigMap is touched after them, as a reconcile to wait for.
    let unrelated = 100;
    let quiet_from = (reconciles(&s.op, "colonyserver").await, reconciles(&s.op, "financebee").await);
    futures::stream::iter(0..unrelated)
        .for_each_concurrent(8, |i| {
            let cms = cms.clone();
            async move {
                let name = format!("unrelated-{i}");
                let cm =
                    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}});
                cms.patch(&name, &PatchParams::apply("someone-else"), &Patch::Apply(&cm)).await.unwrap();
            }
        })
        .await;
    cms.patch("prod-fallback", &by_hand(), &merge(json!({"data": {"UNRELATED": "last"}}))).await.unwrap();
    let woken = wait_for("the touch after the unrelated ConfigMaps reconciled", DEADLINE, || async {
        let server = reconciles(&s.op, "colonyserver").await - quiet_from.0;
        if server > 0 {
            Ok(server + reconciles(&s.op, "financebee").await - quiet_from.1)
        } else {
            Err("not yet".into())
        }
    })
    .await;
    println!("{unrelated} unrelated ConfigMaps: {woken} reconciles (server and bee) until the touch was reconciled");
    assert!(woken < unrelated / 10, "unrelated ConfigMaps woke {woken} reconciles");

    let (server_runs, bee_runs) = wait_for("probes during the window", DEADLINE, || async {
        if s.endpoint.successes() >= probes_before + 10 {
            Ok((
                reconciles(&s.op, "colonyserver").await - server_before,
                reconciles(&s.op, "financebee").await - bee_before,
            ))
        } else {
            Err(format!("{} probes", s.endpoint.successes() - probes_before))
        }
    })
    .await;
    let probes = s.endpoint.successes() - probes_before;
    flush_audit_log(&s.ns).await;
    let writes = operator_writes(&s.ns.name, since);
    println!(
        "steady state: {server_runs} server and {bee_runs} bee reconciles, {probes} probes, {} operator writes",
        writes.len()
    );
    chaos::record(&Row {
        fault: "edits of fields the operator does not manage, 100 unrelated ConfigMaps (steady state)".into(),
        injected: 12 + unrelated as usize,
        lost: 0,
        doubled: writes.len(),
        stuck: 0,
        figures: format!(
            "{server_runs} server + {bee_runs} bee reconciles, {probes} probes, {} API writes; {woken} reconciles woken by {unrelated} unrelated ConfigMaps",
            writes.len()
        ),
    });
    let status_after = serde_json::to_string_pretty(&servers.get("prod").await.unwrap().status).unwrap();
    assert!(
        writes.is_empty(),
        "no API writes in steady state, saw {writes:?}; status before {status_before}, after {status_after}"
    );
    let cm = cms.get("prod-fallback").await.unwrap();
    assert_eq!(cm.data.unwrap().get("UNRELATED").map(String::as_str), Some("last"), "others' keys are left alone");
    drop(s.op);
    s.ns.cleanup().await;
}

// Multi-threaded: the test endpoint keeps answering probes while the test reads the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_foreign_objects_are_reported_not_taken_over() {
    let s = setup("e2e-chaos-foreign").await;
    let cms: Api<ConfigMap> = s.ns.api();
    let deployments: Api<Deployment> = s.ns.api();
    let services: Api<Service> = s.ns.api();
    // Someone's ConfigMap, someone's Deployment named like the bee will be, and someone's
    // Service named like the managed server `web` will be.
    apply_yaml(
        &s.ns.name,
        r#"apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: someone}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: shared-flags
data:
  USE_COLONY_OS: "maybe"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: bee
spec:
  replicas: 0
  selector: {matchLabels: {app: someone}}
  template:
    metadata: {labels: {app: someone}}
    spec: {containers: [{name: app, image: example.invalid/someone:1}]}
"#,
    )
    .await;
    let foreign_cm = cms.get("shared-flags").await.unwrap();
    let foreign_deployment = deployments.get("bee").await.unwrap();
    let foreign_service = services.get("web").await.unwrap();
    let since = SystemTime::now();
    let web = server("web", &s.endpoint);
    apply_yaml(
        &s.ns.name,
        &format!("{}---\n{}---\n{web}", unmanaged("srv", &s.endpoint, "{configMapName: shared-flags}"), bee("srv")),
    )
    .await;

    let servers: Api<ColonyServer> = s.ns.api();
    let cs = colony_e2e::wait_server_condition(&servers, "srv", "Stalled", "True").await;
    let conditions = cs.status.unwrap().conditions;
    let (_, reason, message) = condition(&conditions, "Stalled").unwrap();
    assert_eq!(reason, "ConfigMapNotOwned");
    assert_eq!(
        message,
        "ConfigMap shared-flags exists and is not managed by this ColonyServer; rename spec.fallback.configMapName or delete it"
    );
    assert_eq!(condition(&conditions, "Ready").unwrap().1, "ConfigMapNotOwned");

    let bees: Api<FinanceBee> = s.ns.api();
    let fb = wait_for("bee Stalled=True", DEADLINE, || async {
        let fb = bees.get("bee").await.map_err(|e| e.to_string())?;
        let conditions = fb.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
        match condition(&conditions, "Stalled") {
            Some((s, r, m)) if s == "True" => Ok((r, m)),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(fb.0, "DeploymentNotOwned");
    assert!(fb.1.contains("Deployment bee exists and is not managed by this FinanceBee"), "{}", fb.1);

    let web = colony_e2e::wait_server_condition(&servers, "web", "Stalled", "True").await;
    let (_, reason, message) = condition(&web.status.unwrap().conditions, "Stalled").unwrap();
    assert_eq!(reason, "ServiceNotOwned");
    assert!(message.starts_with("Service web exists and is not managed by this ColonyServer"), "{message}");

    // Untouched: same resourceVersion, no owner reference, no write by the operator.
    flush_audit_log(&s.ns).await;
    let cm = cms.get("shared-flags").await.unwrap();
    assert_eq!(cm.resource_version(), foreign_cm.resource_version());
    assert!(cm.owner_references().is_empty());
    // (The Deployment's status is its controller's to write: its spec and metadata are compared.)
    let d = deployments.get("bee").await.unwrap();
    assert_eq!(d.metadata.generation, foreign_deployment.metadata.generation);
    assert_eq!(d.labels(), foreign_deployment.labels());
    assert!(d.owner_references().is_empty());
    let svc = services.get("web").await.unwrap();
    assert_eq!(svc.resource_version(), foreign_service.resource_version());
    assert!(svc.owner_references().is_empty());
    let writes: Vec<String> = operator_writes(&s.ns.name, since)
        .into_iter()
        .filter(|w| ["configmaps/shared-flags", "deployments/bee", "services/web"].iter().any(|o| w.ends_with(o)))
        .collect();
    assert!(writes.is_empty(), "the operator wrote to objects it does not own: {writes:?}");

    // Once the way is clear, the operator makes its own and the stall clears.
    cms.delete("shared-flags", &DeleteParams::default()).await.unwrap();
    deployments.delete("bee", &DeleteParams::background()).await.unwrap();
    wait_for("the server's own fallback ConfigMap", DEADLINE, || async {
        let cm = cms.get_opt("shared-flags").await.map_err(|e| e.to_string())?.ok_or("missing")?;
        let owned = cm.owner_references().iter().any(|r| r.kind == "ColonyServer" && r.name == "srv");
        if owned { Ok(()) } else { Err("not owned".into()) }
    })
    .await;
    wait_for("srv no longer Stalled", DEADLINE, || async {
        let cs = servers.get("srv").await.map_err(|e| e.to_string())?;
        let conditions = cs.status.map(|s| s.conditions).unwrap_or_default();
        match condition(&conditions, "Stalled") {
            None => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    wait_for("the bee's own Deployment", DEADLINE, || async {
        let d = deployments.get_opt("bee").await.map_err(|e| e.to_string())?.ok_or("missing")?;
        let owned = d.owner_references().iter().any(|r| r.kind == "FinanceBee" && r.name == "bee");
        if owned { Ok(()) } else { Err("not owned".into()) }
    })
    .await;
    drop(s.op);
    s.ns.cleanup().await;
}
