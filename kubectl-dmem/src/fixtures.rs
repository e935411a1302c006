//! CORE (tests only): a small cluster as test values: two GPU nodes with their agents' `/metrics`
//! text, pods, quotas and events. The documentation's sample output is rendered from it
//! (`docs/user-guide.md` §8), and the rendering tests pin that output.

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube_dmem_crds::DmemQuota;
use serde_json::json;

/// Agent on `gpu-a` (a 7.3+ kernel: peaks come from `dmem.peak`), as `prometheus-client` writes it.
pub const AGENT_A_METRICS: &str = r#"# HELP kube_dmem_agent_rounds Enforcement rounds, by result.
# TYPE kube_dmem_agent_rounds counter
kube_dmem_agent_rounds_total{result="ok"} 1200
kube_dmem_agent_rounds_total{result="error"} 2
# HELP kube_dmem_agent_round_duration_seconds Duration of one enforcement round.
# TYPE kube_dmem_agent_round_duration_seconds histogram
# UNIT kube_dmem_agent_round_duration_seconds seconds
kube_dmem_agent_round_duration_seconds_sum 0.31
kube_dmem_agent_round_duration_seconds_count 1202
kube_dmem_agent_round_duration_seconds_bucket{le="0.0001"} 0
kube_dmem_agent_round_duration_seconds_bucket{le="+Inf"} 1202
# HELP kube_dmem_agent_kernel_errors Kernel errors by reason.
# TYPE kube_dmem_agent_kernel_errors counter
kube_dmem_agent_kernel_errors_total{reason="CgroupBusy"} 2
# TYPE kube_dmem_agent_pods gauge
kube_dmem_agent_pods 3
# TYPE kube_dmem_agent_pod_usage_bytes gauge
# UNIT kube_dmem_agent_pod_usage_bytes bytes
kube_dmem_agent_pod_usage_bytes{namespace="ml",pod="trainer-0",region="drm/0000:03:00.0/vram0"} 13958643712
kube_dmem_agent_pod_usage_bytes{namespace="ml",pod="notebook-7",region="drm/0000:03:00.0/vram0"} 1073741824
kube_dmem_agent_pod_usage_bytes{namespace="default",pod="idle",region="drm/0000:03:00.0/vram0"} 0
# TYPE kube_dmem_agent_pod_limit_bytes gauge
kube_dmem_agent_pod_limit_bytes{namespace="ml",pod="trainer-0",region="drm/0000:03:00.0/vram0"} 17179869184
kube_dmem_agent_pod_limit_bytes{namespace="ml",pod="notebook-7",region="drm/0000:03:00.0/vram0"} 4294967296
# TYPE kube_dmem_agent_pod_tier gauge
kube_dmem_agent_pod_tier{namespace="ml",pod="trainer-0",region="drm/0000:03:00.0/vram0"} 1
kube_dmem_agent_pod_tier{namespace="ml",pod="notebook-7",region="drm/0000:03:00.0/vram0"} 4
kube_dmem_agent_pod_tier{namespace="default",pod="idle",region="drm/0000:03:00.0/vram0"} 5
# TYPE kube_dmem_agent_pod_peak_bytes gauge
kube_dmem_agent_pod_peak_bytes{namespace="ml",pod="trainer-0",region="drm/0000:03:00.0/vram0",source="kernel"} 15032385536
kube_dmem_agent_pod_peak_bytes{namespace="ml",pod="notebook-7",region="drm/0000:03:00.0/vram0",source="kernel"} 2147483648
kube_dmem_agent_pod_peak_bytes{namespace="default",pod="idle",region="drm/0000:03:00.0/vram0",source="kernel"} 0
# TYPE kube_dmem_agent_pod_high_bytes gauge
kube_dmem_agent_pod_high_bytes{namespace="ml",pod="trainer-0",region="drm/0000:03:00.0/vram0"} 12884901888
# TYPE kube_dmem_agent_pod_low_bytes gauge
kube_dmem_agent_pod_low_bytes{namespace="ml",pod="trainer-0",region="drm/0000:03:00.0/vram0"} 12884901888
kube_dmem_agent_pod_low_bytes{namespace="ml",pod="notebook-7",region="drm/0000:03:00.0/vram0"} 2147483648
kube_dmem_agent_pod_low_bytes{namespace="default",pod="idle",region="drm/0000:03:00.0/vram0"} 0
# TYPE kube_dmem_agent_pod_min_bytes gauge
kube_dmem_agent_pod_min_bytes{namespace="ml",pod="notebook-7",region="drm/0000:03:00.0/vram0"} 0
# TYPE kube_dmem_agent_region_capacity_bytes gauge
kube_dmem_agent_region_capacity_bytes{region="drm/0000:03:00.0/vram0"} 25769803776
# TYPE kube_dmem_agent_region_usage_bytes gauge
kube_dmem_agent_region_usage_bytes{region="drm/0000:03:00.0/vram0"} 16106127360
# TYPE kube_dmem_agent_dmem_available gauge
kube_dmem_agent_dmem_available 1
# EOF
"#;

