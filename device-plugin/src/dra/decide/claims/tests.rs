//! Table-style tests of claim preparation: what a claim grants, and each refusal.

use std::collections::BTreeMap;

use k8s_openapi::api::resource::v1::{
    AllocationResult, DeviceAllocationConfiguration, DeviceAllocationResult,
    DeviceRequestAllocationResult, OpaqueDeviceConfiguration, ResourceClaim,
    ResourceClaimConsumerReference, ResourceClaimStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::json;

use super::*;

const GI: u64 = 1 << 30;
const NODE: &str = "node-1";

fn region_devices() -> Vec<RegionDevice> {
    vec![
        RegionDevice {
            device: "drm-0000-03-00-0-vram0".into(),
            region: "drm/0000:03:00.0/vram0".into(),
            bytes: 16 * GI,
            kernel_driver: None,
        },
        RegionDevice {
            device: "drm-0000-04-00-0-vram0".into(),
            region: "drm/0000:04:00.0/vram0".into(),
            bytes: 8 * GI,
            kernel_driver: None,
        },
    ]
}

fn want() -> ClaimRef {
    ClaimRef {
        namespace: "ml".into(),
        name: "c1".into(),
        uid: "claim-uid".into(),
    }
}

fn result(request: &str, device: &str, consumed: Option<&str>) -> DeviceRequestAllocationResult {
    DeviceRequestAllocationResult {
        request: request.into(),
        driver: DRIVER.into(),
        pool: NODE.into(),
        device: device.into(),
        consumed_capacity: consumed
            .map(|q| BTreeMap::from([(MEMORY.to_owned(), Quantity(q.into()))])),
        share_id: consumed.map(|_| "share-1".to_owned()),
        ..DeviceRequestAllocationResult::default()
    }
}

fn claim(results: Vec<DeviceRequestAllocationResult>, pods: &[&str]) -> ResourceClaim {
    let mut c = ResourceClaim::default();
    c.metadata.namespace = Some("ml".into());
    c.metadata.name = Some("c1".into());
    c.metadata.uid = Some("claim-uid".into());
    c.status = Some(ResourceClaimStatus {
        allocation: Some(AllocationResult {
            devices: Some(DeviceAllocationResult {
                results: Some(results),
                config: None,
            }),
            ..AllocationResult::default()
        }),
        reserved_for: Some(
            pods.iter()
                .map(|uid| ResourceClaimConsumerReference {
                    api_group: Some(String::new()),
                    resource: "pods".into(),
                    name: format!("pod-{uid}"),
                    uid: (*uid).into(),
                })
                .collect(),
        ),
        devices: None,
    });
    c
}

fn with_config(mut c: ResourceClaim, driver: &str, parameters: serde_json::Value) -> ResourceClaim {
    let devices = c
        .status
        .as_mut()
        .and_then(|s| s.allocation.as_mut())
        .and_then(|a| a.devices.as_mut());
    devices.expect("allocated").config = Some(vec![DeviceAllocationConfiguration {
        source: "FromClaim".into(),
        requests: None,
        opaque: Some(OpaqueDeviceConfiguration {
            driver: driver.into(),
            parameters: RawExtension(parameters),
        }),
    }]);
    c
}

#[test]
fn consumed_capacity_becomes_the_pods_grant() {
    let c = claim(
        vec![result("vram", "drm-0000-03-00-0-vram0", Some("6Gi"))],
        &["p1"],
    );
    let prepared = prepare(&c, &want(), NODE, &region_devices()).expect("prepared");
    assert_eq!(prepared.pods, ["p1"]);
    assert_eq!(prepared.devices.len(), 1);
    assert_eq!(prepared.devices[0].bytes, 6 * GI);
    assert_eq!(prepared.devices[0].share_id.as_deref(), Some("share-1"));
    let grants = grants_by_pod([&prepared]);
    assert_eq!(
        grants["p1"],
        [Grant {
            region: "drm/0000:03:00.0/vram0".into(),
            bytes: 6 * GI
        }]
    );
}

#[test]
fn a_device_without_consumed_capacity_is_granted_whole() {
    let c = claim(
        vec![result("vram", "drm-0000-04-00-0-vram0", None)],
        &["p1"],
    );
    let prepared = prepare(&c, &want(), NODE, &region_devices()).expect("prepared");
    assert_eq!(prepared.devices[0].bytes, 8 * GI);
}

#[test]
fn claims_of_one_pod_on_one_region_add_up_and_other_drivers_are_ignored() {
    let mut other = result("gpu", "gpu-0", None);
    other.driver = "gpu.example.com".into();
    let c1 = claim(
        vec![
            result("a", "drm-0000-03-00-0-vram0", Some("2Gi")),
            result("b", "drm-0000-03-00-0-vram0", Some("1Gi")),
            other,
        ],
        &["p1"],
    );
    let p1 = prepare(&c1, &want(), NODE, &region_devices()).expect("prepared");
    assert_eq!(
        p1.devices.len(),
        1,
        "two requests on one device are one device"
    );
    assert_eq!(p1.devices[0].requests, ["a", "b"]);
    let mut p2 = p1.clone();
    p2.claim.uid = "other".into();
    p2.pods = vec!["p1".into(), "p2".into()];
    let grants = grants_by_pod([&p1, &p2]);
    assert_eq!(grants["p1"][0].bytes, 6 * GI, "3Gi from each claim");
    assert_eq!(grants["p2"][0].bytes, 3 * GI);
}

#[test]
fn bad_claims_are_refused_with_a_precise_reason() {
    let devices = region_devices();
    let ok = || {
        claim(
            vec![result("vram", "drm-0000-03-00-0-vram0", Some("6Gi"))],
            &["p1"],
        )
    };
    let mut other_uid = ok();
    other_uid.metadata.uid = Some("recreated".into());
    let mut unallocated = ok();
    unallocated.status = None;
    let mut foreign_pool = result("vram", "drm-0000-03-00-0-vram0", Some("1Gi"));
    foreign_pool.pool = "node-2".into();
    let cases: Vec<(&str, ResourceClaim, &str)> = vec![
        ("uid", other_uid, "ClaimUidMismatch"),
        ("unallocated", unallocated, "ClaimNotAllocated"),
        (
            "unreserved",
            claim(
                vec![result("v", "drm-0000-03-00-0-vram0", Some("1Gi"))],
                &[],
            ),
            "ClaimNotReserved",
        ),
        ("pool", claim(vec![foreign_pool], &["p1"]), "ClaimOtherPool"),
        (
            "vanished",
            claim(
                vec![result("v", "drm-0000-09-00-0-vram0", Some("1Gi"))],
                &["p1"],
            ),
            "RegionNotFound",
        ),
        (
            "too big",
            claim(
                vec![result("v", "drm-0000-04-00-0-vram0", Some("9Gi"))],
                &["p1"],
            ),
            "ClaimExceedsRegion",
        ),
        (
            "sum too big",
            claim(
                vec![
                    result("a", "drm-0000-04-00-0-vram0", Some("5Gi")),
                    result("b", "drm-0000-04-00-0-vram0", Some("5Gi")),
                ],
                &["p1"],
            ),
            "ClaimExceedsRegion",
        ),
        (
            "quantity",
            claim(
                vec![result("v", "drm-0000-03-00-0-vram0", Some("lots"))],
                &["p1"],
            ),
            "BadConsumedCapacity",
        ),
        (
            "config field",
            with_config(
                ok(),
                DRIVER,
                json!({"apiVersion": CONFIG_API_VERSION, "kind": CONFIG_KIND, "lmit": "1Gi"}),
            ),
            "MalformedConfig",
        ),
        (
            "config kind",
            with_config(ok(), DRIVER, json!({"apiVersion": "v1", "kind": "Other"})),
            "MalformedConfig",
        ),
        (
            "config shape",
            with_config(ok(), DRIVER, json!("just a string")),
            "MalformedConfig",
        ),
    ];
    for (what, c, reason) in cases {
        let err = prepare(&c, &want(), NODE, &devices).expect_err(what);
        assert_eq!(err.reason(), reason, "{what}: {err}");
    }
    let err = prepare(
        &claim(
            vec![result("v", "drm-0000-04-00-0-vram0", Some("9Gi"))],
            &["p1"],
        ),
        &want(),
        NODE,
        &devices,
    )
    .expect_err("too big");
    assert_eq!(
        err.to_string(),
        "claim ml/c1 takes 9663676416 bytes of device drm-0000-04-00-0-vram0 (drm/0000:04:00.0/vram0), which has 8589934592"
    );
}

#[test]
fn valid_config_and_other_drivers_configs_are_accepted() {
    let ok = claim(
        vec![result("vram", "drm-0000-03-00-0-vram0", Some("1Gi"))],
        &["p1"],
    );
    let ours = with_config(
        ok.clone(),
        DRIVER,
        json!({"apiVersion": CONFIG_API_VERSION, "kind": CONFIG_KIND}),
    );
    assert!(prepare(&ours, &want(), NODE, &region_devices()).is_ok());
    let theirs = with_config(ok, "gpu.example.com", json!({"anything": 1}));
    assert!(prepare(&theirs, &want(), NODE, &region_devices()).is_ok());
}
