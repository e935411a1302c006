//! EDGE (observability): the operator's Prometheus metrics, `kube_dmem_operator_*`, registered in
//! the registry `main` builds (no globals). Labels are bounded: reasons, outcomes, resource kinds,
//! never object names.

use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::decide::Summary;

/// Label set with one bounded label.
pub type Label = Vec<(&'static str, &'static str)>;

/// All operator metrics; cheap to clone (the values are shared).
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Decision passes run, by result (`ok`, `error`).
    pub passes: Family<Label, Counter>,
    /// Duration of one observe → decide → act pass.
    pub pass_duration: Histogram,
    /// Status patches applied.
    pub status_patches: Counter,
    /// Eviction attempts by outcome (`evicted`, `gone`, `blocked`, `failed`).
    pub evictions: Family<Label, Counter>,
    /// Failed API actions by `reason` (the error's PascalCase reason).
    pub errors: Family<Label, Counter>,
    /// Watch stream errors by resource (`dmemquotas`, `pods`, `nodes`).
    pub watch_errors: kube_dmem_runtime::watch::WatchErrors,
    /// 1 while this replica holds the lease.
    pub leader: Gauge,
    /// Quotas seen in the last pass.
    pub quotas: Gauge,
    /// Quotas with an invalid spec.
    pub invalid_quotas: Gauge,
    /// Quotas outranked for at least one pod.
    pub conflicting_quotas: Gauge,
    /// Pods governed by some quota.
    pub governed_pods: Gauge,
    /// Governed pods under VRAM pressure.
    pub pressured_pods: Gauge,
    /// Pods eligible for eviction in the last pass.
    pub eviction_candidates: Gauge,
    /// Eligible pods held back by a rate limit in the last pass.
    pub evictions_rate_limited: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them under the `kube_dmem_operator` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            passes: Family::default(),
            // 1 ms .. ~16 s: a pass is a few ms in steady state, seconds when many writes queue.
            pass_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            status_patches: Counter::default(),
            evictions: Family::default(),
            errors: Family::default(),
            watch_errors: Family::default(),
            leader: Gauge::default(),
            quotas: Gauge::default(),
            invalid_quotas: Gauge::default(),
            conflicting_quotas: Gauge::default(),
            governed_pods: Gauge::default(),
            pressured_pods: Gauge::default(),
            eviction_candidates: Gauge::default(),
            evictions_rate_limited: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("kube_dmem_operator");
        r.register("passes", "Decision passes run, by result", m.passes.clone());
        r.register_with_unit(
            "pass_duration",
            "Duration of one decision pass",
            Unit::Seconds,
            m.pass_duration.clone(),
        );
        r.register(
            "status_patches",
            "DmemQuota status patches applied",
            m.status_patches.clone(),
        );
        r.register(
            "evictions",
            "Eviction attempts by outcome",
            m.evictions.clone(),
        );
        r.register("errors", "Failed API actions by reason", m.errors.clone());
        r.register(
            "watch_errors",
            "Watch stream errors by resource",
            m.watch_errors.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the leader lease",
            m.leader.clone(),
        );
        r.register(
            "quotas",
            "DmemQuotas seen in the last pass",
            m.quotas.clone(),
        );
        r.register(
            "invalid_quotas",
            "DmemQuotas with an invalid spec",
            m.invalid_quotas.clone(),
        );
        r.register(
            "conflicting_quotas",
            "DmemQuotas outranked for at least one pod",
            m.conflicting_quotas.clone(),
        );
        r.register(
            "governed_pods",
            "Pods governed by some DmemQuota",
            m.governed_pods.clone(),
        );
        r.register(
            "pressured_pods",
            "Governed pods under VRAM pressure",
            m.pressured_pods.clone(),
        );
        r.register(
            "eviction_candidates",
            "Pods eligible for eviction in the last pass",
            m.eviction_candidates.clone(),
        );
        r.register(
            "evictions_rate_limited",
            "Eligible pods held back by a rate limit in the last pass",
            m.evictions_rate_limited.clone(),
        );
        m
    }

    /// Publishes a pass's counts as gauges.
    pub fn observe_summary(&self, s: &Summary) {
        let set = |g: &Gauge, v: usize| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        set(&self.quotas, s.quotas);
        set(&self.invalid_quotas, s.invalid);
        set(&self.conflicting_quotas, s.conflicting);
        set(&self.governed_pods, s.governed_pods);
        set(&self.pressured_pods, s.pressured_pods);
        set(&self.eviction_candidates, s.candidates);
        set(&self.evictions_rate_limited, s.rate_limited);
    }

    /// Counts a failed action under its reason.
    pub fn error(&self, reason: &'static str) {
        self.errors.get_or_create(&vec![("reason", reason)]).inc();
    }

    /// Starts timing a pass; the duration is recorded when the guard drops, on every path.
    pub fn time_pass(&self) -> PassTimer<'_> {
        PassTimer {
            histogram: &self.pass_duration,
            start: Instant::now(),
        }
    }
}

/// Records a pass's duration when dropped.
#[derive(Debug)]
pub struct PassTimer<'a> {
    histogram: &'a Histogram,
    start: Instant,
}

impl Drop for PassTimer<'_> {
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
        m.error("PatchStatus");
        m.evictions
            .get_or_create(&vec![("outcome", "blocked")])
            .inc();
        drop(m.time_pass());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for want in [
            "kube_dmem_operator_errors_total{reason=\"PatchStatus\"} 1",
            "kube_dmem_operator_evictions_total{outcome=\"blocked\"} 1",
            "kube_dmem_operator_pass_duration_seconds_count 1",
            "kube_dmem_operator_leader 0",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
    }
}
