//! EDGE (the driver) of one pass: observe (edge, caches only) → decide (core) → act (edge,
//! client) → record (core) → publish (edge, client). One screen; the stages live in their modules.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;
use tracing::{debug, info, instrument};

use crate::controller::Context;
use crate::decide::decide;
use crate::decide::notices::outcome_notices;
use crate::decide::remediation::RemediationState;

/// How soon to run again after failed writes or attempted evictions (whose refusals the next
/// status must show).
const AGAIN_SOON: Duration = Duration::from_secs(2);

/// What a pass leaves for the next one.
#[derive(Debug)]
pub struct PassResult {
    /// Eviction memory to pass in next time.
    pub state: RemediationState,
    /// When something becomes due without a watch event (grace ends, retry, rate budget).
    pub wake_at: Option<Timestamp>,
    /// Run again after this long, whatever the watches say.
    pub again_after: Option<Duration>,
    /// Leadership was lost during the pass; nothing after that point was written.
    pub interrupted: bool,
}

/// Runs one pass with the current caches; writes only while `leading` stays true.
#[instrument(skip_all)]
pub async fn reconcile(
    ctx: &Context,
    state: &RemediationState,
    leading: &watch::Receiver<bool>,
) -> PassResult {
    let _timer = ctx.metrics.time_pass();
    // Observe: read the reflector caches (no client call).
    let observed = ctx.caches.snapshot();
    // Decide: pure; the clock enters here and only here.
    let plan = decide(&observed, state, Timestamp::now());
    // Act: status patches and evictions (client).
    let report = ctx.actor.apply_plan(&plan, leading).await;
    // Record: outcomes into the eviction memory (pure), then publish the events (client).
    let (state, news) = plan
        .remediation
        .clone()
        .record(&report.evictions, Timestamp::now());
    let mut notices = plan.notices.clone();
    notices.extend(outcome_notices(&report.evictions, &news));
    ctx.actor.publish(&notices, leading).await;

    ctx.metrics.observe_summary(&plan.summary);
    let result = if report.failed > 0 { "error" } else { "ok" };
    ctx.metrics
        .passes
        .get_or_create(&vec![("result", result)])
        .inc();
    let s = &plan.summary;
    if report.patched + report.failed + report.evictions.len() > 0 {
        info!(
            quotas = s.quotas,
            patched = report.patched,
            failed = report.failed,
            evictions = report.evictions.len(),
            candidates = s.candidates,
            rate_limited = s.rate_limited,
            "Reconciled quotas"
        );
    } else {
        debug!(
            quotas = s.quotas,
            governed = s.governed_pods,
            pressured = s.pressured_pods,
            "Nothing to write"
        );
    }
    let again = report.failed > 0 || !report.evictions.is_empty();
    PassResult {
        state,
        wake_at: plan.wake_at,
        again_after: again.then_some(AGAIN_SOON),
        interrupted: report.interrupted,
    }
}
