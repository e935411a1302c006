//! CORE: which units a container should get (`GetPreferredAllocation`) and what `Allocate` answers.
//!
//! A pod's VRAM limit is set per region, so every container's units must come from ONE region. The
//! preference packs a request onto the region with the fewest free units that still fits (best fit,
//! which keeps large regions whole for large requests); the kubelet treats the preference only as a
//! hint and may still pick units across regions (`docs/kubelet.md` §3.3), which `Allocate` then
//! refuses with [`AllocateError::SplitAcrossRegions`], so the pod fails admission instead of
//! running with a limit that cannot be expressed.

use std::collections::{BTreeMap, BTreeSet};

use super::inventory::Inventory;
use crate::kubelet::proto::v1beta1::{
    ContainerAllocateResponse, ContainerPreferredAllocationRequest, DeviceSpec,
};

/// Environment variable naming the region a container's units come from.
pub const ENV_REGION: &str = "KUBE_DMEM_REGION";
/// Environment variable with the bytes of VRAM granted to the container (units × unit size).
pub const ENV_VRAM_BYTES: &str = "KUBE_DMEM_VRAM_BYTES";

/// Units of one region named in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionShare {
    /// Region name.
    pub region: String,
    /// Number of units of that region.
    pub units: usize,
}

/// Why a preference or an allocation cannot be given. Maps to a precise gRPC code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocateError {
    /// The request names no devices.
    #[error("the request names no devices")]
    NoDevices,
    /// `allocation_size` is zero or negative.
    #[error("allocation size {size} is not positive")]
    InvalidSize {
        /// The size received.
        size: i32,
    },
    /// More must-include devices than the allocation size.
    #[error("{must_include} must-include devices exceed the allocation size {size}")]
    MustIncludeExceedsSize {
        /// Number of must-include devices.
        must_include: usize,
        /// The allocation size.
        size: usize,
    },
    /// A device ID is not in our format.
    #[error("device ID {id:?} is not of the form <region key>-<unit>")]
    MalformedDeviceId {
        /// The ID as received.
        id: String,
    },
    /// A device ID names no unit of this node.
    #[error("device ID {id:?} names no unit of this node")]
    UnknownDevice {
        /// The ID as received.
        id: String,
    },
    /// The same device ID appears twice.
    #[error("device ID {id:?} appears more than once")]
    DuplicateDevice {
        /// The repeated ID.
        id: String,
    },
    /// A unit whose region is gone (or shrank) cannot be handed out.
    #[error("device {id:?} of region {region} is unhealthy")]
    UnhealthyDevice {
        /// The ID as received.
        id: String,
        /// Its region.
        region: String,
    },
    /// Fewer units are available than requested.
    #[error("{requested} units requested but only {available} available")]
    InsufficientUnits {
        /// Units requested.
        requested: usize,
        /// Units available.
        available: usize,
    },
    /// The devices come from more than one region; a container's limit must name one region.
    #[error("devices span {} regions ({}); a container's units must come from one region", .regions.len(), describe(.regions))]
    SplitAcrossRegions {
        /// Each region named, with its unit count, ordered by region name.
        regions: Vec<RegionShare>,
    },
}

fn describe(regions: &[RegionShare]) -> String {
    let parts: Vec<String> = regions
        .iter()
        .map(|s| format!("{}: {} units", s.region, s.units))
        .collect();
    parts.join(", ")
}

impl AllocateError {
    /// PascalCase reason for logs, metrics and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoDevices => "NoDevices",
            Self::InvalidSize { .. } => "InvalidSize",
            Self::MustIncludeExceedsSize { .. } => "MustIncludeExceedsSize",
            Self::MalformedDeviceId { .. } => "MalformedDeviceId",
            Self::UnknownDevice { .. } => "UnknownDevice",
            Self::DuplicateDevice { .. } => "DuplicateDevice",
            Self::UnhealthyDevice { .. } => "UnhealthyDevice",
            Self::InsufficientUnits { .. } => "InsufficientUnits",
            Self::SplitAcrossRegions { .. } => "SplitAcrossRegions",
        }
    }
}

