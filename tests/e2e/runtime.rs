//! The operator process: admin endpoints, metrics, graceful shutdown, leader election.
use std::time::Duration;

use colony_e2e::{DEADLINE, OperatorProcess, TestNamespace, client, install_crds, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

fn maintenance_window(name: &str) -> String {
    format!(
        r#"apiVersion: colony.zyeute.io/v1alpha1
kind: MaintenanceWindow
metadata:
  name: {name}
spec:
  schedule:
    cron: "0 2 * * 0"
    duration: 2h
  colonyServerRef:
    name: nowhere
"#
    )
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
}

#[tokio::test]
async fn admin_endpoints_metrics_and_graceful_shutdown() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-runtime").await;
    let mut op = OperatorProcess::start_with_env(
        &ns.name,
        &["--namespace", &ns.name, "--log-format", "json"],
        &[("RUST_LOG", "info,kube=warn,colony_operator::controllers=debug,colony_operator::runtime::controller=debug")],
    )
    .await;
    op.wait_ready().await;
    assert_eq!(op.get("/healthz").await.map(|r| r.0), Some(200));

    let out =
        colony_e2e::kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(&maintenance_window("weekly"))).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = wait_for("reconcile metrics for the maintenancewindow controller", DEADLINE, || async {
        let (_, body) = op.get("/metrics").await.ok_or("no answer")?;
        // Counted when it ends (the reconciliations counter counts starts).
        if metric(&body, r#"colony_operator_reconcile_duration_seconds_count{controller="maintenancewindow"}"#)
            .is_some_and(|n| n >= 1.0)
        {
            Ok(body)
        } else {
            Err("no reconcile yet".into())
        }
    })
    .await;
    assert!(text.contains("colony_operator_reconcile_duration_seconds_bucket"), "{text}");
    // The reconcile's own time leaves out its requests to the API server (a status write at
    // least), counted through the real client.
    let sum =
        |family: &str| metric(&text, &format!("colony_operator_{family}_sum{{controller=\"maintenancewindow\"}}"));
    let (whole, own) = (sum("reconcile_duration_seconds"), sum("reconcile_self_duration_seconds"));
    assert!(matches!((whole, own), (Some(w), Some(o)) if o < w && o >= 0.0), "own {own:?} < whole {whole:?}: {text}");
    // The API server of the tests serves streaming lists, and `auto` chose them.
    assert!(
        op.logs().lines().any(|l| l.contains("watches fill their caches") && l.contains("Streaming")),
        "{}",
        op.logs()
    );
    assert_eq!(metric(&text, "colony_operator_leader "), Some(1.0), "without leader election the process acts");
    // By default kube's HTTP/1.1 client.
    assert!(
        op.logs().lines().any(|l| l.contains("connected to the API server") && l.contains(r#""protocol":"HTTP/1.1""#)),
        "{}",
        op.logs()
    );

    // JSON logs: every line is a JSON object, and a line logged inside a reconcile names its
    // object through the reconcile's span (the metric counts a reconcile when it starts: wait
    // for the line of one that finished).
    let reconciled = wait_for("a JSON log line of the reconcile of weekly", DEADLINE, || async {
        let logs = op.logs();
        let mut found = None;
        for line in logs.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line}"))?;
            let first_span = v["spans"].as_array().and_then(|s| s.first()).cloned();
            if v["message"] == "reconciled" && first_span.is_some_and(|s| s["object"] == "weekly") {
                found.get_or_insert(v);
            }
        }
        found.ok_or_else(|| "no such line yet".to_string())
    })
    .await;
    let span = &reconciled["spans"][0];
    assert_eq!(span["name"], "reconcile", "{reconciled}");
    assert_eq!(span["controller"], "maintenancewindow", "{reconciled}");
    assert_eq!(span["namespace"], ns.name.as_str(), "{reconciled}");
    assert_eq!(op.terminate().await, Some(0), "SIGTERM stops cleanly (log: {})", op.log_path.display());
    ns.cleanup().await;
}

