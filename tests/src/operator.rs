//! The operator binary as a child process of a test.
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{free_port, repo_root, wait_for};

pub fn binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let path = target.join("debug/colony-operator");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p colony-operator` first (make test does)",
        path.display()
    );
    path
}

pub struct OperatorProcess {
    pub child: Child,
    pub admin_port: u16,
    pub log_path: PathBuf,
}

impl OperatorProcess {
    /// Starts `colony-operator run` with `args` and a fresh admin port; logs go to a file
    /// under target/e2e-logs named after `label`.
    pub async fn start(label: &str, args: &[&str]) -> Self {
        Self::start_with_env(label, args, &[]).await
    }

    /// [`OperatorProcess::start`] with extra environment variables.
    pub async fn start_with_env(label: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let admin_port = free_port();
        let log_dir = repo_root().join("target/e2e-logs");
        std::fs::create_dir_all(&log_dir).unwrap();
        let log_path = log_dir.join(format!("{label}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(binary())
            .arg("run")
            .arg("--admin-addr")
            .arg(format!("127.0.0.1:{admin_port}"))
            .args(args)
            .env("RUST_LOG", std::env::var("E2E_OPERATOR_LOG").unwrap_or_else(|_| "info,kube=warn".into()))
            .envs(env.iter().copied())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("start colony-operator");
        Self { child, admin_port, log_path }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// GET on the admin server: (status, body), or None when it does not answer.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let client = reqwest_lite::Client::new();
        client.get(&self.url(path)).await
    }

    pub async fn wait_ready(&self) {
        let what = format!("operator ready on /readyz (log: {})", self.log_path.display());
        wait_for(&what, crate::DEADLINE, || async {
            match self.get("/readyz").await {
                Some((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await
    }

    /// Reconciles `controller` has started so far, from the operator's own counter (0 before
    /// the first).
    pub async fn reconciles(&self, controller: &str) -> u64 {
        let series = format!("colony_operator_reconciliations_total{{controller=\"{controller}\"}} ");
        let (_, body) = self.get("/metrics").await.unwrap_or_default();
        body.lines().find_map(|l| l.strip_prefix(&series)).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(0.0)
            as u64
    }

    /// Waits until `controller` has started `more` reconciles beyond `since` (a value of
    /// [`OperatorProcess::reconciles`]): the proof that the operator looked, before a test
    /// asserts that nothing happened.
    pub async fn wait_reconciles(&self, controller: &str, since: u64, more: u64) {
        let what = format!("{more} more {controller} reconciles after {since}");
        wait_for(&what, crate::DEADLINE, || async {
            let now = self.reconciles(controller).await;
            if now >= since + more { Ok(()) } else { Err(format!("{now}")) }
        })
        .await
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to the process.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            crate::signal(pid, signal);
        }
    }

    /// The resident set size in KiB (VmRSS in /proc/PID/status), while the process runs.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Waits up to `deadline` for the process to exit; its exit code.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => None,
        }
    }

    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then wait for the exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => None,
        }
    }
}

/// A tiny HTTP/1.1 GET client over tokio, enough for the admin endpoints.
mod reqwest_lite {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub struct Client;

    impl Client {
        pub fn new() -> Self {
            Client
        }

        pub async fn get(&self, url: &str) -> Option<(u16, String)> {
            let rest = url.strip_prefix("http://")?;
            let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
            let mut stream = tokio::net::TcpStream::connect(host).await.ok()?;
            let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            stream.write_all(req.as_bytes()).await.ok()?;
            let mut buf = Vec::new();
            stream.read_to_end(&mut buf).await.ok()?;
            let text = String::from_utf8_lossy(&buf).to_string();
            let status = text.split_whitespace().nth(1)?.parse().ok()?;
            let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
            Some((status, body))
        }
    }
}
