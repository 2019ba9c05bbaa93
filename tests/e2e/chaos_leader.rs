//! Faults of leadership and of the way to the API server: a leader frozen (SIGSTOP) past its
//! lease while a standby takes over, then thawed; a controller task that panics; the API
//! server restarted mid-flip; every connection to it silenced; the process killed before a
//! flip's notification is delivered.
use std::time::{Duration, SystemTime};

use colony_e2e::chaos::{self, Row};
use colony_e2e::proxy::BlackHoleProxy;
use colony_e2e::{
    AuditWrite, DEADLINE, OperatorProcess, TestEndpoint, TestNamespace, apply_yaml, audit_writes, client, install_crds,
    wait_for,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

/// The control-plane restart must not run next to the other tests of this file: they take
/// this lock shared, the restart takes it alone.
static CONTROL_PLANE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

const LEASE_SECS: u64 = 6;
const MARGIN_SECS: u64 = 2;

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
}

fn server(name: &str, endpoint: &TestEndpoint) -> String {
    let extra = "  fallback: {recoverAfter: 1s, minHold: 1s, maxFlipsPerHour: 60}\n";
    colony_e2e::fixtures::unmanaged_server(name, &endpoint.url(), colony_e2e::fixtures::FAST_HEALTH, extra)
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

async fn start(ns: &str, identity: &str) -> OperatorProcess {
    let lease_secs = LEASE_SECS.to_string();
    let margin_secs = MARGIN_SECS.to_string();
    let args = [
        "--namespace",
        ns,
        "--leader-elect",
        "--leader-elect-namespace",
        ns,
        "--lease-duration",
        &lease_secs,
        "--lease-renew-grace",
        &margin_secs,
        "--leader-elect-identity",
        identity,
    ];
    OperatorProcess::start(&format!("{ns}-{identity}"), &args).await
}

fn leader_gauge(text: &str) -> Option<f64> {
    metric(text, "colony_operator_leader ")
}

async fn use_colony_os(cms: &Api<ConfigMap>) -> Option<String> {
    cms.get_opt("srv-fallback").await.ok().flatten().and_then(|c| c.data).and_then(|d| d.get("USE_COLONY_OS").cloned())
}

/// The server `srv` of `ns`, probing `endpoint` and notifying its `/hook` on every flip
/// (`retries` more attempts, from 1 s apart); returns its fallback ConfigMaps once the
/// operator has written the fallback off.
/// The fallback ConfigMap of `srv`, once the operator has written it off.
async fn fallback_off(ns: &TestNamespace) -> Api<ConfigMap> {
    let cms: Api<ConfigMap> = ns.api();
    wait_for("the fallback ConfigMap, off", DEADLINE, || async {
        match use_colony_os(&cms).await.as_deref() {
            Some("true") => Ok(()),
            other => Err(format!("USE_COLONY_OS={other:?}")),
        }
    })
    .await;
    cms
}

async fn notifying_server(ns: &TestNamespace, endpoint: &TestEndpoint, retries: u32) -> Api<ConfigMap> {
    let hook = format!("{}/hook", endpoint.url());
    apply_yaml(
        &ns.name,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: hook\nstringData:\n  url: \"{hook}\"\n---\n{}",
            server("srv", endpoint).replace(
                "maxFlipsPerHour: 60}",
                &format!(
                    "maxFlipsPerHour: 60, notify: {{urlSecretRef: {{name: hook, key: url}}, retries: {retries}, backoff: 1s}}}}"
                )
            )
        ),
    )
    .await;
    fallback_off(ns).await
}

