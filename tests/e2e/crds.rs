//! The CRDs on a real API server: they install, the examples are accepted, every resource
//! of the invalid corpus is rejected with a message naming the offending field, and
//! `kubectl explain` shows the field descriptions.
use colony_e2e::{TestNamespace, client, install_crds, kubectl, repo_root};

fn corpus() -> Vec<(String, String, String)> {
    let dir = repo_root().join("tests/fixtures/invalid");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("tests/fixtures/invalid") {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", path.display()))
            .trim()
            .to_string();
        out.push((path.file_name().unwrap().to_string_lossy().to_string(), expect, text));
    }
    out.sort();
    out
}

#[tokio::test]
async fn crds_install_and_examples_are_accepted() {
    let client = client().await;
    let names = install_crds(&client).await.unwrap();
    assert_eq!(names.len(), 4, "{names:?}");
    let ns = TestNamespace::new(&client, "e2e-examples").await;
    let examples = repo_root().join("examples");
    let out =
        kubectl(&["apply", "--server-side", "-n", &ns.name, "-f", examples.to_str().unwrap()], None).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "examples rejected: {}{}", stdout, String::from_utf8_lossy(&out.stderr));
    for kind in ["colonyserver", "financebee", "keyrotation", "maintenancewindow"] {
        assert!(stdout.contains(&format!("{kind}.colony.zyeute.io/")), "{kind} example applied: {stdout}");
    }
    let listed = kubectl(&["get", "colony", "-n", &ns.name, "-o", "name"], None).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), 4, "`kubectl get colony` lists all four kinds");
    ns.cleanup().await;
}

#[tokio::test]
async fn invalid_corpus_is_rejected_naming_the_field() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-invalid").await;
    let corpus = corpus();
    assert!(corpus.len() >= 25, "the corpus has at least 25 resources, found {}", corpus.len());
    let mut kinds = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for (file, expect, text) in &corpus {
        let kind = text.lines().find_map(|l| l.strip_prefix("kind: ")).unwrap_or("?").trim().to_string();
        kinds.insert(kind);
        let out = kubectl(&["create", "--dry-run=server", "-n", &ns.name, "-f", "-"], Some(text)).await.unwrap();
        let message = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            failures.push(format!("{file}: accepted, expected a rejection naming {expect:?}"));
        } else if !message.contains(expect.as_str()) {
            failures.push(format!("{file}: rejected without {expect:?}: {}", message.trim()));
        }
    }
    assert_eq!(kinds.len(), 4, "the corpus covers all four kinds: {kinds:?}");
    assert!(failures.is_empty(), "{} of {} failed:\n{}", failures.len(), corpus.len(), failures.join("\n"));
    ns.cleanup().await;
}

/// The other side of the corpus: values at the minimums, names at the limits, and cron shapes
/// CEL leaves to the operator are admitted (the rules reject no more than they must).
#[tokio::test]
async fn boundary_values_are_admitted() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "e2e-admitted").await;
    let dir = repo_root().join("tests/fixtures/admitted");
    let mut files: Vec<_> =
        std::fs::read_dir(&dir).expect("tests/fixtures/admitted").map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    let mut kinds = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        kinds.insert(text.lines().find_map(|l| l.strip_prefix("kind: ")).unwrap_or("?").trim().to_string());
        let out = kubectl(&["create", "--dry-run=server", "-n", &ns.name, "-f", "-"], Some(&text)).await.unwrap();
        if !out.status.success() {
            failures.push(format!("{}: {}", path.display(), String::from_utf8_lossy(&out.stderr).trim()));
        }
    }
    assert_eq!(kinds.len(), 4, "all four kinds: {kinds:?}");
    assert!(failures.is_empty(), "rejected:\n{}", failures.join("\n"));
    ns.cleanup().await;
}

#[tokio::test]
async fn kubectl_explain_shows_descriptions() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let text = colony_e2e::wait_for("kubectl explain to know the new CRD", colony_e2e::DEADLINE, || async {
        let out = kubectl(&["explain", "colonyserver.spec.health"], None).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() { Ok(text) } else { Err(String::from_utf8_lossy(&out.stderr).to_string()) }
    })
    .await;
    for field in ["path", "interval", "timeout", "failureThreshold", "successThreshold"] {
        assert!(text.contains(field), "explain lists {field}:\n{text}");
    }
    assert!(text.contains("DESCRIPTION"), "{text}");
    let description = text.split("FIELDS").next().unwrap();
    assert!(
        description.split("DESCRIPTION:").nth(1).is_some_and(|d| d.trim().len() > 20),
        "a real description:\n{text}"
    );
}
