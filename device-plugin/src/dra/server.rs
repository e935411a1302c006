//! EDGE: the `DRAPlugin` gRPC service the kubelet calls on the driver's socket, in both versions
//! it may speak (v1, and v1beta1 for kubelets before 1.34; the messages are the same but for v1's
//! `share_id`). It answers per claim: a claim that fails carries its error in the answer (the
//! kubelet puts it in the pod's events and retries), and never fails the others. The work is the
//! injected [`Driver`]'s; this module translates and times it.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};
use tracing::{debug, warn};

use super::decide::claims::ClaimRef;
use super::metrics::DraMetrics;
use crate::kubelet::proto::{dra_v1 as v1, dra_v1beta1 as v1beta1};

/// One device of a prepared claim, as the kubelet wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedForKubelet {
    /// The claim's requests it serves.
    pub requests: Vec<String>,
    /// Pool name (this node).
    pub pool: String,
    /// Device name.
    pub device: String,
    /// CDI device IDs for the container runtime (empty without device nodes).
    pub cdi_ids: Vec<String>,
    /// The allocation's share ID, for a shared device.
    pub share_id: Option<String>,
}

/// A failed claim operation: the PascalCase reason (metrics) and the whole message (kubelet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimFailure {
    /// PascalCase reason.
    pub reason: &'static str,
    /// Message with its causes.
    pub message: String,
}

/// What prepares and unprepares claims; the node agent implements it.
#[tonic::async_trait]
pub trait Driver: Send + Sync {
    /// Puts the claim's limits in force (read back) and returns its devices.
    async fn prepare(&self, claim: ClaimRef) -> Result<Vec<PreparedForKubelet>, ClaimFailure>;
    /// Releases the claim: its share of its pods' limits goes.
    async fn unprepare(&self, claim: ClaimRef) -> Result<(), ClaimFailure>;
}

/// The service, over a [`Driver`]. Cheap to clone.
#[derive(Clone)]
pub struct DraService {
    driver: Arc<dyn Driver>,
    metrics: DraMetrics,
}

impl DraService {
    /// A service handing claims to `driver`.
    pub fn new(driver: Arc<dyn Driver>, metrics: DraMetrics) -> Self {
        Self { driver, metrics }
    }

    async fn prepare_all(&self, claims: Vec<v1::Claim>) -> v1::NodePrepareResourcesResponse {
        let calls = claims.into_iter().map(|c| async move {
            let claim = claim_ref(c);
            let started = Instant::now();
            let result = self.driver.prepare(claim.clone()).await;
            self.metrics.prepare_duration.observe(started.elapsed().as_secs_f64());
            let answer = match result {
                Ok(devices) => {
                    debug!(claim = %claim, devices = devices.len(), "Claim prepared");
                    v1::NodePrepareResourceResponse {
                        devices: devices.into_iter().map(device).collect(),
                        error: String::new(),
                    }
                }
                Err(failure) => {
                    self.metrics.error("prepare", failure.reason);
                    warn!(claim = %claim, reason = failure.reason, error = %failure.message, "Claim not prepared");
                    v1::NodePrepareResourceResponse {
                        devices: Vec::new(),
                        error: format!("{}: {}", failure.reason, failure.message),
                    }
                }
            };
            (claim.uid, answer)
        });
        v1::NodePrepareResourcesResponse {
            claims: futures::future::join_all(calls).await.into_iter().collect(),
        }
    }

    async fn unprepare_all(&self, claims: Vec<v1::Claim>) -> v1::NodeUnprepareResourcesResponse {
        let calls = claims.into_iter().map(|c| async move {
            let claim = claim_ref(c);
            let error = match self.driver.unprepare(claim.clone()).await {
                Ok(()) => String::new(),
                Err(failure) => {
                    self.metrics.error("unprepare", failure.reason);
                    warn!(claim = %claim, reason = failure.reason, error = %failure.message, "Claim not unprepared");
                    format!("{}: {}", failure.reason, failure.message)
                }
            };
            (claim.uid, v1::NodeUnprepareResourceResponse { error })
        });
        v1::NodeUnprepareResourcesResponse {
            claims: futures::future::join_all(calls).await.into_iter().collect(),
        }
    }
}

fn claim_ref(c: v1::Claim) -> ClaimRef {
    ClaimRef {
        namespace: c.namespace,
        name: c.name,
        uid: c.uid,
    }
}

fn device(d: PreparedForKubelet) -> v1::Device {
    v1::Device {
        request_names: d.requests,
        pool_name: d.pool,
        device_name: d.device,
        cdi_device_ids: d.cdi_ids,
        share_id: d.share_id,
    }
}

#[tonic::async_trait]
impl v1::dra_plugin_server::DraPlugin for DraService {
    async fn node_prepare_resources(
        &self,
        request: Request<v1::NodePrepareResourcesRequest>,
    ) -> Result<Response<v1::NodePrepareResourcesResponse>, Status> {
        Ok(Response::new(
            self.prepare_all(request.into_inner().claims).await,
        ))
    }

    async fn node_unprepare_resources(
        &self,
        request: Request<v1::NodeUnprepareResourcesRequest>,
    ) -> Result<Response<v1::NodeUnprepareResourcesResponse>, Status> {
        Ok(Response::new(
            self.unprepare_all(request.into_inner().claims).await,
        ))
    }
}

fn claims_from_beta(claims: Vec<v1beta1::Claim>) -> Vec<v1::Claim> {
    claims
        .into_iter()
        .map(|c| v1::Claim {
            namespace: c.namespace,
            uid: c.uid,
            name: c.name,
        })
        .collect()
}

#[tonic::async_trait]
impl v1beta1::dra_plugin_server::DraPlugin for DraService {
    async fn node_prepare_resources(
        &self,
        request: Request<v1beta1::NodePrepareResourcesRequest>,
    ) -> Result<Response<v1beta1::NodePrepareResourcesResponse>, Status> {
        let answer = self
            .prepare_all(claims_from_beta(request.into_inner().claims))
            .await;
        let claims = answer
            .claims
            .into_iter()
            .map(|(uid, r)| {
                let devices = r
                    .devices
                    .into_iter()
                    .map(|d| v1beta1::Device {
                        request_names: d.request_names,
                        pool_name: d.pool_name,
                        device_name: d.device_name,
                        cdi_device_ids: d.cdi_device_ids,
                    })
                    .collect();
                (
                    uid,
                    v1beta1::NodePrepareResourceResponse {
                        devices,
                        error: r.error,
                    },
                )
            })
            .collect();
        Ok(Response::new(v1beta1::NodePrepareResourcesResponse {
            claims,
        }))
    }

    async fn node_unprepare_resources(
        &self,
        request: Request<v1beta1::NodeUnprepareResourcesRequest>,
    ) -> Result<Response<v1beta1::NodeUnprepareResourcesResponse>, Status> {
        let answer = self
            .unprepare_all(claims_from_beta(request.into_inner().claims))
            .await;
        let claims = answer
            .claims
            .into_iter()
            .map(|(uid, r)| {
                (
                    uid,
                    v1beta1::NodeUnprepareResourceResponse { error: r.error },
                )
            })
            .collect();
        Ok(Response::new(v1beta1::NodeUnprepareResourcesResponse {
            claims,
        }))
    }
}