/// Per round: two replicas, the leader busy writing (a flapping server); SIGSTOP it past its
/// lease while the server goes down for good; the standby takes over and flips the fallback;
/// SIGCONT the old leader. The audit log, read by writer identity, must hold no write by
/// the old leader after its lease expired. A fresh standby joins for the next round.
#[tokio::test]
async fn chaos_sigstop_leader_past_its_lease() {
    let _shared = CONTROL_PLANE.read().await;
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "chaos-leader").await;
    let endpoint = TestEndpoint::start().await;
    let mut next_id = 0;
    let mut procs: Vec<(String, OperatorProcess)> = Vec::new();
    for _ in 0..2 {
        let id = format!("op-{next_id}");
        next_id += 1;
        procs.push((id.clone(), start(&ns.name, &id).await));
    }
    for (_, p) in &procs {
        p.wait_ready().await;
    }
    apply_yaml(&ns.name, &server("srv", &endpoint)).await;
    let cms: Api<ConfigMap> = ns.api();

    let rounds = chaos::count(1, 3);
    let mut doubled = 0;
    let (mut min_last_write, mut min_last_action, mut max_failover) = (f64::MAX, f64::MAX, 0f64);
    let (mut busy_total, mut stopped_total) = (0, 0);
    for round in 0..rounds {
        let round_start = SystemTime::now();
        let leader = wait_for(&format!("round {round}: one process to lead"), DEADLINE, || async {
            let mut gauges = Vec::new();
            for (_, p) in &procs {
                gauges.push(leader_gauge(&p.get("/metrics").await.ok_or("a replica is silent")?.1));
            }
            match gauges.as_slice() {
                [Some(1.0), Some(0.0)] => Ok(0),
                [Some(0.0), Some(1.0)] => Ok(1),
                other => Err(format!("leader gauges {other:?}")),
            }
        })
        .await;
        let (old_id, new_id) = (procs[leader].0.clone(), procs[1 - leader].0.clone());
        wait_for("the leader to write the fallback ConfigMap", DEADLINE, || async {
            use_colony_os(&cms).await.map(|_| ()).ok_or("not yet".to_string())
        })
        .await;

        // Keep the leader busy: the endpoint flaps, each probe turns the verdict and the
        // leader writes status and flips; then freeze it in the middle of that.
        let mut probes = endpoint.failures() + endpoint.successes();
        for i in 0..8 {
            endpoint.set_failing(i % 2 == 0);
            wait_for("a probe of the flapping endpoint", DEADLINE, || async {
                let n = endpoint.failures() + endpoint.successes();
                if n > probes { Ok(()) } else { Err(format!("{n} probes")) }
            })
            .await;
            probes = endpoint.failures() + endpoint.successes();
        }
        let busy = by(&audit_writes(&ns.name), &old_id)
            .iter()
            .filter(|w| w.at >= round_start && !w.object.starts_with("leases/"))
            .count();
        assert!(busy > 0, "the leader wrote while the endpoint flapped");

        procs[leader].1.signal("STOP");
        let stopped_at = SystemTime::now();
        // While it is frozen the server goes down for good: the standby must take over and act.
        endpoint.set_failing(true);
        let standby = &procs[1 - leader].1;
        wait_for(&format!("round {round}: the standby to take over and act"), DEADLINE, || async {
            let leads = leader_gauge(&standby.get("/metrics").await.ok_or("standby silent")?.1) == Some(1.0);
            let acted = by(&audit_writes(&ns.name), &new_id)
                .iter()
                .any(|w| w.at > stopped_at && !w.object.starts_with("leases/") && w.code < 300);
            let value = use_colony_os(&cms).await;
            if leads && acted && value.as_deref() == Some("false") {
                Ok(())
            } else {
                Err(format!("leads={leads} acted={acted} USE_COLONY_OS={value:?}"))
            }
        })
        .await;
        let lease = ns.api::<Lease>().get("colony-operator").await.unwrap();
        assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some(new_id.as_str()));

        // Thaw the old leader: it resumes with stale state (a failing server, pending
        // wake-ups), finds its deadline passed, does nothing, and exits non-zero.
        let (_, mut old) = procs.remove(leader);
        old.signal("CONT");
        let code = old.wait_exit(DEADLINE).await;
        assert!(
            matches!(code, Some(c) if c != 0),
            "the old leader exits non-zero once thawed (got {code:?}; log: {})",
            old.log_path.display()
        );
        let old_logs = old.logs();
        assert!(old_logs.contains("lost the leader lease"), "log: {}", old.log_path.display());

        // Count from the audit log, by writer identity.
        let writes = audit_writes(&ns.name);
        let old_writes = by(&writes, &old_id);
        let last_renew = old_writes
            .iter()
            .filter(|w| w.object.starts_with("leases/") && w.code < 300)
            .map(|w| w.at)
            .max()
            .expect("the old leader renewed its lease");
        let expiry = last_renew + Duration::from_secs(LEASE_SECS);
        let after_expiry: Vec<_> = old_writes.iter().filter(|w| w.at >= expiry).collect();
        assert!(
            after_expiry.is_empty(),
            "round {round}: writes by the old leader after its lease expired: {after_expiry:?}"
        );
        doubled += after_expiry.len();
        let last_write = old_writes.iter().map(|w| w.at).max().unwrap();
        let last_action = old_writes.iter().filter(|w| !w.object.starts_with("leases/")).map(|w| w.at).max().unwrap();
        let standby_first = by(&writes, &new_id)
            .iter()
            .filter(|w| w.at > stopped_at && !w.object.starts_with("leases/"))
            .map(|w| w.at)
            .min()
            .unwrap();
        min_last_write = min_last_write.min(secs_between(last_write, expiry));
        min_last_action = min_last_action.min(secs_between(last_action, expiry));
        max_failover = max_failover.max(secs_between(stopped_at, standby_first));
        busy_total += busy;
        // What the thawed leader tried and was stopped from doing (cancelled reconciles,
        // refused requests).
        stopped_total +=
            old_logs.lines().filter(|l| l.contains("not the leader") || l.contains("refused an API write")).count();

        // A fresh standby for the next round; the server is healthy again.
        endpoint.set_failing(false);
        if round + 1 < rounds {
            let id = format!("op-{next_id}");
            next_id += 1;
            let p = start(&ns.name, &id).await;
            p.wait_ready().await;
            procs.push((id, p));
        }
    }
    let figures = format!(
        "old leader's last write >= {min_last_write:.2} s and last non-Lease write >= {min_last_action:.2} s before its \
         lease expired (last renewal + {LEASE_SECS} s; margin {MARGIN_SECS} s), {doubled} after; standby's first action \
         <= {max_failover:.1} s after SIGSTOP; {busy_total} writes by leaders before the freeze; {stopped_total} side \
         effects cancelled or refused after the thaw"
    );
    println!("{figures}");
    chaos::record(&Row {
        fault: "SIGSTOP leader past its lease, standby takes over, SIGCONT".into(),
        injected: rounds,
        lost: 0,
        doubled,
        stuck: 0,
        figures,
    });
    for (_, mut p) in procs {
        assert_eq!(p.terminate().await, Some(0));
    }
    ns.cleanup().await;
}

