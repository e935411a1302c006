//! The real node: the chart installed with helm on a one-node cluster in the node VM
//! (`tests/node/e2e.sh`), with the real kubelet, containerd 2 + runc, the dmem kernel and the test
//! GPU driver (`tests/vm/dmemtest`). Every case asserts what the kernel and the kubelet did: the pod
//! cgroups' `dmem.*` files as the node's `/sys/fs/cgroup` shows them, the driver's buffer record
//! (`/dev/dmemtest`), and what the workload (`tests/workload`) was told by the kernel from inside
//! its pod. Runs only inside the VM (`KUBE_DMEM_REAL_NODE=1`); one case at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use kube_dmem_crds::{
    POD_CONDITION_VRAM_LIMITS_APPLIED, POD_CONDITION_VRAM_PRESSURE, REASON_APPLIED,
};
use kube_dmem_e2e::ctx::{TestCtx, run};
use kube_dmem_e2e::env::{AGENT_POD_SELECTOR, RELEASE, RELEASE_NAMESPACE};
use kube_dmem_e2e::fixtures::{condition, dmem_bytes, get_pod};
use kube_dmem_e2e::poll::{Sampler, eventually};

#[path = "realnode/bench.rs"]
mod bench;
use serde_json::Value;

/// The test driver's regions (its default `regions` parameter) and what the node calls them.
const VRAM0: &str = "drm/0000:03:00.0/vram0";
const VRAM1: &str = "drm/0000:0a:00.0/vram";
const NODE: &str = "node0";
const GI: u64 = 1 << 30;
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Pod start under TCG: sandbox, CNI, image unpack and runc, 5-10x slower than on hardware.
const POD_START: Duration = Duration::from_secs(240);
/// The agent's pressure poll is 1 s, 100 ms near a threshold; then an API write.
const CONDITION: Duration = Duration::from_secs(60);

fn real_node() -> bool {
    std::env::var_os("KUBE_DMEM_REAL_NODE").is_some()
}

/// Runs a case only on the real node; elsewhere the binary fails once with how to run it.
fn on_node(test: &str, body: impl FnOnce(&TestCtx) -> Result<()>) {
    if !real_node() {
        static TOLD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !TOLD.swap(true, std::sync::atomic::Ordering::SeqCst) {
            panic!(
                "the realnode suite runs inside the node VM: tests/node/e2e.sh builds the node, \
                 the cluster and the chart, and runs it there"
            );
        }
        return;
    }
    run(test, body);
}

// --- the node's kernel files --------------------------------------------------------------------

/// The pod cgroup of `uid` (cgroupfs driver: `kubepods[/<qos>]/pod<uid>`).
fn pod_cgroup(uid: &str) -> Result<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    ["kubepods", "kubepods/burstable", "kubepods/besteffort"]
        .iter()
        .map(|dir| root.join(dir).join(format!("pod{uid}")))
        .find(|p| p.is_dir())
        .with_context(|| format!("no pod cgroup for {uid}"))
}

/// `region value` lines of a dmem file.
fn read_dmem(cgroup: &Path, file: &str) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(cgroup.join(file))
        .with_context(|| format!("read {}", cgroup.join(file).display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(r, v)| (r.to_owned(), v.trim().to_owned()))
        .collect())
}

fn dmem_value(cgroup: &Path, file: &str, region: &str) -> Result<String> {
    read_dmem(cgroup, file)?
        .remove(region)
        .with_context(|| format!("{file} of {} has no {region}", cgroup.display()))
}

/// One buffer of the test driver's record.
#[derive(Debug)]
struct Buffer {
    id: u64,
    region: String,
    bytes: u64,
    owner: String,
    resident: bool,
}

/// The driver's buffers (`/dev/dmemtest`: `buffer ID REGION BYTES owner CG charged CG STATE`).
fn driver_buffers() -> Result<Vec<Buffer>> {
    let text = std::fs::read_to_string("/dev/dmemtest").context("read /dev/dmemtest")?;
    text.lines()
        .filter(|l| l.starts_with("buffer "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            ensure!(f.len() == 9, "unexpected driver line {l:?}");
            Ok(Buffer {
                id: f[1].parse()?,
                region: f[2].to_owned(),
                bytes: f[3].parse()?,
                owner: f[5].to_owned(),
                resident: f[8] == "resident",
            })
        })
        .collect()
}

/// Bytes of `region` resident on the device (every cgroup's).
fn resident(region: &str) -> Result<u64> {
    Ok(driver_buffers()?
        .iter()
        .filter(|b| b.region == region && b.resident)
        .map(|b| b.bytes)
        .sum())
}

/// Waits until `region` holds `bytes` again (what it held before a case: the case's pods freed
/// theirs on SIGTERM). A case compares with its own start, so one that failed half-way cannot
/// fail the cases after it.
fn wait_resident(region: &str, bytes: u64) -> Result<()> {
    eventually(
        &format!("{region} back to {bytes} bytes"),
        POD_START,
        || {
            let now = resident(region)?;
            if now == bytes {
                Ok(Some(()))
            } else {
                bail!("{now} bytes resident")
            }
        },
    )
}

// --- pods and the workload ----------------------------------------------------------------------

