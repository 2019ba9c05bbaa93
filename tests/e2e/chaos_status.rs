//! Status never lies to the on-call team, and deleted objects leave nothing behind.
//!
//! Each test drives live objects into a state that used to be misreported, then reads them
//! the way the GitOps tools do: Flux's kstatus rules and the Argo CD health scripts shipped
//! in examples/gitops/argocd (run by a real Lua interpreter, see colony_e2e::gitops). The
//! deletion tests check that a deleted object's page is resolved, its metric series dropped
//! and its probes stopped. Each records a row of the fault table (colony_e2e::chaos).
use std::time::Instant;

use colony_e2e::chaos::{Row, record};
use colony_e2e::gitops::{KStatus, argocd_health, kstatus};
use colony_e2e::{DEADLINE, OperatorProcess, TestEndpoint, TestNamespace, apply_yaml, client, install_crds, wait_for};
use colony_operator::api::{ColonyServer, FinanceBee, KeyRotation, MaintenanceWindow};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

const CRASHLOOP_LABEL: &str = "colony.zyeute.io/test-crashloop";

fn to_json<K: serde::Serialize>(obj: &K) -> Value {
    serde_json::to_value(obj).expect("an object as JSON")
}

/// (status, reason, message) of a condition of a live object.
fn condition(obj: &Value, type_: &str) -> Option<(String, String, String)> {
    let c = obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)?;
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    Some((s("status"), s("reason"), s("message")))
}

fn is_true(obj: &Value, type_: &str) -> bool {
    condition(obj, type_).is_some_and(|c| c.0 == "True")
}

fn observed_current(obj: &Value) -> bool {
    obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
}

/// Lines of /metrics that belong to the object `namespace/name`.
fn series_of(metrics: &str, namespace: &str, name: &str) -> Vec<String> {
    let needle = format!("namespace=\"{namespace}\",name=\"{name}\"");
    metrics.lines().filter(|l| l.contains(&needle)).map(String::from).collect()
}

async fn metrics(op: &OperatorProcess) -> String {
    op.get("/metrics").await.map(|(_, body)| body).unwrap_or_default()
}

/// A namespace with its own operator, a ColonyServer `srv` probing `endpoint` every second,
/// and the executor key Secret of the bees.
async fn setup(prefix: &str, endpoint: &TestEndpoint) -> (TestNamespace, OperatorProcess) {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, prefix).await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    op.wait_ready().await;
    apply_yaml(&ns.name, &server("srv", endpoint, "{recoverAfter: 1s, minHold: 1s}")).await;
    apply_yaml(
        &ns.name,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bee-key\nstringData:\n  prvkey: \"{}\"\n",
            "1".repeat(64)
        ),
    )
    .await;
    (ns, op)
}

fn server(name: &str, endpoint: &TestEndpoint, fallback: &str) -> String {
    let extra = format!("  fallback: {fallback}\n");
    colony_e2e::fixtures::unmanaged_server(name, &endpoint.url(), colony_e2e::fixtures::FAST_HEALTH, &extra)
}

fn bee(name: &str, replicas: i32, extra: &str) -> String {
    format!(
        r#"apiVersion: colony.zyeute.io/v1alpha1
kind: FinanceBee
metadata:
  name: {name}
spec:
  image: example.invalid/finance-bee:1
  replicas: {replicas}
  colonyServerRef: {{name: srv}}
  colonyName: zyeute
  executorKeySecretRef: {{name: bee-key, key: prvkey}}
{extra}"#
    )
}

async fn replicas(deployments: &Api<Deployment>, name: &str) -> Result<i32, String> {
    let d = deployments.get(name).await.map_err(|e| e.to_string())?;
    Ok(d.spec.replicas.unwrap_or(1))
}

async fn live<K>(api: &Api<K>, name: &str) -> Result<Value, String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.get(name).await.map(|o| to_json(&o)).map_err(|e| e.to_string())
}

// ------------------------------------------------------------------------------------
// Part A: status honesty
// ------------------------------------------------------------------------------------

