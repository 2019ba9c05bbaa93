//! The operator against the real ColonyOS server (colonyos/colonies at the version pinned in
//! tests/cluster/versions.env, on its own PostgreSQL; see tests/src/colonyos.rs): health and
//! the fallback follow the real `/health`, executor, user and colony-owner keys rotate with
//! the real change-ID calls, and a rotation interrupted by SIGKILL finishes with exactly one new key.
//!
//! v1.9.12 leaks one PostgreSQL connection per successful change-ID call (the pool of 100 is
//! exhausted after 100 of them); these tests stay far below that per server start.
use std::time::{Duration, Instant, SystemTime};

use colony_e2e::colonyos::{Options, RealColonyOs};
use colony_e2e::{
    DEADLINE, OperatorProcess, TestNamespace, apply_yaml, chaos, client, install_crds, operator_writes, wait_for,
};
use colony_operator::api::{ColonyServer, KeyRotation};
use colony_operator::colonyos::crypto::id_from_private_hex;
use colony_operator::colonyos::rpc;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;
use rand::Rng;

fn data(s: &Secret, key: &str) -> Option<String> {
    s.data.as_ref()?.get(key).map(|v| String::from_utf8_lossy(&v.0).to_string())
}

fn has_pending(s: &Secret) -> bool {
    s.data.as_ref().is_some_and(|d| d.keys().any(|k| k.starts_with("pending.")))
}

fn condition(cs: &ColonyServer, type_: &str) -> Option<String> {
    cs.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_).map(|c| c.status.clone())
}

async fn use_colony_os(cms: &Api<ConfigMap>) -> Option<String> {
    colony_e2e::use_colony_os(cms, "srv-fallback").await
}

