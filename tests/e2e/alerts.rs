//! The chart's on-call alerts (templates/prometheusrule.yaml) and Grafana dashboard
//! (dashboards/colony-operator.json), checked as shipped, i.e. rendered by `helm template`:
//! - `promtool check rules` accepts the rendered rules;
//! - `promtool test rules` runs tests/alerts/colony-operator.test.yaml, in which every alert
//!   fires and then resolves (checked here: no alert is left out);
//! - every alert's runbook_url points at a README section under "On call";
//! - every series the rules and the dashboard query is one the operator binary exports (a
//!   live /metrics scrape), with the labels it has.
//!
//! promtool comes from tests/tools/build.sh (built from the Prometheus Go module); `make
//! e2e-test` and `make test` put its bin dir on PATH.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use colony_e2e::{DEADLINE, OperatorProcess, TestNamespace, client, install_crds, repo_root, wait_for};
use serde::Deserialize;
use serde_yaml::Value;

const KUBE_VERSION: &str = "1.37.0";

fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "{name} is not on PATH: build it with `tests/tools/build.sh {name}` and put the directory it prints \
             on PATH (`make e2e-test` and `make test` do both)"
        )
    })
}

fn run(program: &Path, args: &[&str], dir: &Path) -> (bool, String) {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// `helm template` of the chart with the alerts and the dashboard on (default values
/// otherwise): the PrometheusRule and the dashboard ConfigMap.
fn rendered() -> (Value, Value) {
    let chart = repo_root().join("charts/colony-operator");
    let (ok, out) = run(
        &tool("helm"),
        &[
            "template",
            "colony-operator",
            chart.to_str().unwrap(),
            "--namespace",
            "colony-system",
            "--kube-version",
            KUBE_VERSION,
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "dashboards.enabled=true",
        ],
        &repo_root(),
    );
    assert!(ok, "helm template: {out}");
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&out)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect();
    let find = |kind: &str| {
        docs.iter().find(|d| d["kind"].as_str() == Some(kind)).cloned().unwrap_or_else(|| panic!("no {kind} rendered"))
    };
    let rule = find("PrometheusRule");
    let config_map = docs
        .iter()
        .find(|d| {
            d["kind"].as_str() == Some("ConfigMap") && d["metadata"]["name"].as_str().unwrap().ends_with("-dashboard")
        })
        .cloned()
        .expect("the dashboard ConfigMap");
    (rule, config_map)
}

fn alert_rules(rule: &Value) -> Vec<Value> {
    rule["spec"]["groups"]
        .as_sequence()
        .expect("spec.groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").clone())
        .collect()
}

fn dashboard(config_map: &Value) -> serde_json::Value {
    let text = config_map["data"]["colony-operator.json"].as_str().expect("data[colony-operator.json]");
    serde_json::from_str(text).expect("the dashboard is JSON")
}

/// Every PromQL expression of the dashboard's panels.
fn dashboard_exprs(d: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in d["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(target["expr"].as_str().expect("a target's expr").to_string());
        }
    }
    out
}

/// The rules of the rendered PrometheusRule as a rules file, with promtool beside the unit
/// tests, in a fresh directory.
fn rules_dir(rule: &Value) -> PathBuf {
    let dir = repo_root().join("target/alerts");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rules.yaml"), serde_yaml::to_string(&rule["spec"]).unwrap()).unwrap();
    dir
}