/// During verification and after a failed verification with `onFailure: keepFallback`, the
/// bees stay at 0 replicas as the field says, the window reads InProgress/Progressing while
/// verifying and Failed/Degraded once failed; a human setting `onFailure: restore` brings
/// them back.
#[tokio::test]
async fn chaos_maintenance_keeps_bees_stopped_through_verification_and_a_kept_failure() {
    let endpoint = TestEndpoint::start().await;
    let (ns, op) = setup("chaos-mw-kept", &endpoint).await;
    apply_yaml(&ns.name, &bee("bee", 2, "")).await;
    let deployments: Api<Deployment> = ns.api();
    let windows: Api<MaintenanceWindow> = ns.api();
    let bees: Api<FinanceBee> = ns.api();
    wait_for("the bee runs 2 replicas", DEADLINE, || async {
        let r = replicas(&deployments, "bee").await?;
        if r == 2 { Ok(()) } else { Err(format!("replicas {r}")) }
    })
    .await;

    let now = chrono::Utc::now();
    let ts = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    apply_yaml(
        &ns.name,
        &format!(
            r#"apiVersion: colony.zyeute.io/v1alpha1
kind: MaintenanceWindow
metadata:
  name: planned
spec:
  schedule: {{start: "{start}", end: "{end}"}}
  colonyServerRef: {{name: srv}}
  verify: {{timeout: 12s, onFailure: keepFallback}}
"#,
            start = ts(now - chrono::Duration::seconds(5)),
            end = ts(now + chrono::Duration::seconds(20)),
        ),
    )
    .await;
    wait_for("the window open and the bees stopped", DEADLINE, || async {
        let mw = live(&windows, "planned").await?;
        let r = replicas(&deployments, "bee").await?;
        if mw["status"]["phase"] == "Active" && r == 0 {
            Ok(())
        } else {
            Err(format!("{}, replicas {r}", mw["status"]["phase"]))
        }
    })
    .await;
    // The server stays down through the verification: it cannot pass.
    endpoint.set_failing(true);

    // Every look during Verifying: bees at 0, InProgress for kstatus, Progressing for Argo CD.
    let looks = std::sync::Arc::new(std::sync::Mutex::new((0usize, Vec::<String>::new())));
    let failed = wait_for("the verification to fail", DEADLINE, || {
        let (windows, deployments, looks) = (windows.clone(), deployments.clone(), looks.clone());
        async move {
            let mw = live(&windows, "planned").await?;
            let r = replicas(&deployments, "bee").await?;
            match mw["status"]["phase"].as_str() {
                Some("Verifying") => {
                    let (k, (argo, _)) = (kstatus(&mw), argocd_health("MaintenanceWindow", &mw));
                    let mut l = looks.lock().unwrap();
                    l.0 += 1;
                    if r != 0 || k != KStatus::InProgress || argo != "Progressing" {
                        l.1.push(format!("verifying: replicas {r}, kstatus {k:?}, Argo CD {argo}"));
                    }
                    Err("verifying".into())
                }
                Some("Failed") => Ok(mw),
                other => Err(format!("phase {other:?}")),
            }
        }
    })
    .await;
    let (verifying_looks, lies) = looks.lock().unwrap().clone();
    assert!(verifying_looks > 0, "the Verifying phase was observed");
    assert_eq!(lies, Vec::<String>::new());

    // Proof the bee controller has looked since the failure: a spec change it must observe.
    bees.patch("bee", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 3}}))).await.unwrap();
    let fb = wait_for("the bee to observe its new spec", DEADLINE, || async {
        let fb = live(&bees, "bee").await?;
        if observed_current(&fb) && fb["metadata"]["generation"].as_i64() > Some(1) {
            Ok(fb)
        } else {
            Err(format!("{}", fb["status"]))
        }
    })
    .await;
    assert_eq!(replicas(&deployments, "bee").await.unwrap(), 0, "bees stay stopped after a kept failure");
    assert_eq!(condition(&fb, "Ready").map(|c| c.1).as_deref(), Some("Maintenance"));
    let failed = live(&windows, "planned").await.unwrap_or(failed);
    let (k, (argo, argo_message)) = (kstatus(&failed), argocd_health("MaintenanceWindow", &failed));
    assert_eq!((k, argo.as_str()), (KStatus::Failed, "Degraded"), "{argo_message}");
    let (_, reason, message) = condition(&failed, "Stalled").expect("Stalled");
    assert_eq!(reason, "VerificationFailed");
    assert!(message.contains("until a human acts") && message.contains("onFailure"), "{message}");
    assert!(!is_true(&failed, "Reconciling"));

    // The human acts.
    let acted = Instant::now();
    let patch = json!({"spec": {"verify": {"onFailure": "restore"}}});
    windows.patch("planned", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_for("the bees back after onFailure: restore", DEADLINE, || async {
        let r = replicas(&deployments, "bee").await?;
        if r == 3 { Ok(()) } else { Err(format!("replicas {r}")) }
    })
    .await;
    let resumed = acted.elapsed();
    record(&Row {
        fault: "ColonyServer down through a maintenance verification (keepFallback)".into(),
        injected: 1,
        lost: 0,
        doubled: 0,
        stuck: 0,
        figures: format!(
            "bees at 0 in {verifying_looks} looks while verifying and after the failure; resumed {:.1} s after onFailure: restore",
            resumed.as_secs_f64()
        ),
    });
    drop(op);
    ns.cleanup().await;
}

