//! Objects the tests make (pods on the fake nodes, quotas, budgets) and readers for the fields
//! they assert on (conditions), plus the agent's side of the API when a test plays the agent.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use kube_dmem_crds::{
    AGENT_FIELD_MANAGER, POD_CONDITION_VRAM_ABOVE_HIGH, POD_CONDITION_VRAM_PRESSURE,
};
use serde_json::Value;

use crate::ctx::TestCtx;
use crate::kubectl::{Kubectl, Output};
use crate::poll::eventually;

/// How long kwok and the scheduler get to make a pod Running.
pub const POD_RUNNING_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates pod `name` in the test namespace on `node` with `labels` (`k: v` pairs) and waits
/// until kwok reports it Running and Ready; returns its UID.
///
/// # Errors
/// When it is not Running in time.
pub fn running_pod(
    ctx: &TestCtx,
    name: &str,
    node: &str,
    labels: &[(&str, &str)],
) -> Result<String> {
    let labels: String = labels
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n{labels}\
         spec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: registry.invalid/none:never-pulled\n",
        ns = ctx.ns
    );
    ctx.kubectl.apply(&yaml)?;
    eventually(
        &format!("pod {name} Running and Ready"),
        POD_RUNNING_TIMEOUT,
        || {
            let pod = ctx.kubectl.json(&["get", "pod", name, "-n", &ctx.ns])?;
            let ready = condition(&pod, "Ready").is_some_and(|c| c["status"] == "True");
            Ok((pod["status"]["phase"] == "Running" && ready).then(|| {
                pod["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            }))
        },
    )
}

/// The condition of `ty` in an object's `status.conditions`.
pub fn condition<'a>(obj: &'a Value, ty: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

/// A `dmem.*` value as the kernel writes it: `None` for `max`, else the bytes.
pub fn dmem_bytes(value: &str) -> Result<Option<u64>> {
    if value == "max" {
        return Ok(None);
    }
    let bytes = value
        .parse()
        .with_context(|| format!("dmem value {value:?} is neither max nor bytes"))?;
    Ok(Some(bytes))
}

/// RFC 3339 UTC text of `t` (whole seconds), as Kubernetes writes `metav1.Time`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Applies the agent's pressure conditions to `pod` as `kubectl`'s user, with the agent's field
/// manager: `kube-dmem.io/VRAMPressure` (`active`, `reason`, transitioned at `since`) and
/// `kube-dmem.io/VRAMAboveHigh`, which an agent keeps `True` from the moment usage crossed `high`:
/// `True` at `since` when the pressure is `AboveHigh`, `False` otherwise. Returns the command's
/// output, so tests can assert on refusals.
///
/// # Errors
/// When `kubectl` cannot be run.
pub fn apply_pressure(
    kubectl: &Kubectl,
    ns: &str,
    pod: &str,
    active: bool,
    reason: &str,
    since: SystemTime,
) -> Result<Output> {
    let above_high = (active && reason == "AboveHigh").then_some(since);
    apply_agent_conditions(kubectl, ns, pod, (active, reason, since), above_high)
}

/// The agent's pressure conditions with `VRAMAboveHigh` set on its own: `True` since
/// `above_high_since` when given (the moment the pod crossed `high`), `False` otherwise.
///
/// # Errors
/// When `kubectl` cannot be run.
pub fn apply_agent_conditions(
    kubectl: &Kubectl,
    ns: &str,
    pod: &str,
    (active, reason, since): (bool, &str, SystemTime),
    above_high_since: Option<SystemTime>,
) -> Result<Output> {
    let condition = |ty: &str, on: bool, reason: &str, at: SystemTime| {
        format!(
            "  - type: {ty}\n    status: \"{}\"\n    reason: {reason}\n    \
             message: set by the e2e suite\n    lastTransitionTime: \"{}\"\n",
            if on { "True" } else { "False" },
            rfc3339(at),
        )
    };
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  namespace: {ns}\nstatus:\n  conditions:\n{}{}",
        condition(POD_CONDITION_VRAM_PRESSURE, active, reason, since),
        match above_high_since {
            Some(at) => condition(POD_CONDITION_VRAM_ABOVE_HIGH, true, "AboveHigh", at),
            None => condition(POD_CONDITION_VRAM_ABOVE_HIGH, false, "WithinHigh", since),
        },
    );
    kubectl.try_apply_subresource(&yaml, "status", AGENT_FIELD_MANAGER)
}

/// [`apply_pressure`] as the cluster admin, which must succeed: the test plays the agent.
///
/// # Errors
/// When the API server rejects it.
pub fn set_pressure(ctx: &TestCtx, pod: &str, reason: &str, since: SystemTime) -> Result<()> {
    let above_high = (reason == "AboveHigh").then_some(since);
    set_agent_conditions(ctx, pod, (reason, since), above_high)
}

/// [`apply_agent_conditions`] (pressure active) as the cluster admin, which must succeed.
///
/// # Errors
/// When the API server rejects it.
pub fn set_agent_conditions(
    ctx: &TestCtx,
    pod: &str,
    (reason, since): (&str, SystemTime),
    above_high_since: Option<SystemTime>,
) -> Result<()> {
    let out = apply_agent_conditions(
        &ctx.kubectl,
        &ctx.ns,
        pod,
        (true, reason, since),
        above_high_since,
    )?;
    if !out.ok {
        bail!(
            "setting {POD_CONDITION_VRAM_PRESSURE} on {pod}: {}",
            out.stderr.trim()
        );
    }
    Ok(())
}

/// The pod as JSON, `None` once it is gone.
///
/// # Errors
/// When it cannot be read for another reason.
pub fn get_pod(ctx: &TestCtx, name: &str) -> Result<Option<Value>> {
    let out = ctx
        .kubectl
        .run(&["get", "pod", name, "-n", &ctx.ns, "-o", "json"], None)?;
    if !out.ok {
        if out.stderr.contains("NotFound") || out.stderr.contains("not found") {
            return Ok(None);
        }
        bail!("get pod {name}: {}", out.stderr.trim());
    }
    Ok(Some(serde_json::from_str(&out.stdout).context("pod JSON")?))
}

/// Whether the pod is gone or being deleted (what an eviction does).
///
/// # Errors
/// When it cannot be read.
pub fn evicted(ctx: &TestCtx, name: &str) -> Result<bool> {
    Ok(get_pod(ctx, name)?.is_none_or(|p| !p["metadata"]["deletionTimestamp"].is_null()))
}

/// The reasons of the events in the test namespace about `object` (`kind/name`, e.g. `Pod/p`).
///
/// # Errors
/// When events cannot be listed.
pub fn event_reasons(ctx: &TestCtx, kind: &str, name: &str) -> Result<Vec<String>> {
    let events = ctx
        .kubectl
        .json(&["get", "events.events.k8s.io", "-n", &ctx.ns])?;
    Ok(events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["kind"] == kind && e["regarding"]["name"] == name)
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect())
}

/// A DmemQuota manifest in the test namespace selecting `app=<app>` with one `*` limit entry.
pub fn quota_yaml(ctx: &TestCtx, name: &str, app: &str, priority: i32, extra_spec: &str) -> String {
    format!(
        "apiVersion: kube-dmem.io/v1alpha1\nkind: DmemQuota\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
         spec:\n  priority: {priority}\n  selector: {{matchLabels: {{app: {app}}}}}\n  limits:\n  \
         - {{region: \"*\", max: 8Gi, high: 6Gi}}\n{extra_spec}",
        ns = ctx.ns
    )
}

/// Waits until the operator has written a status for the quota's current generation and
/// `check` accepts it; returns the quota.
///
/// # Errors
/// On timeout, with the last status seen.
pub fn wait_quota(
    ctx: &TestCtx,
    name: &str,
    deadline: Duration,
    what: &str,
    mut check: impl FnMut(&Value) -> bool,
) -> Result<Value> {
    eventually(&format!("DmemQuota {name}: {what}"), deadline, || {
        let q = ctx
            .kubectl
            .json(&["get", "dmemquota", name, "-n", &ctx.ns])?;
        let current = q["status"]["observedGeneration"] == q["metadata"]["generation"];
        if current && check(&q) {
            Ok(Some(q))
        } else {
            bail!("status now: {}", q["status"])
        }
    })
}
