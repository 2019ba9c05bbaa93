//! `kubectl colony` (the plugin binary) against the local control plane: `status` reports what
//! the objects hold, the write commands set what the operator reads (and, with the operator
//! running, the fallback ConfigMap follows), `explain` shows conditions and Events, and an
//! unknown name fails with a message that names it. `status --watch` redraws on a change;
//! `--kubeconfig` and `--context` work as kubectl's; each `--help` names its runbook step.
//! (Missing CRDs: tests/e2e/bare_cluster.rs.)
use std::path::PathBuf;
use std::process::Output;

use chrono::{DateTime, Utc};
use colony_e2e::{
    DEADLINE, OperatorProcess, TestEndpoint, TestNamespace, apply_yaml, client, install_crds, wait_for,
    wait_use_colony_os,
};
use colony_operator::api::{
    ColonyServer, END_NOW_ANNOTATION, FALLBACK_ANNOTATION, FinanceBee, KeyRotation, MaintenanceWindow,
    ROTATE_NOW_ANNOTATION, RotationPhase, WindowPhase,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

fn plugin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| colony_e2e::repo_root().join("target"));
    let path = target.join("debug/kubectl-colony");
    assert!(path.exists(), "{} is missing: run `cargo build -p kubectl-colony` first", path.display());
    path
}

/// Runs the plugin with the test KUBECONFIG; returns its output whatever the exit status.
async fn colony(args: &[&str]) -> Output {
    tokio::process::Command::new(plugin()).args(args).output().await.expect("run kubectl-colony")
}

/// Runs the plugin and requires success; returns stdout.
async fn colony_ok(args: &[&str]) -> String {
    let out = colony(args).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubectl colony {args:?} failed ({}): {stdout}{stderr}", out.status);
    stdout
}

/// Runs the plugin and requires failure; returns stderr.
async fn colony_fails(args: &[&str]) -> String {
    let out = colony(args).await;
    assert!(!out.status.success(), "kubectl colony {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn objects(endpoint: &str) -> String {
    format!(
        r#"apiVersion: colony.zyeute.io/v1alpha1
kind: ColonyServer
metadata:
  name: srv
spec:
  managed: false
  endpoint: {endpoint}
  health: {{interval: 1s, timeout: 1s, failureThreshold: 2, successThreshold: 1}}
  fallback: {{recoverAfter: 1s, minHold: 1s}}
---
apiVersion: colony.zyeute.io/v1alpha1
kind: FinanceBee
metadata:
  name: bee
spec:
  image: example.invalid/finance-bee:1
  replicas: 2
  colonyServerRef: {{name: srv}}
  colonyName: zyeute
  executorKeySecretRef: {{name: bee-key, key: prvkey}}
---
apiVersion: colony.zyeute.io/v1alpha1
kind: KeyRotation
metadata:
  name: bee-key
spec:
  interval: 720h
  secretName: bee-key
  keyType: secp256k1
  colonyOS:
    colonyServerRef: {{name: srv}}
    identity: executor
    colonyName: zyeute
---
apiVersion: colony.zyeute.io/v1alpha1
kind: MaintenanceWindow
metadata:
  name: sunday
spec:
  schedule: {{cron: "0 2 * * 0", duration: 2h}}
  colonyServerRef: {{name: srv}}
"#
    )
}

fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({ "type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-11-29T13:00:00Z" })
}

