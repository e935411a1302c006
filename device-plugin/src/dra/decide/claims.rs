//! CORE: what a ResourceClaim allocated on this node means for the kernel. The kubelet names a
//! claim only (namespace, name, UID); its allocation results say which of our devices it got and
//! how much memory of each (`consumedCapacity`), and `reservedFor` says which pods use it.
//! [`prepare`] turns that into a [`Prepared`] claim, or a precise [`ClaimError`]; [`grants_by_pod`]
//! sums the prepared claims of each pod per region, and those sums enter the round as grants, the
//! same input the device plugin's units give: a quota can lower them, never raise them.

use std::collections::BTreeMap;

use k8s_openapi::api::resource::v1::{DeviceRequestAllocationResult, ResourceClaim};
use kube_dmem_crds::quantity::parse_quantity;
use kube_dmem_crds::select::Grant;
use serde::{Deserialize, Serialize};

use super::slice::RegionDevice;
use super::{DRIVER, MEMORY};

/// `apiVersion` of our opaque device configuration.
pub const CONFIG_API_VERSION: &str = "vram.kube-dmem.io/v1alpha1";
/// `kind` of our opaque device configuration.
pub const CONFIG_KIND: &str = "VramConfig";

/// A claim as the kubelet names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClaimRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
}

impl std::fmt::Display for ClaimRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One allocated device of a prepared claim, as the kubelet wants it back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedDevice {
    /// The claim's requests this device serves.
    pub requests: Vec<String>,
    /// Device name in our slice.
    pub device: String,
    /// The region behind it.
    pub region: String,
    /// Bytes the claim consumes of it.
    pub bytes: u64,
    /// Set by the scheduler when the device is shared between allocations.
    pub share_id: Option<String>,
}

/// A claim prepared on this node: who uses it and what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepared {
    /// The claim.
    pub claim: ClaimRef,
    /// The pool (this node) the devices come from.
    pub pool: String,
    /// UIDs of the pods it is reserved for.
    pub pods: Vec<String>,
    /// Its devices of our driver.
    pub devices: Vec<PreparedDevice>,
}

/// Why a claim cannot be prepared. Each is reported in the claim's `NodePrepareResources` answer,
/// so the kubelet shows it in the pod's events; nothing already prepared is touched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// The claim read from the API server is another object than the one the kubelet named.
    #[error("claim {claim} has UID {found}, the kubelet asked for {expected}")]
    UidMismatch {
        /// The claim.
        claim: String,
        /// The UID the kubelet sent.
        expected: String,
        /// The UID read.
        found: String,
    },
    /// The claim has no allocation yet.
    #[error("claim {claim} is not allocated")]
    NotAllocated {
        /// The claim.
        claim: String,
    },
    /// No pod is in the claim's `reservedFor`.
    #[error("claim {claim} is not reserved for any pod")]
    NotReserved {
        /// The claim.
        claim: String,
    },
    /// The claim got a device of ours from another node's pool.
    #[error("claim {claim} has device {device} of pool {pool}, not of this node's pool {node}")]
    OtherPool {
        /// The claim.
        claim: String,
        /// Device name.
        device: String,
        /// Its pool.
        pool: String,
        /// This node's pool.
        node: String,
    },
    /// The device is not (or no longer) among this node's regions.
    #[error(
        "claim {claim} has device {device}, which is not a dmem region of this node (any more)"
    )]
    DeviceNotFound {
        /// The claim.
        claim: String,
        /// Device name.
        device: String,
    },
    /// A `consumedCapacity` that is not a byte quantity.
    #[error(
        "claim {claim}: consumed capacity {value:?} of device {device} is not a quantity of bytes"
    )]
    BadCapacity {
        /// The claim.
        claim: String,
        /// Device name.
        device: String,
        /// The value.
        value: String,
    },
    /// The claim takes more of a region than the region has.
    #[error(
        "claim {claim} takes {requested} bytes of device {device} ({region}), which has {capacity}"
    )]
    ExceedsRegion {
        /// The claim.
        claim: String,
        /// Device name.
        device: String,
        /// Region name.
        region: String,
        /// Bytes the claim takes of it.
        requested: u64,
        /// The region's capacity.
        capacity: u64,
    },
    /// An opaque configuration for our driver that we cannot read.
    #[error("claim {claim}: opaque configuration #{index} for {DRIVER} is malformed: {error}")]
    MalformedConfig {
        /// The claim.
        claim: String,
        /// Its index in `status.allocation.devices.config`.
        index: usize,
        /// What is wrong.
        error: String,
    },
}

impl ClaimError {
    /// PascalCase reason for events, logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UidMismatch { .. } => "ClaimUidMismatch",
            Self::NotAllocated { .. } => "ClaimNotAllocated",
            Self::NotReserved { .. } => "ClaimNotReserved",
            Self::OtherPool { .. } => "ClaimOtherPool",
            Self::DeviceNotFound { .. } => "RegionNotFound",
            Self::BadCapacity { .. } => "BadConsumedCapacity",
            Self::ExceedsRegion { .. } => "ClaimExceedsRegion",
            Self::MalformedConfig { .. } => "MalformedConfig",
        }
    }
}

/// Our opaque configuration. It carries no settings yet; it is checked so that a typo or a field
/// from a later version is refused rather than silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VramConfig {
    api_version: String,
    kind: String,
}

