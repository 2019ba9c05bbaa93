//! Fault injection on KeyRotation: the operator SIGKILLed at random moments of forced
//! rotations, the change-ID reply lost for each identity kind, and a stale copy of the key
//! Secret applied in the middle of a rotation. Each test records its figures in the fault
//! table (`colony_e2e::chaos`).
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use colony_e2e::chaos::{self, Row};
use colony_e2e::{DEADLINE, OperatorProcess, TestNamespace, apply_yaml, client, install_crds, wait_for};
use colony_operator::api::KeyRotation;
use colony_operator::colonyos::crypto::id_from_private_hex;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use rand::Rng;

#[path = "support/fake_colonyos.rs"]
mod fake_colonyos;

const OLD_KEY: &str = "32087782a0314486d499315072c5a3018b78c7c9dce3cb299f780741543478ae";

fn field(s: &Secret, key: &str) -> Option<String> {
    s.data.as_ref()?.get(key).map(|v| String::from_utf8_lossy(&v.0).to_string())
}

fn id_of(s: &Secret, prefix: &str) -> Option<String> {
    field(s, &format!("{prefix}prvkey")).and_then(|k| id_from_private_hex(&k).ok())
}

fn staged(s: &Secret) -> bool {
    s.data.as_ref().is_some_and(|d| d.keys().any(|k| k.starts_with("pending.")))
}