async fn set_status<K>(api: &Api<K>, name: &str, status: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({ "status": status })))
        .await
        .unwrap_or_else(|e| panic!("status of {name}: {e}"));
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn time_of(v: &Value) -> DateTime<Utc> {
    t(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
}

/// `status -o json|yaml|table` reports what the objects hold (status written through the
/// status subresource; no operator runs in this namespace).
#[tokio::test]
async fn status_reports_what_the_objects_hold() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-plugin-status").await;
    apply_yaml(&ns.name, &objects("http://127.0.0.1:1")).await;
    set_status(
        &ns.api::<ColonyServer>(),
        "srv",
        json!({
            "conditions": [cond("Ready", "False", "Unhealthy", "probe failed"), cond("Healthy", "False", "ProbeFailed", "connection refused"),
                           cond("FallbackActive", "True", "HealthCheckFailed", "fallback on"), cond("RolledBack", "True", "RolledBack", "v2 failed")],
            "currentImage": "colonyos/colonies:v1.9.11",
            "fallback": { "active": true, "since": "2026-11-29T13:40:00Z", "reason": "HealthCheckFailed", "flipsLastHour": 1 },
            "slo": { "breached": true, "since": "2026-11-29T13:39:00Z", "reason": "queueDepth 14 > 10", "queueDepth": 14, "completionRate": 0.95, "errorRate": 0.02 },
        }),
    )
    .await;
    set_status(
        &ns.api::<FinanceBee>(),
        "bee",
        json!({
            "conditions": [cond("Ready", "False", "Unavailable", "0/2"), cond("Escalated", "True", "Triggered", "paged")],
            "readyReplicas": 1,
            "restarts": { "count": 3, "windowStart": "2026-11-29T13:30:00Z" },
            "escalation": { "state": "Triggered", "since": "2026-11-29T13:45:00Z" },
        }),
    )
    .await;
    set_status(
        &ns.api::<KeyRotation>(),
        "bee-key",
        json!({
            "conditions": [cond("Ready", "True", "Rotated", "revision 4")],
            "revision": 4,
            "lastRotationTime": "2026-11-01T03:00:00Z",
            "nextRotationTime": "2026-12-01T03:00:00Z",
            "phase": "Idle",
            "currentKeyId": "abc123",
        }),
    )
    .await;
    set_status(
        &ns.api::<MaintenanceWindow>(),
        "sunday",
        json!({ "conditions": [cond("Ready", "True", "Scheduled", "next window")], "phase": "Scheduled", "nextStart": "2026-12-06T02:00:00Z" }),
    )
    .await;
    colony_ok(&["fallback", "on", "srv", "-n", &ns.name]).await;

    let report: Value = serde_json::from_str(&colony_ok(&["status", "-n", &ns.name, "-o", "json"]).await).unwrap();
    let servers = report["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{report:#}");
    let s = &servers[0];
    assert_eq!((s["namespace"].as_str(), s["name"].as_str()), (Some(ns.name.as_str()), Some("srv")));
    assert_eq!((s["ready"].as_str(), s["healthy"].as_str()), (Some("False"), Some("False")));
    assert_eq!(s["fallback"], true);
    assert_eq!(time_of(&s["fallbackSince"]), t("2026-11-29T13:40:00Z"));
    assert_eq!(s["fallbackReason"], "HealthCheckFailed");
    assert_eq!(s["fallbackOverride"], "on", "the annotation just set");
    assert_eq!(s["image"], "colonyos/colonies:v1.9.11");
    assert_eq!(s["rolledBack"], true);
    assert_eq!(s["slo"]["breached"], true);
    assert_eq!(s["slo"]["queueDepth"], 14);
    assert_eq!(s["slo"]["completionRate"], 0.95);
    let b = &report["bees"][0];
    assert_eq!((b["name"].as_str(), b["server"].as_str()), (Some("bee"), Some("srv")));
    assert_eq!((b["availableReplicas"].as_i64(), b["desiredReplicas"].as_i64()), (Some(1), Some(2)));
    assert_eq!(b["restarts"], 3);
    assert_eq!(b["escalated"], true);
    assert_eq!(time_of(&b["escalatedSince"]), t("2026-11-29T13:45:00Z"));
    let k = &report["keys"][0];
    assert_eq!(k["name"], "bee-key");
    assert_eq!(k["revision"], 4);
    assert_eq!(time_of(&k["lastRotation"]), t("2026-11-01T03:00:00Z"));
    assert_eq!(time_of(&k["nextRotation"]), t("2026-12-01T03:00:00Z"));
    assert_eq!(k["phase"], "Idle");
    assert_eq!(k["registration"], "executor");
    let w = &report["windows"][0];
    assert_eq!((w["name"].as_str(), w["phase"].as_str()), (Some("sunday"), Some("Scheduled")));
    assert_eq!(time_of(&w["nextStart"]), t("2026-12-06T02:00:00Z"));

    // YAML is the same document.
    let yaml: Value = serde_yaml::from_str(&colony_ok(&["status", "-n", &ns.name, "-o", "yaml"]).await).unwrap();
    assert_eq!(yaml, report);

    // The table: one line per object, in its section.
    let table = colony_ok(&["status", "-n", &ns.name]).await;
    println!("{table}");
    let line = |start: &str| table.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("{start}: {table}"));
    let srv = line("srv ");
    assert!(srv.contains("on (") && srv.contains("override=on"), "{srv}");
    assert!(srv.contains("BREACHED queue=14") && srv.contains("colonyos/colonies:v1.9.11"), "{srv}");
    assert!(line("bee ").contains("1/2"), "{table}");
    assert!(line("bee-key ").contains("executor"), "{table}");
    assert!(line("sunday ").contains("Scheduled"), "{table}");

    // -A: every namespace, this one among them, with a NAMESPACE column.
    let all: Value = serde_json::from_str(&colony_ok(&["status", "-A", "-o", "json"]).await).unwrap();
    assert!(
        all["servers"].as_array().unwrap().iter().any(|s| s["namespace"] == ns.name.as_str() && s["name"] == "srv")
    );
    let all_table = colony_ok(&["status", "-A"]).await;
    assert!(all_table.lines().any(|l| l.starts_with(&ns.name) && l.contains(" srv ")), "{all_table}");

    // An empty namespace: every section says so, exit 0.
    let empty = TestNamespace::new(&client, "e2e-plugin-empty").await;
    let report: Value = serde_json::from_str(&colony_ok(&["status", "-n", &empty.name, "-o", "json"]).await).unwrap();
    assert_eq!(report, json!({ "servers": [], "bees": [], "keys": [], "windows": [] }));
    empty.cleanup().await;
    ns.cleanup().await;
}

