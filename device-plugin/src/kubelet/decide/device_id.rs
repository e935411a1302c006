//! CORE: the device-ID scheme of `kube-dmem.io/vram` units: region keys, parsing and printing.
//!
//! A device ID is `<region key>-<unit index>`, for example `3f9a0c71d2e4-5`:
//! - the region key is 12 lowercase hex digits: the 64-bit FNV-1a hash of the region name
//!   (`drm/0000:03:00.0/vram0`), xor-folded to 48 bits. It is short, uses no `/` or `:`, and depends
//!   only on the name, so it is the same after an agent restart or a reboot that re-orders regions
//!   (the kubelet's checkpoint keeps the IDs it handed out). Two names with the same key would be
//!   ambiguous, so [`Inventory::observe`](super::inventory::Inventory::observe) refuses them
//!   instead of guessing.
//! - the unit index is a canonical decimal number (no sign, no leading zeros), starting at 0.
//!
//! The longest ID is 12 + 1 + 10 = 23 characters, well under the kubelet's 63. The key → region name
//! lookup table is the inventory itself ([`Inventory::resolve`](super::inventory::Inventory::resolve)).

use std::fmt;

/// Why a device ID does not name a unit of this inventory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The ID is not `<12 hex digits>-<canonical decimal>`.
    #[error("device ID {id:?} is not of the form <region key>-<unit>")]
    Malformed {
        /// The ID as received.
        id: String,
    },
    /// The ID is well formed but no listed unit has it.
    #[error("device ID {id:?} names no unit of this node")]
    Unknown {
        /// The ID as received.
        id: String,
    },
}

/// The compact, stable key of a region inside device IDs (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionKey(String);

impl RegionKey {
    /// Digits in a key: 48 bits of hash, enough that a collision among a node's few regions is
    /// practically impossible (and detected if it happens).
    pub const LEN: usize = 12;

    /// Key of the region named `region`.
    pub fn of(region: &str) -> Self {
        const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
        let hash = region.bytes().fold(FNV_OFFSET, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
        });
        let folded = (hash >> 48) ^ (hash & 0xffff_ffff_ffff);
        Self(format!("{folded:012x}"))
    }

    /// The key as it appears in device IDs.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RegionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed device ID: which region (by key) and which unit of it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId {
    /// Region key.
    pub key: RegionKey,
    /// Unit index within the region, from 0.
    pub unit: u32,
}

impl DeviceId {
    /// Parses `<key>-<unit>`, accepting only the canonical form so every unit has exactly one ID.
    pub fn parse(id: &str) -> Result<Self, ResolveError> {
        let malformed = || ResolveError::Malformed { id: id.to_owned() };
        let (key, unit) = id.split_once('-').ok_or_else(malformed)?;
        let key_ok = key.len() == RegionKey::LEN
            && key
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let unit_ok = !unit.is_empty()
            && unit.bytes().all(|b| b.is_ascii_digit())
            && (unit == "0" || !unit.starts_with('0'));
        if !key_ok || !unit_ok {
            return Err(malformed());
        }
        let unit = unit.parse().map_err(|_| malformed())?;
        Ok(Self {
            key: RegionKey(key.to_owned()),
            unit,
        })
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.key, self.unit)
    }
}
