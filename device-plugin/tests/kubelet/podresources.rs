//! The PodResources client against the double, and the join with known pods.

use std::time::{Duration, SystemTime};

use kube_dmem_device_plugin::kubelet::RESOURCE_NAME;
use kube_dmem_device_plugin::kubelet::decide::grants::{Grant, KnownPod, SkipReason, join};
use kube_dmem_device_plugin::kubelet::podresources::PodResourcesClient;
use kube_dmem_device_plugin::kubelet::proto::podresources::{
    ContainerDevices, ContainerResources, PodResources,
};
use tokio_util::sync::CancellationToken;

use crate::double::PodResourcesDouble;
use crate::{A, B, GIB, id, two_regions};

fn pod(ns: &str, name: &str, ids: &[String]) -> PodResources {
    PodResources {
        namespace: ns.into(),
        name: name.into(),
        containers: vec![ContainerResources {
            name: "main".into(),
            devices: vec![ContainerDevices {
                resource_name: RESOURCE_NAME.into(),
                device_ids: ids.to_vec(),
                topology: None,
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn known(ns: &str, name: &str, uid: &str, created: SystemTime) -> KnownPod {
    KnownPod {
        namespace: ns.into(),
        name: name.into(),
        uid: uid.into(),
        created,
    }
}

#[tokio::test]
async fn list_over_the_socket_and_join_with_known_pods() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("pod-resources").join("kubelet.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let stop = CancellationToken::new();
    let kubelet = PodResourcesDouble::start(&socket, stop.clone());
    let client = PodResourcesClient::new(&socket).with_timeout(Duration::from_secs(10));
    let inventory = two_regions();
    let hour = Duration::from_secs(3600);
    let t0 = SystemTime::now() - hour;

    // Pods are read from the cache before List is called (the guard relies on that order).
    let known_pods = vec![
        known("ml", "train", "uid-train", t0),
        known("db", "pg-0", "uid-pg-old", t0),
    ];
    kubelet.set(vec![
        pod("ml", "train", &[id(A, 0), id(A, 1)]),
        pod("db", "pg-0", &[id(B, 0)]),
    ]);
    let listed_at = SystemTime::now();
    let answer = client.list().await.unwrap();
    let grants = join(&answer, &known_pods, &inventory, RESOURCE_NAME, listed_at);
    assert_eq!(
        grants.by_uid["uid-train"],
        vec![Grant {
            region: A.into(),
            bytes: 2 * GIB
        }]
    );
    assert_eq!(
        grants.by_uid["uid-pg-old"],
        vec![Grant {
            region: B.into(),
            bytes: GIB
        }]
    );

    // pg-0 is force-deleted and recreated under the same name; the kubelet still lists the old one.
    let recreated = SystemTime::now() + Duration::from_secs(1);
    let known_pods = vec![
        known("ml", "train", "uid-train", t0),
        known("db", "pg-0", "uid-pg-new", recreated),
    ];
    let listed_at = SystemTime::now();
    let answer = client.list().await.unwrap();
    let grants = join(&answer, &known_pods, &inventory, RESOURCE_NAME, listed_at);
    assert!(
        !grants.by_uid.contains_key("uid-pg-new"),
        "old instance's units must not go to the new UID"
    );
    assert!(
        !grants.by_uid.contains_key("uid-pg-old"),
        "the old UID is no longer current"
    );
    assert_eq!(grants.skipped.len(), 1);
    assert_eq!(grants.skipped[0].reason, SkipReason::CreatedAfterList);

    // Both instances active in the kubelet at once: ambiguous until the old one is gone.
    kubelet.set(vec![
        pod("db", "pg-0", &[id(B, 0)]),
        pod("db", "pg-0", &[id(B, 1)]),
    ]);
    let answer = client.list().await.unwrap();
    let grants = join(
        &answer,
        &known_pods,
        &inventory,
        RESOURCE_NAME,
        recreated + hour,
    );
    assert!(grants.by_uid.is_empty());
    assert!(
        grants
            .skipped
            .iter()
            .all(|s| s.reason == SkipReason::Ambiguous)
    );

    // The old instance is gone: the new UID gets its own units.
    kubelet.set(vec![pod("db", "pg-0", &[id(B, 1)])]);
    let answer = client.list().await.unwrap();
    let grants = join(
        &answer,
        &known_pods,
        &inventory,
        RESOURCE_NAME,
        recreated + hour,
    );
    assert_eq!(
        grants.by_uid["uid-pg-new"],
        vec![Grant {
            region: B.into(),
            bytes: GIB
        }]
    );
    stop.cancel();
}

#[tokio::test]
async fn list_fails_with_a_typed_error_when_the_kubelet_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let client = PodResourcesClient::new(dir.path().join("kubelet.sock"))
        .with_timeout(Duration::from_secs(5));
    let err = client.list().await.unwrap_err();
    assert_eq!(err.reason(), "ConnectPodResources");
}

#[tokio::test]
async fn large_answers_above_the_default_4_mib_limit_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kubelet.sock");
    let stop = CancellationToken::new();
    let kubelet = PodResourcesDouble::start(&socket, stop.clone());
    // About 6 MiB of device IDs.
    let ids: Vec<String> = (0..200_000)
        .map(|i| format!("vendor-device-{i:012}"))
        .collect();
    kubelet.set(vec![pod("big", "pod", &ids)]);
    let answer = PodResourcesClient::new(&socket).list().await.unwrap();
    assert_eq!(
        answer.pod_resources[0].containers[0].devices[0]
            .device_ids
            .len(),
        200_000
    );
    stop.cancel();
}
