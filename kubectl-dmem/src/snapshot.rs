//! CORE: what one node agent's `/metrics` says about its node, as typed values.
//!
//! Owns the mapping from the agent's metric names (`device-plugin/src/metrics.rs`,
//! `docs/user-guide.md` §6) to a [`NodeSnapshot`]: per pod and region the usage, the peak and
//! where it comes from, `dmem.max`, the quota's `high`, `dmem.low`, `dmem.min` and the pressure
//! tier; per region the capacity and the node-wide usage; whether the kernel offers dmem; the
//! round counters. Unknown metrics are ignored, so a newer agent still reads.

use std::collections::BTreeMap;

use kube_dmem_crds::PressureTier;
use serde::Serialize;

use crate::promtext::Sample;

/// Metric-name prefix of the node agent.
const PREFIX: &str = "kube_dmem_agent_";

/// Where a peak comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeakSource {
    /// The kernel's `dmem.peak` (7.3+): exact.
    Kernel,
    /// The highest usage the agent saw at its polls since it started: a lower bound.
    Agent,
}

impl PeakSource {
    /// `kernel` or `agent`, as in the metric's `source` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::Agent => "agent",
        }
    }
}

/// A peak and its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Peak {
    /// Bytes.
    pub bytes: u64,
    /// Where the number comes from.
    pub source: PeakSource,
}

/// What the agent reports for one pod in one region. `None`: the agent published no series
/// (for `max`, `high`, `low`, `min`: none in force or declared, that is unlimited or no protection).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PodRegionStats {
    /// VRAM charged to the pod (`dmem.current`).
    pub usage: Option<u64>,
    /// Peak usage.
    pub peak: Option<Peak>,
    /// `dmem.max` in force.
    pub max: Option<u64>,
    /// The `high` the governing quota declares.
    pub high: Option<u64>,
    /// `dmem.low` in force (with emulated high: the written high).
    pub low: Option<u64>,
    /// `dmem.min` in force.
    pub min: Option<u64>,
    /// Pressure tier.
    #[serde(serialize_with = "tier_name")]
    pub tier: Option<PressureTier>,
}

/// Serializes a tier by its condition-reason name (`AtMax` ... `Idle`).
fn tier_name<S: serde::Serializer>(tier: &Option<PressureTier>, s: S) -> Result<S::Ok, S::Error> {
    match tier {
        Some(t) => s.serialize_some(t.as_str()),
        None => s.serialize_none(),
    }
}

/// One region of the node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RegionStats {
    /// `dmem.capacity`.
    pub capacity: Option<u64>,
    /// VRAM charged in the region on the whole node.
    pub usage: Option<u64>,
}

/// A pod, as the agent's labels name it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PodKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Everything one agent's metrics say.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NodeSnapshot {
    /// Per pod, per region.
    pub pods: BTreeMap<PodKey, BTreeMap<String, PodRegionStats>>,
    /// Per region.
    pub regions: BTreeMap<String, RegionStats>,
    /// Whether the kernel offers dmem (`None`: not reported).
    pub dmem_available: Option<bool>,
    /// Rounds by result (`ok`, `error`).
    pub rounds: BTreeMap<String, u64>,
}

impl NodeSnapshot {
    /// Builds the snapshot from parsed samples; samples that are not the agent's, or miss the
    /// labels they need, are skipped.
    pub fn from_samples(samples: &[Sample]) -> Self {
        let mut snap = Self::default();
        for sample in samples {
            let Some(metric) = sample.name.strip_prefix(PREFIX) else {
                continue;
            };
            snap.add(metric, sample);
        }
        snap
    }

    fn add(&mut self, metric: &str, sample: &Sample) {
        let value = sample.value;
        match metric {
            "dmem_available" => self.dmem_available = Some(value >= 1.0),
            "rounds_total" => {
                if let (Some(result), Some(n)) = (sample.label("result"), to_u64(value)) {
                    self.rounds.insert(result.to_owned(), n);
                }
            }
            "region_capacity_bytes" | "region_usage_bytes" => {
                let Some(region) = sample.label("region") else {
                    return;
                };
                let stats = self.regions.entry(region.to_owned()).or_default();
                if metric == "region_capacity_bytes" {
                    stats.capacity = to_u64(value);
                } else {
                    stats.usage = to_u64(value);
                }
            }
            _ => self.add_pod(metric, sample),
        }
    }

