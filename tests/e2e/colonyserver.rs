//! ColonyServer on the local control plane, against a controllable test endpoint: health
//! verdicts, the fallback ConfigMap flipping on and off, the flip budget, the override
//! annotation, a managed server's workload, and silence in steady state.
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use colony_e2e::wait_server_condition as wait_condition;
use colony_e2e::{
    DEADLINE, OperatorProcess, TestEndpoint, TestNamespace, apply_yaml, client, install_crds, operator_writes, wait_for,
};
use colony_operator::api::ColonyServer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::Api;
use kube::api::{Patch, PatchParams};

fn unmanaged(name: &str, endpoint: &TestEndpoint, fallback: &str, health: &str) -> String {
    colony_e2e::fixtures::unmanaged_server(name, &endpoint.url(), health, &format!("  fallback: {fallback}\n"))
}

async fn use_colony_os(cms: &Api<ConfigMap>, name: &str) -> Option<String> {
    colony_e2e::use_colony_os(cms, &format!("{name}-fallback")).await
}

fn condition(cs: &ColonyServer, type_: &str) -> Option<String> {
    cs.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_).map(|c| c.status.clone())
}

#[tokio::test]
async fn fallback_follows_health_with_thresholds() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-cs-fallback").await;
    let endpoint = TestEndpoint::start().await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    apply_yaml(
        &ns.name,
        &unmanaged(
            "srv",
            &endpoint,
            "{recoverAfter: 4s, minHold: 1s, maxFlipsPerHour: 4}",
            "{interval: 1s, timeout: 1s, failureThreshold: 3, successThreshold: 1}",
        ),
    )
    .await;
    let servers: Api<ColonyServer> = ns.api();
    let cms: Api<ConfigMap> = ns.api();

    wait_condition(&servers, "srv", "Ready", "True").await;
    wait_condition(&servers, "srv", "Healthy", "True").await;
    assert_eq!(use_colony_os(&cms, "srv").await.as_deref(), Some("true"), "healthy: Colony OS in use");

    // Failing: the fallback turns on at the failureThreshold-th failed probe, not before.
    let failing_at = std::time::Instant::now();
    let writes_from = SystemTime::now();
    endpoint.set_failing(true);
    let failures_at_flip = wait_for("fallback on", DEADLINE, || async {
        let before = endpoint.failures();
        let value = use_colony_os(&cms, "srv").await;
        if value.as_deref() == Some("false") {
            Ok(endpoint.failures())
        } else {
            assert!(before < 3 || value.as_deref() == Some("true"), "unexpected value {value:?}");
            Err(format!("USE_COLONY_OS={value:?} after {before} failed probes"))
        }
    })
    .await;
    assert!(failures_at_flip >= 3, "flipped after only {failures_at_flip} failed probes");
    println!("first failed probe -> ConfigMap flip: {:?}", failing_at.elapsed());
    let cs = wait_condition(&servers, "srv", "FallbackActive", "True").await;
    assert_eq!(condition(&cs, "Healthy").as_deref(), Some("False"));
    assert_eq!(condition(&cs, "Ready").as_deref(), Some("False"));
    let status = cs.status.unwrap();
    assert!(status.health.unwrap().down_since.is_some());
    assert_eq!(status.fallback.as_ref().unwrap().reason.as_deref(), Some("HealthCheckFailed"));
    // The flip is announced (the Event is published off the reconcile, after the write).
    colony_e2e::wait_event(&ns, "srv", "FallbackEnabled", "USE_COLONY_OS=false (HealthCheckFailed").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("operator writes for the flip: {:?}", operator_writes(&ns.name, writes_from));

    // Recovered: off only after recoverAfter (4s) of continuous health.
    let successes_before = endpoint.successes();
    endpoint.set_failing(false);
    let successes_at_flip = wait_for("fallback off again", DEADLINE, || async {
        match use_colony_os(&cms, "srv").await.as_deref() {
            Some("true") => Ok(endpoint.successes() - successes_before),
            other => Err(format!("USE_COLONY_OS={other:?}")),
        }
    })
    .await;
    assert!(
        successes_at_flip >= 4,
        "fallback turned off after only {successes_at_flip} healthy probes (recoverAfter 4s at 1s interval)"
    );
    let cs = wait_condition(&servers, "srv", "FallbackActive", "False").await;
    assert_eq!(cs.status.unwrap().fallback.unwrap().flips_last_hour, 2);
    colony_e2e::wait_event(&ns, "srv", "FallbackDisabled", "USE_COLONY_OS=true (Recovered").await;
    drop(op);
    ns.cleanup().await;
}