/// A KeyRotation whose window does not exist and a MaintenanceWindow whose server does not
/// exist are Stalled with a reason naming the missing object (Failed, Degraded); creating the
/// missing objects clears it.
#[tokio::test]
async fn chaos_references_that_do_not_resolve_are_stalled() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "chaos-dangling").await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    op.wait_ready().await;
    apply_yaml(
        &ns.name,
        r#"apiVersion: colony.zyeute.io/v1alpha1
kind: KeyRotation
metadata:
  name: rot
spec:
  interval: 720h
  secretName: rot-key
  keyType: random
  length: 32
  maintenanceWindowRef: {name: nightly}
---
apiVersion: colony.zyeute.io/v1alpha1
kind: MaintenanceWindow
metadata:
  name: orphan
spec:
  schedule: {cron: "0 2 * * 0", duration: 1h}
  colonyServerRef: {name: ghost}
"#,
    )
    .await;
    let rotations: Api<KeyRotation> = ns.api();
    let windows: Api<MaintenanceWindow> = ns.api();
    let stalled = |api_kind: &'static str, reason: &'static str| {
        let (rotations, windows) = (rotations.clone(), windows.clone());
        async move {
            wait_for(&format!("{api_kind} Stalled {reason}"), DEADLINE, || async {
                let obj = match api_kind {
                    "KeyRotation" => live(&rotations, "rot").await?,
                    _ => live(&windows, "orphan").await?,
                };
                match condition(&obj, "Stalled") {
                    Some((s, r, m)) if s == "True" && r == reason && observed_current(&obj) => Ok((obj, m)),
                    other => Err(format!("{other:?}")),
                }
            })
            .await
        }
    };
    let mut lies = Vec::new();
    for (kind, reason, missing) in [
        ("KeyRotation", "WindowNotFound", "MaintenanceWindow \"nightly\""),
        ("MaintenanceWindow", "ServerNotFound", "ColonyServer \"ghost\""),
    ] {
        let (obj, message) = stalled(kind, reason).await;
        assert!(message.contains(missing), "{message}");
        let (k, (argo, argo_message)) = (kstatus(&obj), argocd_health(kind, &obj));
        if k != KStatus::Failed || argo != "Degraded" || !argo_message.contains(missing) {
            lies.push(format!("{kind}: kstatus {k:?}, Argo CD {argo} ({argo_message})"));
        }
        if is_true(&obj, "Ready") || is_true(&obj, "Reconciling") {
            lies.push(format!("{kind}: Ready or Reconciling while stalled: {}", obj["status"]["conditions"]));
        }
    }
    assert_eq!(lies, Vec::<String>::new());

    // The missing objects appear: both recover on their own.
    let endpoint = TestEndpoint::start().await;
    let fixed = Instant::now();
    apply_yaml(&ns.name, &server("ghost", &endpoint, "{}")).await;
    apply_yaml(
        &ns.name,
        r#"apiVersion: colony.zyeute.io/v1alpha1
kind: MaintenanceWindow
metadata:
  name: nightly
spec:
  schedule: {cron: "0 2 * * 0", duration: 1h}
  colonyServerRef: {name: ghost}
"#,
    )
    .await;
    for kind in ["KeyRotation", "MaintenanceWindow"] {
        wait_for(&format!("{kind} Current again"), DEADLINE, || async {
            let obj = match kind {
                "KeyRotation" => live(&rotations, "rot").await?,
                _ => live(&windows, "orphan").await?,
            };
            if kstatus(&obj) == KStatus::Current && !is_true(&obj, "Stalled") {
                Ok(())
            } else {
                Err(format!("{}", obj["status"]["conditions"]))
            }
        })
        .await;
    }
    record(&Row {
        fault: "reference to a missing MaintenanceWindow / ColonyServer".into(),
        injected: 2,
        lost: 0,
        doubled: 0,
        stuck: 0,
        figures: format!(
            "both Stalled naming the object; Current {:.1} s after it was created",
            fixed.elapsed().as_secs_f64()
        ),
    });
    drop(op);
    ns.cleanup().await;
}