fn secret_revision(s: &Secret) -> i64 {
    s.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("colony.zyeute.io/rotation-revision"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn condition(kr: &KeyRotation, type_: &str) -> Option<(String, String, String)> {
    let c = kr.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn annotate(rotations: &Api<KeyRotation>, name: &str, key: &str, value: &str) {
    let patch = serde_json::json!({ "metadata": { "annotations": { key: value } } });
    rotations.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

/// A namespace with the key Secret (holding `OLD_KEY`), a ColonyServer pointing at the
/// stand-in, and a KeyRotation `kr` registering `identity`.
async fn setup(
    prefix: &str,
    state: fake_colonyos::State,
    identity: &str,
) -> (TestNamespace, Arc<Mutex<fake_colonyos::State>>) {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, prefix).await;
    let (port, server) = fake_colonyos::start(state).await;
    let colony = if identity == "server" { String::new() } else { "\n    colonyName: zyeute".to_string() };
    apply_yaml(
        &ns.name,
        &format!(
            r#"apiVersion: v1
kind: Secret
metadata:
  name: key
stringData:
  prvkey: {OLD_KEY}
---
apiVersion: colony.zyeute.io/v1alpha1
kind: ColonyServer
metadata:
  name: srv
spec:
  managed: false
  endpoint: http://127.0.0.1:{port}
---
apiVersion: colony.zyeute.io/v1alpha1
kind: KeyRotation
metadata:
  name: kr
spec:
  interval: 720h
  secretName: key
  colonyOS:
    colonyServerRef: {{name: srv}}
    identity: {identity}{colony}
"#
        ),
    )
    .await;
    (ns, server)
}

/// Waits until the rotation asked for with `value` is finished: handled in status, status
/// and Secret at the same revision, nothing staged.
async fn finished(
    rotations: &Api<KeyRotation>,
    secrets: &Api<Secret>,
    value: &str,
    deadline: Duration,
) -> (KeyRotation, Secret) {
    wait_for(&format!("the rotation asked for with {value:?} to finish"), deadline, || async {
        let kr = rotations.get("kr").await.map_err(|e| e.to_string())?;
        let s = secrets.get("key").await.map_err(|e| e.to_string())?;
        let st = kr.status.clone().unwrap_or_default();
        if st.handled_rotate_now.as_deref() == Some(value) && st.revision == secret_revision(&s) && !staged(&s) {
            Ok((kr, s))
        } else {
            Err(format!("status {:?} / secret revision {} staged {}", st, secret_revision(&s), staged(&s)))
        }
    })
    .await
}

fn seconds(mut d: Vec<Duration>) -> String {
    d.sort();
    let mean = d.iter().map(Duration::as_secs_f64).sum::<f64>() / d.len().max(1) as f64;
    format!("mean {mean:.2} s, max {:.2} s", d.last().map(Duration::as_secs_f64).unwrap_or(0.0))
}

#[tokio::test]
async fn chaos_sigkill_during_forced_rotations() {
    let state =
        fake_colonyos::State { executor_id: id_from_private_hex(OLD_KEY).unwrap(), ..fake_colonyos::State::new() };
    let (ns, server) = setup("chaos-kr-kill", state, "executor").await;
    let rotations: Api<KeyRotation> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let label = format!("{}-op", ns.name);
    let args = ["--namespace", ns.name.as_str()];
    let mut op = OperatorProcess::start(&label, &args).await;
    wait_for("the KeyRotation's first status", DEADLINE, || async {
        let kr = rotations.get("kr").await.map_err(|e| e.to_string())?;
        kr.status.map(|_| ()).ok_or("no status".to_string())
    })
    .await;

    let n = chaos::count(20, 200);
    let (mut lost, mut doubled, mut missed) = (0usize, 0usize, 0usize);
    let (mut killed_staged, mut killed_between_writes) = (0usize, 0usize);
    let mut revision = 0i64;
    let mut recoveries = Vec::new();
    for i in 1..=n {
        op.wait_ready().await;
        let value = format!("kill-{i}");
        annotate(&rotations, "kr", "colony.zyeute.io/rotate-now", &value).await;
        let delay = rand::rng().random_range(0..300);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        op.kill().await;

        // What the kill interrupted, and whether the server still accepts a key we hold.
        let s = secrets.get("key").await.unwrap();
        let kr = rotations.get("kr").await.unwrap();
        killed_staged += usize::from(staged(&s));
        killed_between_writes += usize::from(secret_revision(&s) > kr.status.as_ref().map_or(0, |st| st.revision));
        let accepted = server.lock().unwrap().executor_id.clone();
        let lost_at_kill = id_of(&s, "") != Some(accepted.clone()) && id_of(&s, "pending.") != Some(accepted);

        op = OperatorProcess::start(&label, &args).await;
        let t = Instant::now();
        let (kr, s) = finished(&rotations, &secrets, &value, DEADLINE).await;
        recoveries.push(t.elapsed());
        let now = kr.status.unwrap().revision;
        doubled += usize::try_from(now - revision - 1).unwrap_or(0);
        missed += usize::from(now == revision);
        revision = now;
        let lost_after = id_of(&s, "") != Some(server.lock().unwrap().executor_id.clone());
        lost += usize::from(lost_at_kill || lost_after);
    }
    let changes = server.lock().unwrap().changes.len();
    // Every rotation registers exactly once: a second change-ID for one request is a double.
    doubled += changes.saturating_sub(revision as usize);
    let stuck = usize::from(staged(&secrets.get("key").await.unwrap()));
    let row = Row {
        fault: "SIGKILL during forced rotation (ColonyOS executor)".into(),
        injected: n,
        lost,
        doubled,
        stuck,
        figures: format!(
            "{n} rotations, {changes} change-ID calls; killed with a key staged {killed_staged}, between Secret and \
             status {killed_between_writes}; finished after restart in {}",
            seconds(recoveries)
        ),
    };
    chaos::record(&row);
    assert_eq!((lost, doubled, stuck, missed), (0, 0, 0, 0), "{row:?}");
    assert_eq!(changes, n, "one change-ID per rotation");
    drop(op);
    ns.cleanup().await;
}

/// The change-ID reply lost for `identity`: the stand-in applies the change and drops the
/// connection. The operator must find out with the new key and promote it.
async fn reply_lost(identity: &str) -> Row {
    let old = id_from_private_hex(OLD_KEY).unwrap();
    let mut state = fake_colonyos::State::new();
    match identity {
        // Unapproved: allowed to change its ID, so the probe must not need approval either.
        "executor" => {
            state.executor_id = old;
            state.executor_approved = false;
        }
        "user" => state.user_id = old,
        "colony" => state.colony_id = old,
        _ => state.server_id = old,
    }
    let (ns, server) = setup(&format!("chaos-kr-lost-{identity}"), state, identity).await;
    let rotations: Api<KeyRotation> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    let accepted = |s: &fake_colonyos::State| match identity {
        "executor" => s.executor_id.clone(),
        "user" => s.user_id.clone(),
        "colony" => s.colony_id.clone(),
        _ => s.server_id.clone(),
    };
    let m = chaos::count(5, 50);
    let (mut lost, mut doubled) = (0, 0);
    let mut revision = 0;
    let mut times = Vec::new();
    for i in 1..=m {
        server.lock().unwrap().drop_replies = 1;
        let value = format!("lost-{i}");
        annotate(&rotations, "kr", "colony.zyeute.io/rotate-now", &value).await;
        let t = Instant::now();
        let (kr, s) = finished(&rotations, &secrets, &value, Duration::from_secs(30)).await;
        times.push(t.elapsed());
        let now = kr.status.unwrap().revision;
        doubled += usize::try_from(now - revision - 1).unwrap_or(0);
        revision = now;
        lost += usize::from(id_of(&s, "") != Some(accepted(&server.lock().unwrap())));
    }
    let (changes, dropped) = {
        let s = server.lock().unwrap();
        (s.changes.len(), s.dropped)
    };
    doubled += changes.saturating_sub(m);
    assert_eq!(dropped, m, "every change-ID reply was dropped");
    drop(op);
    ns.cleanup().await;
    Row {
        fault: format!("change-ID reply lost ({identity})"),
        injected: m,
        lost,
        doubled,
        stuck: 0,
        figures: format!("{m} rotations; promoted in {}", seconds(times)),
    }
}

#[tokio::test]
async fn chaos_change_id_reply_lost_for_each_identity() {
    let mut failures = Vec::new();
    for identity in ["executor", "user", "colony", "server"] {
        let row = reply_lost(identity).await;
        chaos::record(&row);
        if row.lost + row.doubled + row.stuck > 0 {
            failures.push(row);
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[tokio::test]
async fn chaos_stale_secret_apply_mid_rotation() {
    let state =
        fake_colonyos::State { executor_id: id_from_private_hex(OLD_KEY).unwrap(), ..fake_colonyos::State::new() };
    let (ns, server) = setup("chaos-kr-stale", state, "executor").await;
    let rotations: Api<KeyRotation> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    let rotate = |v: &'static str| {
        let rotations = rotations.clone();
        async move { annotate(&rotations, "kr", "colony.zyeute.io/rotate-now", v).await }
    };

    // Two rotations; a copy of the Secret is kept after the first (someone's old manifest).
    rotate("1").await;
    let (_, old_copy) = finished(&rotations, &secrets, "1", DEADLINE).await;
    rotate("2").await;
    let (kr, _) = finished(&rotations, &secrets, "2", DEADLINE).await;
    let current_id = kr.status.unwrap().current_key_id.unwrap();

    // Mid-rotation: the server refuses, the new key stays staged.
    server.lock().unwrap().refuse_changes = true;
    rotate("3").await;
    let backup = wait_for("the third key to be staged", DEADLINE, || async {
        let kr = rotations.get("kr").await.map_err(|e| e.to_string())?;
        let s = secrets.get("key").await.map_err(|e| e.to_string())?;
        match condition(&kr, "Ready") {
            Some((_, reason, _)) if reason == "RegistrationFailed" && staged(&s) => Ok(s),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let staged_key = field(&backup, "pending.prvkey").unwrap();
    let changes_before = server.lock().unwrap().changes.len();

    // The stale apply: the old copy replaces the Secret wholesale.
    let started = Instant::now();
    let mut stale = secrets.get("key").await.unwrap();
    stale.data = old_copy.data.clone();
    stale.metadata.annotations = old_copy.metadata.annotations.clone();
    let stale = secrets.replace("key", &PostParams::default(), &stale).await.unwrap();
    let old_id = id_of(&old_copy, "").unwrap();
    let (_, reason, message) = wait_for("the KeyRotation to stall on the replaced key", DEADLINE, || async {
        let kr = rotations.get("kr").await.map_err(|e| e.to_string())?;
        match (condition(&kr, "Stalled"), condition(&kr, "Ready")) {
            (Some(s), Some(r)) if s.0 == "True" && r.0 == "False" => Ok(s),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let detected = started.elapsed();
    assert_eq!(reason, "KeyReplaced");
    assert!(message.contains(&old_id) && message.contains(&current_id), "names both keys: {message}");
    assert!(message.contains("colony.zyeute.io/accept-key-change="), "says how to accept: {message}");
    for secret_value in [field(&old_copy, "prvkey").unwrap(), staged_key.clone()] {
        assert!(!message.contains(&secret_value), "no key material in the message");
    }
    // The Stall was decided on the stale Secret: it is untouched, no key generated or registered.
    let now = secrets.get("key").await.unwrap();
    let generated = usize::from(now.data != stale.data);
    let registered = server.lock().unwrap().changes.len() - changes_before;
    assert_eq!((generated, registered), (0, 0), "nothing rotated on a stale Secret");

    // Restoring the backup (with its staged key) un-stalls; the staged key, not a fresh one,
    // is registered once the server takes changes again.
    let mut restored = secrets.get("key").await.unwrap();
    restored.data = backup.data.clone();
    restored.metadata.annotations = backup.metadata.annotations.clone();
    secrets.replace("key", &PostParams::default(), &restored).await.unwrap();
    server.lock().unwrap().refuse_changes = false;
    let (kr, done) = finished(&rotations, &secrets, "3", Duration::from_secs(120)).await;
    assert_eq!(field(&done, "prvkey").as_deref(), Some(staged_key.as_str()), "the staged key was finished");
    let lost = usize::from(id_of(&done, "") != Some(server.lock().unwrap().executor_id.clone()));
    let stuck = usize::from(staged(&done));
    let changes = server.lock().unwrap().changes.len();
    let doubled = changes.saturating_sub(3) + usize::try_from(kr.status.unwrap().revision - 3).unwrap_or(0);
    let row = Row {
        fault: "stale apply of the key Secret mid-rotation".into(),
        injected: 1,
        lost,
        doubled,
        stuck,
        figures: format!(
            "Stalled (KeyReplaced) {:.1} s after the apply; keys generated on the stale Secret {generated}; \
             change-ID calls {changes} for 3 rotations",
            detected.as_secs_f64()
        ),
    };
    chaos::record(&row);
    assert_eq!((lost, doubled, stuck), (0, 0, 0), "{row:?}");
    assert!(!op.logs().contains(&staged_key), "no key in the logs");
    drop(op);
    ns.cleanup().await;
}
