//! CORE: the node's ResourceSlice: one device per dmem region, named by a DNS label derived from
//! the region name, with its memory as a consumable capacity (`allowMultipleAllocations`) under a
//! request policy, and attributes a DeviceClass or a claim can select on (`docs/dra.md` §3).
//!
//! The slice is written only when [`SliceContent`] changes: the publisher compares the content it
//! last applied with the one for the regions of the latest round, so a steady node makes no writes.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::resource::v1::{
    CapacityRequestPolicy, CapacityRequestPolicyRange, Device, DeviceAttribute, DeviceCapacity,
    ResourcePool, ResourceSliceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{DRIVER, MEMORY};
use crate::kubelet::decide::allocate::pci_address;

/// Longest DNS label, the limit on device names.
const MAX_LABEL: usize = 63;

/// How claims may carve a region: the smallest claim and the granularity above it, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestPolicy {
    /// Smallest claim; also the default when a request names no capacity.
    pub min: u64,
    /// Claims are rounded up to `min + k × step`.
    pub step: u64,
}

impl Default for RequestPolicy {
    fn default() -> Self {
        Self {
            min: 256 << 20,
            step: 256 << 20,
        }
    }
}

/// One region as a DRA device.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RegionDevice {
    /// Device name in the slice (a DNS label).
    pub device: String,
    /// The dmem region name, e.g. `drm/0000:03:00.0/vram0`.
    pub region: String,
    /// `dmem.capacity` of the region, in bytes.
    pub bytes: u64,
    /// The kernel driver bound to the GPU (`xe`, `amdgpu`, `nvidia`), where it could be read.
    pub kernel_driver: Option<String>,
}

impl RegionDevice {
    /// The GPU's PCI address, where the region name carries one.
    pub fn pci_address(&self) -> Option<&str> {
        pci_address(&self.region)
    }
}

/// What the slice publishes; compared with the last applied content to skip unchanged writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceContent {
    /// The devices, ordered by name.
    pub devices: Vec<RegionDevice>,
    /// The request policy of every device's memory.
    pub policy: RequestPolicy,
}

/// The devices for `regions` (`(name, bytes)`), with the kernel driver of each PCI address where
/// known. Names are unique: regions whose labels collide, or are too long, get a hash suffix.
pub fn devices(regions: &[(String, u64)], drivers: &BTreeMap<String, String>) -> Vec<RegionDevice> {
    let labels: Vec<String> = regions.iter().map(|(r, _)| label(r)).collect();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &labels {
        *seen.entry(l.as_str()).or_default() += 1;
    }
    let mut out: Vec<RegionDevice> = regions
        .iter()
        .zip(&labels)
        .map(|((region, bytes), l)| {
            let device = if seen.get(l.as_str()) == Some(&1) && l.len() <= MAX_LABEL {
                l.clone()
            } else {
                hashed(l, region)
            };
            RegionDevice {
                kernel_driver: pci_address(region).and_then(|pci| drivers.get(pci).cloned()),
                device,
                region: region.clone(),
                bytes: *bytes,
            }
        })
        .collect();
    out.sort();
    out
}

