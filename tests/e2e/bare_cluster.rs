//! The operator against an API server without the CRDs: it exits at once with a message
//! that says what to install. A second, throwaway control plane (etcd and kube-apiserver
//! only) keeps the shared one untouched. `kubectl colony` against it says the same.
use std::process::Stdio;
use std::time::Duration;

use colony_e2e::{operator, repo_root};

fn which(binary: &str) -> String {
    let out = std::process::Command::new("sh").arg("-c").arg(format!("command -v {binary}")).output().unwrap();
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!path.is_empty(), "{binary} is not on PATH: run through `make test` or `make e2e-test`");
    path
}

#[tokio::test]
async fn operator_exits_with_a_clear_message_when_the_crds_are_missing() {
    let name = format!("bare-{}", std::process::id());
    let workdir = repo_root().join("target/cluster/kwok");
    let kubeconfig = repo_root().join(format!("target/cluster/{name}.kubeconfig"));
    let kwokctl = |args: &[&str]| {
        std::process::Command::new(which("kwokctl"))
            .args(args)
            .env("KWOK_WORKDIR", &workdir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    let created = kwokctl(&[
        "create",
        "cluster",
        "--name",
        &name,
        "--runtime",
        "binary",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--kube-apiserver-binary",
        &which("kube-apiserver"),
        "--etcd-binary",
        &which("etcd"),
        "--kwok-controller-binary",
        &which("kwok"),
        "--disable",
        "kube-controller-manager,kube-scheduler,kwok-controller",
        "--wait",
        "120s",
    ]);
    assert!(created.status.success(), "second control plane: {}", String::from_utf8_lossy(&created.stderr));

    let run = tokio::process::Command::new(operator::binary())
        .args(["run", "--admin-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", &kubeconfig)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run).await;
    // kubectl colony against the same bare API server: a clear error, for a list and for
    // one object, naming the CRD and how to install it.
    let plugin = |args: &[&str]| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target"));
        std::process::Command::new(target.join("debug/kubectl-colony"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl-colony (cargo build -p kubectl-colony)")
    };
    let plugin_runs = [plugin(&["status", "-A"]), plugin(&["fallback", "on", "prod", "-n", "default"])];
    let _ = kwokctl(&["delete", "cluster", "--name", &name]);
    let _ = std::fs::remove_file(&kubeconfig);

    let out = out.expect("the operator exits instead of waiting").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a missing CRD is an error");
    assert!(stderr.contains("colonyservers.colony.zyeute.io is not installed"), "{stderr}");
    assert!(stderr.contains("colony-operator crd"), "the message says how to install them: {stderr}");

    // `status` lists the four kinds at once: whichever answers first is named.
    let kinds: [&[&str]; 2] =
        [&["colonyservers", "financebees", "keyrotations", "maintenancewindows"], &["colonyservers"]];
    for (run, plurals) in plugin_runs.iter().zip(kinds) {
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert!(
            plurals.iter().any(|p| stderr.contains(&format!("the {p}.colony.zyeute.io CRD is not installed"))),
            "{stderr}"
        );
        assert!(stderr.contains("kubectl apply --server-side -f crds/"), "{stderr}");
        assert!(!stderr.contains("prod not found"), "not an object's not-found: {stderr}");
    }
}
