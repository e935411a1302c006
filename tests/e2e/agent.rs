//! The node agent in cluster mode (`kube-dmem-device-plugin run --kubelet disabled`) as a host
//! process per fake node, with the chart's agent ServiceAccount and a token bound to the chart's
//! agent pod on that node. Each node's cgroupfs is the FUSE kernel simulator; the test plays the
//! kubelet (makes pod cgroups) and the workload (charges VRAM through `dmem.sim.charge`).
//! The admission-policy case needs no agent process: it writes with the agent's credentials.
//! One case restarts kube-apiserver under a running agent.

use std::time::{Duration, SystemTime};

use anyhow::{Result, ensure};
use kube_dmem_crds::{POD_CONDITION_VRAM_PRESSURE, REASON_APPLIED};
use kube_dmem_e2e::components::{Agent, SimFs};
use kube_dmem_e2e::ctx::{TestCtx, run};
use kube_dmem_e2e::env::{AGENT_SA, NODES, RELEASE_NAMESPACE};
use kube_dmem_e2e::fixtures::{apply_pressure, condition, get_pod, running_pod};
use kube_dmem_e2e::kubectl::Kubectl;
use kube_dmem_e2e::poll::{Sampler, eventually};
use kube_dmem_e2e::token;

const REGION: &str = "drm/0000:03:00.0/vram0";
const GI: i64 = 1 << 30;
/// The bound: limits of a new quota are in the pod cgroups within 2 s.
const APPLY: Duration = Duration::from_secs(2);
/// Pressure is polled every 200 ms here, then written to the API.
const PRESSURE: Duration = Duration::from_secs(10);

/// A pod on `node` and its simulated cgroup; returns the cgroup path.
fn pod_with_cgroup(
    ctx: &TestCtx,
    sim: &SimFs,
    name: &str,
    node: &str,
) -> Result<std::path::PathBuf> {
    let uid = running_pod(ctx, name, node, &[("app", "gpu")])?;
    let pod = get_pod(ctx, name)?.unwrap_or_default();
    let qos = pod["status"]["qosClass"].as_str().unwrap_or("BestEffort");
    sim.make_pod_cgroup(&uid, qos)
}

fn quota(ctx: &TestCtx, max: &str, high: &str) -> String {
    format!(
        "apiVersion: kube-dmem.io/v1alpha1\nkind: DmemQuota\nmetadata:\n  name: q\n  namespace: {}\n\
         spec:\n  selector: {{matchLabels: {{app: gpu}}}}\n  limits:\n  \
         - {{region: \"drm/*/vram*\", max: {max}, high: {high}}}\n",
        ctx.ns
    )
}

fn wait_file(cgroup: &std::path::Path, file: &str, want: &str, within: Duration) -> Result<()> {
    eventually(&format!("{file} = {want}"), within, || {
        let now = SimFs::read(cgroup, file, REGION)?;
        if now.as_deref() == Some(want) {
            Ok(Some(()))
        } else {
            anyhow::bail!("{file} for {REGION} is {now:?}")
        }
    })
}

/// Samples the pod cgroup's `dmem.max` for [`REGION`] throughout what follows.
fn max_sampler(cgroup: &std::path::Path) -> Sampler<String> {
    let cgroup = cgroup.to_owned();
    Sampler::start(
        move || Ok(SimFs::read(&cgroup, "dmem.max", REGION)?.unwrap_or_else(|| "absent".into())),
        |err| format!("unreadable: {err:#}"),
    )
}

/// Every sample was one of `allowed` (in bytes): the limit never lapsed, not even for a moment.
fn only_these_limits(sampler: Sampler<String>, allowed: &[i64]) -> Result<()> {
    let samples = sampler.finish()?;
    let allowed: Vec<String> = allowed.iter().map(i64::to_string).collect();
    ensure!(samples.len() > 10, "only {} samples", samples.len());
    if let Some(bad) = samples.iter().find(|s| !allowed.contains(s)) {
        anyhow::bail!(
            "dmem.max was {bad} at some point (allowed: {allowed:?}; {} samples)",
            samples.len()
        );
    }
    Ok(())
}

fn pressure(ctx: &TestCtx, pod: &str) -> Result<Option<(String, String)>> {
    let pod = get_pod(ctx, pod)?.unwrap_or_default();
    Ok(condition(&pod, POD_CONDITION_VRAM_PRESSURE).map(|c| {
        (
            c["status"].as_str().unwrap_or_default().to_owned(),
            c["reason"].as_str().unwrap_or_default().to_owned(),
        )
    }))
}

