//! The Helm chart (charts/colony-operator) and the GitOps examples (examples/gitops):
//! - the chart's crds/ are byte-for-byte the generated crds/;
//! - `helm lint` passes and `helm template` renders each mode (cluster-wide, one namespace,
//!   ServiceMonitor on and off, leader election off) with the pinned RBAC and a hardened pod;
//! - the on-call alerts and dashboard render only when asked for, with their labels, and the
//!   schema rejects bad thresholds (tests/e2e/alerts.rs checks the rules and the dashboard);
//! - `helm install` works on the real API server in a namespace that enforces the
//!   `restricted` Pod Security Standard, and `kubectl auth can-i` shows the ServiceAccount can
//!   do what the controllers do and nothing else;
//! - the operator binary, run with that ServiceAccount's token and nothing more, reconciles the
//!   examples without a single forbidden request;
//! - every YAML file in examples/gitops parses, and the Flux kustomization of the examples
//!   builds.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use colony_e2e::{DEADLINE, TestNamespace, client, free_port, install_crds, kubectl, repo_root, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Api;
use kube::api::ListParams;
use serde::Deserialize;
use serde_yaml::Value;

/// The Kubernetes version the chart is rendered for (helm's default without release ldflags
/// is 1.20, which the chart's kubeVersion constraint rejects).
const KUBE_VERSION: &str = "1.37.0";
const GROUP: &str = "colony.zyeute.io";

fn chart_dir() -> PathBuf {
    repo_root().join("charts/colony-operator")
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("running {program} (is the control plane's bin dir on PATH? `make e2e-test` sets it): {e}")
        });
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).await.unwrap();
        drop(pipe);
    }
    let out = child.wait_with_output().await.unwrap();
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn helm(args: &[&str]) -> Output {
    run("helm", args, None).await
}

/// `helm template` of the chart with `sets` (`key=value`), expected to succeed.
async fn template(sets: &[&str], extra: &[&str]) -> Vec<Value> {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        "colony-operator",
        chart.to_str().unwrap(),
        "--namespace",
        "colony-system",
        "--kube-version",
        KUBE_VERSION,
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    args.extend(extra);
    let out = helm(&args).await;
    assert!(out.ok, "helm template {sets:?} failed: {}", out.stderr);
    documents(&out.stdout)
}

