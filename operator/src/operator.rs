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
use crate::runtime::leader::{self, LeaderSettings};
use crate::runtime::metrics::Metrics;
use crate::runtime::{Context, Settings};

pub struct RunOptions {
    pub namespace: Option<String>,
    pub admin_addr: SocketAddr,
    pub leader: Option<LeaderSettings>,
}

/// How long a graceful shutdown waits for running reconciles.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

pub const USER_AGENT: &str = concat!("colony-operator/", env!("CARGO_PKG_VERSION"));

/// A clonable shutdown signal.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

pub async fn client() -> anyhow::Result<Client> {
    let mut config =
        Config::infer().await.context("no Kubernetes configuration (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    config.headers.push((http::header::USER_AGENT, http::HeaderValue::from_static(USER_AGENT)));
    Client::try_from(config).context("building the Kubernetes client")
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
        let api: Api<K> = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
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
    let client = client().await?;
    check_crds(&client, opts.namespace.as_deref()).await?;

    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let shutdown = Shutdown(stop_rx);

    let signal_tx = stop_tx.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        let _ = signal_tx.send(true);
    });

    let admin_state = AdminState { metrics: metrics.clone(), ready: ready.clone() };
    let admin = tokio::spawn(admin::serve(opts.admin_addr, admin_state, shutdown.clone().wait()));

    let mut leadership = None;
    if let Some(settings) = &opts.leader {
        let mut l = leader::compete(client.clone(), settings).await.context("starting leader election")?;
        // A standby is healthy and ready: it is doing what it should.
        ready.store(true, Ordering::Relaxed);
        tracing::info!(identity = %settings.identity, lease = leader::LEASE_NAME, namespace = %settings.namespace, "waiting for leadership");
        tokio::select! {
            r = l.acquired() => r.context("leader election")?,
            _ = shutdown.clone().wait() => {
                l.release().await;
                return Ok(());
            }
        }
        ready.store(false, Ordering::Relaxed);
        tracing::info!(identity = %settings.identity, "acquired leadership");
        leadership = Some(l);
    }
    metrics.leader.set(1);

    let ctx = Arc::new(Context::new(client, metrics.clone(), Settings { namespace: opts.namespace.clone() }));
    let (controllers, synced) = controllers::start_all(ctx, shutdown.clone());
    let ready_flag = ready.clone();
    tokio::spawn(async move {
        join_all(synced).await;
        ready_flag.store(true, Ordering::Relaxed);
        tracing::info!("caches synced, ready");
    });

    let mut lost = false;
    match leadership.as_mut() {
        Some(l) => {
            tokio::select! {
                _ = l.lost() => {
                    tracing::error!("lost the leader lease; stopping");
                    lost = true;
                    let _ = stop_tx.send(true);
                }
                _ = shutdown.clone().wait() => {}
            }
        }
        None => shutdown.clone().wait().await,
    }
    // Running reconciles get time to finish; a controller still starting is not waited for.
    let aborts: Vec<_> = controllers.iter().map(|c| c.abort_handle()).collect();
    if tokio::time::timeout(SHUTDOWN_GRACE, join_all(controllers)).await.is_err() {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "controllers did not stop in time; aborting them");
        aborts.iter().for_each(|a| a.abort());
    }
    metrics.leader.set(0);
    if let Some(l) = leadership {
        l.release().await;
    }
    let _ = stop_tx.send(true);
    let _ = admin.await;
    if lost {
        bail!("lost the leader lease");
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
