//! Test builders for quotas, pods and nodes (used by unit tests and the `decide` bench).
//!
//! Plain data, no I/O. Built objects go through the same conversions as watched ones
//! ([`ObservedPod::from_pod`], [`ObservedQuota::from_dynamic`]), so tests cover those too.

// Builders panic on impossible fixtures; they are never used by the binary.
#![allow(clippy::expect_used, clippy::missing_panics_doc)]

use k8s_openapi::api::core::v1::{Node, Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DynamicObject, PartialObjectMeta};
use kube_dmem_crds::{
    DmemQuota, DmemQuotaSpec, DmemQuotaStatus, LimitEntry, POD_CONDITION_VRAM_ABOVE_HIGH,
    POD_CONDITION_VRAM_LIMITS_APPLIED, POD_CONDITION_VRAM_PRESSURE, PressureAction, PressurePolicy,
};

use crate::decide::observed::{NODE_REGIONS_ANNOTATION, Observed, ObservedPod, ObservedQuota};

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

    /// As served by the API to the operator's dynamic watch.
    pub fn dynamic(&self) -> DynamicObject {
        serde_json::from_value(serde_json::to_value(&self.0).expect("serializes"))
            .expect("dynamic object")
    }

    /// As the operator observes it.
    pub fn observed(&self) -> ObservedQuota {
        ObservedQuota::from_dynamic(&self.dynamic()).expect("named quota")
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

    /// As the operator observes it.
    pub fn observed(&self) -> ObservedPod {
        ObservedPod::from_pod(&self.0).expect("complete pod")
    }
}

/// A node's metadata with an optional regions annotation value.
pub fn node(name: &str, regions: Option<&str>) -> PartialObjectMeta<Node> {
    let mut meta = PartialObjectMeta::<Node>::default();
    meta.metadata.name = Some(name.to_owned());
    if let Some(value) = regions {
        meta.metadata.annotations =
            Some([(NODE_REGIONS_ANNOTATION.to_owned(), value.to_owned())].into());
    }
    meta
}

/// An [`Observed`] value from builders and region names.
pub fn observed(quotas: &[TestQuota], pods: &[TestPod], regions: &[&str]) -> Observed {
    Observed {
        quotas: quotas.iter().map(TestQuota::observed).collect(),
        pods: pods.iter().map(TestPod::observed).collect(),
        regions: regions.iter().map(|r| (*r).to_owned()).collect(),
    }
}
