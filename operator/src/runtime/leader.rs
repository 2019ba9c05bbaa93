//! Leader election on a coordination.k8s.io Lease, so that two replicas never act at once.
//! The leader renews the lease; a standby takes over once the lease has not been renewed
//! for its duration. Losing the lease ends the process: the controllers' in-memory state
//! (probe streaks, flip history) must not keep acting next to a new leader.
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const LEASE_NAME: &str = "colony-operator";

#[derive(Clone, Debug)]
pub struct LeaderSettings {
    pub namespace: String,
    pub identity: String,
    pub lease_duration_secs: u64,
    pub renew_grace_secs: u64,
}

pub struct Leadership {
    rx: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>>,
}

/// Starts competing for the lease; returns at once.
pub async fn compete(client: Client, s: &LeaderSettings) -> anyhow::Result<Leadership> {
    let manager = LeaseManagerBuilder::new(client, LEASE_NAME)
        .with_namespace(&s.namespace)
        .with_identity(&s.identity)
        .with_duration(s.lease_duration_secs)
        .with_grace(s.renew_grace_secs)
        .with_field_manager(super::context::field_manager("leader-election"))
        .build()
        .await?;
    let (rx, task) = manager.watch().await;
    Ok(Leadership { rx, task })
}

impl Leadership {
    /// Resolves once this process holds the lease.
    pub async fn acquired(&mut self) -> anyhow::Result<()> {
        self.rx.wait_for(|leading| *leading).await?;
        Ok(())
    }

    /// Resolves when the lease is lost after having been held.
    pub async fn lost(&mut self) {
        let _ = self.rx.wait_for(|leading| !*leading).await;
    }

    /// Stops renewing and releases the lease so a standby can take over at once.
    pub async fn release(self) {
        drop(self.rx);
        match self.task.await {
            Ok(Ok(manager)) => {
                if let Err(e) = manager.release().await {
                    tracing::warn!(error = %e, "could not release the leader lease");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "leader election ended with an error"),
            Err(e) => tracing::warn!(error = %e, "leader election task failed"),
        }
    }
}
