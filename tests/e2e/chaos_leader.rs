//! Faults of leadership: a leader frozen (SIGSTOP) past its lease while a standby takes over,
//! then thawed; a controller task that panics.
use std::time::{Duration, SystemTime};

use colony_e2e::chaos::{self, Row};
use colony_e2e::{
    AuditWrite, DEADLINE, OperatorProcess, TestEndpoint, TestNamespace, apply_yaml, audit_writes, client, install_crds,
    wait_for,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

const LEASE_SECS: u64 = 6;
const MARGIN_SECS: u64 = 2;

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
}

fn server(name: &str, endpoint: &TestEndpoint) -> String {
    format!(
        r#"apiVersion: colony.zyeute.io/v1alpha1
kind: ColonyServer
metadata:
  name: {name}
spec:
  managed: false
  endpoint: {url}
  health: {{interval: 1s, timeout: 1s, failureThreshold: 1, successThreshold: 1}}
  fallback: {{recoverAfter: 1s, minHold: 0s, maxFlipsPerHour: 60}}
"#,
        url = endpoint.url()
    )
}

fn ua_of(identity: &str) -> String {
    format!("({identity})")
}

fn by(writes: &[AuditWrite], identity: &str) -> Vec<AuditWrite> {
    writes.iter().filter(|w| w.user_agent.ends_with(&ua_of(identity))).cloned().collect()
}

fn secs_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[tokio::test]
async fn chaos_sigstop_leader_past_its_lease() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "chaos-leader").await;
    let lease_secs = LEASE_SECS.to_string();
    let margin_secs = MARGIN_SECS.to_string();
    let common = [
        "--namespace",
        &ns.name,
        "--leader-elect",
        "--leader-elect-namespace",
        &ns.name,
        "--lease-duration",
        &lease_secs,
        "--lease-renew-grace",
        &margin_secs,
    ];
    let endpoint = TestEndpoint::start().await;
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
    let standby_id = if holder == "op-a" { "op-b" } else { "op-a" };
    let (old, new) = if holder == "op-a" { (&mut a, &mut b) } else { (&mut b, &mut a) };

    apply_yaml(&ns.name, &server("srv", &endpoint)).await;
    let cms: Api<ConfigMap> = ns.api();
    wait_for("the leader to write the fallback ConfigMap", DEADLINE, || async {
        cms.get_opt("srv-fallback").await.map_err(|e| e.to_string())?.map(|_| ()).ok_or("not yet".to_string())
    })
    .await;

    // Keep the leader busy: the endpoint flaps, so each probe turns the verdict and the
    // leader writes status and flips; then freeze it in the middle of that.
    let mut last_flap = endpoint.failures() + endpoint.successes();
    for i in 0..8 {
        endpoint.set_failing(i % 2 == 0);
        wait_for("a probe of the flapping endpoint", DEADLINE, || async {
            let n = endpoint.failures() + endpoint.successes();
            if n > last_flap { Ok(()) } else { Err(format!("{n} probes")) }
        })
        .await;
        last_flap = endpoint.failures() + endpoint.successes();
    }
    let busy = by(&audit_writes(&ns.name), holder).iter().filter(|w| !w.object.starts_with("leases/")).count();
    assert!(busy > 0, "the leader wrote while the endpoint flapped");

    old.signal("STOP");
    let stopped_at = SystemTime::now();
    // While it is frozen the server goes down for good: the standby must take over and act.
    endpoint.set_failing(true);
    wait_for("the standby to take over and flip the fallback on", DEADLINE, || async {
        let leads = leader_of(&new.get("/metrics").await.ok_or("standby silent")?.1) == Some(1.0);
        let acted = by(&audit_writes(&ns.name), standby_id)
            .iter()
            .any(|w| w.at > stopped_at && !w.object.starts_with("leases/") && w.code < 300);
        let value = cms
            .get_opt("srv-fallback")
            .await
            .ok()
            .flatten()
            .and_then(|c| c.data)
            .and_then(|d| d.get("USE_COLONY_OS").cloned());
        if leads && acted && value.as_deref() == Some("false") {
            Ok(())
        } else {
            Err(format!("leads={leads} acted={acted} USE_COLONY_OS={value:?}"))
        }
    })
    .await;
    let lease = ns.api::<Lease>().get("colony-operator").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some(standby_id));

    // Thaw the old leader: it resumes with stale state (a failing server, pending wake-ups),
    // finds its deadline passed, does nothing, and exits non-zero.
    old.signal("CONT");
    let code = old.wait_exit(DEADLINE).await;
    assert!(
        matches!(code, Some(c) if c != 0),
        "the old leader exits non-zero once thawed (got {code:?}; log: {})",
        old.log_path.display()
    );
    assert!(old.logs().contains("lost the leader lease"), "log: {}", old.log_path.display());

    // Count from the audit log, by writer identity.
    let writes = audit_writes(&ns.name);
    let old_writes = by(&writes, holder);
    let last_renew = old_writes
        .iter()
        .filter(|w| w.object.starts_with("leases/") && w.code < 300)
        .map(|w| w.at)
        .max()
        .expect("the old leader renewed its lease");
    let expiry = last_renew + Duration::from_secs(LEASE_SECS);
    let after_expiry: Vec<_> = old_writes.iter().filter(|w| w.at >= expiry).collect();
    let last_write = old_writes.iter().map(|w| w.at).max().unwrap();
    let last_action = old_writes.iter().filter(|w| !w.object.starts_with("leases/")).map(|w| w.at).max().unwrap();
    // What the thawed leader tried and was stopped from doing (cancelled reconciles, refused
    // requests): proof that it ran with stale state, not that it slept through.
    let old_logs = old.logs();
    let stopped_attempts =
        old_logs.lines().filter(|l| l.contains("not the leader") || l.contains("refused an API write")).count();
    let standby_first = by(&writes, standby_id)
        .iter()
        .filter(|w| w.at > stopped_at && !w.object.starts_with("leases/"))
        .map(|w| w.at)
        .min()
        .unwrap();
    let figures = format!(
        "old leader's last write {:.2} s and last non-Lease write {:.2} s before its lease expired (last renewal + {LEASE_SECS} s; \
         margin {MARGIN_SECS} s), {} after; standby's first action {:.1} s after SIGSTOP; {busy} writes by the leader before \
         the freeze; {stopped_attempts} side effects cancelled or refused after the thaw",
        secs_between(last_write, expiry),
        secs_between(last_action, expiry),
        after_expiry.len(),
        secs_between(stopped_at, standby_first),
    );
    println!("{figures}");
    chaos::record(&Row {
        fault: "SIGSTOP leader past its lease, standby takes over, SIGCONT".into(),
        injected: 1,
        lost: 0,
        doubled: after_expiry.len(),
        stuck: 0,
        figures,
    });
    assert!(after_expiry.is_empty(), "writes by the old leader after its lease expired: {after_expiry:?}");
    assert_eq!(new.terminate().await, Some(0));
    ns.cleanup().await;
}