impl From<AllocateError> for tonic::Status {
    fn from(err: AllocateError) -> Self {
        use tonic::Code;
        let code = match &err {
            AllocateError::NoDevices
            | AllocateError::InvalidSize { .. }
            | AllocateError::MustIncludeExceedsSize { .. }
            | AllocateError::MalformedDeviceId { .. }
            | AllocateError::DuplicateDevice { .. } => Code::InvalidArgument,
            AllocateError::UnknownDevice { .. } => Code::NotFound,
            AllocateError::UnhealthyDevice { .. } => Code::FailedPrecondition,
            AllocateError::InsufficientUnits { .. } | AllocateError::SplitAcrossRegions { .. } => {
                Code::ResourceExhausted
            }
        };
        tonic::Status::new(code, format!("{}: {err}", err.reason()))
    }
}

/// What `Allocate` grants one container: units of exactly one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// Region name, e.g. `drm/0000:03:00.0/vram0`.
    pub region: String,
    /// Unit indexes within the region, ascending.
    pub units: Vec<u32>,
    /// Bytes granted: units × unit size.
    pub bytes: u64,
}

/// Resolves device IDs to units per region (region name → unit indexes), refusing malformed,
/// unknown and repeated IDs. Health is not checked: a pod keeps units of a region that vanished.
pub fn units_by_region(
    inventory: &Inventory,
    device_ids: &[String],
) -> Result<UnitSets, AllocateError> {
    let mut by_region = UnitSets::new();
    for id in device_ids {
        let unit = inventory.resolve(id).map_err(|err| match err {
            super::inventory::ResolveError::Malformed { id } => {
                AllocateError::MalformedDeviceId { id }
            }
            super::inventory::ResolveError::Unknown { id } => AllocateError::UnknownDevice { id },
        })?;
        if !by_region
            .entry(unit.region.name().to_owned())
            .or_default()
            .insert(unit.unit)
        {
            return Err(AllocateError::DuplicateDevice { id: id.clone() });
        }
    }
    Ok(by_region)
}

/// Checks an `Allocate` request for one container and computes its grant.
pub fn allocate(inventory: &Inventory, device_ids: &[String]) -> Result<Allocation, AllocateError> {
    if device_ids.is_empty() {
        return Err(AllocateError::NoDevices);
    }
    for id in device_ids {
        if let Ok(unit) = inventory.resolve(id)
            && !unit.is_healthy()
        {
            let region = unit.region.name().to_owned();
            return Err(AllocateError::UnhealthyDevice {
                id: id.clone(),
                region,
            });
        }
    }
    let by_region = units_by_region(inventory, device_ids)?;
    let mut regions = by_region.into_iter();
    match (regions.next(), regions.next()) {
        (Some((region, units)), None) => {
            let units: Vec<u32> = units.into_iter().collect();
            let bytes = inventory.unit_bytes().saturating_mul(units.len() as u64);
            Ok(Allocation {
                region,
                units,
                bytes,
            })
        }
        (first, second) => {
            let shares = first.into_iter().chain(second).chain(regions);
            let regions = shares.map(|(region, units)| RegionShare {
                region,
                units: units.len(),
            });
            Err(AllocateError::SplitAcrossRegions {
                regions: regions.collect(),
            })
        }
    }
}