#[test]
fn admission_policy_keeps_an_agent_to_its_own_node() {
    run("agent-policy", |ctx| {
        running_pod(ctx, "on-a", NODES[0], &[("app", "x")])?;
        running_pod(ctx, "on-b", NODES[1], &[("app", "x")])?;
        let agent_a = Kubectl::with_kubeconfig(&token::agent_kubeconfig(NODES[0], &ctx.dir)?);
        let now = SystemTime::now();

        let own = apply_pressure(&agent_a, &ctx.ns, "on-a", false, "BelowHigh", now)?;
        ensure!(
            own.ok,
            "agent of {} could not write its own pod: {}",
            NODES[0],
            own.stderr
        );

        let other = apply_pressure(&agent_a, &ctx.ns, "on-b", true, "AboveHigh", now)?;
        ensure!(
            !other.ok,
            "agent of {} wrote the status of a pod on {}",
            NODES[0],
            NODES[1]
        );
        let want = format!(
            "kube-dmem node agent on node {} may only write the status of pods on that node; pod {}/on-b is on node {}",
            NODES[0], ctx.ns, NODES[1]
        );
        ensure!(
            other.stderr.contains(&want),
            "unexpected denial: {}",
            other.stderr
        );
        ensure!(
            other.stderr.contains("denied request"),
            "not a policy denial: {}",
            other.stderr
        );

        // A token that names no node (not bound to a pod) is denied outright.
        let unbound = token::service_account_kubeconfig(
            RELEASE_NAMESPACE,
            AGENT_SA,
            None,
            &ctx.dir.join("agent-unbound.kubeconfig"),
        )?;
        let out = apply_pressure(
            &Kubectl::with_kubeconfig(&unbound),
            &ctx.ns,
            "on-a",
            true,
            "AboveHigh",
            now,
        )?;
        ensure!(
            !out.ok,
            "an agent token without a node claim wrote pod status"
        );
        ensure!(
            out.stderr.contains("carry no node name"),
            "unexpected denial: {}",
            out.stderr
        );

        let pod = get_pod(ctx, "on-b")?.unwrap_or_default();
        ensure!(
            condition(&pod, POD_CONDITION_VRAM_PRESSURE).is_none(),
            "on-b was written"
        );
        Ok(())
    });
}

