//! CORE: the device table the plugin advertises. Each dmem region's VRAM is split into fixed-size
//! units (default 1 GiB, rounded down); every unit is one kubelet device of `kube-dmem.io/vram`.
//!
//! Device IDs are `<region key>-<unit>` ([`DeviceId`], documented in `device_id`); the key → region
//! name lookup table is the inventory itself ([`Inventory::resolve`]).
//!
//! # Health
//!
//! A unit is `Healthy` while its region is listed in `dmem.capacity` with at least that many units.
//! A region that disappears (or shrinks) keeps its units listed as `Unhealthy`: the kubelet's capacity
//! stays, its allocatable drops, and pods already holding the units keep them.

use std::collections::BTreeMap;
use std::num::NonZeroU64;

pub use super::device_id::{DeviceId, RegionKey, ResolveError};
use crate::kubelet::proto::v1beta1::{Device, ListAndWatchResponse};
use crate::kubelet::proto::{HEALTHY, UNHEALTHY};

/// Default size of one VRAM unit: 1 GiB, coarse enough to keep device lists small
/// (`docs/kubelet.md` §3.8).
pub const DEFAULT_UNIT_BYTES: NonZeroU64 = NonZeroU64::new(1 << 30).expect("1 GiB is not zero");

/// Most devices one inventory may list: keeps a `ListAndWatchResponse` (about 30 bytes per device)
/// far below the kubelet's 4 MiB receive limit and its checkpoint small.
pub const MAX_DEVICES: u64 = 32_768;

/// Why a new capacity reading cannot become an inventory; the previous inventory stays in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    /// Two region names hash to the same key, so their device IDs would be ambiguous.
    #[error("regions {first:?} and {second:?} share device-ID key {key}")]
    RegionKeyCollision {
        /// The shared key.
        key: String,
        /// One region name.
        first: String,
        /// The other region name.
        second: String,
    },
    /// The unit size is so small that the device list would not fit a kubelet message.
    #[error("{devices} devices at {unit_bytes} bytes per unit exceed the limit of {MAX_DEVICES}")]
    TooManyDevices {
        /// Devices the reading would list.
        devices: u64,
        /// Configured unit size.
        unit_bytes: u64,
    },
}

impl InventoryError {
    /// PascalCase reason for logs, metrics and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::RegionKeyCollision { .. } => "RegionKeyCollision",
            Self::TooManyDevices { .. } => "TooManyDevices",
        }
    }
}

/// What the inventory knows about one region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionState {
    name: String,
    key: RegionKey,
    listed_units: u32,
    present_units: u32,
}

impl RegionState {
    /// Region name as in `dmem.capacity`, e.g. `drm/0000:03:00.0/vram0`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Key used in this region's device IDs.
    pub fn key(&self) -> &RegionKey {
        &self.key
    }

    /// Units listed to the kubelet: the most this region ever had since the agent started.
    pub fn listed_units(&self) -> u32 {
        self.listed_units
    }

    /// Units that exist now (0 once the region disappeared); these are the healthy ones.
    pub fn present_units(&self) -> u32 {
        self.present_units
    }

    /// Whether `unit` is listed and healthy.
    pub fn is_healthy(&self, unit: u32) -> bool {
        unit < self.present_units
    }

    /// Device ID of `unit` in this region.
    pub fn device_id(&self, unit: u32) -> DeviceId {
        DeviceId {
            key: self.key.clone(),
            unit,
        }
    }
}

/// A resolved device ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitRef<'a> {
    /// The region holding the unit.
    pub region: &'a RegionState,
    /// Unit index within the region.
    pub unit: u32,
}

impl UnitRef<'_> {
    /// Whether the unit may be allocated now.
    pub fn is_healthy(&self) -> bool {
        self.region.is_healthy(self.unit)
    }
}

/// The device table: every region ever seen since start, keyed by region key, with its units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inventory {
    unit_bytes: NonZeroU64,
    regions: BTreeMap<RegionKey, RegionState>,
}

