//! Deleting a KeyRotation and then the KeyRotation CRD leaves the key Secrets in place (the
//! default `secretDeletionPolicy: Retain`), including one that an earlier operator version
//! owned. Alone in its binary: it deletes a cluster-wide CRD, which it re-installs at the end,
//! also when it fails.
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use colony_e2e::chaos::{self, Row};
use colony_e2e::{DEADLINE, OperatorProcess, TestNamespace, apply_yaml, client, install_crds, wait_for};
use colony_operator::api::KeyRotation;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, ResourceExt};

const CRD: &str = "keyrotations.colony.zyeute.io";

fn owner_of(kr: &KeyRotation) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "colony.zyeute.io/v1alpha1", "kind": "KeyRotation", "name": kr.name_any(),
        "uid": kr.uid().unwrap(), "controller": true, "blockOwnerDeletion": true
    })
}

/// Waits until the garbage collector follows KeyRotation owners: it learns a new kind from
/// discovery (every 30 s), and an owner deleted before that, or whose CRD is gone, leaves its
/// dependents behind. A throwaway KeyRotation and a ConfigMap it owns: the ConfigMap goes
/// with it once the collector watches the kind.
async fn garbage_collector_follows_keyrotations(ns: &TestNamespace) {
    let rotations: Api<KeyRotation> = ns.api();
    let config_maps: Api<ConfigMap> = ns.api();
    wait_for("the garbage collector to follow KeyRotation owners", std::time::Duration::from_secs(180), || async {
        let owner: KeyRotation = serde_json::from_value(serde_json::json!({
            "apiVersion": "colony.zyeute.io/v1alpha1", "kind": "KeyRotation",
            "metadata": { "name": "gc-probe" },
            "spec": { "interval": "720h", "secretName": "gc-probe-key", "suspend": true }
        }))
        .unwrap();
        let owner = rotations.create(&PostParams::default(), &owner).await.map_err(|e| e.to_string())?;
        let dependent: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "gc-probe", "ownerReferences": [owner_of(&owner)] }
        }))
        .unwrap();
        config_maps.create(&PostParams::default(), &dependent).await.map_err(|e| e.to_string())?;
        rotations.delete("gc-probe", &DeleteParams::background()).await.map_err(|e| e.to_string())?;
        for _ in 0..40 {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            if config_maps.get_opt("gc-probe").await.map_err(|e| e.to_string())?.is_none() {
                return Ok(());
            }
        }
        // Not yet: clean up and try again with a new owner.
        let _ = config_maps.delete("gc-probe", &DeleteParams::default()).await;
        Err("the dependent of a deleted KeyRotation is still there".to_string())
    })
    .await;
}

async fn scenario(client: &Client) {
    let ns = TestNamespace::new(client, "chaos-kr-crd").await;
    let rotations: Api<KeyRotation> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let config_maps: Api<ConfigMap> = ns.api();
    garbage_collector_follows_keyrotations(&ns).await;
    // `legacy`: suspended, its Secret written (and owned) by an earlier operator version.
    // `fresh`: its Secret created by this one.
    apply_yaml(
        &ns.name,
        r#"apiVersion: colony.zyeute.io/v1alpha1
kind: KeyRotation
metadata:
  name: legacy
spec:
  interval: 720h
  secretName: legacy-key
  keyType: random
  length: 32
  suspend: true
---
apiVersion: colony.zyeute.io/v1alpha1
kind: KeyRotation
metadata:
  name: fresh
spec:
  interval: 720h
  secretName: fresh-key
"#,
    )
    .await;
    let legacy = rotations.get("legacy").await.unwrap();
    let owned: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "legacy-key",
            "ownerReferences": [owner_of(&legacy)],
            "annotations": { "colony.zyeute.io/rotation-revision": "1" }
        },
        "stringData": { "key": "an-old-operator-wrote-this-key-0" }
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &owned).await.unwrap();
    // A canary the garbage collector must delete with `legacy`: proof that it ran.
    let canary: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "canary", "ownerReferences": [owner_of(&legacy)] }
    }))
    .unwrap();
    config_maps.create(&PostParams::default(), &canary).await.unwrap();

    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    let no_owner = |name: &'static str| {
        let secrets = secrets.clone();
        async move {
            wait_for(&format!("{name} without an ownerReference"), DEADLINE, || async {
                let s = secrets.get_opt(name).await.map_err(|e| e.to_string())?.ok_or("no Secret yet")?;
                if s.owner_references().is_empty() { Ok(s) } else { Err(format!("{:?}", s.owner_references())) }
            })
            .await
        }
    };
    let legacy_key = no_owner("legacy-key").await;
    let fresh_key = no_owner("fresh-key").await;

    let started = Instant::now();
    rotations.delete("fresh", &DeleteParams::default()).await.unwrap();
    wait_for("KeyRotation fresh to be gone", DEADLINE, || async {
        match rotations.get_opt("fresh").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete(CRD, &DeleteParams::default()).await.unwrap();
    wait_for("the KeyRotation CRD to be gone", DEADLINE, || async {
        match crds.get_opt(CRD).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    wait_for("the garbage collector to delete the canary owned by legacy", DEADLINE, || async {
        match config_maps.get_opt("canary").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    let collected = started.elapsed();

    let mut lost = 0;
    for before in [&legacy_key, &fresh_key] {
        match secrets.get_opt(&before.name_any()).await.unwrap() {
            Some(after) if after.data == before.data => {}
            _ => lost += 1,
        }
    }
    let row = Row {
        fault: "KeyRotation deleted, then its CRD".into(),
        injected: 2,
        lost,
        doubled: 0,
        stuck: 0,
        figures: format!(
            "2 key Secrets (one owned by an earlier version); garbage collector done in {:.1} s",
            collected.as_secs_f64()
        ),
    };
    chaos::record(&row);
    assert_eq!(lost, 0, "{row:?}");
    drop(op);
    ns.cleanup().await;
}

#[tokio::test]
async fn chaos_crd_delete_keeps_key_secrets() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let outcome = AssertUnwindSafe(scenario(&client)).catch_unwind().await;
    // The guard: other test binaries need the CRD back, whatever happened.
    install_crds(&client).await.expect("re-install the CRDs");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
