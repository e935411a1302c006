//! EDGE: leader election on a `coordination.k8s.io/v1` Lease with `kube-lease-manager`
//! (`docs/contributing.md` §11.3). Publishes "we lead" on a watch channel; the controller writes
//! only while it reads `true`, and this task releases the Lease on shutdown so a standby takes over
//! at once instead of after the lease duration.
//!
//! On any Lease API error we report "not leading" at once (stop writing; being wrong here costs
//! only a delay) and rebuild the manager after a pause. A fresh manager with the same identity
//! reports leadership again as soon as it sees that it still holds the Lease.

use std::time::Duration;

use kube::Client;
use kube_dmem_crds::OPERATOR_FIELD_MANAGER;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Lease validity after the last renewal: how long a crashed leader blocks a successor.
const LEASE_DURATION_SECS: u64 = 15;
/// The holder renews this long before expiry; also the tolerated clock skew between replicas.
const LEASE_GRACE_SECS: u64 = 5;
/// Pause before rebuilding the manager after a Lease API error.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Longest wait for the release on shutdown; after that the Lease simply expires.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which Lease to hold and as whom.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// Holder identity (the pod name).
    pub identity: String,
}

/// A failed Lease action.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Creating or reading the Lease failed.
    #[error("could not set up the leader Lease")]
    BuildLeaseManager(#[source] LeaseManagerError),
    /// Acquiring or renewing the Lease failed.
    #[error("could not acquire or renew the leader Lease")]
    RenewLease(#[source] LeaseManagerError),
    /// Releasing the Lease on shutdown failed.
    #[error("could not release the leader Lease")]
    ReleaseLease(#[source] LeaseManagerError),
    /// Releasing the Lease took too long.
    #[error("releasing the leader Lease timed out")]
    ReleaseTimeout,
}

impl LeaseError {
    /// PascalCase reason for logs and the `reason` metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BuildLeaseManager(_) => "BuildLeaseManager",
            Self::RenewLease(_) => "RenewLease",
            Self::ReleaseLease(_) => "ReleaseLease",
            Self::ReleaseTimeout => "ReleaseTimeout",
        }
    }

    /// Lease errors are all worth retrying (RBAC fixes, API server restarts).
    pub fn is_permanent(&self) -> bool {
        false
    }
}

/// Runs the election until `stop`, publishing leadership on `leading`.
pub async fn run(
    client: Client,
    config: LeaseConfig,
    leading: watch::Sender<bool>,
    stop: CancellationToken,
) {
    loop {
        let built = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            built = build(&client, &config) => built,
        };
        match built {
            Ok(manager) => {
                if hold(&manager, &leading, &stop).await == Held::Stopped {
                    release(&manager, &config).await;
                    return;
                }
            }
            Err(err) => log_error(&err),
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RETRY_AFTER) => {}
        }
    }
}

async fn build(client: &Client, config: &LeaseConfig) -> Result<LeaseManager, LeaseError> {
    LeaseManagerBuilder::new(client.clone(), &config.name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(LEASE_DURATION_SECS)
        .with_grace(LEASE_GRACE_SECS)
        // kube-lease-manager detects a competing holder through SSA conflicts between field
        // managers, so each replica needs its own: the component's name plus the identity.
        .with_field_manager(field_manager(&config.identity))
        .build()
        .await
        .map_err(LeaseError::BuildLeaseManager)
}

/// SSA field managers are limited to 128 characters.
fn field_manager(identity: &str) -> String {
    format!("{OPERATOR_FIELD_MANAGER}-{identity}")
        .chars()
        .take(128)
        .collect()
}

/// How [`hold`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Held {
    /// The stop signal came: release the Lease and end.
    Stopped,
    /// A Lease API call failed: rebuild the manager.
    Failed,
}

/// Follows the manager, publishing each leadership change.
async fn hold(
    manager: &LeaseManager,
    leading: &watch::Sender<bool>,
    stop: &CancellationToken,
) -> Held {
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => {
                leading.send_replace(false);
                return Held::Stopped;
            }
            changed = manager.changed() => match changed {
                Ok(is_leader) => {
                    info!(leading = is_leader, "Leadership changed");
                    leading.send_replace(is_leader);
                }
                Err(err) => {
                    leading.send_replace(false);
                    log_error(&LeaseError::RenewLease(err));
                    return Held::Failed;
                }
            },
        }
    }
}

async fn release(manager: &LeaseManager, config: &LeaseConfig) {
    let result = match tokio::time::timeout(RELEASE_TIMEOUT, manager.release()).await {
        Ok(result) => result.map_err(LeaseError::ReleaseLease),
        Err(_) => Err(LeaseError::ReleaseTimeout),
    };
    match result {
        Ok(()) => {
            info!(lease = %config.name, namespace = %config.namespace, "Released the leader Lease")
        }
        Err(err) => log_error(&err),
    }
}

fn log_error(err: &LeaseError) {
    warn!(
        reason = err.reason(),
        error = err as &dyn std::error::Error,
        "Leader election failed, retrying"
    );
}
