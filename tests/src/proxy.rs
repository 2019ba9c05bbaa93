//! A TCP proxy in front of the local API server whose open connections can be cut without a
//! reset, two ways: black-holed (the proxy stops moving bytes but keeps both sockets open and
//! acknowledges what arrives, as a hung proxy or load balancer does), or their packets dropped
//! (iptables, as when the peer's node or a NAT entry is gone: nothing is acknowledged).
//! Connections opened afterwards pass. TLS goes through untouched (the API server's
//! certificate names 127.0.0.1, whatever the port).
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::repo_root;

pub struct BlackHoleProxy {
    pub port: u16,
    /// A copy of `$KUBECONFIG` whose server is this proxy.
    pub kubeconfig: PathBuf,
    accepted: Arc<AtomicUsize>,
    /// The client port of each connection open now (the black-holed ones stay open).
    open: Arc<Mutex<BTreeMap<usize, u16>>>,
    /// Connections numbered below this are black-holed.
    cutoff: watch::Sender<usize>,
}

impl BlackHoleProxy {
    /// A proxy in front of the server of `$KUBECONFIG` (an `https://host:port` URL), with a
    /// kubeconfig for it under target/e2e-logs named after `label`.
    pub async fn in_front_of_the_api_server(label: &str) -> Self {
        let path = std::env::var("KUBECONFIG").expect("KUBECONFIG");
        let text = std::fs::read_to_string(&path).expect("read the kubeconfig");
        let server = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("server:"))
            .map(str::trim)
            .expect("a server: URL in the kubeconfig")
            .to_string();
        let upstream = server.split_once("://").map_or(server.as_str(), |(_, a)| a).trim_end_matches('/').to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let host = upstream.rsplit_once(':').map_or(upstream.as_str(), |(h, _)| h);
        let kubeconfig = repo_root().join(format!("target/e2e-logs/{label}-kubeconfig"));
        std::fs::create_dir_all(kubeconfig.parent().unwrap()).unwrap();
        std::fs::write(&kubeconfig, text.replace(&server, &format!("https://{host}:{port}"))).unwrap();

        let accepted = Arc::new(AtomicUsize::new(0));
        let (cutoff, _) = watch::channel(0usize);
        let open: Arc<Mutex<BTreeMap<usize, u16>>> = Default::default();
        let (count, live, cut) = (accepted.clone(), open.clone(), cutoff.clone());
        tokio::spawn(async move {
            while let Ok((client, peer)) = listener.accept().await {
                let id = count.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(&upstream).await else { continue };
                let (live, cutoff) = (live.clone(), cut.subscribe());
                live.lock().unwrap().insert(id, peer.port());
                tokio::spawn(async move {
                    pipe(client, server, id, cutoff).await;
                    live.lock().unwrap().remove(&id);
                });
            }
        });
        Self { port, kubeconfig, accepted, open, cutoff }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap().len()
    }

    /// Drops every packet of the connections open now, both ways, until the guard is dropped
    /// (root and iptables, as the real-node tier needs too). Returns how many were cut.
    pub fn drop_packets(&self) -> (usize, DroppedPackets) {
        let ports: Vec<u16> = self.open.lock().unwrap().values().copied().collect();
        let mut guard = DroppedPackets { rules: Vec::new() };
        for client in &ports {
            for (from, to) in [(*client, self.port), (self.port, *client)] {
                let rule: Vec<String> = [
                    "INPUT",
                    "-i",
                    "lo",
                    "-p",
                    "tcp",
                    "--sport",
                    &from.to_string(),
                    "--dport",
                    &to.to_string(),
                    "-j",
                    "DROP",
                ]
                .map(String::from)
                .to_vec();
                let status = std::process::Command::new("iptables")
                    .args(["-w", "-I"])
                    .args(&rule)
                    .status()
                    .expect("run iptables (installed by .ci/run)");
                assert!(status.success(), "iptables -I {rule:?}");
                guard.rules.push(rule);
            }
        }
        (ports.len(), guard)
    }

    /// Silences every connection open now; returns how many are open.
    pub fn black_hole(&self) -> usize {
        self.cutoff.send_replace(self.connections());
        self.open()
    }
}

/// The iptables rules of [`BlackHoleProxy::drop_packets`], removed on drop.
pub struct DroppedPackets {
    rules: Vec<Vec<String>>,
}

impl Drop for DroppedPackets {
    fn drop(&mut self) {
        for rule in &self.rules {
            let _ = std::process::Command::new("iptables").args(["-w", "-D"]).args(rule).status();
        }
    }
}

async fn pipe(client: TcpStream, server: TcpStream, id: usize, mut cutoff: watch::Receiver<usize>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let (mut up, mut down) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        tokio::select! {
            n = client_read.read(&mut up) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if server_write.write_all(&up[..n]).await.is_err() { return },
            },
            n = server_read.read(&mut down) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if client_write.write_all(&down[..n]).await.is_err() { return },
            },
            cut = async { cutoff.wait_for(|&cut| id < cut).await.is_ok() } => {
                if !cut {
                    return; // the proxy is gone
                }
                // Hold both sockets open and move nothing, until the test's runtime ends.
                let _held = (client_read, client_write, server_read, server_write);
                match std::future::pending::<std::convert::Infallible>().await {}
            }
        }
    }
}
