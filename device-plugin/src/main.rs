//! `kube-dmem-device-plugin`: parse arguments, set up logging, run the subcommand.

use anyhow::Context as _;
use clap::Parser;
use kube_dmem_device_plugin::args::{Args, Command};
use kube_dmem_device_plugin::{simfs, standalone, telemetry};

#[tokio::main(flavor = "current_thread")]
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
    }
    Ok(())
}