/// How a workload pod gets at the GPU.
enum Gpu {
    /// `units` of `kube-dmem.io/vram` from our device plugin (its device nodes, no privileges).
    Units(u32),
    /// Another plugin's GPU: privileged (all device nodes), governed by a quota only.
    Privileged,
    /// A ResourceClaim from this template (our DRA driver: device nodes through CDI).
    Claim(&'static str),
}

/// A pod running the workload with `steps`; the node's cgroup tree is mounted read-only at
/// `/host-cgroup` and the pod UID is in `POD_UID` so `limits` can read the pod cgroup.
fn workload_pod(ctx: &TestCtx, name: &str, app: &str, gpu: &Gpu, steps: &[&str]) -> Result<()> {
    ctx.kubectl
        .apply(&workload_pod_yaml(ctx, name, app, gpu, steps))?;
    Ok(())
}

/// The manifest of [`workload_pod`]; several joined with `---` go in one `kubectl apply` (each
/// kubectl call costs seconds under TCG).
fn workload_pod_yaml(ctx: &TestCtx, name: &str, app: &str, gpu: &Gpu, steps: &[&str]) -> String {
    let args: Vec<String> = steps.iter().map(|s| format!("{s:?}")).collect();
    let (resources, security) = match gpu {
        Gpu::Units(n) => (
            format!("resources: {{limits: {{kube-dmem.io/vram: {n}}}}}"),
            "{}".to_owned(),
        ),
        Gpu::Privileged => ("resources: {}".to_owned(), "{privileged: true}".to_owned()),
        Gpu::Claim(_) => (
            "resources: {claims: [{name: vram}]}".to_owned(),
            "{}".to_owned(),
        ),
    };
    let claims = match gpu {
        Gpu::Claim(template) => {
            format!("  resourceClaims: [{{name: vram, resourceClaimTemplateName: {template}}}]")
        }
        _ => String::new(),
    };
    let ns = &ctx.ns;
    [
        "apiVersion: v1".to_owned(),
        "kind: Pod".to_owned(),
        format!("metadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}"),
        "spec:".to_owned(),
        "  restartPolicy: Never".to_owned(),
        "  terminationGracePeriodSeconds: 30".to_owned(),
        "  dnsPolicy: Default".to_owned(),
        "  containers:".to_owned(),
        "  - name: w".to_owned(),
        "    image: localhost/kube-dmem/workload:dev".to_owned(),
        "    imagePullPolicy: Never".to_owned(),
        format!("    args: [{}]", args.join(", ")),
        format!("    {resources}"),
        format!("    securityContext: {security}"),
        "    env: [{name: POD_UID, valueFrom: {fieldRef: {fieldPath: metadata.uid}}}]".to_owned(),
        "    volumeMounts: [{name: cg, mountPath: /host-cgroup, readOnly: true}]".to_owned(),
        "  volumes: [{name: cg, hostPath: {path: /sys/fs/cgroup}}]".to_owned(),
        claims,
    ]
    .join("\n")
}

fn pod_phase(ctx: &TestCtx, name: &str) -> Result<String> {
    let pod = get_pod(ctx, name)?.context("pod gone")?;
    Ok(pod["status"]["phase"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// Waits for `phase` (or a later one the caller accepts), failing early on `Failed`.
fn wait_phase(ctx: &TestCtx, name: &str, phase: &str) -> Result<Value> {
    eventually(&format!("pod {name} {phase}"), POD_START, || {
        let pod = get_pod(ctx, name)?.context("pod gone")?;
        let now = pod["status"]["phase"].as_str().unwrap_or_default();
        if now == phase {
            return Ok(Some(pod));
        }
        if now == "Failed" && phase != "Failed" {
            let logs = ctx
                .kubectl
                .ok(&["-n", &ctx.ns, "logs", name])
                .unwrap_or_default();
            return Err(anyhow::anyhow!("pod {name} Failed; logs:\n{logs}"));
        }
        bail!("phase {now:?}")
    })
}

/// The workload's steps as it printed them (`kubectl logs`).
fn steps(ctx: &TestCtx, name: &str) -> Result<Vec<Value>> {
    let out = ctx.kubectl.ok(&["-n", &ctx.ns, "logs", name])?;
    parse_steps(&out)
}

fn parse_steps(out: &str) -> Result<Vec<Value>> {
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).with_context(|| format!("workload line {l:?}")))
        .collect()
}

/// Waits until the workload has printed `n` steps.
fn wait_steps(ctx: &TestCtx, name: &str, n: usize) -> Result<Vec<Value>> {
    eventually(&format!("{n} steps of {name}"), POD_START, || {
        let s = steps(ctx, name)?;
        Ok((s.len() >= n).then_some(s))
    })
}

/// Runs the workload once more inside the running pod (a new process, same cgroups).
fn exec(ctx: &TestCtx, name: &str, steps: &[&str]) -> Result<Vec<Value>> {
    let mut args = vec!["-n", ctx.ns.as_str(), "exec", name, "--", "/workload"];
    args.extend_from_slice(steps);
    parse_steps(&ctx.kubectl.ok(&args)?)
}

/// An `alloc`/`free` step's kernel answer: `Ok` or the errno name.
fn answer(step: &Value) -> String {
    if step["ok"].as_bool() == Some(true) {
        "ok".into()
    } else {
        step["error"].as_str().unwrap_or("?").to_owned()
    }
}

fn cond(ctx: &TestCtx, pod: &str, ty: &str) -> Result<Option<(String, String)>> {
    let pod = get_pod(ctx, pod)?.unwrap_or_default();
    Ok(condition(&pod, ty).map(|c| {
        (
            c["status"].as_str().unwrap_or_default().to_owned(),
            c["reason"].as_str().unwrap_or_default().to_owned(),
        )
    }))
}

fn wait_cond(ctx: &TestCtx, pod: &str, ty: &str, status: &str, reason: &str) -> Result<()> {
    eventually(&format!("{pod} {ty}={status}/{reason}"), CONDITION, || {
        let now = cond(ctx, pod, ty)?;
        if now
            .as_ref()
            .is_some_and(|(s, r)| s == status && r == reason)
        {
            Ok(Some(()))
        } else {
            bail!("{ty} is {now:?}")
        }
    })
}

fn quota(ctx: &TestCtx, name: &str, app: &str, limits: &str) -> Result<()> {
    ctx.kubectl.apply(&format!(
        "apiVersion: kube-dmem.io/v1alpha1\nkind: DmemQuota\nmetadata: {{name: {name}, namespace: {}}}\n\
         spec:\n  selector: {{matchLabels: {{app: {app}}}}}\n  limits: {limits}\n",
        ctx.ns
    ))?;
    Ok(())
}

fn wait_dmem(cgroup: &Path, file: &str, region: &str, want: &str, within: Duration) -> Result<()> {
    eventually(&format!("{file} {region} = {want}"), within, || {
        let now = dmem_value(cgroup, file, region)?;
        if now == want {
            Ok(Some(()))
        } else {
            bail!("{file} is {now}")
        }
    })
}

// --- node-level helpers -------------------------------------------------------------------------

fn node(ctx: &TestCtx) -> Result<Value> {
    ctx.kubectl.json(&["get", "node", NODE])
}

fn sh(script: &str) -> Result<String> {
    let out = Command::new("bash").args(["-c", script]).output()?;
    ensure!(
        out.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The agent pod's name (the DaemonSet has one on the node).
fn agent_pod(ctx: &TestCtx) -> Result<String> {
    let list = ctx.kubectl.json(&[
        "-n",
        RELEASE_NAMESPACE,
        "get",
        "pods",
        "-l",
        AGENT_POD_SELECTOR,
    ])?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let live: Vec<&Value> = items
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    ensure!(live.len() == 1, "{} live agent pods", live.len());
    Ok(live[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// Moves the agent's DaemonSet off the node (a node selector nothing matches, through the chart so
/// that no other field manager owns part of the DaemonSet) and waits until its pod is gone; a
/// later `helm_upgrade` without it brings the agent back. A `kubectl patch` here made the next
/// `helm upgrade` fail on a server-side apply conflict over `nodeSelector`.
fn agent_off_node(ctx: &TestCtx, set: &[&str]) -> Result<()> {
    let mut values = vec![r"devicePlugin.nodeSelector.kube-dmem\.io/e2e-nowhere=x"];
    values.extend_from_slice(set);
    helm_upgrade(ctx, &values)?;
    eventually("no agent pod on the node", POD_START, || {
        Ok(agent_pod(ctx)
            .is_err_and(|e| e.to_string().starts_with("0 live"))
            .then_some(()))
    })
}

fn agent_ready(ctx: &TestCtx) -> Result<()> {
    ctx.kubectl.ok(&[
        "-n",
        RELEASE_NAMESPACE,
        "rollout",
        "status",
        &format!("daemonset/{RELEASE}-device-plugin"),
        "--timeout=600s",
    ])?;
    Ok(())
}

/// `dmem.capacity` of the node's root: region -> bytes.
fn capacity() -> Result<BTreeMap<String, u64>> {
    read_dmem(Path::new(CGROUP_ROOT), "dmem.capacity")?
        .into_iter()
        .map(|(r, v)| Ok((r, v.parse()?)))
        .collect()
}

// --- the cases ----------------------------------------------------------------------------------

#[test]
fn the_device_plugin_registers_and_the_node_offers_the_kernels_capacity() {
    on_node("rn-register", |ctx| {
        let cap = capacity()?;
        ensure!(cap.len() == 2, "dmem.capacity lists {cap:?}");
        // One unit per whole GiB of each region (rounded down per region).
        let units: u64 = cap.values().map(|b| b / GI).sum();
        eventually("the node's kube-dmem.io/vram capacity", POD_START, || {
            let n = node(ctx)?;
            let c = n["status"]["capacity"]["kube-dmem.io/vram"]
                .as_str()
                .unwrap_or_default();
            let a = n["status"]["allocatable"]["kube-dmem.io/vram"]
                .as_str()
                .unwrap_or_default();
            if c == units.to_string() && a == units.to_string() {
                Ok(Some(()))
            } else {
                bail!("capacity {c:?}, allocatable {a:?}, want {units}")
            }
        })
    });
}

#[test]
fn a_pod_with_units_is_held_to_them_from_its_first_instruction() {
    on_node("rn-units", |ctx| {
        let before: Vec<u64> = [VRAM0, VRAM1]
            .iter()
            .map(|r| resident(r))
            .collect::<Result<_>>()?;
        // First instruction: read the pod cgroup's limits; then allocate one byte past the grant
        // (the kernel must refuse), then exactly the grant (it must fit).
        workload_pod(
            ctx,
            "units",
            "units",
            &Gpu::Units(2),
            &[
                "limits",
                "alloc",
                "@",
                "2147483649",
                "alloc",
                "@",
                "2G",
                "free",
                "@",
                "2G",
                "hold",
            ],
        )?;
        wait_phase(ctx, "units", "Running")?;
        let s = wait_steps(ctx, "units", 5)?;
        let region = s[1]["region"].as_str().unwrap_or_default().to_owned();
        ensure!(
            region == VRAM0 || region == VRAM1,
            "granted region {region:?}"
        );
        let max = s[0]["dmem.max"].as_array().cloned().unwrap_or_default();
        let line = format!("{region} {}", 2 * GI);
        ensure!(
            max.iter().any(|l| l.as_str() == Some(line.as_str())),
            "at start the pod cgroup's dmem.max was {max:?}, want the line {line:?}"
        );
        ensure!(
            answer(&s[1]) == "EAGAIN",
            "one byte past the grant: {}",
            s[1]
        );
        ensure!(answer(&s[2]) == "ok", "the grant itself: {}", s[2]);
        // The device reached the container through Allocate's DeviceSpecs (the pod is not
        // privileged: without them it has no GPU device at all).
        let dev = s[1]["device"].as_str().unwrap_or_default();
        ensure!(
            dev.starts_with("/dev/dri/renderD"),
            "the workload used {dev:?}"
        );
        // The agent joined the pod's grant from PodResources and says so.
        wait_cond(
            ctx,
            "units",
            POD_CONDITION_VRAM_LIMITS_APPLIED,
            "True",
            REASON_APPLIED,
        )?;
        // Deleted, the pod frees its VRAM, and no Warning is left behind on the way out.
        ctx.kubectl.ok(&["-n", &ctx.ns, "delete", "pod", "units"])?;
        wait_resident(&region, before[usize::from(region == VRAM1)])?;
        let warnings = ctx.kubectl.ok(&[
            "-n",
            &ctx.ns,
            "get",
            "events",
            "--field-selector",
            "type=Warning",
            "-o",
            "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
        ])?;
        ensure!(
            !warnings.lines().any(|r| r.starts_with("CgroupNotFound")),
            "warnings: {warnings}"
        );
        Ok(())
    });
}

#[test]
fn a_quota_governs_pods_without_units_from_their_first_instruction() {
    on_node("rn-quota", |ctx| {
        let before = resident(VRAM1)?;
        quota(
            ctx,
            "q",
            "gov",
            &format!("[{{region: {VRAM1:?}, max: 3Gi, high: 2Gi}}]"),
        )?;
        // No units: the GPU comes from elsewhere (privileged here). With NRI the limits are in the
        // pod cgroup before the container's first instruction, which allocates past max.
        workload_pod(
            ctx,
            "gov",
            "gov",
            &Gpu::Privileged,
            &[
                "limits",
                "alloc",
                VRAM1,
                "3221225473",
                "alloc",
                VRAM1,
                "1G",
                "hold",
            ],
        )?;
        wait_phase(ctx, "gov", "Running")?;
        let s = wait_steps(ctx, "gov", 4)?;
        ensure!(
            answer(&s[1]) == "EAGAIN",
            "first allocation past max: {}",
            s[1]
        );
        ensure!(answer(&s[2]) == "ok", "1G under max: {}", s[2]);
        let uid = s[0]["cgroup"]
            .as_str()
            .unwrap_or_default()
            .rsplit("/pod")
            .next();
        let cg = pod_cgroup(uid.context("no pod uid in the cgroup path")?)?;
        ensure!(dmem_value(&cg, "dmem.max", VRAM1)? == (3 * GI).to_string());
        wait_cond(
            ctx,
            "gov",
            POD_CONDITION_VRAM_LIMITS_APPLIED,
            "True",
            REASON_APPLIED,
        )?;
        wait_cond(
            ctx,
            "gov",
            POD_CONDITION_VRAM_PRESSURE,
            "False",
            "Unprotected",
        )
        .or_else(|_| {
            wait_cond(
                ctx,
                "gov",
                POD_CONDITION_VRAM_PRESSURE,
                "False",
                "Protected",
            )
        })?;

        // Above high: the condition says so.
        let more = exec(ctx, "gov", &["alloc", VRAM1, "1536M"])?;
        ensure!(answer(&more[0]) == "ok", "1.5G more: {}", more[0]);
        wait_cond(ctx, "gov", POD_CONDITION_VRAM_PRESSURE, "True", "AboveHigh")?;
        let current: u64 = dmem_value(&cg, "dmem.current", VRAM1)?.parse()?;
        ensure!(current == 2 * GI + GI / 2, "dmem.current {current}");

        // The quota is edited: the kernel follows. Then deleted: the limit goes.
        quota(
            ctx,
            "q",
            "gov",
            &format!("[{{region: {VRAM1:?}, max: 5Gi, high: 4Gi}}]"),
        )?;
        wait_dmem(&cg, "dmem.max", VRAM1, &(5 * GI).to_string(), CONDITION)?;
        wait_cond(
            ctx,
            "gov",
            POD_CONDITION_VRAM_PRESSURE,
            "False",
            "Unprotected",
        )?;
        ctx.kubectl
            .ok(&["-n", &ctx.ns, "delete", "dmemquota", "q"])?;
        wait_dmem(&cg, "dmem.max", VRAM1, "max", CONDITION)?;
        // What the exec'd process allocated is the pod cgroup's; free it the same way.
        let freed = exec(ctx, "gov", &["free", VRAM1, "1536M"])?;
        ensure!(answer(&freed[0]) == "ok", "free: {}", freed[0]);
        ctx.kubectl.ok(&["-n", &ctx.ns, "delete", "pod", "gov"])?;
        wait_resident(VRAM1, before)
    });
}

#[test]
fn under_contention_the_pod_above_high_loses_buffers_first() {
    on_node("rn-contend", |ctx| {
        let before = resident(VRAM0)?;
        let size = capacity()?[VRAM0];
        quota(
            ctx,
            "q",
            "contend",
            &format!("[{{region: {VRAM0:?}, max: 6Gi, high: 3Gi}}]"),
        )?;
        // The hog holds 5 x 1G (above high); the good pod 2G (within high). Then the good pod
        // needs more than is free: the driver must evict, and only the hog's buffers may go.
        let hog = ["alloc", VRAM0, "1G"].repeat(5);
        let hog: Vec<&str> = std::iter::once("limits")
            .chain(hog)
            .chain(["hold"])
            .collect();
        workload_pod(ctx, "hog", "contend", &Gpu::Privileged, &hog)?;
        workload_pod(
            ctx,
            "good",
            "contend",
            &Gpu::Privileged,
            &["limits", "alloc", VRAM0, "1G", "alloc", VRAM0, "1G", "hold"],
        )?;
        for (pod, n) in [("hog", 7), ("good", 4)] {
            wait_phase(ctx, pod, "Running")?;
            let s = wait_steps(ctx, pod, n)?;
            ensure!(
                s[1..n - 1].iter().all(|x| answer(x) == "ok"),
                "{pod} could not allocate: {s:?}"
            );
        }
        wait_cond(ctx, "hog", POD_CONDITION_VRAM_PRESSURE, "True", "AboveHigh")?;
        // The emulated high is in the kernel: the pods' dmem.low.
        let hog_cg = pod_cgroup(&uid(ctx, "hog")?)?;
        let good_cg = pod_cgroup(&uid(ctx, "good")?)?;
        wait_dmem(
            &good_cg,
            "dmem.low",
            VRAM0,
            &(3 * GI).to_string(),
            CONDITION,
        )?;

        let free = size - resident(VRAM0)?;
        let need = free + GI / 2;
        let evicted_before: Vec<u64> = driver_buffers()?
            .iter()
            .filter(|b| !b.resident)
            .map(|b| b.id)
            .collect();
        let more = exec(ctx, "good", &["alloc", VRAM0, &need.to_string()])?;
        ensure!(
            answer(&more[0]) == "ok",
            "the good pod's allocation: {}",
            more[0]
        );
        let bufs = driver_buffers()?;
        let evicted: Vec<&Buffer> = bufs
            .iter()
            .filter(|b| !b.resident && !evicted_before.contains(&b.id))
            .collect();
        ensure!(!evicted.is_empty(), "nothing was evicted: {bufs:?}");
        let hog_name = hog_cg
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        ensure!(
            evicted
                .iter()
                .all(|b| b.owner.ends_with(hog_name) || b.owner.contains(hog_name)),
            "buffers of others were evicted: {evicted:?} (hog is {hog_name})"
        );
        let good_name = good_cg
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let good_resident = bufs
            .iter()
            .filter(|b| b.owner.contains(good_name) && b.resident)
            .count();
        // Free what the exec'd allocation got, so the pods leave the region as they found it.
        exec(ctx, "good", &["free", VRAM0, &need.to_string()])?;
        ensure!(
            good_resident == 3,
            "the good pod has {good_resident} resident buffers: {bufs:?}"
        );
        ctx.kubectl
            .ok(&["-n", &ctx.ns, "delete", "pod", "hog", "good"])?;
        wait_resident(VRAM0, before)
    });
}

fn uid(ctx: &TestCtx, pod: &str) -> Result<String> {
    let p = get_pod(ctx, pod)?.context("pod gone")?;
    Ok(p["metadata"]["uid"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn restarts_of_the_kubelet_containerd_the_agent_and_the_chart_never_lapse_a_limit() {
    on_node("rn-restarts", |ctx| {
        workload_pod(ctx, "steady", "steady", &Gpu::Units(2), &["limits", "hold"])?;
        wait_phase(ctx, "steady", "Running")?;
        let s = wait_steps(ctx, "steady", 2)?;
        let cg = pod_cgroup(&uid(ctx, "steady")?)?;
        let max = read_dmem(&cg, "dmem.max")?;
        let granted: Vec<(String, String)> = max
            .into_iter()
            .filter(|(_, v)| v == &(2 * GI).to_string())
            .collect();
        ensure!(granted.len() == 1, "dmem.max at start: {granted:?} ({s:?})");
        let (region, want) = granted[0].clone();
        let sampler = sample_dmem_max(&cg, &region);
        let started = Instant::now();
        let mut log = Vec::new();

        // The kubelet restarts: the plugin registers again; nothing changes in the kernel. The
        // node's status says Ready for a while after the kubelet is gone, so "back" means: the
        // agent registered again, and the node carries a heartbeat newer than the last one before.
        let heartbeat = |n: &Value| -> String {
            let conds = n["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            conds
                .iter()
                .find(|c| c["type"] == "Ready" && c["status"] == "True")
                .and_then(|c| c["lastHeartbeatTime"].as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let registered = agent_log_count(ctx, "Registered with kubelet")?;
        let last_beat = heartbeat(&node(ctx)?);
        restart_kubelet()?;
        eventually(
            "the agent registered with the new kubelet",
            POD_START,
            || Ok((agent_log_count(ctx, "Registered with kubelet")? > registered).then_some(())),
        )?;
        eventually(
            "a fresh Ready heartbeat with the node's VRAM",
            POD_START,
            || {
                let n = node(ctx)?;
                let alloc = n["status"]["allocatable"]["kube-dmem.io/vram"]
                    .as_str()
                    .unwrap_or("0");
                Ok((heartbeat(&n) > last_beat && alloc != "0").then_some(()))
            },
        )?;
        log.push(format!("kubelet back after {:?}", started.elapsed()));

        // containerd restarts under running containers (the shims keep them alive).
        restart_containerd()?;
        log.push(format!("containerd back after {:?}", started.elapsed()));

        // The agent's pod is deleted: the DaemonSet makes a new one.
        recreate_agent(ctx)?;
        log.push(format!("agent recreated after {:?}", started.elapsed()));

        // The chart is upgraded to changed values: the DaemonSet rolls its pod.
        let before_upgrade = agent_pod(ctx)?;
        helm_upgrade(
            ctx,
            &[
                "devicePlugin.logLevel=debug",
                "devicePlugin.pollInterval=2s",
            ],
        )?;
        // rollout status waits for the new generation to be observed and its pod available.
        agent_ready(ctx)?;
        ensure!(
            agent_pod(ctx)? != before_upgrade,
            "the agent pod was not replaced by the upgrade"
        );
        log.push(format!(
            "helm upgrade rolled out after {:?}",
            started.elapsed()
        ));

        let samples = all_samples_are(sampler, 100, &want)
            .with_context(|| format!("dmem.max of {region} ({log:?})"))?;
        // The pod lived through all of it.
        ensure!(pod_phase(ctx, "steady")? == "Running");
        let pod = get_pod(ctx, "steady")?.context("pod gone")?;
        let restarts = pod["status"]["containerStatuses"][0]["restartCount"].as_i64();
        ensure!(restarts == Some(0), "restartCount {restarts:?}");
        eprintln!("rn-restarts: {} samples, all {want}; {log:?}", samples);
        ctx.kubectl
            .ok(&["-n", &ctx.ns, "delete", "pod", "steady"])?;
        // Back to the suite's values for the cases after this one.
        helm_upgrade(ctx, &[])
    });
}

/// Deletes the agent's pod and waits for the DaemonSet's new one to be ready. The old pod's log
/// (what it saw until then) is kept with the case's results first.
fn recreate_agent(ctx: &TestCtx) -> Result<()> {
    let old = agent_pod(ctx)?;
    let seen = ctx.kubectl.ok(&["-n", RELEASE_NAMESPACE, "logs", &old])?;
    std::fs::write(ctx.dir.join(format!("agent-{old}.log")), seen)?;
    ctx.kubectl.ok(&[
        "-n",
        RELEASE_NAMESPACE,
        "delete",
        "pod",
        &old,
        "--wait=true",
    ])?;
    eventually("a new agent pod", POD_START, || {
        let now = agent_pod(ctx)?;
        Ok((now != old).then_some(()))
    })?;
    agent_ready(ctx)
}

/// How many pods the NRI case starts: 20 by default (a few minutes under TCG);
/// `KUBE_DMEM_NODE_RACE_RUNS=100` for the issue's 100-run measurement.
fn race_runs() -> usize {
    env_or("KUBE_DMEM_NODE_RACE_RUNS", 20)
}

/// Pods of the race cases applied at a time (`KUBE_DMEM_NODE_RACE_WAVE`, default 5).
fn race_wave() -> usize {
    env_or("KUBE_DMEM_NODE_RACE_WAVE", 5).max(1)
}

/// The environment variable `name` parsed, or `default` when it is unset or not a number.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Times the agent logged that it registered with the NRI runtime.
fn nri_registrations(ctx: &TestCtx) -> Result<usize> {
    agent_log_count(ctx, "Registered with the NRI runtime")
}

/// How many lines of the running agent's log contain `needle`.
fn agent_log_count(ctx: &TestCtx, needle: &str) -> Result<usize> {
    let pod = agent_pod(ctx)?;
    let logs = ctx.kubectl.ok(&["-n", RELEASE_NAMESPACE, "logs", &pod])?;
    Ok(logs.lines().filter(|l| l.contains(needle)).count())
}

/// Samples `dmem.max` of `region` in `cgroup` every 10 ms from now on.
fn sample_dmem_max(cgroup: &Path, region: &str) -> Sampler<String> {
    let (cgroup, region) = (cgroup.to_owned(), region.to_owned());
    Sampler::start(
        move || dmem_value(&cgroup, "dmem.max", &region),
        |e| format!("unreadable: {e:#}"),
    )
}

/// Stops `sampler` and fails unless it took more than `at_least` samples, every one `want`;
/// returns how many it took.
fn all_samples_are(sampler: Sampler<String>, at_least: usize, want: &str) -> Result<usize> {
    let samples = sampler.finish()?;
    ensure!(samples.len() > at_least, "only {} samples", samples.len());
    if let Some(bad) = samples.iter().find(|v| *v != want) {
        bail!("was {bad} at some point ({} samples)", samples.len());
    }
    Ok(samples.len())
}

/// Stops the kubelet, waits until it is gone, and starts it again (the node's start script).
fn restart_kubelet() -> Result<()> {
    sh("pkill -x kubelet; while pgrep -x kubelet >/dev/null; do sleep 0.2; done")?;
    sh("\"$NODE_KUBELET_START\"")?;
    Ok(())
}

fn restart_containerd() -> Result<()> {
    sh(
        "pkill -x containerd; while pgrep -x containerd >/dev/null; do sleep 0.2; done; \
        setsid containerd >>/run/results/containerd.log 2>&1 </dev/null & \
        for i in $(seq 1 300); do ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; done; exit 1",
    )?;
    Ok(())
}

/// Starts `n` governed pods without units whose first instruction allocates one byte past `max`;
/// returns how many the kernel refused (`EAGAIN`), i.e. how many had their limits before they ran.
/// The pods come in waves of [`race_wave`] (one `kubectl apply` each; a wave's pods are deleted
/// once read): under TCG a burst of 20 kept containerd's starts past the kubelet's 2-minute CRI
/// deadline. Each pod races the agent on its own, so waves do not change what is measured. The
/// workload's output is read from the kubelet's log files on the node, so a wave costs a few
/// kubectl calls, not three per pod.
///
/// A pod whose container the runtime failed to start (`StartError`: under TCG, containerd's shim
/// missing the kubelet's deadline) ran no instruction, so it says nothing either way: it is
/// reported and replaced by another pod, up to [`MAX_NOT_STARTED`] of them; past that the case
/// fails. The plugin is not on that path (it holds sandbox and container creation, which had
/// returned), and a creation it answered unconfirmed fails the NRI case on its own.
fn first_instruction_refusals(ctx: &TestCtx, prefix: &str, n: usize) -> Result<usize> {
    let mut answers = BTreeMap::<String, usize>::new();
    let mut not_started = Vec::new();
    let (mut ran, mut next) = (0, 0);
    while ran < n {
        let wave: Vec<String> = (next..next + race_wave().min(n - ran))
            .map(|i| format!("{prefix}-{i}"))
            .collect();
        next += wave.len();
        let outcome = refusals_of_wave(ctx, &wave)?;
        for (answer, count) in outcome.answers {
            ran += count;
            *answers.entry(answer).or_default() += count;
        }
        not_started.extend(outcome.not_started);
        // A long run (100 pods under TCG take hours) says how far it got, should it be cut.
        eprintln!(
            "{prefix}: {ran} of {n} pods ran, first allocations past max answered {answers:?}; \
             {} replaced",
            not_started.len()
        );
        ensure!(
            not_started.len() <= MAX_NOT_STARTED,
            "{prefix}: the runtime failed to start {} containers, more than the {MAX_NOT_STARTED} \
             a run replaces: {not_started:?}",
            not_started.len()
        );
    }
    eprintln!(
        "{prefix}: first allocations past max answered {answers:?} over {n} pods; {} more whose \
         container the runtime failed to start were replaced: {not_started:?}",
        not_started.len()
    );
    Ok(answers.get("EAGAIN").copied().unwrap_or(0))
}

/// How long a wave of a race case may take: under TCG on a busy host, containerd took minutes
/// to create and start each of 5 containers (the node's kubelet allows 10 minutes a CRI call).
const WAVE_DONE: Duration = Duration::from_secs(900);

/// Most pods of a race case whose containers the runtime may fail to start.
const MAX_NOT_STARTED: usize = 20;

/// What one wave of [`first_instruction_refusals`] showed.
struct Wave {
    /// The first answer of each pod that ran, counted.
    answers: BTreeMap<String, usize>,
    /// Pods whose container the runtime failed to start, with its message.
    not_started: Vec<String>,
}

/// One wave of [`first_instruction_refusals`].
fn refusals_of_wave(ctx: &TestCtx, names: &[String]) -> Result<Wave> {
    let past_max = (GI + 1).to_string();
    let steps = ["alloc", VRAM1, &past_max, "free", VRAM1, &past_max];
    // The quotas of the race cases select `app: race`.
    let app = "race";
    let yaml: Vec<String> = names
        .iter()
        .map(|name| workload_pod_yaml(ctx, name, app, &Gpu::Privileged, &steps))
        .collect();
    ctx.kubectl.apply(&yaml.join("\n---\n"))?;
    let n = names.len();
    let pods = eventually(&format!("{n} pods {names:?} done"), WAVE_DONE, || {
        let list =
            ctx.kubectl
                .json(&["-n", &ctx.ns, "get", "pods", "-l", &format!("app={app}")])?;
        let items: Vec<Value> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|name| names.iter().any(|w| w == name))
            })
            .cloned()
            .collect();
        let phases: Vec<&str> = items
            .iter()
            .map(|p| p["status"]["phase"].as_str().unwrap_or_default())
            .collect();
        let failed_running = (items.iter())
            .filter(|p| p["status"]["phase"] == "Failed" && start_error(p).is_none())
            .count();
        ensure!(failed_running == 0, "a pod Failed: {phases:?}");
        let done = (items.iter())
            .filter(|p| p["status"]["phase"] == "Succeeded" || start_error(p).is_some())
            .count();
        if done == n {
            Ok(Some(items))
        } else {
            bail!("{done} of {n} Succeeded or not started: {phases:?}")
        }
    })?;
    let mut wave = Wave {
        answers: BTreeMap::new(),
        not_started: Vec::new(),
    };
    for pod in &pods {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        if let Some(why) = start_error(pod) {
            wave.not_started.push(format!("{name}: {why}"));
            continue;
        }
        let s = node_log_steps(ctx, pod)?;
        let a = s.first().map_or_else(|| "no output".to_owned(), answer);
        *wave.answers.entry(a).or_default() += 1;
    }
    let mut delete = vec!["-n", ctx.ns.as_str(), "delete", "pods", "--wait=false"];
    delete.extend(names.iter().map(String::as_str));
    ctx.kubectl.ok(&delete)?;
    Ok(wave)
}

/// The message of a pod that failed because the runtime could not start its container
/// (`StartError`: no instruction of it ran), if it did.
fn start_error(pod: &Value) -> Option<String> {
    if pod["status"]["phase"] != "Failed" {
        return None;
    }
    let statuses = pod["status"]["containerStatuses"].as_array()?;
    let terminated = &statuses.first()?["state"]["terminated"];
    (terminated["reason"] == "StartError").then(|| {
        terminated["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    })
}

/// The workload's steps from the kubelet's log file of the pod's container on this node
/// (`/var/log/pods/<ns>_<name>_<uid>/w/0.log`, CRI format: time, stream, tag, line).
fn node_log_steps(ctx: &TestCtx, pod: &Value) -> Result<Vec<Value>> {
    let meta = &pod["metadata"];
    let dir = format!(
        "/var/log/pods/{}_{}_{}/w/0.log",
        ctx.ns,
        meta["name"].as_str().unwrap_or_default(),
        meta["uid"].as_str().unwrap_or_default()
    );
    let text = std::fs::read_to_string(&dir).with_context(|| format!("read {dir}"))?;
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .collect();
    parse_steps(&lines.join("\n"))
}

#[test]
fn nri_puts_the_limits_in_place_before_the_first_instruction_of_every_pod() {
    on_node("rn-nri", |ctx| {
        quota(
            ctx,
            "q",
            "race",
            &format!("[{{region: {VRAM1:?}, max: 1Gi}}]"),
        )?;
        // containerd restarts first: the agent must register again for what follows to hold.
        let before = nri_registrations(ctx)?;
        restart_containerd()?;
        eventually(
            "the agent registered with the new containerd",
            POD_START,
            || Ok((nri_registrations(ctx)? > before).then_some(())),
        )?;
        let n = race_runs();
        let refused = first_instruction_refusals(ctx, "nri", n);
        // What the plugin added to each creation, from the agent's histogram (bucket bounds),
        // printed also when the runs stopped early (a TCG node can stall), so a cut-short run
        // still reports the plugin's latency.
        let metrics = agent_metrics(ctx)?;
        let mut unconfirmed_containers = 0;
        for event in ["RunPodSandbox", "CreateContainer"] {
            let (count, p50, p99) = held_quantiles(&metrics, event, "in_force");
            let (lost, lost_p50, _) = held_quantiles(&metrics, event, "not_confirmed");
            eprintln!(
                "rn-nri: {event} held p50 <= {p50} s, p99 <= {p99} s over {count} creations \
                 with the limits in force; {lost} answered unconfirmed (p50 <= {lost_p50} s)"
            );
            if event == "CreateContainer" {
                unconfirmed_containers = lost;
            }
        }
        let refused = refused?;
        // A sandbox runs only the pause process: one answered before its pod's limits were
        // confirmed is reported above. A container must never start unconfirmed.
        ensure!(
            unconfirmed_containers == 0,
            "{unconfirmed_containers} containers created before their limits were confirmed"
        );
        ensure!(
            refused == n,
            "with NRI, {refused} of {n} pods had their limit before they ran"
        );
        Ok(())
    });
}

#[test]
fn without_nri_the_race_shows_and_pods_start_while_the_agent_is_down() {
    on_node("rn-no-nri", |ctx| {
        quota(
            ctx,
            "q",
            "race",
            &format!("[{{region: {VRAM1:?}, max: 1Gi}}]"),
        )?;
        let upgrade = |nri: bool| helm_upgrade(ctx, &[&format!("nri.enabled={nri}")]);
        // The same pods with the agent's inotify watch alone: report how often the pod wins.
        upgrade(false)?;
        let n = race_runs().min(20);
        let refused = first_instruction_refusals(ctx, "watch", n)?;
        eprintln!(
            "rn-no-nri: without NRI {refused} of {n} pods had their limit before their first \
             instruction ({} raced ahead of the agent)",
            n - refused
        );

        // The agent is gone from the node: pods still start (the runtime does not wait for a
        // plugin that is not there), and the agent catches up when it is back.
        agent_off_node(ctx, &["nri.enabled=true"])?;
        workload_pod(ctx, "alone", "race", &Gpu::Privileged, &["limits", "hold"])?;
        wait_phase(ctx, "alone", "Running")?;
        let cg = pod_cgroup(&uid(ctx, "alone")?)?;
        ensure!(
            dmem_value(&cg, "dmem.max", VRAM1)? == "max",
            "limited with no agent?"
        );
        upgrade(true)?; // back to the chart's template: the agent returns
        wait_dmem(&cg, "dmem.max", VRAM1, &GI.to_string(), POD_START)?;
        ctx.kubectl.ok(&["-n", &ctx.ns, "delete", "pod", "alone"])?;
        Ok(())
    });
}

/// `kubectl dmem` (the plugin binary, `KUBE_DMEM_NODE_KUBECTL_DMEM`) with `args`, as JSON.
fn kubectl_dmem(args: &[&str]) -> Result<Value> {
    let bin =
        std::env::var("KUBE_DMEM_NODE_KUBECTL_DMEM").context("KUBE_DMEM_NODE_KUBECTL_DMEM")?;
    let out = Command::new(bin).args(args).args(["-o", "json"]).output()?;
    ensure!(
        out.status.success(),
        "kubectl dmem {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// A kernel file's value for `region` as a number (`max` is `None`, as the plugin shows it).
fn kernel_number(cg: &Path, file: &str, region: &str) -> Result<Option<u64>> {
    dmem_bytes(&dmem_value(cg, file, region)?)
}

#[test]
fn kubectl_dmem_shows_what_the_kernel_files_hold() {
    on_node("rn-kubectl-dmem", |ctx| {
        quota(
            ctx,
            "q",
            "seen",
            &format!("[{{region: {VRAM1:?}, max: 3Gi, high: 2Gi}}]"),
        )?;
        workload_pod(
            ctx,
            "seen",
            "seen",
            &Gpu::Privileged,
            &[
                "alloc", VRAM1, "1G", "alloc", VRAM1, "512M", "free", VRAM1, "512M", "hold",
            ],
        )?;
        wait_phase(ctx, "seen", "Running")?;
        wait_steps(ctx, "seen", 4)?;
        wait_cond(
            ctx,
            "seen",
            POD_CONDITION_VRAM_LIMITS_APPLIED,
            "True",
            REASON_APPLIED,
        )?;
        let cg = pod_cgroup(&uid(ctx, "seen")?)?;
        // The agent publishes at its polls: wait until the plugin's numbers match the kernel's.
        let ns = ctx.ns.clone();
        let row = eventually("kubectl dmem top = the kernel files", CONDITION, || {
            let top = kubectl_dmem(&["top", "pods", "-n", &ns])?;
            let items = top["items"].as_array().cloned().unwrap_or_default();
            let row = items
                .iter()
                .find(|r| r["pod"] == "seen" && r["region"] == VRAM1)
                .cloned()
                .with_context(|| format!("no row for seen/{VRAM1}: {top}"))?;
            let kernel = [
                ("usage", kernel_number(&cg, "dmem.current", VRAM1)?),
                ("max", kernel_number(&cg, "dmem.max", VRAM1)?),
                ("low", kernel_number(&cg, "dmem.low", VRAM1)?),
                ("min", kernel_number(&cg, "dmem.min", VRAM1)?),
            ];
            for (field, want) in kernel {
                // `max` reads "max" in the kernel and none in the plugin; `low`/`min` of 0 are
                // shown as 0, as the kernel holds them.
                let shown = row[field].as_u64();
                ensure!(
                    shown == want,
                    "{field}: kubectl dmem {shown:?}, kernel {want:?}"
                );
            }
            let peak = kernel_number(&cg, "dmem.peak", VRAM1)?;
            ensure!(
                row["peak"]["bytes"].as_u64() == peak && row["peak"]["source"] == "kernel",
                "peak: kubectl dmem {}, kernel {peak:?}",
                row["peak"]
            );
            Ok(Some(row))
        })?;
        ensure!(row["usage"].as_u64() == Some(GI), "usage {}", row["usage"]);
        ensure!(
            row["peak"]["bytes"].as_u64() == Some(GI + GI / 2),
            "peak {}",
            row["peak"]
        );

        let why = kubectl_dmem(&["why", "seen", "-n", &ctx.ns])?;
        ensure!(
            why["governing"].as_str().is_some_and(|g| g.contains('q')),
            "governing: {}",
            why["governing"]
        );
        let shown = &why["cgroup"][VRAM1];
        ensure!(
            shown["max"].as_u64() == kernel_number(&cg, "dmem.max", VRAM1)?,
            "why's cgroup max {} vs the kernel's",
            shown["max"]
        );
        ctx.kubectl.ok(&["-n", &ctx.ns, "delete", "pod", "seen"])?;
        Ok(())
    });
}

/// `helm upgrade` of the release to the suite's values plus `set`; waits for the agent.
fn helm_upgrade(ctx: &TestCtx, set: &[&str]) -> Result<()> {
    let helm = std::env::var("NODE_HELM").context("NODE_HELM")?;
    let chart = std::env::var("NODE_CHART").context("NODE_CHART")?;
    let values = std::env::var("NODE_VALUES").context("NODE_VALUES")?;
    let mut cmd = Command::new(helm);
    cmd.args([
        "upgrade",
        RELEASE,
        &chart,
        "-n",
        RELEASE_NAMESPACE,
        "-f",
        &values,
    ]);
    for s in set {
        cmd.args(["--set", s]);
    }
    let out = cmd.output()?;
    ensure!(
        out.status.success(),
        "helm upgrade: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent_ready(ctx)
}

#[test]
fn a_dra_claim_is_the_pods_dmem_max_from_its_first_instruction() {
    on_node("rn-dra", |ctx| {
        helm_upgrade(ctx, &["dra.enabled=true"])?;
        // The driver publishes the node's slice: one device per region.
        eventually("the node's ResourceSlice", POD_START, || {
            let slices = ctx.kubectl.json(&["get", "resourceslices"])?;
            let ours: Vec<&Value> = slices["items"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|s| s["spec"]["driver"] == "vram.kube-dmem.io")
                        .collect()
                })
                .unwrap_or_default();
            let devices = ours
                .iter()
                .map(|s| s["spec"]["devices"].as_array().map_or(0, Vec::len))
                .sum::<usize>();
            if ours.len() == 1 && ours[0]["spec"]["nodeName"] == NODE && devices == 2 {
                Ok(Some(()))
            } else {
                bail!("{} slices of ours with {devices} devices", ours.len())
            }
        })?;
        ctx.kubectl.apply(&format!(
            "apiVersion: resource.k8s.io/v1\nkind: ResourceClaimTemplate\n\
             metadata: {{name: vram-4gi, namespace: {}}}\n\
             spec: {{spec: {{devices: {{requests: [{{name: vram, exactly: {{deviceClassName: \
             vram.kube-dmem.io, capacity: {{requests: {{memory: 4Gi}}}}}}}}]}}}}}}\n",
            ctx.ns
        ))?;
        workload_pod(
            ctx,
            "claimed",
            "claimed",
            &Gpu::Claim("vram-4gi"),
            &[
                "limits",
                "alloc",
                "@",
                "4294967297",
                "alloc",
                "@",
                "4G",
                "free",
                "@",
                "4G",
                "hold",
            ],
        )?;
        wait_phase(ctx, "claimed", "Running")?;
        let s = wait_steps(ctx, "claimed", 5)?;
        let region = s[1]["region"].as_str().unwrap_or_default().to_owned();
        let line = format!("{region} {}", 4 * GI);
        let max = s[0]["dmem.max"].as_array().cloned().unwrap_or_default();
        ensure!(
            max.iter().any(|l| l.as_str() == Some(line.as_str())),
            "at start the pod cgroup's dmem.max was {max:?}, want {line:?}"
        );
        ensure!(
            answer(&s[1]) == "EAGAIN",
            "one byte past the claim: {}",
            s[1]
        );
        ensure!(answer(&s[2]) == "ok", "the claim itself: {}", s[2]);
        let dev = s[1]["device"].as_str().unwrap_or_default();
        ensure!(
            dev.starts_with("/dev/dri/renderD"),
            "the workload used {dev:?}"
        );
        // The agent restarts: the claim's limit stays in force throughout (the driver's
        // checkpoint says why it is there), sampled every 10 ms.
        let cg = pod_cgroup(&uid(ctx, "claimed")?)?;
        let want = (4 * GI).to_string();
        let sampler = sample_dmem_max(&cg, &region);
        recreate_agent(ctx)?;
        // Then the kubelet restarts: it registers the driver again (the plugin watcher finds
        // its socket) and the claim stays prepared.
        let registered = agent_log_count(ctx, "Registered with kubelet as DRA driver")?;
        restart_kubelet()?;
        eventually(
            "the DRA driver registered with the new kubelet",
            POD_START,
            || {
                let now = agent_log_count(ctx, "Registered with kubelet as DRA driver")?;
                Ok((now > registered).then_some(()))
            },
        )?;
        let samples = all_samples_are(sampler, 10, &want).with_context(|| {
            format!("dmem.max of {region} while the agent and the kubelet restarted")
        })?;
        ensure!(
            pod_phase(ctx, "claimed")? == "Running",
            "the claimed pod did not survive the restarts"
        );
        eprintln!(
            "rn-dra: {} samples through an agent and a kubelet restart, all {want}",
            samples
        );

        // A claim whose opaque configuration for our driver is malformed: the kubelet's prepare
        // fails with our precise error in the pod's events, and the pod does not start.
        ctx.kubectl.apply(&format!(
            "apiVersion: resource.k8s.io/v1\nkind: ResourceClaimTemplate\n\
             metadata: {{name: vram-typo, namespace: {}}}\n\
             spec: {{spec: {{devices: {{requests: [{{name: vram, exactly: {{deviceClassName: \
             vram.kube-dmem.io, capacity: {{requests: {{memory: 1Gi}}}}}}}}], \
             config: [{{requests: [vram], opaque: {{driver: vram.kube-dmem.io, parameters: \
             {{apiVersion: vram.kube-dmem.io/v1alpha1, kind: VramConfig, colour: red}}}}}}]}}}}}}\n",
            ctx.ns
        ))?;
        workload_pod(ctx, "typo", "typo", &Gpu::Claim("vram-typo"), &["limits"])?;
        let message = eventually(
            "FailedPrepareDynamicResources on the pod",
            POD_START,
            || {
                let events = ctx.kubectl.json(&[
                    "-n",
                    &ctx.ns,
                    "get",
                    "events",
                    "--field-selector",
                    "involvedObject.name=typo",
                ])?;
                Ok(events["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| e["reason"] == "FailedPrepareDynamicResources")
                    .and_then(|e| e["message"].as_str().map(str::to_owned)))
            },
        )?;
        ensure!(
            message.contains("MalformedConfig") || message.contains("is malformed"),
            "the prepare error does not say what is wrong: {message}"
        );
        ensure!(
            message.contains("colour"),
            "the prepare error does not name the field: {message}"
        );
        ensure!(
            pod_phase(ctx, "typo")? == "Pending",
            "a pod whose claim failed to prepare must not start"
        );
        eprintln!("rn-dra: malformed config refused: {message}");
        ctx.kubectl
            .ok(&["-n", &ctx.ns, "delete", "pod", "typo", "--wait=false"])?;

        // The claim goes with the pod: its limit is gone from the kernel once the pod is deleted
        // (the cgroup goes too), and the driver keeps nothing for it.
        ctx.kubectl
            .ok(&["-n", &ctx.ns, "delete", "pod", "claimed"])?;
        eventually("the pod cgroup gone", POD_START, || {
            Ok((!cg.exists()).then_some(()))
        })?;
        helm_upgrade(ctx, &[])
    });
}

/// The running agent's `/metrics`, through the API server's pod proxy.
fn agent_metrics(ctx: &TestCtx) -> Result<String> {
    let pod = agent_pod(ctx)?;
    ctx.kubectl.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{RELEASE_NAMESPACE}/pods/{pod}:9808/proxy/metrics"),
    ])
}

/// Count and the upper bounds of the p50 and p99 buckets of the NRI plugin's held histogram.
fn held_quantiles(metrics: &str, event: &str, outcome: &str) -> (u64, String, String) {
    let labels = format!("event=\"{event}\",outcome=\"{outcome}\"");
    let mut buckets: Vec<(f64, u64)> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("kube_dmem_agent_nri_held_seconds_bucket{") && l.contains(&labels)
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let n = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, n))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let count = buckets.last().map_or(0, |b| b.1);
    let at = |q: f64| {
        let rank = (q * count as f64).ceil() as u64;
        buckets
            .iter()
            .find(|b| b.1 >= rank.max(1))
            .map_or_else(|| "-".to_owned(), |b| format!("{}", b.0))
    };
    (count, at(0.5), at(0.99))
}
