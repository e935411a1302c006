//! The real-node benchmark (`tests/node/bench.sh`; not a CI stage): what the agent costs the node
//! and its pods, measured on the real kubelet, containerd, runc and kernel under TCG.
//!
//! 1. **Pod cgroup created -> limits verified**, over `KUBE_DMEM_NODE_BENCH_PODS` (50) governed pods
//!    created by one `kubectl apply`: an observer polls the kubelet's BestEffort cgroup directory every
//!    5 ms, stamps each new `pod<uid>` directory when it first sees it, and again when the
//!    directory's `dmem.max` holds the quota's max. The observer's resolution is its poll.
//! 2. **Agent CPU and RSS in steady state** with those pods running, over
//!    `KUBE_DMEM_NODE_BENCH_STEADY_S` (300) seconds: the agent pod cgroup's `cpu.stat` usage over
//!    wall time, and the agent process's `VmRSS`/`VmHWM`.
//! 3. **Container start latency with and without the agent**: `KUBE_DMEM_NODE_BENCH_STARTS` (10)
//!    pods started one at a time, from just before `kubectl apply` to the workload's first
//!    instruction (its own clock stamp; same kernel clock), first with the agent and NRI, then with
//!    the agent's DaemonSet moved off the node. The ratio is what the agent adds to a pod's start.
//!
//! The table goes to stderr and to `/run/results/bench.txt` (the results share).

use super::*;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const BEST_EFFORT: &str = "/sys/fs/cgroup/kubepods/besteffort";
const OBSERVER_POLL: Duration = Duration::from_millis(5);

/// Watches for new pod cgroups and times each from first sight to `dmem.max` = `want` on `region`.
struct Observer {
    stop: Arc<AtomicBool>,
    limited: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<Vec<Duration>>,
}

impl Observer {
    fn start(region: &'static str, want: String) -> Result<Self> {
        let dir = Path::new(BEST_EFFORT);
        let before: BTreeSet<String> = pod_dirs(dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let limited = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&limited);
        let thread = std::thread::spawn(move || {
            let mut pending: BTreeMap<String, Instant> = BTreeMap::new();
            let mut done = Vec::new();
            let mut seen = before;
            while !flag.load(Ordering::SeqCst) {
                for name in pod_dirs(dir).unwrap_or_default() {
                    if seen.insert(name.clone()) {
                        pending.insert(name, Instant::now());
                    }
                }
                pending.retain(|name, since| {
                    let limited =
                        dmem_value(&dir.join(name), "dmem.max", region).is_ok_and(|v| v == want);
                    if limited {
                        done.push(since.elapsed());
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    !limited
                });
                std::thread::sleep(OBSERVER_POLL);
            }
            done
        });
        Ok(Self {
            stop,
            limited,
            thread,
        })
    }

    fn limited(&self) -> usize {
        self.limited.load(Ordering::SeqCst)
    }

    fn finish(self) -> Vec<Duration> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap_or_default()
    }
}

fn pod_dirs(dir: &Path) -> Result<BTreeSet<String>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pod"))
        .collect())
}

/// `q`-quantile (nearest rank) of `samples`, in milliseconds.
fn quantile_ms(samples: &[Duration], q: f64) -> f64 {
    let mut v: Vec<Duration> = samples.to_vec();
    v.sort();
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1].as_secs_f64() * 1000.0
}

/// The agent pod's cgroup and its process (the agent, not the pause process).
fn agent_cgroup_and_pid(ctx: &TestCtx) -> Result<(PathBuf, u32)> {
    let pod = agent_pod(ctx)?;
    let cg = pod_cgroup(&uid_in(ctx, RELEASE_NAMESPACE, &pod)?)?;
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(&cg)? {
        let path = entry?.path();
        if let Ok(procs) = std::fs::read_to_string(path.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.parse::<u32>().ok()));
        }
    }
    let pid = pids
        .into_iter()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("kube-dmem"))
        })
        .with_context(|| format!("no agent process in {}", cg.display()))?;
    Ok((cg, pid))
}