/// Every non-empty document of a YAML stream.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(*key))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path).and_then(Value::as_str).unwrap_or("")
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter().map(|d| str_at(d, &["kind"]).to_string()).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<_> = docs.iter().filter(|d| str_at(d, &["kind"]) == kind).collect();
    assert_eq!(found.len(), 1, "exactly one {kind} in {:?}", kinds(docs));
    found[0]
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_sequence)
        .map(|s| s.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// The rules of a (Cluster)Role as `group resource verbs [names]`, one line per resource.
fn rules(role: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for rule in get(role, &["rules"]).and_then(Value::as_sequence).expect("rules") {
        let mut verbs = strings(rule.get("verbs"));
        verbs.sort();
        let names = strings(rule.get("resourceNames"));
        for group in strings(rule.get("apiGroups")) {
            for resource in strings(rule.get("resources")) {
                let mut line = format!("{group:?} {resource} {}", verbs.join(","));
                if !names.is_empty() {
                    line.push_str(&format!(" {names:?}"));
                }
                out.insert(line);
            }
        }
    }
    out
}

/// What the controllers do (operator/src/controllers), as RBAC. Changing a controller's API
/// calls means changing templates/rbac.yaml and this list together.
fn expected_operator_rules() -> BTreeSet<String> {
    let mut want = BTreeSet::new();
    for kind in ["colonyservers", "financebees", "keyrotations", "maintenancewindows"] {
        want.insert(format!("{GROUP:?} {kind} get,list,watch"));
        want.insert(format!("{GROUP:?} {kind}/status patch"));
    }
    for line in [
        r#""apps" deployments create,get,list,patch,watch"#,
        r#""" configmaps create,get,list,patch,watch"#,
        r#""" services create,get,list,patch,watch"#,
        r#""" secrets create,get,list,update,watch"#,
        r#""" pods delete,get,list,watch"#,
        r#""events.k8s.io" events create,patch"#,
        // The FinanceBee finalizer, added and removed while a page is open.
        r#""colony.zyeute.io" financebees patch"#,
    ] {
        want.insert(line.to_string());
    }
    want
}

/// The leader Lease name the operator uses; the chart's Role names it.
fn operator_lease_name() -> String {
    colony_operator::runtime::leader::LEASE_NAME.to_string()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

// ---- no cluster needed -------------------------------------------------------------------

#[test]
fn chart_crds_are_the_generated_crds() {
    let generated = repo_root().join("crds");
    let chart = chart_dir().join("crds");
    let names = |dir: &Path| -> Vec<String> {
        yaml_files(dir).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
    };
    assert_eq!(
        names(&chart),
        names(&generated),
        "charts/colony-operator/crds/ must hold exactly the files of crds/: run `make crds`"
    );
    assert_eq!(names(&generated).len(), 4);
    for name in names(&generated) {
        let want = std::fs::read(generated.join(&name)).unwrap();
        let have = std::fs::read(chart.join(&name)).unwrap();
        assert!(want == have, "charts/colony-operator/crds/{name} differs from crds/{name}: run `make crds`");
    }
}

#[test]
fn rbac_template_explains_every_rule() {
    let text = std::fs::read_to_string(chart_dir().join("templates/rbac.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut rules = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("- apiGroups:") {
            rules += 1;
            let previous = lines[..i].iter().rev().find(|l| !l.trim().is_empty());
            assert!(
                previous.is_some_and(|l| l.trim_start().starts_with('#')),
                "templates/rbac.yaml line {}: every rule needs a comment saying why",
                i + 1
            );
        }
    }
    assert!(rules >= 8, "found {rules} rules");
}

#[tokio::test]
async fn gitops_examples_parse_and_cover_every_kind() {
    let dir = repo_root().join("examples/gitops");
    let files = yaml_files(&dir);
    assert!(files.len() >= 5, "{files:?}");
    let mut all = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
            .filter(|v| !v.is_null())
            .collect();
        assert!(!docs.is_empty(), "{}: empty", path.display());
        for d in &docs {
            assert!(
                !str_at(d, &["apiVersion"]).is_empty() && !str_at(d, &["kind"]).is_empty(),
                "{}: every document has apiVersion and kind",
                path.display()
            );
        }
        all.extend(docs);
    }
    let kinds_all = ["ColonyServer", "FinanceBee", "KeyRotation", "MaintenanceWindow"];

    // Argo CD: one Lua health check per kind, under the key Argo CD looks up, each reading the
    // kstatus conditions.
    let cm = all
        .iter()
        .find(|d| str_at(d, &["kind"]) == "ConfigMap" && str_at(d, &["metadata", "name"]) == "argocd-cm")
        .expect("an argocd-cm snippet");
    for kind in kinds_all {
        let key = format!("resource.customizations.health.{GROUP}_{kind}");
        let lua = str_at(cm, &["data", key.as_str()]);
        assert!(!lua.is_empty(), "argocd-cm has no {key}");
        for needle in ["observedGeneration", "\"Stalled\"", "\"Ready\"", "return hs"] {
            assert!(lua.contains(needle), "{key} does not handle {needle}");
        }
    }
    let apps: Vec<_> = all.iter().filter(|d| str_at(d, &["kind"]) == "Application").collect();
    assert_eq!(apps.len(), 2, "an Argo CD Application for the chart and one for the examples");
    assert!(apps.iter().any(|a| str_at(a, &["spec", "source", "path"]) == "charts/colony-operator"));
    assert!(apps.iter().any(|a| str_at(a, &["spec", "source", "path"]) == "examples"));

    // Flux: HelmRepository + HelmRelease of the chart, and a Kustomization health-checking every
    // kind.
    for kind in ["HelmRepository", "HelmRelease", "GitRepository"] {
        assert!(all.iter().any(|d| str_at(d, &["kind"]) == kind), "no Flux {kind}");
    }
    let checked: BTreeSet<&str> = all
        .iter()
        .filter(|d| str_at(d, &["apiVersion"]).starts_with("kustomize.toolkit.fluxcd.io/"))
        .filter_map(|d| get(d, &["spec", "healthChecks"]).and_then(Value::as_sequence))
        .flatten()
        .map(|c| str_at(c, &["kind"]))
        .collect();
    assert_eq!(checked, kinds_all.into_iter().collect(), "Flux healthChecks");

    // The Flux kustomization of the examples builds (Flux allows loading files outside the
    // kustomization directory, within the source; plain kustomize needs the flag).
    let out = kubectl(
        &["kustomize", "--load-restrictor", "LoadRestrictionsNone", dir.join("flux/examples").to_str().unwrap()],
        None,
    )
    .await
    .expect("kubectl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let built = documents(&String::from_utf8_lossy(&out.stdout));
    for kind in kinds_all {
        let d = one(&built, kind);
        assert_eq!(str_at(d, &["metadata", "namespace"]), "colony");
    }
    assert!(!built.iter().any(|d| str_at(d, &["kind"]) == "Secret"), "the placeholder Secrets stay out of GitOps");
}

#[tokio::test]
async fn helm_lint_passes() {
    let chart = chart_dir();
    let on_call = ["--set", "serviceMonitor.enabled=true,prometheusRule.enabled=true,dashboards.enabled=true"];
    for sets in
        [&[][..], &["--set", "watchNamespace=colony"][..], &["--set", "serviceMonitor.enabled=true"][..], &on_call[..]]
    {
        let mut args = vec!["lint", "--strict", "--kube-version", KUBE_VERSION, chart.to_str().unwrap()];
        args.extend(sets);
        let out = helm(&args).await;
        assert!(out.ok, "helm lint {sets:?}: {}{}", out.stdout, out.stderr);
    }
}

#[tokio::test]
async fn helm_template_renders_each_mode() {
    // Cluster-wide (the default): ClusterRole with exactly the controllers' rules, the leader
    // election Role for one named Lease, a hardened pod, no ServiceMonitor.
    let docs = template(&[], &[]).await;
    let want: BTreeSet<String> =
        ["ClusterRole", "ClusterRoleBinding", "Deployment", "Role", "RoleBinding", "Service", "ServiceAccount"]
            .into_iter()
            .map(String::from)
            .collect();
    assert_eq!(kinds(&docs), want);
    let cluster_role = one(&docs, "ClusterRole");
    assert_eq!(rules(cluster_role), expected_operator_rules());
    let rendered = serde_yaml::to_string(&docs).unwrap();
    assert!(!rendered.contains("'*'") && !rendered.contains("\"*\""), "no wildcard in RBAC");
    let lease = operator_lease_name();
    let leader = one(&docs, "Role");
    assert_eq!(str_at(leader, &["metadata", "namespace"]), "colony-system");
    assert_eq!(
        rules(leader),
        BTreeSet::from([
            r#""coordination.k8s.io" leases create"#.to_string(),
            format!(r#""coordination.k8s.io" leases get,patch ["{lease}"]"#),
        ])
    );
    let binding = one(&docs, "ClusterRoleBinding");
    let sa = one(&docs, "ServiceAccount");
    assert_eq!(str_at(&binding["subjects"][0], &["name"]), str_at(sa, &["metadata", "name"]));
    assert_eq!(str_at(&binding["subjects"][0], &["namespace"]), "colony-system");

    let deployment = one(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::Bool(true));
    assert_eq!(str_at(pod, &["securityContext", "seccompProfile", "type"]), "RuntimeDefault");
    assert_eq!(str_at(pod, &["serviceAccountName"]), str_at(sa, &["metadata", "name"]));
    let container = &pod["containers"][0];
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true));
    assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false));
    assert_eq!(sc["privileged"], Value::Bool(false));
    assert_eq!(strings(get(sc, &["capabilities", "drop"])), vec!["ALL"]);
    let args = strings(container.get("args"));
    assert_eq!(args.first().map(String::as_str), Some("run"));
    assert!(args.contains(&"--leader-elect".to_string()), "{args:?}");
    assert!(!args.iter().any(|a| a.starts_with("--namespace")), "{args:?}");
    assert!(!args.contains(&"--api-http2".to_string()), "kube's HTTP/1.1 client by default: {args:?}");
    assert_eq!(str_at(container, &["livenessProbe", "httpGet", "path"]), "/healthz");
    assert_eq!(str_at(container, &["readinessProbe", "httpGet", "path"]), "/readyz");
    let env: Vec<String> =
        container["env"].as_sequence().unwrap().iter().map(|e| str_at(e, &["name"]).to_string()).collect();
    assert!(env.contains(&"POD_NAMESPACE".into()) && env.contains(&"POD_NAME".into()));

    // One namespace: a Role and RoleBinding there instead of cluster-wide RBAC, bound to the
    // ServiceAccount in the release namespace, and `--namespace`.
    let docs = template(&["watchNamespace=colony"], &[]).await;
    let k = kinds(&docs);
    assert!(!k.contains("ClusterRole") && !k.contains("ClusterRoleBinding"), "{k:?}");
    let roles: Vec<_> = docs.iter().filter(|d| str_at(d, &["kind"]) == "Role").collect();
    assert_eq!(roles.len(), 2, "the operator's Role and the leader-election Role");
    let role = roles
        .iter()
        .find(|r| str_at(r, &["metadata", "namespace"]) == "colony")
        .expect("a Role in the watched namespace");
    assert_eq!(rules(role), expected_operator_rules());
    let binding = docs
        .iter()
        .find(|d| str_at(d, &["kind"]) == "RoleBinding" && str_at(d, &["metadata", "namespace"]) == "colony")
        .expect("a RoleBinding in the watched namespace");
    assert_eq!(str_at(binding, &["roleRef", "kind"]), "Role");
    assert_eq!(str_at(&binding["subjects"][0], &["namespace"]), "colony-system");
    let args = strings(one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0].get("args"));
    assert!(args.contains(&"--namespace=colony".to_string()), "{args:?}");

    // HTTP/2 to the API server when asked for.
    let docs = template(&["apiHttp2=true"], &[]).await;
    let args = strings(one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0].get("args"));
    assert!(args.contains(&"--api-http2".to_string()), "{args:?}");

    // ServiceMonitor only when asked for.
    let docs = template(&["serviceMonitor.enabled=true"], &[]).await;
    let monitor = one(&docs, "ServiceMonitor");
    assert_eq!(str_at(&monitor["spec"]["endpoints"][0], &["path"]), "/metrics");
    let docs = template(&["serviceMonitor.enabled=false"], &[]).await;
    assert!(!kinds(&docs).contains("ServiceMonitor"));

    // Without leader election: no Lease RBAC, and the old pod stops before the new one starts.
    let docs = template(&["leaderElection.enabled=false"], &[]).await;
    assert_eq!(docs.iter().filter(|d| str_at(d, &["kind"]) == "Role").count(), 0);
    let deployment = one(&docs, "Deployment");
    assert_eq!(str_at(deployment, &["spec", "strategy", "type"]), "Recreate");
    assert!(
        !strings(deployment["spec"]["template"]["spec"]["containers"][0].get("args"))
            .contains(&"--leader-elect".to_string())
    );

    // --include-crds renders the four CRDs of crds/.
    let docs = template(&[], &["--include-crds"]).await;
    let crds: BTreeSet<&str> = docs
        .iter()
        .filter(|d| str_at(d, &["kind"]) == "CustomResourceDefinition")
        .map(|d| str_at(d, &["metadata", "name"]))
        .collect();
    assert_eq!(
        crds,
        BTreeSet::from([
            "colonyservers.colony.zyeute.io",
            "financebees.colony.zyeute.io",
            "keyrotations.colony.zyeute.io",
            "maintenancewindows.colony.zyeute.io"
        ])
    );

    // Refused: two replicas without leader election, and values outside the schema.
    let chart = chart_dir();
    for sets in [
        &["replicaCount=2", "leaderElection.enabled=false"][..],
        &["logFormat=xml"][..],
        &["watchNamespace=Not_A_Namespace"][..],
        &["nosuchvalue=1"][..],
    ] {
        let mut args = vec!["template", "x", chart.to_str().unwrap(), "--kube-version", KUBE_VERSION];
        for s in sets {
            args.extend(["--set", s]);
        }
        let out = helm(&args).await;
        assert!(!out.ok, "helm template {sets:?} should fail");
    }
}

