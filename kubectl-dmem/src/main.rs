//! `kubectl-dmem`: parse the command line, run the command, print what it returns.

use std::io::Write as _;

use anyhow::Context as _;
use clap::Parser as _;
use kubectl_dmem::app;
use kubectl_dmem::args::Args;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let output = app::run(args).await?;
    let mut stderr = std::io::stderr().lock();
    for warning in &output.warnings {
        writeln!(stderr, "warning: {warning}").context("writing to stderr")?;
    }
    std::io::stdout()
        .lock()
        .write_all(output.text.as_bytes())
        .context("writing to stdout")?;
    Ok(())
}
