//! The operator as a host process with the chart's operator ServiceAccount (so the chart's RBAC is
//! what it runs with): quota status, conflicts, eviction under `action: Evict` through the Eviction
//! API (PodDisruptionBudgets respected), the grace period counted from the crossing of `high`,
//! `action: None`, and an API server restart. The tests play the node agent by writing the
//! `kube-dmem.io/VRAMPressure` and `kube-dmem.io/VRAMAboveHigh` pod conditions themselves.

use std::time::{Duration, Instant, SystemTime};

use anyhow::ensure;
use kube_dmem_crds::{
    QUOTA_CONDITION_CONFLICT, QUOTA_CONDITION_READY, REASON_EVICTED, REASON_EVICTION_BLOCKED,
    REASON_OUTRANKED, REASON_RECONCILED,
};
use kube_dmem_e2e::components::Operator;
use kube_dmem_e2e::ctx::run;
use kube_dmem_e2e::fixtures::{
    condition, event_reasons, evicted, quota_yaml, running_pod, set_agent_conditions, set_pressure,
    wait_quota,
};
use kube_dmem_e2e::poll::{consistently, eventually};
use kube_dmem_e2e::{apiserver, env::NODES};

/// Status after a spec change: the operator reacts to watch events, well within this.
const STATUS: Duration = Duration::from_secs(20);
/// The grace period of the eviction cases' quotas (`gracePeriod: 6s`).
const GRACE_6S: Duration = Duration::from_secs(6);

fn cond_is(q: &serde_json::Value, ty: &str, status: &str, reason: &str) -> bool {
    condition(q, ty).is_some_and(|c| c["status"] == status && c["reason"] == reason)
}

#[test]
fn status_tracks_generation_and_governed_pods() {
    run("op-status", |ctx| {
        let _op = Operator::start(ctx)?;
        running_pod(ctx, "p1", NODES[0], &[("app", "demo")])?;
        ctx.kubectl.apply(&quota_yaml(ctx, "q", "demo", 0, ""))?;
        let q = wait_quota(ctx, "q", STATUS, "Ready, 1 matched pod", |q| {
            cond_is(q, QUOTA_CONDITION_READY, "True", REASON_RECONCILED)
                && q["status"]["matchedPods"] == 1
        })?;
        ensure!(q["status"]["observedGeneration"] == 1, "{}", q["status"]);
        let ready = condition(&q, QUOTA_CONDITION_READY)
            .cloned()
            .unwrap_or_default();
        ensure!(ready["observedGeneration"] == 1, "Ready condition: {ready}");

        // A spec change bumps the generation; the status follows, and a new pod is counted.
        running_pod(ctx, "p2", NODES[1], &[("app", "demo")])?;
        let patch = r#"{"spec":{"limits":[{"region":"*","max":"4Gi"}]}}"#;
        ctx.kubectl.ok(&[
            "patch",
            "dmq",
            "q",
            "-n",
            &ctx.ns,
            "--type=merge",
            "-p",
            patch,
        ])?;
        let q = wait_quota(ctx, "q", STATUS, "generation 2 observed, 2 pods", |q| {
            q["status"]["matchedPods"] == 2
        })?;
        ensure!(q["metadata"]["generation"] == 2, "{}", q["metadata"]);
        ensure!(
            ctx.kubectl
                .ok(&["get", "dmq", "q", "-n", &ctx.ns])?
                .contains("4Gi"),
            "printer column MAX"
        );
        Ok(())
    });
}

#[test]
fn overlapping_quotas_report_conflict_naming_the_winner() {
    run("op-conflict", |ctx| {
        let _op = Operator::start(ctx)?;
        running_pod(ctx, "p", NODES[0], &[("app", "shared")])?;
        ctx.kubectl
            .apply(&quota_yaml(ctx, "winner", "shared", 10, ""))?;
        ctx.kubectl
            .apply(&quota_yaml(ctx, "loser", "shared", 0, ""))?;
        let loser = wait_quota(ctx, "loser", STATUS, "Conflict True", |q| {
            cond_is(q, QUOTA_CONDITION_CONFLICT, "True", REASON_OUTRANKED)
        })?;
        let message = condition(&loser, QUOTA_CONDITION_CONFLICT)
            .and_then(|c| c["message"].as_str())
            .unwrap_or_default()
            .to_owned();
        ensure!(
            message.contains("winner"),
            "Conflict message does not name the winner: {message}"
        );
        ensure!(loser["status"]["matchedPods"] == 0, "{}", loser["status"]);
        wait_quota(
            ctx,
            "winner",
            STATUS,
            "Conflict False, 1 matched pod",
            |q| {
                cond_is(q, QUOTA_CONDITION_CONFLICT, "False", "NoConflict")
                    && q["status"]["matchedPods"] == 1
            },
        )?;

        // The winner gone, the loser governs the pod and its conflict clears.
        ctx.kubectl
            .ok(&["delete", "dmq", "winner", "-n", &ctx.ns])?;
        wait_quota(
            ctx,
            "loser",
            STATUS,
            "Conflict False after the winner is deleted",
            |q| {
                cond_is(q, QUOTA_CONDITION_CONFLICT, "False", "NoConflict")
                    && q["status"]["matchedPods"] == 1
            },
        )?;
        Ok(())
    });
}

