//! EDGE (observability): the node agent's Prometheus metrics, `kube_dmem_agent_*`, registered in
//! the registry `main` builds (no globals). Kept alike with the operator's `metrics.rs`.
//!
//! Labels are bounded: reasons, resources, write kinds; the per-pod gauges carry exactly
//! `namespace`, `pod` and `region` (bounded by the pods on one node times its regions; the peak
//! adds its `source`), and their series are removed when the pod leaves the node.

use std::collections::BTreeSet;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::round::RoundReport;

/// Label set with bounded values.
pub type Label = Vec<(&'static str, &'static str)>;
/// `namespace`, `pod`, `region`.
pub type PodRegion = Vec<(&'static str, String)>;

/// How long the NRI plugin held pod sandbox and container creations, by `event` and `outcome`
/// (`in_force`: the limits were confirmed; `not_confirmed`: the budget ran out and the runtime went
/// on).
pub type NriHeld = Family<Vec<(&'static str, String)>, Histogram>;

/// All agent metrics; cheap to clone (the values are shared).
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Enforcement rounds run, by result (`ok`, `error`).
    pub rounds: Family<Label, Counter>,
    /// Duration of one round (kernel reads and writes, not the API writes).
    pub round_duration: Histogram,
    /// Kernel limit writes performed (zero in steady state).
    pub kernel_writes: Counter,
    /// Kernel errors by reason (a round that failed, or a pod whose writes failed).
    pub kernel_errors: Family<Label, Counter>,
    /// API writes by kind (`conditions`, `event`, `node`).
    pub api_writes: Family<Label, Counter>,
    /// Failed API writes by reason.
    pub api_errors: Family<Label, Counter>,
    /// Watch stream errors (each one restarts the watch after a backoff), by resource.
    pub watch_errors: kube_dmem_runtime::watch::WatchErrors,
    /// Objects a watch delivered that did not deserialize (skipped), by resource.
    pub decode_errors: Family<Label, Counter>,
    /// DmemQuotas with an invalid spec, never applied.
    pub invalid_quotas: Gauge,
    /// Pods of this node in the last round.
    pub pods: Gauge,
    /// VRAM charged to a pod, per region.
    pub pod_usage: Family<PodRegion, Gauge>,
    /// `dmem.max` in force for a pod, per region (absent when unlimited).
    pub pod_limit: Family<PodRegion, Gauge>,
    /// A pod's pressure tier per region, as its severity: 0 AtMax, 1 AboveHigh, 2 Contended,
    /// 3 Unprotected, 4 Protected, 5 Idle.
    pub pod_tier: Family<PodRegion, Gauge>,
    /// Whether a pod's limits are in force (1) or not (0), by `namespace` and `pod`: the
    /// `VRAMLimitsApplied` status as a number, for alerts.
    pub pod_limits_in_force: Family<PodRegion, Gauge>,
    /// The pod's peak usage per region, for right-sizing: `dmem.peak` where the kernel has it
    /// (label `source="kernel"`, 7.3+), else the highest usage the agent saw at its polls since
    /// it started (`source="agent"`, a lower bound: spikes between polls are missed).
    pub pod_peak: Family<PodRegion, Gauge>,
    /// The `high` the governing quota declares for a pod, per region (absent when none).
    pub pod_high: Family<PodRegion, Gauge>,
    /// `dmem.low` in force for a pod, per region (with emulated high, the written high).
    pub pod_low: Family<PodRegion, Gauge>,
    /// `dmem.min` in force for a pod, per region.
    pub pod_min: Family<PodRegion, Gauge>,
    /// A region's size (`dmem.capacity`), by `region`.
    pub region_capacity: Family<PodRegion, Gauge>,
    /// VRAM charged in a region on the whole node (the root's `dmem.current`), by `region`.
    pub region_usage: Family<PodRegion, Gauge>,
    /// Whether the node's kernel offers dmem (1) or not (0).
    pub dmem_available: Gauge,
    /// The latency the NRI plugin adds to pod and container creation.
    pub nri_held: NriHeld,
}

/// The per-pod series published last round, and the agent's own peak per pod and region where the
/// kernel keeps none.
#[derive(Clone, Debug, Default)]
pub struct Published {
    pod_names: BTreeSet<PodRegion>,
    pods: BTreeSet<PodRegion>,
    regions: BTreeSet<PodRegion>,
    agent_peak: std::collections::BTreeMap<PodRegion, u64>,
}

impl Metrics {
    /// Creates the metrics and registers them under the `kube_dmem_agent` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            rounds: Family::default(),
            // 100 µs .. ~1.6 s: a round is well below a millisecond on the simulator.
            round_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            kernel_writes: Counter::default(),
            kernel_errors: Family::default(),
            api_writes: Family::default(),
            api_errors: Family::default(),
            watch_errors: Family::default(),
            decode_errors: Family::default(),
            invalid_quotas: Gauge::default(),
            pods: Gauge::default(),
            pod_usage: Family::default(),
            pod_limit: Family::default(),
            pod_tier: Family::default(),
            pod_limits_in_force: Family::default(),
            pod_peak: Family::default(),
            pod_high: Family::default(),
            pod_low: Family::default(),
            pod_min: Family::default(),
            region_capacity: Family::default(),
            region_usage: Family::default(),
            dmem_available: Gauge::default(),
            // 100 µs .. ~3.3 s: a creation is held for one round (milliseconds) or up to the
            // runtime's budget (about 1.5 s by default).
            nri_held: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 16))
            }),
        };
        let r = registry.sub_registry_with_prefix("kube_dmem_agent");
        r.register("rounds", "Enforcement rounds, by result", m.rounds.clone());
        r.register_with_unit(
            "round_duration",
            "Duration of one enforcement round",
            Unit::Seconds,
            m.round_duration.clone(),
        );
        r.register(
            "kernel_writes",
            "dmem limit writes",
            m.kernel_writes.clone(),
        );
        r.register(
            "kernel_errors",
            "Kernel errors by reason",
            m.kernel_errors.clone(),
        );
        r.register("api_writes", "API writes by kind", m.api_writes.clone());
        r.register(
            "api_errors",
            "Failed API writes by reason",
            m.api_errors.clone(),
        );
        r.register(
            "watch_errors",
            "Watch errors (each followed by a restart), by resource",
            m.watch_errors.clone(),
        );
        r.register(
            "decode_errors",
            "Watched objects skipped because they do not deserialize, by resource",
            m.decode_errors.clone(),
        );
        r.register(
            "invalid_quotas",
            "DmemQuotas with an invalid spec (never applied)",
            m.invalid_quotas.clone(),
        );
        r.register(
            "pods",
            "Pods of this node in the last round",
            m.pods.clone(),
        );
        r.register_with_unit(
            "pod_usage",
            "VRAM charged to a pod, per region",
            Unit::Bytes,
            m.pod_usage.clone(),
        );
        r.register_with_unit(
            "pod_limit",
            "dmem.max in force for a pod, per region",
            Unit::Bytes,
            m.pod_limit.clone(),
        );
        r.register(
            "pod_tier",
            "Pressure tier per pod and region (0 AtMax .. 5 Idle)",
            m.pod_tier.clone(),
        );
        r.register(
            "pod_limits_in_force",
            "1 when a pod's limits are in force in the kernel (VRAMLimitsApplied=True), else 0",
            m.pod_limits_in_force.clone(),
        );
        r.register_with_unit(
            "pod_peak",
            "Peak VRAM charged to a pod, per region (source: kernel dmem.peak, or agent polls)",
            Unit::Bytes,
            m.pod_peak.clone(),
        );
        r.register_with_unit(
            "pod_high",
            "The high a pod's quota declares, per region",
            Unit::Bytes,
            m.pod_high.clone(),
        );
        r.register_with_unit(
            "pod_low",
            "dmem.low in force for a pod, per region",
            Unit::Bytes,
            m.pod_low.clone(),
        );
        r.register_with_unit(
            "pod_min",
            "dmem.min in force for a pod, per region",
            Unit::Bytes,
            m.pod_min.clone(),
        );
        r.register_with_unit(
            "region_capacity",
            "Size of a dmem region (dmem.capacity)",
            Unit::Bytes,
            m.region_capacity.clone(),
        );
        r.register_with_unit(
            "region_usage",
            "VRAM charged in a dmem region on this node",
            Unit::Bytes,
            m.region_usage.clone(),
        );
        r.register(
            "dmem_available",
            "1 when the node's kernel offers the dmem controller",
            m.dmem_available.clone(),
        );
        r.register_with_unit(
            "nri_held",
            "How long the NRI plugin held a pod sandbox or container creation, by event and outcome",
            Unit::Seconds,
            m.nri_held.clone(),
        );
        m
    }

    /// Counts an event under one bounded label.
    pub fn inc(family: &Family<Label, Counter>, key: &'static str, value: &'static str) {
        family.get_or_create(&vec![(key, value)]).inc();
    }

    /// Publishes a round's per-pod and per-region gauges, removing the series of pods and
    /// regions that are gone; `published` holds what was published last time and is updated.
    pub fn observe_round(&self, report: &RoundReport, published: &mut Published) {
        self.pods.set(saturating_i64(report.pods.len() as u64));
        let mut regions = BTreeSet::new();
        for cap in &report.regions {
            let labels: PodRegion = vec![("region", cap.region.clone())];
            self.region_capacity
                .get_or_create(&labels)
                .set(saturating_i64(cap.bytes));
            let used = report.region_usage.get(&cap.region).copied().unwrap_or(0);
            self.region_usage
                .get_or_create(&labels)
                .set(saturating_i64(used));
            regions.insert(labels);
        }
        for gone in published.regions.difference(&regions) {
            self.region_capacity.remove(gone);
            self.region_usage.remove(gone);
        }
        published.regions = regions;
        let mut current = BTreeSet::new();
        let mut pods = BTreeSet::new();
        for pod in &report.pods {
            let pod_labels: PodRegion = vec![
                ("namespace", pod.facts.namespace.clone()),
                ("pod", pod.facts.name.clone()),
            ];
            self.pod_limits_in_force
                .get_or_create(&pod_labels)
                .set(i64::from(pod.outcome.in_force()));
            pods.insert(pod_labels);
            // Counted every round it happens, so a rate shows an error that keeps happening.
            match &pod.outcome {
                crate::round::LimitsOutcome::WriteFailed { reason, .. }
                | crate::round::LimitsOutcome::ReadFailed { reason, .. } => {
                    Self::inc(&self.kernel_errors, "reason", reason);
                }
                _ if pod.read_failure.is_some() => {
                    Self::inc(&self.kernel_errors, "reason", "KernelReadError");
                }
                _ => {}
            }
            for row in &pod.regions {
                let labels: PodRegion = vec![
                    ("namespace", pod.facts.namespace.clone()),
                    ("pod", pod.facts.name.clone()),
                    ("region", row.region.clone()),
                ];
                self.pod_usage
                    .get_or_create(&labels)
                    .set(saturating_i64(row.reading.usage));
                set_or_remove(&self.pod_limit, &labels, row.reading.max);
                set_or_remove(&self.pod_high, &labels, row.reading.high);
                // u64::MAX stands for "max" (unreadable as bytes): no series then.
                let bytes = |v: u64| (v != u64::MAX).then_some(v);
                set_or_remove(&self.pod_low, &labels, bytes(row.reading.low));
                set_or_remove(&self.pod_min, &labels, bytes(row.reading.min));
                let severity = kube_dmem_crds::PressureTier::ALL
                    .iter()
                    .position(|t| *t == row.tier)
                    .unwrap_or_default();
                self.pod_tier
                    .get_or_create(&labels)
                    .set(saturating_i64(severity as u64));
                let seen = published.agent_peak.entry(labels.clone()).or_default();
                *seen = (*seen).max(row.reading.usage);
                let (source, peak) = match row.reading.peak {
                    Some(kernel) => ("kernel", kernel),
                    None => ("agent", *seen),
                };
                let mut peak_labels = labels.clone();
                peak_labels.push(("source", source.to_owned()));
                let mut other = labels.clone();
                other.push((
                    "source",
                    if source == "kernel" {
                        "agent"
                    } else {
                        "kernel"
                    }
                    .to_owned(),
                ));
                self.pod_peak.remove(&other);
                self.pod_peak
                    .get_or_create(&peak_labels)
                    .set(saturating_i64(peak));
                current.insert(labels);
            }
        }
        for gone in published.pods.difference(&current) {
            self.pod_usage.remove(gone);
            self.pod_limit.remove(gone);
            self.pod_high.remove(gone);
            self.pod_low.remove(gone);
            self.pod_min.remove(gone);
            self.pod_tier.remove(gone);
            for source in ["kernel", "agent"] {
                let mut labels = gone.clone();
                labels.push(("source", source.to_owned()));
                self.pod_peak.remove(&labels);
            }
        }
        for gone in published.pod_names.difference(&pods) {
            self.pod_limits_in_force.remove(gone);
        }
        published.pod_names = pods;
        published
            .agent_peak
            .retain(|labels, _| current.contains(labels));
        published.pods = current;
    }

    /// Starts timing a round; the duration is recorded when the guard drops, on every path.
    pub fn time_round(&self) -> RoundTimer<'_> {
        RoundTimer {
            histogram: &self.round_duration,
            start: Instant::now(),
        }
    }
}