#[test]
fn rendered_rules_pass_promtool_and_every_alert_fires_and_resolves() {
    let promtool = tool("promtool");
    let (rule, _) = rendered();
    let dir = rules_dir(&rule);
    let (ok, out) = run(&promtool, &["check", "rules", "rules.yaml"], &dir);
    let alerts: Vec<String> =
        alert_rules(&rule).iter().map(|r| r["alert"].as_str().expect("only alerting rules").to_string()).collect();
    assert!(ok, "promtool check rules: {out}");
    assert!(out.contains(&format!("SUCCESS: {} rules found", alerts.len())), "{out}");

    // promtool really evaluates: an alert expected where nothing fires fails the run.
    std::fs::write(
        dir.join("broken.test.yaml"),
        "rule_files: [rules.yaml]\ntests:\n  - interval: 1m\n    input_series: []\n    alert_rule_test:\n      - eval_time: \
         10m\n        alertname: FinanceBeeEscalated\n        exp_alerts:\n          - exp_labels: {severity: critical}\n",
    )
    .unwrap();
    let (ok, out) = run(&promtool, &["test", "rules", "broken.test.yaml"], &dir);
    assert!(!ok && out.contains("FinanceBeeEscalated"), "a failing unit test must fail: {out}");

    let tests_file = repo_root().join("tests/alerts/colony-operator.test.yaml");
    std::fs::copy(&tests_file, dir.join("colony-operator.test.yaml")).unwrap();
    let (ok, out) = run(&promtool, &["test", "rules", "colony-operator.test.yaml"], &dir);
    assert!(ok, "promtool test rules: {out}");
    assert!(out.contains("SUCCESS"), "{out}");

    // Each alert has a case where it fires and a later one where it has resolved.
    let tests: Value = serde_yaml::from_str(&std::fs::read_to_string(&tests_file).unwrap()).unwrap();
    let mut cases: BTreeMap<String, Vec<(u64, bool)>> = BTreeMap::new();
    for group in tests["tests"].as_sequence().expect("tests") {
        for case in group["alert_rule_test"].as_sequence().expect("alert_rule_test") {
            let name = case["alertname"].as_str().unwrap().to_string();
            let at = case["eval_time"].as_str().unwrap();
            let minutes: u64 = at.strip_suffix('m').and_then(|m| m.parse().ok()).expect("eval_time in minutes");
            let fires = case["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty());
            cases.entry(name).or_default().push((minutes, fires));
        }
    }
    for alert in &alerts {
        let seen = cases.get(alert).unwrap_or_else(|| panic!("{alert} has no unit test in {}", tests_file.display()));
        let fired = seen.iter().filter(|(_, f)| *f).map(|(t, _)| *t).min();
        let fired = fired.unwrap_or_else(|| panic!("{alert} is never shown firing: {seen:?}"));
        assert!(seen.iter().any(|(t, f)| !f && *t > fired), "{alert} is never shown resolved after it fired: {seen:?}");
        assert!(seen.iter().any(|(t, f)| !f && *t < fired), "{alert} is never shown not yet firing: {seen:?}");
    }
    let unknown: Vec<_> = cases.keys().filter(|k| !alerts.contains(k)).collect();
    assert!(unknown.is_empty(), "unit tests of alerts the chart does not have: {unknown:?}");
    let n: usize = cases.values().map(Vec::len).sum();
    println!("{} alerts, {n} alert test cases: fire and resolve each", alerts.len());
}

/// GitHub's anchor of a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_alert_links_to_its_on_call_section_in_the_readme() {
    let (rule, _) = rendered();
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    // The subsections (###) of "## On call".
    let section: Vec<&str> =
        readme.lines().skip_while(|l| l.trim() != "## On call").skip(1).take_while(|l| !l.starts_with("## ")).collect();
    assert!(!section.is_empty(), "README.md has no \"## On call\" section");
    let headings: BTreeSet<String> =
        section.iter().filter_map(|l| l.strip_prefix("### ")).map(|h| anchor(h.trim_matches('`'))).collect();
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo_root().join("charts/colony-operator/values.yaml")).unwrap())
            .unwrap();
    let base = values["prometheusRule"]["runbookBaseUrl"].as_str().unwrap();
    for r in alert_rules(&rule) {
        let alert = r["alert"].as_str().unwrap();
        let url = r["annotations"]["runbook_url"].as_str().unwrap_or_else(|| panic!("{alert} has no runbook_url"));
        let fragment = url
            .strip_prefix(&format!("{base}#"))
            .unwrap_or_else(|| panic!("{alert}: runbook_url {url} is not {base}#<section>"));
        assert_eq!(fragment, alert.to_lowercase(), "{alert}: the anchor is the alert's name");
        assert!(headings.contains(fragment), "{alert}: no \"### {alert}\" under \"## On call\" (have {headings:?})");
        assert!(r["labels"]["severity"].as_str().is_some(), "{alert} has a severity");
        for key in ["summary", "description"] {
            assert!(r["annotations"][key].as_str().is_some_and(|s| !s.is_empty()), "{alert} has a {key}");
        }
    }
}

/// `colony_operator_*` series names in a PromQL expression, with the label names of the
/// matchers right after them.
fn series_in(expr: &str) -> Vec<(String, BTreeSet<String>)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("colony_operator_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let name = tail[..end].to_string();
        let mut labels = BTreeSet::new();
        if let Some(selector) = tail[end..].strip_prefix('{') {
            let close = selector.find('}').expect("closed selector");
            for matcher in selector[..close].split(',') {
                let label: String =
                    matcher.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !label.is_empty() {
                    labels.insert(label);
                }
            }
        }
        out.push((name, labels));
        rest = &tail[end..];
    }
    out
}

