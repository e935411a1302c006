//! The DRA driver against the real scheduler: the agent of one fake node (`--dra enabled`, the
//! FUSE simulator with one 16Gi region) publishes the node's ResourceSlice with the chart's RBAC
//! and admission policy; three pods each claim 6Gi of VRAM through a ResourceClaimTemplate of
//! the chart's DeviceClass; the scheduler (consumable capacity, beta in 1.36) allocates two and
//! leaves the third Pending with its reason. The slice is written once, then never again while
//! nothing changes. The kubelet side (NodePrepareResources) has no kubelet here; it is covered
//! by the driver's tests against a kubelet double (`device-plugin/tests/dra.rs`).

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use kube_dmem_e2e::components::{Agent, SimFs, http_get};
use kube_dmem_e2e::ctx::{TestCtx, run};
use kube_dmem_e2e::env::NODES;
use kube_dmem_e2e::kubectl::Kubectl;
use kube_dmem_e2e::poll::{consistently, eventually};
use kube_dmem_e2e::token;
use serde_json::Value;

const REGION: &str = "drm/0000:03:00.0/vram0";
const DEVICE: &str = "drm-0000-03-00-0-vram0";
const GI: u64 = 1 << 30;
const SCHEDULE: Duration = Duration::from_secs(60);

fn slice_name(node: &str) -> String {
    format!("{node}-vram-kube-dmem-io")
}

fn claim_template(ctx: &TestCtx) -> String {
    format!(
        "apiVersion: resource.k8s.io/v1\nkind: ResourceClaimTemplate\nmetadata:\n  name: vram-6gi\n  namespace: {ns}\n\
         spec:\n  spec:\n    devices:\n      requests:\n      - name: vram\n        exactly:\n          \
         deviceClassName: vram.kube-dmem.io\n          capacity:\n            requests:\n              memory: 6Gi\n",
        ns = ctx.ns
    )
}

fn pod(ctx: &TestCtx, name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  \
         nodeSelector:\n    kubernetes.io/hostname: {node}\n  containers:\n  - name: c\n    \
         image: registry.invalid/none:never-pulled\n    resources:\n      claims:\n      - name: vram\n  \
         resourceClaims:\n  - name: vram\n    resourceClaimTemplateName: vram-6gi\n",
        ns = ctx.ns
    )
}

/// The agent's count of ResourceSlice writes that succeeded.
fn slice_writes(agent: &Agent) -> Result<u64> {
    let (code, text) = http_get(agent.admin, "/metrics")?;
    ensure!(code == 200, "/metrics answered {code}");
    let line = text
        .lines()
        .find(|l| l.starts_with("kube_dmem_agent_dra_slice_writes_total{result=\"ok\"}"))
        .context("no slice write counted yet")?;
    let value = line.rsplit(' ').next().unwrap_or_default();
    Ok(value.parse::<f64>().context("counter value")? as u64)
}

fn scheduled_node(ctx: &TestCtx, name: &str) -> Result<Option<String>> {
    let pod = ctx.kubectl.json(&["get", "pod", name, "-n", &ctx.ns])?;
    Ok(pod["spec"]["nodeName"].as_str().map(str::to_owned))
}

/// The memory the scheduler gave the pod's claim, from the claim's allocation result.
fn consumed(ctx: &TestCtx, pod: &str) -> Result<Option<String>> {
    let pod = ctx.kubectl.json(&["get", "pod", pod, "-n", &ctx.ns])?;
    let Some(claim) = pod["status"]["resourceClaimStatuses"][0]["resourceClaimName"].as_str()
    else {
        return Ok(None);
    };
    let claim = ctx
        .kubectl
        .json(&["get", "resourceclaim", claim, "-n", &ctx.ns])?;
    let result = &claim["status"]["allocation"]["devices"]["results"][0];
    if result.is_null() {
        return Ok(None);
    }
    ensure!(result["device"] == DEVICE, "allocated {}", result["device"]);
    Ok(result["consumedCapacity"]["memory"]
        .as_str()
        .map(str::to_owned))
}

/// A quantity in an object as bytes (the API server may print `16Gi` or `17179869184`).
fn bytes(v: &Value) -> Option<u64> {
    kube_dmem_crds::quantity::parse_quantity(v.as_str()?).ok()
}

