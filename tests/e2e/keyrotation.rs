//! KeyRotation on the local control plane: the first key, a forced rotation keeping the
//! previous key, targets rolled, the annotation handled once, and no key in status or Events.
use std::time::Duration;

use colony_e2e::{DEADLINE, OperatorProcess, TestNamespace, apply_yaml, client, install_crds, kubectl, wait_for};
use colony_operator::api::KeyRotation;
use colony_operator::colonyos::crypto::id_from_private_hex;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};

fn data(s: &Secret, key: &str) -> Option<String> {
    s.data.as_ref()?.get(key).map(|v| String::from_utf8_lossy(&v.0).to_string())
}

const APP: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: 1
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers: [{name: app, image: example.invalid/app:1}]
"#;

#[tokio::test]
async fn rotation_generates_keeps_previous_and_rolls_targets() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-kr").await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    apply_yaml(&ns.name, APP).await;
    apply_yaml(
        &ns.name,
        r#"apiVersion: colony.zyeute.io/v1alpha1
kind: KeyRotation
metadata:
  name: bee-key
spec:
  interval: 720h
  secretName: bee-key
  keyType: secp256k1
  keepPrevious: 1
  targets: [{kind: Deployment, name: app}]
"#,
    )
    .await;
    let secrets: Api<Secret> = ns.api();
    let rotations: Api<KeyRotation> = ns.api();
    let deployments: Api<Deployment> = ns.api();

    // The first key: created at once, its ID the ColonyOS ID of the private key.
    let first = wait_for("the first key", DEADLINE, || async {
        secrets.get_opt("bee-key").await.map_err(|e| e.to_string())?.ok_or("no Secret yet".to_string())
    })
    .await;
    let prv1 = data(&first, "prvkey").unwrap();
    assert_eq!(prv1.len(), 64);
    let id1 = data(&first, "id").unwrap();
    assert_eq!(id_from_private_hex(&prv1).unwrap(), id1);
    let kr = wait_for("status revision 1", DEADLINE, || async {
        let kr = rotations.get("bee-key").await.map_err(|e| e.to_string())?;
        if kr.status.as_ref().map(|s| s.revision) == Some(1) { Ok(kr) } else { Err(format!("{:?}", kr.status)) }
    })
    .await;
    let status = kr.status.unwrap();
    assert_eq!(status.current_key_id.as_deref(), Some(id1.as_str()));
    let next = status.next_rotation_time.unwrap();
    let last = status.last_rotation_time.unwrap();
    assert_eq!((next - last).num_hours(), 720);

    // Forced rotation: a new key, the old one kept as previous.*, the target rolled.
    let annotate = |v: &'static str| {
        let rotations = rotations.clone();
        async move {
            let patch = serde_json::json!({ "metadata": { "annotations": { "colony.zyeute.io/rotate-now": v } } });
            rotations.patch("bee-key", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        }
    };
    annotate("1").await;
    let second = wait_for("the second key", DEADLINE, || async {
        let s = secrets.get("bee-key").await.map_err(|e| e.to_string())?;
        if data(&s, "prvkey").as_deref() != Some(prv1.as_str()) { Ok(s) } else { Err("same key".into()) }
    })
    .await;
    assert_eq!(data(&second, "previous.prvkey").as_deref(), Some(prv1.as_str()));
    assert_eq!(data(&second, "previous.id").as_deref(), Some(id1.as_str()));
    let id2 = data(&second, "id").unwrap();
    let kr = wait_for("status revision 2", DEADLINE, || async {
        let kr = rotations.get("bee-key").await.map_err(|e| e.to_string())?;
        if kr.status.as_ref().map(|s| s.revision) == Some(2) { Ok(kr) } else { Err(format!("{:?}", kr.status)) }
    })
    .await;
    let status = kr.status.unwrap();
    assert_eq!(status.current_key_id.as_deref(), Some(id2.as_str()));
    assert_eq!(status.previous_key_id.as_deref(), Some(id1.as_str()));
    assert_eq!(status.targets.unwrap().rolled, ["Deployment/app"]);
    let d = deployments.get("app").await.unwrap();
    let ann = d.spec.template.metadata.unwrap().annotations.unwrap_or_default();
    assert!(ann.contains_key("colony.zyeute.io/key-rotated-at"), "the target Deployment rolls: {ann:?}");

    // The same annotation value is handled once, however often the operator looks again (a
    // label change makes it look).
    let seen = op.reconciles("keyrotation").await;
    let touch = serde_json::json!({ "metadata": { "labels": { "touched": "yes" } } });
    rotations.patch("bee-key", &PatchParams::default(), &Patch::Merge(&touch)).await.unwrap();
    op.wait_reconciles("keyrotation", seen, 1).await;
    assert_eq!(rotations.get("bee-key").await.unwrap().status.unwrap().revision, 2);

    // No key material outside the Secret.
    let status_json = serde_json::to_string(&rotations.get("bee-key").await.unwrap().status).unwrap();
    let events = kubectl(&["get", "events", "-n", &ns.name, "-o", "json"], None).await.unwrap();
    let events = String::from_utf8_lossy(&events.stdout).to_string();
    let prv2 = data(&second, "prvkey").unwrap();
    for secret in [&prv1, &prv2] {
        assert!(!status_json.contains(secret.as_str()), "no private key in status");
        assert!(!events.contains(secret.as_str()), "no private key in Events");
        assert!(!op.logs().contains(secret.as_str()), "no private key in logs");
    }
    assert!(events.contains("KeyRotated"), "an Event tells what happened");
    drop(op);
    ns.cleanup().await;
}

