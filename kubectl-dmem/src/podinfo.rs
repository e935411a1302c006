//! CORE: what this tool reads off an API pod: whether it still holds resources, the
//! `kube-dmem.io/vram` units it holds, and its kube-dmem conditions.

use k8s_openapi::api::core::v1::{Container, Pod};
use kube_dmem_crds::{API_GROUP, VRAM_RESOURCE};
use serde::Serialize;

/// A pod condition, as shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    /// Condition type, e.g. `kube-dmem.io/VRAMPressure`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// PascalCase reason.
    pub reason: String,
    /// Message.
    pub message: String,
    /// RFC 3339 time of the last transition.
    pub last_transition: Option<String>,
}

/// Whether the pod still holds node resources (not Succeeded or Failed).
pub fn is_active(pod: &Pod) -> bool {
    !matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// `kube-dmem.io/vram` units the pod holds: the larger of the containers' sum and the largest
/// init container (init containers run one at a time, before the others), as the scheduler counts.
pub fn vram_units(pod: &Pod) -> u64 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    let sum: u64 = spec.containers.iter().map(container_units).sum();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(container_units)
        .max()
        .unwrap_or(0);
    sum.max(init)
}

/// Extended resources must have requests equal to limits; either one says how many.
fn container_units(container: &Container) -> u64 {
    let Some(resources) = container.resources.as_ref() else {
        return 0;
    };
    [resources.limits.as_ref(), resources.requests.as_ref()]
        .into_iter()
        .flatten()
        .find_map(|m| m.get(VRAM_RESOURCE))
        .and_then(|q| q.0.parse::<u64>().ok())
        .unwrap_or(0)
}

/// The condition of type `ty`, if the pod has it.
pub fn condition(pod: &Pod, ty: &str) -> Option<ConditionView> {
    conditions(pod).into_iter().find(|c| c.type_ == ty)
}

/// The pod's conditions of the kube-dmem group (`kube-dmem.io/...`), in the pod's order.
pub fn conditions(pod: &Pod) -> Vec<ConditionView> {
    let prefix = format!("{API_GROUP}/");
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.type_.starts_with(&prefix))
        .map(|c| ConditionView {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
            last_transition: c.last_transition_time.as_ref().map(|t| t.0.to_string()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use serde_json::json;

    #[test]
    fn units_count_containers_and_the_largest_init_container() {
        let pod = |containers: serde_json::Value, init: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"},
                "spec": {"containers": containers, "initContainers": init}}))
            .expect("pod")
        };
        let c = |units: &str| json!({"name": "c", "resources": {"requests": {"kube-dmem.io/vram": units}}});
        assert_eq!(vram_units(&pod(json!([c("2"), c("3")]), json!([]))), 5);
        assert_eq!(
            vram_units(&pod(json!([c("2")]), json!([c("4"), c("1")]))),
            4
        );
        assert_eq!(vram_units(&pod(json!([{"name": "x"}]), json!([]))), 0);
        assert_eq!(vram_units(&pod(json!([c("lots")]), json!([]))), 0);
    }

    #[test]
    fn only_kube_dmem_conditions_are_read() {
        let mut pod = fixtures::pods().remove(0);
        if let Some(status) = pod.status.as_mut() {
            status.conditions.get_or_insert_with(Vec::new).push(
                serde_json::from_value(json!({"type": "Ready", "status": "True"}))
                    .expect("condition"),
            );
            status.phase = Some("Succeeded".into());
        }
        let got = conditions(&pod);
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|c| c.type_.starts_with("kube-dmem.io/")));
        let pressure = condition(&pod, kube_dmem_crds::POD_CONDITION_VRAM_PRESSURE)
            .expect("pressure condition");
        assert_eq!(
            (pressure.status.as_str(), pressure.reason.as_str()),
            ("True", "AboveHigh")
        );
        assert_eq!(
            pressure.last_transition.as_deref(),
            Some("2026-11-30T18:00:00Z")
        );
        assert!(!is_active(&pod));
        assert!(is_active(&fixtures::pods()[1]));
    }
}
