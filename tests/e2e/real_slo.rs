//! SLOs from the real ColonyOS server's signed statistics call (`spec.slo.statistics`): the
//! processes are submitted with the real CLI, a test executor (the real CLI too) closes some
//! and fails others, and the operator's queue depth, lifetime counts and error rate agree
//! with what was done; failures lasting `for` turn the fallback on.
use std::time::{Duration, Instant, SystemTime};

use colony_e2e::colonyos::{Options, RealColonyOs};
use colony_e2e::{
    DEADLINE, OperatorProcess, TestNamespace, apply_yaml, client, install_crds, operator_writes, wait_for,
};
use colony_operator::api::ColonyServer;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

/// The value of `family` for server `srv` (with `extra`, e.g. `state="failed"`, when given)
/// on the operator's /metrics; None when the series is absent (unknown).
async fn metric(op: &OperatorProcess, family: &str, extra: &str) -> Option<f64> {
    let (_, text) = op.get("/metrics").await?;
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| l.contains("name=\"srv\"") && l.contains(extra))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
}

async fn samples(op: &OperatorProcess, result: &str) -> u64 {
    metric(op, "colony_operator_slo_samples_total", &format!("result=\"{result}\"")).await.unwrap_or(0.0) as u64
}

async fn count(op: &OperatorProcess, state: &str) -> Option<u64> {
    metric(op, "colony_operator_slo_processes", &format!("state=\"{state}\"")).await.map(|v| v as u64)
}

/// One reading of /metrics: the SLO samples taken so far and the last one's figures.
#[derive(Debug, Clone, PartialEq)]
struct Snap {
    samples: u64,
    successful: Option<u64>,
    failed: Option<u64>,
    error_rate: Option<f64>,
}

async fn snap(op: &OperatorProcess) -> Snap {
    let (_, text) = op.get("/metrics").await.unwrap_or_default();
    let value = |family: &str, extra: &str| {
        text.lines()
            .filter(|l| l.starts_with(&format!("{family}{{")))
            .filter(|l| l.contains("name=\"srv\"") && l.contains(extra))
            .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    Snap {
        samples: value("colony_operator_slo_samples_total", "result=\"success\"").unwrap_or(0.0) as u64,
        successful: value("colony_operator_slo_processes", "state=\"successful\"").map(|v| v as u64),
        failed: value("colony_operator_slo_processes", "state=\"failed\"").map(|v| v as u64),
        error_rate: value("colony_operator_slo_error_rate", ""),
    }
}

async fn use_colony_os(cms: &Api<ConfigMap>) -> Option<String> {
    cms.get_opt("srv-fallback").await.ok().flatten().and_then(|c| c.data).and_then(|d| d.get("USE_COLONY_OS").cloned())
}

/// The ColonyServer `srv` watching the real server, with `source` (YAML lines of `spec.slo`,
/// indented by 4) sampled every `interval`, and the Secret `ops-key` holding the user's key.
fn colony_server(colonyos: &RealColonyOs, source: &str, interval: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: ops-key
stringData:
  prvkey: {prvkey}
---
apiVersion: colony.zyeute.io/v1alpha1
kind: ColonyServer
metadata:
  name: srv
spec:
  managed: false
  endpoint: {url}
  health: {{interval: 1s, timeout: 1s, failureThreshold: 3, successThreshold: 1}}
  slo:
{source}
    interval: {interval}
    maxQueueDepth: 50
    minCompletionRate: 0
    maxErrorRate: 0.2
    for: 3s
  fallback: {{recoverAfter: 1m, minHold: 1s, maxFlipsPerHour: 10}}
"#,
        prvkey = colonyos.user_key.prvkey,
        url = colonyos.url()
    )
}

const STATISTICS: &str = "    statistics: {colonyName: zyeute, keySecretRef: {name: ops-key, key: prvkey}}";

#[tokio::test]
async fn slo_from_the_real_servers_statistics_turns_the_fallback_on() {
    let colonyos = RealColonyOs::start("slo", Options::default()).await;
    slo_scenario(&colonyos, "statistics", STATISTICS, "1s").await;
}

/// The same with `metricsURL` pointing at a real `colonies monitor start` (pulling every
/// second; the operator samples every 2 s so that each sample sees a fresh pull).
#[tokio::test]
async fn slo_from_a_real_colonies_monitor_turns_the_fallback_on() {
    let colonyos = RealColonyOs::start("slo-monitor", Options::default()).await;
    let monitor = colonyos.start_monitor().await;
    let source = format!("    metricsURL: {}", monitor.url());
    slo_scenario(&colonyos, "monitor", &source, "2s").await;
    drop(monitor);
}