#[tokio::test]
async fn random_keys_have_the_requested_length_and_bad_schedules_stall() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-kr-random").await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    apply_yaml(
        &ns.name,
        r#"apiVersion: colony.zyeute.io/v1alpha1
kind: KeyRotation
metadata:
  name: hmac
spec:
  schedule: "0 3 1 * *"
  secretName: hmac
  keyType: random
  length: 48
---
apiVersion: colony.zyeute.io/v1alpha1
kind: KeyRotation
metadata:
  name: bad-zone
spec:
  schedule: "0 3 1 * *"
  timeZone: Mars/Olympus_Mons
  secretName: never
"#,
    )
    .await;
    let secrets: Api<Secret> = ns.api();
    let s = wait_for("the random key", DEADLINE, || async {
        secrets.get_opt("hmac").await.map_err(|e| e.to_string())?.ok_or("no Secret yet".to_string())
    })
    .await;
    assert_eq!(s.data.unwrap()["key"].0.len(), 48);
    let rotations: Api<KeyRotation> = ns.api();
    wait_for("the unknown time zone to stall", DEADLINE, || async {
        let kr = rotations.get("bad-zone").await.map_err(|e| e.to_string())?;
        let stalled = kr.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Stalled").cloned());
        match stalled {
            Some(c) if c.status == "True" && c.message.contains("Mars/Olympus_Mons") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(secrets.get_opt("never").await.unwrap().is_none(), "nothing generated for an invalid spec");
    drop(op);
    ns.cleanup().await;
}

/// The stand-in ColonyOS server (signature-checking, authorizing like the real handlers).
#[path = "support/fake_colonyos.rs"]
mod fake_colonyos;

#[tokio::test]
async fn new_executor_keys_are_registered_with_the_colonyos_server_crash_safely() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-kr-colonyos").await;
    let old_key = "32087782a0314486d499315072c5a3018b78c7c9dce3cb299f780741543478ae";
    let (port, server) = fake_colonyos::start(fake_colonyos::State {
        executor_id: id_from_private_hex(old_key).unwrap(),
        ..fake_colonyos::State::new()
    })
    .await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    apply_yaml(
        &ns.name,
        &format!(
            r#"apiVersion: v1
kind: Secret
metadata:
  name: bee-key
stringData:
  prvkey: {old_key}
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
  name: bee-key
spec:
  interval: 720h
  secretName: bee-key
  colonyOS:
    colonyServerRef: {{name: srv}}
    identity: executor
    colonyName: zyeute
"#
        ),
    )
    .await;
    let secrets: Api<Secret> = ns.api();
    let rotations: Api<KeyRotation> = ns.api();
    let annotate = |v: &'static str| {
        let rotations = rotations.clone();
        async move {
            let patch = serde_json::json!({ "metadata": { "annotations": { "colony.zyeute.io/rotate-now": v } } });
            rotations.patch("bee-key", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        }
    };

    // A rotation registers the new ID, signed with the old key, before switching.
    annotate("1").await;
    let rotated = wait_for("the registered key to become current", DEADLINE, || async {
        let s = secrets.get("bee-key").await.map_err(|e| e.to_string())?;
        if data(&s, "prvkey").as_deref() != Some(old_key) { Ok(s) } else { Err("old key still current".into()) }
    })
    .await;
    let new_key = data(&rotated, "prvkey").unwrap();
    let new_id = id_from_private_hex(&new_key).unwrap();
    assert_eq!(server.lock().unwrap().executor_id, new_id, "the server knows the new ID");
    assert_eq!(server.lock().unwrap().changes, std::slice::from_ref(&new_id));
    assert_eq!(data(&rotated, "previous.prvkey").as_deref(), Some(old_key));
    assert!(rotated.data.as_ref().unwrap().keys().all(|k| !k.starts_with("pending.")), "nothing left staged");

    // The server refuses: the new key stays staged, the current one keeps working.
    server.lock().unwrap().refuse_changes = true;
    annotate("2").await;
    let kr = wait_for("the failed registration to be reported", DEADLINE, || async {
        let kr = rotations.get("bee-key").await.map_err(|e| e.to_string())?;
        let ready = kr.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned());
        match ready {
            Some(c) if c.reason == "RegistrationFailed" => Ok(kr),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(kr.status.unwrap().revision, 1, "no new revision while unregistered");
    let staged = secrets.get("bee-key").await.unwrap();
    assert_eq!(data(&staged, "prvkey").as_deref(), Some(new_key.as_str()), "the current key is untouched");
    let pending = data(&staged, "pending.prvkey").expect("the new key is staged");

    // The server recovers: the staged key (not a fresh one) is registered and promoted.
    server.lock().unwrap().refuse_changes = false;
    let done = wait_for("the staged key to be registered and promoted", Duration::from_secs(120), || async {
        let s = secrets.get("bee-key").await.map_err(|e| e.to_string())?;
        if data(&s, "prvkey").as_deref() == Some(pending.as_str()) { Ok(s) } else { Err("not yet".into()) }
    })
    .await;
    assert_eq!(server.lock().unwrap().executor_id, id_from_private_hex(&pending).unwrap());
    assert_eq!(data(&done, "previous.prvkey").as_deref(), Some(new_key.as_str()));
    assert!(done.data.as_ref().unwrap().keys().all(|k| !k.starts_with("pending.")));
    assert!(!op.logs().contains(&pending), "no key in the logs");
    drop(op);
    ns.cleanup().await;
}

#[tokio::test]
async fn key_secrets_follow_the_deletion_policy_and_a_lost_key_stalls() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-kr-policy").await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    apply_yaml(
        &ns.name,
        r#"apiVersion: colony.zyeute.io/v1alpha1
kind: KeyRotation
metadata:
  name: kept
spec:
  interval: 720h
  secretName: kept
  keyType: random
  length: 32
---
apiVersion: colony.zyeute.io/v1alpha1
kind: KeyRotation
metadata:
  name: owned
spec:
  interval: 720h
  secretName: owned
  keyType: ed25519
  secretDeletionPolicy: Delete
"#,
    )
    .await;
    let secrets: Api<Secret> = ns.api();
    let rotations: Api<KeyRotation> = ns.api();
    let revision_1 = |name: &'static str| {
        let rotations = rotations.clone();
        async move {
            wait_for(&format!("{name} at revision 1"), DEADLINE, || async {
                let kr = rotations.get(name).await.map_err(|e| e.to_string())?;
                if kr.status.as_ref().map(|s| s.revision) == Some(1) { Ok(kr) } else { Err(format!("{:?}", kr.status)) }
            })
            .await
        }
    };
    let kept = revision_1("kept").await;
    let owned = revision_1("owned").await;
    let refs = |name: &'static str| {
        let secrets = secrets.clone();
        async move { secrets.get(name).await.unwrap().metadata.owner_references.unwrap_or_default() }
    };
    assert!(refs("kept").await.is_empty(), "Retain: no ownerReference");
    let owners = refs("owned").await;
    assert_eq!(owners.len(), 1);
    assert_eq!(Some(owners[0].uid.clone()), owned.metadata.uid, "Delete: owned by its KeyRotation");

    // Steady state is silent, also with the key Secrets watched: reconciles (proven by the
    // counter) write neither the KeyRotations nor their Secrets.
    let reconciles = || async {
        let (_, body) = op.get("/metrics").await.unwrap_or_default();
        body.lines()
            .find_map(|l| l.strip_prefix(r#"colony_operator_reconciliations_total{controller="keyrotation"} "#))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let quiet_from = std::time::SystemTime::now();
    let before = reconciles().await;
    for name in ["kept", "owned"] {
        let patch = serde_json::json!({ "metadata": { "annotations": { "example.com/poke": "1" } } });
        rotations.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }
    wait_for("two more reconciles", DEADLINE, || async {
        let now = reconciles().await;
        if now >= before + 2 { Ok(()) } else { Err(format!("{before} -> {now}")) }
    })
    .await;
    let writes: Vec<String> = colony_e2e::operator_writes(&ns.name, quiet_from)
        .into_iter()
        .filter(|w| ["keyrotations/", "secrets/"].iter().any(|r| w.contains(r)))
        .collect();
    assert!(writes.is_empty(), "writes in steady state: {writes:?}");

    // The key Secret deleted behind the operator's back: Stalled, nothing generated.
    let lost_id = kept.status.unwrap().current_key_id.unwrap();
    secrets.delete("kept", &Default::default()).await.unwrap();
    let patch = serde_json::json!({ "metadata": { "annotations": { "colony.zyeute.io/rotate-now": "after-loss" } } });
    rotations.patch("kept", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let message = wait_for("kept to stall on the missing key", DEADLINE, || async {
        let kr = rotations.get("kept").await.map_err(|e| e.to_string())?;
        let c = kr.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Stalled").cloned());
        match c {
            Some(c) if c.status == "True" && c.reason == "KeyMissing" => Ok(c.message),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(message.contains(&lost_id) && message.contains("accept-key-change"), "{message}");
    assert!(secrets.get_opt("kept").await.unwrap().is_none(), "no fresh key without acknowledgement");

    // Acknowledged with the lost key's ID: a new key, the next revision.
    let patch = serde_json::json!({ "metadata": { "annotations": { "colony.zyeute.io/accept-key-change": lost_id } } });
    rotations.patch("kept", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let kr = wait_for("kept to generate a new key once accepted", DEADLINE, || async {
        let kr = rotations.get("kept").await.map_err(|e| e.to_string())?;
        let st = kr.status.clone().unwrap_or_default();
        let stalled = st.conditions.iter().any(|c| c.type_ == "Stalled");
        if st.revision == 2 && !stalled { Ok(kr) } else { Err(format!("{st:?}")) }
    })
    .await;
    let fresh = secrets.get("kept").await.unwrap();
    assert_eq!(data(&fresh, "id"), kr.status.unwrap().current_key_id);

    // Deleting both KeyRotations: the owned Secret goes with its owner, the kept one stays.
    rotations.delete("kept", &Default::default()).await.unwrap();
    rotations.delete("owned", &Default::default()).await.unwrap();
    wait_for("the owned Secret to be garbage-collected", DEADLINE, || async {
        match secrets.get_opt("owned").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    assert_eq!(secrets.get("kept").await.unwrap().data, fresh.data, "the retained key survives its KeyRotation");
    drop(op);
    ns.cleanup().await;
}

/// A rotation held for its maintenance window runs as soon as the window opens: the window's
/// change wakes the KeyRotation (a held rotation otherwise looks again only hourly).
#[tokio::test]
async fn a_rotation_held_for_its_window_runs_when_the_window_opens() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-kr-window").await;
    let _op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    let at = |minutes: i64| (chrono::Utc::now() + chrono::Duration::minutes(minutes)).to_rfc3339();
    apply_yaml(
        &ns.name,
        &format!(
            r#"apiVersion: colony.zyeute.io/v1alpha1
kind: MaintenanceWindow
metadata:
  name: later
spec:
  schedule: {{start: "{start}", end: "{end}"}}
  colonyServerRef: {{name: srv}}
---
apiVersion: colony.zyeute.io/v1alpha1
kind: KeyRotation
metadata:
  name: held
spec:
  interval: 720h
  secretName: held-key
  keyType: random
  length: 32
  maintenanceWindowRef: {{name: later}}
"#,
            start = at(120),
            end = at(180)
        ),
    )
    .await;
    let rotations: Api<KeyRotation> = ns.api();
    let revision = || async { rotations.get("held").await.ok().and_then(|k| k.status).map(|s| s.revision) };
    wait_for("the first key (not held by the window)", DEADLINE, || async {
        match revision().await {
            Some(1) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Due now, but the window is closed: held.
    let patch = serde_json::json!({ "metadata": { "annotations": { "colony.zyeute.io/rotate-now": "1" } } });
    rotations.patch("held", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_for("the rotation held for the window", DEADLINE, || async {
        let kr = rotations.get("held").await.map_err(|e| e.to_string())?;
        let ready = kr.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned());
        match ready {
            Some(c) if c.reason == "WaitingForWindow" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(revision().await, Some(1), "nothing rotated while the window is closed");

    // The window opens now: the rotation runs.
    let windows: Api<colony_operator::api::MaintenanceWindow> = ns.api();
    let open = serde_json::json!({ "spec": { "schedule": { "start": at(-1), "end": at(60) } } });
    windows.patch("later", &PatchParams::default(), &Patch::Merge(&open)).await.unwrap();
    wait_for("the rotation once the window opened", DEADLINE, || async {
        match revision().await {
            Some(2) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    ns.cleanup().await;
}