/// A FinanceBee that rolled back is Degraded in Argo CD, with the rollback's message, like a
/// ColonyServer that rolled back.
#[tokio::test]
async fn chaos_rolled_back_bee_is_degraded_like_a_rolled_back_server() {
    let endpoint = TestEndpoint::start().await;
    let (ns, op) = setup("chaos-fb-rollback", &endpoint).await;
    apply_yaml(&ns.name, &bee("bee", 1, "  restart: {crashLoopThreshold: 50}\n  rollback: {stableAfter: 5s}\n")).await;
    let bees: Api<FinanceBee> = ns.api();
    let deployments: Api<Deployment> = ns.api();
    let image_of = |d: &Deployment| d.spec.template.spec.as_ref().unwrap().containers[0].image.clone().unwrap();
    wait_for("v1 to become the last known good image", DEADLINE, || async {
        let fb = bees.get("bee").await.map_err(|e| e.to_string())?;
        let good = fb.status.and_then(|s| s.rollout.last_known_good_image);
        if good.as_deref() == Some("example.invalid/finance-bee:1") { Ok(()) } else { Err(format!("{good:?}")) }
    })
    .await;
    let healthy = live(&bees, "bee").await.unwrap();
    assert_eq!(argocd_health("FinanceBee", &healthy).0, "Healthy");

    let patch = json!({"spec": {"image": "example.invalid/finance-bee:2-bad"}});
    bees.patch("bee", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_for("the Deployment to run the new image", DEADLINE, || async {
        let d = deployments.get("bee").await.map_err(|e| e.to_string())?;
        if image_of(&d) == "example.invalid/finance-bee:2-bad" { Ok(()) } else { Err(image_of(&d)) }
    })
    .await;
    let label = json!({"spec": {"template": {"metadata": {"labels": {CRASHLOOP_LABEL: "true"}}}}});
    deployments.patch("bee", &PatchParams::default(), &Patch::Merge(&label)).await.unwrap();
    let fb = wait_for("the rollback, back on its feet", DEADLINE, || async {
        let fb = live(&bees, "bee").await?;
        if is_true(&fb, "RolledBack") && is_true(&fb, "Ready") && observed_current(&fb) {
            Ok(fb)
        } else {
            Err(format!("{}", fb["status"]["conditions"]))
        }
    })
    .await;
    let (status, message) = argocd_health("FinanceBee", &fb);
    assert_eq!(status, "Degraded", "a rolled-back bee is not Healthy: {message}");
    assert!(message.contains("2-bad"), "the rollback's message: {message}");
    // The same conditions on a ColonyServer read the same.
    assert_eq!(argocd_health("ColonyServer", &fb).0, "Degraded");
    record(&Row {
        fault: "FinanceBee release crash-loops (rolled back)".into(),
        injected: 1,
        lost: 0,
        doubled: 0,
        stuck: 0,
        figures: format!("Argo CD: {status} ({message}); kstatus {:?}", kstatus(&fb)),
    });
    drop(op);
    ns.cleanup().await;
}

/// The flip budget spent, then the server probed afresh (a new health spec): Stalled, never
/// Reconciling at the same time, so kstatus and Argo CD agree (Failed, Degraded).
#[tokio::test]
async fn chaos_flip_budget_spent_while_probing_is_stalled_not_reconciling() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "chaos-cs-stall").await;
    let endpoint = TestEndpoint::start().await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    op.wait_ready().await;
    apply_yaml(&ns.name, &server("flappy", &endpoint, "{recoverAfter: 1s, minHold: 1s, maxFlipsPerHour: 3}")).await;
    let servers: Api<ColonyServer> = ns.api();
    let wait_cs = |what: &'static str, pred: fn(&Value) -> bool| {
        let servers = servers.clone();
        async move {
            wait_for(what, DEADLINE, || async {
                let cs = live(&servers, "flappy").await?;
                if pred(&cs) { Ok(cs) } else { Err(format!("{}", cs["status"]["conditions"])) }
            })
            .await
        }
    };
    wait_cs("Healthy", |cs| is_true(cs, "Healthy")).await;
    // On, off, on: three flips spend the budget; the recovery cannot flip back.
    endpoint.set_failing(true);
    wait_cs("the fallback on", |cs| is_true(cs, "FallbackActive")).await;
    endpoint.set_failing(false);
    wait_cs("the fallback off", |cs| condition(cs, "FallbackActive").is_some_and(|c| c.0 == "False")).await;
    endpoint.set_failing(true);
    wait_cs("the fallback on again", |cs| is_true(cs, "FallbackActive")).await;
    endpoint.set_failing(false);
    wait_cs("Stalled: the flip budget spent", |cs| is_true(cs, "Stalled") && is_true(cs, "Healthy")).await;

    // Probing afresh (a slow health spec keeps the verdict open) with a budget now below the
    // flips already made: stalled while probing.
    let patch =
        json!({"spec": {"health": {"interval": "20s", "successThreshold": 3}, "fallback": {"maxFlipsPerHour": 2}}});
    servers.patch("flappy", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let cs = wait_cs("probing the new spec", |cs| {
        observed_current(cs) && condition(cs, "Healthy").is_some_and(|c| c.1 == "Probing")
    })
    .await;
    let (k, (argo, message)) = (kstatus(&cs), argocd_health("ColonyServer", &cs));
    assert!(is_true(&cs, "Stalled"), "still out of budget: {}", cs["status"]["conditions"]);
    assert!(!is_true(&cs, "Reconciling"), "never Reconciling and Stalled: {}", cs["status"]["conditions"]);
    assert_eq!((k.clone(), argo.as_str()), (KStatus::Failed, "Degraded"), "{message}");
    record(&Row {
        fault: "flip budget spent, then probing afresh".into(),
        injected: 1,
        lost: 0,
        doubled: 0,
        stuck: 0,
        figures: format!("kstatus {k:?}, Argo CD {argo}: they agree"),
    });
    drop(op);
    ns.cleanup().await;
}

