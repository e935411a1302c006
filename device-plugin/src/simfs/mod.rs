//! The dmem simulator as a mounted filesystem (FUSE, `fuser` 0.18 without libfuse), so the real
//! `SysfsCgroups` backend, a shell or any other program can be tested against the kernel model of
//! `docs/kernel.md` §8 through genuine `open`/`read`/`write(2)` calls.
//!
//! EDGE. `mount` starts a background FUSE session; the returned [`SimFsMount`] unmounts on drop (also
//! during a panic), falling back to a lazy detach if the mount is busy, so tests never leave mounts
//! behind. Mount options follow `docs/testing.md` §4: `default_permissions` and
//! `allow_other`, so other users can read (0644/0444) but not write.

mod fs;
mod nodes;
mod ops;
pub mod serve;

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fuser::{BackgroundSession, MountOption, SessionACL};
use kube_dmem_sim::SimKernel;
use tracing::warn;

pub use fs::{OnEnd, OnWrite, SimFs};

/// The source name shown in `/proc/mounts`.
const FS_NAME: &str = "kube-dmem-sim";

/// A mounted simulator. Dropping it unmounts.
#[derive(Debug)]
pub struct SimFsMount {
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
}

/// Mounts `kernel` at `mountpoint` (an existing directory) and serves it from a background thread.
pub fn mount(kernel: Arc<Mutex<SimKernel>>, mountpoint: &Path) -> io::Result<SimFsMount> {
    mount_with(kernel, mountpoint, Box::new(|| {}))
}

/// Like [`mount`], calling `on_end` once the session ends, whether we unmounted or someone else did.
pub fn mount_with(
    kernel: Arc<Mutex<SimKernel>>,
    mountpoint: &Path,
    on_end: OnEnd,
) -> io::Result<SimFsMount> {
    let meta = std::fs::metadata(mountpoint)?;
    spawn_session(
        SimFs::new(kernel, (meta.uid(), meta.gid()), on_end),
        mountpoint,
    )
}

/// Like [`mount`], calling `on_write` for every write the simulator accepts.
pub fn mount_observing_writes(
    kernel: Arc<Mutex<SimKernel>>,
    mountpoint: &Path,
    on_write: OnWrite,
) -> io::Result<SimFsMount> {
    let meta = std::fs::metadata(mountpoint)?;
    let filesystem = SimFs::new(kernel, (meta.uid(), meta.gid()), Box::new(|| {}));
    spawn_session(filesystem.observing_writes(on_write), mountpoint)
}

/// Mounts `filesystem` at `mountpoint` and serves it from a background thread.
fn spawn_session(filesystem: SimFs, mountpoint: &Path) -> io::Result<SimFsMount> {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName(FS_NAME.to_owned()),
        MountOption::DefaultPermissions,
    ];
    // allow_other: the mount is for every local user to read, like /sys/fs/cgroup.
    config.acl = SessionACL::All;
    let session = fuser::spawn_mount(filesystem, mountpoint, &config)?;
    Ok(SimFsMount {
        session: Some(session),
        mountpoint: mountpoint.to_owned(),
    })
}

impl SimFsMount {
    /// Where the simulator is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts and waits for the session thread to end.
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        match session.umount_and_join() {
            Ok(()) => Ok(()),
            // Not a mount point any more: someone unmounted it first, and the session ends by itself.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
            Err(e) => {
                if e.raw_os_error() == Some(libc::EBUSY) {
                    // An open file or a cwd inside: detach now so the tree disappears for new users;
                    // the kernel ends the session when the last user lets go.
                    let detach =
                        nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
                    if let Err(errno) = detach {
                        warn!(mountpoint = %self.mountpoint.display(), error = %errno, "Lazy unmount failed");
                    }
                }
                Err(e)
            }
        }
    }
}

impl Drop for SimFsMount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            warn!(
                mountpoint = %self.mountpoint.display(),
                error = &e as &dyn std::error::Error,
                "Unmounting the simulator failed"
            );
        }
    }
}