/// The preferred devices for one container: all must-include devices plus units packed onto as few
/// regions as possible, preferring the region with the fewest free units that still fits.
///
/// Free units are the request's available devices (the kubelet's healthy, unallocated ones). The
/// answer is ordered by region name then unit, so equal requests give equal answers.
pub fn preferred(
    inventory: &Inventory,
    request: &ContainerPreferredAllocationRequest,
) -> Result<Vec<String>, AllocateError> {
    let size = usize::try_from(request.allocation_size)
        .ok()
        .filter(|s| *s > 0)
        .ok_or(AllocateError::InvalidSize {
            size: request.allocation_size,
        })?;
    let must = units_by_region(inventory, &request.must_include_device_i_ds)?;
    let must_count: usize = must.values().map(BTreeSet::len).sum();
    if must_count > size {
        return Err(AllocateError::MustIncludeExceedsSize {
            must_include: must_count,
            size,
        });
    }
    // Duplicates in the available list are harmless for a preference: dedupe before resolving.
    let available: BTreeSet<String> = request.available_device_i_ds.iter().cloned().collect();
    let available: Vec<String> = available.into_iter().collect();
    let mut free = units_by_region(inventory, &available)?;
    for (region, units) in &must {
        let entry = free.entry(region.clone()).or_default();
        entry.retain(|u| !units.contains(u));
    }
    let free_count: usize = free.values().map(BTreeSet::len).sum();
    if must_count + free_count < size {
        let available = must_count + free_count;
        return Err(AllocateError::InsufficientUnits {
            requested: size,
            available,
        });
    }
    let chosen = pack(must, free, size - must_count);
    let mut ids = Vec::with_capacity(size);
    for (region, units) in &chosen {
        let state = inventory.region(region);
        ids.extend(
            state
                .into_iter()
                .flat_map(|s| units.iter().map(|u| s.device_id(*u).to_string())),
        );
    }
    Ok(ids)
}

/// Adds `need` units from `free` to `chosen`: first from regions already chosen (largest first), then
/// the best-fitting single region, else the largest region and repeat. This uses the fewest regions.
fn pack(mut chosen: UnitSets, mut free: UnitSets, mut need: usize) -> UnitSets {
    let mut already: Vec<(usize, String)> = chosen
        .keys()
        .map(|r| (free.get(r).map_or(0, BTreeSet::len), r.clone()))
        .collect();
    already.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    for (_, region) in already {
        need -= take(&mut free, &mut chosen, &region, need);
    }
    while need > 0 {
        let mut sizes: Vec<(usize, String)> = free
            .iter()
            .filter(|(r, units)| !units.is_empty() && !chosen.contains_key(*r))
            .map(|(r, units)| (units.len(), r.clone()))
            .collect();
        let best_fit = sizes.iter().filter(|(n, _)| *n >= need).min().cloned();
        sizes.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let Some((_, region)) = best_fit.or_else(|| sizes.first().cloned()) else {
            break; // callers check the total first; nothing left to take
        };
        need -= take(&mut free, &mut chosen, &region, need);
    }
    chosen
}

/// Moves up to `count` of `region`'s lowest free units into `chosen`; returns how many moved.
fn take(free: &mut UnitSets, chosen: &mut UnitSets, region: &str, count: usize) -> usize {
    let units = free.remove(region).unwrap_or_default();
    let target = chosen.entry(region.to_owned()).or_default();
    let before = target.len();
    target.extend(units.into_iter().take(count));
    target.len() - before
}

/// Unit indexes per region name, both ordered.
pub type UnitSets = BTreeMap<String, BTreeSet<u32>>;

/// The PCI address (`0000:03:00.0`) in a DRM region name such as `drm/0000:03:00.0/vram0`, if any.
pub fn pci_address(region: &str) -> Option<&str> {
    let mut parts = region.split('/');
    let (Some("drm"), Some(bdf)) = (parts.next(), parts.next()) else {
        return None;
    };
    let b = bdf.as_bytes();
    let hex = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_hexdigit);
    let shape = b.len() == 12 && b[4] == b':' && b[7] == b':' && b[10] == b'.';
    (shape && hex(0..4) && hex(5..7) && hex(8..10) && (b'0'..=b'7').contains(&b[11])).then_some(bdf)
}

/// The `Allocate` answer for one container: the region and bytes as environment variables, and the
/// GPU's device nodes (empty in simulation).
pub fn container_response(
    allocation: &Allocation,
    devices: Vec<DeviceSpec>,
) -> ContainerAllocateResponse {
    let envs = [
        (ENV_REGION.to_owned(), allocation.region.clone()),
        (ENV_VRAM_BYTES.to_owned(), allocation.bytes.to_string()),
    ];
    ContainerAllocateResponse {
        envs: envs.into_iter().collect(),
        devices,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