// ------------------------------------------------------------------------------------
// Part B: deleted objects leave nothing behind
// ------------------------------------------------------------------------------------

/// Deleting a FinanceBee whose unavailability was escalated to a webhook: exactly one
/// resolve arrives, the object goes, its metric series go. A bee with nothing to resolve has
/// no finalizer.
#[tokio::test]
async fn chaos_deleting_an_escalated_bee_resolves_its_page_once() {
    let endpoint = TestEndpoint::start().await;
    let (ns, op) = setup("chaos-fb-delete", &endpoint).await;
    let bees: Api<FinanceBee> = ns.api();
    let fb = escalate(&ns, &endpoint, "TriggerSent").await;
    let triggers = endpoint.hooks().iter().filter(|h| h["event"] == "trigger").count();
    assert_eq!(triggers, 1);
    let m = metrics(&op).await;
    assert!(!series_of(&m, &ns.name, "bee").is_empty(), "the bee has series while it exists");

    let deleted = Instant::now();
    bees.delete("bee", &DeleteParams::default()).await.unwrap();
    wait_for("the bee gone", DEADLINE, || async {
        match bees.get_opt("bee").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(fb) => Err(format!("finalizers {:?}", fb.finalizers())),
        }
    })
    .await;
    let gone_after = deleted.elapsed();
    let resolves = |hooks: Vec<Value>| hooks.iter().filter(|h| h["event"] == "resolve").cloned().collect::<Vec<_>>();
    let got = resolves(endpoint.hooks());
    assert_eq!(got.len(), 1, "exactly one resolve: {got:?}");
    assert_eq!(got[0]["uid"], fb.uid().unwrap().as_str());
    wait_for("the bee's series gone from /metrics", DEADLINE, || async {
        let left = series_of(&metrics(&op).await, &ns.name, "bee");
        if left.is_empty() { Ok(()) } else { Err(format!("{left:?}")) }
    })
    .await;

    // The controller keeps working after the deletion (proof time passed with it running):
    // a new bee comes up, carries no finalizer (nothing to resolve), and no second resolve.
    apply_yaml(&ns.name, &bee("after", 1, "")).await;
    let after = wait_for("another bee Available", DEADLINE, || async {
        let fb = bees.get("after").await.map_err(|e| e.to_string())?;
        if is_true(&to_json(&fb), "Available") { Ok(fb) } else { Err("not yet".into()) }
    })
    .await;
    assert!(after.finalizers().is_empty(), "no page, no finalizer: {:?}", after.finalizers());
    let total = resolves(endpoint.hooks()).len();
    assert_eq!(total, 1, "still exactly one resolve");
    record(&Row {
        fault: "escalated FinanceBee deleted".into(),
        injected: 1,
        lost: 0,
        doubled: total.saturating_sub(1),
        stuck: 0,
        figures: format!("1 resolve; object gone {:.1} s after the delete; series dropped", gone_after.as_secs_f64()),
    });
    drop(op);
    ns.cleanup().await;
}

