//! How long one enforcement round takes for a full node: 110 pods (the kubelet's default pod
//! limit) × 4 regions. Measured twice: the pure decision alone, and the whole steady-state round
//! (scan for pod cgroups, read and parse every dmem file, resolve limits, read usage for pressure,
//! check the ancestors' protection)
//! through the `CgroupFs` interface against the in-process simulator.
//!
//! Run: `cargo bench -p kube-dmem-device-plugin --bench node_round`. Target: under 1 ms per round.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::Pod;
use kube_dmem_crds::DmemQuota;
use kube_dmem_crds::limits::HighSupport;
use kube_dmem_crds::select::{PodFacts, quota_facts};
use kube_dmem_device_plugin::cgroup::{CgroupPath, SimCgroups};
use kube_dmem_device_plugin::decide::limits::{ObservedPod, plan};
use kube_dmem_device_plugin::decide::pressure::PressureThresholds;
use kube_dmem_device_plugin::round::{RoundConfig, run_round};
use kube_dmem_device_plugin::standalone::sim_node::SimNode;
use kube_dmem_sim::{Profile, SimConfig};

const PODS: usize = 110;
const REGIONS: [&str; 4] = [
    "drm/0000:03:00.0/vram0",
    "drm/0000:03:00.0/vram1",
    "drm/0000:0a:00.0/vram",
    "drm/0000:41:00.0/vram",
];

fn quotas() -> Vec<DmemQuota> {
    (0..4)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "kube-dmem.io/v1alpha1", "kind": "DmemQuota",
                "metadata": {"name": format!("q{i}"), "namespace": "bench",
                             "creationTimestamp": "2026-11-01T10:00:00Z"},
                "spec": {"selector": {"matchLabels": {"team": format!("t{i}")}}, "priority": i,
                         "limits": [{"region": "drm/*/vram*", "max": "12Gi", "high": "8Gi", "low": "1Gi"},
                                    {"region": REGIONS[i], "max": "6Gi"}]},
            }))
            .expect("bench quota")
        })
        .collect()
}

fn pods() -> Vec<Pod> {
    (0..PODS)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("p{i}"), "namespace": "bench",
                             "uid": format!("00000000-0000-4000-8000-{i:012}"),
                             "labels": {"team": format!("t{}", i % 5)},
                             "annotations": {"sim.kube-dmem.io/usage": format!("{}=256Mi", REGIONS[i % 4])}},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            }))
            .expect("bench pod")
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let pods = pods();
    let quota_objects = quotas();
    let (quotas, _) = quota_facts(quota_objects.iter());
    let facts: Vec<PodFacts> = pods
        .iter()
        .map(|p| PodFacts::from_pod(p, Vec::new()))
        .collect();
    let regions: Vec<(String, u64)> = REGIONS
        .iter()
        .map(|r| ((*r).to_owned(), 64 << 30))
        .collect();
    let mut node = SimNode::new(
        SimConfig {
            profile: Profile::Current,
            ..SimConfig::default()
        },
        &regions,
    )
    .expect("sim node");
    node.sync_pods(&pods).expect("pod cgroups");
    let fs = SimCgroups::from_shared(node.kernel());
    let cfg = RoundConfig {
        scan_root: CgroupPath::root(),
        high: HighSupport::Emulated,
        thresholds: PressureThresholds::default(),
    };
    run_round(&fs, &cfg, &facts, &quotas).expect("first round applies");
    node.run_workloads(&pods).expect("workloads");
    // The workloads' usage moves the ancestors' protection once; after that the node is steady.
    run_round(&fs, &cfg, &facts, &quotas).expect("protection follows usage");
    let steady = run_round(&fs, &cfg, &facts, &quotas).expect("steady round");
    assert_eq!(
        steady.writes, 0,
        "the measured round must be the steady state"
    );

    let observed: Vec<ObservedPod> = facts
        .iter()
        .map(|f| ObservedPod {
            facts: f.clone(),
            cgroup: None,
            in_force: Default::default(),
        })
        .collect();
    c.bench_function("decide: 110 pods x 4 regions", |b| {
        b.iter(|| {
            plan(
                black_box(&observed),
                black_box(&quotas),
                &REGIONS,
                HighSupport::Emulated,
            )
        })
    });
    c.bench_function(
        "round: 110 pods x 4 regions (read, parse, resolve, pressure)",
        |b| {
            b.iter(|| {
                run_round(black_box(&fs), &cfg, black_box(&facts), black_box(&quotas))
                    .expect("round")
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