// ---- on the local control plane ----------------------------------------------------------

/// A Helm release, uninstalled when dropped (also when the test panics).
struct Release {
    name: String,
    namespace: String,
    installed: bool,
}

impl Release {
    async fn install(name: &str, namespace: &str, sets: &[&str]) -> Self {
        let chart = chart_dir();
        // The CRDs are cluster-wide and shared with the other tests: install_crds() applies
        // crds/ (which chart_crds_are_the_generated_crds proves identical to the chart's
        // crds/), and the release skips them.
        let mut args = vec![
            "install",
            name,
            chart.to_str().unwrap(),
            "--namespace",
            namespace,
            "--skip-crds",
            "--wait",
            "--timeout",
            "3m",
        ];
        for s in sets {
            args.extend(["--set", s]);
        }
        let out = helm(&args).await;
        assert!(out.ok, "helm install {name}: {}{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("colony-operator"), "NOTES.txt rendered: {}", out.stdout);
        Self { name: name.into(), namespace: namespace.into(), installed: true }
    }

    /// `<release>-colony-operator`: the Deployment, ServiceAccount and (Cluster)Role.
    fn fullname(&self) -> String {
        format!("{}-colony-operator", self.name)
    }

    fn service_account(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.fullname())
    }

    async fn uninstall(mut self) {
        let out = helm(&["uninstall", &self.name, "--namespace", &self.namespace, "--wait"]).await;
        assert!(out.ok, "helm uninstall {}: {}", self.name, out.stderr);
        self.installed = false;
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if self.installed {
            let _ = std::process::Command::new("helm")
                .args(["uninstall", &self.name, "--namespace", &self.namespace])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Deletes the named namespaces when the test panics (on success the test cleans up itself):
/// the control plane is shared with the other tests.
struct DeleteOnPanic(Vec<String>);

impl Drop for DeleteOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for ns in &self.0 {
                let _ = std::process::Command::new("kubectl")
                    .args(["delete", "namespace", ns, "--wait=false"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// `kubectl auth can-i` as `user`; `resource` may be `type/name`.
#[tokio::test]
async fn alerts_and_dashboard_render_only_when_asked() {
    // Off by default.
    let docs = template(&[], &[]).await;
    assert!(!kinds(&docs).contains("PrometheusRule"));
    assert!(!kinds(&docs).contains("ConfigMap"), "{:?}", kinds(&docs));

    let docs = template(
        &[
            "prometheusRule.enabled=true",
            "prometheusRule.labels.release=kube-prometheus-stack",
            "prometheusRule.alertLabels.team=payments",
            "prometheusRule.fallbackOnFor=45m",
            "dashboards.enabled=true",
            "dashboards.annotations.grafana_folder=Colony OS",
        ],
        &[],
    )
    .await;
    let rule = one(&docs, "PrometheusRule");
    assert_eq!(str_at(rule, &["apiVersion"]), "monitoring.coreos.com/v1");
    assert_eq!(str_at(rule, &["metadata", "namespace"]), "colony-system");
    assert_eq!(str_at(rule, &["metadata", "labels", "release"]), "kube-prometheus-stack");
    let alerts = rule["spec"]["groups"][0]["rules"].as_sequence().expect("rules");
    assert!(alerts.len() >= 8, "{} alerts", alerts.len());
    for alert in alerts {
        let name = str_at(alert, &["alert"]);
        assert_eq!(str_at(alert, &["labels", "team"]), "payments", "{name}");
        assert!(str_at(alert, &["expr"]).contains("colony_operator_"), "{name}");
    }
    let too_long = alerts.iter().find(|a| str_at(a, &["alert"]) == "ColonyFallbackOnTooLong").expect("fallback alert");
    assert_eq!(str_at(too_long, &["for"]), "45m");

    let config_map = one(&docs, "ConfigMap");
    assert_eq!(str_at(config_map, &["metadata", "labels", "grafana_dashboard"]), "1");
    assert_eq!(str_at(config_map, &["metadata", "annotations", "grafana_folder"]), "Colony OS");
    let json = str_at(config_map, &["data", "colony-operator.json"]);
    let board: serde_json::Value = serde_json::from_str(json).expect("the dashboard is JSON");
    assert_eq!(board["title"], "Colony operator");
    // The ConfigMap is a valid object for the API server (a server-side dry run).
    let yaml = serde_yaml::to_string(config_map).unwrap().replace("namespace: colony-system", "namespace: default");
    let out = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&yaml)).await.unwrap();
    assert!(out.status.success(), "dry run: {}", String::from_utf8_lossy(&out.stderr));

    // Another sidecar label, and another namespace for the dashboard.
    let docs = template(
        &["dashboards.enabled=true", "dashboards.label=my_dashboards", "dashboards.namespace=monitoring"],
        &[],
    )
    .await;
    let config_map = one(&docs, "ConfigMap");
    assert_eq!(str_at(config_map, &["metadata", "labels", "my_dashboards"]), "1");
    assert!(get(config_map, &["metadata", "labels", "grafana_dashboard"]).is_none());
    assert_eq!(str_at(config_map, &["metadata", "namespace"]), "monitoring");

    // The schema rejects a threshold that is no Prometheus duration.
    let chart = chart_dir();
    let out = helm(&[
        "template",
        "x",
        chart.to_str().unwrap(),
        "--kube-version",
        KUBE_VERSION,
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "prometheusRule.fallbackOnFor=30 minutes",
    ])
    .await;
    assert!(!out.ok && out.stderr.contains("fallbackOnFor"), "{}", out.stderr);
}

async fn can_i(user: &str, verb: &str, resource: &str, subresource: Option<&str>, namespace: &str) -> bool {
    let mut args = vec!["auth", "can-i", verb, resource, "--namespace", namespace, "--as", user];
    if let Some(s) = subresource {
        args.extend(["--subresource", s]);
    }
    let out = kubectl(&args, None).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("doesn't have a resource type"), "kubectl auth can-i {verb} {resource}: {stderr}");
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

/// Checks every (verb, resource, subresource, namespace, allowed) and reports all mismatches.
async fn check_rbac(user: &str, cases: &[(&str, &str, Option<&str>, &str, bool)]) {
    let mut wrong = Vec::new();
    for (verb, resource, sub, ns, allowed) in cases {
        let got = can_i(user, verb, resource, *sub, ns).await;
        if got != *allowed {
            wrong.push(format!(
                "{verb} {resource}{} in {ns}: {} but should be {}",
                sub.map(|s| format!("/{s}")).unwrap_or_default(),
                if got { "allowed" } else { "denied" },
                if *allowed { "allowed" } else { "denied" }
            ));
        }
    }
    assert!(wrong.is_empty(), "RBAC of {user}:\n{}", wrong.join("\n"));
}

async fn label_namespace(ns: &str, labels: &[&str]) {
    let mut args = vec!["label", "namespace", ns, "--overwrite"];
    args.extend(labels);
    let out = kubectl(&args, None).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

async fn wait_available(deployments: &Api<Deployment>, name: &str) {
    wait_for(&format!("Deployment {name} Available"), DEADLINE, || async {
        let d = deployments.get(name).await.map_err(|e| e.to_string())?;
        let available = d.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| {
            c.iter().any(|c| c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True"))
        });
        if available { Ok(()) } else { Err(format!("{:?}", d.status)) }
    })
    .await
}

#[tokio::test]
async fn chart_installs_under_restricted_pod_security_with_least_privilege_rbac() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-chart").await;
    let _guard = DeleteOnPanic(vec![ns.name.clone()]);
    label_namespace(
        &ns.name,
        &["pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/warn=restricted"],
    )
    .await;
    // The namespace really enforces `restricted`: an ordinary pod is refused.
    let probe = kubectl(
        &["run", "psa-probe", "--image=example.invalid/app:1", "--restart=Never", "--dry-run=server", "-n", &ns.name],
        None,
    )
    .await
    .unwrap();
    assert!(
        !probe.status.success() && String::from_utf8_lossy(&probe.stderr).contains("PodSecurity"),
        "the namespace should refuse a pod without a security context: {}",
        String::from_utf8_lossy(&probe.stderr)
    );

    let release_name = format!("chart-{}", ns.name.rsplit('-').next().unwrap());
    // Server-side dry run of everything the chart renders: the API server accepts it, and Pod
    // Security has no warning for the pod template.
    let chart = chart_dir();
    let rendered = helm(&[
        "template",
        &release_name,
        chart.to_str().unwrap(),
        "--namespace",
        &ns.name,
        "--kube-version",
        KUBE_VERSION,
    ])
    .await;
    assert!(rendered.ok, "{}", rendered.stderr);
    let dry =
        kubectl(&["apply", "--server-side", "--dry-run=server", "-n", &ns.name, "-f", "-"], Some(&rendered.stdout))
            .await
            .unwrap();
    let dry_err = String::from_utf8_lossy(&dry.stderr);
    assert!(dry.status.success(), "server-side dry run: {dry_err}");
    assert!(!dry_err.contains("PodSecurity"), "Pod Security warning: {dry_err}");

    let release = Release::install(&release_name, &ns.name, &[]).await;
    let deployments: Api<Deployment> = ns.api();
    wait_available(&deployments, &release.fullname()).await;
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={release_name}")))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 1, "one operator pod, admitted under `restricted`");

    // The ClusterRole works in every namespace; the Lease only in the release namespace.
    let sa = release.service_account();
    let lease = format!("leases.coordination.k8s.io/{}", operator_lease_name());
    let here = ns.name.as_str();
    let cs = "colonyservers.colony.zyeute.io";
    check_rbac(
        &sa,
        &[
            ("patch", cs, Some("status"), "default", true),
            ("patch", "financebees.colony.zyeute.io", Some("status"), "default", true),
            ("patch", "financebees.colony.zyeute.io", None, "default", true),
            ("patch", "keyrotations.colony.zyeute.io", Some("status"), here, true),
            ("patch", "maintenancewindows.colony.zyeute.io", Some("status"), here, true),
            ("watch", cs, None, "default", true),
            ("get", "maintenancewindows.colony.zyeute.io", None, "default", true),
            ("create", "deployments.apps", None, "default", true),
            ("patch", "deployments.apps", None, "default", true),
            ("watch", "configmaps", None, "default", true),
            ("create", "services", None, "default", true),
            ("get", "secrets", None, "default", true),
            ("update", "secrets", None, "default", true),
            ("delete", "pods", None, "default", true),
            ("create", "events.events.k8s.io", None, "default", true),
            ("patch", "events.events.k8s.io", None, "default", true),
            ("create", "leases.coordination.k8s.io", None, here, true),
            ("get", &lease, None, here, true),
            ("patch", &lease, None, here, true),
            // Nothing more.
            ("delete", "namespaces", None, "default", false),
            ("get", "nodes", None, "default", false),
            ("delete", "secrets", None, "default", false),
            ("delete", "deployments.apps", None, "default", false),
            ("update", "deployments.apps", None, "default", false),
            ("patch", cs, None, "default", false),
            ("update", cs, None, "default", false),
            ("delete", cs, None, "default", false),
            ("create", cs, None, "default", false),
            ("create", "pods", None, "default", false),
            ("create", "pods", Some("exec"), "default", false),
            ("create", "events", None, "default", false),
            ("delete", "configmaps", None, "default", false),
            ("get", "leases.coordination.k8s.io", None, "kube-system", false),
            ("get", "leases.coordination.k8s.io/kube-controller-manager", None, "kube-system", false),
            ("patch", "leases.coordination.k8s.io/someone-else", None, here, false),
            ("delete", &lease, None, here, false),
            ("create", "clusterrolebindings.rbac.authorization.k8s.io", None, "default", false),
            ("create", "customresourcedefinitions.apiextensions.k8s.io", None, "default", false),
            ("impersonate", "serviceaccounts", None, "default", false),
        ],
    )
    .await;

    let cluster_role = release.fullname();
    release.uninstall().await;
    let gone = kubectl(&["get", "clusterrole", &cluster_role], None).await.unwrap();
    assert!(!gone.status.success(), "helm uninstall removes the ClusterRole");
    ns.cleanup().await;
}

/// A kubeconfig for the local control plane that authenticates with `token` only.
async fn token_kubeconfig(token: &str, path: &Path) {
    let view = kubectl(&["config", "view", "--raw", "--minify", "-o", "json"], None).await.unwrap();
    let view: serde_json::Value = serde_json::from_slice(&view.stdout).unwrap();
    let cluster = view["clusters"][0]["cluster"].clone();
    assert!(cluster["server"].is_string(), "{view}");
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "local", "cluster": cluster }],
        "users": [{ "name": "operator", "user": { "token": token } }],
        "contexts": [{ "name": "operator", "context": { "cluster": "local", "user": "operator" } }],
        "current-context": "operator",
    });
    std::fs::write(path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

/// `kubectl get <what> -o json` items in `ns`.
async fn items(what: &str, ns: &str) -> Result<Vec<serde_json::Value>, String> {
    let out = kubectl(&["get", what, "-n", ns, "-o", "json"], None).await.map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

#[tokio::test]
async fn operator_runs_on_the_charts_namespaced_rbac_alone() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let home = TestNamespace::new(&client, "e2e-chart-home").await;
    let watched = TestNamespace::new(&client, "e2e-chart-watch").await;
    let _guard = DeleteOnPanic(vec![home.name.clone(), watched.name.clone()]);
    let release_name = format!("chart-{}", home.name.rsplit('-').next().unwrap());
    let watch_set = format!("watchNamespace={}", watched.name);
    let release = Release::install(&release_name, &home.name, &[&watch_set]).await;
    wait_available(&home.api(), &release.fullname()).await;

    // The Role covers the watched namespace only.
    let sa = release.service_account();
    let cs = "colonyservers.colony.zyeute.io";
    let lease = format!("leases.coordination.k8s.io/{}", operator_lease_name());
    check_rbac(
        &sa,
        &[
            ("patch", cs, Some("status"), &watched.name, true),
            ("create", "deployments.apps", None, &watched.name, true),
            ("delete", "pods", None, &watched.name, true),
            ("create", "events.events.k8s.io", None, &watched.name, true),
            ("get", &lease, None, &home.name, true),
            ("patch", cs, Some("status"), &home.name, false),
            ("patch", cs, Some("status"), "default", false),
            ("list", cs, None, "default", false),
            ("create", "deployments.apps", None, &home.name, false),
            ("get", "secrets", None, "default", false),
            ("get", &lease, None, &watched.name, false),
        ],
    )
    .await;

    // The operator binary with that ServiceAccount's token and nothing else, against the
    // examples (the runbook's deployment) in the watched namespace.
    let token =
        kubectl(&["create", "token", &release.fullname(), "-n", &home.name, "--duration=1h"], None).await.unwrap();
    assert!(token.status.success(), "{}", String::from_utf8_lossy(&token.stderr));
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
    let log_dir = repo_root().join("target/e2e-logs");
    std::fs::create_dir_all(&log_dir).unwrap();
    let kubeconfig = log_dir.join(format!("{release_name}.kubeconfig"));
    token_kubeconfig(&token, &kubeconfig).await;

    let examples = repo_root().join("examples");
    let applied = kubectl(&["apply", "--server-side", "-n", &watched.name, "-f", examples.to_str().unwrap()], None)
        .await
        .unwrap();
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));

