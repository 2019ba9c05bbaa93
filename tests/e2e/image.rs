//! The operator's image (`make image`): the binary runs in it as it is, as user 65532 with a
//! read-only root filesystem, and the image holds nothing but the binary and the TLS roots.
use std::process::Command;

use colony_e2e::repo_root;

fn image() -> String {
    let path = repo_root().join("target/image/name");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} is missing: run `make image` first (make test does)", path.display()))
        .trim()
        .to_string()
}

fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .args(args)
        .output()
        .expect("podman is missing: apt-get install -y buildah podman runc (make test's .ci/run installs them)")
}

/// `podman run` as the image's user would run it in a restricted pod: user 65532, read-only
/// root, no network. crun cannot run on this machine kind's cgroup setup, runc can; podman's
/// default rlimits need CAP_SYS_RESOURCE, so they are given explicitly.
const PODMAN_RUN: [&str; 10] = [
    "run",
    "--rm",
    "--runtime",
    "runc",
    "--network",
    "none",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=32768:32768",
];

fn run_in_image(args: &[&str]) -> std::process::Output {
    let image = image();
    let mut all = PODMAN_RUN.to_vec();
    all.extend_from_slice(&["--user", "65532:65532", "--read-only", &image]);
    all.extend_from_slice(args);
    podman(&all)
}

#[test]
fn the_binary_runs_in_the_image_as_65532_read_only() {
    let out = run_in_image(&["version"]);
    assert!(out.status.success(), "version in the image failed: {}", String::from_utf8_lossy(&out.stderr));
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "version printed: {version}");

    let out = run_in_image(&["crd"]);
    assert!(out.status.success(), "crd in the image failed: {}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    for kind in ["ColonyServer", "FinanceBee", "KeyRotation", "MaintenanceWindow"] {
        assert!(printed.contains(&format!("kind: {kind}")), "crd output names {kind}");
    }
    // What the image prints is what crds/ holds (the image is the same build as the CRDs).
    let mut committed = String::new();
    let mut files: Vec<_> = std::fs::read_dir(repo_root().join("crds")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in files {
        committed.push_str(&std::fs::read_to_string(f).unwrap());
    }
    let words = |s: &str| s.split_whitespace().filter(|w| *w != "---").map(String::from).collect::<Vec<_>>();
    let (printed, committed) = (words(&printed), words(&committed));
    if let Some(at) = (0..printed.len().max(committed.len())).find(|&i| printed.get(i) != committed.get(i)) {
        let around = |w: &[String]| w[at.saturating_sub(8).min(w.len())..(at + 8).min(w.len())].join(" ");
        panic!(
            "the image's CRDs differ from crds/ (rebuild with `make image`) at word {at}: image `{}`, crds/ `{}`",
            around(&printed),
            around(&committed)
        );
    }
}

#[test]
fn the_image_holds_only_the_binary_and_tls_roots() {
    let image = image();
    let out = podman(&["image", "inspect", "--format", "{{.Config.User}} {{json .Config.Entrypoint}}", &image]);
    assert!(out.status.success(), "inspect: {}", String::from_utf8_lossy(&out.stderr));
    let inspect = String::from_utf8_lossy(&out.stdout);
    assert!(inspect.starts_with("65532"), "image user: {inspect}");
    assert!(inspect.contains("/colony-operator"), "entrypoint: {inspect}");

    // No shell: running /bin/sh in it fails.
    let mut args = PODMAN_RUN.to_vec();
    args.extend_from_slice(&["--entrypoint", "/bin/sh", &image, "-c", "true"]);
    let out = podman(&args);
    assert!(!out.status.success(), "the image has a shell");

    // The files in the image: the binary and the CA bundle, nothing else.
    let archive = repo_root().join("target/image/colony-operator.tar");
    let out = Command::new("tar").arg("-tf").arg(&archive).output().expect("tar");
    assert!(out.status.success(), "{} unreadable", archive.display());
    let mut files = Vec::new();
    for layer in String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.ends_with(".tar")) {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("tar -xOf '{}' '{}' | tar -t", archive.display(), layer))
            .output()
            .unwrap();
        files.extend(String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.ends_with('/')).map(String::from));
    }
    files.sort();
    assert_eq!(files, vec!["colony-operator", "etc/ssl/certs/ca-certificates.crt"], "files in the image");
    let size = std::fs::metadata(&archive).unwrap().len();
    println!("image archive: {:.1} MiB", size as f64 / 1048576.0);
}