#[tokio::test]
async fn flapping_endpoint_exhausts_the_flip_budget_then_stalls() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-cs-flap").await;
    let endpoint = TestEndpoint::start().await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    apply_yaml(
        &ns.name,
        &unmanaged(
            "flappy",
            &endpoint,
            "{recoverAfter: 2s, minHold: 1s, maxFlipsPerHour: 3}",
            "{interval: 1s, timeout: 1s, failureThreshold: 1, successThreshold: 1}",
        ),
    )
    .await;
    let servers: Api<ColonyServer> = ns.api();
    let cms: Api<ConfigMap> = ns.api();
    wait_condition(&servers, "flappy", "Healthy", "True").await;

    // Flap: down 3s, up 5s, five times — far more chances to flip than the budget allows.
    for _ in 0..5 {
        endpoint.set_failing(true);
        tokio::time::sleep(Duration::from_secs(3)).await;
        endpoint.set_failing(false);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let cs = servers.get("flappy").await.unwrap();
        let flips = cs.status.and_then(|s| s.fallback).map(|f| f.flips_last_hour).unwrap_or(0);
        assert!(flips <= 3, "at most maxFlipsPerHour flips, saw {flips}");
    }
    let cs = wait_condition(&servers, "flappy", "Stalled", "True").await;
    let fallback = cs.status.clone().unwrap().fallback.unwrap();
    assert!(fallback.flips_last_hour <= 3);
    assert!(fallback.active, "out of budget, the fallback stays on for a human");
    assert_eq!(condition(&cs, "Healthy").as_deref(), Some("True"), "even though the server is healthy now");
    assert_eq!(use_colony_os(&cms, "flappy").await.as_deref(), Some("false"));
    drop(op);
    ns.cleanup().await;
}