    let log_path = log_dir.join(format!("{release_name}-operator.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let identity = format!("{release_name}-e2e");
    let mut operator = tokio::process::Command::new(colony_e2e::operator::binary())
        .args([
            "run",
            "--admin-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--namespace",
            &watched.name,
            "--leader-elect",
            "--leader-elect-namespace",
            &home.name,
            "--leader-elect-identity",
            &identity,
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info,kube=warn,colony_operator=debug")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("start colony-operator");
    let logs = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Leader election on the chart's Lease RBAC.
    let leases: Api<Lease> = home.api();
    wait_for(&format!("Lease held by {identity} (log: {})", log_path.display()), DEADLINE, || async {
        let lease = leases.get_opt(&operator_lease_name()).await.map_err(|e| e.to_string())?;
        let holder = lease.and_then(|l| l.spec).and_then(|s| s.holder_identity);
        if holder.as_deref() == Some(identity.as_str()) { Ok(()) } else { Err(format!("{holder:?}")) }
    })
    .await;

    // Every controller reconciled its kind and wrote status.
    wait_for(
        &format!("status.observedGeneration on all four kinds (log: {})", log_path.display()),
        DEADLINE,
        || async {
            let all = items("colony", &watched.name).await?;
            let pending: Vec<String> = all
                .iter()
                .filter(|o| o["status"]["observedGeneration"] != o["metadata"]["generation"])
                .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
                .collect();
            if all.len() == 4 && pending.is_empty() {
                Ok(())
            } else {
                Err(format!("{} objects, pending {pending:?}", all.len()))
            }
        },
    )
    .await;

    // The objects the controllers own: server and bee Deployments, the fallback ConfigMap.
    let deployments: Api<Deployment> = watched.api();
    let config_maps: Api<ConfigMap> = watched.api();
    wait_for("the server and bee Deployments and the fallback ConfigMap", DEADLINE, || async {
        let mut missing = Vec::new();
        for name in ["colonies-server", "finance-bee"] {
            if deployments.get_opt(name).await.map_err(|e| e.to_string())?.is_none() {
                missing.push(name);
            }
        }
        let fallback = config_maps.get_opt("colonies-server-fallback").await.map_err(|e| e.to_string())?;
        if !fallback.and_then(|c| c.data).is_some_and(|d| d.contains_key("USE_COLONY_OS")) {
            missing.push("colonies-server-fallback");
        }
        if missing.is_empty() { Ok(()) } else { Err(format!("missing {missing:?}")) }
    })
    .await;

    // A forced key rotation: the KeyRotation replaces the Secret (update) and records an Event.
    // The example registers the new key with its ColonyOS server first, which is not running
    // here: the new key is staged in the Secret (`pending.*`, an update all the same) and the
    // failed registration is an Event.
    let annotate = kubectl(
        &[
            "annotate",
            "keyrotation",
            "finance-bee-executor-key",
            "-n",
            &watched.name,
            "colony.zyeute.io/rotate-now=chart-e2e",
            "--overwrite",
        ],
        None,
    )
    .await
    .unwrap();
    assert!(annotate.status.success(), "{}", String::from_utf8_lossy(&annotate.stderr));
    let secrets: Api<Secret> = watched.api();
    wait_for("the rotated key Secret", DEADLINE, || async {
        let s = secrets.get("finance-bee-executor-key").await.map_err(|e| e.to_string())?;
        let keys: Vec<String> = s.data.unwrap_or_default().into_keys().collect();
        if keys.iter().any(|k| k == "previous.prvkey" || k == "pending.prvkey") {
            Ok(())
        } else {
            Err(format!("{keys:?}"))
        }
    })
    .await;
    wait_for("events.k8s.io Events from colony-operator", DEADLINE, || async {
        let events = items("events.events.k8s.io", &watched.name).await?;
        let reasons: BTreeSet<String> = events
            .iter()
            .filter(|e| e["reportingController"] == "colony-operator")
            .filter_map(|e| e["reason"].as_str().map(String::from))
            .collect();
        if reasons.contains("KeyRotated") || reasons.contains("RegistrationFailed") {
            Ok(())
        } else {
            Err(format!("{reasons:?}"))
        }
    })
    .await;

    if let Some(pid) = operator.id() {
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), operator.wait()).await;
    let _ = operator.kill().await;

    // Not one request was refused: none in the operator's log (reads included), none among the
    // writes in the API server's audit log.
    let text = logs();
    let refused: Vec<&str> = text.lines().filter(|l| l.to_ascii_lowercase().contains("forbidden")).collect();
    assert!(refused.is_empty(), "the operator was refused requests:\n{}", refused.join("\n"));
    let audit = colony_e2e::audit_log_text();
    let denied: Vec<String> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["user"]["username"] == sa.as_str() && e["responseStatus"]["code"] == 403)
        .map(|e| format!("{} {} {}", e["verb"], e["objectRef"]["resource"], e["objectRef"]["name"]))
        .collect();
    assert!(denied.is_empty(), "writes refused by RBAC: {denied:?}");

    let _ = std::fs::remove_file(&kubeconfig);
    release.uninstall().await;
    watched.cleanup().await;
    home.cleanup().await;
}
