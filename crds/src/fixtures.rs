//! Test builders for quotas and pods, shared by the tests of every crate (feature `fixtures`;
//! always on for this crate's own tests). Plain data, no I/O: a built object goes through the same
//! conversions as a watched one, so tests cover those too.

// Builders panic on impossible fixtures; they are never used by the binaries.
#![allow(clippy::expect_used, clippy::missing_panics_doc)]

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use crate::select::{Grant, Labels, PodFacts, QuotaFacts};
use crate::{
    DmemQuota, DmemQuotaSpec, DmemQuotaStatus, LimitEntry, POD_CONDITION_VRAM_ABOVE_HIGH,
    POD_CONDITION_VRAM_LIMITS_APPLIED, POD_CONDITION_VRAM_PRESSURE, PressureAction, PressurePolicy,
};

/// `secs` seconds after the epoch.
pub fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).expect("valid timestamp")
}

/// A `DmemQuota` under construction: selector `{}`, no limits, priority 0, generation 1.
#[derive(Clone, Debug)]
pub struct TestQuota(pub DmemQuota);

impl TestQuota {
    /// A quota `namespace/name` with UID `quid-<name>`.
    pub fn new(namespace: &str, name: &str) -> Self {
        let spec = DmemQuotaSpec {
            selector: Default::default(),
            limits: Vec::new(),
            priority: 0,
            pressure: None,
        };
        let mut quota = DmemQuota::new(name, spec);
        quota.metadata.namespace = Some(namespace.to_owned());
        quota.metadata.uid = Some(format!("quid-{name}"));
        quota.metadata.generation = Some(1);
        Self(quota)
    }

    /// Sets `spec.priority`.
    pub fn priority(mut self, priority: i32) -> Self {
        self.0.spec.priority = priority;
        self
    }

    /// Created `secs` seconds after the epoch.
    pub fn created(mut self, secs: i64) -> Self {
        self.0.metadata.creation_timestamp = Some(Time(ts(secs)));
        self
    }

    /// Sets `metadata.generation`.
    pub fn generation(mut self, generation: i64) -> Self {
        self.0.metadata.generation = Some(generation);
        self
    }

    /// Adds a `matchLabels` pair.
    pub fn match_label(mut self, key: &str, value: &str) -> Self {
        let labels = self.0.spec.selector.match_labels.get_or_insert_default();
        labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds a `matchExpressions` requirement.
    pub fn expr(mut self, key: &str, operator: &str, values: &[&str]) -> Self {
        let exprs = self
            .0
            .spec
            .selector
            .match_expressions
            .get_or_insert_default();
        exprs.push(LabelSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
        });
        self
    }

    /// Adds a limits entry; `values` are `(field, quantity)` pairs such as `("max", "8Gi")`.
    pub fn limit(mut self, region: &str, values: &[(&str, &str)]) -> Self {
        let mut entry = LimitEntry {
            region: region.to_owned(),
            ..Default::default()
        };
        for (field, value) in values {
            let slot = match *field {
                "max" => &mut entry.max,
                "high" => &mut entry.high,
                "low" => &mut entry.low,
                "min" => &mut entry.min,
                other => panic!("unknown limit field {other}"),
            };
            *slot = Some((*value).to_owned());
        }
        self.0.spec.limits.push(entry);
        self
    }

    /// `spec.pressure` with action Evict.
    pub fn evict(mut self, grace_period: &str, per_minute: i32) -> Self {
        self.0.spec.pressure = Some(PressurePolicy {
            action: PressureAction::Evict,
            grace_period: grace_period.to_owned(),
            max_evictions_per_minute: per_minute,
        });
        self
    }

    /// `spec.pressure` with action None (report only).
    pub fn report_only(mut self, grace_period: &str) -> Self {
        self.0.spec.pressure = Some(PressurePolicy {
            action: PressureAction::None,
            grace_period: grace_period.to_owned(),
            max_evictions_per_minute: 600,
        });
        self
    }

    /// Sets the stored status.
    pub fn status(mut self, status: DmemQuotaStatus) -> Self {
        self.0.status = Some(status);
        self
    }

