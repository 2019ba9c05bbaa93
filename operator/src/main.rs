use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use colony_operator::operator::{self, RunOptions};
use colony_operator::runtime::telemetry::{self, LogFormat};
use colony_operator::runtime::transport::ApiProtocol;

/// The Colony OS runbook as a Kubernetes operator.
#[derive(Parser)]
#[command(name = "colony-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the cluster of the current kubeconfig (or in-cluster).
    Run(RunArgs),
    /// Print every CustomResourceDefinition as YAML (`colony-operator crd | kubectl apply -f -`).
    Crd,
    /// Print the version.
    Version,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "LOG_FORMAT")]
    log_format: LogFormat,
    /// Address of the admin server (/healthz, /readyz, /metrics).
    #[arg(long, default_value = "0.0.0.0:8080", env = "ADMIN_ADDR")]
    admin_addr: SocketAddr,
    /// Hold a coordination.k8s.io Lease before acting, so that only one replica acts at once.
    #[arg(long)]
    leader_elect: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_elect_namespace: String,
    /// Identity written to the Lease (default: host name and process id).
    #[arg(long, env = "POD_NAME")]
    leader_elect_identity: Option<String>,
    /// Seconds a Lease stays valid without renewal; a standby takes over after that.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// Safety margin in seconds: a leader that could not renew stops every side effect this
    /// long before its Lease could expire, on its own monotonic clock.
    #[arg(long, default_value_t = 5)]
    lease_renew_grace: u64,
    /// How watches fill their caches: `streaming` (one watch sends the current objects one by
    /// one; Kubernetes 1.32+), `paged` (paged lists, then a watch), or `auto` (streaming when
    /// the API server serves it).
    #[arg(long, value_enum, default_value = "auto", env = "INITIAL_LIST")]
    initial_list: InitialListArg,
    /// Offer HTTP/2 to the API server: every watch and request over one connection, pinged so
    /// that a silent connection is noticed (default: HTTP/1.1, a connection per watch and per
    /// request in flight).
    #[arg(long, env = "API_HTTP2")]
    api_http2: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum InitialListArg {
    Auto,
    Streaming,
    Paged,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", colony_operator::api::all_crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("colony-operator {} (colony.zyeute.io/v1alpha1, Kubernetes API 1.37)", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            telemetry::init(args.log_format);
            let identity = args.leader_elect_identity.unwrap_or_else(default_identity);
            use colony_operator::runtime::watch::InitialList;
            let opts = RunOptions {
                initial_list: match args.initial_list {
                    InitialListArg::Auto => None,
                    InitialListArg::Streaming => Some(InitialList::Streaming),
                    InitialListArg::Paged => Some(InitialList::Paged),
                },
                api_protocol: if args.api_http2 { ApiProtocol::Negotiate } else { ApiProtocol::Http1 },
                namespace: args.namespace,
                admin_addr: args.admin_addr,
                leader: args.leader_elect.then_some(colony_operator::runtime::leader::LeaderSettings {
                    namespace: args.leader_elect_namespace,
                    identity,
                    lease_duration_secs: args.lease_duration,
                    renew_grace_secs: args.lease_renew_grace,
                }),
            };
            colony_operator::runtime::memory::limit_arenas();
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
            match rt.block_on(operator::run(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("colony-operator: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "colony-operator".into());
    format!("{host}-{}", std::process::id())
}
