//! The chart's Grafana dashboard and alert rules against a real Prometheus: Debian's `prometheus`
//! binary on loopback scrapes a node agent (on the FUSE simulator) and the operator, both host
//! processes under the chart's ServiceAccounts, through `static_configs` labelled as the chart's
//! ServiceMonitors label them (job names, `node`). Every query of every dashboard panel must
//! return data, and every alert rule must load and evaluate.
//! Needs `prometheus` on PATH or `$PROMETHEUS` (Debian: `apt-get install prometheus`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use kube_dmem_e2e::components::{Agent, Operator, SimFs};
use kube_dmem_e2e::ctx::{TestCtx, run};
use kube_dmem_e2e::env::NODES;
use kube_dmem_e2e::fixtures::{dmem_bytes, get_pod, running_pod};
use kube_dmem_e2e::poll::eventually;
use kube_dmem_e2e::prometheus::{Job, Prometheus};
use serde_json::Value;

const REGION: &str = "drm/0000:03:00.0/vram0";
const GI: i64 = 1 << 30;
/// Scrapes every second; a minute covers the first scrapes, the limits and the rate windows.
const DATA: Duration = Duration::from_secs(60);

fn chart_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/kube-dmem")
        .join(rel)
}

/// Every panel query of the dashboard as `(panel title, query)`, with Grafana's variables
/// replaced as tests/scripts/check-observability.sh replaces them (a 1m range here, since the
/// scrapes are 1 s apart).
fn dashboard_queries() -> Result<Vec<(String, String)>> {
    let path = chart_file("dashboards/kube-dmem.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let dash: Value = serde_json::from_str(&text)?;
    let mut panels = Vec::new();
    let mut stack: Vec<Value> = dash["panels"].as_array().cloned().unwrap_or_default();
    while let Some(panel) = stack.pop() {
        if panel["type"] == "row" {
            stack.extend(panel["panels"].as_array().cloned().unwrap_or_default());
        } else {
            panels.push(panel);
        }
    }
    let mut queries = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default().to_owned();
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        ensure!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            queries.push((title.clone(), substitute(expr)));
        }
    }
    ensure!(queries.len() > 10, "only {} queries found", queries.len());
    Ok(queries)
}

fn substitute(expr: &str) -> String {
    let mut out = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "1m");
    for var in ["node", "namespace"] {
        out = out
            .replace(&format!("${{{var}}}"), ".*")
            .replace(&format!("${var}"), ".*");
    }
    out
}

/// A governed pod on `node` with VRAM charged, so the per-pod series exist; returns its cgroup.
fn governed_pod(ctx: &TestCtx, sim: &SimFs, node: &str) -> Result<PathBuf> {
    let uid = running_pod(ctx, "p", node, &[("app", "gpu")])?;
    let pod = get_pod(ctx, "p")?.unwrap_or_default();
    let qos = pod["status"]["qosClass"].as_str().unwrap_or("BestEffort");
    let cgroup = sim.make_pod_cgroup(&uid, qos)?;
    ctx.kubectl.apply(&format!(
        "apiVersion: kube-dmem.io/v1alpha1\nkind: DmemQuota\nmetadata:\n  name: q\n  namespace: {}\n\
         spec:\n  selector: {{matchLabels: {{app: gpu}}}}\n  limits:\n  \
         - {{region: \"drm/*/vram*\", max: 8Gi, high: 4Gi}}\n",
        ctx.ns
    ))?;
    eventually("dmem.max = 8Gi in the pod cgroup", DATA, || {
        Ok(
            (SimFs::read(&cgroup, "dmem.max", REGION)?.as_deref() == Some(&(8 * GI).to_string()))
                .then_some(()),
        )
    })?;
    SimFs::charge(&cgroup, REGION, 2 * GI)?;
    Ok(cgroup)
}