#[tokio::test]
async fn chaos_a_panicking_controller_fails_the_process() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "chaos-panic").await;
    let mut op = OperatorProcess::start_with_env(
        &ns.name,
        &["--namespace", &ns.name],
        &[("COLONY_OPERATOR_FAULT_INJECT_PANIC", "maintenancewindow/boom")],
    )
    .await;
    op.wait_ready().await;
    assert_eq!(op.get("/healthz").await.map(|r| r.0), Some(200));
    let window = |name: &str| {
        format!(
            "apiVersion: colony.zyeute.io/v1alpha1\nkind: MaintenanceWindow\nmetadata:\n  name: {name}\nspec:\n  \
             schedule:\n    cron: \"0 2 * * 0\"\n    duration: 2h\n  colonyServerRef:\n    name: nowhere\n"
        )
    };
    // A healthy reconcile first: the controller runs.
    apply_yaml(&ns.name, &window("fine")).await;
    wait_for("a maintenancewindow reconcile", DEADLINE, || async {
        let (_, body) = op.get("/metrics").await.ok_or("no answer")?;
        if body.contains(r#"colony_operator_reconciliations_total{controller="maintenancewindow"}"#) {
            Ok(())
        } else {
            Err("no reconcile yet".into())
        }
    })
    .await;
    apply_yaml(&ns.name, &window("boom")).await;
    let code = op.wait_exit(DEADLINE).await;
    assert!(matches!(code, Some(c) if c != 0), "exit code {code:?} (log: {})", op.log_path.display());
    let logs = op.logs();
    assert!(logs.contains("controller task panicked"), "log: {}", op.log_path.display());
    chaos::record(&Row {
        fault: "a controller task panics".into(),
        injected: 1,
        stuck: usize::from(code.is_none()),
        figures: format!("process exited with {code:?}"),
        ..Default::default()
    });
    ns.cleanup().await;
}
