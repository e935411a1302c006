//! `SimCgroups`: the `CgroupFs` backend over the in-memory kernel model (`kube-dmem-sim`), for node
//! logic tests and for running the agent where the kernel has no dmem (`--cgroup-backend=sim`).
//!
//! EDGE-shaped but in-process: it translates `CgroupPath`/`CgroupFile` to the simulator's paths and file
//! names and the simulator's errnos to `io::Error::from_raw_os_error`, so callers see exactly what the
//! real cgroupfs (or the FUSE-mounted simulator) would give them. It applies the same open policy as
//! `SysfsCgroups` (`dmem.max` non-blocking) and the checks a root writer meets (ENOENT at open,
//! EINVAL at write for a read-only file).
//! For node-logic tests it also records every write and can inject a failure (`fail_next`), so tests
//! assert on outcomes, not on call order (`docs/contributing.md` §3).

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kube_dmem_sim::{SimConfig, SimKernel};

use super::{CgroupError, CgroupFile, CgroupFs, CgroupPath};

/// How many recorded writes are kept; older ones are dropped so a long-running sim agent stays bounded.
const WRITE_LOG_LEN: usize = 1024;

/// A write the backend was asked to do, with its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedWrite {
    /// The cgroup.
    pub group: CgroupPath,
    /// The file.
    pub file: CgroupFile,
    /// The data, exactly as passed.
    pub data: String,
    /// The errno it failed with (`None`: accepted).
    pub errno: Option<i32>,
}

/// Test hooks: injected failures and the write log.
#[derive(Debug, Default)]
struct Recorder {
    /// `(cgroup, file, errno)`; no cgroup matches any.
    faults: Vec<(Option<CgroupPath>, CgroupFile, i32)>,
    writes: VecDeque<RecordedWrite>,
    /// Directories listed (`children` calls), so tests can tell a lookup from a scan.
    listings: usize,
}

/// The simulator backend. Cheap to clone; clones share one kernel, one write log and the faults.
#[derive(Debug, Clone)]
pub struct SimCgroups {
    kernel: Arc<Mutex<SimKernel>>,
    recorder: Arc<Mutex<Recorder>>,
}

impl SimCgroups {
    /// A backend over a fresh kernel with `config`.
    pub fn new(config: SimConfig) -> Self {
        SimCgroups::from_kernel(SimKernel::new(config))
    }

    /// A backend over `kernel`.
    pub fn from_kernel(kernel: SimKernel) -> Self {
        SimCgroups::from_shared(Arc::new(Mutex::new(kernel)))
    }

    /// A backend sharing `kernel` with other users (a FUSE mount, a test driving charges).
    pub fn from_shared(kernel: Arc<Mutex<SimKernel>>) -> Self {
        SimCgroups {
            kernel,
            recorder: Arc::default(),
        }
    }

    /// Makes the next read or write of `file` (in any cgroup) fail with `errno` without reaching the
    /// kernel model. Several calls queue up in order.
    pub fn fail_next(&self, file: CgroupFile, errno: i32) {
        self.recorder().faults.push((None, file, errno));
    }

    /// Like [`Self::fail_next`], for `file` of `group` only.
    pub fn fail_next_at(&self, group: &CgroupPath, file: CgroupFile, errno: i32) {
        self.recorder()
            .faults
            .push((Some(group.clone()), file, errno));
    }

    /// The writes seen so far (the most recent 1024), oldest first.
    pub fn writes(&self) -> Vec<RecordedWrite> {
        self.recorder().writes.iter().cloned().collect()
    }

    /// How many directories were listed so far.
    pub fn listings(&self) -> usize {
        self.recorder().listings
    }

    /// The recorder holds plain lists that stay consistent even if a holder panicked, so a poisoned
    /// lock is simply taken over.
    fn recorder(&self) -> MutexGuard<'_, Recorder> {
        self.recorder.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take_fault(&self, group: &CgroupPath, file: CgroupFile) -> Option<i32> {
        let mut recorder = self.recorder();
        let i = recorder
            .faults
            .iter()
            .position(|(g, f, _)| *f == file && g.as_ref().is_none_or(|g| g == group))?;
        Some(recorder.faults.remove(i).2)
    }

