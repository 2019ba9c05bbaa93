//! The custom resources of `colony.zyeute.io/v1alpha1`: ColonyServer, FinanceBee,
//! KeyRotation and MaintenanceWindow (field contract: the design's CRDS.md). The CRD YAML in
//! `crds/` is generated from these types by `make crds` (`UPDATE_CRDS=1 cargo test -p
//! colony-operator --lib api::tests::crds_are_up_to_date`); that test fails when it drifts.
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub mod colonyserver;
pub mod common;
pub mod duration;
pub mod financebee;
pub mod keyrotation;
pub mod maintenancewindow;

pub use colonyserver::*;
pub use common::*;
pub use duration::GoDuration;
pub use financebee::*;
pub use keyrotation::*;
pub use maintenancewindow::*;

/// Every CRD, in a stable order: ColonyServer, FinanceBee, KeyRotation, MaintenanceWindow.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![ColonyServer::crd(), FinanceBee::crd(), KeyRotation::crd(), MaintenanceWindow::crd()]
}

/// File name of a CRD in `crds/`: `<kind lowercase>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.spec.names.kind.to_lowercase())
}

const GENERATED_HEADER: &str = "# Generated from operator/src/api by `make crds`. Do not edit.\n";

/// One CRD as a YAML document, exactly as committed in `crds/`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> String {
    let body = serde_yaml::to_string(crd).expect("a CustomResourceDefinition serializes to YAML");
    format!("{GENERATED_HEADER}{body}")
}