/// `colony_operator_health_probes_total` of server `srv` with `result`, from the operator's
/// /metrics.
async fn probes(op: &OperatorProcess, result: &str) -> u64 {
    let (_, text) = op.get("/metrics").await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("colony_operator_health_probes_total{"))
        .filter(|l| l.contains("name=\"srv\"") && l.contains(&format!("result=\"{result}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

fn colony_server(colonyos: &RealColonyOs) -> String {
    let health = "{interval: 1s, timeout: 1s, failureThreshold: 3, successThreshold: 1}";
    let extra = "  fallback: {recoverAfter: 3s, minHold: 1s, maxFlipsPerHour: 10}\n";
    colony_e2e::fixtures::unmanaged_server("srv", &colonyos.url(), health, extra)
}

fn key_rotation(name: &str, prvkey: &str, identity: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: {name}
stringData:
  prvkey: {prvkey}
---
apiVersion: colony.zyeute.io/v1alpha1
kind: KeyRotation
metadata:
  name: {name}
spec:
  interval: 720h
  secretName: {name}
  colonyOS:
    colonyServerRef: {{name: srv}}
    identity: {identity}
    colonyName: zyeute
"#
    )
}

async fn rotate_now(rotations: &Api<KeyRotation>, name: &str, value: &str) {
    let patch = serde_json::json!({ "metadata": { "annotations": { "colony.zyeute.io/rotate-now": value } } });
    rotations.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

#[tokio::test]
async fn health_and_fallback_follow_the_real_server() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let mut colonyos = RealColonyOs::start("health", Options::default()).await;
    let ns = TestNamespace::new(&client, "e2e-real-health").await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    apply_yaml(&ns.name, &colony_server(&colonyos)).await;
    let servers: Api<ColonyServer> = ns.api();
    let cms: Api<ConfigMap> = ns.api();

    wait_for("srv Healthy on the real /health", DEADLINE, || async {
        let cs = servers.get("srv").await.map_err(|e| e.to_string())?;
        match condition(&cs, "Healthy").as_deref() {
            Some("True") => Ok(()),
            _ => Err(format!("{:?}", cs.status.map(|s| s.conditions))),
        }
    })
    .await;
    assert_eq!(use_colony_os(&cms).await.as_deref(), Some("true"), "healthy: Colony OS in use");
    assert!(probes(&op, "success").await >= 1, "the operator probed the real server");

    // The real server stops: the fallback turns on at the 3rd failed probe, not before.
    let failures_before = probes(&op, "failure").await;
    colonyos.stop_server().await;
    let failures_at_flip = wait_for("fallback on after the server stopped", DEADLINE, || async {
        let failures = probes(&op, "failure").await - failures_before;
        match use_colony_os(&cms).await.as_deref() {
            Some("false") => Ok(probes(&op, "failure").await - failures_before),
            Some("true") => Err(format!("USE_COLONY_OS=true after {failures} failed probes")),
            other => panic!("unexpected USE_COLONY_OS {other:?}"),
        }
    })
    .await;
    assert!(failures_at_flip >= 3, "fallback on after only {failures_at_flip} failed probes (failureThreshold 3)");
    let cs = servers.get("srv").await.unwrap();
    assert_eq!(condition(&cs, "Healthy").as_deref(), Some("False"));
    assert!(cs.status.unwrap().health.unwrap().down_since.is_some());

    // Started again on the same database: off only after recoverAfter (3s) of health.
    let successes_before = probes(&op, "success").await;
    colonyos.start_server().await;
    let up_at = Instant::now();
    let successes_at_flip = wait_for("fallback off after the server came back", DEADLINE, || async {
        match use_colony_os(&cms).await.as_deref() {
            Some("true") => Ok(probes(&op, "success").await - successes_before),
            other => Err(format!("USE_COLONY_OS={other:?}")),
        }
    })
    .await;
    let off_after = up_at.elapsed();
    assert!(
        successes_at_flip >= 3,
        "fallback off after only {successes_at_flip} healthy probes (recoverAfter 3s at 1s interval)"
    );
    println!(
        "real server: fallback on after {failures_at_flip} failed probes, off {off_after:?} after restart \
         ({successes_at_flip} healthy probes)"
    );
    assert!(colonyos.accepts(&colonyos.executor_key.prvkey).await, "same database: the executor is still known");
    drop(op);
    ns.cleanup().await;
}

#[tokio::test]
async fn executor_and_user_keys_rotate_on_the_real_server() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let colonyos = RealColonyOs::start("rotate", Options::default()).await;
    let ns = TestNamespace::new(&client, "e2e-real-rotate").await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    apply_yaml(&ns.name, &colony_server(&colonyos)).await;
    apply_yaml(&ns.name, &key_rotation("bee-key", &colonyos.executor_key.prvkey, "executor")).await;
    apply_yaml(&ns.name, &key_rotation("ops-key", &colonyos.user_key.prvkey, "user")).await;
    let secrets: Api<Secret> = ns.api();
    let rotations: Api<KeyRotation> = ns.api();

    for (name, old) in [("bee-key", colonyos.executor_key.clone()), ("ops-key", colonyos.user_key.clone())] {
        assert!(colonyos.accepts(&old.prvkey).await, "{name}: the first key works before the rotation");
        rotate_now(&rotations, name, "1").await;
        let rotated = wait_for(&format!("{name}: rotated and promoted"), DEADLINE, || async {
            let s = secrets.get(name).await.map_err(|e| e.to_string())?;
            match data(&s, "prvkey") {
                Some(k) if k != old.prvkey && !has_pending(&s) => Ok(s),
                _ => Err(format!("keys {:?}", s.data.as_ref().map(|d| d.keys().cloned().collect::<Vec<_>>()))),
            }
        })
        .await;
        let new = data(&rotated, "prvkey").unwrap();
        assert_eq!(data(&rotated, "id"), Some(id_from_private_hex(&new).unwrap()));
        assert_eq!(data(&rotated, "previous.prvkey").as_deref(), Some(old.prvkey.as_str()));
        assert!(colonyos.accepts(&new).await, "{name}: the real server accepts the new key");
        assert!(!colonyos.accepts(&old.prvkey).await, "{name}: the real server refuses the old key");
        let kr = rotations.get(name).await.unwrap();
        let status = kr.status.unwrap();
        assert_eq!(status.current_key_id.as_deref(), Some(id_from_private_hex(&new).unwrap().as_str()));
        assert!(!op.logs().contains(&new) && !op.logs().contains(&old.prvkey), "no key in the operator's log");
    }
    drop(op);
    ns.cleanup().await;
}

/// The colony owner's key rotates with the real `changecolonyidmsg` (signed with the old
/// colony key): afterwards the new key can do what only the colony owner may (add and approve
/// an executor, which then works), the old key cannot, the operator's recovery probe tells the
/// two apart, and the colony's members keep working.
#[tokio::test]
async fn colony_owner_key_rotates_on_the_real_server() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let colonyos = RealColonyOs::start("rotate-colony", Options::default()).await;
    let ns = TestNamespace::new(&client, "e2e-real-colony").await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    apply_yaml(&ns.name, &colony_server(&colonyos)).await;
    let old = colonyos.colony_key.clone();
    apply_yaml(&ns.name, &key_rotation("colony-key", &old.prvkey, "colony")).await;
    let secrets: Api<Secret> = ns.api();
    let rotations: Api<KeyRotation> = ns.api();

    // Before: the old colony key acts as the colony owner; a member's key does not.
    let before = colonyos.add_executor_as_colony_owner(&old.prvkey, "bee-before").await;
    let before = before.expect("the colony owner's first key adds an executor before the rotation");
    let refused_user = colonyos.add_executor_as_colony_owner(&colonyos.user_key.prvkey, "bee-by-user").await;
    let refused_user = refused_user.expect_err("a colony user is no colony owner: the check can fail");
    assert!(refused_user.contains("not colony owner"), "refused as no colony owner: {refused_user}");
    assert!(colonyos.accepts(&before.prvkey).await, "the executor added with the first key works");

    let requested = Instant::now();
    rotate_now(&rotations, "colony-key", "1").await;
    let rotated = wait_for("colony-key: rotated and promoted", DEADLINE, || async {
        let s = secrets.get("colony-key").await.map_err(|e| e.to_string())?;
        match data(&s, "prvkey") {
            Some(k) if k != old.prvkey && !has_pending(&s) => Ok(s),
            _ => Err(format!("keys {:?}", s.data.as_ref().map(|d| d.keys().cloned().collect::<Vec<_>>()))),
        }
    })
    .await;
    let took = requested.elapsed();
    let new = data(&rotated, "prvkey").unwrap();
    let new_id = id_from_private_hex(&new).unwrap();
    assert_eq!(data(&rotated, "id").as_deref(), Some(new_id.as_str()));
    assert_eq!(data(&rotated, "previous.prvkey").as_deref(), Some(old.prvkey.as_str()));

    // After: the new key is the colony owner's, the old one is refused.
    let after = colonyos.add_executor_as_colony_owner(&new, "bee-after").await;
    let after = after.expect("the real server lets the new colony key add an executor");
    assert!(colonyos.accepts(&after.prvkey).await, "the executor added with the new key works");
    let refused_old = colonyos.add_executor_as_colony_owner(&old.prvkey, "bee-old-key").await;
    let refused_old = refused_old.expect_err("the real server refuses the old colony key");
    assert!(refused_old.contains("not colony owner"), "the old key refused as no colony owner: {refused_old}");
    // The operator's recovery probe for a colony key (after a crash it asks which of old and
    // staged key the server accepts) tells them apart on the real server.
    let rpc_client = rpc::Client::for_endpoint(&colonyos.url(), None).unwrap();
    let probe = rpc::probe_message(rpc::IdentityKind::Colony, "zyeute");
    let identity = |k: &str| rpc::Identity::from_private_hex(k).unwrap();
    assert!(rpc_client.probe(&probe, &identity(&new)).await.is_ok(), "the recovery probe accepts the new key");
    let probe_old = rpc_client.probe(&probe, &identity(&old.prvkey)).await;
    assert!(probe_old.is_err(), "the recovery probe refuses the old key: {probe_old:?}");
    for (who, key) in [("executor", &colonyos.executor_key), ("user", &colonyos.user_key), ("bee-before", &before)] {
        assert!(colonyos.accepts(&key.prvkey).await, "{who}: still a member after the colony key changed");
    }

    let status = rotations.get("colony-key").await.unwrap().status.unwrap();
    assert_eq!(status.current_key_id.as_deref(), Some(new_id.as_str()));
    assert_eq!(status.handled_rotate_now.as_deref(), Some("1"));
    assert!(!op.logs().contains(&new) && !op.logs().contains(&old.prvkey), "no key in the operator's log");
    println!(
        "colony key rotated {took:?} after rotate-now; old key refused: {}; a user's key refused: {}; \
         recovery probe with the old key: {probe_old:?}",
        refused_old.trim(),
        refused_user.trim()
    );
    drop(op);
    ns.cleanup().await;
}