fn uid_in(ctx: &TestCtx, ns: &str, pod: &str) -> Result<String> {
    ctx.kubectl
        .jsonpath(ns, &format!("pod/{pod}"), "{.metadata.uid}")
}

fn cpu_usec(cg: &Path) -> Result<u64> {
    let stat = std::fs::read_to_string(cg.join("cpu.stat"))?;
    stat.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .context("cpu.stat has no usage_usec")?
        .trim()
        .parse()
        .context("usage_usec")
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .with_context(|| format!("{name} in /proc/{pid}/status"))?
            .parse()
            .context(name.to_owned())
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Starts `n` pods one at a time; each one's latency from just before `kubectl apply` to its
/// first instruction.
fn start_latencies(ctx: &TestCtx, prefix: &str, n: usize) -> Result<Vec<Duration>> {
    let mut out = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}-{i}");
        let t0 = unix_ms();
        workload_pod(ctx, &name, "bench", &Gpu::Privileged, &["limits"])?;
        wait_phase(ctx, &name, "Succeeded")?;
        let s = steps(ctx, &name)?;
        let first = s
            .first()
            .and_then(|v| v["unix_ms"].as_u64())
            .with_context(|| format!("{name} printed no stamped step: {s:?}"))?;
        out.push(Duration::from_millis(
            u64::try_from(u128::from(first).saturating_sub(t0)).unwrap_or(u64::MAX),
        ));
        ctx.kubectl
            .ok(&["-n", &ctx.ns, "delete", "pod", &name, "--wait=true"])?;
    }
    Ok(out)
}

/// Keeps a table row and prints it at once, so a run cut short (TCG is slow) still shows what it
/// measured.
fn row(rows: &mut Vec<String>, row: String) {
    eprintln!("bench row: {row}");
    rows.push(row);
}