#[tokio::test]
async fn exactly_one_leader_and_failover() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-leader").await;
    let common = [
        "--namespace",
        &ns.name,
        "--leader-elect",
        "--leader-elect-namespace",
        &ns.name,
        "--lease-duration",
        "8",
        "--lease-renew-grace",
        "3",
    ];
    let mut a = OperatorProcess::start(
        &format!("{}-a", ns.name),
        &[&common[..], &["--leader-elect-identity", "op-a"]].concat(),
    )
    .await;
    let mut b = OperatorProcess::start(
        &format!("{}-b", ns.name),
        &[&common[..], &["--leader-elect-identity", "op-b"]].concat(),
    )
    .await;
    a.wait_ready().await;
    b.wait_ready().await;

    let leases: Api<Lease> = ns.api();
    let leader_of = |text: &str| metric(text, "colony_operator_leader ");
    let holder = wait_for("one process to lead", DEADLINE, || async {
        let la = leader_of(&a.get("/metrics").await.ok_or("a silent")?.1);
        let lb = leader_of(&b.get("/metrics").await.ok_or("b silent")?.1);
        match (la, lb) {
            (Some(1.0), Some(0.0)) => Ok("op-a"),
            (Some(0.0), Some(1.0)) => Ok("op-b"),
            other => Err(format!("leader gauges {other:?}")),
        }
    })
    .await;
    // Stays exactly one for a while (several renewals).
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let la = leader_of(&a.get("/metrics").await.unwrap().1).unwrap();
        let lb = leader_of(&b.get("/metrics").await.unwrap().1).unwrap();
        assert_eq!(la + lb, 1.0, "exactly one leader at every moment (a={la}, b={lb})");
    }
    let lease = leases.get("colony-operator").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some(holder));

    // Kill the leader without letting it release the lease: the standby takes over after
    // the lease expires.
    let (leader, standby) = if holder == "op-a" { (&mut a, &mut b) } else { (&mut b, &mut a) };
    leader.kill().await;
    let killed_at = std::time::Instant::now();
    wait_for("the standby to take over", DEADLINE, || async {
        let (_, body) = standby.get("/metrics").await.ok_or("standby silent")?;
        if leader_of(&body) == Some(1.0) { Ok(()) } else { Err("still standing by".into()) }
    })
    .await;
    let new_holder = leases.get("colony-operator").await.unwrap().spec.unwrap().holder_identity;
    assert_ne!(new_holder.as_deref(), Some(holder));
    println!("failover took {:?} (lease duration 8s)", killed_at.elapsed());
    assert_eq!(standby.terminate().await, Some(0));
    ns.cleanup().await;
}

#[tokio::test]
async fn sigterm_during_startup_stops_cleanly() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-runtime-early").await;
    for round in 0..3 {
        let mut op = OperatorProcess::start(&format!("{}-{round}", ns.name), &["--namespace", &ns.name]).await;
        wait_for("the admin server", DEADLINE, || async {
            op.get("/healthz").await.map(|_| ()).ok_or("not yet".to_string())
        })
        .await;
        assert_eq!(
            op.terminate().await,
            Some(0),
            "round {round}: SIGTERM while starting (log: {})",
            op.log_path.display()
        );
    }
    ns.cleanup().await;
}

/// The fallback for API servers without streaming lists, and the HTTP/2 client: paged lists
/// over one HTTP/2 connection fill the caches and the controllers work from them.
#[tokio::test]
async fn paged_initial_lists_over_http2_fill_the_caches() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-paged").await;
    // Through a proxy that counts the operator's connections to the API server.
    let proxy = colony_e2e::proxy::BlackHoleProxy::in_front_of_the_api_server(&ns.name).await;
    let kubeconfig = proxy.kubeconfig.to_string_lossy().into_owned();
    let mut op = OperatorProcess::start_with_env(
        &ns.name,
        &["--namespace", &ns.name, "--initial-list", "paged", "--api-http2"],
        &[
            ("RUST_LOG", "info,kube=warn,colony_operator::runtime::controller=debug"),
            ("KUBECONFIG", kubeconfig.as_str()),
        ],
    )
    .await;
    op.wait_ready().await;
    assert!(op.logs().lines().any(|l| l.contains("watches fill their caches") && l.contains("Paged")), "{}", op.logs());
    // `--api-http2`: offered by ALPN, and taken by the API server.
    assert!(
        op.logs().lines().any(|l| l.contains("connected to the API server") && l.contains("HTTP/2.0")),
        "{}",
        op.logs()
    );
    let out =
        colony_e2e::kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(&maintenance_window("paged"))).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let windows: Api<colony_operator::api::MaintenanceWindow> = Api::namespaced(client.clone(), &ns.name);
    wait_for("the window's status from a paged-list operator", DEADLINE, || async {
        let w = windows.get("paged").await.map_err(|e| e.to_string())?;
        let status = w.status.ok_or("no status yet")?;
        if status.conditions.iter().any(|c| c.type_ == "Ready") { Ok(()) } else { Err("no Ready condition yet".into()) }
    })
    .await;
    // Every client of the process, every watch and every request, over the one connection
    // negotiated at start-up.
    assert_eq!(proxy.connections(), 1, "connections the operator opened to the API server");
    assert_eq!(op.terminate().await, Some(0), "SIGTERM stops cleanly (log: {})", op.log_path.display());
    ns.cleanup().await;
}