    fn add_pod(&mut self, metric: &str, sample: &Sample) {
        let (Some(namespace), Some(name), Some(region)) = (
            sample.label("namespace"),
            sample.label("pod"),
            sample.label("region"),
        ) else {
            return;
        };
        let key = PodKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        fn stats<'s>(
            snap: &'s mut NodeSnapshot,
            key: &PodKey,
            region: &str,
        ) -> &'s mut PodRegionStats {
            snap.pods
                .entry(key.clone())
                .or_default()
                .entry(region.to_owned())
                .or_default()
        }
        let stats = |snap| stats(snap, &key, region);
        let value = sample.value;
        match metric {
            "pod_usage_bytes" => stats(self).usage = to_u64(value),
            "pod_limit_bytes" => stats(self).max = to_u64(value),
            "pod_high_bytes" => stats(self).high = to_u64(value),
            "pod_low_bytes" => stats(self).low = to_u64(value),
            "pod_min_bytes" => stats(self).min = to_u64(value),
            "pod_tier" => stats(self).tier = tier_of(value),
            "pod_peak_bytes" => {
                let source = match sample.label("source") {
                    Some("kernel") => PeakSource::Kernel,
                    _ => PeakSource::Agent,
                };
                let Some(bytes) = to_u64(value) else { return };
                let entry = stats(self);
                // The kernel's number wins should both ever be present.
                if entry.peak.is_none_or(|p| source <= p.source) {
                    entry.peak = Some(Peak { bytes, source });
                }
            }
            _ => {}
        }
    }
}

/// The tier a `pod_tier` gauge value stands for: its index in [`PressureTier::ALL`].
pub fn tier_of(value: f64) -> Option<PressureTier> {
    let index = to_u64(value)?;
    PressureTier::ALL.get(usize::try_from(index).ok()?).copied()
}

/// A gauge value as bytes or a count: finite, non-negative, whole.
fn to_u64(value: f64) -> Option<u64> {
    if value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value <= u64::MAX as f64 {
        // Checked above: finite, non-negative, integral and in range.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(value as u64)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::AGENT_A_METRICS;
    use crate::promtext::parse;

    const GI: u64 = 1 << 30;

    #[test]
    fn reads_every_per_pod_and_per_region_series() {
        let snap = NodeSnapshot::from_samples(&parse(AGENT_A_METRICS).expect("parses"));
        let trainer = &snap.pods[&PodKey {
            namespace: "ml".into(),
            name: "trainer-0".into(),
        }]["drm/0000:03:00.0/vram0"];
        assert_eq!(
            *trainer,
            PodRegionStats {
                usage: Some(13 * GI),
                peak: Some(Peak {
                    bytes: 14 * GI,
                    source: PeakSource::Kernel
                }),
                max: Some(16 * GI),
                high: Some(12 * GI),
                low: Some(12 * GI),
                min: None,
                tier: Some(PressureTier::AboveHigh),
            }
        );
        let region = &snap.regions["drm/0000:03:00.0/vram0"];
        assert_eq!(region.capacity, Some(24 * GI));
        assert_eq!(region.usage, Some(15 * GI));
        assert_eq!(snap.dmem_available, Some(true));
        assert_eq!(snap.rounds.get("ok"), Some(&1200));
        // Other metrics of the agent (histograms, counters by reason) are ignored.
        assert_eq!(snap.pods.len(), 3);
    }

    #[test]
    fn tiers_follow_the_agents_severity_order() {
        assert_eq!(tier_of(0.0), Some(PressureTier::AtMax));
        assert_eq!(tier_of(1.0), Some(PressureTier::AboveHigh));
        assert_eq!(tier_of(5.0), Some(PressureTier::Idle));
        assert_eq!(tier_of(6.0), None);
        assert_eq!(tier_of(-1.0), None);
        assert_eq!(tier_of(0.5), None);
        assert_eq!(tier_of(f64::NAN), None);
    }

    #[test]
    fn series_without_their_labels_or_with_odd_values_are_skipped() {
        let text = "kube_dmem_agent_pod_usage_bytes{namespace=\"a\",region=\"r\"} 5\n\
kube_dmem_agent_pod_usage_bytes{namespace=\"a\",pod=\"p\",region=\"r\"} -1\n\
kube_dmem_agent_pod_peak_bytes{namespace=\"a\",pod=\"p\",region=\"r\",source=\"agent\"} 7\n\
kube_dmem_agent_pod_peak_bytes{namespace=\"a\",pod=\"p\",region=\"r\",source=\"kernel\"} 9\n\
kube_dmem_agent_pod_peak_bytes{namespace=\"a\",pod=\"p\",region=\"r\",source=\"agent\"} 8\n\
other_metric{namespace=\"a\",pod=\"q\",region=\"r\"} 1\n";
        let snap = NodeSnapshot::from_samples(&parse(text).expect("parses"));
        assert_eq!(snap.pods.len(), 1);
        let stats = &snap.pods[&PodKey {
            namespace: "a".into(),
            name: "p".into(),
        }]["r"];
        assert_eq!(stats.usage, None);
        assert_eq!(
            stats.peak,
            Some(Peak {
                bytes: 9,
                source: PeakSource::Kernel
            })
        );
        assert_eq!(snap.dmem_available, None);
    }
}
