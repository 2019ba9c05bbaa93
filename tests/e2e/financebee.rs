//! FinanceBee on the local control plane: restarts of failed and crash-looping pods within
//! the budget, no restarts while the ColonyServer is the cause, escalation to a webhook and
//! to a PagerDuty Events API v2 receiver (one trigger, one resolve, none resent after an
//! operator restart), and a Secret change rolling the bee.
//!
//! Pods are simulated by kwok: the labels `colony.zyeute.io/test-fail` and
//! `colony.zyeute.io/test-crashloop` make a pod fail or crash-loop (tests/cluster/README.md).
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use colony_e2e::{
    DEADLINE, OperatorProcess, TestEndpoint, TestNamespace, apply_yaml, client, events_about, install_crds, wait_for,
};
use colony_operator::api::FinanceBee;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FAIL_LABEL: &str = "colony.zyeute.io/test-fail";
const CRASHLOOP_LABEL: &str = "colony.zyeute.io/test-crashloop";
const CONFIG_HASH: &str = "colony.zyeute.io/config-hash";

// ------------------------------------------------------------------------------------
// A local receiver standing in for the webhook and the PagerDuty Events API
// ------------------------------------------------------------------------------------

/// Records every POST (path and JSON body) and answers with a settable status.
#[derive(Clone)]
struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<(String, Value)>>>,
    status: Arc<Mutex<u16>>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(Mutex::new(202));
        let (r, s) = (requests.clone(), status.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (r, s) = (r.clone(), s.clone());
                tokio::spawn(async move {
                    let Some((path, body)) = read_request(&mut stream).await else {
                        return;
                    };
                    // The query (a webhook token) is not part of what tests compare.
                    let path = path.split('?').next().unwrap_or_default().to_string();
                    let code = *s.lock().unwrap();
                    r.lock().unwrap().push((path, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                    let reply = format!(
                        "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
        Self { port, requests, status }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn set_status(&self, code: u16) {
        *self.status.lock().unwrap() = code;
    }

    /// Bodies received on `path`.
    fn bodies(&self, path: &str) -> Vec<Value> {
        self.requests.lock().unwrap().iter().filter(|(p, _)| p == path).map(|(_, b)| b.clone()).collect()
    }

    fn count(&self, path: &str, field: &str, value: &str) -> usize {
        self.bodies(path).iter().filter(|b| b[field] == value).count()
    }
}

/// Reads one HTTP/1.1 request: its path and its body (by Content-Length).
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let path = head.split_whitespace().nth(1)?.to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((path, buf[header_end..].to_vec()))
}

// ------------------------------------------------------------------------------------
// Setup and helpers
// ------------------------------------------------------------------------------------

struct Setup {
    ns: TestNamespace,
    op: OperatorProcess,
    server: TestEndpoint,
}

/// A namespace with its own operator, a healthy unmanaged ColonyServer `srv` (a local
/// endpoint, probed every second) and the executor key Secret `bee-key`.
async fn setup(prefix: &str) -> Setup {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, prefix).await;
    let server = TestEndpoint::start().await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    apply_yaml(&ns.name, &colony_e2e::fixtures::bee_surroundings(&server.url())).await;
    op.wait_ready().await;
    wait_server_healthy(&ns, "True").await;
    Setup { ns, op, server }
}

async fn wait_server_healthy(ns: &TestNamespace, want: &str) {
    let servers: Api<colony_operator::api::ColonyServer> = ns.api();
    wait_for(&format!("srv Healthy={want}"), DEADLINE, || async {
        let cs = servers.get("srv").await.map_err(|e| e.to_string())?;
        let healthy = cs
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Healthy"))
            .map(|c| c.status.clone());
        if healthy.as_deref() == Some(want) { Ok(()) } else { Err(format!("Healthy={healthy:?}")) }
    })
    .await
}

fn bee_yaml(name: &str, restart: &str, escalation: &str) -> String {
    format!(
        r#"apiVersion: colony.zyeute.io/v1alpha1
kind: FinanceBee
metadata:
  name: {name}
spec:
  image: example.invalid/finance-bee:1
  colonyServerRef: {{name: srv}}
  colonyName: zyeute
  executorKeySecretRef: {{name: bee-key, key: prvkey}}
  restart: {restart}
  escalation: {escalation}
"#
    )
}

/// (status, reason, message) of a condition.
fn condition(fb: &FinanceBee, type_: &str) -> Option<(String, String, String)> {
    fb.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the bee's `type_` condition has `status` (and `reason`, when given).
async fn wait_bee(bees: &Api<FinanceBee>, name: &str, type_: &str, status: &str, reason: Option<&str>) -> FinanceBee {
    let what = format!("{name} {type_}={status} {reason:?}");
    wait_for(&what, DEADLINE, || async {
        let fb = bees.get(name).await.map_err(|e| e.to_string())?;
        match condition(&fb, type_) {
            Some((s, r, _)) if s == status && reason.is_none_or(|want| want == r) => Ok(fb),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

async fn bee_pods(pods: &Api<Pod>, bee: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={bee}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn is_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn phase(p: &Pod) -> Option<String> {
    p.status.as_ref()?.phase.clone()
}

fn restart_count(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map(|c| c.restart_count)
        .unwrap_or(0)
}

/// The bee's single running, ready pod.
async fn ready_pod(pods: &Api<Pod>, bee: &str) -> String {
    wait_for(&format!("one ready pod of {bee}"), DEADLINE, || async {
        let all = bee_pods(pods, bee).await;
        let ready: Vec<_> = all.iter().filter(|p| is_ready(p)).collect();
        match ready.as_slice() {
            [p] if all.len() == 1 => Ok(p.name_any()),
            _ => Err(format!("{:?}", all.iter().map(|p| (p.name_any(), phase(p), is_ready(p))).collect::<Vec<_>>())),
        }
    })
    .await
}

async fn label_pod(pods: &Api<Pod>, pod: &str, label: &str) {
    let patch = json!({"metadata": {"labels": {label: "true"}}});
    pods.patch(pod, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

fn restarts(fb: &FinanceBee) -> (i32, Option<String>, Option<String>) {
    let r = fb.status.as_ref().and_then(|s| s.restarts.clone());
    (
        r.as_ref().map(|r| r.count).unwrap_or(0),
        r.as_ref().and_then(|r| r.last.as_ref().map(|l| l.pod.clone())),
        r.as_ref().and_then(|r| r.last.as_ref().map(|l| l.reason.clone())),
    )
}

// ------------------------------------------------------------------------------------
// (a) A failed pod is deleted and replaced
// ------------------------------------------------------------------------------------

#[tokio::test]
async fn failed_pod_is_deleted_and_replaced() {
    let s = setup("e2e-fb-failed").await;
    apply_yaml(
        &s.ns.name,
        &bee_yaml("bee", "{maxRestarts: 3, window: 30m, crashLoopThreshold: 3, stuckAfter: 5m}", "{after: 1h}"),
    )
    .await;
    let bees: Api<FinanceBee> = s.ns.api();
    let pods: Api<Pod> = s.ns.api();
    wait_bee(&bees, "bee", "Available", "True", None).await;
    let doomed = ready_pod(&pods, "bee").await;

    // One poll loop notes when the test first saw each step (250 ms resolution).
    #[derive(Default)]
    struct Seen {
        failed: Option<Instant>,
        finished_ms: Option<i64>,
        replacement: Option<(Instant, String)>,
        gone: Option<Instant>,
    }
    let seen: Arc<Mutex<Seen>> = Default::default();
    label_pod(&pods, &doomed, FAIL_LABEL).await;
    let labelled = Instant::now();
    let replacement = wait_for("the failed pod deleted and a replacement ready", DEADLINE, || {
        let (pods, seen, doomed) = (pods.clone(), seen.clone(), doomed.clone());
        async move {
            let all = bee_pods(&pods, "bee").await;
            let now = Instant::now();
            let mut seen = seen.lock().unwrap();
            let old = all.iter().find(|p| p.name_any() == doomed);
            if let Some(p) = old.filter(|p| phase(p).as_deref() == Some("Failed")) {
                seen.failed.get_or_insert(now);
                let finished = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|c| c.first()?.state.as_ref()?.terminated.as_ref()?.finished_at.clone());
                if let Some(f) = finished {
                    seen.finished_ms.get_or_insert(f.0.as_millisecond());
                }
            }
            if old.is_none() {
                seen.gone.get_or_insert(now);
                seen.failed.get_or_insert(now);
            }
            if let Some(p) = all.iter().find(|p| p.name_any() != doomed) {
                seen.replacement.get_or_insert((now, p.name_any()));
            }
            let ready: Vec<_> = all.iter().filter(|p| is_ready(p)).collect();
            match (old, ready.as_slice()) {
                (None, [p]) => Ok(p.name_any()),
                _ => Err(format!("{:?}", all.iter().map(|p| (p.name_any(), phase(p))).collect::<Vec<_>>())),
            }
        }
    })
    .await;
    assert_ne!(replacement, doomed);
    let created_ms =
        pods.get(&replacement).await.unwrap().metadata.creation_timestamp.map(|t| t.0.as_millisecond()).unwrap();
    {
        let seen = seen.lock().unwrap();
        let failed = seen.failed.unwrap();
        let (replacement_seen, _) = seen.replacement.clone().unwrap();
        let since_failure = |t: Instant| t.saturating_duration_since(failed);
        println!(
            "pod failed {:?} after labelling; replacement {replacement} first seen {:?} after the failure was \
             seen, failed pod gone {:?} after; server-side: replacement created {} ms after the container finished",
            failed - labelled,
            since_failure(replacement_seen),
            seen.gone.map(since_failure),
            seen.finished_ms.map(|f| (created_ms - f).to_string()).unwrap_or_else(|| "?".into()),
        );
    }

    let fb = wait_bee(&bees, "bee", "Available", "True", None).await;
    assert_eq!(restarts(&fb), (1, Some(doomed.clone()), Some("Failed".to_string())), "one restart recorded in status");
    assert!(condition(&fb, "Stalled").is_none(), "{:?}", fb.status.as_ref().map(|s| &s.conditions));
    let evs = wait_for("a PodRestarted Event", DEADLINE, || async {
        let e = events_about(&s.ns, "bee").await;
        if e.iter().any(|(r, n)| r == "PodRestarted" && n.contains(&doomed)) { Ok(e) } else { Err(format!("{e:?}")) }
    })
    .await;
    println!("events: {evs:?}");
    s.ns.cleanup().await;
    drop(s.op);
}

// ------------------------------------------------------------------------------------
// (b) A crash loop is restarted at most maxRestarts times, then Stalled
// ------------------------------------------------------------------------------------

#[tokio::test]
async fn crash_loop_is_restarted_within_budget_then_stalled() {
    let s = setup("e2e-fb-crashloop").await;
    apply_yaml(
        &s.ns.name,
        &bee_yaml("bee", "{maxRestarts: 2, window: 30m, crashLoopThreshold: 2, stuckAfter: 1h}", "{after: 1h}"),
    )
    .await;
    let bees: Api<FinanceBee> = s.ns.api();
    let pods: Api<Pod> = s.ns.api();
    let deployments: Api<Deployment> = s.ns.api();
    wait_bee(&bees, "bee", "Available", "True", None).await;
    let healthy = ready_pod(&pods, "bee").await;

    // Every pod of the new template crash-loops (a bad release). The label is set by the
    // test's own field manager, so the operator's apply leaves it in place.
    let patch = json!({"spec": {"template": {"metadata": {"labels": {CRASHLOOP_LABEL: "true"}}}}});
    deployments.patch("bee", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let started = Instant::now();

    // Watch the crash-looping pods come and go until the bee is Stalled.
    /// Crash-looping pods seen so far, and those deleted (with when).
    type Tracked = (BTreeSet<String>, Vec<(String, Duration)>);
    let tracked: Arc<Mutex<Tracked>> = Default::default();
    let fb = wait_for("Stalled by the restart budget", DEADLINE, || {
        let (bees, pods, tracked) = (bees.clone(), pods.clone(), tracked.clone());
        async move {
            let now: BTreeSet<String> = bee_pods(&pods, "bee")
                .await
                .iter()
                .filter(|p| p.labels().contains_key(CRASHLOOP_LABEL))
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| p.name_any())
                .collect();
            let deleted = {
                let mut t = tracked.lock().unwrap();
                let (seen, deleted) = &mut *t;
                for gone in seen.difference(&now) {
                    if !deleted.iter().any(|(n, _)| n == gone) {
                        deleted.push((gone.clone(), started.elapsed()));
                    }
                }
                seen.extend(now);
                deleted.clone()
            };
            let fb = bees.get("bee").await.map_err(|e| e.to_string())?;
            match condition(&fb, "Stalled") {
                Some((st, r, _)) if st == "True" && r == "RestartBudgetExhausted" => Ok(fb),
                other => Err(format!("{other:?}, deleted {deleted:?}")),
            }
        }
    })
    .await;
    let deleted = tracked.lock().unwrap().1.clone();
    let (_, _, message) = condition(&fb, "Stalled").unwrap();
    println!("stalled after {:?}: {message}", started.elapsed());
    println!("crash-looping pods deleted by the operator: {deleted:?}");
    assert!(message.contains("2 of 2 restarts used"), "{message}");
    let (count, _, reason) = restarts(&fb);
    assert_eq!(count, 2, "exactly maxRestarts restarts");
    assert_eq!(reason.as_deref(), Some("CrashLoop"));

    // It stays stalled: the crash-looping pod is left alone while its restartCount grows.
    let survivor: Vec<Pod> =
        bee_pods(&pods, "bee").await.into_iter().filter(|p| p.labels().contains_key(CRASHLOOP_LABEL)).collect();
    assert_eq!(survivor.len(), 1, "one crash-looping pod left");
    let survivor = survivor[0].name_any();
    let before = restart_count(&pods.get(&survivor).await.unwrap());
    wait_for("the survivor to keep crash-looping", DEADLINE, || async {
        let n = restart_count(&pods.get(&survivor).await.map_err(|e| e.to_string())?);
        if n >= before + 3 { Ok(()) } else { Err(format!("restartCount {n}")) }
    })
    .await;
    let fb = bees.get("bee").await.unwrap();
    assert_eq!(restarts(&fb).0, 2, "no restart beyond the budget");
    assert!(pods.get_opt(&survivor).await.unwrap().is_some());
    // (kwok reports each new pod Ready for a moment before it crash-loops, so the rollout
    // completed and the old pod is gone: the bee is down, and says why.)
    let _ = healthy;
    assert_eq!(condition(&fb, "Ready").map(|c| c.1).as_deref(), Some("RestartBudgetExhausted"));
    let evs = events_about(&s.ns, "bee").await;
    let restarted = evs.iter().filter(|(r, _)| r == "PodRestarted").count();
    assert_eq!(restarted, 2, "{evs:?}");
    for (pod, _) in &deleted {
        assert!(
            evs.iter().any(|(r, n)| r == "PodRestarted" && n.contains(pod.as_str())),
            "an Event names {pod}: {evs:?}"
        );
    }
    assert!(evs.iter().any(|(r, _)| r == "RestartBudgetExhausted"), "{evs:?}");
    // Counted in the Events: one per restart; in status: 2; on the pods: 2 deleted.
    assert_eq!(deleted.len(), 2, "{deleted:?}");
    s.ns.cleanup().await;
}

// ------------------------------------------------------------------------------------
// (c) The server is the cause: no restarts, and the condition says why
// ------------------------------------------------------------------------------------

#[tokio::test]
async fn no_restart_while_the_server_is_unhealthy() {
    let s = setup("e2e-fb-server-down").await;
    apply_yaml(
        &s.ns.name,
        &bee_yaml("bee", "{maxRestarts: 3, window: 30m, crashLoopThreshold: 2, stuckAfter: 1h}", "{after: 1h}"),
    )
    .await;
    let bees: Api<FinanceBee> = s.ns.api();
    let pods: Api<Pod> = s.ns.api();
    wait_bee(&bees, "bee", "Available", "True", None).await;
    let pod = ready_pod(&pods, "bee").await;

    s.server.set_failing(true);
    wait_server_healthy(&s.ns, "False").await;
    label_pod(&pods, &pod, CRASHLOOP_LABEL).await;

    let fb = wait_bee(&bees, "bee", "Ready", "False", Some("ServerUnhealthy")).await;
    let (_, _, message) = condition(&fb, "Ready").unwrap();
    println!("Ready=False: {message}");
    assert!(
        message.contains("ColonyServer srv is not Healthy")
            && message.contains(&format!("pod {pod} needs a restart (CrashLoop)"))
            && message.contains("the server is the cause"),
        "{message}"
    );
    // Well past the threshold, the pod is still there and nothing was restarted.
    wait_for("restartCount well past the threshold", DEADLINE, || async {
        let n = restart_count(&pods.get(&pod).await.map_err(|e| e.to_string())?);
        if n >= 5 { Ok(()) } else { Err(format!("restartCount {n}")) }
    })
    .await;
    let fb = bees.get("bee").await.unwrap();
    assert_eq!(restarts(&fb).0, 0, "no restart while the server is unhealthy");
    assert!(pods.get_opt(&pod).await.unwrap().is_some());
    assert!(condition(&fb, "Stalled").is_none(), "waiting on the server is not Stalled");
    let evs = events_about(&s.ns, "bee").await;
    assert!(evs.iter().any(|(r, n)| r == "RestartHeld" && n.contains("ColonyServer srv")), "{evs:?}");

    // The server recovers: the held restart happens.
    let recovered = Instant::now();
    s.server.set_failing(false);
    wait_server_healthy(&s.ns, "True").await;
    let fb = wait_for("the held restart once the server is Healthy", DEADLINE, || async {
        let fb = bees.get("bee").await.map_err(|e| e.to_string())?;
        if restarts(&fb).0 == 1 { Ok(fb) } else { Err(format!("{:?}", restarts(&fb))) }
    })
    .await;
    println!("restart {:?} after the server recovered", recovered.elapsed());
    assert_eq!(restarts(&fb).1.as_deref(), Some(pod.as_str()));
    wait_for("the crash-looping pod gone", DEADLINE, || async {
        match pods.get_opt(&pod).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(p) => Err(format!("{:?}", phase(&p))),
        }
    })
    .await;
    wait_bee(&bees, "bee", "Ready", "True", Some("Available")).await;
    s.ns.cleanup().await;
}

// ------------------------------------------------------------------------------------
// (d) Escalation: one trigger, one resolve, nothing resent after an operator restart
// ------------------------------------------------------------------------------------

#[tokio::test]
async fn escalation_triggers_once_and_resolves_once() {
    let mut s = setup("e2e-fb-escalation").await;
    let rx = Receiver::start().await;
    apply_yaml(
        &s.ns.name,
        &format!(
            r#"apiVersion: v1
kind: Secret
metadata:
  name: ops-webhook
stringData:
  url: "{hook}"
---
apiVersion: v1
kind: Secret
metadata:
  name: pagerduty
stringData:
  routing-key: "R0UT1NGKEY0123456789abcdef012345"
"#,
            hook = rx.url("/hook?token=hook-secret-token")
        ),
    )
    .await;
    let escalation = format!(
        "{{after: 1h, webhook: {{urlSecretRef: {{name: ops-webhook, key: url}}, retries: 2, backoff: 1s}}, \
         pagerDuty: {{routingKeySecretRef: {{name: pagerduty, key: routing-key}}, severity: critical, url: \"{}\"}}}}",
        rx.url("/v2/enqueue")
    );
    apply_yaml(
        &s.ns.name,
        &bee_yaml("bee", "{maxRestarts: 3, window: 30m, crashLoopThreshold: 1000, stuckAfter: 1h}", &escalation),
    )
    .await;
    let bees: Api<FinanceBee> = s.ns.api();
    let pods: Api<Pod> = s.ns.api();
    let fb = wait_bee(&bees, "bee", "Available", "True", None).await;
    let uid = fb.uid().unwrap();
    // Shorten `after` only once the bee is up, so its first rollout cannot escalate.
    bees.patch("bee", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"escalation": {"after": "3s"}}})))
        .await
        .unwrap();
    let pod = ready_pod(&pods, "bee").await;

    // The bee goes down (crash loop, no restarts: the threshold is out of reach).
    label_pod(&pods, &pod, CRASHLOOP_LABEL).await;
    let down = Instant::now();
    let fb = wait_bee(&bees, "bee", "Available", "False", None).await;
    let unavailable_since = fb.status.as_ref().unwrap().unavailable_since.unwrap();
    let fb = wait_bee(&bees, "bee", "Escalated", "True", Some("TriggerSent")).await;
    println!(
        "escalated {:?} after the pod started crash-looping (after: 3s): {:?}",
        down.elapsed(),
        condition(&fb, "Escalated")
    );
    let esc = fb.status.as_ref().unwrap().escalation.clone().unwrap();
    assert_eq!(format!("{:?}", esc.state), "Triggered");
    // Status is the record of the delivery (what a restarted operator reads).
    let delivery = esc.delivery.clone().expect("the delivery is recorded in status");
    assert_eq!(format!("{:?}", delivery.result), "Sent");
    assert!(delivery.detail.contains("PagerDuty") && delivery.detail.contains("webhook"), "{delivery:?}");
    assert!((esc.since - unavailable_since).num_seconds() >= 3);

    // Exactly one trigger each, and it stays one while the bee stays down (and the operator
    // keeps looking at it: its restart count grows every 2 s).
    let seen = s.op.reconciles("financebee").await;
    s.op.wait_reconciles("financebee", seen, 3).await;
    assert_eq!(rx.count("/v2/enqueue", "event_action", "trigger"), 1, "{:?}", rx.bodies("/v2/enqueue"));
    assert_eq!(rx.count("/hook", "event", "trigger"), 1, "{:?}", rx.bodies("/hook"));
    assert_eq!(rx.count("/v2/enqueue", "event_action", "resolve"), 0);
    let pd = rx.bodies("/v2/enqueue").remove(0);
    assert_eq!(pd["routing_key"], "R0UT1NGKEY0123456789abcdef012345");
    assert_eq!(pd["dedup_key"], uid.as_str());
    assert_eq!(pd["payload"]["severity"], "critical");
    assert_eq!(pd["payload"]["source"], format!("{}/bee", s.ns.name));
    assert!(pd["payload"]["summary"].as_str().unwrap().contains("unavailable for more than 3s"), "{pd}");
    let hook = rx.bodies("/hook").remove(0);
    assert_eq!((hook["name"].as_str(), hook["uid"].as_str()), (Some("bee"), Some(uid.as_str())));

    let metric = |text: &str, line: &str| text.contains(&line.replace("NS", &s.ns.name));
    let (_, metrics) = s.op.get("/metrics").await.unwrap();
    for line in [
        "colony_operator_finance_bee_escalations_total{namespace=\"NS\",name=\"bee\",action=\"trigger\"} 1",
        "colony_operator_finance_bee_escalated{namespace=\"NS\",name=\"bee\"} 1",
        "colony_operator_finance_bee_escalation_deliveries_total{namespace=\"NS\",name=\"bee\",target=\"pagerduty\",action=\"trigger\",result=\"success\"} 1",
        "colony_operator_finance_bee_escalation_deliveries_total{namespace=\"NS\",name=\"bee\",target=\"webhook\",action=\"trigger\",result=\"success\"} 1",
    ] {
        assert!(metric(&metrics, line), "missing {line}");
    }

    // An operator restart in the middle of the incident resends nothing: status is the record.
    s.op.kill().await;
    s.op = OperatorProcess::start(&format!("{}-2", s.ns.name), &["--namespace", &s.ns.name]).await;
    s.op.wait_ready().await;
    s.op.wait_reconciles("financebee", 0, 2).await;
    assert_eq!(rx.requests.lock().unwrap().len(), 2, "nothing resent: {:?}", rx.requests.lock().unwrap());
    let (_, metrics) = s.op.get("/metrics").await.unwrap();
    assert!(!metrics.contains("action=\"trigger\""), "the new process triggered nothing");

    // Recovery: the crash-looping pod is removed (the human fix); the replacement is healthy.
    pods.delete(&pod, &DeleteParams::default()).await.unwrap();
    let recovering = Instant::now();
    let fb = wait_bee(&bees, "bee", "Escalated", "False", Some("ResolveSent")).await;
    println!("resolved {:?} after the fix: {:?}", recovering.elapsed(), condition(&fb, "Escalated"));
    assert_eq!(format!("{:?}", fb.status.as_ref().unwrap().escalation.as_ref().unwrap().state), "Resolved");
    // The operator looks again (a label change makes it look) and resolves nothing twice.
    let seen = s.op.reconciles("financebee").await;
    bees.patch("bee", &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"labels": {"touched": "yes"}}})))
        .await
        .unwrap();
    s.op.wait_reconciles("financebee", seen, 1).await;
    assert_eq!(rx.count("/v2/enqueue", "event_action", "resolve"), 1);
    assert_eq!(rx.count("/hook", "event", "resolve"), 1);
    let resolve = rx.bodies("/v2/enqueue").into_iter().find(|b| b["event_action"] == "resolve").unwrap();
    assert_eq!(resolve["dedup_key"], uid.as_str(), "same dedup key");
    assert_eq!(resolve["routing_key"], "R0UT1NGKEY0123456789abcdef012345");

    let (_, metrics) = s.op.get("/metrics").await.unwrap();
    for line in [
        "colony_operator_finance_bee_escalations_total{namespace=\"NS\",name=\"bee\",action=\"resolve\"} 1",
        "colony_operator_finance_bee_escalated{namespace=\"NS\",name=\"bee\"} 0",
    ] {
        assert!(metric(&metrics, line), "missing {line}");
    }

    // Nothing secret in either process's log.
    for log in [
        std::fs::read_to_string(colony_e2e::repo_root().join(format!("target/e2e-logs/{}.log", s.ns.name)))
            .unwrap_or_default(),
        s.op.logs(),
    ] {
        assert!(!log.contains("hook-secret-token"), "webhook URL logged");
        assert!(!log.contains("R0UT1NGKEY"), "routing key logged");
    }

    // And a restart after the resolve resends nothing either.
    s.op.kill().await;
    s.op = OperatorProcess::start(&format!("{}-3", s.ns.name), &["--namespace", &s.ns.name]).await;
    s.op.wait_ready().await;
    s.op.wait_reconciles("financebee", 0, 2).await;
    let total = rx.requests.lock().unwrap().len();
    assert_eq!(total, 4, "2 triggers + 2 resolves in all: {:?}", rx.requests.lock().unwrap());
    println!("per incident: 1 trigger and 1 resolve per target ({total} requests in all, 2 operator restarts)");
    s.ns.cleanup().await;
}

// ------------------------------------------------------------------------------------
// (d') A failed delivery shows in status and metrics
// ------------------------------------------------------------------------------------

#[tokio::test]
async fn failed_escalation_delivery_is_reported() {
    let s = setup("e2e-fb-escalation-fail").await;
    let rx = Receiver::start().await;
    rx.set_status(500);
    apply_yaml(
        &s.ns.name,
        r#"apiVersion: v1
kind: Secret
metadata:
  name: pagerduty
stringData:
  routing-key: "R0UT1NGKEY0123456789abcdef012345"
"#,
    )
    .await;
    let escalation = format!(
        "{{after: 1h, pagerDuty: {{routingKeySecretRef: {{name: pagerduty, key: routing-key}}, url: \"{}\"}}}}",
        rx.url("/v2/enqueue")
    );
    apply_yaml(
        &s.ns.name,
        &bee_yaml("bee", "{maxRestarts: 3, window: 30m, crashLoopThreshold: 1000, stuckAfter: 1h}", &escalation),
    )
    .await;
    let bees: Api<FinanceBee> = s.ns.api();
    let pods: Api<Pod> = s.ns.api();
    wait_bee(&bees, "bee", "Available", "True", None).await;
    bees.patch("bee", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"escalation": {"after": "2s"}}})))
        .await
        .unwrap();
    let pod = ready_pod(&pods, "bee").await;
    label_pod(&pods, &pod, CRASHLOOP_LABEL).await;

    let fb = wait_bee(&bees, "bee", "Escalated", "True", Some("TriggerFailed")).await;
    let (_, _, message) = condition(&fb, "Escalated").unwrap();
    println!("Escalated: {message}");
    assert!(message.contains("PagerDuty") && message.contains("HTTP 500"), "{message}");
    assert!(!message.contains("127.0.0.1"), "no URL in status: {message}");
    // 1 attempt + 3 retries, all answered 500.
    assert_eq!(rx.count("/v2/enqueue", "event_action", "trigger"), 4);
    let (_, metrics) = s.op.get("/metrics").await.unwrap();
    let line = format!(
        "colony_operator_finance_bee_escalation_deliveries_total{{namespace=\"{ns}\",name=\"bee\",target=\"pagerduty\",action=\"trigger\",result=\"failure\"}} 1",
        ns = s.ns.name
    );
    assert!(metrics.contains(&line), "missing {line}");
    let evs = events_about(&s.ns, "bee").await;
    assert!(evs.iter().any(|(r, _)| r == "EscalationDeliveryFailed"), "{evs:?}");
    s.ns.cleanup().await;
}

