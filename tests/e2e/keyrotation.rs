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

    // The same annotation value is handled once.
    tokio::time::sleep(Duration::from_secs(3)).await;
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
