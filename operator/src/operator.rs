//! `colony-operator run`: connect, check the CRDs, serve the admin endpoints, take the
//! leader lease if asked, run the controllers until SIGTERM/SIGINT.
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, bail};
use futures::future::join_all;
use kube::api::ListParams;
use kube::{Api, Client, Config};
use tokio::sync::watch;

use crate::api::{ColonyServer, FinanceBee, KeyRotation, MaintenanceWindow};
use crate::controllers;
use crate::runtime::admin::{self, AdminState};
use crate::runtime::leader::{self, Gate, GuardLayer, LeaderSettings};
use crate::runtime::metrics::Metrics;
use crate::runtime::transport::{self, ApiProtocol, Connections};
use crate::runtime::watch::InitialList;
use crate::runtime::{Context, Settings, Shutdown};

pub struct RunOptions {
    pub namespace: Option<String>,
    /// How watches fill their caches; None: streaming when the API server serves it.
    pub initial_list: Option<InitialList>,
    pub admin_addr: SocketAddr,
    pub leader: Option<LeaderSettings>,
    /// Which HTTP versions the client offers the API server.
    pub api_protocol: ApiProtocol,
}

/// How long a graceful shutdown waits for running reconciles.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// How long the API server has to end a streaming watch's initial events at start-up before
/// the watches fall back to paged lists.
const INITIAL_LIST_PROBE: std::time::Duration = std::time::Duration::from_secs(5);

pub const USER_AGENT: &str = concat!("colony-operator/", env!("CARGO_PKG_VERSION"));

/// The user agent of every request to the API server: `colony-operator/<version>`, and with
/// leader election ` (<identity>)`, so that the audit log tells replicas apart.
pub fn user_agent(identity: Option<&str>) -> String {
    match identity {
        Some(id) => format!("{USER_AGENT} ({})", id.replace(|c: char| !c.is_ascii_graphic(), "_")),
        None => USER_AGENT.to_string(),
    }
}

async fn config(identity: Option<&str>) -> anyhow::Result<Config> {
    let mut config =
        Config::infer().await.context("no Kubernetes configuration (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    let ua = http::HeaderValue::from_str(&user_agent(identity)).context("user agent")?;
    config.headers.push((http::header::USER_AGENT, ua));
    Ok(config)
}

/// A client whose writes pass only while `gate` is open (reads always pass), and whose
/// requests count towards the reconcile that makes them (`runtime::api_time`).
fn guarded_client(config: &Config, connections: &Connections, gate: Gate) -> anyhow::Result<Client> {
    Ok(connections
        .client_builder(config)?
        .with_layer(&GuardLayer(gate))
        .with_layer(&crate::runtime::api_time::TimingLayer)
        .build())
}

/// Fails with a clear message when a CRD is missing, before any controller starts.
async fn check_crds(client: &Client, namespace: Option<&str>) -> anyhow::Result<()> {
    async fn probe<K>(client: &Client, namespace: Option<&str>) -> anyhow::Result<()>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = crate::runtime::context::scoped_api(client, namespace);
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => bail!(
                "the CustomResourceDefinition {}.{} is not installed; install the CRDs first \
                 (`colony-operator crd | kubectl apply --server-side -f -`, or the Helm chart)",
                K::plural(&()),
                K::group(&())
            ),
            Err(e) => Err(e).with_context(|| format!("listing {}", K::plural(&()))),
        }
    }
    probe::<ColonyServer>(client, namespace).await?;
    probe::<FinanceBee>(client, namespace).await?;
    probe::<KeyRotation>(client, namespace).await?;
    probe::<MaintenanceWindow>(client, namespace).await?;
    Ok(())
}

pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let identity = opts.leader.as_ref().map(|l| l.identity.as_str());
    let config = config(identity).await?;
    let connections = Connections::new(&config, opts.api_protocol)?;
    let raw = connections.client(&config)?;
    let version = transport::negotiated(&raw).await.context("reaching the API server")?;
    tracing::info!(protocol = ?version, "connected to the API server");
    check_crds(&raw, opts.namespace.as_deref()).await?;
    let initial_list = match opts.initial_list {
        Some(chosen) => chosen,
        None => {
            let windows: Api<MaintenanceWindow> = crate::runtime::context::scoped_api(&raw, opts.namespace.as_deref());
            InitialList::detect(&windows, INITIAL_LIST_PROBE).await
        }
    };
    tracing::info!(initial_list = ?initial_list, "watches fill their caches");

    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let healthy = Arc::new(AtomicBool::new(true));
    let (stop_tx, stop_rx) = watch::channel(false);
    let shutdown = Shutdown::new(stop_rx);

    let signal_tx = stop_tx.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        let _ = signal_tx.send(true);
    });

    let admin_state = AdminState { metrics: metrics.clone(), ready: ready.clone(), healthy: healthy.clone() };
    let admin = tokio::spawn(admin::serve(opts.admin_addr, admin_state, shutdown.clone().wait()));

    // Standbys run the controllers too, with their watches and caches, but every reconcile
    // waits for the gate: failover does not wait for a relist.
    let election = opts.leader.as_ref().map(|s| {
        tracing::info!(identity = %s.identity, lease = leader::LEASE_NAME, namespace = %s.namespace, "competing for leadership");
        leader::compete(raw.clone(), s)
    });
    let gate = election.as_ref().map(|e| e.gate.clone()).unwrap_or_else(Gate::always);
    leader::install(gate.clone());
    let client = guarded_client(&config, &connections, gate.clone())?;

    let leader_gauge = metrics.clone();
    let gauge_gate = gate.clone();
    tokio::spawn(async move {
        loop {
            gauge_gate.leading().await;
            leader_gauge.leader.set(1);
            gauge_gate.lost().await;
            leader_gauge.leader.set(0);
        }
    });

    let (windows, window_feed) = crate::runtime::windows::view();
    let ctx = Arc::new(Context::new(
        client,
        metrics.clone(),
        Settings { namespace: opts.namespace.clone(), initial_list },
        windows,
    ));
    let (mut controllers, synced) = controllers::start_all(ctx, window_feed, shutdown.clone());
    let ready_flag = ready.clone();
    // The initial lists and the first reconciles free most of what they allocate: hand it
    // back, so that the resident set at rest follows the caches, not the startup peak.
    tokio::spawn(crate::runtime::memory::trim_periodically());
    tokio::spawn(async move {
        join_all(synced).await;
        ready_flag.store(true, Ordering::Relaxed);
        tracing::info!("caches synced, ready");
    });

    // Runs until a signal, the loss of the lease after having held it, or the end of a
    // controller task (a panic): a process that renews its lease but no longer reconciles
    // must not look healthy.
    let lost_gate = gate.clone();
    let lost_lease = async move {
        lost_gate.leading().await;
        lost_gate.lost().await;
    };
    enum Ended {
        LeaseLost,
        Controller(usize, bool),
        Signal,
    }
    let ended = tokio::select! {
        biased;
        _ = shutdown.clone().wait() => Ended::Signal,
        _ = lost_lease, if election.is_some() => Ended::LeaseLost,
        (result, index, _) = futures::future::select_all(controllers.iter_mut()) => {
            let panicked = matches!(result, Err(e) if e.is_panic());
            // A controller also ends when it is told to stop: that is no failure.
            if shutdown.requested() && !panicked {
                drop(controllers.remove(index));
                Ended::Signal
            } else {
                Ended::Controller(index, panicked)
            }
        }
    };
    let failure = match ended {
        Ended::LeaseLost => {
            tracing::error!("lost the leader lease (not renewed in time); every side effect is stopped");
            Some("lost the leader lease".to_string())
        }
        Ended::Controller(index, panicked) => {
            let what = if panicked { "panicked" } else { "stopped" };
            let name = controllers::NAMES.get(index).copied().unwrap_or("?");
            tracing::error!(controller = name, "controller task {what}; the process is unhealthy and exits");
            healthy.store(false, Ordering::Relaxed);
            drop(controllers.remove(index));
            Some(format!("controller {name} {what}"))
        }
        Ended::Signal => None,
    };
    if failure.is_some() {
        let _ = stop_tx.send(true);
    }
    // Running reconciles get time to finish; a controller still starting is not waited for.
    // After the loss of the lease they cannot write anyway: the gate is closed.
    let aborts: Vec<_> = controllers.iter().map(|c| c.abort_handle()).collect();
    if tokio::time::timeout(SHUTDOWN_GRACE, join_all(controllers)).await.is_err() {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "controllers did not stop in time; aborting them");
        aborts.iter().for_each(|a| a.abort());
    }
    metrics.leader.set(0);
    if let Some(e) = election {
        e.release().await;
    }
    let _ = stop_tx.send(true);
    let _ = admin.await;
    if let Some(f) = failure {
        bail!(f);
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