#[tokio::test]
async fn chaos_a_panicking_controller_fails_the_process() {
    let _shared = CONTROL_PLANE.read().await;
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

/// Restarts the whole local control plane (etcd keeps its data): `kwokctl stop` + `start`.
async fn restart_control_plane() -> Duration {
    let cluster = std::env::var("COLONY_CLUSTER_NAME").unwrap_or_else(|_| "colony".into());
    let workdir = colony_e2e::repo_root().join("target/cluster/kwok");
    let started = std::time::Instant::now();
    for verb in ["stop", "start"] {
        let out = tokio::process::Command::new("kwokctl")
            .args([verb, "cluster", "--name", &cluster])
            .env("KWOK_WORKDIR", &workdir)
            .output()
            .await
            .expect("kwokctl (is the control plane's bin dir on PATH?)");
        assert!(out.status.success(), "kwokctl {verb}: {}", String::from_utf8_lossy(&out.stderr));
    }
    started.elapsed()
}

/// Waits until the restarted control plane works as a whole, not only the API server: the
/// controller-manager and the scheduler lead again and every node heartbeats again (their
/// Leases renewed since `since`), and every node is Ready and untainted. The tests that run
/// after this one need Deployments to get pods. kwok renews its node Leases (200 s long) only
/// some minutes after a restart, and meanwhile the node controller marks the nodes
/// unreachable: this waits up to 6 minutes.
async fn control_plane_working_again(since: SystemTime) {
    let client = client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let node_leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client);
    let since = since.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let renewed_since = |lease: &Lease| {
        lease.spec.as_ref().and_then(|s| s.renew_time.as_ref()).is_some_and(|t| t.0.as_millisecond() >= since)
    };
    wait_for("the restarted control plane working again", Duration::from_secs(360), || async {
        for name in ["kube-controller-manager", "kube-scheduler"] {
            let lease = leases.get(name).await.map_err(|e| format!("{name}: {e}"))?;
            if !renewed_since(&lease) {
                return Err(format!("{name} has not renewed its lease since the restart"));
            }
        }
        for node in nodes.list(&Default::default()).await.map_err(|e| e.to_string())? {
            let name = node.metadata.name.clone().unwrap_or_default();
            let heartbeat = node_leases.get_opt(&name).await.map_err(|e| e.to_string())?;
            if !heartbeat.as_ref().is_some_and(renewed_since) {
                return Err(format!("node {name} has not heartbeaten since the restart"));
            }
            let ready = node
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if !ready {
                return Err(format!("node {name} not Ready"));
            }
            // The node controller taints a node it lost (unreachable, not-ready) and takes the
            // taint off once the node is back; pods do not schedule while it is there.
            let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
            if let Some(t) = taints.iter().find(|t| t.key.starts_with("node.kubernetes.io/")) {
                return Err(format!("node {name} still tainted {}", t.key));
            }
        }
        Ok(())
    })
    .await;
}

