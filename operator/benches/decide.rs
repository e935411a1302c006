//! Scale bench for the operator's decision pass: 10,000 pods and 1,000 quotas in memory.
//!
//! Measures turning cached API objects into an `Observed` value (the snapshot), the first
//! `decide` (every status written), and the steady-state `decide` over unchanged input (which
//! must plan zero writes), then reports the process's peak RSS (`VmHWM`). Prints a Markdown table
//! for the README. `cargo bench -p kube-dmem-operator --bench decide` runs the full size; without
//! `--bench` (as under `cargo test --all-targets`) it runs a small smoke size.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::DynamicObject;
use kube_dmem_operator::decide::decide;
use kube_dmem_operator::decide::observed::Observed;
use kube_dmem_operator::decide::remediation::RemediationState;
use kube_dmem_operator::fixtures::{TestPod, TestQuota, node, ts};

/// Quotas per namespace: one per app label, plus a low-priority catch-all that conflicts.
const QUOTAS_PER_NS: usize = 10;
const PODS_PER_NS: usize = 100;
/// Timed repetitions; the median is reported.
const RUNS: usize = 15;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let namespaces = if full { 100 } else { 5 };
    let (quotas, pods) = build(namespaces);
    let nodes: Vec<_> = (0..(namespaces * PODS_PER_NS / 8).max(1))
        .map(|i| node(&format!("node-{i}"), Some(&regions(i))))
        .collect();

    let snapshot = || Observed::from_objects(quotas.iter(), pods.iter(), nodes.iter());
    let (t_snapshot, mut observed) = time(snapshot);
    let state = RemediationState::new(6);
    let now = ts(1_000_000);

    let (t_first, first) = time(|| decide(&observed, &state, now));
    for patch in &first.status_patches {
        if let Some(q) = observed.quotas.iter_mut().find(|q| q.key == patch.quota) {
            q.status = Some(patch.status.clone());
        }
    }
    let later = ts(1_000_060);
    let (t_steady, steady) = time(|| decide(&observed, &first.remediation, later));
    let peak = peak_rss_kib();

    println!(
        "| measure ({} pods, {} quotas, {} nodes) | median of {RUNS} | target |",
        pods.len(),
        quotas.len(),
        nodes.len()
    );
    println!("|---|---|---|");
    println!(
        "| snapshot: cached objects -> Observed | {} | - |",
        ms(t_snapshot)
    );
    println!(
        "| decide, first pass ({} status writes, {} evictions) | {} | <= 200 ms |",
        first.status_patches.len(),
        first.evictions.len(),
        ms(t_first)
    );
    println!(
        "| decide, unchanged input ({} status writes) | {} | <= 200 ms, 0 writes |",
        steady.status_patches.len(),
        ms(t_steady)
    );
    println!(
        "| peak RSS (VmHWM) | {} | <= 150 MiB |",
        peak.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
    );
    println!(
        "\nsecond decide with unchanged input: {} status writes ({})",
        steady.status_patches.len(),
        if steady.status_patches.is_empty() {
            "OK"
        } else {
            "FAIL"
        }
    );
    assert!(
        steady.status_patches.is_empty(),
        "unchanged input must plan zero writes"
    );
    assert_eq!(first.status_patches.len(), quotas.len());
}

/// Pods labelled `app=app-K` (K < 10), a third of them above `high` for an hour; quota `q-K`
/// selects `app-K` (even K evict), and `catch-all` selects every pod at priority -1, so it loses
/// to all the others and reports a conflict.
fn build(namespaces: usize) -> (Vec<DynamicObject>, Vec<Pod>) {
    let mut quotas = Vec::new();
    let mut pods = Vec::new();
    for n in 0..namespaces {
        let ns = format!("team-{n:03}");
        for k in 0..QUOTAS_PER_NS - 1 {
            let mut q = TestQuota::new(&ns, &format!("q-{k}"))
                .created(1000 + k as i64)
                .match_label("app", &format!("app-{k}"))
                .limit("drm/*/vram*", &[("max", "16Gi"), ("high", "12Gi")])
                .limit("drm/0000:03:00.0/vram0", &[("max", "8Gi"), ("low", "2Gi")]);
            if k % 2 == 0 {
                q = q.evict("5m", 2);
            }
            quotas.push(q.dynamic());
        }
        let catch_all = TestQuota::new(&ns, "catch-all")
            .priority(-1)
            .limit("*", &[("max", "4Gi")]);
        quotas.push(catch_all.dynamic());
        for i in 0..PODS_PER_NS {
            let mut pod = TestPod::new(&ns, &format!("pod-{i:03}"))
                .label("app", &format!("app-{}", i % (QUOTAS_PER_NS - 1)))
                .label("team", &ns)
                .limits_applied(i % 10 != 0);
            pod = if i % 3 == 0 {
                pod.pressure(true, "AboveHigh", 996_000 + i as i64)
            } else {
                pod.pressure(false, "Protected", 0)
            };
            let mut pod = pod.into_pod();
            pod.metadata.uid = Some(format!("{ns}-{i}"));
            pods.push(pod);
        }
    }
    (quotas, pods)
}

fn regions(node: usize) -> String {
    (0..8)
        .map(|g| {
            format!(
                "drm/0000:{:02x}:00.0/vram0={}",
                3 + g + (node % 2) * 8,
                80u64 << 30
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs `f` [`RUNS`] times; the median duration and the last result.
fn time<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::with_capacity(RUNS);
    let mut last = None;
    for _ in 0..RUNS {
        let start = Instant::now();
        let out = f();
        times.push(start.elapsed());
        last = Some(out);
    }
    times.sort();
    (times[RUNS / 2], last.expect("RUNS > 0"))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Peak resident set size in KiB, from `/proc/self/status` (Linux only).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
