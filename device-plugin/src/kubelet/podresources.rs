//! EDGE: client for the kubelet's PodResources v1 `List` (who holds which devices).
//!
//! The socket follows the kubelet's `--root-dir` (default below); the kubelet recreates it on every
//! restart, so the client connects per call instead of keeping a channel. The answer lists every
//! active pod's devices of every resource, so the receive limit is raised to 16 MiB like the
//! kubelet's own clients (`docs/kubelet.md` §2.3). Joining the answer with pod UIDs is CORE, in
//! [`grants`](super::decide::grants).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::debug;

use super::proto::podresources::pod_resources_lister_client::PodResourcesListerClient;
use super::proto::podresources::{ListPodResourcesRequest, ListPodResourcesResponse};
use super::uds;

/// Default PodResources socket (the kubelet's default `--root-dir` is `/var/lib/kubelet`).
pub const DEFAULT_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";

/// Largest `List` answer accepted: 16 MiB, as the kubelet's e2e clients use (tonic's default is 4 MiB).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Default bound on one `List` call, connect included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a `List` call failed; every variant is transient from the agent's point of view.
#[derive(Debug, thiserror::Error)]
pub enum PodResourcesError {
    /// The socket could not be connected (kubelet down or restarting, wrong path).
    #[error("connect to PodResources socket {path}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Transport failure.
        #[source]
        source: tonic::transport::Error,
    },
    /// The kubelet answered `List` with an error (including its rate limit, 100 QPS).
    #[error("PodResources List on {path} failed")]
    List {
        /// The socket path.
        path: PathBuf,
        /// The gRPC status.
        #[source]
        source: tonic::Status,
    },
    /// The call did not finish in time.
    #[error("PodResources List on {path} timed out after {after:?}")]
    TimedOut {
        /// The socket path.
        path: PathBuf,
        /// The bound that expired.
        after: Duration,
    },
}

impl PodResourcesError {
    /// PascalCase reason for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "ConnectPodResources",
            Self::List { .. } => "ListPodResources",
            Self::TimedOut { .. } => "PodResourcesTimedOut",
        }
    }
}

/// Calls PodResources v1 `List` on the kubelet socket at `socket`.
#[derive(Debug, Clone)]
pub struct PodResourcesClient {
    socket: PathBuf,
    timeout: Duration,
}

impl PodResourcesClient {
    /// A client for `socket` whose calls are bounded by [`DEFAULT_TIMEOUT`].
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client with another bound per call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket this client calls.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Lists the devices of every active pod on the node.
    pub async fn list(&self) -> Result<ListPodResourcesResponse, PodResourcesError> {
        let path = &self.socket;
        let call = async {
            let channel = uds::connect(path, self.timeout).await.map_err(|source| {
                PodResourcesError::Connect {
                    path: path.clone(),
                    source,
                }
            })?;
            let mut client =
                PodResourcesListerClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
            let response = client
                .list(ListPodResourcesRequest {})
                .await
                .map_err(|source| PodResourcesError::List {
                    path: path.clone(),
                    source,
                })?;
            Ok(response.into_inner())
        };
        let listed = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| PodResourcesError::TimedOut {
                path: path.clone(),
                after: self.timeout,
            })??;
        debug!(pods = listed.pod_resources.len(), "Listed pod resources");
        Ok(listed)
    }
}
