//! MaintenanceWindow on the local control plane: the runbook's planned maintenance. While
//! the window is open the fallback is on and the Finance Bees are stopped; afterwards the
//! server is verified and normal operation resumes. `end-now` ends a window early.
use colony_e2e::{DEADLINE, OperatorProcess, TestEndpoint, TestNamespace, apply_yaml, client, install_crds, wait_for};
use colony_operator::api::{ColonyServer, MaintenanceWindow, WindowPhase};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};

fn setup(endpoint: &TestEndpoint) -> String {
    let health = "{interval: 1s, timeout: 1s, failureThreshold: 3, successThreshold: 1}";
    let server = colony_e2e::fixtures::unmanaged_server(
        "srv",
        &endpoint.url(),
        health,
        "  fallback: {recoverAfter: 1s, minHold: 1s}\n",
    );
    server
        + r#"---
apiVersion: v1
kind: Secret
metadata:
  name: bee-key
stringData:
  prvkey: 32087782a0314486d499315072c5a3018b78c7c9dce3cb299f780741543478ae
---
apiVersion: colony.zyeute.io/v1alpha1
kind: FinanceBee
metadata:
  name: bee
spec:
  image: example.invalid/finance-bee:1
  replicas: 2
  colonyServerRef: {name: srv}
  colonyName: zyeute
  executorKeySecretRef: {name: bee-key, key: prvkey}
"#
}

fn window(name: &str, start: chrono::DateTime<chrono::Utc>, end: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        r#"apiVersion: colony.zyeute.io/v1alpha1
kind: MaintenanceWindow
metadata:
  name: {name}
spec:
  schedule:
    start: "{start}"
    end: "{end}"
  colonyServerRef: {{name: srv}}
  verify: {{timeout: 2m}}
"#,
        start = start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        end = end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

async fn replicas(deployments: &Api<Deployment>) -> Result<i32, String> {
    let d = deployments.get("bee").await.map_err(|e| e.to_string())?;
    Ok(d.spec.replicas.unwrap_or(1))
}

async fn fallback_value(cms: &Api<ConfigMap>) -> Option<String> {
    cms.get_opt("srv-fallback").await.ok().flatten()?.data?.get("USE_COLONY_OS").cloned()
}

async fn phase(windows: &Api<MaintenanceWindow>, name: &str) -> Option<WindowPhase> {
    windows.get(name).await.ok()?.status?.phase
}

#[tokio::test]
async fn planned_maintenance_stops_bees_and_enables_the_fallback_then_restores() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-mw").await;
    let endpoint = TestEndpoint::start().await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    apply_yaml(&ns.name, &setup(&endpoint)).await;
    let deployments: Api<Deployment> = ns.api();
    let cms: Api<ConfigMap> = ns.api();
    let windows: Api<MaintenanceWindow> = ns.api();
    let servers: Api<ColonyServer> = ns.api();
    wait_for("the bee runs 2 replicas and Colony OS is in use", DEADLINE, || async {
        let r = replicas(&deployments).await?;
        let v = fallback_value(&cms).await;
        if r == 2 && v.as_deref() == Some("true") { Ok(()) } else { Err(format!("replicas {r}, USE_COLONY_OS {v:?}")) }
    })
    .await;

    // A window open from now for 15 seconds.
    let now = chrono::Utc::now();
    apply_yaml(&ns.name, &window("planned", now - chrono::Duration::seconds(5), now + chrono::Duration::seconds(15)))
        .await;
    wait_for("during the window: fallback on, bees stopped", DEADLINE, || async {
        let p = phase(&windows, "planned").await;
        let r = replicas(&deployments).await?;
        let v = fallback_value(&cms).await;
        if p == Some(WindowPhase::Active) && r == 0 && v.as_deref() == Some("false") {
            Ok(())
        } else {
            Err(format!("phase {p:?}, replicas {r}, USE_COLONY_OS {v:?}"))
        }
    })
    .await;
    let cs = servers.get("srv").await.unwrap();
    assert_eq!(cs.status.unwrap().fallback.unwrap().reason.as_deref(), Some("MaintenanceWindow"));
    let mw = windows.get("planned").await.unwrap();
    assert!(mw.status.unwrap().conditions.iter().any(|c| c.type_ == "Active" && c.status == "True"));

    // After the window: verified healthy, Colony OS back, the bees back to 2 replicas.
    wait_for("after the window: completed, restored", DEADLINE, || async {
        let p = phase(&windows, "planned").await;
        let r = replicas(&deployments).await?;
        let v = fallback_value(&cms).await;
        if p == Some(WindowPhase::Completed) && r == 2 && v.as_deref() == Some("true") {
            Ok(())
        } else {
            Err(format!("phase {p:?}, replicas {r}, USE_COLONY_OS {v:?}"))
        }
    })
    .await;
    let outcome = windows.get("planned").await.unwrap().status.unwrap().last_outcome.unwrap();
    assert_eq!(outcome.result, WindowPhase::Completed);
    drop(op);
    ns.cleanup().await;
}

