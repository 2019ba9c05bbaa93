//! The real ColonyOS server for end-to-end tests: a PostgreSQL of its own (initdb + pg_ctl,
//! data under target/colonyos/), `colonies server start` (built by `tests/cluster/build.sh`
//! at the version pinned in tests/cluster/versions.env) with its embedded etcd and relay on
//! free ports, and a colony set up with the real CLI: a colony, an approved executor and a
//! user. Everything is stopped when the value is dropped.
//!
//! We run as root, so PostgreSQL runs as the `postgres` user (it refuses root).
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::{DEADLINE, free_port, repo_root};

/// A secp256k1 key as the CLI prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    pub prvkey: String,
    pub id: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

/// Settings of one run of PostgreSQL and the server.
#[derive(Clone, Debug)]
pub struct Options {
    /// PostgreSQL's `max_connections`. The server's pool opens up to
    /// `COLONIES_DB_MAX_OPEN_CONNS` (100 by default) connections, so keep this above it.
    pub max_connections: u32,
    /// `COLONIES_DB_MAX_OPEN_CONNS` of the server (unset: the server's default, 100).
    pub db_max_open_conns: Option<u32>,
    /// PostgreSQL also listens on this address and lets clients of this CIDR in with the
    /// password (a server in a pod on the real node reaches it over the node's bridge).
    pub db_also_listen: Option<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self { max_connections: 150, db_max_open_conns: None, db_also_listen: None }
    }
}

/// How long the pieces took to start (printed by the tests; never asserted).
#[derive(Clone, Debug, Default)]
pub struct Timings {
    pub postgres: Duration,
    pub server: Duration,
    pub colony_setup: Duration,
}

/// A binary found on PATH (the control plane's bin dir is put there by `make test`).
fn colonies_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join("colonies")).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "the `colonies` binary is not on PATH: build it with `tests/cluster/build.sh colonies` and put the \
             control plane's bin dir on PATH (make test does both)"
        )
    })
}

/// The newest /usr/lib/postgresql/<version>/bin.
fn postgres_bin_dir() -> PathBuf {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, d)| d).unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): install the Debian package \
             `postgresql` (apt-get install -y postgresql; .ci/run does it)"
        )
    })
}

/// uid and gid of the `postgres` user when we are root (PostgreSQL refuses to run as root).
fn postgres_user() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0) != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let found = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.first() != Some(&"postgres") || f.len() < 4 {
            return None;
        }
        Some((f[2].parse().ok()?, f[3].parse().ok()?))
    });
    Some(found.unwrap_or_else(|| {
        panic!("no `postgres` user: install the Debian package `postgresql` (apt-get install -y postgresql)")
    }))
}

