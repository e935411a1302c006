//! CORE: the pressure tier of a pod from kernel readings.
//!
//! The kernel never reports pressure itself (`docs/kernel.md` §3.7): there is no `dmem.events`, no
//! eviction counter. So the agent infers it from what it can read, in the order the kernel evicts
//! (`docs/kernel.md` §3.6, §7): memory above `high` goes first, then memory above the pod's
//! protection, and memory at or below `min` never. A pod at its `max` is not evicted but its next
//! allocation fails, which is the most urgent thing to tell its owner.

use kube_dmem_crds::PressureTier;

/// What the agent knows about one pod in one region at one poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RegionReading {
    /// Bytes charged to the pod's cgroup (`dmem.current`, hierarchical).
    pub usage: u64,
    /// The hard limit in force (`dmem.max`); `None` when it reads `max`.
    pub max: Option<u64>,
    /// The soft limit the governing quota declares; `None` when it sets none.
    pub high: Option<u64>,
    /// The `dmem.low` in force (with emulated `high`, this is the written `high`).
    pub low: u64,
    /// The `dmem.min` in force.
    pub min: u64,
    /// The declared `low` before emulation; protection ends here, not at the written low.
    pub declared_low: u64,
    /// The region's size (`dmem.capacity`).
    pub capacity: u64,
    /// Bytes charged in the whole region (the root's `dmem.current`).
    pub region_usage: u64,
    /// The kernel's high-water mark of the pod's usage (`dmem.peak`, 7.3+); `None` where the
    /// kernel has no such file.
    pub peak: Option<u64>,
}

/// Thresholds that turn readings into tiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PressureThresholds {
    /// A pod is `AtMax` once less than this share (in percent) of its `max` is left: allocations
    /// are whole buffer objects, so the last few percent are rarely usable.
    pub at_max_headroom_percent: u8,
    /// A region is contended once this share (in percent) of its capacity is charged: the driver
    /// then evicts to place new buffers.
    pub contention_percent: u8,
}

impl Default for PressureThresholds {
    fn default() -> Self {
        Self {
            at_max_headroom_percent: 2,
            contention_percent: 95,
        }
    }
}

/// The tier of one pod in one region.
///
/// `Contended` applies only to memory the kernel would take in its first pass (above the pod's
/// declared protection) while the device is nearly full; protected memory in a full device stays
/// `Protected`, because the kernel only reaches it after every unprotected byte is gone.
pub fn region_tier(r: &RegionReading, t: PressureThresholds) -> PressureTier {
    if r.usage == 0 {
        return PressureTier::Idle;
    }
    if let Some(max) = r.max {
        let headroom = percent_of(max, t.at_max_headroom_percent);
        if r.usage.saturating_add(headroom) >= max {
            return PressureTier::AtMax;
        }
    }
    if r.high.is_some_and(|high| r.usage > high) {
        return PressureTier::AboveHigh;
    }
    let protection = r.declared_low.max(r.min);
    let unprotected = r.usage > protection;
    let contended = r.capacity > 0
        && u128::from(r.region_usage) * 100
            >= u128::from(r.capacity) * u128::from(t.contention_percent);
    match (unprotected, contended) {
        (true, true) => PressureTier::Contended,
        (true, false) => PressureTier::Unprotected,
        (false, _) => PressureTier::Protected,
    }
}

/// The pod's tier: its worst region (tiers are ordered most severe first), `Idle` with no regions.
pub fn pod_tier<'a>(
    regions: impl IntoIterator<Item = &'a RegionReading>,
    t: PressureThresholds,
) -> PressureTier {
    regions
        .into_iter()
        .map(|r| region_tier(r, t))
        .min()
        .unwrap_or(PressureTier::Idle)
}

/// How close below `high` or `max` usage must come for its pod to be polled fast: within this
/// share (in percent) of the threshold.
pub const NEAR_PERCENT: u8 = 10;

/// Whether usage is approaching a threshold from below: within `near_percent` of `high` (not yet
/// above it) or of `max`. The agent polls such pods fast, so that crossing is reported in a
/// fraction of the normal poll interval; pods far from every threshold cost nothing extra.
pub fn near_threshold(r: &RegionReading, near_percent: u8) -> bool {
    let below_within = |threshold: u64| {
        let margin = percent_of(threshold, near_percent);
        r.usage <= threshold && r.usage.saturating_add(margin) >= threshold
    };
    r.usage > 0 && (r.high.is_some_and(below_within) || r.max.is_some_and(below_within))
}

