//! The agent's steady-state round timed on the real kernel and on the in-process simulator, in the
//! same process (`tests/vm/bench.sh` runs it in the VM and on the host): a full node of 110 pod
//! cgroups (the kubelet's default pod limit, half best-effort, half burstable, cgroupfs driver)
//! and two regions, every pod holding VRAM in R0 and every third in R1, two quotas. After the
//! rounds that enable dmem and write the limits, `ROUNDS` rounds are timed one by one; each must
//! write nothing. Prints one `BENCH` line per backend for the script to tabulate.
//!
//! On the kernel only (the in-process simulator has no inotify), new pods then arrive one at a
//! time on that full node: `mkdir` of the pod cgroup -> the inotify event -> the round that gives
//! it its limits, written and read back. Timed with a round of the new pod alone (`Scope::Pods`,
//! what the agent runs on a new cgroup) and with a round of every pod (`Scope::Node`, what it ran
//! before), alternating; one `NEWPOD` line each.

use std::time::{Duration, Instant};

use kube_dmem_crds::select::{PodFacts, QuotaFacts};
use kube_dmem_device_plugin::round::{
    LimitsOutcome, Memory, RoundInputs, Scope, run_round_with, run_scoped_round,
};
use kube_dmem_sim::Profile;

use super::agent::{cfg, pod_facts, quota_team};
use super::{R0, R1, RealSide, S, Side, SimSide};

const PODS: usize = 110;
/// New pods timed with each scope.
const NEW_POD_SAMPLES: usize = 50;

fn uid(i: usize) -> String {
    format!("{i:08x}-0000-4000-8000-{i:012x}")
}

/// The node: kubepods tree, 110 pods with VRAM in use; the pods' facts and the quotas.
fn setup(s: &mut dyn Side) -> Result<(Vec<PodFacts>, Vec<QuotaFacts>), String> {
    for d in ["/kubepods", "/kubepods/besteffort", "/kubepods/burstable"] {
        s.mkdir(d).map_err(|e| format!("mkdir {d}: errno {e}"))?;
    }
    let mut pods = Vec::new();
    let mut paths = Vec::new();
    for i in 0..PODS {
        let qos = if i % 2 == 0 {
            "besteffort"
        } else {
            "burstable"
        };
        let path = format!("/kubepods/{qos}/pod{}", uid(i));
        s.mkdir(&path)
            .map_err(|e| format!("mkdir {path}: errno {e}"))?;
        let mut facts = pod_facts(&format!("p{i}"), &uid(i), "bench");
        facts
            .labels
            .insert("team".to_owned(), format!("t{}", i % 2));
        pods.push(facts);
        paths.push(path);
    }
    let quotas = vec![
        quota_team(
            "t0",
            serde_json::json!([
                {"region": R0, "max": "2Gi", "high": "1Gi"},
                {"region": R1, "max": "4Gi"}
            ]),
        ),
        quota_team(
            "t1",
            serde_json::json!([
                {"region": R0, "max": "1Gi", "min": "16Mi"},
                {"region": R1, "high": "512Mi"}
            ]),
        ),
    ];
    // A first round enables dmem down to the pods, so their charges land in their own cgroups.
    let mut memory = Memory::default();
    run_round_with(
        s.fs(),
        &cfg(),
        RoundInputs::valid(&pods, &quotas),
        &mut memory,
    )
    .map_err(|e| format!("first round: {e}"))?;
    for (i, path) in paths.iter().enumerate() {
        s.alloc(path, R0, "+64M")
            .map_err(|e| format!("alloc in {path}: errno {e}"))?;
        if i % 3 == 0 {
            s.alloc(path, R1, "+32M")
                .map_err(|e| format!("alloc in {path}: errno {e}"))?;
        }
    }
    Ok((pods, quotas))
}

/// Median, 99th percentile and mean of `times`, in microseconds.
fn stats(times: &mut [Duration]) -> (f64, f64, f64) {
    times.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let n = times.len();
    let median = if n % 2 == 1 {
        us(times[n / 2])
    } else {
        (us(times[n / 2 - 1]) + us(times[n / 2])) / 2.0
    };
    let p99 = us(times[(n * 99).div_ceil(100).max(1) - 1]);
    let mean = times.iter().map(|d| us(*d)).sum::<f64>() / n as f64;
    (median, p99, mean)
}

