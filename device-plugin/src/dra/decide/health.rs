//! CORE: what the driver tells the kubelet about the health of its devices (the DRA health
//! stream, `docs/dra.md` §2.1). A device is a dmem region; it is healthy while the kernel lists
//! the region in `dmem.capacity`. A region that leaves (GPU removed, driver unbound) drops out of
//! the ResourceSlice, but pods whose claims hold it are still running: the device stays in every
//! report as unhealthy, naming the region, so those pods' status says why their limit can no
//! longer be enforced. A region that comes back under the same device name is healthy again.

use std::collections::BTreeMap;
use std::time::Duration;

use super::slice::RegionDevice;

/// How often the full report is sent again when nothing changed, so the kubelet's per-device
/// timeout never lapses while the agent is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// The timeout announced with every device: three missed heartbeats and the kubelet shows the
/// health as unknown (the agent is down or stuck).
pub const TIMEOUT_SECONDS: i64 = 90;

/// A device's health as the kubelet's enum has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// The region is in `dmem.capacity`.
    Healthy,
    /// The region was published and is gone.
    Unhealthy,
}

/// One device's line of a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceHealth {
    /// The device's name in the slice.
    pub device: String,
    /// Its health.
    pub health: Health,
    /// For the user: the region and what its state means.
    pub message: String,
}

/// Every device published since the agent started, by device name, with its region.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Published {
    devices: BTreeMap<String, String>,
}

impl Published {
    /// Records the devices the slice now holds and returns the report: each of them healthy,
    /// every device published before and missing now unhealthy. Ordered by device name.
    pub fn report(&mut self, current: &[RegionDevice]) -> Vec<DeviceHealth> {
        for d in current {
            self.devices.insert(d.device.clone(), d.region.clone());
        }
        let now: BTreeMap<&str, &RegionDevice> =
            current.iter().map(|d| (d.device.as_str(), d)).collect();
        self.devices
            .iter()
            .map(|(device, region)| match now.get(device.as_str()) {
                Some(d) => DeviceHealth {
                    device: device.clone(),
                    health: Health::Healthy,
                    message: format!(
                        "dmem region {} is in dmem.capacity ({} bytes)",
                        d.region, d.bytes
                    ),
                },
                None => DeviceHealth {
                    device: device.clone(),
                    health: Health::Unhealthy,
                    message: format!(
                        "dmem region {region} is no longer in dmem.capacity (GPU removed or its driver unbound): no VRAM limit can be enforced on it"
                    ),
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str, region: &str) -> RegionDevice {
        RegionDevice {
            device: name.into(),
            region: region.into(),
            bytes: 16 << 30,
            kernel_driver: None,
        }
    }

    fn healths(report: &[DeviceHealth]) -> Vec<(&str, Health)> {
        report
            .iter()
            .map(|d| (d.device.as_str(), d.health))
            .collect()
    }

    #[test]
    fn published_devices_are_healthy_while_their_region_is_listed() {
        let mut published = Published::default();
        let report = published.report(&[
            device("gpu-b", "drm/0000:c1:00.0/vram0"),
            device("gpu-a", "drm/0000:03:00.0/vram0"),
        ]);
        assert_eq!(
            healths(&report),
            [("gpu-a", Health::Healthy), ("gpu-b", Health::Healthy)]
        );
        assert!(
            report[0].message.contains("drm/0000:03:00.0/vram0"),
            "{report:?}"
        );
    }

    #[test]
    fn a_region_that_leaves_stays_reported_unhealthy_and_recovers_when_it_returns() {
        let mut published = Published::default();
        published.report(&[
            device("gpu-a", "drm/0000:03:00.0/vram0"),
            device("gpu-b", "drm/0000:c1:00.0/vram0"),
        ]);
        let gone = published.report(&[device("gpu-a", "drm/0000:03:00.0/vram0")]);
        assert_eq!(
            healths(&gone),
            [("gpu-a", Health::Healthy), ("gpu-b", Health::Unhealthy)]
        );
        assert!(
            gone[1].message.contains("drm/0000:c1:00.0/vram0")
                && gone[1].message.contains("no longer in dmem.capacity"),
            "{:?}",
            gone[1]
        );
        // Still reported while it stays away (pods holding it keep hearing why).
        let still = published.report(&[device("gpu-a", "drm/0000:03:00.0/vram0")]);
        assert_eq!(still, gone);
        let back = published.report(&[
            device("gpu-a", "drm/0000:03:00.0/vram0"),
            device("gpu-b", "drm/0000:c1:00.0/vram0"),
        ]);
        assert_eq!(
            healths(&back),
            [("gpu-a", Health::Healthy), ("gpu-b", Health::Healthy)]
        );
    }

    #[test]
    fn no_devices_yet_is_an_empty_report() {
        assert!(Published::default().report(&[]).is_empty());
    }

    #[test]
    fn the_timeout_outlasts_missed_heartbeats() {
        let heartbeat = i64::try_from(HEARTBEAT.as_secs()).expect("small");
        assert!(TIMEOUT_SECONDS >= 3 * heartbeat);
    }
}
