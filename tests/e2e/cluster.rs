//! The local control plane itself: scheduling onto kwok nodes, and the label-driven failure
//! and crash-loop stages that the controller tests rely on (tests/cluster/README.md).
use colony_e2e::{DEADLINE, TestNamespace, client, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};

fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": labels },
        "spec": { "containers": [{ "name": "main", "image": "example.invalid/app:1" }] }
    }))
    .unwrap()
}

#[tokio::test]
async fn deployment_gets_running_pods() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-cluster-deploy").await;
    let deploy: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "main", "image": "example.invalid/web:1" }] }
            }
        }
    }))
    .unwrap();
    ns.api::<Deployment>().create(&PostParams::default(), &deploy).await.unwrap();
    let pods = ns.api::<Pod>();
    let nodes = wait_for("2 Running pods of the Deployment", DEADLINE, || async {
        let list = pods.list(&ListParams::default().labels("app=web")).await.map_err(|e| e.to_string())?;
        let running: Vec<_> = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
            .collect();
        if running.len() == 2 { Ok(running) } else { Err(format!("{} running of {}", running.len(), list.items.len())) }
    })
    .await;
    assert!(nodes.iter().all(|n| !n.is_empty()), "pods are scheduled onto nodes: {nodes:?}");
    let deployments = ns.api::<Deployment>();
    wait_for("Deployment reports 2 available replicas", DEADLINE, || async {
        let d = deployments.get("web").await.map_err(|e| e.to_string())?;
        let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
        if available == 2 { Ok(()) } else { Err(format!("available={available}")) }
    })
    .await;
    ns.cleanup().await;
}

#[tokio::test]
async fn pod_labelled_for_failure_fails_with_exit_code() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-cluster-fail").await;
    let pods = ns.api::<Pod>();
    pods.create(&PostParams::default(), &pod("doomed", serde_json::json!({ "colony.zyeute.io/test-fail": "true" })))
        .await
        .unwrap();
    let exit_code = wait_for("pod phase Failed", DEADLINE, || async {
        let p = pods.get("doomed").await.map_err(|e| e.to_string())?;
        let status = p.status.unwrap_or_default();
        if status.phase.as_deref() != Some("Failed") {
            return Err(format!("phase {:?}", status.phase));
        }
        let code = status
            .container_statuses
            .unwrap_or_default()
            .first()
            .and_then(|c| c.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code));
        code.ok_or_else(|| "no terminated state".to_string())
    })
    .await;
    assert_eq!(exit_code, 1);
    ns.cleanup().await;
}

#[tokio::test]
async fn pod_labelled_for_crashloop_shows_crash_loop_back_off() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-cluster-crash").await;
    let pods = ns.api::<Pod>();
    pods.create(
        &PostParams::default(),
        &pod("crasher", serde_json::json!({ "colony.zyeute.io/test-crashloop": "true" })),
    )
    .await
    .unwrap();
    let restarts = wait_for("CrashLoopBackOff with restartCount >= 2", DEADLINE, || async {
        let p = pods.get("crasher").await.map_err(|e| e.to_string())?;
        let status = p.status.unwrap_or_default();
        let cs = status.container_statuses.unwrap_or_default();
        let c = cs.first().ok_or("no container status")?;
        let reason = c.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.clone());
        if reason.as_deref() == Some("CrashLoopBackOff") && c.restart_count >= 2 {
            Ok((c.restart_count, status.phase.clone()))
        } else {
            Err(format!("reason {reason:?}, restarts {}", c.restart_count))
        }
    })
    .await;
    assert_eq!(restarts.1.as_deref(), Some("Running"), "a crash-looping pod stays Running");
    let later = wait_for("restartCount keeps growing", DEADLINE, || async {
        let p = pods.get("crasher").await.map_err(|e| e.to_string())?;
        let n = p
            .status
            .unwrap_or_default()
            .container_statuses
            .unwrap_or_default()
            .first()
            .map(|c| c.restart_count)
            .unwrap_or(0);
        if n > restarts.0 { Ok(n) } else { Err(format!("restartCount {n}")) }
    })
    .await;
    assert!(later > restarts.0);
    ns.cleanup().await;
}