/// The API server restarts right after the health verdict turns (while the flip is being
/// written): each flip is still done once — one notification per flip in status, strictly
/// alternating, in order.
#[tokio::test]
async fn chaos_apiserver_restart_during_a_flip() {
    let _alone = CONTROL_PLANE.write().await;
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "chaos-apiserver").await;
    let endpoint = TestEndpoint::start().await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    op.wait_ready().await;
    let cms = notifying_server(&ns, &endpoint, 5).await;

    let restarts = chaos::count(1, 3);
    let mut outage = Duration::ZERO;
    let mut failing = false;
    let mut last_restart = SystemTime::now();
    for round in 0..restarts {
        failing = !failing;
        let probes = endpoint.failures() + endpoint.successes();
        endpoint.set_failing(failing);
        // The first probe with the new verdict wakes the reconciler that flips: restart now.
        wait_for("a probe with the new verdict", DEADLINE, || async {
            let n = endpoint.failures() + endpoint.successes();
            if n > probes { Ok(()) } else { Err(format!("{n} probes")) }
        })
        .await;
        last_restart = SystemTime::now();
        outage = outage.max(restart_control_plane().await);
        let want = if failing { "false" } else { "true" };
        wait_for(&format!("round {round}: USE_COLONY_OS={want} after the restart"), DEADLINE, || async {
            match use_colony_os(&cms).await {
                Some(v) if v == want => Ok(()),
                other => Err(format!("USE_COLONY_OS={other:?}")),
            }
        })
        .await;
    }
    // Leave the cluster as the other tests need it (nodes that take pods), whatever follows.
    control_plane_working_again(last_restart).await;
    // Settle: the flips recorded in status, and their notifications.
    let servers: Api<colony_operator::api::ColonyServer> = ns.api();
    let flips = wait_for("status to record every flip", DEADLINE, || async {
        let cs = servers.get("srv").await.map_err(|e| e.to_string())?;
        let n = cs.status.and_then(|s| s.fallback).map(|f| f.recent_flips.len()).unwrap_or(0);
        if n >= restarts { Ok(n) } else { Err(format!("{n} flips")) }
    })
    .await;
    let hooks = wait_for("one notification per flip", DEADLINE, || async {
        let h = endpoint.hooks();
        if h.len() >= flips { Ok(h) } else { Err(format!("{} notifications for {flips} flips", h.len())) }
    })
    .await;
    // Anything late would have arrived by now: the operator is idle (its flips are done) and
    // a retried delivery waits at most a few seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hooks_now = endpoint.hooks();
    let states: Vec<String> = hooks_now.iter().map(|h| h["state"].as_str().unwrap_or("?").to_string()).collect();
    let doubled = hooks_now.len().saturating_sub(flips) + states.windows(2).filter(|w| w[0] == w[1]).count();
    let figures = format!(
        "{restarts} restart(s) of the control plane (each {:.1} s at most); {flips} flips in status, {} notifications {states:?}",
        outage.as_secs_f64(),
        hooks_now.len()
    );
    println!("{figures}");
    chaos::record(&Row {
        fault: "API server restarted while a flip is written".into(),
        injected: restarts,
        doubled,
        stuck: usize::from(hooks.len() < flips),
        figures,
        ..Default::default()
    });
    assert_eq!(flips, restarts, "one flip per verdict change");
    assert_eq!(doubled, 0, "a flip was acted on twice: {states:?}");
    assert_eq!(states.first().map(String::as_str), Some("on"));
    drop(op);
    ns.cleanup().await;
}