/// A bee `bee` paging the webhook of `endpoint`, brought down until it escalates with the
/// Escalated reason `reason` and carries the finalizer.
async fn escalate(ns: &TestNamespace, endpoint: &TestEndpoint, reason: &'static str) -> FinanceBee {
    apply_yaml(
        &ns.name,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: ops-webhook\nstringData:\n  url: \"{}/hook\"\n",
            endpoint.url()
        ),
    )
    .await;
    let escalation = "  escalation: {after: 1h, webhook: {urlSecretRef: {name: ops-webhook, key: url}, retries: 0, backoff: 1s}}\n  restart: {crashLoopThreshold: 1000}\n";
    apply_yaml(&ns.name, &bee("bee", 1, escalation)).await;
    let bees: Api<FinanceBee> = ns.api();
    let pods: Api<Pod> = ns.api();
    wait_for("the bee Available", DEADLINE, || async {
        let fb = live(&bees, "bee").await?;
        if is_true(&fb, "Available") { Ok(()) } else { Err(format!("{}", fb["status"]["conditions"])) }
    })
    .await;
    bees.patch("bee", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"escalation": {"after": "3s"}}})))
        .await
        .unwrap();
    let pod = wait_for("the bee's pod", DEADLINE, || async {
        let list = pods
            .list(&ListParams::default().labels("app.kubernetes.io/instance=bee"))
            .await
            .map_err(|e| e.to_string())?;
        list.items.first().map(|p| p.name_any()).ok_or_else(|| "no pod".to_string())
    })
    .await;
    let label = json!({"metadata": {"labels": {CRASHLOOP_LABEL: "true"}}});
    pods.patch(&pod, &PatchParams::default(), &Patch::Merge(&label)).await.unwrap();
    wait_for(&format!("escalated ({reason}) with the finalizer"), DEADLINE, || async {
        let fb = bees.get("bee").await.map_err(|e| e.to_string())?;
        let json = to_json(&fb);
        let escalated = condition(&json, "Escalated").is_some_and(|c| c.0 == "True" && c.1 == reason);
        if escalated && fb.finalizers().iter().any(|f| f == "colony.zyeute.io/resolve-escalation") {
            Ok(fb)
        } else {
            Err(format!("{:?} finalizers {:?}", condition(&json, "Escalated"), fb.finalizers()))
        }
    })
    .await
}

