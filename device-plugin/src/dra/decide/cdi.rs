//! CORE: the CDI spec that gives a container the device nodes of the GPU behind a region. The
//! kubelet passes the CDI device IDs from `NodePrepareResources` to the container runtime, which
//! looks them up in the spec files under `/var/run/cdi`. Simulated regions have no device nodes, so
//! they get no CDI device and no ID.

use serde_json::{Value, json};

use super::slice::RegionDevice;
use crate::kubelet::proto::v1beta1::DeviceSpec;

/// The CDI kind (`vendor/class`) of our devices.
pub const CDI_KIND: &str = "kube-dmem.io/vram";

/// CDI spec version written; 0.5.0 is understood by containerd 1.7+ and CRI-O 1.28+.
pub const CDI_VERSION: &str = "0.5.0";

/// The fully qualified CDI device ID of `device`.
pub fn device_id(device: &str) -> String {
    format!("{CDI_KIND}={device}")
}

/// The spec for `devices`, each with its device nodes; `None` when no device has any.
pub fn spec(devices: &[(RegionDevice, Vec<DeviceSpec>)]) -> Option<Value> {
    let entries: Vec<Value> = devices
        .iter()
        .filter(|(_, nodes)| !nodes.is_empty())
        .map(|(d, nodes)| {
            let nodes: Vec<Value> = nodes
                .iter()
                .map(|n| json!({"path": n.container_path, "hostPath": n.host_path, "permissions": n.permissions}))
                .collect();
            // The same variable the device plugin's Allocate sets, so a workload finds its region
            // whichever way it got the GPU (with claims on several regions, the runtime keeps one).
            let env = [format!("KUBE_DMEM_REGION={}", d.region)];
            json!({"name": d.device, "containerEdits": {"deviceNodes": nodes, "env": env}})
        })
        .collect();
    (!entries.is_empty())
        .then(|| json!({"cdiVersion": CDI_VERSION, "kind": CDI_KIND, "devices": entries}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str) -> RegionDevice {
        RegionDevice {
            device: name.into(),
            region: format!("drm/{name}/vram0"),
            bytes: 1,
            kernel_driver: None,
        }
    }

    #[test]
    fn only_devices_with_nodes_are_in_the_spec() {
        let card = DeviceSpec {
            container_path: "/dev/dri/card1".into(),
            host_path: "/dev/dri/card1".into(),
            permissions: "rw".into(),
        };
        assert_eq!(spec(&[(device("a"), vec![])]), None);
        let got = spec(&[(device("a"), vec![card]), (device("b"), vec![])]).expect("spec");
        assert_eq!(got["kind"], CDI_KIND);
        assert_eq!(got["devices"].as_array().map(Vec::len), Some(1));
        assert_eq!(got["devices"][0]["name"], "a");
        assert_eq!(
            got["devices"][0]["containerEdits"]["deviceNodes"][0]["path"],
            "/dev/dri/card1"
        );
        assert_eq!(
            got["devices"][0]["containerEdits"]["env"][0],
            "KUBE_DMEM_REGION=drm/a/vram0"
        );
        assert_eq!(device_id("a"), "kube-dmem.io/vram=a");
    }
}
