//! The kubelet calling GetPreferredAllocation, Allocate and PreStartContainer on the registered plugin.

use kube_dmem_device_plugin::kubelet::decide::allocate::{ENV_REGION, ENV_VRAM_BYTES};
use kube_dmem_device_plugin::kubelet::plugin::PreStartError;
use kube_dmem_device_plugin::kubelet::proto::v1beta1::{
    AllocateRequest, ContainerAllocateRequest, ContainerPreferredAllocationRequest,
    PreStartContainerRequest, PreferredAllocationRequest,
};

use crate::double::WAIT;
use crate::{A, B, GIB, Harness, dev_root_for_a, id, two_regions};

fn all_ids() -> Vec<String> {
    (0..4)
        .map(|u| id(A, u))
        .chain((0..2).map(|u| id(B, u)))
        .collect()
}

fn preferred_request(
    available: Vec<String>,
    must: Vec<String>,
    size: i32,
) -> PreferredAllocationRequest {
    PreferredAllocationRequest {
        container_requests: vec![ContainerPreferredAllocationRequest {
            available_device_i_ds: available,
            must_include_device_i_ds: must,
            allocation_size: size,
        }],
    }
}

fn allocate_request(ids: Vec<String>) -> AllocateRequest {
    AllocateRequest {
        container_requests: vec![ContainerAllocateRequest { devices_ids: ids }],
    }
}

#[tokio::test]
async fn preferred_allocation_packs_onto_one_region() {
    let mut h = Harness::start().await;
    let _ = h.kubelet.registered().await;
    let mut plugin = h.kubelet.plugin();

    let best_fit = plugin
        .get_preferred_allocation(preferred_request(all_ids(), vec![], 2))
        .await
        .unwrap();
    assert_eq!(
        best_fit.into_inner().container_responses[0].device_i_ds,
        vec![id(B, 0), id(B, 1)]
    );

    let only_a_fits = plugin
        .get_preferred_allocation(preferred_request(all_ids(), vec![], 3))
        .await
        .unwrap();
    assert_eq!(
        only_a_fits.into_inner().container_responses[0].device_i_ds,
        vec![id(A, 0), id(A, 1), id(A, 2)]
    );

    let must = plugin
        .get_preferred_allocation(preferred_request(all_ids(), vec![id(A, 3)], 2))
        .await
        .unwrap();
    assert_eq!(
        must.into_inner().container_responses[0].device_i_ds,
        vec![id(A, 0), id(A, 3)]
    );

    let too_big = plugin
        .get_preferred_allocation(preferred_request(all_ids(), vec![], 7))
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), tonic::Code::ResourceExhausted);
    h.shutdown().await;
}

#[tokio::test]
async fn allocate_answers_region_bytes_and_device_nodes() {
    let (_dev, nodes) = dev_root_for_a();
    let mut h = Harness::start_with(two_regions(), nodes).await;
    let _ = h.kubelet.registered().await;
    let mut plugin = h.kubelet.plugin();

    let on_a = plugin
        .allocate(allocate_request(vec![id(A, 1), id(A, 2), id(A, 0)]))
        .await
        .unwrap();
    let response = &on_a.get_ref().container_responses[0];
    assert_eq!(response.envs.get(ENV_REGION).map(String::as_str), Some(A));
    assert_eq!(
        response.envs.get(ENV_VRAM_BYTES),
        Some(&(3 * GIB).to_string())
    );
    let nodes: Vec<(&str, &str)> = response
        .devices
        .iter()
        .map(|d| (d.host_path.as_str(), d.permissions.as_str()))
        .collect();
    assert_eq!(
        nodes,
        vec![("/dev/dri/card1", "rw"), ("/dev/dri/renderD128", "rw")]
    );

    // Region B's GPU has no device nodes under the dev root: env vars only.
    let on_b = plugin
        .allocate(allocate_request(vec![id(B, 1)]))
        .await
        .unwrap();
    let response = &on_b.get_ref().container_responses[0];
    assert_eq!(response.envs.get(ENV_REGION).map(String::as_str), Some(B));
    assert_eq!(response.envs.get(ENV_VRAM_BYTES), Some(&GIB.to_string()));
    assert!(response.devices.is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn allocate_across_regions_is_refused_with_resource_exhausted() {
    let mut h = Harness::start().await;
    let _ = h.kubelet.registered().await;
    let mut plugin = h.kubelet.plugin();

    let split = plugin
        .allocate(allocate_request(vec![id(A, 0), id(B, 0)]))
        .await
        .unwrap_err();
    assert_eq!(split.code(), tonic::Code::ResourceExhausted);
    assert!(
        split.message().starts_with("SplitAcrossRegions"),
        "{}",
        split.message()
    );
    assert!(
        split.message().contains(A) && split.message().contains(B),
        "{}",
        split.message()
    );

    let unknown = plugin
        .allocate(allocate_request(vec![id(B, 5)]))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let malformed = plugin
        .allocate(allocate_request(vec!["gpu0".into()]))
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), tonic::Code::InvalidArgument);
    h.shutdown().await;
}

#[tokio::test]
async fn pre_start_calls_the_hook_and_propagates_its_error() {
    let mut h = Harness::start().await;
    let _ = h.kubelet.registered().await;
    let mut plugin = h.kubelet.plugin();
    let ids = vec![id(A, 0), id(A, 1)];

    plugin
        .pre_start_container(PreStartContainerRequest {
            devices_ids: ids.clone(),
        })
        .await
        .unwrap();
    let seen = tokio::time::timeout(WAIT, h.hook_calls.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, ids);

    h.fail_pre_start_with(|| PreStartError::LimitsNotApplied {
        pod: "ml/train".into(),
        reason: "MaxBelowUsage",
        may_settle: true,
        source: "dmem.max reads back max".into(),
    });
    let refused = plugin
        .pre_start_container(PreStartContainerRequest {
            devices_ids: ids.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        refused.message(),
        "MaxBelowUsage: limits of pod ml/train are not in force: dmem.max reads back max"
    );
    assert_eq!(
        tokio::time::timeout(WAIT, h.hook_calls.recv())
            .await
            .unwrap()
            .unwrap(),
        ids
    );

    h.fail_pre_start_with(|| PreStartError::PodNotFound {
        device_ids: vec!["x".into()],
    });
    let missing = plugin
        .pre_start_container(PreStartContainerRequest { devices_ids: ids })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    h.shutdown().await;
}