#[test]
fn evict_policy_evicts_a_pod_above_high_after_the_grace_period() {
    run("op-evict", |ctx| {
        let _op = Operator::start(ctx)?;
        running_pod(ctx, "hog", NODES[0], &[("app", "hog")])?;
        running_pod(ctx, "calm", NODES[1], &[("app", "hog")])?;
        let policy = "  pressure: {action: Evict, gracePeriod: 6s, maxEvictionsPerMinute: 10}\n";
        ctx.kubectl.apply(&quota_yaml(ctx, "q", "hog", 0, policy))?;
        wait_quota(ctx, "q", STATUS, "Ready", |q| {
            q["status"]["matchedPods"] == 2
        })?;

        // The condition times have whole seconds: the clock starts up to 1 s before `crossed`.
        let crossed = Instant::now();
        set_pressure(ctx, "hog", "AboveHigh", SystemTime::now())?;
        // Nothing happens for the whole grace period (sampled throughout, up to 1 s before its
        // earliest possible end).
        consistently(
            "hog not evicted during the 6 s grace period",
            GRACE_6S.saturating_sub(Duration::from_secs(2) + crossed.elapsed()),
            || Ok(!evicted(ctx, "hog")?),
        )?;
        eventually(
            "hog evicted after the grace period",
            Duration::from_secs(20),
            || Ok(evicted(ctx, "hog")?.then_some(())),
        )?;
        eventually(
            "an Evicted event on the pod",
            Duration::from_secs(10),
            || {
                Ok(event_reasons(ctx, "Pod", "hog")?
                    .iter()
                    .any(|r| r == REASON_EVICTED)
                    .then_some(()))
            },
        )?;
        ensure!(!evicted(ctx, "calm")?, "a pod without pressure was evicted");
        Ok(())
    });
}

#[test]
fn grace_period_starts_when_the_pod_crosses_high_not_when_pressure_began() {
    run("op-grace", |ctx| {
        let _op = Operator::start(ctx)?;
        running_pod(ctx, "busy", NODES[0], &[("app", "busy")])?;
        let policy = "  pressure: {action: Evict, gracePeriod: 6s, maxEvictionsPerMinute: 10}\n";
        ctx.kubectl
            .apply(&quota_yaml(ctx, "q", "busy", 0, policy))?;
        wait_quota(ctx, "q", STATUS, "Ready", |q| {
            q["status"]["matchedPods"] == 1
        })?;
        // Pressured for another reason for an hour: VRAMPressure True (Contended) since then.
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        set_pressure(ctx, "busy", "Contended", hour_ago)?;
        consistently(
            "a Contended pod is not evicted",
            Duration::from_secs(3),
            || Ok(!evicted(ctx, "busy")?),
        )?;
        // It crosses high now. VRAMPressure stays True, so its time stays an hour back (as the
        // API conventions ask); VRAMAboveHigh turns True now.
        let crossed = Instant::now();
        set_agent_conditions(
            ctx,
            "busy",
            ("AboveHigh", hour_ago),
            Some(SystemTime::now()),
        )?;
        consistently(
            "not evicted within the grace period after crossing high",
            GRACE_6S.saturating_sub(Duration::from_secs(2) + crossed.elapsed()),
            || Ok(!evicted(ctx, "busy")?),
        )?;
        eventually(
            "evicted once the grace period after crossing high is over",
            Duration::from_secs(20),
            || Ok(evicted(ctx, "busy")?.then_some(())),
        )?;
        ensure!(
            crossed.elapsed() >= GRACE_6S - Duration::from_secs(1),
            "evicted {:?} after crossing high",
            crossed.elapsed()
        );
        Ok(())
    });
}

