//! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager), so that only one
//! of several replicas reconciles at a time.
//!
//! The standby waits for the Lease; the leader renews it and gives it back on SIGTERM after the
//! reconciles in flight have finished. A leader that fails to renew has lost the Lease (another
//! replica may hold it by the time the error surfaces): it stops reconciling and exits, and the
//! pod restarts as a standby.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};

/// Why leading stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("failed to set up the lease {lease}: {source}")]
    Setup {
        lease: String,
        #[source]
        source: LeaseManagerError,
    },
    #[error("lost the lease {0} to another replica")]
    Lost(String),
    #[error("failed to renew the lease {lease}: {source}")]
    Renew {
        lease: String,
        #[source]
        source: LeaseManagerError,
    },
    #[error("invalid lease duration {0:?}: must be whole seconds, at least 2s")]
    Duration(Duration),
}

/// Where the Lease lives and how long it is valid without renewal.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// Also the longest a standby waits after the leader died.
    pub duration: Duration,
    /// Unique per process: `<instance>-<random>`.
    pub identity: String,
}

/// A unique holder identity: the instance (pod) name plus a random suffix, so that a restarted
/// pod with the same name never mistakes the previous process's lock for its own.
pub fn identity(instance: Option<&str>) -> String {
    format!(
        "{}-{:08x}",
        instance.unwrap_or("kaws"),
        rand::random::<u32>()
    )
}

/// This process's candidacy for the Lease.
pub struct Elector {
    manager: LeaseManager,
    lease: String,
}

const RETRY: Duration = Duration::from_secs(1);

impl Elector {
    /// Creates the Lease if it does not exist yet; does not try to lock it.
    pub async fn new(client: Client, settings: &LeaseSettings) -> Result<Elector, LeaderError> {
        let secs = settings.duration.as_secs();
        if secs < 2 || settings.duration.subsec_nanos() != 0 {
            return Err(LeaderError::Duration(settings.duration));
        }
        let lease = format!("{}/{}", settings.namespace, settings.name);
        // Renew a third of the duration before expiry (15s lease: every 10s, as client-go).
        let grace = (secs / 3).max(1);
        let manager = LeaseManagerBuilder::new(client, &settings.name)
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_duration(secs)
            .with_grace(grace)
            .with_field_manager("kaws-leader-election")
            .build()
            .await
            .map_err(|source| LeaderError::Setup {
                lease: lease.clone(),
                source,
            })?;
        Ok(Elector { manager, lease })
    }

    /// Returns once this process holds the Lease. API errors are retried: nothing is at stake
    /// while not leading.
    pub async fn acquire(&self) {
        loop {
            match self.manager.changed().await {
                Ok(true) => {
                    tracing::info!(lease = %self.lease, "acquired the lease: leading");
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(lease = %self.lease, error = %e, "failed to read the lease; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// Keeps the Lease renewed while leading; returns why leading ended. Cancel-safe: dropping it
    /// stops renewing.
    pub async fn hold(&self) -> LeaderError {
        loop {
            match self.manager.changed().await {
                Ok(true) => {}
                Ok(false) => return LeaderError::Lost(self.lease.clone()),
                // The renewal is due `grace` before expiry: by the time an error comes back
                // the Lease is about to expire, so treat it as lost rather than keep going.
                Err(source) => {
                    return LeaderError::Renew {
                        lease: self.lease.clone(),
                        source,
                    };
                }
            }
        }
    }

    /// Gives the Lease back (no-op when another process holds it), so a standby need not wait
    /// for it to expire.
    pub async fn release(&self) {
        match self.manager.release().await {
            Ok(()) => tracing::info!(lease = %self.lease, "released the lease"),
            Err(e) => {
                tracing::warn!(lease = %self.lease, error = %e, "failed to release the lease; it expires on its own")
            }
        }
    }
}