/// Where a SIGKILL landed in a rotation, found from what survived it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum KilledAt {
    /// Nothing written yet for this rotation.
    BeforeStaging,
    /// The new key staged in the Secret, the server still on the old key.
    StagedBeforeChange,
    /// The server switched to the staged key, the Secret not yet promoted.
    ChangedBeforePromotion,
    /// The new key promoted in the Secret, the KeyRotation's status not yet written.
    PromotedBeforeStatus,
    /// The new key promoted and the status written.
    AfterPromotion,
}

#[tokio::test]
async fn chaos_sigkill_during_rotation_against_the_real_server() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    // Each rotation is one change-ID call on the server, so one leaked connection (v1.9.12):
    // the long form stays far below the pool of 100.
    let rotations_wanted = chaos::count(4, 16);
    let colonyos = RealColonyOs::start("chaos-rotate", Options::default()).await;
    let ns = TestNamespace::new(&client, "e2e-real-chaos").await;
    let args = ["--namespace", ns.name.as_str()];
    let mut op = OperatorProcess::start(&format!("{}-0", ns.name), &args).await;
    apply_yaml(&ns.name, &colony_server(&colonyos)).await;
    apply_yaml(&ns.name, &key_rotation("bee-key", &colonyos.executor_key.prvkey, "executor")).await;
    let secrets: Api<Secret> = ns.api();
    let rotations: Api<KeyRotation> = ns.api();
    let base_revision = wait_for("the KeyRotation's first status", DEADLINE, || async {
        let kr = rotations.get("bee-key").await.map_err(|e| e.to_string())?;
        kr.status.map(|s| s.revision).ok_or("no status yet".to_string())
    })
    .await;

    let mut killed_at = std::collections::BTreeMap::<KilledAt, usize>::new();
    let (mut lost, mut doubled, mut stuck) = (0, 0, 0);
    let mut finish_times = Vec::new();
    let mut current = colonyos.executor_key.prvkey.clone();
    for i in 1..=rotations_wanted {
        // The kill moments cycle: the instant the staged key shows up in the Secret (inside
        // or just before the change-ID call), a little and a little more after that (around
        // change-ID and promotion), and a few ms after the request (maybe before staging).
        let mode = (i - 1) % 4;
        let mut watch = watcher(secrets.clone(), watcher::Config::default().fields("metadata.name=bee-key")).boxed();
        rotate_now(&rotations, "bee-key", &i.to_string()).await;
        if mode == 3 {
            tokio::time::sleep(Duration::from_millis(rand::rng().random_range(0..50))).await;
        } else {
            let staged = tokio::time::timeout(DEADLINE, async {
                while let Some(event) = watch.next().await {
                    if let Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) = event
                        && (has_pending(&s) || data(&s, "prvkey").as_deref() != Some(current.as_str()))
                    {
                        return;
                    }
                }
            })
            .await;
            assert!(staged.is_ok(), "rotation {i}: the operator never staged a key");
            let delay = match mode {
                0 => 0,
                1 => rand::rng().random_range(0..15),
                _ => rand::rng().random_range(15..60),
            };
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        op.kill().await;
        drop(watch);

        // The state the kill left behind.
        let s = secrets.get("bee-key").await.unwrap();
        let status_revision = rotations.get("bee-key").await.unwrap().status.map(|st| st.revision).unwrap_or(0);
        let at = match (data(&s, "pending.prvkey"), data(&s, "prvkey")) {
            (Some(pending), _) if colonyos.accepts(&pending).await => KilledAt::ChangedBeforePromotion,
            (Some(_), _) => KilledAt::StagedBeforeChange,
            (None, Some(k)) if k != current && status_revision < base_revision + i as i64 => {
                KilledAt::PromotedBeforeStatus
            }
            (None, Some(k)) if k != current => KilledAt::AfterPromotion,
            _ => KilledAt::BeforeStaging,
        };
        *killed_at.entry(at).or_default() += 1;

        // Restarted, the operator finishes the rotation from there.
        let started = Instant::now();
        op = OperatorProcess::start(&format!("{}-{i}", ns.name), &args).await;
        let want = i.to_string();
        let finished = tokio::time::timeout(DEADLINE, async {
            loop {
                let kr = rotations.get("bee-key").await.unwrap();
                let s = secrets.get("bee-key").await.unwrap();
                let status = kr.status.clone().unwrap_or_default();
                if status.handled_rotate_now.as_deref() == Some(want.as_str()) && !has_pending(&s) {
                    return (status, s);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
        .await;
        let Ok((status, s)) = finished else {
            stuck += 1;
            println!("rotation {i} (killed {at:?}) did not finish; log: {}", op.log_path.display());
            break;
        };
        finish_times.push(started.elapsed());
        let new = data(&s, "prvkey").unwrap();
        let expected_revision = base_revision + i as i64;
        if status.revision > expected_revision {
            // A second rotation for one request; every later revision check would be off.
            doubled += (status.revision - expected_revision) as usize;
            println!("rotation {i} (killed {at:?}) rotated to revision {}", status.revision);
            break;
        }
        let accepted = colonyos.accepts(&new).await;
        if !accepted || colonyos.accepts(&current).await || new == current {
            lost += 1;
            println!("rotation {i} (killed {at:?}): new key accepted {accepted}, old key still current or accepted");
        }
        assert_eq!(data(&s, "previous.prvkey").as_deref(), Some(current.as_str()), "rotation {i}: previous key kept");
        assert_eq!(status.current_key_id, Some(id_from_private_hex(&new).unwrap()), "rotation {i}");
        println!("rotation {i}: killed {at:?}, finished in {:?}, revision {}", started.elapsed(), status.revision);
        current = new;
    }
    let max = finish_times.iter().max().copied().unwrap_or_default();
    let mean = finish_times.iter().sum::<Duration>() / finish_times.len().max(1) as u32;
    chaos::record(&chaos::Row {
        fault: "SIGKILL in a rotation, real ColonyOS server".into(),
        injected: killed_at.values().sum(),
        lost,
        doubled,
        stuck,
        figures: format!(
            "killed {}; finished {:.1} s after restart (max {:.1} s)",
            killed_at.iter().map(|(k, n)| format!("{k:?} x{n}")).collect::<Vec<_>>().join(", "),
            mean.as_secs_f64(),
            max.as_secs_f64()
        ),
    });
    println!("kills: {killed_at:?}; lost {lost}, doubled {doubled}, stuck {stuck}");
    assert_eq!((lost, doubled, stuck), (0, 0, 0), "every rotation finishes once with a key the server accepts");
    assert!(colonyos.accepts(&current).await);
    drop(op);
    ns.cleanup().await;
}

/// v1.9.12 leaks a PostgreSQL connection per successful change-ID call; once the server's pool
/// is exhausted every RPC hangs while `/health` still answers 200. `spec.health.api` (a signed
/// `getcolonystatsmsg`) sees it: the fallback turns on. A small pool
/// (`COLONIES_DB_MAX_OPEN_CONNS`) and a small `max_connections` get there in a few calls.
#[tokio::test]
async fn api_check_sees_a_hung_api_behind_a_healthy_health_endpoint() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let options = Options { max_connections: 20, db_max_open_conns: Some(6), ..Options::default() };
    let mut colonyos = RealColonyOs::start("api-hang", options).await;
    let ns = TestNamespace::new(&client, "e2e-real-api").await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    apply_yaml(
        &ns.name,
        &format!(
            r#"apiVersion: v1
kind: Secret
metadata:
  name: ops-key
stringData:
  prvkey: {key}
---
apiVersion: colony.zyeute.io/v1alpha1
kind: ColonyServer
metadata:
  name: srv
spec:
  managed: false
  endpoint: {url}
  health:
    interval: 1s
    timeout: 1s
    failureThreshold: 3
    successThreshold: 1
    api: {{colonyName: zyeute, keySecretRef: {{name: ops-key, key: prvkey}}}}
  fallback: {{recoverAfter: 3s, minHold: 1s, maxFlipsPerHour: 10}}
"#,
            key = colonyos.user_key.prvkey,
            url = colonyos.url()
        ),
    )
    .await;
    let servers: Api<ColonyServer> = ns.api();
    let cms: Api<ConfigMap> = ns.api();
    wait_for("srv Healthy with the API check passing", DEADLINE, || async {
        let cs = servers.get("srv").await.map_err(|e| e.to_string())?;
        match condition(&cs, "Healthy").as_deref() {
            Some("True") => Ok(()),
            _ => Err(format!("{:?}", cs.status.map(|s| s.conditions))),
        }
    })
    .await;
    assert_eq!(use_colony_os(&cms).await.as_deref(), Some("true"));

    // Steady state: probes with the API check keep passing and the operator writes nothing.
    let quiet_from = SystemTime::now();
    let successes = probes(&op, "success").await;
    wait_for("three more passing probes", DEADLINE, || async {
        let n = probes(&op, "success").await;
        if n >= successes + 3 { Ok(()) } else { Err(format!("{n} passing probes")) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await; // the audit log is written asynchronously
    let writes = operator_writes(&ns.name, quiet_from);
    assert!(writes.is_empty(), "steady state with the API check makes no writes: {writes:?}");

    // The leak: change-ID calls until one hangs. /health still answers 200, the API does not.
    let calls = colonyos.exhaust_connection_pool().await;
    let health_url = format!("{}/health", colonyos.url());
    assert_eq!(colony_e2e::colonyos::http_status(&health_url).await, Some(200), "/health still answers 200");
    let user = colonyos.user_key.prvkey.clone();
    let api_answer =
        colonyos.cli_within(Duration::from_secs(5), &[("COLONIES_PRVKEY", &user)], &["executor", "ls"]).await;
    assert!(api_answer.is_none(), "the API hangs after {calls} change-ID calls: {api_answer:?}");

    let cs = wait_for("fallback on while /health answers 200", DEADLINE, || async {
        let cs = servers.get("srv").await.map_err(|e| e.to_string())?;
        match use_colony_os(&cms).await.as_deref() {
            Some("false") => Ok(cs),
            other => Err(format!("USE_COLONY_OS={other:?}, {:?}", cs.status.and_then(|s| s.health))),
        }
    })
    .await;
    assert_eq!(colony_e2e::colonyos::http_status(&health_url).await, Some(200), "/health answered 200 throughout");
    assert_eq!(condition(&cs, "Healthy").as_deref(), Some("False"));
    let last_error = cs.status.unwrap().health.unwrap().last_error.unwrap_or_default();
    assert!(last_error.contains("API check"), "the reason names the API check: {last_error}");
    assert!(!last_error.contains(&user) && !op.logs().contains(&user), "no key in status or logs");

    // A restart of the server clears the pool: the fallback turns off again.
    colonyos.restart_server().await;
    wait_for("fallback off after the server restart", DEADLINE, || async {
        match use_colony_os(&cms).await.as_deref() {
            Some("true") => Ok(()),
            other => Err(format!("USE_COLONY_OS={other:?}")),
        }
    })
    .await;
    println!("API hung after {calls} change-ID calls (pool of 6); the API check turned the fallback on and off");
    drop(op);
    ns.cleanup().await;
}