#[tokio::test]
async fn override_annotation_wins() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-cs-override").await;
    let endpoint = TestEndpoint::start().await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    apply_yaml(
        &ns.name,
        &unmanaged(
            "ovr",
            &endpoint,
            "{recoverAfter: 1s, minHold: 1s}",
            "{interval: 1s, timeout: 1s, failureThreshold: 2, successThreshold: 1}",
        ),
    )
    .await;
    let servers: Api<ColonyServer> = ns.api();
    let cms: Api<ConfigMap> = ns.api();
    wait_condition(&servers, "ovr", "Healthy", "True").await;
    let annotate = |value: &'static str| {
        let servers = servers.clone();
        async move {
            let patch = serde_json::json!({ "metadata": { "annotations": { "colony.zyeute.io/fallback": value } } });
            servers.patch("ovr", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        }
    };
    // Healthy, but a human forces the fallback on.
    annotate("on").await;
    wait_for("override on", DEADLINE, || async {
        match use_colony_os(&cms, "ovr").await.as_deref() {
            Some("false") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let cs = wait_condition(&servers, "ovr", "FallbackActive", "True").await;
    assert_eq!(cs.status.unwrap().fallback.unwrap().reason.as_deref(), Some("Override"));
    // Failing, but a human forces Colony OS on.
    endpoint.set_failing(true);
    annotate("off").await;
    wait_condition(&servers, "ovr", "Healthy", "False").await;
    wait_for("override off holds while failing", DEADLINE, || async {
        match use_colony_os(&cms, "ovr").await.as_deref() {
            Some("true") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Three more failed probes, each of which would turn the fallback on without the override.
    let failed = endpoint.failures();
    wait_for("three more failed probes", DEADLINE, || async {
        if endpoint.failures() >= failed + 3 { Ok(()) } else { Err(format!("{}", endpoint.failures())) }
    })
    .await;
    assert_eq!(use_colony_os(&cms, "ovr").await.as_deref(), Some("true"), "the override keeps winning");
    // Back to auto: the failing health decides.
    annotate("auto").await;
    wait_for("auto turns the fallback on", DEADLINE, || async {
        match use_colony_os(&cms, "ovr").await.as_deref() {
            Some("false") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    drop(op);
    ns.cleanup().await;
}

fn managed(name: &str, endpoint: &TestEndpoint) -> String {
    let health = "{interval: 1s, timeout: 1s, failureThreshold: 3, successThreshold: 1}";
    colony_e2e::fixtures::managed_server(name, &endpoint.url(), "colonyos/colonies:v1.9.12", health, "")
}

#[tokio::test]
async fn managed_server_runs_and_steady_state_is_silent() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-cs-steady").await;
    let endpoint = TestEndpoint::start().await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    apply_yaml(&ns.name, &managed("prod", &endpoint)).await;
    let servers: Api<ColonyServer> = ns.api();
    let deployments: Api<Deployment> = ns.api();
    let services: Api<Service> = ns.api();
    let cms: Api<ConfigMap> = ns.api();
    let cs = wait_condition(&servers, "prod", "Ready", "True").await;
    assert_eq!(cs.status.as_ref().unwrap().rollout.current_image.as_deref(), Some("colonyos/colonies:v1.9.12"));

    let d = deployments.get("prod").await.unwrap();
    let pod = d.spec.template.spec.clone().unwrap();
    let env: BTreeMap<_, _> = pod.containers[0].env.clone().unwrap().into_iter().map(|e| (e.name.clone(), e)).collect();
    assert!(env["COLONIES_DB_PASSWORD"].value_from.is_some(), "the password comes from the Secret");
    assert_eq!(
        env["COLONIES_SERVER_ID"].value.as_ref().map(String::len),
        Some(64),
        "the server ID is derived from the key"
    );
    assert!(services.get_opt("prod").await.unwrap().is_some());
    let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("ColonyServer", "prod"));

    // Let everything settle, then watch 30 s of healthy probing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let versions = || async {
        (
            servers.get("prod").await.unwrap().metadata.resource_version,
            deployments.get("prod").await.unwrap().metadata.resource_version,
            cms.get("prod-fallback").await.unwrap().metadata.resource_version,
            services.get("prod").await.unwrap().metadata.resource_version,
        )
    };
    let before = versions().await;
    let probes_before = endpoint.successes();
    let since = SystemTime::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = versions().await;
    let probes = endpoint.successes() - probes_before;
    assert!(probes >= 10, "the server was probed during the window ({probes} probes)");
    assert_eq!(before, after, "no object changed in steady state");
    let writes = operator_writes(&ns.name, since);
    assert!(writes.is_empty(), "no API writes in steady state, saw {writes:?}");
    println!("steady state: {probes} probes in 30s, {} API writes", writes.len());

    // A rotated database password rolls the server (new pod-template hash).
    let hash = |d: &Deployment| {
        d.spec.template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()["colony.zyeute.io/config-hash"].clone()
    };
    let old = hash(&deployments.get("prod").await.unwrap());
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = ns.api();
    let patch = serde_json::json!({ "stringData": { "password": "rotated-password" } });
    secrets.patch("prod-db", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_for("the Deployment to roll after the Secret changed", DEADLINE, || async {
        let h = hash(&deployments.get("prod").await.map_err(|e| e.to_string())?);
        if h != old { Ok(()) } else { Err("same hash".into()) }
    })
    .await;
    drop(op);
    ns.cleanup().await;
}

#[tokio::test]
async fn bad_image_rolls_back_to_the_last_known_good_one() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-cs-rollback").await;
    let endpoint = TestEndpoint::start().await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    let yaml = managed("rb", &endpoint).replace(
        "  health: {interval: 1s, timeout: 1s, failureThreshold: 3, successThreshold: 1}",
        "  health: {interval: 1s, timeout: 1s, failureThreshold: 2, successThreshold: 1}\n  rollback: {stableAfter: 8s, progressDeadline: 5m}",
    );
    apply_yaml(&ns.name, &yaml).await;
    let servers: Api<ColonyServer> = ns.api();
    let deployments: Api<Deployment> = ns.api();
    let image_of = |d: &Deployment| d.spec.template.spec.as_ref().unwrap().containers[0].image.clone().unwrap();
    let set_image = |image: &'static str| {
        let servers = servers.clone();
        async move {
            let patch = serde_json::json!({ "spec": { "image": image } });
            servers.patch("rb", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        }
    };
    let wait_image = |want: &'static str| {
        let deployments = deployments.clone();
        async move {
            wait_for(&format!("Deployment image {want}"), DEADLINE, || async {
                let image = image_of(&deployments.get("rb").await.map_err(|e| e.to_string())?);
                if image == want { Ok(()) } else { Err(image) }
            })
            .await
        }
    };

    wait_for("v1 to become the last known good image", DEADLINE, || async {
        let cs = servers.get("rb").await.map_err(|e| e.to_string())?;
        let good = cs.status.and_then(|s| s.rollout.last_known_good_image);
        if good.as_deref() == Some("colonyos/colonies:v1.9.12") { Ok(()) } else { Err(format!("{good:?}")) }
    })
    .await;

    // A new image whose server fails its health checks after the deploy.
    set_image("colonyos/colonies:v9.9.9-bad").await;
    wait_image("colonyos/colonies:v9.9.9-bad").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    endpoint.set_failing(true);
    wait_image("colonyos/colonies:v1.9.12").await;
    let cs = wait_condition(&servers, "rb", "RolledBack", "True").await;
    let status = cs.status.clone().unwrap();
    assert_eq!(status.rollout.failed_images, ["colonyos/colonies:v9.9.9-bad"]);
    assert_eq!(status.rollout.current_image.as_deref(), Some("colonyos/colonies:v1.9.12"));
    let message = &status.conditions.iter().find(|c| c.type_ == "RolledBack").unwrap().message;
    assert!(message.contains("v9.9.9-bad"), "the reason names the failed image: {message}");
    assert_eq!(cs.spec.image.as_deref(), Some("colonyos/colonies:v9.9.9-bad"), "the operator never writes spec");

    // Healthy again, spec unchanged: the failed image is not retried.
    endpoint.set_failing(false);
    wait_condition(&servers, "rb", "Healthy", "True").await;
    let probed = endpoint.successes();
    wait_for("three more healthy probes", DEADLINE, || async {
        if endpoint.successes() >= probed + 3 { Ok(()) } else { Err(format!("{}", endpoint.successes())) }
    })
    .await;
    assert_eq!(image_of(&deployments.get("rb").await.unwrap()), "colonyos/colonies:v1.9.12");

    // A new spec image is tried.
    set_image("colonyos/colonies:v1.9.13").await;
    wait_image("colonyos/colonies:v1.9.13").await;
    wait_condition(&servers, "rb", "RolledBack", "False").await;
    drop(op);
    ns.cleanup().await;
}

#[tokio::test]
async fn flips_are_notified_and_the_webhook_url_stays_secret() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-cs-notify").await;
    let endpoint = TestEndpoint::start().await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    let hook_url = format!("{}/hook?token=very-secret-token", endpoint.url());
    apply_yaml(
        &ns.name,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: hook\nstringData:\n  url: \"{hook_url}\"\n---\n{}",
            unmanaged(
                "notified",
                &endpoint,
                "{recoverAfter: 2s, minHold: 1s, notify: {urlSecretRef: {name: hook, key: url}, retries: 2, backoff: 1s}}",
                "{interval: 1s, timeout: 1s, failureThreshold: 2, successThreshold: 1}",
            )
        ),
    )
    .await;
    let servers: Api<ColonyServer> = ns.api();
    wait_condition(&servers, "notified", "Healthy", "True").await;
    endpoint.set_failing(true);
    wait_condition(&servers, "notified", "FallbackActive", "True").await;
    endpoint.set_failing(false);
    wait_condition(&servers, "notified", "FallbackActive", "False").await;
    let hooks = wait_for("two notifications", DEADLINE, || async {
        let h = endpoint.hooks();
        if h.len() >= 2 { Ok(h) } else { Err(format!("{h:?}")) }
    })
    .await;
    // Proof that the operator looked again after the second flip (more probes, and a
    // reconcile woken by a label change) before asserting that nothing more was sent.
    let (probes, seen) = (endpoint.successes(), op.reconciles("colonyserver").await);
    let label = serde_json::json!({"metadata": {"labels": {"example.com/touched": "after-recovery"}}});
    servers.patch("notified", &PatchParams::default(), &Patch::Merge(&label)).await.unwrap();
    op.wait_reconciles("colonyserver", seen, 1).await;
    wait_for("two more probes", DEADLINE, || async {
        let now = endpoint.successes();
        if now >= probes + 2 { Ok(()) } else { Err(format!("{now} probes")) }
    })
    .await;
    assert_eq!(endpoint.hooks().len(), 2, "one notification per flip: {:?}", endpoint.hooks());
    assert_eq!(hooks[0]["server"], "notified");
    assert_eq!(hooks[0]["state"], "on");
    assert_eq!(hooks[0]["reason"], "HealthCheckFailed");
    assert!(hooks[0]["time"].as_str().is_some_and(|t| t.contains('T')));
    assert_eq!(hooks[1]["state"], "off");
    let logs = op.logs();
    assert!(!logs.contains("very-secret-token"), "the webhook URL never reaches the logs");
    let events = colony_e2e::kubectl(&["get", "events", "-n", &ns.name, "-o", "json"], None).await.unwrap();
    assert!(!String::from_utf8_lossy(&events.stdout).contains("very-secret-token"), "nor the Events");
    let status = serde_json::to_string(&servers.get("notified").await.unwrap().status).unwrap();
    assert!(!status.contains("very-secret-token"), "nor the status");
    drop(op);
    ns.cleanup().await;
}

fn queue(waiting: u64, successful: u64, failed: u64) -> String {
    format!(
        "# TYPE colonies_server_processes_waiting gauge\ncolonies_server_processes_waiting {waiting}\n\
         colonies_server_processes_running 1\ncolonies_server_processes_successful {successful}\n\
         colonies_server_processes_failed {failed}\n"
    )
}

#[tokio::test]
async fn slo_breach_turns_the_fallback_on_and_recovery_off() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-cs-slo").await;
    let endpoint = TestEndpoint::start().await;
    endpoint.set_metrics(&queue(2, 100, 0));
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    let yaml = unmanaged(
        "slo",
        &endpoint,
        "{recoverAfter: 2s, minHold: 1s}",
        "{interval: 1s, timeout: 1s, failureThreshold: 3, successThreshold: 1}",
    ) + &format!("  slo: {{metricsURL: \"{}/metrics\", maxQueueDepth: 10, for: 2s}}\n", endpoint.url());
    apply_yaml(&ns.name, &yaml).await;
    let servers: Api<ColonyServer> = ns.api();
    let cms: Api<ConfigMap> = ns.api();
    wait_condition(&servers, "slo", "Healthy", "True").await;
    let probed = endpoint.successes();
    wait_for("three more probes within the SLOs", DEADLINE, || async {
        if endpoint.successes() >= probed + 3 { Ok(()) } else { Err(format!("{}", endpoint.successes())) }
    })
    .await;
    assert_eq!(use_colony_os(&cms, "slo").await.as_deref(), Some("true"), "within the SLOs");

    // The queue backs up: a breach once it lasts `for`, although /health stays 200.
    endpoint.set_metrics(&queue(50, 100, 0));
    let cs = wait_condition(&servers, "slo", "FallbackActive", "True").await;
    let status = cs.status.unwrap();
    assert_eq!(status.fallback.unwrap().reason.as_deref(), Some("SLOBreached"));
    let slo = status.slo.expect("the SLO sample is reported");
    assert!(slo.breached);
    assert_eq!(slo.queue_depth, Some(50));
    assert_eq!(use_colony_os(&cms, "slo").await.as_deref(), Some("false"));

    // Drained: the breach ends and the fallback turns off after recoverAfter.
    endpoint.set_metrics(&queue(1, 150, 0));
    wait_condition(&servers, "slo", "FallbackActive", "False").await;
    assert_eq!(use_colony_os(&cms, "slo").await.as_deref(), Some("true"));
    drop(op);
    ns.cleanup().await;
}

#[tokio::test]
async fn deleting_a_server_stops_its_probes_and_removes_what_it_owned() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-cs-delete").await;
    let endpoint = TestEndpoint::start().await;
    // A second server, probed all along: its probes are the proof that probing went on while
    // the deleted one's stayed silent.
    let kept_endpoint = TestEndpoint::start().await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    let health = "{interval: 1s, timeout: 1s, successThreshold: 1}";
    apply_yaml(&ns.name, &unmanaged("gone", &endpoint, "{}", health)).await;
    apply_yaml(&ns.name, &unmanaged("kept", &kept_endpoint, "{}", health)).await;
    let servers: Api<ColonyServer> = ns.api();
    let cms: Api<ConfigMap> = ns.api();
    wait_condition(&servers, "gone", "Healthy", "True").await;
    wait_condition(&servers, "kept", "Healthy", "True").await;
    let kept_probes = |more: u64| {
        let since = kept_endpoint.successes();
        let kept = &kept_endpoint;
        async move {
            wait_for(&format!("{more} more probes of the kept server"), DEADLINE, || async {
                let now = kept.successes();
                if now >= since + more { Ok(()) } else { Err(format!("{now}")) }
            })
            .await
        }
    };
    servers.delete("gone", &Default::default()).await.unwrap();
    wait_for("the fallback ConfigMap to be garbage-collected", DEADLINE, || async {
        match cms.get_opt("gone-fallback").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".into()),
        }
    })
    .await;
    // A probe in flight at the deletion has long ended after two more rounds of the other.
    kept_probes(2).await;
    let probes = endpoint.successes();
    kept_probes(4).await;
    assert_eq!(endpoint.successes(), probes, "no probes after the server was deleted");
    drop(op);
    ns.cleanup().await;
}