/// Deleting an escalated bee while its webhook keeps failing: the resolve is retried, then
/// given up with a Warning Event; the object goes, deletion is not blocked forever.
#[tokio::test]
async fn chaos_deleting_a_bee_whose_webhook_is_down_is_not_blocked_forever() {
    let endpoint = TestEndpoint::start().await;
    endpoint.set_hook_failing(true);
    let (ns, op) = setup("chaos-fb-delete-down", &endpoint).await;
    let bees: Api<FinanceBee> = ns.api();
    escalate(&ns, &endpoint, "TriggerFailed").await;
    let deleted = Instant::now();
    bees.delete("bee", &DeleteParams::default()).await.unwrap();
    // Bounded: at most 5 resolves (5 s backoff, doubling) or 2 minutes, then let go.
    wait_for("the bee gone despite the failing webhook", std::time::Duration::from_secs(300), || async {
        match bees.get_opt("bee").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(fb) => Err(format!("finalizers {:?}", fb.finalizers())),
        }
    })
    .await;
    let gone_after = deleted.elapsed();
    let attempts = endpoint.hooks().iter().filter(|h| h["event"] == "resolve").count();
    assert!((2..=5).contains(&attempts), "the resolve was retried, a bounded number of times: {attempts}");
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let abandoned = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("EscalationResolveAbandoned"))
        .map(|e| (e.type_.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect::<Vec<_>>();
    assert_eq!(abandoned.len(), 1, "{abandoned:?}");
    assert_eq!(abandoned[0].0, "Warning");
    assert!(abandoned[0].1.contains("resolve the incident by hand"), "{}", abandoned[0].1);
    assert!(!abandoned[0].1.contains(&endpoint.url()), "no webhook URL in the Event");
    wait_for("the bee's series gone from /metrics", DEADLINE, || async {
        let left = series_of(&metrics(&op).await, &ns.name, "bee");
        if left.is_empty() { Ok(()) } else { Err(format!("{left:?}")) }
    })
    .await;
    record(&Row {
        fault: "escalated FinanceBee deleted while its webhook answers 500".into(),
        injected: 1,
        lost: 0,
        doubled: 0,
        stuck: 0,
        figures: format!(
            "{attempts} resolve attempts, then given up with a Warning Event; object gone {:.0} s after the delete",
            gone_after.as_secs_f64()
        ),
    });
    drop(op);
    ns.cleanup().await;
}

/// Deleting a ColonyServer drops its series from /metrics and stops its probes, while another
/// server in the namespace is still probed (proof the operator kept running).
#[tokio::test]
async fn chaos_deleting_a_server_drops_its_series_and_stops_its_probes() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "chaos-cs-delete").await;
    let (gone_ep, other_ep) = (TestEndpoint::start().await, TestEndpoint::start().await);
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    op.wait_ready().await;
    apply_yaml(&ns.name, &server("gone", &gone_ep, "{}")).await;
    apply_yaml(&ns.name, &server("other", &other_ep, "{}")).await;
    let servers: Api<ColonyServer> = ns.api();
    for name in ["gone", "other"] {
        wait_for(&format!("{name} Healthy with its series"), DEADLINE, || async {
            let cs = live(&servers, name).await?;
            let series = series_of(&metrics(&op).await, &ns.name, name);
            let has = |m: &str| series.iter().any(|l| l.starts_with(m));
            if is_true(&cs, "Healthy")
                && has("colony_operator_fallback_active")
                && has("colony_operator_health_probes_total")
            {
                Ok(())
            } else {
                Err(format!("{series:?}"))
            }
        })
        .await;
    }
    let deleted = Instant::now();
    servers.delete("gone", &DeleteParams::default()).await.unwrap();
    wait_for("its series gone from /metrics", DEADLINE, || async {
        let left = series_of(&metrics(&op).await, &ns.name, "gone");
        if left.is_empty() { Ok(()) } else { Err(format!("{left:?}")) }
    })
    .await;
    let dropped_after = deleted.elapsed();
    let probes_at_drop = gone_ep.successes();
    let other_at_drop = other_ep.successes();
    wait_for("the other server probed 5 more times", DEADLINE, || async {
        let n = other_ep.successes() - other_at_drop;
        if n >= 5 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    let late_probes = gone_ep.successes() - probes_at_drop;
    assert_eq!(late_probes, 0, "no probe of a deleted server");
    assert!(!series_of(&metrics(&op).await, &ns.name, "other").is_empty(), "the other server keeps its series");
    record(&Row {
        fault: "probed ColonyServer deleted".into(),
        injected: 1,
        lost: 0,
        doubled: 0,
        stuck: late_probes as usize,
        figures: format!(
            "series dropped {:.1} s after the delete; {late_probes} probes after (other server: {})",
            dropped_after.as_secs_f64(),
            other_ep.successes() - other_at_drop
        ),
    });
    drop(op);
    ns.cleanup().await;
}
