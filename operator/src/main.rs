//! `kube-dmem-operator`: parses flags, sets up logging, connects to the cluster, checks that the
//! DmemQuota CRD is installed, then runs the controller until SIGTERM or SIGINT.

use anyhow::Context as _;
use clap::Parser;
use kube_dmem_operator::{args::Args, controller, metrics::Metrics, observe};
use kube_dmem_runtime::telemetry;
use prometheus_client::registry::Registry;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::info;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(&args.log_level, args.log_format)?;
    // Client::try_default, keeping the config: act builds a second client from it.
    let config = kube::Config::infer()
        .await
        .context("no Kubernetes config (in-cluster or $KUBECONFIG)")?;
    let client =
        kube::Client::try_from(config.clone()).context("could not build a Kubernetes client")?;
    observe::ensure_crd_installed(&client).await?;

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let stop = CancellationToken::new();
    let mut terminate = signal(SignalKind::terminate()).context("could not listen for SIGTERM")?;
    let mut controller = tokio::spawn(controller::run(
        args,
        config,
        client,
        metrics,
        registry,
        stop.clone(),
    ));

    let finished = tokio::select! {
        biased;
        _ = terminate.recv() => None,
        _ = tokio::signal::ctrl_c() => None,
        finished = &mut controller => Some(finished),
    };
    let result = match finished {
        Some(finished) => finished,
        None => {
            info!("Shutting down");
            stop.cancel();
            controller.await
        }
    };
    result.context("controller task panicked")??;
    info!("Stopped");
    Ok(())
}