#[test]
fn quota_limits_reach_pod_cgroups_and_follow_the_quota() {
    run("agent-limits", |ctx| {
        let sim0 = SimFs::mount(ctx, "node0", &[&format!("{REGION}=16Gi")])?;
        let sim1 = SimFs::mount(ctx, "node1", &[&format!("{REGION}=16Gi")])?;
        let _a0 = Agent::start(ctx, NODES[0], &sim0.root)?;
        let _a1 = Agent::start(ctx, NODES[1], &sim1.root)?;
        let cg0 = pod_with_cgroup(ctx, &sim0, "p0", NODES[0])?;
        let cg1 = pod_with_cgroup(ctx, &sim1, "p1", NODES[1])?;

        ctx.kubectl.apply(&quota(ctx, "8Gi", "6Gi"))?;
        wait_file(&cg0, "dmem.max", &(8 * GI).to_string(), APPLY)?;
        wait_file(&cg1, "dmem.max", &(8 * GI).to_string(), APPLY)?;
        eventually("VRAMLimitsApplied True on p0", PRESSURE, || {
            let pod = get_pod(ctx, "p0")?.unwrap_or_default();
            Ok(
                condition(&pod, kube_dmem_crds::POD_CONDITION_VRAM_LIMITS_APPLIED)
                    .is_some_and(|c| c["status"] == "True" && c["reason"] == REASON_APPLIED)
                    .then_some(()),
            )
        })?;

        // Each agent publishes its node's regions for the operator (unmatchedRegions).
        eventually("gpu-node-0 annotated with its regions", PRESSURE, || {
            let node = ctx.kubectl.json(&["get", "node", NODES[0]])?;
            let regions = node["metadata"]["annotations"]["kube-dmem.io/regions"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            Ok(regions.contains(REGION).then_some(()))
        })?;

        // A spec change is applied too; deleting the quota lifts the limit.
        ctx.kubectl.apply(&quota(ctx, "4Gi", "2Gi"))?;
        wait_file(&cg0, "dmem.max", &(4 * GI).to_string(), APPLY)?;
        ctx.kubectl.ok(&["delete", "dmq", "q", "-n", &ctx.ns])?;
        wait_file(&cg0, "dmem.max", "max", APPLY)?;
        wait_file(&cg1, "dmem.max", "max", APPLY)?;
        Ok(())
    });
}

#[test]
fn usage_above_high_turns_pressure_on_and_off() {
    run("agent-pressure", |ctx| {
        let sim = SimFs::mount(ctx, "node0", &[&format!("{REGION}=16Gi")])?;
        let _agent = Agent::start(ctx, NODES[0], &sim.root)?;
        let cg = pod_with_cgroup(ctx, &sim, "p", NODES[0])?;
        ctx.kubectl.apply(&quota(ctx, "8Gi", "4Gi"))?;
        wait_file(&cg, "dmem.max", &(8 * GI).to_string(), APPLY)?;

        SimFs::charge(&cg, REGION, 6 * GI)?;
        eventually("VRAMPressure True/AboveHigh", PRESSURE, || {
            Ok((pressure(ctx, "p")? == Some(("True".into(), "AboveHigh".into()))).then_some(()))
        })?;
        SimFs::charge(&cg, REGION, -5 * GI)?;
        eventually("VRAMPressure False", PRESSURE, || {
            Ok(pressure(ctx, "p")?
                .is_some_and(|(status, _)| status == "False")
                .then_some(()))
        })?;
        Ok(())
    });
}

#[test]
fn a_restarted_agent_loses_no_limits() {
    run("agent-restart", |ctx| {
        let sim = SimFs::mount(ctx, "node0", &[&format!("{REGION}=16Gi")])?;
        let mut agent = Agent::start(ctx, NODES[0], &sim.root)?;
        let cg = pod_with_cgroup(ctx, &sim, "p", NODES[0])?;
        ctx.kubectl.apply(&quota(ctx, "8Gi", "6Gi"))?;
        wait_file(&cg, "dmem.max", &(8 * GI).to_string(), APPLY)?;
        let sampler = max_sampler(&cg);

        agent.proc.kill();
        // The kernel keeps the limit while no agent runs.
        ensure!(
            SimFs::read(&cg, "dmem.max", REGION)?.as_deref() == Some(&*(8 * GI).to_string()),
            "limit changed while the agent was down"
        );
        // A change made while it is down is picked up on restart; the limit never lapses.
        ctx.kubectl.apply(&quota(ctx, "6Gi", "4Gi"))?;
        agent.crash_and_restart(ctx)?;
        wait_file(
            &cg,
            "dmem.max",
            &(6 * GI).to_string(),
            Duration::from_secs(10),
        )?;
        only_these_limits(sampler, &[8 * GI, 6 * GI])?;
        Ok(())
    });
}

#[test]
fn an_agent_keeps_enforcing_through_an_api_server_restart() {
    run("agent-apiserver-restart", |ctx| {
        let sim = SimFs::mount(ctx, "node0", &[&format!("{REGION}=16Gi")])?;
        let mut agent = Agent::start(ctx, NODES[0], &sim.root)?;
        let cg = pod_with_cgroup(ctx, &sim, "p", NODES[0])?;
        ctx.kubectl.apply(&quota(ctx, "8Gi", "4Gi"))?;
        wait_file(&cg, "dmem.max", &(8 * GI).to_string(), APPLY)?;
        let sampler = max_sampler(&cg);

        kube_dmem_e2e::apiserver::restart(|| {
            // With the API away the workload crosses high; the agent must stay up, and the limit
            // stays in force (the kernel holds it, and nothing may reset it).
            SimFs::charge(&cg, REGION, 6 * GI)?;
            kube_dmem_e2e::poll::consistently(
                "the agent keeps running",
                Duration::from_secs(3),
                || Ok(agent.proc.exited().is_none()),
            )?;
            ensure!(
                SimFs::read(&cg, "dmem.max", REGION)?.as_deref() == Some(&*(8 * GI).to_string()),
                "the limit changed while the API server was down"
            );
            Ok(())
        })?;

        // Back online, it reports what happened meanwhile and follows new quota changes.
        eventually(
            "VRAMPressure True/AboveHigh after the restart",
            Duration::from_secs(60),
            || Ok((pressure(ctx, "p")? == Some(("True".into(), "AboveHigh".into()))).then_some(())),
        )?;
        ctx.kubectl.apply(&quota(ctx, "7Gi", "5Gi"))?;
        wait_file(
            &cg,
            "dmem.max",
            &(7 * GI).to_string(),
            Duration::from_secs(30),
        )?;
        only_these_limits(sampler, &[8 * GI, 7 * GI])?;
        Ok(())
    });
}