/// A region name as a DNS label: lower case, every run of other characters one `-`, trimmed.
fn label(region: &str) -> String {
    let mut out = String::with_capacity(region.len());
    for c in region.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_matches('-');
    if trimmed.is_empty() {
        "region".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// `label` cut to fit, with a hash of the full region name (FNV-1a, stable across releases).
fn hashed(label: &str, region: &str) -> String {
    let hash = region.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let suffix = format!("-{:08x}", hash as u32);
    let keep = MAX_LABEL - suffix.len();
    let head = label.get(..keep.min(label.len())).unwrap_or(label);
    format!("{}{suffix}", head.trim_end_matches('-'))
}

/// The slice's name: one slice per node, so the pool has exactly one.
pub fn slice_name(node: &str) -> String {
    format!("{node}-{}", DRIVER.replace('.', "-"))
}

/// The slice's spec for `content` on `node`, at pool `generation`.
pub fn slice_spec(node: &str, content: &SliceContent, generation: i64) -> ResourceSliceSpec {
    ResourceSliceSpec {
        driver: DRIVER.to_owned(),
        node_name: Some(node.to_owned()),
        pool: ResourcePool {
            name: node.to_owned(),
            generation,
            resource_slice_count: 1,
        },
        devices: Some(
            (content.devices.iter())
                .map(|d| device(d, content.policy))
                .collect(),
        ),
        ..ResourceSliceSpec::default()
    }
}

fn device(d: &RegionDevice, policy: RequestPolicy) -> Device {
    let string = |s: &str| DeviceAttribute {
        string: Some(s.to_owned()),
        ..DeviceAttribute::default()
    };
    let mut attributes = BTreeMap::from([("region".to_owned(), string(&d.region))]);
    if let Some(pci) = d.pci_address() {
        attributes.insert("pciAddress".to_owned(), string(pci));
    }
    if let Some(driver) = &d.kernel_driver {
        attributes.insert("kernelDriver".to_owned(), string(driver));
    }
    let quantity = |b: u64| Quantity(b.to_string());
    let memory = DeviceCapacity {
        value: quantity(d.bytes),
        request_policy: Some(CapacityRequestPolicy {
            default: Some(quantity(policy.min)),
            valid_range: Some(CapacityRequestPolicyRange {
                min: quantity(policy.min),
                max: None,
                step: Some(quantity(policy.step)),
            }),
            valid_values: None,
        }),
    };
    Device {
        name: d.device.clone(),
        attributes: Some(attributes),
        capacity: Some(BTreeMap::from([(MEMORY.to_owned(), memory)])),
        allow_multiple_allocations: Some(true),
        ..Device::default()
    }
}

/// The device names of `content`, for lookups by name.
pub fn names(content: &SliceContent) -> BTreeSet<&str> {
    content.devices.iter().map(|d| d.device.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: u64 = 1 << 30;

    fn regions(names: &[&str]) -> Vec<(String, u64)> {
        names.iter().map(|n| ((*n).to_owned(), 16 * GI)).collect()
    }

    #[test]
    fn regions_become_dns_label_devices() {
        let drivers = BTreeMap::from([("0000:03:00.0".to_owned(), "xe".to_owned())]);
        let got = devices(
            &regions(&["drm/0000:03:00.0/vram0", "drm/0000:0A:00.0/vram1"]),
            &drivers,
        );
        let names: Vec<&str> = got.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(names, ["drm-0000-03-00-0-vram0", "drm-0000-0a-00-0-vram1"]);
        assert_eq!(got[0].kernel_driver.as_deref(), Some("xe"));
        assert_eq!(got[1].kernel_driver, None);
        assert_eq!(got[0].pci_address(), Some("0000:03:00.0"));
    }

    #[test]
    fn colliding_and_long_names_get_distinct_hashed_labels() {
        let long = format!("drm/{}/vram0", "x".repeat(80));
        let got = devices(&regions(&["a.b", "a-b", &long, "///"]), &BTreeMap::new());
        let names: BTreeSet<&str> = got.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(names.len(), 4, "{names:?}");
        for d in &got {
            assert!(d.device.len() <= MAX_LABEL, "{}", d.device);
            assert!(
                d.device
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            );
            assert!(!d.device.starts_with('-') && !d.device.ends_with('-'));
        }
        assert!(
            names.contains("region"),
            "an all-symbol name still gets a label"
        );
        // Stable: the same regions give the same names.
        assert_eq!(
            got,
            devices(&regions(&["a.b", "a-b", &long, "///"]), &BTreeMap::new())
        );
    }

    #[test]
    fn spec_is_shareable_memory_with_the_policy_and_attributes() {
        let content = SliceContent {
            devices: devices(&regions(&["drm/0000:03:00.0/vram0"]), &BTreeMap::new()),
            policy: RequestPolicy {
                min: GI,
                step: 512 << 20,
            },
        };
        let spec = slice_spec("node-1", &content, 3);
        assert_eq!(spec.driver, DRIVER);
        assert_eq!(spec.node_name.as_deref(), Some("node-1"));
        assert_eq!(
            (spec.pool.name.as_str(), spec.pool.generation),
            ("node-1", 3)
        );
        let devices = spec.devices.expect("devices");
        let d = &devices[0];
        assert_eq!(d.allow_multiple_allocations, Some(true));
        let memory = &d.capacity.as_ref().expect("capacity")[MEMORY];
        assert_eq!(memory.value.0, (16 * GI).to_string());
        let range = memory
            .request_policy
            .as_ref()
            .and_then(|p| p.valid_range.as_ref());
        assert_eq!(range.map(|r| r.min.0.as_str()), Some("1073741824"));
        assert_eq!(
            range.and_then(|r| r.step.as_ref()).map(|s| s.0.as_str()),
            Some("536870912")
        );
        let attrs = d.attributes.as_ref().expect("attributes");
        assert_eq!(
            attrs["region"].string.as_deref(),
            Some("drm/0000:03:00.0/vram0")
        );
        assert_eq!(attrs["pciAddress"].string.as_deref(), Some("0000:03:00.0"));
        assert!(
            !attrs.contains_key("kernelDriver"),
            "unknown driver is left out"
        );
        assert_eq!(slice_name("node-1"), "node-1-vram-kube-dmem-io");
    }
}
