//! The `simfs` subcommand: build a simulated kernel with the given profile and regions, mount it, and
//! stay up until SIGINT, SIGTERM or an external unmount, then unmount cleanly.
//!
//! EDGE (signals, mount). Everything it decides comes from [`ServeConfig`].

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kube_dmem_sim::{Profile, SimConfig, SimKernel};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

/// What to serve and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// An existing directory to mount on.
    pub mountpoint: PathBuf,
    /// The kernel profile to simulate.
    pub profile: Profile,
    /// Regions to register, in order: `(name, size in bytes)`.
    pub regions: Vec<(String, u64)>,
    /// Whether the regions' drivers register a reclaim op (xe and amdgpu VRAM do on 7.3+).
    pub reclaim: bool,
}

/// Why serving ended in failure.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The FUSE mount failed (no `/dev/fuse`, not root, not a directory, ...).
    #[error("mounting the simulator on {}", path.display())]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Installing the signal handlers failed.
    #[error("installing signal handlers")]
    Signals(#[source] io::Error),
    /// Unmounting at shutdown failed (the mount was detached lazily instead).
    #[error("unmounting the simulator from {}", path.display())]
    Unmount {
        /// The mount point.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The simulated kernel `config` describes.
pub fn build_kernel(config: &ServeConfig) -> SimKernel {
    let mut kernel = SimKernel::new(SimConfig::with_profile(config.profile));
    for (name, size) in &config.regions {
        kernel.register_region(name, *size, config.reclaim);
    }
    kernel
}

/// Mounts and serves until a signal or an external unmount.
pub async fn serve(config: ServeConfig) -> Result<(), ServeError> {
    let kernel = Arc::new(Mutex::new(build_kernel(&config)));
    let path = config.mountpoint.clone();
    // Install the handlers before mounting, so a signal right after the mount is not lost.
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    let (ended_tx, ended) = tokio::sync::oneshot::channel::<()>();
    let mount = super::mount_with(
        kernel,
        &path,
        Box::new(move || {
            // The receiver is gone only when we are already shutting down.
            let _ = ended_tx.send(());
        }),
    )
    .map_err(|source| ServeError::Mount {
        path: path.clone(),
        source,
    })?;
    info!(
        mountpoint = %path.display(),
        profile = ?config.profile,
        regions = config.regions.len(),
        "Simulator mounted"
    );
    let cause = tokio::select! {
        biased;
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = ended => "unmounted externally",
    };
    info!(cause, "Stopping the simulator");
    // Blocking, but short (umount(2) and joining the session thread), and nothing else runs now.
    mount
        .unmount()
        .map_err(|source| ServeError::Unmount { path, source })?;
    info!("Simulator unmounted");
    Ok(())
}