/// The write commands set what the operator reads, print what they did, and fail on unknown
/// names with a message that names the object and namespace.
#[tokio::test]
async fn write_commands_set_what_the_operator_reads() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-plugin-write").await;
    apply_yaml(&ns.name, &objects("http://127.0.0.1:1")).await;
    let servers: Api<ColonyServer> = ns.api();
    let keys: Api<KeyRotation> = ns.api();
    let windows: Api<MaintenanceWindow> = ns.api();
    let n = ns.name.as_str();

    // fallback on / off / auto
    let out = colony_ok(&["fallback", "on", "srv", "-n", n]).await;
    assert!(out.contains(&format!("ColonyServer srv in namespace {n}")) && out.contains("=on"), "{out}");
    assert_eq!(
        servers.get("srv").await.unwrap().annotations().get(FALLBACK_ANNOTATION).map(String::as_str),
        Some("on")
    );
    colony_ok(&["fallback", "off", "srv", "-n", n]).await;
    assert_eq!(
        servers.get("srv").await.unwrap().annotations().get(FALLBACK_ANNOTATION).map(String::as_str),
        Some("off")
    );
    let out = colony_ok(&["fallback", "auto", "srv", "-n", n]).await;
    assert!(out.contains("removed"), "{out}");
    assert!(!servers.get("srv").await.unwrap().annotations().contains_key(FALLBACK_ANNOTATION));

    // rotate-now: a new value each time
    colony_ok(&["rotate-now", "bee-key", "-n", n]).await;
    let first =
        keys.get("bee-key").await.unwrap().annotations().get(ROTATE_NOW_ANNOTATION).cloned().expect("rotate-now set");
    let out = colony_ok(&["rotate-now", "bee-key", "-n", n]).await;
    let second = keys.get("bee-key").await.unwrap().annotations().get(ROTATE_NOW_ANNOTATION).cloned().unwrap();
    assert_ne!(first, second, "a second rotate-now must be a new value");
    assert!(out.contains(&second), "it prints the value it set: {out}");

    // maintenance start: a one-off window from now, admitted by the API server
    let before = Utc::now() - chrono::Duration::seconds(1);
    let out = colony_ok(&["maintenance", "start", "srv", "--for", "1h", "--stop-bees", "-n", n]).await;
    let after = Utc::now();
    let name = out
        .split_whitespace()
        .nth(1)
        .filter(|w| w.starts_with("srv-maint-"))
        .unwrap_or_else(|| panic!("no window name in {out:?}"))
        .to_string();
    let mw = windows.get(&name).await.unwrap();
    let (start, end) = (mw.spec.schedule.start.unwrap(), mw.spec.schedule.end.unwrap());
    assert!(before <= start && start <= after, "start {start} is now ({before}..{after})");
    assert_eq!(end - start, chrono::Duration::hours(1));
    assert_eq!(mw.spec.colony_server_ref.name, "srv");
    assert!(mw.spec.actions.enable_fallback && mw.spec.actions.stop_finance_bees);
    colony_ok(&["maintenance", "start", "srv", "--for", "30m", "--name", "quick", "-n", n]).await;
    let quick = windows.get("quick").await.unwrap();
    assert!(!quick.spec.actions.stop_finance_bees, "bees keep running without --stop-bees");
    assert_eq!(quick.spec.schedule.end.unwrap() - quick.spec.schedule.start.unwrap(), chrono::Duration::minutes(30));
    let e = colony_fails(&["maintenance", "start", "srv", "--for", "30m", "--name", "quick", "-n", n]).await;
    assert!(e.contains(&format!("MaintenanceWindow quick already exists in namespace {n}")), "{e}");
    let e = colony_fails(&["maintenance", "start", "srv", "--for", "soon", "-n", n]).await;
    assert!(e.contains("--for \"soon\""), "{e}");

    // maintenance end
    colony_ok(&["maintenance", "end", &name, "-n", n]).await;
    let end_now = windows.get(&name).await.unwrap().annotations().get(END_NOW_ANNOTATION).cloned();
    assert!(end_now.is_some_and(|v| !v.is_empty()), "end-now set");

    // Unknown names: non-zero exit, the object and namespace named.
    for (args, want) in [
        (vec!["fallback", "on", "nope"], format!("ColonyServer nope not found in namespace {n}")),
        (vec!["rotate-now", "nope"], format!("KeyRotation nope not found in namespace {n}")),
        (vec!["maintenance", "start", "nope", "--for", "1h"], format!("ColonyServer nope not found in namespace {n}")),
        (vec!["maintenance", "end", "nope"], format!("MaintenanceWindow nope not found in namespace {n}")),
        (vec!["explain", "fb/nope"], format!("FinanceBee nope not found in namespace {n}")),
    ] {
        let mut args = args;
        args.extend(["-n", n]);
        let e = colony_fails(&args).await;
        assert!(e.contains(&want), "{args:?}: {e}");
    }
    let e = colony_fails(&["explain", "pod/x", "-n", n]).await;
    assert!(e.contains("unknown kind \"pod\""), "{e}");
    // Nothing was created for the unknown server.
    assert_eq!(windows.list(&Default::default()).await.unwrap().items.len(), 3, "sunday, {name}, quick");
    ns.cleanup().await;
}