/// Agent on `gpu-b` (a 6.14–7.2 kernel: peaks are the agent's own polls).
pub const AGENT_B_METRICS: &str = r#"# TYPE kube_dmem_agent_rounds counter
kube_dmem_agent_rounds_total{result="ok"} 800
# TYPE kube_dmem_agent_pod_usage_bytes gauge
kube_dmem_agent_pod_usage_bytes{namespace="ml",pod="infer-1",region="drm/0000:c1:00.0/vram0"} 8556380160
# TYPE kube_dmem_agent_pod_limit_bytes gauge
kube_dmem_agent_pod_limit_bytes{namespace="ml",pod="infer-1",region="drm/0000:c1:00.0/vram0"} 8589934592
# TYPE kube_dmem_agent_pod_tier gauge
kube_dmem_agent_pod_tier{namespace="ml",pod="infer-1",region="drm/0000:c1:00.0/vram0"} 0
# TYPE kube_dmem_agent_pod_peak_bytes gauge
kube_dmem_agent_pod_peak_bytes{namespace="ml",pod="infer-1",region="drm/0000:c1:00.0/vram0",source="agent"} 8589934592
# TYPE kube_dmem_agent_region_capacity_bytes gauge
kube_dmem_agent_region_capacity_bytes{region="drm/0000:c1:00.0/vram0"} 17179869184
# TYPE kube_dmem_agent_region_usage_bytes gauge
kube_dmem_agent_region_usage_bytes{region="drm/0000:c1:00.0/vram0"} 8556380160
# TYPE kube_dmem_agent_dmem_available gauge
kube_dmem_agent_dmem_available 1
# EOF
"#;

/// A pod on `node` with labels, `kube-dmem.io/vram` units and kube-dmem conditions
/// `(type suffix, status, reason, message)`.
pub fn pod(
    ns: &str,
    name: &str,
    node: &str,
    labels: serde_json::Value,
    units: u32,
    conditions: &[(&str, &str, &str, &str)],
) -> Pod {
    let conditions: Vec<_> = conditions
        .iter()
        .map(|(ty, status, reason, message)| {
            json!({"type": format!("kube-dmem.io/{ty}"), "status": status, "reason": reason,
                   "message": message, "lastTransitionTime": "2026-11-30T18:00:00Z"})
        })
        .collect();
    let resources = if units > 0 {
        json!({"limits": {"kube-dmem.io/vram": units.to_string()}})
    } else {
        json!({})
    };
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name, "uid": format!("uid-{name}"), "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "x", "resources": resources}]},
        "status": {"phase": "Running", "conditions": conditions},
    }))
    .expect("pod fixture")
}

/// The fixture's pods (every namespace).
pub fn pods() -> Vec<Pod> {
    vec![
        pod(
            "ml",
            "trainer-0",
            "gpu-a",
            json!({"team": "training", "tier": "batch"}),
            0,
            &[
                (
                    "VRAMPressure",
                    "True",
                    "AboveHigh",
                    "drm/0000:03:00.0/vram0: usage 13Gi above high 12Gi",
                ),
                (
                    "VRAMAboveHigh",
                    "True",
                    "AboveHigh",
                    "drm/0000:03:00.0/vram0",
                ),
                ("VRAMLimitsApplied", "True", "Applied", "limits applied"),
            ],
        ),
        pod(
            "ml",
            "notebook-7",
            "gpu-a",
            json!({"team": "research"}),
            0,
            &[
                ("VRAMPressure", "False", "Protected", "within protection"),
                ("VRAMLimitsApplied", "True", "Applied", "limits applied"),
            ],
        ),
        pod(
            "default",
            "idle",
            "gpu-a",
            json!({}),
            0,
            &[("VRAMLimitsApplied", "True", "NotGoverned", "no quota")],
        ),
        pod(
            "ml",
            "infer-1",
            "gpu-b",
            json!({"team": "serving"}),
            8,
            &[
                (
                    "VRAMPressure",
                    "True",
                    "AtMax",
                    "drm/0000:c1:00.0/vram0: at max",
                ),
                (
                    "VRAMLimitsApplied",
                    "False",
                    "MaxBelowUsage",
                    "dmem.max 6Gi below usage 8Gi",
                ),
            ],
        ),
        pod("ml", "cpu-only", "cpu-1", json!({}), 0, &[]),
    ]
}

