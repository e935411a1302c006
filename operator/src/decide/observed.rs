//! CORE: the [`Observed`] value that [`crate::decide`] reads, and the pure conversions from API
//! objects into it.
//!
//! The edge ([`crate::observe`]) only drives watches and hands the cached objects to
//! [`Observed::from_objects`]; everything that interprets an object's contents (conditions, phase,
//! the node regions annotation, a quota spec that does not deserialize) lives here, where it is
//! tested without a cluster. [`prune_pod`] and [`prune_node`] shrink cached objects to what these
//! conversions read, which is what keeps the operator's memory flat in large clusters.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Node, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DynamicObject, PartialObjectMeta};
use kube_dmem_crds::select::{PodFacts, QuotaRef};
use kube_dmem_crds::{
    DmemQuotaSpec, DmemQuotaStatus, POD_CONDITION_VRAM_ABOVE_HIGH,
    POD_CONDITION_VRAM_LIMITS_APPLIED, POD_CONDITION_VRAM_PRESSURE, PressureTier,
};
use serde::Deserialize as _;

/// The node regions annotation and its parser live in `kube-dmem-crds`, shared with the agent.
pub use kube_dmem_crds::NODE_REGIONS_ANNOTATION;
pub use kube_dmem_crds::regions::{ParsedRegions, parse_regions};

/// Everything one decision pass reads: quotas, pods and the regions that exist on any node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Every `DmemQuota` in the cluster.
    pub quotas: Vec<ObservedQuota>,
    /// Every pod in the cluster (the watch already leaves out finished pods).
    pub pods: Vec<ObservedPod>,
    /// Union of the regions all nodes publish in [`NODE_REGIONS_ANNOTATION`].
    pub regions: BTreeSet<String>,
}

/// A quota as read from the API, before validation.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedQuota {
    /// Namespace and name.
    pub key: QuotaRef,
    /// `metadata.uid`, for event references.
    pub uid: Option<String>,
    /// `metadata.generation`, echoed as `status.observedGeneration`.
    pub generation: Option<i64>,
    /// `metadata.creationTimestamp`, the first tie-breaker between quotas of equal priority.
    pub created: Option<Time>,
    /// The spec, or why it does not deserialize (possible when an older CRD let it through).
    pub spec: Result<DmemQuotaSpec, String>,
    /// The status currently stored; `None` when absent or unreadable (then it is rewritten).
    pub status: Option<DmemQuotaStatus>,
}

/// A pod as the operator sees it: the facts the shared rules need plus the agent's conditions.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedPod {
    /// Namespace, name, UID and labels, in the shape the `crds` rules take.
    pub facts: PodFacts,
    /// `status.phase` is `Succeeded` or `Failed`: the pod holds no VRAM and is not counted.
    pub finished: bool,
    /// `metadata.deletionTimestamp` is set: the pod is already going away and is never evicted.
    pub terminating: bool,
    /// `kube-dmem.io/VRAMLimitsApplied` is `True`.
    pub limits_applied: bool,
    /// The `kube-dmem.io/VRAMPressure` condition, when the agent has written one.
    pub pressure: Option<PodPressure>,
    /// Since when `kube-dmem.io/VRAMAboveHigh` has been `True` (its `lastTransitionTime`); `None`
    /// while it is not `True`, is absent, or has no time. The eviction grace period starts here.
    pub above_high_since: Option<Timestamp>,
}

/// The parts of a pod's `kube-dmem.io/VRAMPressure` condition the operator acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodPressure {
    /// The condition status is `True`.
    pub active: bool,
    /// The reason parsed as a tier; `None` for a reason this version does not know.
    pub tier: Option<PressureTier>,
    /// `lastTransitionTime`: since when the condition has had its current status.
    pub since: Option<Timestamp>,
}

impl Observed {
    /// Converts cached API objects into an [`Observed`] value. Objects without a name or UID
    /// (never served by a real API server) are skipped; malformed region entries are ignored.
    pub fn from_objects<'a>(
        quotas: impl IntoIterator<Item = &'a DynamicObject>,
        pods: impl IntoIterator<Item = &'a Pod>,
        nodes: impl IntoIterator<Item = &'a PartialObjectMeta<Node>>,
    ) -> Self {
        let regions = nodes
            .into_iter()
            .filter_map(|node| {
                node.metadata
                    .annotations
                    .as_ref()?
                    .get(NODE_REGIONS_ANNOTATION)
            })
            .flat_map(|value| parse_regions(value).regions)
            .map(|(region, _bytes)| region)
            .collect();
        Self {
            quotas: quotas
                .into_iter()
                .filter_map(ObservedQuota::from_dynamic)
                .collect(),
            pods: pods.into_iter().filter_map(ObservedPod::from_pod).collect(),
            regions,
        }
    }
}