// ------------------------------------------------------------------------------------
// (e) Changing the executor key Secret rolls the Deployment
// ------------------------------------------------------------------------------------

#[tokio::test]
async fn executor_key_change_rolls_the_bee() {
    let s = setup("e2e-fb-secret").await;
    apply_yaml(&s.ns.name, &bee_yaml("bee", "{}", "{}")).await;
    let bees: Api<FinanceBee> = s.ns.api();
    let deployments: Api<Deployment> = s.ns.api();
    let pods: Api<Pod> = s.ns.api();
    wait_bee(&bees, "bee", "Available", "True", None).await;
    let hash = |d: &Deployment| {
        d.spec.template.metadata.as_ref().and_then(|m| m.annotations.as_ref()).and_then(|a| a.get(CONFIG_HASH).cloned())
    };
    let before = hash(&deployments.get("bee").await.unwrap()).expect("config hash");
    let old_pod = ready_pod(&pods, "bee").await;

    // Steady state is silent: no writes by the operator to the bee, its Deployment or pods.
    // The operator looks again during the window (a label change makes it look): a reconcile
    // that finds nothing changed writes nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let quiet_from = std::time::SystemTime::now();
    let seen = s.op.reconciles("financebee").await;
    let touch = json!({"metadata": {"labels": {"touched": "yes"}}});
    bees.patch("bee", &PatchParams::default(), &Patch::Merge(&touch)).await.unwrap();
    s.op.wait_reconciles("financebee", seen, 1).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let writes: Vec<String> = colony_e2e::operator_writes(&s.ns.name, quiet_from)
        .into_iter()
        .filter(|w| ["financebees/", "deployments/", "pods/"].iter().any(|r| w.contains(r)))
        .collect();
    assert!(writes.is_empty(), "writes in steady state: {writes:?}");

    let secrets: Api<Secret> = s.ns.api();
    secrets
        .patch("bee-key", &PatchParams::default(), &Patch::Merge(&json!({"stringData": {"prvkey": "2".repeat(64)}})))
        .await
        .unwrap();
    let changed = Instant::now();
    let after = wait_for("the config hash to change", DEADLINE, || async {
        let d = deployments.get("bee").await.map_err(|e| e.to_string())?;
        match hash(&d) {
            Some(h) if h != before => Ok(h),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    println!("config hash {before} -> {after} {:?} after the Secret changed", changed.elapsed());
    let new_pod = wait_for("a new ready pod replacing the old one", DEADLINE, || async {
        let all = bee_pods(&pods, "bee").await;
        match all.iter().find(|p| is_ready(p) && p.name_any() != old_pod) {
            Some(p) => Ok(p.name_any()),
            None => Err(format!("{:?}", all.iter().map(|p| p.name_any()).collect::<Vec<_>>())),
        }
    })
    .await;
    println!("rolled {old_pod} -> {new_pod} in {:?}", changed.elapsed());
    // An unrelated Secret changes nothing.
    apply_yaml(&s.ns.name, "apiVersion: v1\nkind: Secret\nmetadata:\n  name: unrelated\nstringData:\n  x: \"y\"\n")
        .await;
    // The operator looks at the bee again with the unrelated Secret there, and rolls nothing.
    let seen = s.op.reconciles("financebee").await;
    let touch = json!({"metadata": {"labels": {"touched": "again"}}});
    bees.patch("bee", &PatchParams::default(), &Patch::Merge(&touch)).await.unwrap();
    s.op.wait_reconciles("financebee", seen, 1).await;
    assert_eq!(hash(&deployments.get("bee").await.unwrap()), Some(after));
    s.ns.cleanup().await;
}

// ------------------------------------------------------------------------------------
// (f) A pod stuck pending is restarted after stuckAfter (a timer, no event wakes it)
// ------------------------------------------------------------------------------------

#[tokio::test]
async fn stuck_pending_pod_is_restarted_after_stuck_after() {
    let s = setup("e2e-fb-stuck").await;
    let yaml = bee_yaml("bee", "{maxRestarts: 1, window: 30m, crashLoopThreshold: 5, stuckAfter: 3s}", "{after: 1h}")
        + "  podTemplate:\n    nodeSelector:\n      colony.zyeute.io/no-such-node: \"true\"\n";
    apply_yaml(&s.ns.name, &yaml).await;
    let created = Instant::now();
    let bees: Api<FinanceBee> = s.ns.api();
    let pods: Api<Pod> = s.ns.api();
    let first = wait_for("a pending pod", DEADLINE, || async {
        let all = bee_pods(&pods, "bee").await;
        match all.first() {
            Some(p) if phase(p).as_deref() == Some("Pending") => Ok(p.name_any()),
            other => Err(format!("{:?}", other.map(|p| (p.name_any(), phase(p))))),
        }
    })
    .await;
    let fb = wait_for("one Stuck restart", DEADLINE, || async {
        let fb = bees.get("bee").await.map_err(|e| e.to_string())?;
        match restarts(&fb) {
            (1, pod, Some(reason)) if reason == "Stuck" => Ok((fb, pod)),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let elapsed = created.elapsed();
    println!("stuck pod {first} restarted {elapsed:?} after the bee was created (stuckAfter 3s)");
    assert_eq!(fb.1.as_deref(), Some(first.as_str()));
    assert!(elapsed >= Duration::from_secs(3), "restarted before stuckAfter");
    // Not before stuckAfter, in the API server's (whole-second) timestamps.
    let pod_created = pods.get_opt(&first).await.unwrap().and_then(|p| p.metadata.creation_timestamp);
    let restarted_at = fb.0.status.as_ref().and_then(|s| s.restarts.as_ref()?.last.clone()).unwrap().time;
    if let Some(c) = pod_created {
        assert!(restarted_at.timestamp() - c.0.as_second() >= 3, "restarted before stuckAfter");
    }
    let fb = wait_bee(&bees, "bee", "Stalled", "True", Some("RestartBudgetExhausted")).await;
    let (_, _, message) = condition(&fb, "Stalled").unwrap();
    assert!(message.contains("needs a restart (Stuck)"), "{message}");
    assert!(
        wait_bee(&bees, "bee", "Available", "False", None).await.status.unwrap().unavailable_since.is_some(),
        "unavailable"
    );
    s.ns.cleanup().await;
}

#[tokio::test]
async fn bad_image_rolls_back_to_the_last_known_good_one() {
    let s = setup("e2e-fb-rollback").await;
    let yaml = bee_yaml("bee", "{crashLoopThreshold: 50}", "{after: 1h}") + "  rollback: {stableAfter: 10s}\n";
    apply_yaml(&s.ns.name, &yaml).await;
    let bees: Api<FinanceBee> = s.ns.api();
    let deployments: Api<Deployment> = s.ns.api();
    let image_of = |d: &Deployment| d.spec.template.spec.as_ref().unwrap().containers[0].image.clone().unwrap();
    wait_for("v1 to become the last known good image", DEADLINE, || async {
        let fb = bees.get("bee").await.map_err(|e| e.to_string())?;
        let good = fb.status.and_then(|s| s.rollout.last_known_good_image);
        if good.as_deref() == Some("example.invalid/finance-bee:1") { Ok(()) } else { Err(format!("{good:?}")) }
    })
    .await;

    // A new release whose pods crash-loop.
    let patch = json!({"spec": {"image": "example.invalid/finance-bee:2-bad"}});
    bees.patch("bee", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_for("the Deployment to run the new image", DEADLINE, || async {
        let d = deployments.get("bee").await.map_err(|e| e.to_string())?;
        if image_of(&d) == "example.invalid/finance-bee:2-bad" { Ok(()) } else { Err(image_of(&d)) }
    })
    .await;
    let label = json!({"spec": {"template": {"metadata": {"labels": {CRASHLOOP_LABEL: "true"}}}}});
    deployments.patch("bee", &PatchParams::default(), &Patch::Merge(&label)).await.unwrap();

    wait_for("the last known good image to run again", DEADLINE, || async {
        let d = deployments.get("bee").await.map_err(|e| e.to_string())?;
        if image_of(&d) == "example.invalid/finance-bee:1" { Ok(()) } else { Err(image_of(&d)) }
    })
    .await;
    let fb = wait_bee(&bees, "bee", "RolledBack", "True", Some("RolledBack")).await;
    let status = fb.status.clone().unwrap();
    assert_eq!(status.rollout.failed_images, ["example.invalid/finance-bee:2-bad"]);
    assert_eq!(status.rollout.current_image.as_deref(), Some("example.invalid/finance-bee:1"));
    let (_, _, message) = condition(&fb, "RolledBack").unwrap();
    assert!(message.contains("2-bad") && message.contains("CrashLoopBackOff"), "{message}");
    assert_eq!(fb.spec.image, "example.invalid/finance-bee:2-bad", "spec is never written");
    assert!(events_about(&s.ns, "bee").await.iter().any(|(reason, _)| reason == "RolledBack"));
    drop(s.op);
    s.ns.cleanup().await;
}

/// A bee `bee` with `restart` as its restart policy that pages the local receiver's `/hook`
/// 3 s after it becomes unavailable (set once it is up, so that its first rollout cannot
/// page); the receiver, and the bees' and pods' APIs.
async fn paging_bee(s: &Setup, restart: &str) -> (Receiver, Api<FinanceBee>, Api<Pod>) {
    let rx = Receiver::start().await;
    let hook = rx.url("/hook");
    let secret =
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: ops-webhook\nstringData:\n  url: \"{hook}\"\n");
    apply_yaml(&s.ns.name, &secret).await;
    let escalation = "{after: 1h, webhook: {urlSecretRef: {name: ops-webhook, key: url}, retries: 2, backoff: 1s}}";
    apply_yaml(&s.ns.name, &bee_yaml("bee", restart, escalation)).await;
    let bees: Api<FinanceBee> = s.ns.api();
    let pods: Api<Pod> = s.ns.api();
    wait_bee(&bees, "bee", "Available", "True", None).await;
    let after = json!({"spec": {"escalation": {"after": "3s"}}});
    bees.patch("bee", &PatchParams::default(), &Patch::Merge(&after)).await.unwrap();
    (rx, bees, pods)
}

/// Waits for the page's `event` (`trigger`, `resolve`) at the receiver's `/hook`; its body.
async fn wait_hook(rx: &Receiver, event: &str) -> Value {
    wait_for(&format!("the page's {event} at the webhook"), DEADLINE, || async {
        rx.bodies("/hook").into_iter().find(|b| b["event"] == event).ok_or_else(|| "none yet".to_string())
    })
    .await
}

/// A bee whose Deployment the API server refuses (a quota of no Deployments; a policy webhook
/// refuses the same way): it is Stalled saying why, unavailable, and its page fires after
/// `escalation.after`, instead of its reconcile failing with nothing in status. Once the
/// quota goes, the Deployment is created and the bee becomes available, with no change to it.
#[tokio::test]
async fn a_refused_deployment_stalls_the_bee_and_pages() {
    let s = setup("e2e-fb-quota").await;
    apply_yaml(
        &s.ns.name,
        "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: no-deployments\nspec:\n  hard: {count/deployments.apps: \"0\"}\n",
    )
    .await;
    apply_yaml(&s.ns.name, &bee_yaml("bee", "{maxRestarts: 3, window: 30m}", "{after: 1s}")).await;
    let bees: Api<FinanceBee> = s.ns.api();
    let fb = wait_bee(&bees, "bee", "Stalled", "True", Some("DeploymentRefused")).await;
    let (_, _, message) = condition(&fb, "Stalled").unwrap();
    assert!(message.contains("exceeded quota") && message.contains("Deployment bee"), "{message}");
    assert_eq!(condition(&fb, "Available").map(|c| c.0).as_deref(), Some("False"));
    wait_bee(&bees, "bee", "Escalated", "True", None).await;

    let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> = s.ns.api();
    quotas.delete("no-deployments", &Default::default()).await.unwrap();
    // Nothing the operator watches changed: a stalled bee looks again every 30 s by itself.
    wait_bee(&bees, "bee", "Available", "True", None).await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = s.ns.api();
    assert!(deployments.get_opt("bee").await.unwrap().is_some());
    s.ns.cleanup().await;
}

/// The pod the bee would restart cannot be deleted (a policy refuses it): its page still goes
/// out. The restart's refusal ended the reconcile before the page's delivery was started (and
/// before the escalated gauge was set), for as long as the pod could not be deleted.
#[tokio::test]
async fn a_page_goes_out_while_the_pod_to_restart_cannot_be_deleted() {
    let s = setup("e2e-fb-undeletable").await;
    let (rx, _, pods) = paging_bee(&s, "{maxRestarts: 100, window: 30m, crashLoopThreshold: 1}").await;
    let pod = ready_pod(&pods, "bee").await;
    label_pod(&pods, &pod, "colony.zyeute.io/protected").await;
    let ns = s.ns.name.clone();
    let protected = colony_e2e::policy::Admission::deny(
        &ns,
        ("", "pods", &["DELETE"]),
        "!has(oldObject.metadata.labels) || !('colony.zyeute.io/protected' in oldObject.metadata.labels)",
        "this pod is protected from deletion",
        || async {
            let args = ["delete", "pod", &pod, "-n", &ns];
            colony_e2e::policy::dry_run_refused(&args, None, "protected").await
        },
    )
    .await;

    label_pod(&pods, &pod, CRASHLOOP_LABEL).await;
    let trigger = wait_hook(&rx, "trigger").await;
    assert_eq!(trigger["name"].as_str(), Some("bee"));
    // The page went out while the restart was being refused: the pod is still there.
    assert!(pods.get_opt(&pod).await.unwrap().is_some_and(|p| p.metadata.deletion_timestamp.is_none()));
    let (_, metrics) = s.op.get("/metrics").await.unwrap();
    let gauge = format!("colony_operator_finance_bee_escalated{{namespace=\"{}\",name=\"bee\"}} 1", s.ns.name);
    assert!(metrics.contains(&gauge), "{gauge}");
    drop(protected);
    s.ns.cleanup().await;
}

/// The bee's Deployment cannot be written for a while (a validating webhook that is down,
/// `failurePolicy: Fail`: a server error, not a refusal) while its pod crash-loops: the bee is
/// judged on the Deployment that runs, reported unavailable, and its page goes out. Before,
/// the failed write ended every reconcile before status and paging.
#[tokio::test]
async fn a_bee_pages_while_its_deployment_cannot_be_written() {
    let s = setup("e2e-fb-webhook-down").await;
    let (rx, bees, pods) = paging_bee(&s, "{maxRestarts: 3, window: 30m, crashLoopThreshold: 1000}").await;
    let pod = ready_pod(&pods, "bee").await;
    let ns = s.ns.name.clone();
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "probe"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]}}},
    })
    .to_string();
    let down =
        colony_e2e::policy::Admission::webhook_down(&ns, ("apps", "deployments", &["CREATE", "UPDATE"]), || async {
            let args = ["create", "-n", &ns, "-f", "-"];
            colony_e2e::policy::dry_run_refused(&args, Some(&deployment), "failed calling webhook").await
        })
        .await;
    // A new image: the Deployment must be written, and cannot be.
    let patch = json!({"spec": {"image": "example.invalid/finance-bee:2"}});
    bees.patch("bee", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    label_pod(&pods, &pod, CRASHLOOP_LABEL).await;

    let trigger = wait_hook(&rx, "trigger").await;
    assert_eq!(trigger["name"].as_str(), Some("bee"));
    let fb = bees.get("bee").await.unwrap();
    assert_eq!(condition(&fb, "Available").map(|c| c.0).as_deref(), Some("False"));
    assert_ne!(condition(&fb, "Stalled").map(|c| c.0).as_deref(), Some("True"), "a server error is not a refusal");
    let d: Deployment = s.ns.api::<Deployment>().get("bee").await.unwrap();
    let image = d.spec.template.spec.unwrap().containers[0].image.clone();
    assert_eq!(image.as_deref(), Some("example.invalid/finance-bee:1"), "the write did fail meanwhile");

    // The webhook back: the new image is written.
    drop(down);
    wait_for("the new image in the Deployment", DEADLINE, || async {
        let d = s.ns.api::<Deployment>().get("bee").await.map_err(|e| e.to_string())?;
        let image = d.spec.template.spec.map(|p| p.containers[0].image.clone());
        if image == Some(Some("example.invalid/finance-bee:2".into())) { Ok(()) } else { Err(format!("{image:?}")) }
    })
    .await;
    s.ns.cleanup().await;
}

/// The API server will not let the operator add its finalizer to an escalated bee (a policy
/// on the bee's metadata; a webhook that is down does the same): the page is still resolved
/// when the bee recovers, and an Event says the finalizer is missing. Before, every reconcile
/// of the escalated bee stopped at the finalizer, so the resolve was never sent.
#[tokio::test]
async fn a_refused_finalizer_does_not_hold_the_resolve() {
    let s = setup("e2e-fb-no-finalizer").await;
    let (rx, bees, pods) = paging_bee(&s, "{maxRestarts: 3, window: 30m, crashLoopThreshold: 1000}").await;
    let ns = s.ns.name.clone();
    let finalizer = "colony.zyeute.io/resolve-escalation";
    let policy = colony_e2e::policy::Admission::deny(
        &ns,
        ("colony.zyeute.io", "financebees", &["UPDATE"]),
        &format!("!has(object.metadata.finalizers) || !('{finalizer}' in object.metadata.finalizers)"),
        "no finalizers on bees here",
        || async {
            let patch = json!({"metadata": {"finalizers": [finalizer]}}).to_string();
            let args = ["patch", "financebee", "bee", "-n", &ns, "--type", "merge", "-p", &patch];
            colony_e2e::policy::dry_run_refused(&args, None, "no finalizers").await
        },
    )
    .await;
    let pod = ready_pod(&pods, "bee").await;
    label_pod(&pods, &pod, CRASHLOOP_LABEL).await;
    wait_hook(&rx, "trigger").await;

    // The fix: the crash-looping pod goes, its replacement is healthy; the page is resolved.
    pods.delete(&pod, &DeleteParams::default()).await.unwrap();
    wait_hook(&rx, "resolve").await;
    let events = colony_e2e::events_about(&s.ns, "bee").await;
    let missing = events.iter().find(|(reason, _)| reason == "FinalizerNotAdded");
    assert!(missing.is_some_and(|(_, note)| note.contains("would not resolve its open page")), "{events:?}");
    let fb = bees.get("bee").await.unwrap();
    assert!(!fb.finalizers().iter().any(|f| f == finalizer), "{:?}", fb.finalizers());
    drop(policy);
    s.ns.cleanup().await;
}