#[test]
#[ignore = "benchmark on the real node: tests/node/bench.sh"]
fn real_node_benchmark() {
    on_node("rn-bench", |ctx| {
        let pods: usize = env_or("KUBE_DMEM_NODE_BENCH_PODS", 50);
        let steady = Duration::from_secs(env_or("KUBE_DMEM_NODE_BENCH_STEADY_S", 300));
        let starts: usize = env_or("KUBE_DMEM_NODE_BENCH_STARTS", 10);
        quota(
            ctx,
            "q",
            "bench",
            &format!("[{{region: {VRAM1:?}, max: 1Gi}}]"),
        )?;
        let mut rows: Vec<String> = Vec::new();

        // 1. Pod cgroup created -> limits verified. The pods come in waves: under TCG a burst of
        //    50 kept containerd's sandbox and container starts past the kubelet's 2-minute CRI
        //    deadline (measured 2026-12-01), and the retries never caught up. Each pod's sample
        //    is its own cgroup's creation to its own verified limit, so waves do not change it.
        let wave: usize = env_or("KUBE_DMEM_NODE_BENCH_WAVE", 5).max(1);
        let observer = Observer::start(VRAM1, GI.to_string())?;
        let names: Vec<String> = (0..pods).map(|i| format!("p-{i}")).collect();
        let started = (|| -> Result<()> {
            for (n, chunk) in names.chunks(wave).enumerate() {
                let yaml: Vec<String> = chunk
                    .iter()
                    .map(|name| workload_pod_yaml(ctx, name, "bench", &Gpu::Privileged, &["hold"]))
                    .collect();
                ctx.kubectl.apply(&yaml.join("\n---\n"))?;
                let want = n * wave + chunk.len();
                eventually(&format!("{want} bench pods Running"), POD_START, || {
                    let list = ctx.kubectl.json(&["-n", &ctx.ns, "get", "pods"])?;
                    let running = list["items"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|p| p["status"]["phase"] == "Running")
                        .count();
                    Ok((running >= want).then_some(()))
                })?;
            }
            eventually("every bench pod cgroup limited", CONDITION, || {
                let n = observer.limited();
                Ok((n >= pods).then_some(()))
            })
        })();
        let limited = observer.finish();
        if let Err(err) = started {
            // TCG stalls before 50 running pods: keep what was measured up to there.
            row(
                &mut rows,
                format!(
                    "| pod cgroup created -> dmem.max verified, before the node stalled ({} pods) | p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms |",
                    limited.len(),
                    quantile_ms(&limited, 0.5),
                    quantile_ms(&limited, 0.99),
                    quantile_ms(&limited, 1.0)
                ),
            );
            return Err(err);
        }
        ensure!(
            limited.len() >= pods,
            "{} of {pods} pod cgroups seen limited",
            limited.len()
        );
        row(
            &mut rows,
            format!(
                "| pod cgroup created -> dmem.max verified ({} pods, observer polls every {} ms) | p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms |",
                limited.len(),
                OBSERVER_POLL.as_millis(),
                quantile_ms(&limited, 0.5),
                quantile_ms(&limited, 0.99),
                quantile_ms(&limited, 1.0)
            ),
        );

        // 2. Steady state with the pods running.
        let (cg, pid) = agent_cgroup_and_pid(ctx)?;
        let (cpu0, t0) = (cpu_usec(&cg)?, Instant::now());
        let mut rss_max = 0;
        while t0.elapsed() < steady {
            rss_max = rss_max.max(rss_kib(pid)?.0);
            std::thread::sleep(Duration::from_secs(5));
        }
        let cpu = (cpu_usec(&cg)? - cpu0) as f64 / 1e6 / t0.elapsed().as_secs_f64();
        let (rss, hwm) = rss_kib(pid)?;
        row(
            &mut rows,
            format!(
                "| agent CPU, {pods} pods, {} s steady state | {:.2} % of one core |",
                steady.as_secs(),
                cpu * 100.0
            ),
        );
        row(
            &mut rows,
            format!(
                "| agent RSS, same window | {:.1} MiB (max sampled {:.1} MiB, VmHWM {:.1} MiB) |",
                rss as f64 / 1024.0,
                rss_max.max(rss) as f64 / 1024.0,
                hwm as f64 / 1024.0
            ),
        );
        for i in 0..pods {
            ctx.kubectl.ok(&[
                "-n",
                &ctx.ns,
                "delete",
                "pod",
                &format!("p-{i}"),
                "--wait=false",
            ])?;
        }
        eventually("bench pods gone", POD_START, || {
            let left = ctx.kubectl.json(&["-n", &ctx.ns, "get", "pods"])?["items"]
                .as_array()
                .map_or(0, Vec::len);
            Ok((left == 0).then_some(()))
        })?;

        // 3. Start latency with the agent (NRI holds each creation until the limits are in
        //    force), then with the agent's DaemonSet moved off the node.
        let with = start_latencies(ctx, "with", starts)?;
        agent_off_node(ctx, &[])?;
        let without = start_latencies(ctx, "without", starts)?;
        helm_upgrade(ctx, &[])?;
        let (w50, o50) = (quantile_ms(&with, 0.5), quantile_ms(&without, 0.5));
        row(
            &mut rows,
            format!(
                "| container start (apply -> first instruction), {starts} pods one at a time: with the agent and NRI | p50 {w50:.0} ms, p99 {:.0} ms |",
                quantile_ms(&with, 0.99)
            ),
        );
        row(
            &mut rows,
            format!(
                "| the same without the agent | p50 {o50:.0} ms, p99 {:.0} ms; with/without = {:.3} at p50 |",
                quantile_ms(&without, 0.99),
                w50 / o50
            ),
        );

        let table = format!(
            "| Real node (TCG) | Result |\n|---|---|\n{}\n",
            rows.join("\n")
        );
        eprintln!("\n{table}");
        std::fs::write("/run/results/bench.txt", &table)?;
        Ok(())
    });
}