#[tokio::test]
async fn end_now_ends_a_window_early() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-mw-endnow").await;
    let endpoint = TestEndpoint::start().await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    apply_yaml(&ns.name, &setup(&endpoint)).await;
    let now = chrono::Utc::now();
    apply_yaml(&ns.name, &window("long", now - chrono::Duration::seconds(5), now + chrono::Duration::hours(2))).await;
    let windows: Api<MaintenanceWindow> = ns.api();
    let deployments: Api<Deployment> = ns.api();
    let cms: Api<ConfigMap> = ns.api();
    wait_for("the window is open", DEADLINE, || async {
        let p = phase(&windows, "long").await;
        let r = replicas(&deployments).await?;
        if p == Some(WindowPhase::Active) && r == 0 { Ok(()) } else { Err(format!("phase {p:?}, replicas {r}")) }
    })
    .await;
    let patch = serde_json::json!({ "metadata": { "annotations": { "colony.zyeute.io/end-now": "done" } } });
    windows.patch("long", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_for("ended early and restored", DEADLINE, || async {
        let p = phase(&windows, "long").await;
        let r = replicas(&deployments).await?;
        let v = fallback_value(&cms).await;
        if p == Some(WindowPhase::Completed) && r == 2 && v.as_deref() == Some("true") {
            Ok(())
        } else {
            Err(format!("phase {p:?}, replicas {r}, USE_COLONY_OS {v:?}"))
        }
    })
    .await;
    drop(op);
    ns.cleanup().await;
}

#[tokio::test]
async fn suspended_bee_scales_to_zero_and_comes_back() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-fb-suspend").await;
    let endpoint = TestEndpoint::start().await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    apply_yaml(&ns.name, &setup(&endpoint)).await;
    let deployments: Api<Deployment> = ns.api();
    let bees: Api<colony_operator::api::FinanceBee> = ns.api();
    let suspend = |value: bool| {
        let bees = bees.clone();
        async move {
            let patch = serde_json::json!({ "spec": { "suspend": value } });
            bees.patch("bee", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        }
    };
    wait_for("2 replicas", DEADLINE, || async {
        let r = replicas(&deployments).await?;
        if r == 2 { Ok(()) } else { Err(format!("{r}")) }
    })
    .await;
    suspend(true).await;
    wait_for("suspended: 0 replicas, Ready with reason Suspended, generation observed", DEADLINE, || async {
        let r = replicas(&deployments).await?;
        let fb = bees.get("bee").await.map_err(|e| e.to_string())?;
        let status = fb.status.clone().unwrap_or_default();
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready").map(|c| (c.status.clone(), c.reason.clone()));
        let observed = status.observed_generation == fb.metadata.generation;
        if r == 0 && ready == Some(("True".into(), "Suspended".into())) && observed {
            Ok(())
        } else {
            Err(format!("replicas {r}, Ready {ready:?}, observed {observed}"))
        }
    })
    .await;
    suspend(false).await;
    wait_for("resumed: 2 replicas", DEADLINE, || async {
        let r = replicas(&deployments).await?;
        if r == 2 { Ok(()) } else { Err(format!("{r}")) }
    })
    .await;
    drop(op);
    ns.cleanup().await;
}

/// CEL cannot evaluate cron: a window admitted by the API server that overlaps the next one
/// (02:00 and 04:00 on Sundays, two hours long) is caught by the operator, which reports
/// Stalled/InvalidSpec naming the gap; a sibling that fits is reconciled normally.
#[tokio::test]
async fn an_admitted_window_that_overlaps_the_next_stalls() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-mw-overlap").await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    let recurring = |name: &str, cron: &str| {
        format!(
            "apiVersion: colony.zyeute.io/v1alpha1\nkind: MaintenanceWindow\nmetadata:\n  name: {name}\nspec:\n  \
             schedule: {{cron: \"{cron}\", duration: 2h}}\n  colonyServerRef: {{name: srv}}\n"
        )
    };
    // The windows' server exists (a reference that does not resolve is Stalled on its own).
    let endpoint = TestEndpoint::start().await;
    let server = colony_e2e::fixtures::unmanaged_server("srv", &endpoint.url(), colony_e2e::fixtures::FAST_HEALTH, "");
    apply_yaml(&ns.name, &server).await;
    apply_yaml(&ns.name, &(recurring("overlapping", "0 2,4 * * 0") + "---\n" + &recurring("fitting", "0 2 * * 0")))
        .await;
    let windows: Api<MaintenanceWindow> = ns.api();
    let condition = |name: &'static str, type_: &'static str| {
        let windows = windows.clone();
        async move {
            let mw = windows.get(name).await.map_err(|e| e.to_string())?;
            let c = mw.status.and_then(|s| s.conditions.into_iter().find(|c| c.type_ == type_));
            c.ok_or_else(|| format!("{name}: no {type_} condition yet"))
        }
    };
    let stalled = wait_for("the overlapping window to stall", DEADLINE, || async {
        let c = condition("overlapping", "Stalled").await?;
        if c.status == "True" { Ok(c) } else { Err(format!("{c:?}")) }
    })
    .await;
    assert_eq!(stalled.reason, "InvalidSpec");
    assert!(stalled.message.contains("two successive starts are only 2h apart"), "{}", stalled.message);
    let ready = wait_for("the fitting window to be Ready", DEADLINE, || async {
        let c = condition("fitting", "Ready").await?;
        if c.status == "True" { Ok(c) } else { Err(format!("{c:?}")) }
    })
    .await;
    assert_eq!(ready.reason, "Reconciled");
    let overlapping = windows.get("overlapping").await.unwrap().status.unwrap();
    assert_eq!(overlapping.next_start, None, "no window scheduled from an invalid spec");
    drop(op);
    ns.cleanup().await;
}
