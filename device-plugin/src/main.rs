//! `kube-dmem-device-plugin`: parse arguments, set up logging, run the subcommand.

use anyhow::Context as _;
use clap::Parser;
use kube_dmem_device_plugin::args::{Args, Command};
use kube_dmem_device_plugin::{cluster, simfs, standalone};
use kube_dmem_runtime::telemetry;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args {
        log_level,
        log_format,
        command,
    } = Args::parse();
    telemetry::init(&log_level, log_format).context("setting up logging")?;
    match command {
        Command::Simfs(simfs_args) => simfs::serve::serve(simfs_args.into_config())
            .await
            .context("serving the dmem simulator")?,
        Command::Standalone(standalone_args) => {
            standalone::run(standalone_args.into_config())
                .await
                .context("running the standalone node")?;
        }
        Command::Run(run_args) => {
            let stop = CancellationToken::new();
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("listening for SIGTERM")?;
            let on_signal = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                tracing::info!("Shutting down");
                on_signal.cancel();
            });
            cluster::run(run_args.into_config(), stop)
                .await
                .context("running the node agent")?;
        }
    }
    Ok(())
}
