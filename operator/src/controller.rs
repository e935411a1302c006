//! Wiring: starts the admin server, the watches and leader election, then runs passes
//! ([`crate::reconcile::reconcile`]) while this replica leads: on watch events (debounced), at the
//! time the last plan asked for, and every `--resync`. Ends cleanly on the stop signal: the pass
//! in flight finishes (or stops writing), then the Lease is released.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span};

use crate::act::Actor;
use crate::args::Args;
use crate::decide::remediation::RemediationState;
use crate::health::Health;
use crate::lease::{self, LeaseConfig};
use crate::metrics::Metrics;
use crate::observe::{Caches, ObserveError};
use crate::reconcile::reconcile;
use kube_dmem_runtime::admin::{self, AdminError};

/// Quiet time after a watch event before a pass, so a burst of changes costs one pass.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// What a pass needs.
pub struct Context {
    /// Read side of the watches.
    pub caches: Caches,
    /// The API writer.
    pub actor: Actor,
    /// Metrics.
    pub metrics: Metrics,
    /// Readiness inputs.
    pub health: Arc<Health>,
}

/// Why the operator could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The admin server could not start.
    #[error("admin server")]
    StartAdmin(#[from] AdminError),
    /// The eviction client could not be built.
    #[error("eviction client")]
    BuildClient(#[source] kube::Error),
    /// The watches could not sync.
    #[error("watches")]
    SyncWatches(#[from] ObserveError),
}

/// Runs the operator until `stop` is cancelled.
///
/// # Errors
/// [`ControllerError`] when start-up fails; later failures are retried and logged.
pub async fn run(
    args: Args,
    config: kube::Config,
    client: Client,
    metrics: Metrics,
    registry: Registry,
    stop: CancellationToken,
) -> Result<(), ControllerError> {
    let Args {
        admin_addr,
        log_level: _,
        log_format: _,
        lease_name,
        lease_namespace,
        pod_name,
        max_evictions_per_minute,
        resync,
    } = args;
    let identity = pod_name.unwrap_or_else(|| {
        format!(
            "kube-dmem-operator-{}-{}",
            std::process::id(),
            Timestamp::now().as_millisecond()
        )
    });
    let namespace = lease_namespace.unwrap_or_else(|| client.default_namespace().to_owned());
    // Everything that can fail at start-up comes before any task is spawned.
    let actor = Actor::new(client.clone(), config, identity.clone(), metrics.clone())
        .map_err(ControllerError::BuildClient)?;
    let listener = admin::bind(admin_addr).await?;
    let health = Arc::new(Health::default());
    let trigger = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();

    let serve = admin::serve(listener, health.clone(), Arc::new(registry), stop.clone());
    tasks.spawn(async move {
        if let Err(err) = serve.await {
            error!(
                error = &err as &dyn std::error::Error,
                "Admin server stopped"
            )
        }
    });
    let caches = Caches::start(&client, &metrics, &trigger, &stop, &mut tasks);
    let (leading_tx, leading) = watch::channel(false);
    let lease_stop = CancellationToken::new();
    let lease = LeaseConfig {
        name: lease_name,
        namespace,
        identity: identity.clone(),
    };
    info!(lease = %lease.name, namespace = %lease.namespace, identity = %identity, "Starting");
    let election = tokio::spawn(
        lease::run(client, lease, leading_tx, lease_stop.clone()).instrument(info_span!("lease")),
    );

    let ctx = Context {
        caches,
        actor,
        metrics,
        health,
    };
    let synced = tokio::select! {
        biased;
        () = stop.cancelled() => Ok(()),
        synced = ctx.caches.wait_synced() => synced.map(|()| ctx.health.set_synced()),
    };
    if synced.is_ok() {
        drive(
            &ctx,
            leading,
            &trigger,
            *resync,
            max_evictions_per_minute,
            &stop,
        )
        .await;
    }
    // Writes have stopped; now hand the Lease over, then let the watches and admin server end.
    lease_stop.cancel();
    let _ = election.await;
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(synced?)
}

/// The pass loop: idles while not leading, otherwise runs passes on events, wake-ups and resync.
async fn drive(
    ctx: &Context,
    mut leading: watch::Receiver<bool>,
    trigger: &Notify,
    resync: Duration,
    cluster_limit: u32,
    stop: &CancellationToken,
) {
    let mut state = RemediationState::new(cluster_limit);
    let mut was_leading = false;
    let mut next_at = Instant::now();
    loop {
        let is_leading = *leading.borrow_and_update();
        if is_leading != was_leading {
            ctx.health.set_leading(is_leading);
            ctx.metrics.leader.set(i64::from(is_leading));
            // A new term starts from fresh eviction memory and a pass right away.
            state = RemediationState::new(cluster_limit);
            next_at = Instant::now();
            was_leading = is_leading;
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            changed = leading.changed() => {
                if changed.is_err() { return }
                continue;
            }
            () = trigger.notified(), if is_leading => sleep(DEBOUNCE).await,
            () = sleep_until(next_at), if is_leading => {}
        }
        let pass = reconcile(ctx, &state, &leading).await;
        state = pass.state;
        if !pass.interrupted {
            ctx.health.set_passed();
        }
        let wake = pass
            .wake_at
            .map(|t| Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or_default());
        let delay = [Some(resync), wake, pass.again_after]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(resync);
        // Never spin: a due time in the past still waits one debounce interval.
        next_at = Instant::now() + delay.max(DEBOUNCE);
    }
}