/// Steady-state rounds on `s`: warms up until a round writes nothing, then times `rounds` rounds.
fn measure(s: &mut dyn Side, name: &str, rounds: usize) -> Result<(), String> {
    let (pods, quotas) = setup(s)?;
    let mut memory = Memory::default();
    let mut round = |s: &mut dyn Side| {
        run_round_with(
            s.fs(),
            &cfg(),
            RoundInputs::valid(&pods, &quotas),
            &mut memory,
        )
        .map_err(|e| format!("{name}: round failed: {e}"))
    };
    let mut warmup = 0;
    loop {
        warmup += 1;
        let report = round(s)?;
        if report.writes == 0 {
            let governed = report.pods.iter().filter(|p| p.governing.is_some()).count();
            if governed != PODS {
                return Err(format!("{name}: {governed} of {PODS} pods governed"));
            }
            break;
        }
        if warmup == 5 {
            return Err(format!(
                "{name}: still {} writes after {warmup} rounds",
                report.writes
            ));
        }
    }
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let report = round(s)?;
        times.push(t.elapsed());
        if report.writes != 0 {
            return Err(format!(
                "{name}: a steady-state round wrote {}",
                report.writes
            ));
        }
    }
    let (median, p99, mean) = stats(&mut times);
    println!(
        "bench [{name}]: {PODS} pods x 2 regions, {rounds} steady rounds (after {warmup} warm-up): \
         median {median:.0} us, p99 {p99:.0} us, mean {mean:.0} us"
    );
    println!("BENCH\t{name}\t{rounds}\t{median:.1}\t{p99:.1}\t{mean:.1}");
    Ok(())
}

/// New pods on the full node `pods` (see the module doc): `samples` with each scope.
fn new_pods(
    s: &mut dyn Side,
    name: &str,
    mut pods: Vec<PodFacts>,
    quotas: &[QuotaFacts],
    samples: usize,
) -> Result<(), String> {
    const PARENT: &str = "/kubepods/besteffort";
    let mut inotify = inotify::Inotify::init().map_err(|e| format!("inotify: {e}"))?;
    inotify
        .watches()
        .add(super::host_dir(PARENT), inotify::WatchMask::CREATE)
        .map_err(|e| format!("inotify watch on {PARENT}: {e}"))?;
    let mut memory = Memory::default();
    run_round_with(
        s.fs(),
        &cfg(),
        RoundInputs::valid(&pods, quotas),
        &mut memory,
    )
    .map_err(|e| format!("{name}: round failed: {e}"))?;
    let mut buf = [0u8; 4096];
    let (mut alone, mut whole) = (Vec::new(), Vec::new());
    for k in 0..2 * samples {
        let i = PODS + k;
        let mut facts = pod_facts(&format!("p{i}"), &uid(i), "bench");
        facts.labels.insert("team".to_owned(), "t0".to_owned());
        let scope = if k % 2 == 0 { Scope::Pods } else { Scope::Node };
        let path = format!("{PARENT}/pod{}", uid(i));
        let t0 = Instant::now();
        s.mkdir(&path)
            .map_err(|e| format!("mkdir {path}: errno {e}"))?;
        // Blocks until the kernel reports the new directory.
        inotify
            .read_events_blocking(&mut buf)
            .map_err(|e| format!("inotify read: {e}"))?;
        pods.push(facts);
        let covered = match scope {
            Scope::Pods => &pods[pods.len() - 1..],
            Scope::Node => &pods[..],
        };
        let report = run_scoped_round(
            s.fs(),
            &cfg(),
            RoundInputs::valid(covered, quotas),
            &mut memory,
            scope,
        )
        .map_err(|e| format!("{name}: round failed: {e}"))?;
        let elapsed = t0.elapsed();
        let outcome = (report.pods.iter())
            .find(|p| p.facts.uid == uid(i))
            .map(|p| p.outcome.clone());
        if outcome != Some(LimitsOutcome::Applied) {
            return Err(format!("{name}: new pod p{i}: {outcome:?}"));
        }
        match scope {
            Scope::Pods => alone.push(elapsed),
            Scope::Node => whole.push(elapsed),
        }
    }
    for (what, times) in [("pod alone", &mut alone), ("every pod", &mut whole)] {
        let (median, p99, mean) = stats(times);
        println!(
            "bench [{name}]: new pod cgroup -> limits verified, round of {what}: \
             median {median:.0} us, p99 {p99:.0} us, mean {mean:.0} us ({samples} samples)"
        );
        println!("NEWPOD\t{name}\t{what}\t{median:.1}\t{p99:.1}\t{mean:.1}");
    }
    Ok(())
}

/// `--bench ROUNDS`: the kernel (inside the VM only) and the simulator of the same profile.
pub fn run(rounds: usize, series: Option<&str>) -> Result<(), String> {
    let profile = match series {
        Some("7.2") => Profile::Legacy,
        _ => Profile::Current,
    };
    if let Some(series) = series {
        let name = format!("kernel {series}");
        let mut real = RealSide::new(S, true)?;
        measure(&mut real, &name, rounds)?;
        drop(real);
        let mut real = RealSide::new(S, true)?;
        let (pods, quotas) = setup(&mut real)?;
        new_pods(&mut real, &name, pods, &quotas, NEW_POD_SAMPLES)?;
    }
    let mut sim = SimSide::new(profile, S, true);
    let where_ = if series.is_some() {
        "in the VM"
    } else {
        "on the host"
    };
    measure(&mut sim, &format!("simulator {profile:?} {where_}"), rounds)
}