/// Nodes: two GPU nodes with the agents' regions annotation and VRAM units, one CPU node.
pub fn nodes() -> Vec<Node> {
    let node = |name: &str, regions: Option<&str>, units: Option<&str>| -> Node {
        let mut value = json!({"metadata": {"name": name}, "status": {}});
        if let Some(regions) = regions {
            value["metadata"]["annotations"] = json!({"kube-dmem.io/regions": regions});
        }
        if let Some(units) = units {
            value["status"]["allocatable"] = json!({"kube-dmem.io/vram": units});
        }
        serde_json::from_value(value).expect("node fixture")
    };
    vec![
        node(
            "gpu-a",
            Some("drm/0000:03:00.0/vram0=25769803776"),
            Some("24"),
        ),
        node(
            "gpu-b",
            Some("drm/0000:c1:00.0/vram0=17179869184"),
            Some("16"),
        ),
        node("cpu-1", None, None),
    ]
}

/// A quota in `ns` from its spec, created at `created`.
pub fn quota(ns: &str, name: &str, created: &str, spec: serde_json::Value) -> DmemQuota {
    serde_json::from_value(json!({
        "apiVersion": "kube-dmem.io/v1alpha1", "kind": "DmemQuota",
        "metadata": {"namespace": ns, "name": name, "creationTimestamp": created},
        "spec": spec,
    }))
    .expect("quota fixture")
}

/// Quotas of `ml`: `training` (priority 10) and `everyone` (priority 0, older) both select
/// `trainer-0`; `broken` is invalid (`low` above `high`).
pub fn quotas() -> Vec<DmemQuota> {
    vec![
        quota(
            "ml",
            "everyone",
            "2026-11-01T00:00:00Z",
            json!({"selector": {}, "priority": 0,
                   "limits": [{"region": "*", "max": "4Gi", "low": "2Gi"}]}),
        ),
        quota(
            "ml",
            "training",
            "2026-11-20T00:00:00Z",
            json!({"selector": {"matchLabels": {"team": "training"}}, "priority": 10,
                   "limits": [{"region": "drm/*/vram*", "max": "16Gi", "high": "12Gi"}]}),
        ),
        quota(
            "ml",
            "batch",
            "2026-11-26T00:00:00Z",
            json!({"selector": {"matchLabels": {"tier": "batch"}}, "priority": 10,
                   "limits": [{"region": "*", "max": "20Gi"}]}),
        ),
        quota(
            "ml",
            "broken",
            "2026-11-25T00:00:00Z",
            json!({"selector": {}, "priority": 100,
                   "limits": [{"region": "*", "high": "1Gi", "low": "2Gi"}]}),
        ),
    ]
}

/// Events on `trainer-0`.
pub fn events() -> Vec<Event> {
    let event = |reason: &str, ty: &str, time: &str, from: &str, message: &str| -> Event {
        serde_json::from_value(json!({
            "metadata": {"namespace": "ml", "name": format!("trainer-0.{reason}")},
            "involvedObject": {"kind": "Pod", "namespace": "ml", "name": "trainer-0", "uid": "uid-trainer-0"},
            "reason": reason, "type": ty, "message": message,
            "eventTime": time, "reportingComponent": from,
        }))
        .expect("event fixture")
    };
    vec![
        event(
            "AboveHigh",
            "Warning",
            "2026-11-30T18:00:00.000000Z",
            "kube-dmem-agent",
            "drm/0000:03:00.0/vram0: usage 13Gi above high 12Gi",
        ),
        event(
            "Applied",
            "Normal",
            "2026-11-30T17:00:00.000000Z",
            "kube-dmem-agent",
            "limits applied",
        ),
    ]
}