#[test]
fn every_dashboard_query_returns_data_and_the_alert_rules_load() {
    run("observability", |ctx| {
        let queries = dashboard_queries()?;
        let sim = SimFs::mount(ctx, "node0", &[&format!("{REGION}=16Gi")])?;
        let agent = Agent::start(ctx, NODES[0], &sim.root)?;
        let operator = Operator::start(ctx)?;
        governed_pod(ctx, &sim, NODES[0])?;

        let rules = chart_file("alerts/kube-dmem.rules.yaml");
        let prom = Prometheus::start(
            ctx,
            &[
                // The job names and the node label the chart's ServiceMonitors produce.
                Job {
                    name: "kube-dmem-device-plugin".into(),
                    targets: vec![agent.admin],
                    labels: vec![("node".into(), NODES[0].into())],
                },
                Job {
                    name: "kube-dmem-operator".into(),
                    targets: vec![operator.admin],
                    labels: Vec::new(),
                },
            ],
            &[rules.as_path()],
        )?;

        eventually("both targets scraped and up", DATA, || {
            let up = prom.query("up == 1")?;
            Ok((up.len() == 2).then_some(()))
        })?;

        for (panel, query) in &queries {
            eventually(&format!("data for {panel:?}: {query}"), DATA, || {
                let result = prom.query(query)?;
                Ok((!result.is_empty()).then_some(()))
            })?;
        }

        // Every alert rule is loaded from the chart's file and evaluates without error.
        let expected = std::fs::read_to_string(&rules)?.matches("- alert:").count();
        eventually("every alert rule evaluated, health ok", DATA, || {
            let groups = prom.api("rules")?;
            let rules: Vec<Value> = groups["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            if rules.len() != expected {
                bail!("{} rules loaded, {expected} expected", rules.len());
            }
            if let Some(bad) = rules.iter().find(|r| r["health"] != "ok") {
                bail!(
                    "rule {} health {} {}",
                    bad["name"],
                    bad["health"],
                    bad["lastError"]
                );
            }
            Ok(Some(()))
        })?;
        Ok(())
    });
}

/// `kubectl dmem top pods|nodes` and `why p`, reading node0's agent at `agent_url`, show what the
/// pod cgroup's files hold. The pod peaks at 3Gi and drops to 2Gi: the peak shown is the
/// simulated 7.3 kernel's `dmem.peak`, labelled `kernel`.
fn numbers_match_the_kernel_files(
    ctx: &TestCtx,
    kubeconfig: &std::path::Path,
    agent_url: &str,
    cgroup: &std::path::Path,
) -> Result<()> {
    // `kubectl dmem ARGS -o json --agent-url`, which must succeed and read node0's agent.
    let json = |args: &[&str]| -> Result<Value> {
        let args = [args, &["-o", "json", "--agent-url", agent_url]].concat();
        let (ok, out, err) = kubectl_dmem(ctx, kubeconfig, &args)?;
        ensure!(ok, "kubectl dmem {args:?} failed: {err}");
        ensure!(!err.contains(NODES[0]), "node0's agent not read: {err}");
        Ok(serde_json::from_str(&out)?)
    };
    let item = |view: &Value, key: &str, value: &str, region: Option<&str>| -> Result<Value> {
        view["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r[key] == value && region.is_none_or(|g| r["region"] == g))
            .cloned()
            .with_context(|| format!("no row for {value}: {view}"))
    };
    let top_row = || item(&json(&["top", "pods"])?, "pod", "p", Some(REGION));
    let file = |name: &str| -> Result<Option<u64>> {
        let value = SimFs::read(cgroup, name, REGION)?
            .with_context(|| format!("{name} has no line for {REGION}"))?;
        dmem_bytes(&value)
    };
    // Each `(field, file)`: what `shown` (from `what`) says is what the file holds.
    let same_as_files = |what: &str, shown: &Value, fields: &[(&str, &str)]| -> Result<()> {
        for (field, name) in fields {
            let want = file(name)?;
            ensure!(
                shown[field].as_u64() == want,
                "{what} {field}: {}, {name} {want:?}",
                shown[field]
            );
        }
        Ok(())
    };
    let gi = GI.unsigned_abs();
    SimFs::charge(cgroup, REGION, GI)?;
    eventually(
        "kubectl dmem top shows the 3Gi in dmem.current",
        DATA,
        || Ok((top_row()?["usage"].as_u64() == Some(3 * gi)).then_some(())),
    )?;
    SimFs::charge(cgroup, REGION, -GI)?;
    // The agent publishes at its polls: wait for the drop, then every number must be the file's.
    let row = eventually(
        "kubectl dmem top shows the 2Gi after the free",
        DATA,
        || {
            let row = top_row()?;
            Ok((row["usage"].as_u64() == Some(2 * gi)).then_some(row))
        },
    )?;
    let limits = [
        ("max", "dmem.max"),
        ("low", "dmem.low"),
        ("min", "dmem.min"),
    ];
    same_as_files("top", &row, &[("usage", "dmem.current")])?;
    same_as_files("top", &row, &limits)?;
    ensure!(row["max"].as_u64() == Some(8 * gi), "{row}");
    ensure!(row["high"].as_u64() == Some(4 * gi), "{row}");
    let peak = file("dmem.peak")?;
    ensure!(peak == Some(3 * gi), "dmem.peak {peak:?} after a 3Gi spike");
    ensure!(
        row["peak"]["bytes"].as_u64() == peak && row["peak"]["source"] == "kernel",
        "peak: kubectl dmem {}, dmem.peak {peak:?}",
        row["peak"]
    );

    let why = json(&["why", "p"])?;
    same_as_files("why's cgroup", &why["cgroup"][REGION], &limits)?;

    let node = item(&json(&["top", "nodes"])?, "node", NODES[0], None)?;
    ensure!(node["agent"] == "ok", "{node}");
    ensure!(node["capacity"].as_u64() == Some(16 * gi), "{node}");
    Ok(())
}

/// Runs the built `kubectl-dmem` with `kubeconfig`: `(exit ok, stdout, stderr)`; both are also
/// appended to `kubectl-dmem.log` in the test's directory.
fn kubectl_dmem(
    ctx: &TestCtx,
    kubeconfig: &std::path::Path,
    args: &[&str],
) -> Result<(bool, String, String)> {
    use std::io::Write as _;
    let bin = kube_dmem_e2e::Env::get().binary("kubectl-dmem")?;
    let out = std::process::Command::new(bin)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ctx.dir.join("kubectl-dmem.log"))?;
    writeln!(log, "$ kubectl dmem {}\n{stdout}{stderr}", args.join(" "))?;
    Ok((out.status.success(), stdout, stderr))
}