impl Default for Inventory {
    fn default() -> Self {
        Self::new(DEFAULT_UNIT_BYTES)
    }
}

impl Inventory {
    /// An empty inventory with units of `unit_bytes` bytes.
    pub fn new(unit_bytes: NonZeroU64) -> Self {
        Self {
            unit_bytes,
            regions: BTreeMap::new(),
        }
    }

    /// Bytes per unit.
    pub fn unit_bytes(&self) -> u64 {
        self.unit_bytes.get()
    }

    /// The next inventory after reading `capacity` (region name → bytes, from `dmem.capacity`).
    ///
    /// Regions missing from `capacity` keep their units, all unhealthy; a region that shrank keeps its
    /// highest unit count with the lost units unhealthy; a region that comes back is healthy again.
    pub fn observe(&self, capacity: &BTreeMap<String, u64>) -> Result<Self, InventoryError> {
        let mut regions = self.regions.clone();
        for state in regions.values_mut() {
            state.present_units = 0;
        }
        for (name, bytes) in capacity {
            let units = u32::try_from(bytes / self.unit_bytes.get()).unwrap_or(u32::MAX);
            let key = RegionKey::of(name);
            let state = regions.entry(key.clone()).or_insert_with(|| RegionState {
                name: name.clone(),
                key: key.clone(),
                listed_units: 0,
                present_units: 0,
            });
            if state.name != *name {
                let (first, second) = (state.name.clone(), name.clone());
                return Err(InventoryError::RegionKeyCollision {
                    key: key.to_string(),
                    first,
                    second,
                });
            }
            state.present_units = units;
            state.listed_units = state.listed_units.max(units);
        }
        let devices: u64 = regions.values().map(|r| u64::from(r.listed_units)).sum();
        if devices > MAX_DEVICES {
            return Err(InventoryError::TooManyDevices {
                devices,
                unit_bytes: self.unit_bytes(),
            });
        }
        Ok(Self {
            unit_bytes: self.unit_bytes,
            regions,
        })
    }

    /// Every region ever seen, ordered by key.
    pub fn regions(&self) -> impl Iterator<Item = &RegionState> {
        self.regions.values()
    }

    /// The region named `name`, if it was ever seen.
    pub fn region(&self, name: &str) -> Option<&RegionState> {
        self.regions
            .get(&RegionKey::of(name))
            .filter(|r| r.name == name)
    }

    /// Looks a device ID up: which region and unit it names.
    pub fn resolve(&self, id: &str) -> Result<UnitRef<'_>, ResolveError> {
        let parsed = DeviceId::parse(id)?;
        self.regions
            .get(&parsed.key)
            .filter(|region| parsed.unit < region.listed_units)
            .map(|region| UnitRef {
                region,
                unit: parsed.unit,
            })
            .ok_or_else(|| ResolveError::Unknown { id: id.to_owned() })
    }

    /// Number of listed devices and how many of them are healthy.
    pub fn counts(&self) -> (u64, u64) {
        self.regions.values().fold((0, 0), |(all, healthy), r| {
            (
                all + u64::from(r.listed_units),
                healthy + u64::from(r.present_units),
            )
        })
    }
}

/// The `ListAndWatch` message for `inventory`: every listed unit with its health, ordered by region
/// name then unit, so equal inventories give equal messages.
pub fn list_and_watch_response(inventory: &Inventory) -> ListAndWatchResponse {
    let mut regions: Vec<&RegionState> = inventory.regions().collect();
    regions.sort_by(|a, b| a.name.cmp(&b.name));
    let devices = regions
        .into_iter()
        .flat_map(|region| {
            (0..region.listed_units).map(move |unit| Device {
                id: region.device_id(unit).to_string(),
                health: if region.is_healthy(unit) {
                    HEALTHY
                } else {
                    UNHEALTHY
                }
                .to_owned(),
                topology: None,
            })
        })
        .collect();
    ListAndWatchResponse { devices }
}

#[cfg(test)]
mod tests;
