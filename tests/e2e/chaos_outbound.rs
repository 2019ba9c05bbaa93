//! Hostile ColonyOS endpoints (a black hole, 1 byte a second, a 1 GiB body, garbage, a
//! redirect loop) next to healthy servers probed every second: the healthy servers' probes
//! keep their rhythm and the operator's memory stays bounded. All traffic stays on 127.0.0.1.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use colony_e2e::chaos::{self, Row};
use colony_e2e::{DEADLINE, OperatorProcess, TestEndpoint, TestNamespace, apply_yaml, client, install_crds, wait_for};
use colony_operator::api::ColonyServer;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every hostile connection handler gives up after this long, whatever happens.
const HANDLER_LIFETIME: Duration = Duration::from_secs(150);
const RSS_LIMIT_KIB: u64 = 200 * 1024;

#[derive(Clone, Copy, Debug)]
enum Hostile {
    /// Accepts and never answers.
    BlackHole,
    /// A valid response head, one byte a second.
    Trickle,
    /// 200 and a 1 GiB body without Content-Length.
    Huge,
    /// Random bytes, then close.
    Garbage,
    /// 302 to itself, forever.
    RedirectLoop,
}

impl Hostile {
    fn name(self) -> &'static str {
        match self {
            Hostile::BlackHole => "black-hole",
            Hostile::Trickle => "trickle",
            Hostile::Huge => "huge-body",
            Hostile::Garbage => "garbage",
            Hostile::RedirectLoop => "redirect-loop",
        }
    }
}

async fn read_head(s: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
        match s.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

async fn handle(kind: Hostile, mut s: TcpStream, stop: Arc<AtomicBool>) {
    match kind {
        Hostile::BlackHole => {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Hostile::Trickle => {
            read_head(&mut s).await;
            let head = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n";
            for byte in head.iter().chain(std::iter::repeat(&b'x')) {
                if stop.load(Ordering::Relaxed) || s.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Hostile::Huge => {
            read_head(&mut s).await;
            if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n").await.is_err() {
                return;
            }
            let chunk = vec![b'7'; 64 * 1024];
            for _ in 0..(1usize << 30) / chunk.len() {
                if stop.load(Ordering::Relaxed) || s.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        }
        Hostile::Garbage => {
            read_head(&mut s).await;
            let junk: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
            let _ = s.write_all(&junk).await;
        }
        Hostile::RedirectLoop => {
            read_head(&mut s).await;
            let _ = s.write_all(b"HTTP/1.1 302 Found\r\nlocation: /health\r\ncontent-length: 0\r\n\r\n").await;
        }
    }
}

/// Starts a hostile server; returns its URL and a count of the connections it accepted.
async fn hostile(kind: Hostile, stop: Arc<AtomicBool>) -> (String, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let Ok(Ok((s, _))) = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await else {
                continue;
            };
            c.fetch_add(1, Ordering::SeqCst);
            let stop = stop.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(HANDLER_LIFETIME, handle(kind, s, stop)).await;
            });
        }
    });
    (url, count)
}

fn server_yaml(name: &str, url: &str, extra: &str) -> String {
    colony_e2e::fixtures::unmanaged_server(name, url, colony_e2e::fixtures::FAST_HEALTH, extra)
}