    fn record(
        &self,
        group: &CgroupPath,
        file: CgroupFile,
        data: &str,
        result: &Result<(), CgroupError>,
    ) {
        let mut recorder = self.recorder();
        if recorder.writes.len() == WRITE_LOG_LEN {
            recorder.writes.pop_front();
        }
        recorder.writes.push_back(RecordedWrite {
            group: group.clone(),
            file,
            data: data.to_owned(),
            errno: result.as_ref().err().and_then(CgroupError::errno),
        });
    }

    /// The shared kernel, for driving the driver side (regions, cgroups, charges) in tests.
    pub fn kernel(&self) -> &Arc<Mutex<SimKernel>> {
        &self.kernel
    }

    /// Locks the kernel. A poisoned lock (a thread panicked inside the simulator) is an error, not a
    /// panic: the model's state may be half-updated, so nothing further is trusted.
    fn lock(
        &self,
        path: impl FnOnce() -> PathBuf,
    ) -> Result<MutexGuard<'_, SimKernel>, CgroupError> {
        self.kernel.lock().map_err(|_| CgroupError::Backend {
            path: path(),
            detail: "a thread panicked while holding the simulated kernel",
        })
    }
}

impl SimCgroups {
    /// One write as the kernel (or an injected fault) answers it.
    fn write_kernel(
        &self,
        group: &CgroupPath,
        file: CgroupFile,
        value: &str,
    ) -> Result<(), CgroupError> {
        let path = || file_path(group, file);
        let fail = |raw| CgroupError::Write {
            path: path(),
            data: value.to_owned(),
            source: os_error(raw),
        };
        if let Some(errno) = self.take_fault(group, file) {
            return Err(fail(errno));
        }
        // `write_file` starts with the open(2) check a real writer meets first (ENOENT for a missing
        // file); a read-only file then fails the write with EINVAL, as for root on the kernel.
        let result = self.lock(path)?.write_file(
            group.as_str(),
            file.file_name(),
            value.as_bytes(),
            file.writes_nonblocking(),
        );
        match result {
            Ok(n) if n == value.len() => Ok(()),
            Ok(written) => Err(CgroupError::ShortWrite {
                path: path(),
                data: value.to_owned(),
                written,
            }),
            Err(e) => {
                if e.errno().is_none() {
                    // A real kernel would have crashed; FUSE reports EIO, and so do we.
                    tracing::error!(
                        error = &e as &dyn std::error::Error,
                        "Simulated kernel oops"
                    );
                }
                Err(fail(e.raw_errno()))
            }
        }
    }
}

/// The simulator's path for errors: the hierarchy path of the file.
fn file_path(group: &CgroupPath, file: CgroupFile) -> PathBuf {
    PathBuf::from(group.as_str()).join(file.file_name())
}

fn os_error(raw: i32) -> io::Error {
    io::Error::from_raw_os_error(raw)
}

impl CgroupFs for SimCgroups {
    fn read(&self, group: &CgroupPath, file: CgroupFile) -> Result<String, CgroupError> {
        let path = || file_path(group, file);
        if let Some(errno) = self.take_fault(group, file) {
            return Err(CgroupError::Read {
                path: path(),
                source: os_error(errno),
            });
        }
        let kernel = self.lock(path)?;
        kernel
            .read_file(group.as_str(), file.file_name())
            .map_err(|e| CgroupError::Read {
                path: path(),
                source: os_error(e.raw()),
            })
    }

    fn write(&self, group: &CgroupPath, file: CgroupFile, value: &str) -> Result<(), CgroupError> {
        let result = self.write_kernel(group, file, value);
        self.record(group, file, value, &result);
        result
    }

    fn children(&self, group: &CgroupPath) -> Result<Vec<String>, CgroupError> {
        self.recorder().listings += 1;
        let path = || PathBuf::from(group.as_str());
        let kernel = self.lock(path)?;
        kernel
            .children(group.as_str())
            .map_err(|e| CgroupError::List {
                path: path(),
                source: os_error(e.raw()),
            })
    }