/// How the operator's open connections to the API server are cut, without a reset.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// The proxy keeps them open but moves no byte (a hung proxy or load balancer): only the
    /// HTTP/2 pings can tell.
    Silenced,
    /// Their packets are dropped (the peer's node or a NAT entry gone): TCP keepalive tells.
    PacketsDropped,
}

/// `--api-http2`, every open connection silenced: the pings notice, the watches resume.
#[tokio::test]
async fn chaos_api_connection_black_holed() {
    connection_cut_while_a_hand_edit_is_made(Cut::Silenced, &["--api-http2"]).await;
}

/// The default client (HTTP/1.1), every open connection's packets dropped: TCP keepalive
/// notices (kube's own client waited forever), the watches resume.
#[tokio::test]
async fn chaos_api_connection_packets_dropped() {
    connection_cut_while_a_hand_edit_is_made(Cut::PacketsDropped, &[]).await;
}

/// Every open connection between the operator and the API server is cut without a reset:
/// nothing moves, no error arrives. A human turns the fallback on by hand meanwhile. The
/// operator notices the dead connections, reconnects, its watches resume, and the hand edit is
/// put back: silence is not mistaken for a quiet cluster.
async fn connection_cut_while_a_hand_edit_is_made(cut: Cut, args: &[&str]) {
    let _shared = CONTROL_PLANE.read().await;
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "chaos-cut").await;
    let endpoint = TestEndpoint::start().await;
    let proxy = BlackHoleProxy::in_front_of_the_api_server(&ns.name).await;
    let kubeconfig = proxy.kubeconfig.to_string_lossy().into_owned();
    let mut op_args = vec!["--namespace", ns.name.as_str()];
    op_args.extend(args);
    let mut op = OperatorProcess::start_with_env(&ns.name, &op_args, &[("KUBECONFIG", kubeconfig.as_str())]).await;
    op.wait_ready().await;
    apply_yaml(&ns.name, &server("srv", &endpoint)).await;
    let cms = fallback_off(&ns).await;
    let probes = endpoint.successes();
    let accepted = proxy.connections();
    let (cut_open, dropping) = match cut {
        Cut::Silenced => (proxy.black_hole(), None),
        Cut::PacketsDropped => {
            let (n, guard) = proxy.drop_packets();
            (n, Some(guard))
        }
    };
    assert!(cut_open >= 1, "the operator reached the API server through the proxy");
    let start = std::time::Instant::now();
    let by_hand = kube::api::PatchParams { field_manager: Some("kubectl-edit".into()), ..Default::default() };
    cms.patch(
        "srv-fallback",
        &by_hand,
        &kube::api::Patch::Merge(serde_json::json!({"data": {"USE_COLONY_OS": "false"}})),
    )
    .await
    .unwrap();
    // Detection takes up to 45 s with pings (one after 30 s without a frame, 15 s for its
    // answer) and up to 60 s with TCP keepalive (a probe after 30 s, 3 more 10 s apart); then
    // the watches restart from where they were, after kube's backoff.
    let put_back = wait_for("the hand edit put back over a new connection", Duration::from_secs(240), || async {
        match use_colony_os(&cms).await.as_deref() {
            Some("true") => Ok(start.elapsed()),
            other => Err(format!("USE_COLONY_OS={other:?}; {} connection(s) accepted", proxy.connections())),
        }
    })
    .await;
    drop(dropping);
    // The operator was running all along (it kept probing), and it came back through new
    // connections, not through a cut one.
    assert!(endpoint.successes() > probes, "the operator kept probing while its connections were cut");
    let reconnected = proxy.connections() - accepted;
    assert!(reconnected >= 1, "the operator opened a new connection");
    let (fault, how) = match cut {
        Cut::Silenced => ("every connection to the API server silenced (no reset; HTTP/2)", "silenced"),
        Cut::PacketsDropped => ("every connection to the API server loses its packets (HTTP/1.1)", "cut"),
    };
    let figures = format!(
        "{cut_open} connection(s) {how}; the hand edit made meanwhile put back {:.1} s later over {reconnected} new connection(s)",
        put_back.as_secs_f64()
    );
    println!("{figures}");
    chaos::record(&Row {
        fault: format!("{fault}, fallback edited by hand meanwhile"),
        injected: 1,
        figures,
        ..Default::default()
    });
    assert_eq!(op.terminate().await, Some(0), "SIGTERM stops cleanly (log: {})", op.log_path.display());
    ns.cleanup().await;
}