#[test]
fn pod_disruption_budget_blocks_eviction_until_removed() {
    run("op-pdb", |ctx| {
        let _op = Operator::start(ctx)?;
        running_pod(ctx, "guarded", NODES[0], &[("app", "guarded")])?;
        ctx.kubectl.apply(&format!(
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: keep-one\n  \
             namespace: {}\nspec:\n  minAvailable: 1\n  selector: {{matchLabels: {{app: guarded}}}}\n",
            ctx.ns
        ))?;
        eventually(
            "the budget allows no disruption",
            Duration::from_secs(20),
            || {
                let pdb = ctx
                    .kubectl
                    .json(&["get", "pdb", "keep-one", "-n", &ctx.ns])?;
                Ok((pdb["status"]["currentHealthy"] == 1
                    && pdb["status"]["disruptionsAllowed"] == 0)
                    .then_some(()))
            },
        )?;
        let policy = "  pressure: {action: Evict, gracePeriod: 1s}\n";
        ctx.kubectl
            .apply(&quota_yaml(ctx, "q", "guarded", 0, policy))?;
        set_pressure(
            ctx,
            "guarded",
            "AboveHigh",
            SystemTime::now() - Duration::from_secs(60),
        )?;

        let q = wait_quota(ctx, "q", STATUS, "EvictionBlocked True", |q| {
            // Condition type EvictionBlocked (operator/src/decide/status.rs), True while refused.
            condition(q, "EvictionBlocked").is_some_and(|c| c["status"] == "True")
        })?;
        let blocked = condition(&q, "EvictionBlocked")
            .cloned()
            .unwrap_or_default();
        ensure!(
            blocked["message"]
                .as_str()
                .is_some_and(|m| m.contains("guarded")),
            "EvictionBlocked does not name the pod: {blocked}"
        );
        eventually(
            "an EvictionBlocked event on the pod",
            Duration::from_secs(10),
            || {
                Ok(event_reasons(ctx, "Pod", "guarded")?
                    .iter()
                    .any(|r| r == REASON_EVICTION_BLOCKED)
                    .then_some(()))
            },
        )?;
        ensure!(
            !evicted(ctx, "guarded")?,
            "evicted despite the PodDisruptionBudget"
        );

        ctx.kubectl
            .ok(&["delete", "pdb", "keep-one", "-n", &ctx.ns])?;
        // A refused eviction is retried after 30 s (BLOCKED_RETRY_AFTER).
        eventually(
            "eviction once the budget is gone",
            Duration::from_secs(50),
            || Ok(evicted(ctx, "guarded")?.then_some(())),
        )?;
        Ok(())
    });
}

#[test]
fn action_none_reports_pressure_but_never_evicts() {
    run("op-none", |ctx| {
        let _op = Operator::start(ctx)?;
        running_pod(ctx, "p", NODES[0], &[("app", "report")])?;
        ctx.kubectl.apply(&quota_yaml(
            ctx,
            "q",
            "report",
            0,
            "  pressure: {gracePeriod: 1s}\n",
        ))?;
        let q = ctx.kubectl.json(&["get", "dmq", "q", "-n", &ctx.ns])?;
        ensure!(
            q["spec"]["pressure"]["action"] == "None",
            "default action: {}",
            q["spec"]
        );
        set_pressure(
            ctx,
            "p",
            "AboveHigh",
            SystemTime::now() - Duration::from_secs(600),
        )?;
        wait_quota(ctx, "q", STATUS, "1 pressured pod", |q| {
            q["status"]["pressuredPods"] == 1
        })?;
        consistently("the pod is not evicted", Duration::from_secs(5), || {
            Ok(!evicted(ctx, "p")?)
        })?;
        ensure!(
            !event_reasons(ctx, "Pod", "p")?
                .iter()
                .any(|r| r == REASON_EVICTED),
            "Evicted event under action None"
        );
        Ok(())
    });
}

#[test]
fn operator_survives_an_api_server_restart() {
    run("op-apiserver-restart", |ctx| {
        let mut op = Operator::start(ctx)?;
        running_pod(ctx, "p", NODES[0], &[("app", "a")])?;
        ctx.kubectl.apply(&quota_yaml(ctx, "before", "a", 0, ""))?;
        wait_quota(ctx, "before", STATUS, "Ready", |q| {
            q["status"]["matchedPods"] == 1
        })?;

        apiserver::restart(|| {
            // The operator must not exit while the API is away.
            consistently("the operator keeps running", Duration::from_secs(3), || {
                Ok(op.proc.exited().is_none())
            })
        })?;

        // Its watches resume: a quota made after the restart gets a status.
        ctx.kubectl.apply(&quota_yaml(ctx, "after", "a", 5, ""))?;
        wait_quota(
            ctx,
            "after",
            Duration::from_secs(60),
            "Ready after the restart",
            |q| q["status"]["matchedPods"] == 1,
        )?;
        wait_quota(ctx, "before", STATUS, "outranked by the new quota", |q| {
            cond_is(q, QUOTA_CONDITION_CONFLICT, "True", REASON_OUTRANKED)
        })?;
        ensure!(
            op.proc.exited().is_none(),
            "operator exited:\n{}",
            op.proc.log_tail(20)
        );
        Ok(())
    });
}