#[tokio::test]
async fn chaos_hostile_endpoints_do_not_slow_healthy_probes_or_grow_memory() {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, "chaos-outbound").await;
    let stop = Arc::new(AtomicBool::new(false));
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    op.wait_ready().await;

    // The flip notifications of the hostile servers go to a black hole as well.
    let (hole, _) = hostile(Hostile::BlackHole, stop.clone()).await;
    apply_yaml(
        &ns.name,
        &format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: hook\nstringData:\n  url: {hole}/hook\n"),
    )
    .await;
    let kinds = [Hostile::BlackHole, Hostile::Trickle, Hostile::Huge, Hostile::Garbage, Hostile::RedirectLoop];
    let mut hostiles = Vec::new();
    for kind in kinds {
        let (url, count) = hostile(kind, stop.clone()).await;
        let extra = format!(
            "  slo: {{metricsURL: {url}/metrics, for: 1m}}\n  fallback:\n    maxFlipsPerHour: 60\n    notify: {{urlSecretRef: {{name: hook, key: url}}, retries: 1, backoff: 1s}}\n"
        );
        apply_yaml(&ns.name, &server_yaml(kind.name(), &url, &extra)).await;
        hostiles.push((kind, count));
    }
    let mut healthy = Vec::new();
    for i in 0..3 {
        let endpoint = TestEndpoint::start().await;
        apply_yaml(&ns.name, &server_yaml(&format!("healthy-{i}"), &endpoint.url(), "")).await;
        healthy.push(endpoint);
    }

    // Every hostile server is probed and judged unhealthy; every healthy one is healthy.
    let servers: Api<ColonyServer> = ns.api();
    for (kind, count) in &hostiles {
        let name = kind.name();
        wait_for(&format!("{name} probed twice and Healthy=False"), DEADLINE, || async {
            let cs = servers.get(name).await.map_err(|e| e.to_string())?;
            let healthy = cs.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Healthy"));
            let n = count.load(Ordering::SeqCst);
            match healthy {
                Some(c) if c.status == "False" && n >= 2 => Ok(()),
                other => Err(format!("{n} connections, Healthy {:?}", other.map(|c| (&c.status, &c.message)))),
            }
        })
        .await;
    }
    for (i, endpoint) in healthy.iter().enumerate() {
        wait_for(&format!("healthy-{i} probed"), DEADLINE, || async {
            if endpoint.successes() >= 2 { Ok(()) } else { Err(format!("{} probes", endpoint.successes())) }
        })
        .await;
    }

    // The window: count the healthy servers' probes and sample the operator's RSS.
    let window = Duration::from_secs(chaos::count(20, 60) as u64);
    let before: Vec<u64> = healthy.iter().map(|e| e.successes()).collect();
    let hostile_before: Vec<u64> = hostiles.iter().map(|(_, c)| c.load(Ordering::SeqCst)).collect();
    let started = Instant::now();
    let mut max_rss = 0u64;
    while started.elapsed() < window {
        max_rss = max_rss.max(op.rss_kib().expect("the operator runs"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed();
    let counts: Vec<u64> = healthy.iter().zip(&before).map(|(e, b)| e.successes() - b).collect();
    let hostile_counts: Vec<u64> =
        hostiles.iter().zip(&hostile_before).map(|((_, c), b)| c.load(Ordering::SeqCst) - b).collect();
    stop.store(true, Ordering::Relaxed);

    // At a 1 s interval, `elapsed` seconds hold about that many probes; the slack (30 %, at
    // least 3) absorbs scheduling on a loaded machine. A probe stuck behind a hostile
    // server would lose most of them.
    let expected = elapsed.as_secs();
    let minimum = expected.saturating_sub((expected * 3 / 10).max(3));
    let rss_mib = max_rss as f64 / 1024.0;
    let figures = format!(
        "healthy probes in {:.0} s: {:?} (>= {minimum} each); hostile connections {:?}; max RSS {:.1} MiB",
        elapsed.as_secs_f64(),
        counts,
        kinds.iter().map(|k| k.name()).zip(&hostile_counts).collect::<Vec<_>>(),
        rss_mib
    );
    println!("{figures}");
    let slowed = counts.iter().filter(|c| **c < minimum).count();
    chaos::record(&Row {
        fault: "hostile endpoints (black hole, 1 B/s, 1 GiB body, garbage, redirect loop)".into(),
        injected: kinds.len(),
        lost: slowed,
        doubled: 0,
        stuck: usize::from(max_rss >= RSS_LIMIT_KIB),
        figures: figures.clone(),
    });
    assert_eq!(slowed, 0, "healthy servers lost probes: {figures}");
    assert!(max_rss < RSS_LIMIT_KIB, "RSS {rss_mib:.1} MiB: {figures}");
    // The operator kept probing the hostile servers too (they did not wedge their tasks).
    for ((kind, _), n) in hostiles.iter().zip(&hostile_counts) {
        assert!(*n >= 2, "{} was probed {n} times in the window", kind.name());
    }
    ns.cleanup().await;
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the openssl CLI, in
/// `dir`: ca.crt, srv.crt, srv.key.
fn make_private_ca(dir: &std::path::Path) {
    let script = r#"set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -days 1 \
  -subj /CN=colony-e2e-ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout srv.key -out srv.csr -subj /CN=127.0.0.1
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' > ext
openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out srv.crt -days 1 -extfile ext
"#;
    let out = std::process::Command::new("bash").arg("-c").arg(script).current_dir(dir).output().expect("openssl");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
}

/// `openssl s_server -www` (it answers every GET with 200 over TLS) with a certificate from a
/// fresh private CA, in a directory of the test's own; the CA's PEM and the server's URL.
fn tls_server(ns: &TestNamespace) -> (String, String, tokio::process::Child) {
    let dir = colony_e2e::repo_root().join(format!("target/e2e-tls/{}", ns.name));
    std::fs::create_dir_all(&dir).unwrap();
    make_private_ca(&dir);
    let port = colony_e2e::free_port();
    let server = tokio::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept", &format!("127.0.0.1:{port}"), "-cert", "srv.crt", "-key"])
        .arg("srv.key")
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl s_server");
    let ca = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
    (ca, format!("https://127.0.0.1:{port}"), server)
}

/// A namespace with its own operator, and a [`tls_server`] (keep it: dropping it stops it).
async fn with_tls_server(prefix: &str) -> (TestNamespace, OperatorProcess, (String, String, tokio::process::Child)) {
    let client = client().await;
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(&client, prefix).await;
    let op = OperatorProcess::start(&ns.name, &["--namespace", &ns.name]).await;
    op.wait_ready().await;
    let server = tls_server(&ns);
    (ns, op, server)
}

/// A ConfigMap `name` holding `ca` under `ca.crt`.
fn ca_config_map(name: &str, ca: &str) -> String {
    let indented: String = ca.lines().map(|l| format!("    {l}\n")).collect();
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  ca.crt: |\n{indented}")
}

/// Waits until server `name`'s Healthy condition has status `want`; its message then.
async fn wait_healthy(servers: &Api<ColonyServer>, name: &str, want: &str) -> String {
    let cs = colony_e2e::wait_server_condition(servers, name, "Healthy", want).await;
    cs.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Healthy").unwrap().message
}

#[tokio::test]
async fn a_private_ca_is_trusted_only_when_given() {
    let (ns, _op, (ca, url, _server)) = with_tls_server("e2e-private-ca").await;
    apply_yaml(&ns.name, &ca_config_map("private-ca", &ca)).await;
    apply_yaml(&ns.name, &server_yaml("with-ca", &url, "  tls: {caRef: {name: private-ca}}\n")).await;
    apply_yaml(&ns.name, &server_yaml("without-ca", &url, "")).await;

    let servers: Api<ColonyServer> = ns.api();
    for (name, want) in [("with-ca", "True"), ("without-ca", "False")] {
        wait_healthy(&servers, name, want).await;
    }
    ns.cleanup().await;
}

/// A caRef that names nothing yet (a typo, or the CA applied after the server): every probe
/// fails saying so, the fallback turns on and status says why; once the CA is there, the
/// server is healthy again and the fallback turns off by itself (the CA is not watched: the
/// server looks again while it is missing).
#[tokio::test]
async fn a_private_ca_not_there_yet_fails_the_probes_and_the_fallback_turns_on_until_it_is() {
    let (ns, _op, (ca, url, _server)) = with_tls_server("e2e-late-ca").await;
    let extra = "  tls: {caRef: {name: late-ca}}\n  fallback: {recoverAfter: 1s, minHold: 1s}\n";
    apply_yaml(&ns.name, &server_yaml("ca-later", &url, extra)).await;

    let servers: Api<ColonyServer> = ns.api();
    let message = wait_healthy(&servers, "ca-later", "False").await;
    assert!(message.contains("spec.tls.caRef") && message.contains("late-ca"), "{message}");
    let config_maps: Api<ConfigMap> = ns.api();
    colony_e2e::wait_use_colony_os(&config_maps, "ca-later-fallback", "false", "the fallback on").await;

    apply_yaml(&ns.name, &ca_config_map("late-ca", &ca)).await;
    wait_healthy(&servers, "ca-later", "True").await;
    colony_e2e::wait_use_colony_os(&config_maps, "ca-later-fallback", "true", "the fallback off").await;
    ns.cleanup().await;
}