/// Processes submitted, 4 closed, then failures paced by the operator's samples until the
/// fallback turns on; the operator's figures are checked against what was done.
async fn slo_scenario(colonyos: &RealColonyOs, label: &str, source: &str, interval: &str) {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, &format!("e2e-real-slo-{label}")).await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    apply_yaml(&ns.name, &colony_server(colonyos, source, interval)).await;
    let servers: Api<ColonyServer> = ns.api();
    let cms: Api<ConfigMap> = ns.api();

    // Before any work: the operator reads an empty queue from the real server.
    wait_for("a first statistics sample", DEADLINE, || async {
        match (count(&op, "waiting").await, use_colony_os(&cms).await.as_deref()) {
            (Some(0), Some("true")) => Ok(()),
            other => Err(format!("waiting, USE_COLONY_OS = {other:?}")),
        }
    })
    .await;

    // 6 processes submitted with the real CLI: queue depth 6.
    let mut submitted = 0;
    for i in 0..6 {
        colonyos.submit(&format!("pay{i}")).await;
        submitted += 1;
    }
    wait_for("queue depth 6 from the statistics call", DEADLINE, || async {
        match metric(&op, "colony_operator_slo_queue_depth", "").await {
            Some(6.0) => Ok(()),
            q => Err(format!("queue depth {q:?}")),
        }
    })
    .await;

    // The executor closes 4 successfully: 0 % errors, no breach, and no write (the figures
    // go to /metrics; status is written only when a breach starts or ends).
    let quiet_from = SystemTime::now();
    let mut succeeded = 0;
    let mut error_rates_seen = Vec::new();
    for _ in 0..4 {
        colonyos.work_one(true).await;
        succeeded += 1;
        if let Some(e) = metric(&op, "colony_operator_slo_error_rate", "").await {
            error_rates_seen.push(e);
        }
    }
    let samples_after_successes = wait_for("the 4 successes sampled", DEADLINE, || async {
        match (count(&op, "successful").await, count(&op, "waiting").await, count(&op, "failed").await) {
            (Some(4), Some(2), Some(0)) => Ok(samples(&op, "success").await),
            other => Err(format!("successful, waiting, failed = {other:?}")),
        }
    })
    .await;
    // A sample after the successes: no failure in any interval, the fallback stays off.
    wait_for("another sample after the successes", DEADLINE, || async {
        let n = samples(&op, "success").await;
        if n > samples_after_successes { Ok(()) } else { Err(format!("{n} samples")) }
    })
    .await;
    assert!(error_rates_seen.iter().all(|&e| e == 0.0), "error rates seen while only successes: {error_rates_seen:?}");
    assert_eq!(use_colony_os(&cms).await.as_deref(), Some("true"), "0 % errors: no fallback");
    assert_eq!(samples(&op, "failure").await, 0, "every sample answered");
    tokio::time::sleep(Duration::from_secs(1)).await; // the audit log is written asynchronously
    let writes = operator_writes(&ns.name, quiet_from);
    assert!(writes.is_empty(), "samples within the SLO make no writes: {writes:?}");

    // 20 more submitted. A mix, 1 closed and 2 failed at once: every sample's error rate is
    // Δfailed / (Δsuccessful + Δfailed) of the counts it read, whichever samples the three
    // closes fall between (checked on consecutive samples seen on /metrics).
    for i in 0..20 {
        colonyos.submit(&format!("refund{i}")).await;
        submitted += 1;
    }
    let work = async {
        colonyos.work_one(true).await;
        colonyos.work_one(false).await;
        colonyos.work_one(false).await;
    };
    let watch = async {
        let mut snaps = std::collections::BTreeMap::new();
        let start = Instant::now();
        let mut done_at = None;
        loop {
            let s = snap(&op).await;
            if s.successful == Some(5) && s.failed == Some(2) && done_at.is_none() {
                done_at = Some(s.samples);
            }
            let n = s.samples;
            snaps.insert(n, s);
            // One more sample after the last close, so its snapshot is complete.
            if done_at.is_some_and(|d| n > d) {
                return snaps;
            }
            assert!(start.elapsed() < DEADLINE, "the mixed closes were not sampled: {snaps:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let ((), snaps) = tokio::join!(work, watch);
    succeeded += 1;
    let mut failed = 2;
    let mut mixed_rates = Vec::new();
    for (n, cur) in &snaps {
        let Some(prev) = snaps.get(&(n - 1)) else { continue };
        let (Some(s0), Some(f0), Some(s1), Some(f1)) = (prev.successful, prev.failed, cur.successful, cur.failed)
        else {
            panic!("a sample without counts: {prev:?} {cur:?}")
        };
        let (ds, df) = (s1 as f64 - s0 as f64, f1 as f64 - f0 as f64);
        let expected = (ds + df > 0.0).then(|| df / (ds + df));
        let close = match (cur.error_rate, expected) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-9,
            (a, b) => a == b,
        };
        assert!(close, "sample {n}: error rate {:?}, counts say {expected:?} ({prev:?} -> {cur:?})", cur.error_rate);
        if let Some(rate) = cur.error_rate {
            mixed_rates.push((ds as u64, df as u64, rate));
        }
    }
    assert!(!mixed_rates.is_empty(), "no sample with a rate among {snaps:?}");
    println!("mixed closes: (Δsuccessful, Δfailed, error rate) per sample: {mixed_rates:?}");

    // The executor fails the rest one by one until the breach has lasted `for` (3s) and the
    // fallback turns on.
    let failing_from = Instant::now();
    while use_colony_os(&cms).await.as_deref() != Some("false") {
        assert!(failed < 22, "every process failed and the fallback is still off");
        assert!(failing_from.elapsed() < DEADLINE, "no fallback within {DEADLINE:?} of failures");
        colonyos.work_one(false).await;
        failed += 1;
        // Paced by the operator's samples (1s): the next failure lands in the next interval,
        // so every interval until the flip holds failures and nothing else.
        wait_for("the failure sampled", DEADLINE, || async {
            match count(&op, "failed").await {
                Some(n) if n == failed => Ok(()),
                n => Err(format!("failed {n:?}, expected {failed}")),
            }
        })
        .await;
    }
    let flipped_after = failing_from.elapsed();
    let status = wait_for("status: SLO breached, fallback on", DEADLINE, || async {
        let status = servers.get("srv").await.map_err(|e| e.to_string())?.status.unwrap_or_default();
        let breached = status.slo.as_ref().is_some_and(|s| s.breached);
        let active = status.fallback.as_ref().is_some_and(|f| f.active);
        if breached && active { Ok(status) } else { Err(format!("{:?} {:?}", status.slo, status.fallback)) }
    })
    .await;
    let slo = status.slo.clone().expect("status.slo at the breach");
    assert!(slo.breached, "{slo:?}");
    assert_eq!(slo.reason.as_deref(), Some("ErrorRateTooHigh"), "{slo:?}");
    assert_eq!(slo.error_rate, Some(1.0), "only failures since the successes were sampled: {slo:?}");
    assert_eq!(slo.completion_rate, Some(0.0), "{slo:?}");
    let fallback = status.fallback.expect("status.fallback");
    assert!(fallback.active);
    assert_eq!(fallback.reason.as_deref(), Some("SLOBreached"), "{fallback:?}");

    // The operator's lifetime counts agree with what was done through the CLI.
    let waiting = submitted - succeeded - failed;
    wait_for("the operator's counts match the CLI's work", DEADLINE, || async {
        let got = (count(&op, "waiting").await, count(&op, "successful").await, count(&op, "failed").await);
        if got == (Some(waiting), Some(succeeded), Some(failed)) { Ok(()) } else { Err(format!("{got:?}")) }
    })
    .await;
    assert_eq!(metric(&op, "colony_operator_slo_queue_depth", "").await, Some(waiting as f64));

    let latency_sum = metric(&op, "colony_operator_slo_sample_duration_seconds_sum", "").await.unwrap_or(0.0);
    let latency_count = metric(&op, "colony_operator_slo_sample_duration_seconds_count", "").await.unwrap_or(0.0);
    println!(
        "real SLO ({label}): submitted {submitted}, succeeded {succeeded}, failed {failed}, waiting {waiting}; the operator \
         computed queue depth {waiting}, error rate {:?} (completion {:?}) at the breach; fallback on {flipped_after:?} \
         after the first failure; {} samples, mean latency {:.1} ms",
        slo.error_rate,
        slo.completion_rate,
        latency_count,
        1000.0 * latency_sum / latency_count.max(1.0)
    );
    assert!(!op.logs().contains(&colonyos.user_key.prvkey), "no key in the operator's log");
    drop(op);
    ns.cleanup().await;
}

/// A key that is not a colony member gets an empty body from the real server: every sample
/// fails (counted on /metrics), the figures stay unknown rather than zero, and nothing breaches.
#[tokio::test]
async fn a_non_member_key_is_a_failed_sample_not_zero() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let colonyos = RealColonyOs::start("slo-stranger", Options::default()).await;
    let ns = TestNamespace::new(&client, "e2e-real-slo-stranger").await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    // The server owner's key is no colony member.
    let yaml =
        colony_server(&colonyos, STATISTICS, "1s").replace(&colonyos.user_key.prvkey, &colonyos.server_key.prvkey);
    apply_yaml(&ns.name, &yaml).await;
    let cms: Api<ConfigMap> = ns.api();
    wait_for("3 failed samples", DEADLINE, || async {
        let n = samples(&op, "failure").await;
        if n >= 3 { Ok(()) } else { Err(format!("{n} failed samples")) }
    })
    .await;
    assert_eq!(samples(&op, "success").await, 0, "a non-member never gets statistics");
    for family in ["colony_operator_slo_queue_depth", "colony_operator_slo_error_rate"] {
        assert_eq!(metric(&op, family, "").await, None, "{family}: unknown, not zero");
    }
    assert_eq!(count(&op, "waiting").await, None);
    assert_eq!(use_colony_os(&cms).await.as_deref(), Some("true"), "unknown is no breach");
    assert!(!op.logs().contains(&colonyos.server_key.prvkey), "no key in the operator's log");
    drop(op);
    ns.cleanup().await;
}
