//! EDGE (observability): the node agent's Prometheus metrics, `kube_dmem_agent_*`, registered in
//! the registry `main` builds (no globals). Kept alike with the operator's `metrics.rs`.
//!
//! Labels are bounded: reasons, resources, write kinds; the per-pod gauges carry exactly
//! `namespace`, `pod` and `region` (bounded by the pods on one node times its regions), and their
//! series are removed when the pod leaves the node.

use std::collections::BTreeSet;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::node::RoundReport;

/// Label set with bounded values.
pub type Label = Vec<(&'static str, &'static str)>;
/// `namespace`, `pod`, `region`.
pub type PodRegion = Vec<(&'static str, String)>;

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
    pub watch_restarts: Family<Label, Counter>,
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
    /// Whether the node's kernel offers dmem (1) or not (0).
    pub dmem_available: Gauge,
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
            watch_restarts: Family::default(),
            decode_errors: Family::default(),
            invalid_quotas: Gauge::default(),
            pods: Gauge::default(),
            pod_usage: Family::default(),
            pod_limit: Family::default(),
            pod_tier: Family::default(),
            dmem_available: Gauge::default(),
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
            "watch_restarts",
            "Watch errors (each followed by a restart), by resource",
            m.watch_restarts.clone(),
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
            "dmem_available",
            "1 when the node's kernel offers the dmem controller",
            m.dmem_available.clone(),
        );
        m
    }

    /// Counts an event under one bounded label.
    pub fn inc(family: &Family<Label, Counter>, key: &'static str, value: &'static str) {
        family.get_or_create(&vec![(key, value)]).inc();
    }

    /// Publishes a round's per-pod gauges, removing the series of pods and regions that are gone;
    /// `previous` holds the label sets published last time and is updated.
    pub fn observe_round(&self, report: &RoundReport, previous: &mut BTreeSet<PodRegion>) {
        self.pods.set(saturating_i64(report.pods.len() as u64));
        let mut current = BTreeSet::new();
        for pod in &report.pods {
            for row in &pod.regions {
                let labels: PodRegion = vec![
                    ("namespace", pod.facts.namespace.clone()),
                    ("pod", pod.facts.name.clone()),
                    ("region", row.region.clone()),
                ];
                self.pod_usage
                    .get_or_create(&labels)
                    .set(saturating_i64(row.reading.usage));
                match row.reading.max {
                    Some(max) => {
                        self.pod_limit
                            .get_or_create(&labels)
                            .set(saturating_i64(max));
                    }
                    None => {
                        self.pod_limit.remove(&labels);
                    }
                }
                let severity = kube_dmem_crds::PressureTier::ALL
                    .iter()
                    .position(|t| *t == row.tier)
                    .unwrap_or_default();
                self.pod_tier
                    .get_or_create(&labels)
                    .set(saturating_i64(severity as u64));
                current.insert(labels);
            }
        }
        for gone in previous.difference(&current) {
            self.pod_usage.remove(gone);
            self.pod_limit.remove(gone);
            self.pod_tier.remove(gone);
        }
        *previous = current;
    }

    /// Starts timing a round; the duration is recorded when the guard drops, on every path.
    pub fn time_round(&self) -> RoundTimer<'_> {
        RoundTimer {
            histogram: &self.round_duration,
            start: Instant::now(),
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
}