/// A managed server whose Deployment the API server refuses (a quota of no Deployments; a
/// policy webhook refuses the same way): the fallback still follows health, and status says
/// why the workload is missing. Once the quota goes, the Deployment is created.
#[tokio::test]
async fn a_refused_deployment_does_not_stop_the_fallback() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-cs-quota").await;
    let endpoint = TestEndpoint::start().await;
    endpoint.set_failing(true);
    apply_yaml(
        &ns.name,
        "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: no-deployments\nspec:\n  hard: {count/deployments.apps: \"0\"}\n",
    )
    .await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    let health = "{interval: 1s, timeout: 1s, failureThreshold: 2, successThreshold: 1}";
    let fallback = "  fallback: {recoverAfter: 1s, minHold: 1s}\n";
    let yaml =
        colony_e2e::fixtures::managed_server("quota", &endpoint.url(), "colonyos/colonies:v1.9.12", health, fallback);
    apply_yaml(&ns.name, &yaml).await;
    let servers: Api<ColonyServer> = ns.api();
    let deployments: Api<Deployment> = ns.api();
    let cms: Api<ConfigMap> = ns.api();

    colony_e2e::wait_use_colony_os(&cms, "quota-fallback", "false", "the fallback on for a failing server").await;
    let cs = wait_condition(&servers, "quota", "Ready", "False").await;
    let ready = cs.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "Ready").unwrap().clone();
    assert_eq!(ready.reason, "WorkloadFailed", "{ready:?}");
    assert!(ready.message.contains("exceeded quota") && ready.message.contains("Deployment"), "{ready:?}");
    assert!(!ready.message.contains("not-a-real-password"), "{ready:?}");
    println!("Ready=False: {}", ready.message);
    assert!(deployments.get_opt("quota").await.unwrap().is_none());

    // The quota goes and the server comes up: the Deployment is created and the fallback
    // turns off.
    let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> = ns.api();
    quotas.delete("no-deployments", &Default::default()).await.unwrap();
    endpoint.set_failing(false);
    wait_for("the Deployment once the quota is gone", DEADLINE, || async {
        deployments.get_opt("quota").await.map_err(|e| e.to_string())?.ok_or_else(|| "none yet".to_string())
    })
    .await;
    colony_e2e::wait_use_colony_os(&cms, "quota-fallback", "true", "the fallback off for a healthy server").await;
    wait_condition(&servers, "quota", "Ready", "True").await;
    drop(op);
    ns.cleanup().await;
}