fn set_or_remove(family: &Family<PodRegion, Gauge>, labels: &PodRegion, value: Option<u64>) {
    match value {
        Some(v) => {
            family.get_or_create(labels).set(saturating_i64(v));
        }
        None => {
            family.remove(labels);
        }
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Records a round's duration when dropped.
#[derive(Debug)]
pub struct RoundTimer<'a> {
    histogram: &'a Histogram,
    start: Instant,
}

impl Drop for RoundTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_encode_with_prefix_and_units() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        Metrics::inc(&m.api_errors, "reason", "PatchPodStatus");
        Metrics::inc(&m.rounds, "result", "ok");
        drop(m.time_round());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for want in [
            "kube_dmem_agent_api_errors_total{reason=\"PatchPodStatus\"} 1",
            "kube_dmem_agent_rounds_total{result=\"ok\"} 1",
            "kube_dmem_agent_round_duration_seconds_count 1",
            "kube_dmem_agent_dmem_available 0",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
    }

    fn report(usage: u64, peak: Option<u64>) -> RoundReport {
        use crate::decide::pressure::RegionReading;
        use crate::round::{LimitsOutcome, PodReport, RegionReport};
        let region = "drm/0000:03:00.0/vram0".to_owned();
        RoundReport {
            regions: vec![crate::cgroup::format::RegionCapacity {
                region: region.clone(),
                bytes: 16 << 30,
            }],
            region_usage: [(region.clone(), usage)].into(),
            pods: vec![PodReport {
                facts: kube_dmem_crds::select::PodFacts {
                    namespace: "ml".into(),
                    name: "p".into(),
                    uid: "u".into(),
                    labels: Default::default(),
                    grants: Vec::new(),
                },
                governing: None,
                outcome: LimitsOutcome::Applied,
                regions: vec![RegionReport {
                    region,
                    desired: Default::default(),
                    reading: RegionReading {
                        usage,
                        peak,
                        high: Some(2 << 30),
                        ..RegionReading::default()
                    },
                    tier: kube_dmem_crds::PressureTier::Unprotected,
                }],
                tier: kube_dmem_crds::PressureTier::Unprotected,
                read_failure: None,
            }],
            writes: 0,
        }
    }

    fn encode(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encodes");
        text
    }

    #[test]
    fn peak_comes_from_the_kernel_or_from_the_agents_own_polls() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        let mut published = Published::default();
        let series = |source: &str, v: u64| {
            format!(
                "kube_dmem_agent_pod_peak_bytes{{namespace=\"ml\",pod=\"p\",region=\"drm/0000:03:00.0/vram0\",source=\"{source}\"}} {v}"
            )
        };
        // Legacy kernel (no dmem.peak): the agent's highest poll, kept when usage drops.
        m.observe_round(&report(3 << 30, None), &mut published);
        m.observe_round(&report(1 << 30, None), &mut published);
        let text = encode(&registry);
        assert!(text.contains(&series("agent", 3 << 30)), "{text}");
        assert!(text.contains("kube_dmem_agent_region_capacity_bytes{region=\"drm/0000:03:00.0/vram0\"} 17179869184"), "{text}");
        assert!(text.contains("kube_dmem_agent_pod_high_bytes{namespace=\"ml\",pod=\"p\",region=\"drm/0000:03:00.0/vram0\"} 2147483648"), "{text}");
        // The kernel's own peak wins where it exists, and replaces the agent's series.
        m.observe_round(&report(1 << 30, Some(5 << 30)), &mut published);
        let text = encode(&registry);
        assert!(text.contains(&series("kernel", 5 << 30)), "{text}");
        assert!(!text.contains("source=\"agent\""), "{text}");
        // The pod leaves: every series of it goes.
        let mut empty = report(0, None);
        empty.pods.clear();
        m.observe_round(&empty, &mut published);
        let text = encode(&registry);
        assert!(!text.contains("pod=\"p\""), "{text}");
    }

    #[test]
    fn limits_in_force_and_kernel_errors_are_published_every_round() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        let mut published = Published::default();
        let mut failing = report(1 << 30, None);
        failing.pods[0].outcome = crate::round::LimitsOutcome::WriteFailed {
            reason: "CgroupWriteRejected",
            message: "writing dmem.max: EINVAL".into(),
        };
        m.observe_round(&failing, &mut published);
        m.observe_round(&failing, &mut published);
        let text = encode(&registry);
        assert!(
            text.contains("kube_dmem_agent_pod_limits_in_force{namespace=\"ml\",pod=\"p\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("kube_dmem_agent_kernel_errors_total{reason=\"CgroupWriteRejected\"} 2"),
            "{text}"
        );
        m.observe_round(&report(1 << 30, None), &mut published);
        let text = encode(&registry);
        assert!(
            text.contains("kube_dmem_agent_pod_limits_in_force{namespace=\"ml\",pod=\"p\"} 1"),
            "{text}"
        );
    }
}