    /// As served by the API to a dynamic watch.
    pub fn dynamic(&self) -> kube::api::DynamicObject {
        serde_json::from_value(serde_json::to_value(&self.0).expect("serializes"))
            .expect("dynamic object")
    }

    /// The quota's rule facts.
    pub fn facts(self) -> QuotaFacts {
        QuotaFacts::from_quota(&self.0).expect("test quota is valid")
    }
}

/// A pod under construction: UID `uid-<name>`, phase Running, no conditions.
#[derive(Clone, Debug)]
pub struct TestPod(pub Pod);

impl TestPod {
    /// A running pod `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self(Pod {
            metadata: ObjectMeta {
                namespace: Some(namespace.to_owned()),
                name: Some(name.to_owned()),
                uid: Some(format!("uid-{name}")),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                ..PodStatus::default()
            }),
        })
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.0
            .metadata
            .labels
            .get_or_insert_default()
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sets `status.phase`.
    pub fn phase(mut self, phase: &str) -> Self {
        self.0.status.get_or_insert_default().phase = Some(phase.to_owned());
        self
    }

    /// Marks the pod as being deleted.
    pub fn terminating(mut self) -> Self {
        self.0.metadata.deletion_timestamp = Some(Time(ts(1)));
        self
    }

    /// Sets the `kube-dmem.io/VRAMPressure` condition, transitioned at `since` seconds. Reason
    /// `AboveHigh` also sets `kube-dmem.io/VRAMAboveHigh` at the same time, as an agent would for a
    /// pod that went straight from calm to above high; [`Self::above_high`] sets it on its own.
    pub fn pressure(self, active: bool, reason: &str, since: i64) -> Self {
        let pod = self.condition(POD_CONDITION_VRAM_PRESSURE, active, reason, Some(since));
        if active && reason == "AboveHigh" {
            pod.above_high(since)
        } else {
            pod
        }
    }

    /// Sets `kube-dmem.io/VRAMAboveHigh` to `True`, transitioned at `since` seconds.
    pub fn above_high(self, since: i64) -> Self {
        self.condition(
            POD_CONDITION_VRAM_ABOVE_HIGH,
            true,
            "AboveHigh",
            Some(since),
        )
    }

    /// Sets the `kube-dmem.io/VRAMLimitsApplied` condition.
    pub fn limits_applied(self, applied: bool) -> Self {
        let reason = if applied { "Applied" } else { "CgroupNotFound" };
        self.condition(POD_CONDITION_VRAM_LIMITS_APPLIED, applied, reason, Some(0))
    }

    /// Sets (replaces) a condition of type `type_`.
    pub fn condition(
        mut self,
        type_: &str,
        active: bool,
        reason: &str,
        since: Option<i64>,
    ) -> Self {
        let conditions = self
            .0
            .status
            .get_or_insert_default()
            .conditions
            .get_or_insert_default();
        conditions.retain(|c| c.type_ != type_);
        conditions.push(PodCondition {
            type_: type_.to_owned(),
            status: if active { "True" } else { "False" }.to_owned(),
            reason: Some(reason.to_owned()),
            last_transition_time: since.map(|s| Time(ts(s))),
            ..PodCondition::default()
        });
        self
    }

    /// The built pod.
    pub fn into_pod(self) -> Pod {
        self.0
    }
}

/// A limit entry from `(field, quantity)` pairs.
pub fn entry(region: &str, values: &[(&str, &str)]) -> LimitEntry {
    let mut entry = LimitEntry {
        region: region.to_owned(),
        ..Default::default()
    };
    for (field, value) in values {
        let slot = match *field {
            "max" => &mut entry.max,
            "high" => &mut entry.high,
            "low" => &mut entry.low,
            "min" => &mut entry.min,
            other => panic!("unknown limit field {other}"),
        };
        *slot = Some((*value).to_owned());
    }
    entry
}

/// Labels from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A pod with UID `uid-<name>` and no grant.
pub fn pod(namespace: &str, name: &str, pairs: &[(&str, &str)]) -> PodFacts {
    PodFacts {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: format!("uid-{name}"),
        labels: labels(pairs),
        grants: Vec::new(),
    }
}

/// A grant of `bytes` on `region`.
pub fn grant(region: &str, bytes: u64) -> Grant {
    Grant {
        region: region.to_owned(),
        bytes,
    }
}