/// Whether every ancestor of `path` has the execute bit for others.
fn traversable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.ancestors().skip(1).all(|p| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

fn as_postgres(cmd: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = postgres_user() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn own_for_postgres(path: &Path) {
    if let Some((uid, gid)) = postgres_user() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
    }
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A PostgreSQL cluster of its own on a loopback port, stopped on drop.
pub struct Postgres {
    bin: PathBuf,
    home: PathBuf,
    data: PathBuf,
    pub port: u16,
    pub user: String,
    pub password: String,
}

impl Postgres {
    /// initdb in `dir`/data and start it with `max_connections`.
    pub fn start(dir: &Path, max_connections: u32) -> Self {
        Self::start_listening(dir, max_connections, None)
    }

    /// [`Postgres::start`], also listening on `also` = (address, client CIDR).
    pub fn start_listening(dir: &Path, max_connections: u32, also: Option<&(String, String)>) -> Self {
        let bin = postgres_bin_dir();
        // The `postgres` user must reach its data: under target/ when every parent directory
        // lets it through (not the case for a checkout under a private /root), else under /tmp.
        let home = if postgres_user().is_none() || traversable_by_others(dir) {
            dir.join("pg")
        } else {
            std::env::temp_dir().join(format!("colony-e2e-{}", dir.file_name().unwrap_or_default().to_string_lossy()))
        };
        std::fs::create_dir_all(&home).unwrap();
        own_for_postgres(&home);
        let data = home.join("data");
        let password: String = {
            let mut rng = rand::rng();
            (0..24).map(|_| char::from(b'a' + rng.random_range(0..26u8))).collect()
        };
        let pwfile = home.join("pwfile");
        std::fs::write(&pwfile, &password).unwrap();
        own_for_postgres(&pwfile);
        run(
            as_postgres(Command::new(bin.join("initdb")).args([
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-sync",
                &format!("--pwfile={}", pwfile.display()),
            ])),
            "initdb",
        );
        let port = free_port();
        let mut listen = "127.0.0.1".to_string();
        if let Some((address, cidr)) = also {
            listen = format!("127.0.0.1,{address}");
            let hba = data.join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba).unwrap();
            text.push_str(&format!("host all all {cidr} scram-sha-256\n"));
            std::fs::write(&hba, text).unwrap();
        }
        let options = format!(
            "-p {port} -c listen_addresses={listen} -k {} -c max_connections={max_connections} -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off",
            home.display()
        );
        run(
            as_postgres(Command::new(bin.join("pg_ctl")).args([
                "start",
                "-w",
                "-t",
                "120",
                "-D",
                &data.to_string_lossy(),
                "-l",
                &home.join("postgres.log").to_string_lossy(),
                "-o",
                &options,
            ]))
            .stdout(Stdio::null()),
            "pg_ctl start",
        );
        Self { bin, home, data, port, user: "postgres".into(), password }
    }

    fn stop(&self) {
        let _ = as_postgres(Command::new(self.bin.join("pg_ctl")).args([
            "stop",
            "-m",
            "immediate",
            "-w",
            "-D",
            &self.data.to_string_lossy(),
        ]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The real server with its database and a colony: `colony_key` owns the colony,
/// `executor_key` is an approved executor, `user_key` a colony user.
pub struct RealColonyOs {
    pub postgres: Postgres,
    pub options: Options,
    dir: PathBuf,
    pub port: u16,
    server: Option<Child>,
    /// Starts that came up (answered `/health`).
    starts: u32,
    pub server_key: Key,
    pub colony_name: String,
    pub colony_key: Key,
    pub executor_key: Key,
    pub user_key: Key,
    pub timings: Timings,
}

impl RealColonyOs {
    /// PostgreSQL, the server (`--initdb`) and a colony `zyeute` with one executor
    /// (`finance-worker`, approved) and one user.
    pub async fn start(label: &str, options: Options) -> Self {
        let colonies = colonies_binary();
        let suffix: u32 = rand::rng().random_range(0..1_000_000);
        let dir = repo_root().join("target/colonyos").join(format!("{label}-{suffix:06}"));
        std::fs::create_dir_all(&dir).unwrap();

        let t = Instant::now();
        let postgres = Postgres::start_listening(&dir, options.max_connections, options.db_also_listen.as_ref());
        let postgres_time = t.elapsed();

        let server_key = generate_key(&colonies);
        let mut colonyos = Self {
            postgres,
            options,
            dir,
            port: free_port(),
            server: None,
            starts: 0,
            server_key,
            colony_name: "zyeute".into(),
            colony_key: generate_key(&colonies),
            executor_key: generate_key(&colonies),
            user_key: generate_key(&colonies),
            timings: Timings { postgres: postgres_time, ..Default::default() },
        };
        let t = Instant::now();
        colonyos.start_server().await;
        colonyos.timings.server = t.elapsed();

        let t = Instant::now();
        let (colony, server) = (colonyos.colony_key.clone(), colonyos.server_key.clone());
        colonyos
            .cli_ok(
                &[("COLONIES_SERVER_PRVKEY", &server.prvkey), ("COLONIES_PRVKEY", &server.prvkey)],
                &["colony", "add", "--name", "zyeute", "--colonyid", &colony.id],
            )
            .await;
        let executor = colonyos.executor_key.clone();
        colonyos
            .cli_ok(
                &[("COLONIES_COLONY_PRVKEY", &colony.prvkey), ("COLONIES_PRVKEY", &colony.prvkey)],
                &[
                    "executor",
                    "add",
                    "--name",
                    "finance-bee",
                    "--type",
                    "finance-worker",
                    "--executorid",
                    &executor.id,
                    "--approve",
                ],
            )
            .await;
        let user = colonyos.user_key.clone();
        colonyos
            .cli_ok(
                &[("COLONIES_COLONY_PRVKEY", &colony.prvkey), ("COLONIES_PRVKEY", &colony.prvkey)],
                &["user", "add", "--name", "ops", "--email", "ops@zyeute.io", "--phone", "0", "--userid", &user.id],
            )
            .await;
        colonyos.timings.colony_setup = t.elapsed();
        println!(
            "real ColonyOS {}: PostgreSQL started in {:?}, server in {:?}, colony set up in {:?}",
            colonyos.url(),
            colonyos.timings.postgres,
            colonyos.timings.server,
            colonyos.timings.colony_setup
        );
        colonyos
    }

    /// `http://127.0.0.1:<port>`: the server's HTTP API.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Starts the server on the same port and database (`--initdb` the first time only) and
    /// waits until `/health` answers 200. A start that dies on a port another process took
    /// in the meantime is retried with fresh etcd and relay ports (and, on the first start, a
    /// fresh server port: later starts keep theirs, which clients already know).
    pub async fn start_server(&mut self) {
        assert!(self.server.is_none(), "the server is already running");
        let log_path = self.log_path();
        for attempt in 1..=5 {
            let logged_before = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
            self.spawn_server(attempt);
            let url = format!("{}/health", self.url());
            let start = Instant::now();
            loop {
                if let Some(status) = self.server.as_mut().unwrap().try_wait().unwrap() {
                    self.server = None;
                    let log = std::fs::read(&log_path).unwrap_or_default();
                    let this_start = String::from_utf8_lossy(log.get(logged_before as usize..).unwrap_or_default());
                    if this_start.contains("address already in use") && attempt < 5 {
                        println!("colonies server: a port was taken before it bound it; retrying ({attempt})");
                        if self.starts == 0 {
                            self.port = free_port();
                        }
                        break;
                    }
                    panic!("colonies server exited ({status}); log: {}", log_path.display());
                }
                if http_status(&url).await == Some(200) {
                    self.starts += 1;
                    return;
                }
                assert!(
                    start.elapsed() < DEADLINE,
                    "colonies server did not answer /health within {DEADLINE:?}; log: {}",
                    log_path.display()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// Spawns the server: `--initdb` until a start has come up; each spawn has its own etcd
    /// data directory and fresh etcd and relay ports.
    fn spawn_server(&mut self, attempt: u32) {
        let etcd_dir = self.dir.join(format!("etcd-{}-{attempt}", self.starts));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let mut cmd = Command::new(colonies_binary());
        cmd.args(["server", "start", "--insecure"]);
        if self.starts == 0 {
            cmd.arg("--initdb");
        }
        let (client, peer, relay) = (free_port(), free_port(), free_port());
        cmd.args(["--etcdname", &format!("colonies-{}", self.port), "--etcdhost", "127.0.0.1"])
            .args(["--etcdclientport", &client.to_string(), "--etcdpeerport", &peer.to_string()])
            .args(["--relayport", &relay.to_string(), "--etcddatadir", &etcd_dir.to_string_lossy()])
            .env("TZ", "UTC")
            .env("COLONIES_DB_HOST", "127.0.0.1")
            .env("COLONIES_DB_PORT", self.postgres.port.to_string())
            .env("COLONIES_DB_USER", &self.postgres.user)
            .env("COLONIES_DB_PASSWORD", &self.postgres.password)
            .env("COLONIES_DB_TIMESCALEDB", "false")
            .env("COLONIES_SERVER_ID", &self.server_key.id)
            .env("COLONIES_SERVER_PORT", self.port.to_string())
            .env("COLONIES_SERVER_HTTP_PORT", self.port.to_string())
            .env("COLONIES_TLS", "false")
            .env_remove("COLONIES_SERVER_PRVKEY")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        if let Some(n) = self.options.db_max_open_conns {
            cmd.env("COLONIES_DB_MAX_OPEN_CONNS", n.to_string());
        }
        self.server = Some(cmd.spawn().expect("start colonies server"));
    }

    /// Kills the server (the database keeps running) and waits until its port is closed.
    pub async fn stop_server(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let url = format!("{}/health", self.url());
        let start = Instant::now();
        while http_status(&url).await.is_some() {
            assert!(start.elapsed() < DEADLINE, "the server still answers after it was killed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn restart_server(&mut self) {
        self.stop_server().await;
        self.start_server().await;
    }

    /// Runs the real CLI against this server with `COLONIES_PRVKEY` = `prvkey` (and the colony
    /// name set); `extra_env` adds or overrides variables.
    pub async fn cli(&self, extra_env: &[(&str, &str)], args: &[&str]) -> Output {
        self.cli_within(Duration::from_secs(30), extra_env, args)
            .await
            .unwrap_or_else(|| panic!("colonies {} hung for 30 s", args.join(" ")))
    }

    /// [`RealColonyOs::cli`], or None when the command did not finish within `timeout` (it
    /// is killed).
    pub async fn cli_within(&self, timeout: Duration, extra_env: &[(&str, &str)], args: &[&str]) -> Option<Output> {
        let mut cmd = tokio::process::Command::new(colonies_binary());
        cmd.args(args)
            .env("TZ", "UTC")
            .env("COLONIES_SERVER_HOST", "127.0.0.1")
            .env("COLONIES_SERVER_PORT", self.port.to_string())
            .env("COLONIES_SERVER_HTTP_PORT", self.port.to_string())
            .env("COLONIES_TLS", "false")
            .env("COLONIES_COLONY_NAME", &self.colony_name)
            .env_remove("COLONIES_PRVKEY")
            .env_remove("COLONIES_COLONY_PRVKEY")
            .env_remove("COLONIES_SERVER_PRVKEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("run the colonies CLI");
        // A hung server must not hang the test: the CLI is killed on drop.
        tokio::time::timeout(timeout, child.wait_with_output()).await.ok().map(|out| out.expect("wait for the CLI"))
    }

    async fn cli_ok(&self, extra_env: &[(&str, &str)], args: &[&str]) -> Output {
        let out = self.cli(extra_env, args).await;
        assert!(
            out.status.success(),
            "colonies {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// What only the colony owner may do: adds and approves a fresh executor named `name`
    /// (`colonies executor add --approve`) signed with `colony_prvkey` as the colony key.
    /// Returns the new executor's key when the CLI succeeded, else what the CLI printed.
    pub async fn add_executor_as_colony_owner(&self, colony_prvkey: &str, name: &str) -> Result<Key, String> {
        let executor = generate_key(&colonies_binary());
        let env = [("COLONIES_COLONY_PRVKEY", colony_prvkey), ("COLONIES_PRVKEY", colony_prvkey)];
        let args =
            ["executor", "add", "--name", name, "--type", "finance-worker", "--executorid", &executor.id, "--approve"];
        let out = self.cli(&env, &args).await;
        if out.status.success() {
            Ok(executor)
        } else {
            Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// Whether the server accepts `prvkey` as a member of the colony: `colonies executor ls`
    /// signed with it exits 0 (a key that is not a member gets an error and a non-zero exit).
    pub async fn accepts(&self, prvkey: &str) -> bool {
        self.cli(&[("COLONIES_PRVKEY", prvkey)], &["executor", "ls"]).await.status.success()
    }
}

impl RealColonyOs {
    /// Changes the executor's key with the real CLI (`executor chid`, signed with the current
    /// key); None when the call did not finish within `timeout`.
    pub async fn change_executor_key(&mut self, timeout: Duration) -> Option<Key> {
        let new = generate_key(&colonies_binary());
        let current = self.executor_key.prvkey.clone();
        let out = self
            .cli_within(timeout, &[("COLONIES_PRVKEY", &current)], &["executor", "chid", "--executorid", &new.id])
            .await?;
        assert!(out.status.success(), "executor chid failed: {}", String::from_utf8_lossy(&out.stderr));
        self.executor_key = new.clone();
        Some(new)
    }

    /// Drives v1.9.12's connection leak: change-ID calls (each leaves one PostgreSQL connection
    /// checked out) until one hangs because the server's pool is exhausted. Returns how many
    /// calls succeeded. The executor's key is unknown afterwards (the hung call may land).
    pub async fn exhaust_connection_pool(&mut self) -> usize {
        for done in 0..200 {
            if self.change_executor_key(Duration::from_secs(10)).await.is_none() {
                return done;
            }
        }
        panic!("200 change-ID calls and the API still answers");
    }
}

impl RealColonyOs {
    /// Submits one process with the real CLI (`function submit --spec FILE`, signed with the
    /// user's key): function `funcname` for the executor type `finance-worker`, no retries
    /// (a failed process stays failed).
    pub async fn submit(&self, funcname: &str) {
        let spec = self.dir.join(format!("spec-{funcname}.json"));
        let text = serde_json::json!({
            "conditions": { "executortype": "finance-worker" },
            "funcname": funcname,
            "maxretries": 0,
        });
        std::fs::write(&spec, text.to_string()).unwrap();
        let user = self.user_key.prvkey.clone();
        self.cli_ok(&[("COLONIES_PRVKEY", &user)], &["function", "submit", "--spec", &spec.to_string_lossy()]).await;
    }

    /// The test executor: assigns one waiting process with the real CLI (`process assign
    /// --timeout 5`, the executor's key) and closes it (`process close`) or fails it
    /// (`process fail`). Returns the process ID.
    pub async fn work_one(&self, succeed: bool) -> String {
        let executor = self.executor_key.prvkey.clone();
        let env = [("COLONIES_PRVKEY", executor.as_str())];
        let out = self.cli_ok(&env, &["process", "assign", "--timeout", "5"]).await;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let id = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ProcessId=").map(|v| v.trim_matches('"').to_string()))
            .unwrap_or_else(|| panic!("no ProcessId= in the output of colonies process assign: {text}"));
        let verb = if succeed { "close" } else { "fail" };
        self.cli_ok(&env, &["process", verb, "--processid", &id]).await;
        id
    }
}

/// A `colonies monitor start` process (Prometheus `/metrics` of the server's statistics),
/// killed on drop.
pub struct Monitor {
    child: Child,
    pub port: u16,
}

impl Monitor {
    /// `http://127.0.0.1:<port>/metrics`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.port)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RealColonyOs {
    /// Starts the real `colonies monitor start` against this server (signed with the server
    /// owner's key, pulling every second) and waits until its `/metrics` answers 200.
    pub async fn start_monitor(&self) -> Monitor {
        let port = free_port();
        let log = std::fs::File::create(self.dir.join("monitor.log")).unwrap();
        let child = Command::new(colonies_binary())
            .args(["monitor", "start", "--insecure"])
            .env("TZ", "UTC")
            .env("COLONIES_SERVER_HOST", "127.0.0.1")
            .env("COLONIES_SERVER_PORT", self.port.to_string())
            .env("COLONIES_SERVER_HTTP_PORT", self.port.to_string())
            .env("COLONIES_TLS", "false")
            .env("COLONIES_SERVER_ID", &self.server_key.id)
            .env("COLONIES_SERVER_PRVKEY", &self.server_key.prvkey)
            .env("COLONIES_MONITOR_PORT", port.to_string())
            .env("COLONIES_MONITOR_INTERVAL", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start colonies monitor");
        let mut monitor = Monitor { child, port };
        let start = Instant::now();
        while http_status(&monitor.url()).await != Some(200) {
            if let Some(status) = monitor.child.try_wait().unwrap() {
                panic!("colonies monitor exited ({status}); log: {}", self.dir.join("monitor.log").display());
            }
            assert!(start.elapsed() < DEADLINE, "colonies monitor did not serve /metrics within {DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        monitor
    }
}

impl Drop for RealColonyOs {
    /// Stops the server and PostgreSQL; the data is removed unless the test failed (then its
    /// logs stay under target/colonyos/).
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.postgres.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.postgres.home);
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `colonies security generate`: a fresh key from the real CLI (it logs `Id=... PrvKey=...`).
fn generate_key(colonies: &Path) -> Key {
    let out = run(Command::new(colonies).args(["security", "generate"]), "colonies security generate");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")).map(|v| v.trim_matches('"').to_string()))
            .unwrap_or_else(|| panic!("no {name}= in the output of colonies security generate: {text}"))
    };
    let key = Key { prvkey: field("PrvKey"), id: field("Id") };
    assert_eq!(key.prvkey.len(), 64, "a private key is 64 hex characters");
    key
}

/// The HTTP status of a GET, or None when nothing answers within 2 s.
pub async fn http_status(url: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(host).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.ok()?;
        String::from_utf8_lossy(&buf).split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), exchange).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness itself: the colony's members are accepted, a stranger is not, a key change
    /// through the real CLI takes effect at once, and a restart keeps the database.
    #[tokio::test]
    async fn harness_sets_up_a_colony_that_survives_a_restart() {
        let mut colonyos = RealColonyOs::start("harness", Options::default()).await;
        let (executor, user) = (colonyos.executor_key.clone(), colonyos.user_key.clone());
        assert!(colonyos.accepts(&executor.prvkey).await, "the executor is a member");
        assert!(colonyos.accepts(&user.prvkey).await, "the user is a member");
        let stranger = generate_key(&colonies_binary());
        assert!(!colonyos.accepts(&stranger.prvkey).await, "a stranger is refused");
        let new = colonyos.change_executor_key(Duration::from_secs(30)).await.expect("executor chid answers");
        assert!(colonyos.accepts(&new.prvkey).await && !colonyos.accepts(&executor.prvkey).await);
        let t = Instant::now();
        colonyos.restart_server().await;
        println!("server restarted in {:?}", t.elapsed());
        assert!(colonyos.accepts(&new.prvkey).await, "same database after the restart");
    }
}
