//! target/bench/report.md: one table, every figure next to its budget and floor.
use std::path::Path;

use crate::{FAILURE_THRESHOLD, INTERVAL_S, Results, quantile, sorted};

/// Budgets (also printed by `make bench` as PASS/FAIL).
pub const RSS_REST_MIB: f64 = 48.0;
pub const RECONCILE_P99_MS: f64 = 50.0;
pub const WRITES_PER_MIN_REST: f64 = 0.0;
pub const SECRET_OVER_FLOOR_MS: f64 = 100.0;
pub const FLIP_OVER_THRESHOLD_MS: f64 = 100.0;
pub const CPU_REST_PCT: f64 = 1.0;

struct Row {
    figure: String,
    value: String,
    budget: String,
    floor: String,
    pass: Option<bool>,
}

fn row(figure: impl Into<String>, value: String, budget: &str, floor: String, pass: Option<bool>) -> Row {
    Row { figure: figure.into(), value, budget: budget.to_string(), floor, pass }
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v.is_infinite() {
        "> 10 s".into()
    } else if v < 10.0 {
        // Reconciles that make no request end well below a millisecond: keep a decimal.
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

/// "p50 / p99" of sorted milliseconds.
fn p50_p99(sorted: &[f64]) -> String {
    format!("{} / {}", ms(quantile(sorted, 0.5)), ms(quantile(sorted, 0.99)))
}

/// Writes the report; the table as Markdown and whether every budget passed.
pub fn write(dir: &Path, r: &Results) -> anyhow::Result<(String, bool)> {
    let s = r.scale.expect("scale");
    let mut rows = Vec::new();
    rows.push(row(
        format!("all Ready: {} ColonyServers + {} FinanceBees", s.servers, s.bees),
        format!("{:.1} s", r.fleet_ready_s),
        "—",
        format!("{:.1} s (controller-manager alone, {} Deployments)", r.floor_ready_s, s.bees),
        None,
    ));
    rows.push(row(
        "operator settled after all Ready (no reconcile for 15 s)",
        format!("{:.1} s", r.settle_s),
        "—",
        "—".into(),
        None,
    ));
    rows.push(row("operator RSS, peak", format!("{:.1} MiB", r.rss_peak_mib), "—", "—".into(), None));
    rows.push(row(
        "operator TCP connections to the API server, peak / at rest",
        format!("{} / {}", r.samples.iter().map(|s| s.api_connections).max().unwrap_or(0), r.api_connections_rest),
        "—",
        "—".into(),
        None,
    ));
    rows.push(row(
        "operator RSS at rest",
        format!("{:.1} MiB", r.rss_rest_mib),
        &format!("≤ {RSS_REST_MIB} MiB"),
        "—".into(),
        Some(r.rss_rest_mib <= RSS_REST_MIB),
    ));
    rows.push(row(
        format!("operator RSS at rest after a restart into the fleet (settled in {:.0} s)", r.restart_settle_s),
        format!("{:.1} MiB", r.rss_restart_rest_mib),
        &format!("≤ {RSS_REST_MIB} MiB"),
        "—".into(),
        Some(r.rss_restart_rest_mib <= RSS_REST_MIB),
    ));
    rows.push(row(
        format!("CPU at rest ({} servers probed every {INTERVAL_S} s)", s.servers),
        format!("{:.2} % of a core", r.cpu_rest_pct),
        &format!("≤ {CPU_REST_PCT} %"),
        "—".into(),
        Some(r.cpu_rest_pct <= CPU_REST_PCT),
    ));
    // A reconcile that writes waits for the API server at least once: its time per request
    // while the fleet was created is the floor of the reconcile tail.
    let api_floor = if r.api_latency_fleet_ms.is_empty() {
        "—".to_string()
    } else {
        format!(
            "API server p50 / p99 {} / {} per request of the operator during fleet creation",
            ms(crate::quantile(&r.api_latency_fleet_ms, 0.5)),
            ms(crate::quantile(&r.api_latency_fleet_ms, 0.99))
        )
    };
    // The same, for the requests on one controller's objects only.
    let api_floor_of = |controller: &str| match r.api_latency_fleet_by_controller.get(controller) {
        Some(times) if !times.is_empty() => format!(
            "API server p50 / p99 {} / {} per request on its objects during fleet creation ({})",
            ms(crate::quantile(times, 0.5)),
            ms(crate::quantile(times, 0.99)),
            times.len()
        ),
        _ => api_floor.clone(),
    };
    for (controller, (p50, p99, count)) in &r.reconcile {
        let p99_ms = p99 * 1000.0;
        rows.push(row(
            format!("reconcile p50 / p99, {controller} ({count:.0} reconciles, whole run)"),
            format!("{} / {}", ms(p50 * 1000.0), ms(p99_ms)),
            &format!("p99 ≤ {RECONCILE_P99_MS} ms"),
            api_floor_of(controller),
            (*count > 0.0).then_some(p99_ms <= RECONCILE_P99_MS),
        ));
    }
    for (controller, (p50, p99, count)) in &r.reconcile_self {
        let p99_ms = p99 * 1000.0;
        rows.push(row(
            format!("reconcile p50 / p99 outside its API requests, {controller} (whole run)"),
            format!("{} / {}", ms(p50 * 1000.0), ms(p99_ms)),
            &format!("p99 ≤ {RECONCILE_P99_MS} ms (the operator's part)"),
            "—".into(),
            (*count > 0.0).then_some(p99_ms <= RECONCILE_P99_MS),
        ));
    }
    for (controller, (p50, p99, count)) in &r.request_client_fleet {
        if *count == 0.0 {
            continue;
        }
        rows.push(row(
            format!(
                "API request p50 / p99 as a {controller} reconcile waits for it, during fleet creation ({count:.0} requests)"
            ),
            format!("{} / {}", ms(p50 * 1000.0), ms(p99 * 1000.0)),
            "—",
            api_floor_of(controller),
            None,
        ));
    }
    for (controller, (p50, p99, count)) in &r.reconcile_after_fleet {
        if *count == 0.0 {
            continue;
        }
        rows.push(row(
            format!("reconcile p50 / p99, {controller}, after the fleet settled ({count:.0} reconciles)"),
            format!("{} / {}", ms(p50 * 1000.0), ms(p99 * 1000.0)),
            "—",
            "—".into(),
            None,
        ));
    }
    rows.push(row(
        "API requests per reconcile (fleet creation until settled)",
        match r.requests_per_reconcile {
            Some(v) => format!("{v:.2} ({} requests / {:.0} reconciles)", r.requests_fleet, r.reconciles_fleet),
            None => "n/a: the cluster's audit policy logs no reads (recreate it with `make bench`)".into(),
        },
        "—",
        "—".into(),
        None,
    ));
    if let Some(n) = r.requests_rest {
        rows.push(row(
            format!("API requests at rest ({} s, reads included)", s.rest_window.as_secs()),
            n.to_string(),
            "—",
            "—".into(),
            None,
        ));
    }
    rows.push(row(
        "API writes per minute at rest",
        format!("{:.1}", r.writes_per_min_rest),
        "0",
        "—".into(),
        Some(r.writes_per_min_rest <= WRITES_PER_MIN_REST),
    ));
    let lat = sorted(r.secret_latency_ms.clone());
    let floor = sorted(r.secret_floor_ms.clone());
    rows.push(row(
        format!("Secret change → new pod template, p50 ({} Secrets one by one)", lat.len()),
        ms(quantile(&lat, 0.5)),
        &format!("≤ floor + {SECRET_OVER_FLOOR_MS} ms"),
        format!("{} (bare watch client sees the Secret)", ms(quantile(&floor, 0.5))),
        Some(quantile(&lat, 0.5) <= quantile(&floor, 0.5) + SECRET_OVER_FLOOR_MS),
    ));
    rows.push(row(
        "Secret change → new pod template, p99",
        ms(quantile(&lat, 0.99)),
        "—",
        ms(quantile(&floor, 0.99)),
        None,
    ));
    let flip = sorted(r.flip_latency_ms.clone());
    let due_ms = FAILURE_THRESHOLD as f64 * INTERVAL_S * 1000.0;
    rows.push(row(
        format!("first failed probe → fallback flip, p50 / p99 ({} servers at once)", flip.len()),
        p50_p99(&flip),
        &format!("p99 ≤ {} ms", due_ms + FLIP_OVER_THRESHOLD_MS),
        format!("{due_ms:.0} ms (failureThreshold {FAILURE_THRESHOLD} × interval {INTERVAL_S} s)"),
        Some(quantile(&flip, 0.99) <= due_ms + FLIP_OVER_THRESHOLD_MS),
    ));
    // The flip split in two: the probes' schedule, then the operator's reaction.
    let probes = sorted(r.flip_probes_ms.clone());
    let decided = sorted(r.flip_decided_ms.clone());
    rows.push(row(
        format!("… of which first failed probe → the deciding one (failure {FAILURE_THRESHOLD}), p50 / p99"),
        p50_p99(&probes),
        "—",
        format!("{:.0} ms ({} intervals)", (FAILURE_THRESHOLD - 1) as f64 * INTERVAL_S * 1000.0, FAILURE_THRESHOLD - 1),
        None,
    ));
    rows.push(row(
        "… of which the deciding failed probe → flip seen, p50 / p99".to_string(),
        p50_p99(&decided),
        "—",
        "—".into(),
        None,
    ));
    // The operator's part split at the ConfigMap write the API server logged.
    if !r.flip_split.is_empty() {
        let part = |f: fn(&crate::FlipSplit) -> f64| sorted(r.flip_split.iter().map(f).collect());
        let (to_api, api, to_watch) = (part(|s| s.to_api_ms), part(|s| s.api_ms), part(|s| s.to_watch_ms));
        rows.push(row(
            format!(
                "… … deciding probe → API server receives the ConfigMap write / its time there / answered → watch sees it, p50 / p99 ({} flips)",
                r.flip_split.len()
            ),
            format!("{}; {}; {}", p50_p99(&to_api), p50_p99(&api), p50_p99(&to_watch)),
            "—",
            "—".into(),
            None,
        ));
    }
    rows.push(row(
        format!("reconciles while {} servers went down and came back", flip.len()),
        r.flip_reconciles.iter().map(|(c, n)| format!("{c} {n:.0}")).collect::<Vec<_>>().join(", "),
        "—",
        "—".into(),
        None,
    ));
    let restart = sorted(r.restart_latency_ms.clone());
    rows.push(row(
        format!("pod Failed → deleted, p50 / p99 ({} pods at once)", restart.len()),
        p50_p99(&restart),
        "—",
        "—".into(),
        None,
    ));

    let mut table = String::from("| figure | value | budget | floor | result |\n|---|---|---|---|---|\n");
    for r in &rows {
        let result = match r.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "",
        };
        table.push_str(&format!("| {} | {} | {} | {} | {result} |\n", r.figure, r.value, r.budget, r.floor));
    }
    let all_pass = rows.iter().all(|r| r.pass != Some(false));
    let writes = if r.writes_rest.is_empty() {
        String::new()
    } else {
        format!("\nWrites at rest: {}\n", r.writes_rest.join(", "))
    };
    let text = format!(
        "# colony-operator at fleet scale\n\n\
         Fleet: {} ColonyServers (unmanaged, probed every {INTERVAL_S} s), {} FinanceBees with their Secrets \
         in {} namespaces; unrelated: {} Secrets, {} ConfigMaps, {} pods. {} kwok nodes. \
         Load average when the run started: {:.2} (2 cores, shared).\n\n{table}\n\
         Budgets: {}.{writes}\n\n\
         ![operator RSS and CPU over the run](resources.svg)\n\n\
         ![Ready over time, fleet and floor](ready.svg)\n\n\
         ![latency distributions](latency.svg)\n\n\
         The operator's API requests during fleet creation, by verb and resource: \
         [requests-fleet.txt](requests-fleet.txt) (with the API server's own time for each kind; the same while the servers flip: [requests-flips.txt](requests-flips.txt)); the samples behind the first plot: [samples.csv](samples.csv); its log: [operator.log](operator.log).\n",
        s.servers,
        s.bees,
        s.namespaces,
        s.unrelated_secrets,
        s.unrelated_config_maps,
        s.unrelated_pods,
        r.nodes,
        r.busy_load,
        if all_pass { "all met" } else { "NOT all met" }
    );
    std::fs::write(dir.join("report.md"), text)?;
    Ok((table, all_pass))
}

#[cfg(test)]
mod tests {
    #[test]
    fn milliseconds_keep_a_decimal_below_ten() {
        assert_eq!(super::ms(0.43), "0.4 ms");
        assert_eq!(super::ms(4.96), "5.0 ms");
        assert_eq!(super::ms(12.4), "12 ms");
        assert_eq!(super::ms(f64::NAN), "n/a");
    }
}
