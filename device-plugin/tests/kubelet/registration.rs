//! Registration handshake, ListAndWatch, kubelet restarts and shutdown.

use std::sync::Arc;
use std::time::Duration;

use kube_dmem_device_plugin::kubelet::RESOURCE_NAME;
use kube_dmem_device_plugin::kubelet::devnodes::NoDeviceNodes;

use crate::double::{Event, KubeletDouble, WAIT};
use crate::{A, B, GIB, Harness, capacity, id, two_regions};

#[tokio::test]
async fn registers_after_serving_and_kubelet_dials_back() {
    let mut h = Harness::start().await;
    let (endpoint, resource, options) = h.kubelet.registered().await;
    assert!(
        endpoint.starts_with("kube-dmem-") && endpoint.ends_with(".sock"),
        "{endpoint}"
    );
    assert_eq!(resource, RESOURCE_NAME);
    assert!(options.pre_start_required && options.get_preferred_allocation_available);
    assert!(h.socket(&endpoint).exists());
    let status = h
        .status
        .wait_for(|s| s.endpoint.is_some())
        .await
        .unwrap()
        .clone();
    assert_eq!(status.endpoint.as_deref(), Some(endpoint.as_str()));
    assert_eq!(status.registrations, 1);
    h.shutdown().await;
}

#[tokio::test]
async fn list_and_watch_sends_full_list_then_marks_vanished_region_unhealthy() {
    let mut h = Harness::start().await;
    let (endpoint, first) = h.kubelet.devices().await;
    assert_eq!(first.len(), 6);
    assert!(
        first.iter().all(|(_, health)| health == "Healthy"),
        "{first:?}"
    );
    let mut expected: Vec<String> = (0..4)
        .map(|u| id(A, u))
        .chain((0..2).map(|u| id(B, u)))
        .collect();
    expected.sort();
    let mut got: Vec<String> = first.iter().map(|(i, _)| i.clone()).collect();
    got.sort();
    assert_eq!(got, expected);

    // Region B disappears from dmem.capacity: a new full list, B's units listed as Unhealthy.
    let without_b = two_regions().observe(&capacity(&[(A, 4 * GIB)])).unwrap();
    h.inventory.send_replace(without_b);
    let (same, second) = h.kubelet.devices().await;
    assert_eq!(same, endpoint);
    assert_eq!(second.len(), 6);
    for (device, health) in &second {
        let expected = if device.starts_with(&id(B, 0)[..12]) {
            "Unhealthy"
        } else {
            "Healthy"
        };
        assert_eq!(health, expected, "{device}");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn kubelet_restart_leads_to_reregistration_on_a_new_socket() {
    let mut h = Harness::start().await;
    let (first, _, _) = h.kubelet.registered().await;
    let _ = h.kubelet.devices().await;

    h.kubelet.restart();
    assert!(!h.socket(&first).exists(), "the restart deleted our socket");
    let (second, resource, _) = h.kubelet.registered().await;
    assert_ne!(second, first);
    assert_eq!(resource, RESOURCE_NAME);
    assert!(h.socket(&second).exists());
    let (endpoint, devices) = h.kubelet.devices().await;
    assert_eq!((endpoint.as_str(), devices.len()), (second.as_str(), 6));
    let status = h
        .status
        .wait_for(|s| s.registrations == 2 && s.endpoint.is_some())
        .await
        .unwrap()
        .clone();
    assert_eq!(status.endpoint, Some(second));
    h.shutdown().await;
}

#[tokio::test]
async fn retries_until_the_kubelet_accepts() {
    // The plugin starts before the kubelet exists, then the kubelet refuses twice.
    let dir = tempfile::tempdir().unwrap();
    let kubelet = KubeletDouble::new(dir.path());
    let mut h = Harness::start_plugin(dir, kubelet, two_regions(), Arc::new(NoDeviceNodes));
    let failed = h
        .status
        .wait_for(|s| s.last_error.is_some())
        .await
        .unwrap()
        .clone();
    assert_eq!(failed.last_error, Some("Connect"));

    h.kubelet.reject_next(2);
    h.kubelet.serve();
    let mut rejected = 0;
    let endpoint = loop {
        match h.kubelet.next_event().await {
            Event::Rejected { code, .. } => {
                assert_eq!(code, tonic::Code::Unavailable);
                rejected += 1;
            }
            Event::Registered { endpoint, .. } => break endpoint,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(rejected, 2);
    assert!(h.socket(&endpoint).exists());
    // Failed sessions cleaned up their sockets: only kubelet.sock and the registered one remain.
    let mut names: Vec<String> = std::fs::read_dir(h.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec![endpoint, "kubelet.sock".to_owned()]);
    h.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_the_stream_and_removes_our_socket() {
    let mut h = Harness::start().await;
    let (endpoint, _, _) = h.kubelet.registered().await;
    let _ = h.kubelet.devices().await;
    h.shutdown().await;
    assert!(!h.socket(&endpoint).exists());
    assert!(
        h.dir.path().join("kubelet.sock").exists(),
        "the kubelet's socket is not ours to remove"
    );
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            if let Event::StreamEnded { endpoint: e, error } = h.kubelet.next_event().await {
                return (e, error);
            }
        }
    })
    .await
    .unwrap();
    // The stream ends cleanly (status OK), not with a transport error.
    assert_eq!(ended, (endpoint, None));
}

#[tokio::test]
async fn inventory_sender_dropped_keeps_the_stream_open() {
    let mut h = Harness::start().await;
    let _ = h.kubelet.devices().await;
    let (replacement, _) = tokio::sync::watch::channel(two_regions());
    drop(std::mem::replace(&mut h.inventory, replacement));
    // No StreamEnded may arrive: the next thing the kubelet sees is a working Allocate.
    let response = h
        .kubelet
        .plugin()
        .allocate(
            kube_dmem_device_plugin::kubelet::proto::v1beta1::AllocateRequest {
                container_requests: vec![
                    kube_dmem_device_plugin::kubelet::proto::v1beta1::ContainerAllocateRequest {
                        devices_ids: vec![id(B, 0)],
                    },
                ],
            },
        )
        .await
        .unwrap();
    assert_eq!(response.into_inner().container_responses.len(), 1);
    let ended = h.kubelet.stream_end_within(Duration::from_secs(1)).await;
    assert!(ended.is_none(), "the stream ended: {ended:?}");
    h.shutdown().await;
}

#[tokio::test]
async fn stop_during_a_hanging_register_still_removes_our_socket() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = KubeletDouble::start(dir.path());
    kubelet.hang_register();
    let mut h = Harness::start_plugin(dir, kubelet, two_regions(), Arc::new(NoDeviceNodes));
    let endpoint = loop {
        if let Event::Hanging { endpoint } = h.kubelet.next_event().await {
            break endpoint;
        }
    };
    assert!(h.socket(&endpoint).exists(), "served before Register");
    h.shutdown().await;
    assert!(!h.socket(&endpoint).exists());
    assert_eq!(h.status.borrow().registrations, 0);
}