/// `kubectl dmem` with nothing but the chart's viewer roles, bound to a ServiceAccount: `why`
/// names the quota the shared rules pick and the one that lost, `top` shows the pod with the
/// condition a real agent wrote, and no read is forbidden. The chart's agent pods live on kwok
/// nodes, where nothing answers the pod proxy, so the agents are reported unreachable (within
/// the timeout) rather than failing the command. Then the same commands read the real agent
/// (on the FUSE simulator) at its admin URL (`--agent-url`), and the numbers they show must be
/// the ones in the simulated kernel files.
#[test]
fn kubectl_dmem_works_with_only_the_viewer_roles() {
    run("kubectl-dmem", |ctx| {
        let sa = format!("{}:viewer", ctx.ns);
        let binding = format!("{}-viewer", ctx.ns);
        ctx.kubectl
            .ok(&["create", "serviceaccount", "viewer", "-n", &ctx.ns])?;
        ctx.kubectl.ok(&[
            "create",
            "clusterrolebinding",
            &binding,
            "--clusterrole=kube-dmem-viewer",
            &format!("--serviceaccount={sa}"),
        ])?;
        let result = (|| -> Result<()> {
            ctx.kubectl.ok(&[
                "create",
                "rolebinding",
                &binding,
                "-n",
                kube_dmem_e2e::env::RELEASE_NAMESPACE,
                "--role=kube-dmem-viewer",
                &format!("--serviceaccount={sa}"),
            ])?;
            let kubeconfig = kube_dmem_e2e::token::service_account_kubeconfig(
                &ctx.ns,
                "viewer",
                None,
                &ctx.dir.join("viewer.kubeconfig"),
            )?;
            let sim = SimFs::mount(ctx, "node0", &[&format!("{REGION}=16Gi")])?;
            let agent = Agent::start(ctx, NODES[0], &sim.root)?;
            let cgroup = governed_pod(ctx, &sim, NODES[0])?;
            ctx.kubectl.apply(&format!(
                "apiVersion: kube-dmem.io/v1alpha1\nkind: DmemQuota\nmetadata:\n  name: low\n  namespace: {}\n\
                 spec:\n  selector: {{}}\n  priority: -5\n  limits:\n  - {{region: \"*\", max: 1Gi}}\n",
                ctx.ns
            ))?;
            eventually("the agent's VRAMLimitsApplied condition on p", DATA, || {
                let pod = get_pod(ctx, "p")?.unwrap_or_default();
                Ok(kube_dmem_e2e::fixtures::condition(
                    &pod,
                    kube_dmem_crds::POD_CONDITION_VRAM_LIMITS_APPLIED,
                )
                .is_some()
                .then_some(()))
            })?;

            // An event as the agent publishes them (events.k8s.io/v1); `why` reads them back.
            let uid = get_pod(ctx, "p")?.unwrap_or_default()["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            ctx.kubectl.apply(&format!(
                "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {{name: p.e2e, namespace: {ns}}}\n\
                 eventTime: \"2026-01-01T00:00:00.000000Z\"\nreportingController: kube-dmem-agent\n\
                 reportingInstance: e2e\naction: Reconcile\nreason: E2eMarker\ntype: Normal\n\
                 note: marker\nregarding: {{apiVersion: v1, kind: Pod, namespace: {ns}, name: p, uid: {uid}}}\n",
                ns = ctx.ns
            ))?;
            let timeout = ["--agent-timeout-seconds", "3"];
            let (ok, out, err) = kubectl_dmem(
                ctx,
                &kubeconfig,
                &[&["why", "p", "-o", "json"][..], &timeout].concat(),
            )?;
            ensure!(ok, "kubectl dmem why failed: {err}");
            ensure!(
                !err.to_lowercase().contains("forbidden"),
                "a read was forbidden: {err}"
            );
            let why: Value = serde_json::from_str(&out)?;
            ensure!(why["governing"] == "q", "governing: {}", why["governing"]);
            let lost = why["quotas"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|q| q["name"] == "low")
                .context("quota low listed")?;
            ensure!(
                lost["outcome"] == "Outranked" && lost["detail"] == "lost to q: priority 0 > -5",
                "{lost}"
            );
            ensure!(
                why["conditions"].as_array().is_some_and(|c| !c.is_empty()),
                "no kube-dmem conditions: {why}"
            );
            ensure!(
                why["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| e["reason"] == "E2eMarker" && e["from"] == "kube-dmem-agent"),
                "the pod's event is missing: {}",
                why["events"]
            );

            let (ok, out, err) = kubectl_dmem(
                ctx,
                &kubeconfig,
                &[&["top", "pods", "-o", "json"][..], &timeout].concat(),
            )?;
            ensure!(ok, "kubectl dmem top pods failed: {err}");
            ensure!(
                !err.to_lowercase().contains("forbidden"),
                "a read was forbidden: {err}"
            );
            let top: Value = serde_json::from_str(&out)?;
            let row = top["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["pod"] == "p")
                .with_context(|| format!("no row for p: {top}"))?;
            ensure!(row["node"] == NODES[0], "{row}");
            ensure!(
                row["limits"].as_str().is_some_and(|l| l.contains('/')),
                "{row}"
            );

            let (ok, out, err) = kubectl_dmem(
                ctx,
                &kubeconfig,
                &[&["top", "nodes"][..], &timeout].concat(),
            )?;
            ensure!(ok, "kubectl dmem top nodes failed: {err}");
            ensure!(
                !err.to_lowercase().contains("forbidden"),
                "a read was forbidden: {err}"
            );
            ensure!(out.starts_with("NODE"), "{out}");
            ensure!(out.contains(NODES[0]), "{out}");
            // The agent pods exist (the chart's DaemonSet on kwok nodes) but nothing answers
            // behind them: reported, not fatal, and not because a read was forbidden.
            ensure!(err.contains("could not be read"), "{err}");
            let (ok, _, err) =
                kubectl_dmem(ctx, &kubeconfig, &[&["why", "p"][..], &timeout].concat())?;
            ensure!(ok, "kubectl dmem why (table) failed: {err}");

            let direct = format!("{}=http://{}", NODES[0], agent.admin);
            numbers_match_the_kernel_files(ctx, &kubeconfig, &direct, &cgroup)?;
            Ok(())
        })();
        let _ = ctx
            .kubectl
            .run(&["delete", "clusterrolebinding", &binding], None);
        let _ = ctx.kubectl.run(
            &[
                "delete",
                "rolebinding",
                &binding,
                "-n",
                kube_dmem_e2e::env::RELEASE_NAMESPACE,
            ],
            None,
        );
        result
    });
}