/// Every CRD as one multi-document YAML stream (`colony-operator crd | kubectl apply -f -`).
pub fn all_crds_yaml() -> String {
    crds().iter().map(|crd| format!("---\n{}", crd_yaml(crd))).collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde::Deserialize;
    use serde_json::Value;

    use super::*;

    fn repo_root() -> PathBuf {
        // At run time first: the compiled-in path is stale when a shared target dir serves a
        // checkout somewhere else.
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        manifest_dir.parent().expect("operator/ has a parent").to_path_buf()
    }

    fn schema_json(crd: &CustomResourceDefinition) -> Value {
        let schema = crd.spec.versions[0].schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).expect("schema");
        serde_json::to_value(schema).unwrap()
    }

    /// `UPDATE_CRDS=1` writes `crds/*.yaml`; otherwise the committed files must equal the types.
    #[test]
    fn crds_are_up_to_date() {
        let dir = repo_root().join("crds");
        let update = std::env::var("UPDATE_CRDS").is_ok_and(|v| v == "1" || v == "true");
        let mut stale = Vec::new();
        for crd in crds() {
            let path = dir.join(crd_file_name(&crd));
            let want = crd_yaml(&crd);
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &want).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(have) if have == want => {}
                Ok(_) => stale.push(format!("{} differs from the Rust types", path.display())),
                Err(e) => stale.push(format!("{}: {e}", path.display())),
            }
        }
        assert!(
            stale.is_empty(),
            "CRD files are stale; regenerate with `make crds` (UPDATE_CRDS=1 cargo test -p colony-operator --lib api::tests::crds_are_up_to_date):\n{}",
            stale.join("\n")
        );
    }

    #[test]
    fn crds_have_names_columns_and_status() {
        let expect = [
            ("ColonyServer", "colonyservers", "cs", vec!["Ready", "Healthy", "Fallback", "Image", "Age"]),
            ("FinanceBee", "financebees", "fb", vec!["Ready", "Available", "Replicas", "Image", "Age"]),
            ("KeyRotation", "keyrotations", "kr", vec!["Ready", "Revision", "Last", "Next", "Age"]),
            ("MaintenanceWindow", "maintenancewindows", "mw", vec!["Ready", "Phase", "Next", "Age"]),
        ];
        let all = crds();
        assert_eq!(all.len(), expect.len());
        for (crd, (kind, plural, short, columns)) in all.iter().zip(expect) {
            assert_eq!(crd.spec.names.kind, kind);
            assert_eq!(crd.spec.names.plural, plural);
            assert_eq!(crd.metadata.name.as_deref(), Some(format!("{plural}.{GROUP}").as_str()));
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.scope, "Namespaced");
            assert_eq!(crd.spec.names.short_names.as_deref(), Some(&[short.to_string()][..]));
            assert_eq!(crd.spec.names.categories.as_deref(), Some(&[CATEGORY.to_string()][..]));
            assert_eq!(crd_file_name(crd), format!("{}.yaml", kind.to_lowercase()));
            assert_eq!(crd.spec.versions.len(), 1);
            let v = &crd.spec.versions[0];
            assert_eq!(v.name, VERSION);
            assert!(v.served && v.storage);
            assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "{kind}: status subresource");
            let names: Vec<&str> = v.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
            assert_eq!(names, columns, "{kind}: printer columns");
            let ready = &v.additional_printer_columns.as_ref().unwrap()[0];
            assert_eq!(ready.json_path, r#".status.conditions[?(@.type=="Ready")].status"#);
            let schema = schema_json(crd);
            assert!(schema["properties"]["status"]["properties"]["conditions"].is_object(), "{kind}: conditions");
            assert!(schema["description"].as_str().is_some_and(|d| !d.starts_with("Auto-generated")), "{kind}: doc");
        }
    }

    #[test]
    fn all_crds_yaml_is_a_stream_of_four_documents() {
        let all = all_crds_yaml();
        assert_eq!(all.matches("\n---\n").count() + usize::from(all.starts_with("---\n")), 4);
        for crd in crds() {
            assert!(all.contains(&format!("kind: {}\n", crd.spec.names.kind)));
        }
    }

    /// Where an embedded Kubernetes type starts, its own (upstream) descriptions apply; we only
    /// require the field itself to be described.
    const EMBEDDED: &[&str] = &["resources", "env", "envFrom", "tolerations", "affinity", "conditions", "financeBees"];

    fn missing_descriptions(schema: &Value, path: &str, out: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                let here = format!("{path}.{name}");
                let described = prop.get("description").and_then(Value::as_str).is_some_and(|d| !d.trim().is_empty());
                if !described {
                    out.push(here.clone());
                }
                if !EMBEDDED.contains(&name.as_str()) {
                    missing_descriptions(prop, &here, out);
                }
            }
        }
        if let Some(items) = schema.get("items") {
            missing_descriptions(items, &format!("{path}[]"), out);
        }
        if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            missing_descriptions(additional, &format!("{path}{{}}"), out);
        }
    }

    #[test]
    fn every_property_has_a_description() {
        let mut missing = Vec::new();
        for crd in crds() {
            let schema = schema_json(&crd);
            let mut here = Vec::new();
            missing_descriptions(&schema, &crd.spec.names.kind, &mut here);
            // apiVersion, kind and metadata are the API server's; kubectl explain documents them.
            here.retain(|p| {
                let top = p.split_once('.').map(|(_, rest)| rest).unwrap_or_default();
                !matches!(top, "apiVersion" | "kind" | "metadata")
            });
            missing.extend(here);
        }
        assert!(missing.is_empty(), "properties without a description:\n{}", missing.join("\n"));
    }

    /// Every string property that a CEL rule reads has a bounded length, and every duration is
    /// validated by the Go duration pattern.
    #[test]
    fn durations_use_the_go_pattern() {
        fn walk(schema: &Value, path: &str, out: &mut Vec<String>) {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, prop) in props {
                    walk(prop, &format!("{path}.{name}"), out);
                }
            }
            if schema.get("pattern").and_then(Value::as_str) == Some(crate::duration::GO_DURATION_PATTERN) {
                out.push(path.to_string());
            }
        }
        let mut found = Vec::new();
        for crd in crds() {
            walk(&schema_json(&crd), &crd.spec.names.kind, &mut found);
        }
        for want in [
            "ColonyServer.spec.health.interval",
            "ColonyServer.spec.health.timeout",
            "ColonyServer.spec.slo.for",
            "ColonyServer.spec.fallback.recoverAfter",
            "ColonyServer.spec.fallback.minHold",
            "ColonyServer.spec.fallback.notify.backoff",
            "ColonyServer.spec.rollback.progressDeadline",
            "ColonyServer.spec.rollback.stableAfter",
            "FinanceBee.spec.pollTimeout",
            "FinanceBee.spec.restart.window",
            "FinanceBee.spec.restart.stuckAfter",
            "FinanceBee.spec.escalation.after",
            "FinanceBee.spec.escalation.webhook.backoff",
            "KeyRotation.spec.interval",
            "MaintenanceWindow.spec.schedule.duration",
            "MaintenanceWindow.spec.verify.timeout",
        ] {
            assert!(found.iter().any(|f| f == want), "{want} is not validated as a duration; found {found:?}");
        }
    }

    #[test]
    fn schema_defaults_follow_the_contract() {
        let cs = schema_json(&ColonyServer::crd());
        let spec = &cs["properties"]["spec"]["properties"];
        assert_eq!(spec["managed"]["default"], true);
        assert_eq!(spec["port"]["default"], 50080);
        assert_eq!(spec["replicas"]["default"], 1);
        assert_eq!(spec["health"]["default"]["interval"], "10s");
        assert_eq!(spec["health"]["default"]["path"], "/health");
        assert_eq!(spec["fallback"]["default"]["key"], "USE_COLONY_OS");
        assert_eq!(spec["fallback"]["default"]["maxFlipsPerHour"], 4);
        assert!(spec["fallback"]["default"].get("configMapName").is_none(), "operator default");
        assert!(spec.get("endpoint").unwrap().get("default").is_none(), "operator default");
        assert_eq!(spec["rollback"]["default"]["automatic"], true);
        assert_eq!(spec["slo"]["properties"]["minCompletionRate"]["default"], 0.99);
        assert_eq!(spec["slo"]["properties"]["for"]["default"], "5m");
        assert_eq!(spec["database"]["properties"]["port"]["default"], 5432);

        let fb = schema_json(&FinanceBee::crd());
        let spec = &fb["properties"]["spec"]["properties"];
        assert_eq!(
            fb["properties"]["spec"]["required"],
            serde_json::json!(["colonyName", "colonyServerRef", "executorKeySecretRef", "image"])
        );
        assert_eq!(spec["executorType"]["default"], "finance-worker");
        assert_eq!(spec["restart"]["default"]["window"], "30m");
        assert_eq!(spec["escalation"]["default"]["after"], "15m");
        assert!(spec["resources"].get("default").is_none(), "operator default");

        let kr = schema_json(&KeyRotation::crd());
        let spec = &kr["properties"]["spec"]["properties"];
        assert_eq!(spec["timeZone"]["default"], "UTC");
        assert!(spec["schedule"].get("default").is_none(), "exactly one of schedule/interval");
        assert_eq!(spec["keyType"]["enum"], serde_json::json!(["secp256k1", "ed25519", "random"]));
        assert_eq!(
            spec["targets"]["items"]["properties"]["kind"]["enum"],
            serde_json::json!(["FinanceBee", "ColonyServer", "Deployment"])
        );
        assert_eq!(
            spec["colonyOS"]["properties"]["identity"]["enum"],
            serde_json::json!(["executor", "user", "colony", "server"])
        );

        let mw = schema_json(&MaintenanceWindow::crd());
        let spec = &mw["properties"]["spec"]["properties"];
        assert_eq!(spec["actions"]["default"], serde_json::json!({"enableFallback": true, "stopFinanceBees": true}));
        assert_eq!(spec["verify"]["default"]["onFailure"], "keepFallback");
        assert_eq!(spec["verify"]["properties"]["onFailure"]["enum"], serde_json::json!(["keepFallback", "restore"]));
        assert_eq!(spec["schedule"]["properties"]["start"]["format"], "date-time");
    }

    #[test]
    fn cel_rules_are_attached_where_the_fields_are() {
        let rules = |crd: &CustomResourceDefinition, pointer: &str| -> Vec<String> {
            schema_json(crd)
                .pointer(pointer)
                .and_then(|s| s.get("x-kubernetes-validations"))
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|r| r["rule"].as_str().unwrap().to_string()).collect())
                .unwrap_or_default()
        };
        let cs = rules(&ColonyServer::crd(), "/properties/spec");
        assert!(cs.iter().any(|r| r == "!self.managed || has(self.image)"), "{cs:?}");
        let kr = rules(&KeyRotation::crd(), "/properties/spec");
        assert!(kr.iter().any(|r| r == "has(self.schedule) != has(self.interval)"), "{kr:?}");
        assert!(kr.iter().any(|r| r.contains(AT_MOST_HOURLY_PATTERN)), "the hourly schedule rule: {kr:?}");
        let kr_cos = rules(&KeyRotation::crd(), "/properties/spec/properties/colonyOS");
        assert_eq!(kr_cos.len(), 1, "{kr_cos:?}");
        let mw = rules(&MaintenanceWindow::crd(), "/properties/spec/properties/schedule");
        assert_eq!(mw.len(), 5 + CRON_PERIODS.len(), "{mw:?}");
        for p in &CRON_PERIODS {
            assert!(mw.iter().any(|r| r.contains(p.pattern)), "no rule for cron {}: {mw:?}", p.what);
        }
        let health = rules(&ColonyServer::crd(), "/properties/spec/properties/health");
        assert_eq!(health, ["duration(self.timeout) <= duration(self.interval)"]);
        // Names: the kinds whose name becomes a label value or a Service name say so at the root.
        let root = |crd: &CustomResourceDefinition| rules(crd, "");
        assert_eq!(root(&ColonyServer::crd()).len(), 2);
        assert!(root(&ColonyServer::crd())[1].contains(DNS_1035_LABEL_PATTERN));
        assert_eq!(root(&FinanceBee::crd()), [name_fits_label_rule()]);
        assert!(root(&KeyRotation::crd()).is_empty() && root(&MaintenanceWindow::crd()).is_empty());
    }

    /// Every duration carries a minimum (a CEL rule built from the const next to its field),
    /// and its description states that minimum.
    #[test]
    fn every_duration_has_a_documented_minimum() {
        fn walk(schema: &Value, path: &str, out: &mut Vec<String>) {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, prop) in props {
                    walk(prop, &format!("{path}.{name}"), out);
                }
            }
            if schema.get("pattern").and_then(Value::as_str) != Some(crate::duration::GO_DURATION_PATTERN) {
                return;
            }
            let rules: Vec<&str> = schema["x-kubernetes-validations"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["rule"].as_str())
                .collect();
            let min = rules.iter().find_map(|r| r.strip_prefix("duration(self) >= duration('")?.strip_suffix("')"));
            let Some(min) = min else {
                out.push(format!("{path}: no minimum rule ({rules:?})"));
                return;
            };
            let description = schema["description"].as_str().unwrap_or_default();
            let description = description.split_whitespace().collect::<Vec<_>>().join(" ");
            if !description.contains(&format!("At least `{min}`")) {
                out.push(format!("{path}: the description does not say \"At least `{min}`\": {description:?}"));
            }
        }
        let mut problems = Vec::new();
        for crd in crds() {
            walk(&schema_json(&crd), &crd.spec.names.kind, &mut problems);
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        let kr = schema_json(&KeyRotation::crd());
        assert_eq!(
            kr.pointer("/properties/spec/properties/interval/x-kubernetes-validations/0/rule"),
            Some(&Value::from("duration(self) >= duration('1h')")),
            "the rotation interval's floor, as the brief's incident requires"
        );
    }

    /// The defaults satisfy every rule they are checked against.
    #[test]
    fn defaults_pass_the_controller_side_checks() {
        let cs = ColonyServerSpec { image: Some("colonyos/colonies:v1.9.12".into()), ..Default::default() };
        assert_eq!(cs.check("colonies"), Ok(()));
        let cs = ColonyServerSpec { slo: Some(SloSpec::default()), ..cs };
        assert_eq!(cs.check("colonies"), Ok(()));
        assert_eq!(FinanceBeeSpec::default().check("finance-bee"), Ok(()));
    }

    #[test]
    fn controller_side_checks_name_the_rule() {
        let cs = ColonyServerSpec { image: Some("i".into()), ..Default::default() };
        let e = cs.check("colonies.prod").unwrap_err();
        assert!(e.contains("DNS-1035") && e.contains("Service"), "{e}");
        let unmanaged = ColonyServerSpec { managed: false, endpoint: Some("http://c:1".into()), ..Default::default() };
        assert_eq!(unmanaged.check("colonies.prod"), Ok(()), "no Service for an unmanaged server");
        let e = unmanaged.check(&"c".repeat(64)).unwrap_err();
        assert!(e.contains("at most 63") && e.contains("label value"), "{e}");
        let mut cs = cs;
        cs.health.timeout = "11s".into();
        assert!(cs.check("colonies").unwrap_err().contains("must not be longer than spec.health.interval"));
        cs.health.timeout = "10s".into();
        assert_eq!(cs.check("colonies"), Ok(()), "a timeout equal to the interval is fine");
        cs.health.interval = "500ms".into();
        assert!(cs.check("colonies").unwrap_err().starts_with("spec.health.interval"));
        let mut fb = FinanceBeeSpec::default();
        fb.restart.window = "59s".into();
        assert!(fb.check("bee").unwrap_err().starts_with("spec.restart.window"));
        let mut fb = FinanceBeeSpec::default();
        fb.rollback.progress_deadline = "10s".into();
        assert!(fb.check("bee").unwrap_err().starts_with("spec.rollback.progressDeadline"));
        let mut fb = FinanceBeeSpec::default();
        fb.escalation.webhook =
            Some(WebhookSpec { backoff: "0s".into(), ..WebhookSpec::new(SecretKeySelector::new("s", "k")) });
        assert!(fb.check("bee").unwrap_err().starts_with("spec.escalation.webhook.backoff"));
        assert!(FinanceBeeSpec::default().check(&"b".repeat(64)).is_err());
    }

    /// Each example in `examples/` deserializes into its type (secrets.yaml holds plain Secrets).
    #[test]
    fn examples_deserialize() {
        let dir = repo_root().join("examples");
        let seen = check_examples(&dir, &[]);
        for kind in ["ColonyServer", "FinanceBee", "KeyRotation", "MaintenanceWindow"] {
            assert!(seen.iter().any(|k| k == kind), "no example of {kind} in {}", dir.display());
        }
    }

    /// `make dev`'s examples for the real node (examples/real-node) too; their PostgreSQL is
    /// plain Kubernetes objects.
    #[test]
    fn real_node_examples_deserialize() {
        let dir = repo_root().join("examples/real-node");
        let seen = check_examples(&dir, &["Service", "Deployment"]);
        for kind in ["ColonyServer", "FinanceBee"] {
            assert!(seen.iter().any(|k| k == kind), "no example of {kind} in {}", dir.display());
        }
    }

    /// Deserializes and checks every resource of our kinds in the YAML files of `dir` (but
    /// secrets.yaml), and returns their kinds; `other_kinds` are skipped, any other kind fails.
    fn check_examples(dir: &std::path::Path, other_kinds: &[&str]) -> Vec<String> {
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") || path.file_name().is_some_and(|n| n == "secrets.yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value = Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                if value.is_null() {
                    continue;
                }
                let kind = value["kind"].as_str().unwrap_or_default().to_string();
                if other_kinds.contains(&kind.as_str()) {
                    continue;
                }
                assert_eq!(value["apiVersion"], API_VERSION, "{}", path.display());
                // Each example also passes the controller-side checks of the schema's rules.
                let now = chrono::Utc::now();
                let result: Result<Result<(), String>, serde_json::Error> = match kind.as_str() {
                    "ColonyServer" => {
                        serde_json::from_value::<ColonyServer>(value).map(|o| o.spec.check(&o.metadata.name.unwrap()))
                    }
                    "FinanceBee" => {
                        serde_json::from_value::<FinanceBee>(value).map(|o| o.spec.check(&o.metadata.name.unwrap()))
                    }
                    "KeyRotation" => serde_json::from_value::<KeyRotation>(value).map(|_| Ok(())),
                    "MaintenanceWindow" => {
                        serde_json::from_value::<MaintenanceWindow>(value).map(|o| o.spec.check(now))
                    }
                    other => panic!("{}: unexpected kind {other:?}", path.display()),
                };
                let checked = result.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                checked.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen.push(kind);
            }
        }
        seen
    }

    /// The invalid corpus: one document per file, a first line `# expect: <text>`, one of our
    /// kinds, a name, and at least five files per kind. (Whether the API server rejects each one
    /// with that text is checked end to end.)
    #[test]
    fn invalid_corpus_is_well_formed() {
        let dir = repo_root().join("tests/fixtures/invalid");
        let mut per_kind = std::collections::BTreeMap::<String, usize>::new();
        let mut names = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let first = text.lines().next().unwrap_or_default();
            let expect = first
                .strip_prefix("# expect: ")
                .unwrap_or_else(|| panic!("{}: first line must be `# expect: ...`", path.display()));
            assert!(!expect.trim().is_empty(), "{}", path.display());
            let docs: Vec<Value> =
                serde_yaml::Deserializer::from_str(&text).map(|d| Value::deserialize(d).unwrap()).collect();
            assert_eq!(docs.len(), 1, "{}: exactly one document", path.display());
            let doc = &docs[0];
            assert_eq!(doc["apiVersion"], API_VERSION, "{}", path.display());
            let kind = doc["kind"].as_str().unwrap_or_default();
            assert!(
                ["ColonyServer", "FinanceBee", "KeyRotation", "MaintenanceWindow"].contains(&kind),
                "{}",
                path.display()
            );
            let name = doc["metadata"]["name"].as_str().unwrap_or_else(|| panic!("{}: metadata.name", path.display()));
            assert!(names.insert(name.to_string()), "{}: duplicate name {name}", path.display());
            *per_kind.entry(kind.to_string()).or_default() += 1;
        }
        assert!(per_kind.values().sum::<usize>() >= 28, "{per_kind:?}");
        for kind in ["ColonyServer", "FinanceBee", "KeyRotation", "MaintenanceWindow"] {
            assert!(per_kind.get(kind).copied().unwrap_or(0) >= 5, "fewer than 5 invalid {kind}: {per_kind:?}");
        }
    }
}
