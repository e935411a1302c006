//! EDGE (observability): the DRA driver's metrics, registered under `kube_dmem_agent_dra`:
//! `NodePrepareResources` latency per claim, failures by reason, and ResourceSlice writes.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Label set of one value.
type Labels = Vec<(&'static str, &'static str)>;

/// The driver's metrics; cheap to clone, every clone counts into the same values.
#[derive(Clone, Debug)]
pub struct DraMetrics {
    /// Seconds from a claim's prepare request to its answer, read-back included.
    pub prepare_duration: Histogram,
    /// Claims whose prepare or unprepare failed, by operation and reason.
    pub errors: Family<Labels, Counter>,
    /// ResourceSlice writes, by result.
    pub slice_writes: Family<Labels, Counter>,
}

impl Default for DraMetrics {
    fn default() -> Self {
        Self {
            // 0.5 ms .. ~4 s: a prepare waits for one round and its cgroup writes.
            prepare_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            errors: Family::default(),
            slice_writes: Family::default(),
        }
    }
}

impl DraMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("kube_dmem_agent_dra");
        r.register_with_unit(
            "prepare_duration",
            "Time to prepare one claim: read it, write and read back its pods' limits",
            Unit::Seconds,
            m.prepare_duration.clone(),
        );
        r.register(
            "errors",
            "Failed claim operations, by op and reason",
            m.errors.clone(),
        );
        r.register(
            "slice_writes",
            "ResourceSlice writes, by result",
            m.slice_writes.clone(),
        );
        m
    }

    /// Counts one failure of `op` for `reason`.
    pub fn error(&self, op: &'static str, reason: &'static str) {
        self.errors
            .get_or_create(&vec![("op", op), ("reason", reason)])
            .inc();
    }
}