/// The API server refuses the fallback ConfigMap (a policy; a quota refuses its creation the
/// same way): status still reports health, keeps the fallback state the ConfigMap shows (no
/// flip recorded that did not happen) and says why (Stalled, FallbackWriteFailed). Once the
/// policy goes, the decision is written. Before, the refusal ended the reconcile before its
/// status write: nothing said why the fallback did not turn on.
#[tokio::test]
async fn a_refused_fallback_config_map_is_reported_then_written_once_allowed() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-cs-cm-refused").await;
    let endpoint = TestEndpoint::start().await;
    endpoint.set_failing(true);
    let name = ns.name.clone();
    let policy = colony_e2e::policy::Admission::deny(
        &name,
        ("", "configmaps", &["CREATE", "UPDATE"]),
        "!object.metadata.name.endsWith('-fallback')",
        "no fallback ConfigMaps in this namespace",
        || async {
            let args = ["create", "configmap", "x-fallback", "-n", &name];
            colony_e2e::policy::dry_run_refused(&args, None, "no fallback").await
        },
    )
    .await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    let health = "{interval: 1s, timeout: 1s, failureThreshold: 1, successThreshold: 1}";
    apply_yaml(&ns.name, &unmanaged("refused", &endpoint, "{recoverAfter: 1s, minHold: 1s}", health)).await;
    let servers: Api<ColonyServer> = ns.api();
    let cms: Api<ConfigMap> = ns.api();

    let cs = wait_condition(&servers, "refused", "Stalled", "True").await;
    let conditions = &cs.status.as_ref().unwrap().conditions;
    let stalled = conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(stalled.reason, "FallbackWriteFailed", "{stalled:?}");
    assert!(stalled.message.contains("no fallback ConfigMaps in this namespace"), "{stalled:?}");
    assert_eq!(condition(&cs, "Healthy").as_deref(), Some("False"), "health is reported all the same");
    assert_eq!(condition(&cs, "FallbackActive").as_deref(), Some("False"), "no flip the ConfigMap does not show");
    assert!(cms.get_opt("refused-fallback").await.unwrap().is_none());

    drop(policy);
    colony_e2e::wait_use_colony_os(&cms, "refused-fallback", "false", "the fallback on once it can be written").await;
    let cs = wait_condition(&servers, "refused", "FallbackActive", "True").await;
    assert_ne!(condition(&cs, "Stalled").as_deref(), Some("True"), "{:?}", cs.status);
    drop(op);
    ns.cleanup().await;
}