fn unschedulable(pod: &Value) -> Option<String> {
    let conditions = pod["status"]["conditions"].as_array()?;
    let c = conditions.iter().find(|c| c["type"] == "PodScheduled")?;
    (c["status"] == "False" && c["reason"] == "Unschedulable")
        .then(|| c["message"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn the_scheduler_fits_two_6gi_claims_into_a_16gi_region_and_not_a_third() {
    run("dra-schedule", |ctx| {
        let node = NODES[0];
        let sim = SimFs::mount(ctx, "dra-sim", &[&format!("{REGION}=16Gi")])?;
        let agent = Agent::start_with(
            ctx,
            node,
            &sim.root,
            &[
                "--dra",
                "enabled",
                "--dra-min-request",
                "1Gi",
                "--dra-request-step",
                "1Gi",
            ],
        )?;
        let slice = eventually("the node's ResourceSlice", SCHEDULE, || {
            let out = ctx.kubectl.run(
                &["get", "resourceslice", &slice_name(node), "-o", "json"],
                None,
            )?;
            if !out.ok {
                bail!("{}", out.stderr);
            }
            Ok(Some(serde_json::from_str::<Value>(&out.stdout)?))
        })?;
        let spec = &slice["spec"];
        ensure!(
            spec["driver"] == "vram.kube-dmem.io" && spec["nodeName"] == node,
            "{spec}"
        );
        let device = &spec["devices"][0];
        ensure!(device["name"] == DEVICE, "{device}");
        ensure!(device["allowMultipleAllocations"] == true, "{device}");
        ensure!(
            bytes(&device["capacity"]["memory"]["value"]) == Some(16 * GI),
            "{device}"
        );
        ensure!(
            device["attributes"]["region"]["string"] == REGION,
            "{device}"
        );
        ensure!(
            device["attributes"]["pciAddress"]["string"] == "0000:03:00.0",
            "{device}"
        );
        ensure!(
            slice["metadata"]["ownerReferences"][0]["kind"] == "Node",
            "owned by the Node"
        );

        ctx.kubectl.apply(&claim_template(ctx))?;
        for name in ["vram-a", "vram-b"] {
            ctx.kubectl.apply(&pod(ctx, name, node))?;
            eventually(&format!("{name} scheduled on {node}"), SCHEDULE, || {
                Ok(scheduled_node(ctx, name)?.filter(|n| n == node))
            })?;
            let got = eventually(&format!("{name}'s claim allocated"), SCHEDULE, || {
                consumed(ctx, name)
            })?;
            ensure!(
                bytes(&Value::from(got.clone())) == Some(6 * GI),
                "{name} consumed {got}"
            );
        }
        ctx.kubectl.apply(&pod(ctx, "vram-c", node))?;
        let message = eventually("vram-c unschedulable", SCHEDULE, || {
            let pod = ctx.kubectl.json(&["get", "pod", "vram-c", "-n", &ctx.ns])?;
            Ok(unschedulable(&pod))
        })?;
        ensure!(
            message.contains("cannot allocate all claims"),
            "the scheduler's reason names the claims: {message}"
        );
        ensure!(
            scheduled_node(ctx, "vram-c")?.is_none(),
            "vram-c must stay Pending"
        );

        // Steady state: rounds every 200 ms, no further slice write.
        let writes = slice_writes(&agent)?;
        ensure!(
            writes == 1,
            "{writes} slice writes for one unchanged region"
        );
        consistently(
            "no slice write in steady state",
            Duration::from_secs(3),
            || Ok(slice_writes(&agent)? == writes),
        )?;
        Ok(())
    });
}

#[test]
fn an_agent_may_write_only_its_own_nodes_slice() {
    run("dra-policy", |ctx| {
        let agent_a = Kubectl::with_kubeconfig(&token::agent_kubeconfig(NODES[0], &ctx.dir)?);
        let slice = |node: &str| {
            format!(
                "apiVersion: resource.k8s.io/v1\nkind: ResourceSlice\nmetadata:\n  name: e2e-policy-{node}\n\
                 spec:\n  driver: vram.kube-dmem.io\n  nodeName: {node}\n  pool: {{name: e2e-policy-{node}, generation: 1, resourceSliceCount: 1}}\n  devices: []\n"
            )
        };
        let other = agent_a.run(
            &[
                "apply",
                "--server-side",
                "--field-manager=kube-dmem-agent",
                "-f",
                "-",
            ],
            Some(&slice(NODES[1])),
        )?;
        ensure!(
            !other.ok,
            "agent of {} wrote a slice of {}",
            NODES[0],
            NODES[1]
        );
        let want = format!(
            "kube-dmem node agent on node {} may only write the ResourceSlice of that node; e2e-policy-{} is for node {}",
            NODES[0], NODES[1], NODES[1]
        );
        ensure!(
            other.stderr.contains(&want),
            "unexpected denial: {}",
            other.stderr
        );
        let own = agent_a.run(
            &[
                "apply",
                "--server-side",
                "--field-manager=kube-dmem-agent",
                "-f",
                "-",
            ],
            Some(&slice(NODES[0])),
        )?;
        ensure!(
            own.ok,
            "agent could not write its own node's slice: {}",
            own.stderr
        );
        // Claims: `get` by name (the kubelet names the claim), no `list`.
        let one = agent_a.run(
            &["get", "resourceclaim", "no-such-claim", "-n", &ctx.ns],
            None,
        )?;
        ensure!(
            !one.ok && one.stderr.contains("NotFound"),
            "get by name must be allowed: {}",
            one.stderr
        );
        let all = agent_a.run(&["get", "resourceclaims", "-n", &ctx.ns], None)?;
        ensure!(
            !all.ok && all.stderr.contains("Forbidden"),
            "list must be denied: {}",
            all.stderr
        );
        let _ = Kubectl::admin().run(
            &[
                "delete",
                "resourceslice",
                &format!("e2e-policy-{}", NODES[0]),
            ],
            None,
        );
        Ok(())
    });
}
