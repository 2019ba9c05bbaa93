//! The GitHub workflows (.github/workflows) and what the release publishes:
//! - actionlint (built from its Go module by tests/tools/build.sh) accepts every workflow,
//!   their scripts included (shellcheck), and rejects a broken one (it really checks);
//! - CI runs `.ci/run`; the release runs on `v*` tags;
//! - the chart's default image is the one the release pipeline publishes:
//!   `ghcr.io/<owner>/colony-operator:<appVersion>`, and the chart's version, its appVersion
//!   and the workspace version are one version (the release checks them against the tag);
//!   `make image` tags its local build with the same name.
use std::path::{Path, PathBuf};

use colony_e2e::repo_root;
use serde_yaml::Value;

fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "{name} is not on PATH: build it with `tests/tools/build.sh {name}` and put the directory it prints \
             on PATH (`make e2e-test` and `make test` do both)"
        )
    })
}

fn actionlint(dir: &Path, files: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(tool("actionlint"))
        .args(["-no-color"])
        .args(files)
        .current_dir(dir)
        .output()
        .expect("run actionlint");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn workflow(name: &str) -> Value {
    let path = repo_root().join(".github/workflows").join(name);
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn actionlint_accepts_the_workflows_and_rejects_a_broken_one() {
    let root = repo_root();
    let (ok, out) = actionlint(&root, &["-verbose", ".github/workflows/ci.yml", ".github/workflows/release.yml"]);
    assert!(ok, "actionlint:\n{out}");
    // The workflows' `run:` scripts are checked too (actionlint runs shellcheck when found).
    assert!(
        !out.contains(r#"Rule "shellcheck" was disabled"#),
        "shellcheck is missing (apt-get install shellcheck; .ci/run installs it):\n{out}"
    );

    let dir = root.join("target/actionlint");
    std::fs::create_dir_all(&dir).unwrap();
    let broken = "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ github.no_such_context }}\n        \
                  shell: bash\n      - uses: actions/checkout@v4\n        with:\n          no-such-input: 1\n      - run: cd $HOME/x; \
                  ls\n";
    std::fs::write(dir.join("broken.yml"), broken).unwrap();
    let (ok, out) = actionlint(&dir, &["broken.yml"]);
    assert!(!ok && out.contains("no_such_context"), "actionlint must reject the broken workflow:\n{out}");
    assert!(out.contains("no-such-input"), "{out}");
    assert!(out.contains("shellcheck reported issue"), "shellcheck checks the scripts:\n{out}");
}

#[test]
fn ci_runs_the_ci_script_and_release_runs_on_version_tags() {
    let ci = workflow("ci.yml");
    let runs: Vec<&str> = ci["jobs"]
        .as_mapping()
        .unwrap()
        .values()
        .flat_map(|j| j["steps"].as_sequence().unwrap())
        .filter_map(|s| s["run"].as_str())
        .collect();
    assert!(runs.contains(&"bash .ci/run"), "{runs:?}");
    let release = workflow("release.yml");
    assert_eq!(release["on"]["push"]["tags"][0].as_str(), Some("v*"));
    let text = std::fs::read_to_string(repo_root().join(".github/workflows/release.yml")).unwrap();
    for needle in [
        "platforms: linux/amd64,linux/arm64",
        "cosign sign --yes",
        "sbom: true",
        "helm push",
        "oci://ghcr.io/${{ needs.verify.outputs.owner }}/charts",
        "ghcr.io/${{ needs.verify.outputs.owner }}/colony-operator",
        "crds/*.yaml",
        "kubectl-colony",
    ] {
        assert!(text.contains(needle), "release.yml has {needle}");
    }
}

#[test]
fn the_charts_default_image_is_what_the_release_publishes() {
    let root = repo_root();
    let chart: Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("charts/colony-operator/Chart.yaml")).unwrap())
            .unwrap();
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("charts/colony-operator/values.yaml")).unwrap())
            .unwrap();
    let app_version = chart["appVersion"].as_str().unwrap();
    assert_eq!(chart["version"].as_str(), Some(app_version), "chart version = appVersion");
    let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let workspace_version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \"").and_then(|v| v.strip_suffix('"')))
        .expect("workspace version");
    assert_eq!(workspace_version, app_version, "workspace version = appVersion");
    // The release publishes ghcr.io/<owner>/colony-operator:<version>; its verify job fails
    // unless values.yaml names that repository and leaves the tag to appVersion.
    let repository = values["image"]["repository"].as_str().unwrap();
    let owner = repository
        .strip_prefix("ghcr.io/")
        .and_then(|r| r.strip_suffix("/colony-operator"))
        .unwrap_or_else(|| panic!("image.repository {repository} is not ghcr.io/<owner>/colony-operator"));
    assert!(!owner.is_empty() && owner == owner.to_lowercase(), "{owner}");
    assert_eq!(values["image"]["tag"].as_str(), Some(""), "the tag defaults to appVersion");
    assert_eq!(values["image"]["digest"].as_str(), Some(""));
    let release = std::fs::read_to_string(root.join(".github/workflows/release.yml")).unwrap();
    assert!(
        release.contains(r#"if [ "$repo" != "$REGISTRY/$owner/colony-operator" ]; then"#),
        "the verify job checks it"
    );
    let image_sh = std::fs::read_to_string(root.join("tests/image/build.sh")).unwrap();
    assert!(
        image_sh.contains(&format!("IMAGE=\"${{IMAGE:-{repository}:$app_version}}\"")),
        "make image uses the same name"
    );
}
