//! NRI probe for `tests/nri/real-containerd.sh`: runs the agent's NRI plugin (`crate::nri`, the
//! code `run --nri-socket` uses) against a real runtime, with a stand-in agent loop that reports
//! every pod's limits as in force, and appends one line per request the plugin handled to a file:
//! `<unix-nanos> <method> <namespace/name or -> <container id or -> <outcome or ->`.
//!
//! With a third argument `MARKER_DIR`, the stand-in loop also does what the real loop does before
//! it answers (puts something in force), observable from inside a container: it appends a line
//! `round` to `MARKER_DIR/<namespace>.<name>` before it replies.
//!
//! With `NRI_PROBE_ROUND_DELAY_MS` set, each round takes that long (a stuck agent loop).
//!
//! Usage: `nri_probe SOCKET EVENTS_FILE [MARKER_DIR]`; runs until killed.

use std::io::Write as _;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use kube_dmem_device_plugin::nri::plugin::NriPlugin;
use kube_dmem_device_plugin::nri::{NriConfig, run};
use kube_dmem_device_plugin::round::LimitsOutcome;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("debug")
        .init();
    let mut args = std::env::args_os().skip(1);
    let (Some(socket), Some(events)) = (args.next(), args.next()) else {
        return Err("usage: nri_probe SOCKET EVENTS_FILE [MARKER_DIR]".into());
    };
    let markers = args.next().map(std::path::PathBuf::from);
    let delay = std::env::var("NRI_PROBE_ROUND_DELAY_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map(std::time::Duration::from_millis);
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&events)?;
    let (rounds, mut asked) = mpsc::channel(16);
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let plugin = Arc::new(NriPlugin::new(rounds).with_observer(seen_tx));
    // The stand-in loop: every round puts every pod's limits in force.
    tokio::spawn(async move {
        while let Some(req) = asked.recv().await {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let (namespace, name) = &req.pod;
            let append = |dir: &std::path::Path| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(format!("{namespace}.{name}")))
                    .and_then(|mut f| f.write_all(b"round\n"))
            };
            if let Some(Err(e)) = markers.as_deref().map(append) {
                tracing::error!(
                    error = &e as &dyn std::error::Error,
                    "Cannot write the marker"
                );
                let _ = req.reply.send(None);
                continue;
            }
            let _ = req.reply.send(Some(LimitsOutcome::Applied));
        }
    });
    tokio::spawn(run(
        NriConfig {
            socket: socket.into(),
        },
        plugin,
        CancellationToken::new(),
    ));
    while let Some(s) = seen.recv().await {
        let nanos = s.at.duration_since(UNIX_EPOCH)?.as_nanos();
        let pod = s.pod.map_or("-".to_owned(), |p| p.to_string());
        let ensured = s.ensured.map_or("-".to_owned(), |e| format!("{e:?}"));
        writeln!(
            out,
            "{nanos} {} {pod} {} {ensured}",
            s.method,
            s.container.as_deref().unwrap_or("-")
        )?;
        out.flush()?;
    }
    Ok(())
}
