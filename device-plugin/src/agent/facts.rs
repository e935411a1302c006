//! CORE: what one round reads, from the cached objects and the kubelet's grants: the pods that
//! still run on this node (finished pods hold no VRAM and are left alone), their rule facts with the
//! VRAM units PodResources says they hold, and the quotas split into valid and invalid.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::Pod;
use kube_dmem_crds::select::{self, PodFacts, QuotaFacts, QuotaRef, quota_facts};
use kube_dmem_crds::validate::ValidationError;

use crate::kubelet::grants::{Grants, KnownPod};
use crate::pods::Objects;

/// The inputs of one round.
#[derive(Clone, Debug, Default)]
pub struct RoundInputs {
    /// Running (not finished) pods of this node, in cache order.
    pub pods: Vec<Arc<Pod>>,
    /// Their rule facts, in the same order.
    pub facts: Vec<PodFacts>,
    /// Valid quotas.
    pub quotas: Vec<QuotaFacts>,
    /// Invalid quotas with their first error: logged and counted, never applied.
    pub invalid: Vec<(QuotaRef, ValidationError)>,
}

/// Whether a pod has finished (`Succeeded` or `Failed`): its containers are gone.
pub fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The round inputs from `objects`, with `grants` (none without a kubelet).
pub fn round_inputs(objects: &Objects, grants: Option<&Grants>) -> RoundInputs {
    let pods: Vec<Arc<Pod>> = objects
        .pods
        .iter()
        .filter(|p| !is_finished(p) && p.metadata.uid.is_some())
        .cloned()
        .collect();
    let facts = pods
        .iter()
        .map(|pod| {
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            let grant = grants
                .and_then(|g| g.by_uid.get(uid))
                // Allocate refuses units of several regions, so one grant per pod is the rule.
                .and_then(|held| held.first())
                .map(|g| select::Grant {
                    region: g.region.clone(),
                    bytes: g.bytes,
                });
            PodFacts::from_pod(pod, grant)
        })
        .collect();
    let (quotas, invalid) = quota_facts(objects.quotas.iter());
    RoundInputs {
        pods,
        facts,
        quotas,
        invalid,
    }
}

/// The pods `grants::join` matches PodResources entries against.
pub fn known_pods(objects: &Objects) -> Vec<KnownPod> {
    objects
        .pods
        .iter()
        .filter_map(|pod| {
            let meta = &pod.metadata;
            Some(KnownPod {
                namespace: meta.namespace.clone()?,
                name: meta.name.clone()?,
                uid: meta.uid.clone()?,
                created: meta
                    .creation_timestamp
                    .as_ref()
                    .map_or(SystemTime::UNIX_EPOCH, |t| SystemTime::from(t.0)),
            })
        })
        .collect()
}

/// Pods by UID, to find a report's pod object again.
pub fn by_uid(pods: &[Arc<Pod>]) -> BTreeMap<&str, &Pod> {
    pods.iter()
        .filter_map(|p| Some((p.metadata.uid.as_deref()?, p.as_ref())))
        .collect()
}