impl ObservedQuota {
    /// Reads a `DmemQuota` served as a dynamic object; `None` without a name or namespace.
    ///
    /// The watch is dynamic so that one quota whose spec does not deserialize cannot stall the
    /// whole watch: it becomes an `Err` spec here and is reported as invalid in its status.
    pub fn from_dynamic(obj: &DynamicObject) -> Option<Self> {
        let meta = &obj.metadata;
        let spec = match obj.data.get("spec") {
            Some(value) => DmemQuotaSpec::deserialize(value).map_err(|err| format!("spec: {err}")),
            None => Err("spec: missing".to_owned()),
        };
        let status = obj
            .data
            .get("status")
            .and_then(|value| DmemQuotaStatus::deserialize(value).ok());
        Some(Self {
            key: QuotaRef {
                namespace: meta.namespace.clone()?,
                name: meta.name.clone()?,
            },
            uid: meta.uid.clone(),
            generation: meta.generation,
            created: meta.creation_timestamp.clone(),
            spec,
            status,
        })
    }
}

impl ObservedPod {
    /// Reads a pod; `None` without a name, namespace or UID.
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let meta = &pod.metadata;
        let status = pod.status.as_ref();
        let condition = |ty: &str| status?.conditions.as_ref()?.iter().find(|c| c.type_ == ty);
        let pressure = condition(POD_CONDITION_VRAM_PRESSURE).map(|c| PodPressure {
            active: c.status == "True",
            tier: c.reason.as_deref().and_then(|r| r.parse().ok()),
            since: c.last_transition_time.as_ref().map(|t| t.0),
        });
        let phase = status.and_then(|s| s.phase.as_deref());
        Some(Self {
            facts: PodFacts {
                namespace: meta.namespace.clone()?,
                name: meta.name.clone()?,
                uid: meta.uid.clone()?,
                labels: meta.labels.clone().unwrap_or_default(),
                // Grants come from the node's PodResources view; quota status does not need them.
                grants: Vec::new(),
            },
            finished: matches!(phase, Some("Succeeded" | "Failed")),
            terminating: meta.deletion_timestamp.is_some(),
            limits_applied: condition(POD_CONDITION_VRAM_LIMITS_APPLIED)
                .is_some_and(|c| c.status == "True"),
            pressure,
            above_high_since: condition(POD_CONDITION_VRAM_ABOVE_HIGH)
                .filter(|c| c.status == "True")
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0),
        })
    }
}

/// Strips a cached pod down to what [`ObservedPod::from_pod`] reads: identity, labels, deletion
/// timestamp, phase and the agent's three conditions. A full pod is several kilobytes (mostly
/// `spec` and `managedFields`); the pruned one is a few hundred bytes.
pub fn prune_pod(pod: &mut Pod) {
    pod.spec = None;
    let meta = &mut pod.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.owner_references = None;
    meta.finalizers = None;
    meta.generate_name = None;
    if let Some(status) = pod.status.take() {
        let ours = |c: &k8s_openapi::api::core::v1::PodCondition| {
            [
                POD_CONDITION_VRAM_PRESSURE,
                POD_CONDITION_VRAM_ABOVE_HIGH,
                POD_CONDITION_VRAM_LIMITS_APPLIED,
            ]
            .contains(&c.type_.as_str())
        };
        let conditions: Vec<_> = status
            .conditions
            .into_iter()
            .flatten()
            .filter(ours)
            .collect();
        pod.status = Some(PodStatus {
            phase: status.phase,
            conditions: (!conditions.is_empty()).then_some(conditions),
            ..PodStatus::default()
        });
    }
}