/// Checks the claim `want` as read (`claim`) and turns its allocation into a [`Prepared`] claim,
/// against this node's `pool` and the devices of the latest round.
pub fn prepare(
    claim: &ResourceClaim,
    want: &ClaimRef,
    pool: &str,
    devices: &[RegionDevice],
) -> Result<Prepared, ClaimError> {
    let name = want.to_string();
    let found = claim.metadata.uid.clone().unwrap_or_default();
    if found != want.uid {
        return Err(ClaimError::UidMismatch {
            claim: name,
            expected: want.uid.clone(),
            found,
        });
    }
    let status = claim.status.as_ref();
    let allocation = (status.and_then(|s| s.allocation.as_ref()))
        .and_then(|a| a.devices.as_ref())
        .ok_or_else(|| ClaimError::NotAllocated {
            claim: name.clone(),
        })?;
    for (index, config) in allocation.config.iter().flatten().enumerate() {
        if let Some(opaque) = config.opaque.as_ref().filter(|o| o.driver == DRIVER) {
            check_config(&opaque.parameters.0).map_err(|error| ClaimError::MalformedConfig {
                claim: name.clone(),
                index,
                error,
            })?;
        }
    }
    let pods: Vec<String> = (status.and_then(|s| s.reserved_for.as_ref()))
        .into_iter()
        .flatten()
        .filter(|r| r.resource == "pods" && r.api_group.as_deref().unwrap_or("").is_empty())
        .map(|r| r.uid.clone())
        .collect();
    if pods.is_empty() {
        return Err(ClaimError::NotReserved { claim: name });
    }
    let ours = allocation
        .results
        .iter()
        .flatten()
        .filter(|r| r.driver == DRIVER);
    let mut out: Vec<PreparedDevice> = Vec::new();
    for result in ours {
        let device = prepared_device(result, &name, pool, devices)?;
        match out.iter_mut().find(|d| d.device == device.device) {
            // Two requests of one claim on one device: one device, both requests, their sum.
            Some(same) => {
                same.requests.extend(device.requests);
                same.bytes = same.bytes.saturating_add(device.bytes);
            }
            None => out.push(device),
        }
    }
    for d in &out {
        let capacity = devices
            .iter()
            .find(|r| r.device == d.device)
            .map_or(0, |r| r.bytes);
        if d.bytes > capacity {
            return Err(ClaimError::ExceedsRegion {
                claim: name,
                device: d.device.clone(),
                region: d.region.clone(),
                requested: d.bytes,
                capacity,
            });
        }
    }
    Ok(Prepared {
        claim: want.clone(),
        pool: pool.to_owned(),
        pods,
        devices: out,
    })
}

fn prepared_device(
    result: &DeviceRequestAllocationResult,
    claim: &str,
    pool: &str,
    devices: &[RegionDevice],
) -> Result<PreparedDevice, ClaimError> {
    if result.pool != pool {
        return Err(ClaimError::OtherPool {
            claim: claim.to_owned(),
            device: result.device.clone(),
            pool: result.pool.clone(),
            node: pool.to_owned(),
        });
    }
    let region = devices
        .iter()
        .find(|d| d.device == result.device)
        .ok_or_else(|| ClaimError::DeviceNotFound {
            claim: claim.to_owned(),
            device: result.device.clone(),
        })?;
    // Without consumed capacity the device was allocated whole (a scheduler without consumable
    // capacity treats every device as exclusive).
    let bytes = match result
        .consumed_capacity
        .as_ref()
        .and_then(|c| c.get(MEMORY))
    {
        None => region.bytes,
        Some(q) => parse_quantity(&q.0).map_err(|_| ClaimError::BadCapacity {
            claim: claim.to_owned(),
            device: result.device.clone(),
            value: q.0.clone(),
        })?,
    };
    Ok(PreparedDevice {
        requests: vec![result.request.clone()],
        device: result.device.clone(),
        region: region.region.clone(),
        bytes,
        share_id: result.share_id.clone(),
    })
}

fn check_config(value: &serde_json::Value) -> Result<(), String> {
    let config: VramConfig = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    if config.api_version != CONFIG_API_VERSION || config.kind != CONFIG_KIND {
        return Err(format!(
            "expected apiVersion {CONFIG_API_VERSION} and kind {CONFIG_KIND}, got {} {}",
            config.api_version, config.kind
        ));
    }
    Ok(())
}

/// Every pod's grants from the prepared claims: per region the sum over the pod's claims.
pub fn grants_by_pod<'a>(
    prepared: impl IntoIterator<Item = &'a Prepared>,
) -> BTreeMap<String, Vec<Grant>> {
    let mut sums: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for claim in prepared {
        for pod in &claim.pods {
            let regions = sums.entry(pod.as_str()).or_default();
            for d in &claim.devices {
                let sum = regions.entry(d.region.as_str()).or_default();
                *sum = sum.saturating_add(d.bytes);
            }
        }
    }
    sums.into_iter()
        .map(|(pod, regions)| {
            let grants = regions
                .into_iter()
                .map(|(region, bytes)| Grant {
                    region: region.to_owned(),
                    bytes,
                })
                .collect();
            (pod.to_owned(), grants)
        })
        .collect()
}

#[cfg(test)]
mod tests;