/// A managed server whose database Secret is missing is Stalled (MissingReference), and its
/// fallback keeps following health: on while the server fails, off `recoverAfter` after it
/// recovers. Before, a missing reference made the reconcile wait for a change of the object,
/// which dropped the recoverAfter timer: the fallback stayed on after the server recovered.
#[tokio::test]
async fn a_server_missing_its_secret_still_turns_the_fallback_off_after_recovery() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-cs-no-secret").await;
    let endpoint = TestEndpoint::start().await;
    endpoint.set_failing(true);
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    let health = "{interval: 1s, timeout: 1s, failureThreshold: 1, successThreshold: 1}";
    let fallback = "  fallback: {recoverAfter: 2s, minHold: 1s}\n";
    let all =
        colony_e2e::fixtures::managed_server("lonely", &endpoint.url(), "colonyos/colonies:v1.9.12", health, fallback);
    // The ColonyServer alone: its Secrets are not there.
    let server = all.split("---\n").last().unwrap();
    assert!(server.contains("kind: ColonyServer"));
    apply_yaml(&ns.name, server).await;
    let servers: Api<ColonyServer> = ns.api();
    let cms: Api<ConfigMap> = ns.api();

    let cs = wait_condition(&servers, "lonely", "Stalled", "True").await;
    let stalled = cs.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "Stalled").unwrap().clone();
    assert_eq!(stalled.reason, "MissingReference", "{stalled:?}");
    assert!(stalled.message.contains("lonely-db"), "{stalled:?}");
    colony_e2e::wait_use_colony_os(&cms, "lonely-fallback", "false", "the fallback on for a failing server").await;

    endpoint.set_failing(false);
    wait_condition(&servers, "lonely", "Healthy", "True").await;
    colony_e2e::wait_use_colony_os(&cms, "lonely-fallback", "true", "the fallback off after recoverAfter").await;
    drop(op);
    ns.cleanup().await;
}