/// With the operator running: `fallback on` turns the fallback ConfigMap on, `auto` gives
/// the decision back; `maintenance start` opens a window and `end` closes it early;
/// `rotate-now` rotates the key once; `explain` shows the operator's conditions and Events.
#[tokio::test]
async fn the_operator_acts_on_what_the_plugin_sets() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-plugin-op").await;
    let endpoint = TestEndpoint::start().await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    apply_yaml(
        &ns.name,
        &format!(
            r#"apiVersion: colony.zyeute.io/v1alpha1
kind: ColonyServer
metadata:
  name: srv
spec:
  managed: false
  endpoint: {}
  health: {{interval: 1s, timeout: 1s, failureThreshold: 2, successThreshold: 1}}
  fallback: {{recoverAfter: 1s, minHold: 1s}}
---
apiVersion: colony.zyeute.io/v1alpha1
kind: KeyRotation
metadata:
  name: hmac
spec:
  interval: 720h
  secretName: hmac
  keyType: random
  length: 32
"#,
            endpoint.url()
        ),
    )
    .await;
    let cms: Api<ConfigMap> = ns.api();
    let use_colony_os = || colony_e2e::use_colony_os(&cms, "srv-fallback");
    let n = ns.name.as_str();
    wait_use_colony_os(&cms, "srv-fallback", "true", "fallback ConfigMap published (healthy: USE_COLONY_OS=true)")
        .await;
    colony_ok(&["fallback", "on", "srv", "-n", n]).await;
    wait_use_colony_os(&cms, "srv-fallback", "false", "fallback on by override (USE_COLONY_OS=false)").await;
    let status: Value = wait_for("status reports the override", DEADLINE, || async {
        let report: Value = serde_json::from_str(&colony_ok(&["status", "-n", n, "-o", "json"]).await).unwrap();
        let s = &report["servers"][0];
        if s["fallback"] == true && s["fallbackReason"] == "Override" { Ok(s.clone()) } else { Err(s.to_string()) }
    })
    .await;
    assert_eq!(status["healthy"], "True", "{status}");
    colony_ok(&["fallback", "auto", "srv", "-n", n]).await;
    wait_use_colony_os(&cms, "srv-fallback", "true", "auto: healthy server, fallback off again").await;

    // maintenance start: the operator opens the window (fallback on); end: it closes it early,
    // verifies the healthy server and turns the fallback off again.
    let windows: Api<MaintenanceWindow> = ns.api();
    colony_ok(&["maintenance", "start", "srv", "--for", "1h", "--name", "mnt", "-n", n]).await;
    wait_for("window Active and fallback on", DEADLINE, || async {
        let phase = windows.get("mnt").await.ok().and_then(|w| w.status).and_then(|s| s.phase);
        let value = use_colony_os().await;
        match (phase, value.as_deref()) {
            (Some(WindowPhase::Active), Some("false")) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    colony_ok(&["maintenance", "end", "mnt", "-n", n]).await;
    let outcome = wait_for("window ended early, verified, fallback off", DEADLINE, || async {
        let status = windows.get("mnt").await.ok().and_then(|w| w.status);
        let value = use_colony_os().await;
        match (status.as_ref().and_then(|s| s.phase), value.as_deref()) {
            (Some(WindowPhase::Completed), Some("true")) => Ok(status.unwrap().last_outcome),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .expect("a last outcome");
    assert!(outcome.end - outcome.start < chrono::Duration::minutes(59), "ended before its hour: {outcome:?}");

    // rotate-now: the operator rotates once more and records the value it handled.
    let keys: Api<KeyRotation> = ns.api();
    let first = wait_for("first key generated", DEADLINE, || async {
        let status = keys.get("hmac").await.ok().and_then(|k| k.status);
        match status {
            Some(s) if s.revision >= 1 && s.phase.is_none_or(|p| p == RotationPhase::Idle) => Ok(s.revision),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    colony_ok(&["rotate-now", "hmac", "-n", n]).await;
    let token = keys.get("hmac").await.unwrap().annotations().get(ROTATE_NOW_ANNOTATION).cloned().unwrap();
    wait_for("rotate-now handled", DEADLINE, || async {
        let status = keys.get("hmac").await.ok().and_then(|k| k.status);
        match status {
            Some(s) if s.revision > first && s.handled_rotate_now.as_deref() == Some(token.as_str()) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // explain: an unhealthy server is not Ready; its Events are the operator's.
    endpoint.set_failing(true);
    let out = wait_for("explain shows the server not Ready with Events", DEADLINE, || async {
        let out = colony_ok(&["explain", "colonyserver/srv", "-n", n]).await;
        let has_events = !out.contains("Events:\n  (none)");
        if out.contains("is not Ready") && out.contains("Why:\n  Ready=False") && has_events {
            Ok(out)
        } else {
            Err(out)
        }
    })
    .await;
    println!("{out}");
    assert!(out.starts_with(&format!("ColonyServer srv in namespace {n} is not Ready")), "{out}");
    assert!(out.contains("Healthy=False"), "{out}");
    let events = out.split("Events:\n").nth(1).unwrap();
    assert!(events.contains("REASON") && events.lines().count() >= 2, "{out}");
    drop(op);
    ns.cleanup().await;
}

/// The next line `status --watch -o json` prints, as JSON.
async fn next_document(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    what: &str,
) -> Value {
    let line = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("no redraw within {DEADLINE:?}: {what}"))
        .unwrap()
        .unwrap_or_else(|| panic!("--watch ended: {what}"));
    serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {line}"))
}

/// `status --watch`: the first document is the state at start; a status change made while it
/// runs is redrawn (a new document) without restarting it, and nothing is redrawn while
/// nothing changes.
#[tokio::test]
async fn status_watch_redraws_on_change() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-plugin-watch").await;
    apply_yaml(&ns.name, &objects("http://127.0.0.1:1")).await;
    let mut child = tokio::process::Command::new(plugin())
        .args(["status", "-n", &ns.name, "--watch", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start kubectl colony status --watch");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = next_document(&mut lines, "the first document").await;
    assert_eq!(first["servers"][0]["name"], "srv", "{first}");
    assert_eq!(first["servers"][0]["fallback"], Value::Null, "{first}");

    // The fallback goes on (as the operator would report it): one redraw shows it.
    set_status(
        &ns.api::<ColonyServer>(),
        "srv",
        json!({ "fallback": { "active": true, "since": "2026-11-29T13:40:00Z", "reason": "Override", "flipsLastHour": 1 } }),
    )
    .await;
    let second = next_document(&mut lines, "after the fallback went on").await;
    assert_eq!(second["servers"][0]["fallback"], true, "{second}");
    assert_eq!(second["servers"][0]["fallbackReason"], "Override", "{second}");

    // A new object appears in the same watch.
    apply_yaml(
        &ns.name,
        "apiVersion: colony.zyeute.io/v1alpha1\nkind: MaintenanceWindow\nmetadata:\n  name: monday\nspec:\n  schedule: \
         {cron: \"0 2 * * 1\", duration: 1h}\n  colonyServerRef: {name: srv}\n",
    )
    .await;
    let third = next_document(&mut lines, "after a window was created").await;
    let windows: Vec<&str> = third["windows"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(windows, ["monday", "sunday"], "{third}");

    // A change that does not alter the report (an unrelated label) draws nothing new.
    let out =
        colony_e2e::kubectl(&["label", "-n", &ns.name, "colonyserver", "srv", "team=payments"], None).await.unwrap();
    assert!(out.status.success());
    let quiet = tokio::time::timeout(std::time::Duration::from_secs(2), lines.next_line()).await;
    assert!(quiet.is_err(), "redrawn although nothing shown changed: {quiet:?}");
    child.kill().await.unwrap();
    ns.cleanup().await;
}

/// kubectl's `--kubeconfig` and `--context`: with a kubeconfig whose current context points
/// nowhere, `--context` picks the working one; `--kubeconfig` reads that file instead of
/// $KUBECONFIG.
#[tokio::test]
async fn kubeconfig_and_context_flags_work_like_kubectls() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-plugin-context").await;
    apply_yaml(&ns.name, &objects("http://127.0.0.1:1")).await;
    let source = std::env::var("KUBECONFIG").expect("KUBECONFIG is set for the e2e tests");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&source).unwrap()).unwrap();
    let working = config["current-context"].as_str().unwrap().to_string();
    let user = config["contexts"][0]["context"]["user"].clone();
    config["clusters"].as_sequence_mut().unwrap().push(
        serde_yaml::from_str(
            "{name: nowhere, cluster: {server: \"https://127.0.0.1:1\", insecure-skip-tls-verify: true}}",
        )
        .unwrap(),
    );
    let mut broken: serde_yaml::Value = serde_yaml::from_str("{name: broken, context: {cluster: nowhere}}").unwrap();
    broken["context"]["user"] = user;
    config["contexts"].as_sequence_mut().unwrap().push(broken);
    config["current-context"] = "broken".into();
    let dir = colony_e2e::repo_root().join("target/e2e-plugin");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.kubeconfig", ns.name));
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    let path = path.to_str().unwrap();

    // The file's current context is used: it cannot connect, and says so.
    let err = colony_fails(&["--kubeconfig", path, "status", "-n", &ns.name]).await;
    assert!(err.contains("127.0.0.1:1") || err.to_lowercase().contains("connect"), "{err}");
    // --context picks the working one from the same file.
    let out = colony_ok(&["--kubeconfig", path, "--context", &working, "status", "-n", &ns.name, "-o", "json"]).await;
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["servers"][0]["name"], "srv", "{report}");
    // A context that does not exist is an error that names it.
    let err = colony_fails(&["--kubeconfig", path, "--context", "no-such-context", "status"]).await;
    assert!(err.contains("no-such-context"), "{err}");
    std::fs::remove_file(path).unwrap();
    ns.cleanup().await;
}

/// Each command's --help names the runbook step it replaces.
#[tokio::test]
async fn help_names_the_runbook_step_each_command_replaces() {
    for (args, step) in [
        (&["status", "--help"][..], "Morning Health Check"),
        (&["fallback", "--help"][..], "Enable direct processing fallback"),
        (&["fallback", "--help"][..], "Disable Colony OS (Emergency)"),
        (&["rotate-now", "--help"][..], "Rotate Cryptographic Keys"),
        (&["maintenance", "--help"][..], "Planned Maintenance"),
        (&["maintenance", "start", "--help"][..], "stop Finance Bee"),
        (&["maintenance", "end", "--help"][..], "re-enable Colony OS"),
        (&["explain", "--help"][..], "Finance Bee Down"),
    ] {
        let out = colony_ok(args).await;
        assert!(out.contains("runbook"), "{args:?}: {out}");
        assert!(out.contains(step), "{args:?} names {step:?}: {out}");
    }
}