fn percent_of(value: u64, percent: u8) -> u64 {
    let scaled = u128::from(value) * u128::from(percent) / 100;
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;

    fn reading(usage: u64) -> RegionReading {
        RegionReading {
            usage,
            capacity: 16 * G,
            region_usage: usage,
            ..RegionReading::default()
        }
    }

    #[test]
    fn near_means_just_below_high_or_max() {
        let r = |usage: u64, high: Option<u64>, max: Option<u64>| RegionReading {
            high,
            max,
            ..reading(usage)
        };
        // (reading, near?)
        let cases = [
            (r(0, Some(10 * G), None), false),
            (r(5 * G, Some(10 * G), None), false),
            (r(9 * G, Some(10 * G), None), true),
            (r(10 * G, Some(10 * G), None), true),
            (r(11 * G, Some(10 * G), Some(16 * G)), false),
            (r(15 * G, Some(10 * G), Some(16 * G)), true),
            (r(15 * G, None, None), false),
        ];
        for (i, (reading, near)) in cases.iter().enumerate() {
            assert_eq!(near_threshold(reading, NEAR_PERCENT), *near, "case {i}");
        }
    }

    #[test]
    fn tiers_follow_the_kernel_eviction_order() {
        let t = PressureThresholds::default();
        let cases: &[(&str, RegionReading, PressureTier)] = &[
            ("no usage", reading(0), PressureTier::Idle),
            (
                "at max",
                RegionReading {
                    max: Some(4 * G),
                    ..reading(4 * G)
                },
                PressureTier::AtMax,
            ),
            (
                "within 2% of max",
                RegionReading {
                    max: Some(100 * G),
                    ..reading(99 * G)
                },
                PressureTier::AtMax,
            ),
            (
                "above high beats protection",
                RegionReading {
                    high: Some(2 * G),
                    low: 2 * G,
                    declared_low: G,
                    ..reading(3 * G)
                },
                PressureTier::AboveHigh,
            ),
            (
                "exactly at high is not above it",
                RegionReading {
                    high: Some(3 * G),
                    low: 3 * G,
                    ..reading(3 * G)
                },
                PressureTier::Unprotected,
            ),
            (
                "above declared low",
                RegionReading {
                    high: Some(8 * G),
                    low: 8 * G,
                    declared_low: G,
                    ..reading(3 * G)
                },
                PressureTier::Unprotected,
            ),
            (
                "within low",
                RegionReading {
                    low: 4 * G,
                    declared_low: 4 * G,
                    ..reading(3 * G)
                },
                PressureTier::Protected,
            ),
            (
                "within min",
                RegionReading {
                    min: 4 * G,
                    ..reading(3 * G)
                },
                PressureTier::Protected,
            ),
            (
                "unprotected in a full device",
                RegionReading {
                    region_usage: 16 * G,
                    ..reading(3 * G)
                },
                PressureTier::Contended,
            ),
            (
                "protected in a full device",
                RegionReading {
                    declared_low: 4 * G,
                    low: 4 * G,
                    region_usage: 16 * G,
                    ..reading(3 * G)
                },
                PressureTier::Protected,
            ),
        ];
        for (name, r, want) in cases {
            assert_eq!(region_tier(r, t), *want, "{name}");
        }
    }

    #[test]
    fn the_worst_region_decides_the_pod() {
        let t = PressureThresholds::default();
        let calm = RegionReading {
            low: 4 * G,
            declared_low: 4 * G,
            ..reading(G)
        };
        let hot = RegionReading {
            high: Some(G),
            ..reading(2 * G)
        };
        assert_eq!(pod_tier([&calm, &hot], t), PressureTier::AboveHigh);
        assert_eq!(pod_tier([&calm], t), PressureTier::Protected);
        assert_eq!(pod_tier([], t), PressureTier::Idle);
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let t = PressureThresholds::default();
        let r = RegionReading {
            usage: u64::MAX - 1,
            max: Some(u64::MAX),
            capacity: u64::MAX,
            region_usage: u64::MAX,
            ..RegionReading::default()
        };
        assert_eq!(region_tier(&r, t), PressureTier::AtMax);
    }
}