    fn exists(&self, group: &CgroupPath, file: CgroupFile) -> bool {
        self.kernel.lock().is_ok_and(|k| {
            k.files(group.as_str())
                .is_ok_and(|files| files.contains(&file.file_name()))
        })
    }
}

#[cfg(test)]
mod tests {
    use kube_dmem_sim::Profile;

    use super::*;

    /// One region; something was enabled at the root once, so it shows its dmem files.
    fn sim() -> SimCgroups {
        let mut kernel = SimKernel::new(SimConfig::with_profile(Profile::Current));
        kernel.register_region("r0", 1 << 30, true);
        for op in ["+dmem", "-dmem"] {
            kernel
                .write_file("/", "cgroup.subtree_control", op.as_bytes(), false)
                .expect("root subtree_control");
        }
        SimCgroups::from_kernel(kernel)
    }

    #[test]
    fn errors_carry_hierarchy_path_and_errno() {
        let sim = sim();
        let root = CgroupPath::root();
        assert_eq!(
            sim.read(&root, CgroupFile::DmemCapacity).unwrap(),
            "r0 1073741824\n"
        );
        let err = sim
            .write(&root, CgroupFile::DmemCurrent, "r0 1")
            .unwrap_err();
        assert_eq!(
            (err.errno(), err.path()),
            (Some(libc::EINVAL), std::path::Path::new("/dmem.current"))
        );
        let err = sim.write(&root, CgroupFile::DmemMax, "r0 1").unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOENT));
        let gone = CgroupPath::new("/gone").unwrap();
        assert_eq!(sim.children(&gone).unwrap_err().errno(), Some(libc::ENOENT));
        assert!(!sim.exists(&gone, CgroupFile::CgroupControllers));
        assert!(sim.exists(&root, CgroupFile::DmemCapacity));
        assert!(!sim.exists(&root, CgroupFile::DmemPeak));
    }

    #[test]
    fn poisoned_kernel_is_an_error_not_a_panic() {
        let sim = sim();
        let shared = sim.kernel().clone();
        let poisoner = std::thread::spawn(move || {
            let _guard = shared.lock().unwrap();
            panic!("poisoning the simulated kernel on purpose");
        });
        assert!(poisoner.join().is_err());
        let root = CgroupPath::root();
        let err = sim.read(&root, CgroupFile::DmemCapacity).unwrap_err();
        assert_eq!(err.reason(), "CgroupBackendFailed");
        assert_eq!(err.path(), std::path::Path::new("/dmem.capacity"));
        assert_eq!(
            sim.write(&root, CgroupFile::CgroupSubtreeControl, "+dmem")
                .unwrap_err()
                .reason(),
            "CgroupBackendFailed"
        );
        assert!(sim.children(&root).is_err());
        assert!(!sim.exists(&root, CgroupFile::DmemCapacity));
    }

    #[test]
    fn injected_faults_and_the_write_log() {
        let sim = sim();
        let root = CgroupPath::root();
        sim.fail_next(CgroupFile::CgroupSubtreeControl, libc::EIO);
        sim.fail_next(CgroupFile::DmemCapacity, libc::EACCES);
        let err = sim
            .write(&root, CgroupFile::CgroupSubtreeControl, "+dmem")
            .unwrap_err();
        assert_eq!(err.errno(), Some(libc::EIO));
        sim.write(&root, CgroupFile::CgroupSubtreeControl, "+dmem")
            .unwrap();
        let err = sim.read(&root, CgroupFile::DmemCapacity).unwrap_err();
        assert_eq!(err.reason(), "CgroupPermissionDenied");
        assert!(
            sim.read(&root, CgroupFile::DmemCapacity).is_ok(),
            "a fault fires once"
        );
        let errnos: Vec<_> = sim.writes().iter().map(|w| w.errno).collect();
        assert_eq!(errnos, [Some(libc::EIO), None]);
        assert_eq!(sim.writes()[1].data, "+dmem");
        for _ in 0..WRITE_LOG_LEN + 5 {
            let _ = sim.write(&root, CgroupFile::DmemCurrent, "x");
        }
        assert_eq!(sim.writes().len(), WRITE_LOG_LEN);
        assert_eq!(sim.writes()[0].errno, Some(libc::EINVAL));
    }
}