/// The operator is SIGKILLed while a flip's notification is still being delivered (its
/// webhook answers 500 and the delivery keeps retrying). The notification is in status
/// (`pendingNotifications`); the next operator sends it once the webhook answers, and status
/// lets it go: the page is not lost with the process.
#[tokio::test]
async fn chaos_sigkill_before_a_flip_notification_is_delivered() {
    let _shared = CONTROL_PLANE.read().await;
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "chaos-outbox").await;
    let endpoint = TestEndpoint::start().await;
    endpoint.set_hook_failing(true);
    let mut op = OperatorProcess::start(&format!("{}-a", ns.name), &["--namespace", &ns.name]).await;
    op.wait_ready().await;
    notifying_server(&ns, &endpoint, 10).await;
    let servers: Api<colony_operator::api::ColonyServer> = ns.api();
    let pending = || async {
        let cs = servers.get("srv").await.map_err(|e| e.to_string())?;
        let f = cs.status.and_then(|s| s.fallback).unwrap_or_default();
        Ok::<_, String>(f.pending_notifications.iter().map(|n| n.state.clone()).collect::<Vec<_>>())
    };

    // The server goes down: the fallback turns on, its notification is recorded and its
    // delivery fails (and retries) until the operator is killed.
    endpoint.set_failing(true);
    wait_for("the notification recorded and tried", DEADLINE, || async {
        let p = pending().await?;
        let tried = endpoint.hooks().len();
        if p == ["on"] && tried >= 1 { Ok(()) } else { Err(format!("pending {p:?}, {tried} attempts")) }
    })
    .await;
    op.kill().await;
    let attempts_before = endpoint.hooks().len();
    endpoint.set_hook_failing(false);
    let op = OperatorProcess::start(&format!("{}-b", ns.name), &["--namespace", &ns.name]).await;
    op.wait_ready().await;
    let delivered = wait_for("the next operator to deliver it and status to let it go", DEADLINE, || async {
        let p = pending().await?;
        let after: Vec<_> = endpoint.hooks()[attempts_before..].to_vec();
        if p.is_empty() && !after.is_empty() { Ok(after) } else { Err(format!("pending {p:?}, {} sent", after.len())) }
    })
    .await;
    // Anything late would have arrived by now: status holds nothing more to send.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after: Vec<String> =
        endpoint.hooks()[attempts_before..].iter().map(|h| h["state"].as_str().unwrap_or("?").to_string()).collect();
    let flips =
        servers.get("srv").await.unwrap().status.and_then(|s| s.fallback).map(|f| f.recent_flips.len()).unwrap_or(0);
    let figures = format!(
        "{attempts_before} failed attempt(s) before the kill; after it {} notification(s) {after:?} for {flips} flip(s)",
        after.len()
    );
    println!("{figures}");
    chaos::record(&Row {
        fault: "SIGKILL while a flip notification is being delivered".into(),
        injected: 1,
        lost: usize::from(delivered.is_empty()),
        doubled: after.len().saturating_sub(1),
        figures,
        ..Default::default()
    });
    assert_eq!(flips, 1);
    assert_eq!(after, ["on"], "the notification the killed operator left, sent once");
    let ids: Vec<_> = endpoint.hooks().iter().map(|h| h["id"].as_str().unwrap_or_default().to_string()).collect();
    assert!(
        !ids[0].is_empty() && ids.iter().all(|id| id == &ids[0]),
        "every delivery of the one flip, by either process, carries the same id: {ids:?}"
    );
    drop(op);
    ns.cleanup().await;
}