/// The series names a scrape exports (from its `# TYPE` lines: counters end in `_total`,
/// histograms have `_bucket`, `_sum` and `_count`) and, for the series present, their labels.
fn exported(scrape: &str) -> (BTreeSet<String>, BTreeMap<String, BTreeSet<String>>) {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let mut parts = rest.split_whitespace();
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => names.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}"))),
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in scrape.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, rest)) = line.split_once('{') else { continue };
        let set = labels.entry(name.to_string()).or_default();
        for pair in rest.split('}').next().unwrap().split(',') {
            if let Some((k, _)) = pair.split_once('=') {
                set.insert(k.to_string());
            }
        }
    }
    (names, labels)
}

#[tokio::test]
async fn alerts_and_dashboard_query_only_series_the_operator_exports() {
    let (rule, config_map) = rendered();
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-alerts").await;
    let mut op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    op.wait_ready().await;
    // A window whose server does not exist is Stalled (ServerNotFound): a condition series.
    let window = r#"apiVersion: colony.zyeute.io/v1alpha1
kind: MaintenanceWindow
metadata:
  name: weekly
spec:
  schedule:
    cron: "0 2 * * 0"
    duration: 2h
  colonyServerRef:
    name: nowhere
"#;
    let out = colony_e2e::kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(window)).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stalled = format!(
        r#"colony_operator_condition{{controller="maintenancewindow",namespace="{}",name="weekly",condition="Stalled",reason="ServerNotFound"}} 1"#,
        ns.name
    );
    let scrape = wait_for("the window's Stalled condition on /metrics", DEADLINE, || async {
        let (_, body) = op.get("/metrics").await.ok_or("no answer")?;
        if body.contains(&stalled) { Ok(body) } else { Err("not yet".to_string()) }
    })
    .await;
    let (names, labels) = exported(&scrape);
    assert!(names.contains("colony_operator_fallback_active") && names.len() > 20, "{names:?}");

    let mut exprs: Vec<(String, String)> = alert_rules(&rule)
        .iter()
        .map(|r| (r["alert"].as_str().unwrap().to_string(), r["expr"].as_str().unwrap().to_string()))
        .collect();
    let board = dashboard(&config_map);
    exprs.extend(dashboard_exprs(&board).into_iter().map(|e| ("dashboard".to_string(), e)));
    assert!(exprs.len() > 20, "{} expressions", exprs.len());
    let mut checked_labels = 0;
    for (whose, expr) in &exprs {
        let series = series_in(expr);
        assert!(!series.is_empty(), "{whose}: {expr} queries no colony_operator_ series");
        for (name, used) in series {
            assert!(names.contains(&name), "{whose}: {name} is not exported by the operator (expr: {expr})");
            if let Some(have) = labels.get(&name) {
                let missing: Vec<_> = used.difference(have).collect();
                assert!(missing.is_empty(), "{whose}: {name} has no label {missing:?} (has {have:?})");
                checked_labels += 1;
            }
        }
    }
    assert!(checked_labels > 5, "labels checked against live series: {checked_labels}");
    assert_eq!(op.terminate().await, Some(0));
    ns.cleanup().await;
}

#[test]
fn dashboard_covers_the_on_call_figures() {
    let (_, config_map) = rendered();
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"].as_str(), Some("1"));
    let board = dashboard(&config_map);
    assert_eq!(board["uid"].as_str(), Some("colony-operator"));
    let exprs = dashboard_exprs(&board).join("\n");
    for series in [
        "colony_operator_fallback_active",
        "colony_operator_health_probe_duration_seconds_bucket",
        "colony_operator_slo_queue_depth",
        "colony_operator_slo_completion_rate",
        "colony_operator_slo_error_rate",
        "colony_operator_finance_bee_restarts_total",
        "colony_operator_finance_bee_escalated",
        "colony_operator_key_rotation_next_timestamp_seconds",
        "colony_operator_reconcile_errors_total",
        "colony_operator_reconcile_duration_seconds_bucket",
    ] {
        assert!(exprs.contains(series), "the dashboard shows {series}");
    }
    // Every panel queries the data source chosen in the dashboard's variable.
    for panel in board["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
        assert_eq!(panel["datasource"]["uid"].as_str(), Some("${datasource}"), "{}", panel["title"]);
    }
}