/// Strips a cached node's metadata down to its name and [`NODE_REGIONS_ANNOTATION`].
pub fn prune_node(node: &mut PartialObjectMeta<Node>) {
    let meta = &mut node.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    meta.owner_references = None;
    meta.finalizers = None;
    meta.annotations = meta.annotations.take().and_then(|annotations| {
        let ours: BTreeMap<_, _> = annotations
            .into_iter()
            .filter(|(key, _)| key == NODE_REGIONS_ANNOTATION)
            .collect();
        (!ours.is_empty()).then_some(ours)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{TestPod, TestQuota, node};

    #[test]
    fn pods_read_conditions_phase_and_deletion() {
        let pod = TestPod::new("ns", "p")
            .label("app", "x")
            .pressure(true, "AboveHigh", 100)
            .limits_applied(true)
            .into_pod();
        let seen = ObservedPod::from_pod(&pod).expect("complete pod");
        assert_eq!(seen.facts.uid, "uid-p");
        assert_eq!(seen.facts.labels.get("app").map(String::as_str), Some("x"));
        assert!(seen.limits_applied && !seen.finished && !seen.terminating);
        let pressure = seen.pressure.expect("pressure condition");
        assert_eq!(pressure.tier, Some(PressureTier::AboveHigh));
        assert_eq!(
            pressure.since,
            Some(Timestamp::from_second(100).expect("ts"))
        );
        assert_eq!(
            seen.above_high_since,
            Some(Timestamp::from_second(100).expect("ts"))
        );
        // The grace clock is VRAMAboveHigh's own transition time, not VRAMPressure's.
        let crossed_later = TestPod::new("ns", "p")
            .pressure(true, "AboveHigh", 100)
            .above_high(900)
            .into_pod();
        let seen = ObservedPod::from_pod(&crossed_later).expect("complete pod");
        assert_eq!(
            seen.above_high_since,
            Some(Timestamp::from_second(900).expect("ts"))
        );
        let calm = TestPod::new("ns", "p")
            .condition(POD_CONDITION_VRAM_ABOVE_HIGH, false, "WithinHigh", Some(5))
            .into_pod();
        assert_eq!(
            ObservedPod::from_pod(&calm).expect("pod").above_high_since,
            None
        );

        let unknown = TestPod::new("ns", "q")
            .pressure(true, "SomethingNew", 1)
            .phase("Failed")
            .terminating()
            .into_pod();
        let seen = ObservedPod::from_pod(&unknown).expect("complete pod");
        assert_eq!(seen.pressure.and_then(|p| p.tier), None);
        assert!(seen.finished && seen.terminating && !seen.limits_applied);

        let mut nameless = TestPod::new("ns", "r").into_pod();
        nameless.metadata.uid = None;
        assert_eq!(ObservedPod::from_pod(&nameless), None);
    }

    #[test]
    fn pruning_keeps_what_the_conversion_reads() {
        let mut pod = TestPod::new("ns", "p")
            .label("a", "b")
            .pressure(true, "AboveHigh", 5)
            .into_pod();
        let status = pod.status.get_or_insert_default();
        status
            .conditions
            .get_or_insert_default()
            .push(k8s_openapi::api::core::v1::PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            });
        status.pod_ip = Some("10.0.0.1".into());
        pod.spec = Some(Default::default());
        pod.metadata.annotations = Some([("big".to_owned(), "x".repeat(1000))].into());
        let before = ObservedPod::from_pod(&pod);
        prune_pod(&mut pod);
        assert_eq!(ObservedPod::from_pod(&pod), before);
        assert!(pod.spec.is_none() && pod.metadata.annotations.is_none());
        let status = pod.status.expect("status kept");
        // VRAMPressure and VRAMAboveHigh kept, Ready dropped.
        assert_eq!(status.conditions.map(|c| c.len()), Some(2));
        assert!(status.pod_ip.is_none());

        let mut n = node("n1", Some("a=1"));
        n.metadata
            .annotations
            .get_or_insert_default()
            .insert("other".into(), "x".into());
        prune_node(&mut n);
        assert_eq!(n.metadata.annotations.map(|a| a.len()), Some(1));
    }

    #[test]
    fn quotas_with_an_unreadable_spec_are_kept_as_errors() {
        let good = TestQuota::new("ns", "q")
            .limit("*", &[("max", "1Gi")])
            .dynamic();
        let seen = ObservedQuota::from_dynamic(&good).expect("named");
        assert!(seen.spec.is_ok());
        let mut bad = good.clone();
        bad.data["spec"]["limits"] = serde_json::json!("not a list");
        bad.data["status"] = serde_json::json!({"matchedPods": "many"});
        let seen = ObservedQuota::from_dynamic(&bad).expect("named");
        assert!(
            seen.spec.as_ref().is_err_and(|e| e.starts_with("spec: ")),
            "{:?}",
            seen.spec
        );
        assert_eq!(seen.status, None);
    }

    #[test]
    fn observed_unions_regions_over_nodes() {
        let nodes = [
            node("a", Some("r0=1,r1=2")),
            node("b", Some("r1=2,r2=3")),
            node("c", None),
        ];
        let observed = Observed::from_objects([], [], nodes.iter());
        assert_eq!(
            observed.regions,
            ["r0", "r1", "r2"].map(String::from).into()
        );
    }
}
