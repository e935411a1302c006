use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::kubelet::RESOURCE_NAME;
use crate::kubelet::decide::inventory::RegionKey;
use crate::kubelet::proto::podresources::{ContainerDevices, ContainerResources};

const GIB: u64 = 1 << 30;
const A: &str = "drm/0000:03:00.0/vram0";
const B: &str = "drm/0000:04:00.0/vram0";

fn inventory() -> Inventory {
    let cap: BTreeMap<String, u64> = [(A.to_owned(), 4 * GIB), (B.to_owned(), 2 * GIB)]
        .into_iter()
        .collect();
    Inventory::default().observe(&cap).unwrap()
}

fn id(region: &str, unit: u32) -> String {
    format!("{}-{unit}", RegionKey::of(region))
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn known(ns: &str, name: &str, uid: &str, created: u64) -> KnownPod {
    KnownPod {
        namespace: ns.into(),
        name: name.into(),
        uid: uid.into(),
        created: at(created),
    }
}

fn container(name: &str, resource: &str, ids: &[String]) -> ContainerResources {
    ContainerResources {
        name: name.into(),
        devices: vec![ContainerDevices {
            resource_name: resource.into(),
            device_ids: ids.to_vec(),
            topology: None,
        }],
        ..Default::default()
    }
}

fn listed(ns: &str, name: &str, containers: Vec<ContainerResources>) -> PodResources {
    PodResources {
        namespace: ns.into(),
        name: name.into(),
        containers,
        ..Default::default()
    }
}

fn list(pods: Vec<PodResources>) -> ListPodResourcesResponse {
    ListPodResourcesResponse {
        pod_resources: pods,
    }
}

#[test]
fn joins_by_name_to_uid_and_sums_units_per_region() {
    let answer = list(vec![
        listed(
            "ml",
            "train",
            vec![
                container("main", RESOURCE_NAME, &[id(A, 0), id(A, 1)]),
                container("side", RESOURCE_NAME, &[id(A, 1), id(A, 2)]),
                container("nic", "vendor.com/nic", &["nic0".into()]),
            ],
        ),
        listed(
            "ml",
            "split",
            vec![
                container("a", RESOURCE_NAME, &[id(A, 3)]),
                container("b", RESOURCE_NAME, &[id(B, 0)]),
            ],
        ),
        listed(
            "ml",
            "cpu-only",
            vec![container("x", "vendor.com/nic", &["nic1".into()])],
        ),
    ]);
    let pods = [
        known("ml", "train", "uid-t", 10),
        known("ml", "split", "uid-s", 10),
        known("ml", "cpu-only", "uid-c", 10),
    ];
    let got = join(&answer, &pods, &inventory(), RESOURCE_NAME, at(100));
    assert!(got.skipped.is_empty(), "{:?}", got.skipped);
    assert_eq!(got.by_uid.len(), 2);
    assert_eq!(
        got.by_uid["uid-t"],
        vec![Grant {
            region: A.into(),
            bytes: 3 * GIB
        }]
    );
    assert_eq!(
        got.by_uid["uid-s"],
        vec![
            Grant {
                region: A.into(),
                bytes: GIB
            },
            Grant {
                region: B.into(),
                bytes: GIB
            }
        ]
    );
}

#[test]
fn only_the_current_instance_of_a_name_gets_the_grant() {
    let answer = list(vec![listed(
        "db",
        "pg-0",
        vec![container("pg", RESOURCE_NAME, &[id(B, 0)])],
    )]);
    // The cache still has the old instance next to the new one: only the newest UID is trusted.
    let pods = [
        known("db", "pg-0", "old", 10),
        known("db", "pg-0", "new", 50),
    ];
    let got = join(&answer, &pods, &inventory(), RESOURCE_NAME, at(100));
    assert_eq!(got.by_uid.keys().collect::<Vec<_>>(), vec!["new"]);
}

#[test]
fn recreated_pod_created_after_the_list_is_skipped() {
    // The kubelet still lists the old pg-0; the API already has its replacement, created after List.
    let answer = list(vec![listed(
        "db",
        "pg-0",
        vec![container("pg", RESOURCE_NAME, &[id(B, 0)])],
    )]);
    let pods = [known("db", "pg-0", "new", 120)];
    let got = join(&answer, &pods, &inventory(), RESOURCE_NAME, at(100));
    assert!(got.by_uid.is_empty());
    assert_eq!(got.skipped.len(), 1);
    assert_eq!(got.skipped[0].reason, SkipReason::CreatedAfterList);
    // The next round, after the new instance was admitted, trusts it.
    let got = join(&answer, &pods, &inventory(), RESOURCE_NAME, at(130));
    assert_eq!(
        got.by_uid["new"],
        vec![Grant {
            region: B.into(),
            bytes: GIB
        }]
    );
}

#[test]
fn two_live_instances_of_one_name_are_ambiguous() {
    let answer = list(vec![
        listed(
            "db",
            "pg-0",
            vec![container("pg", RESOURCE_NAME, &[id(B, 0)])],
        ),
        listed(
            "db",
            "pg-0",
            vec![container("pg", RESOURCE_NAME, &[id(B, 1)])],
        ),
    ]);
    let pods = [known("db", "pg-0", "new", 50)];
    let got = join(&answer, &pods, &inventory(), RESOURCE_NAME, at(100));
    assert!(got.by_uid.is_empty());
    let reasons: Vec<&str> = got.skipped.iter().map(|s| s.reason.reason()).collect();
    assert_eq!(reasons, vec!["Ambiguous", "Ambiguous"]);
}

#[test]
fn unknown_pods_and_bad_ids_are_skipped_with_reasons() {
    let answer = list(vec![
        listed(
            "a",
            "ghost",
            vec![container("c", RESOURCE_NAME, &[id(A, 0)])],
        ),
        listed("a", "bad", vec![container("c", RESOURCE_NAME, &[id(A, 7)])]),
    ]);
    let pods = [
        known("a", "bad", "uid-b", 1),
        known("other", "ghost", "uid-g", 1),
    ];
    let got = join(&answer, &pods, &inventory(), RESOURCE_NAME, at(100));
    assert!(got.by_uid.is_empty());
    let reasons: Vec<(&str, &str)> = got
        .skipped
        .iter()
        .map(|s| (s.name.as_str(), s.reason.reason()))
        .collect();
    assert_eq!(
        reasons,
        vec![("ghost", "NotKnown"), ("bad", "InvalidDevices")]
    );
}

#[test]
fn holders_find_pods_by_device_ids() {
    let answer = list(vec![
        listed(
            "ml",
            "train",
            vec![container("main", RESOURCE_NAME, &[id(A, 0), id(A, 1)])],
        ),
        listed(
            "ml",
            "infer",
            vec![container("main", RESOURCE_NAME, &[id(B, 0)])],
        ),
    ]);
    let found = holders(&answer, RESOURCE_NAME, &[id(A, 1)]);
    assert_eq!(found.into_iter().collect::<Vec<_>>(), vec![("ml", "train")]);
    assert!(holders(&answer, "other/res", &[id(A, 1)]).is_empty());
}

#[test]
fn a_grant_is_unknown_until_a_list_answers_and_while_the_pod_is_not_joined() {
    // No device plugin on the node: nobody can hold units, nothing is unknown.
    assert_eq!(Grants::default().unknown("ns", "a", "uid-a"), None);
    // Before the first answer every pod's grant is unknown, with why.
    let before = Grants::not_listed("ConnectPodResources");
    let why = before.unknown("ns", "a", "uid-a").expect("unknown");
    assert!(
        why.contains("has not answered") && why.contains("ConnectPodResources"),
        "{why}"
    );

    let pods = [known("ns", "a", "uid-a", 10), known("ns", "b", "uid-b", 10)];
    // `a` is joined; `b` holds a unit the inventory does not know (a region not read yet).
    let answer = list(vec![
        listed("ns", "a", vec![container("c", RESOURCE_NAME, &[id(A, 0)])]),
        listed(
            "ns",
            "b",
            vec![container("c", RESOURCE_NAME, &["gone-0".into()])],
        ),
    ]);
    let grants = join(&answer, &pods, &inventory(), RESOURCE_NAME, at(20));
    assert_eq!(grants.listing, Listing::Listed);
    assert_eq!(grants.unknown("ns", "a", "uid-a"), None);
    let why = grants.unknown("ns", "b", "uid-b").expect("unknown");
    assert!(
        why.contains("does not know") && why.contains("gone-0"),
        "{why}"
    );
    // A pod the answer does not list at all (a kubelet whose pod list is not synced yet).
    let why = grants.unknown("ns", "c", "uid-c").expect("unknown");
    assert_eq!(why, "PodResources lists no units for the pod");
}
