//! Shared fixtures for the kernel-edge tests: the same `docs/kernel.md` §9 setup behind two
//! environments, the in-process `SimCgroups` backend and the real `SysfsCgroups` backend over the
//! FUSE-mounted simulator, plus a timeout guard so a stuck FUSE request fails a test instead of hanging.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use kube_dmem_device_plugin::cgroup::{CgroupFile, CgroupFs, CgroupPath, SimCgroups, SysfsCgroups};
use kube_dmem_device_plugin::simfs::{self, SimFsMount};
use kube_dmem_sim::{CHARGE_FILE, Profile, SimConfig, SimKernel};

/// `drm/0000:03:00.0/vram0` (xe), 8514437120 bytes.
pub const R0: &str = "drm/0000:03:00.0/vram0";
/// `drm/0000:0a:00.0/vram` (amdgpu), 17095983104 bytes.
pub const R1: &str = "drm/0000:0a:00.0/vram";
/// 1 GiB.
pub const G: u64 = 1 << 30;
/// Longest a single test body may run before it is declared hung.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Every profile, for vectors marked "both" (legacy counted with and without the fix).
pub const ALL_PROFILES: [Profile; 3] = [Profile::Legacy, Profile::LegacyUnfixed, Profile::Current];

/// A cgroup path; panics on a typo in a test.
pub fn cg(path: &str) -> CgroupPath {
    CgroupPath::new(path).expect("test paths are valid")
}

/// One test environment: a backend plus the side doors a test needs (mkdir, tasks, charges).
pub trait Env {
    /// The backend under test.
    fn fs(&self) -> &dyn CgroupFs;
    /// The simulated kernel, for state no cgroup file exposes (tasks, regions, oops count).
    fn kernel(&self) -> MutexGuard<'_, SimKernel>;
    /// `mkdir` of a cgroup; the errno on failure.
    fn mkdir(&self, path: &str) -> Result<(), i32>;
    /// `rmdir` of a cgroup; the errno on failure.
    fn rmdir(&self, path: &str) -> Result<(), i32>;
    /// One blocking (no `O_NONBLOCK`) `write(2)` to any file; the errno on failure.
    fn write_blocking(&self, group: &str, file: &str, data: &str) -> Result<(), i32>;
    /// A task in `group` allocates (`"+BYTES"`) or frees (`"-BYTES"`) VRAM in `region`, through the
    /// simulator's `dmem.sim.charge` file.
    fn charge(&self, group: &str, region: &str, amount: &str) -> Result<(), i32> {
        self.write_blocking(group, CHARGE_FILE, &format!("{region} {amount}"))
    }
}

/// The in-process environment.
pub struct SimEnv {
    backend: SimCgroups,
}

impl Env for SimEnv {
    fn fs(&self) -> &dyn CgroupFs {
        &self.backend
    }
    fn kernel(&self) -> MutexGuard<'_, SimKernel> {
        self.backend.kernel().lock().expect("kernel lock")
    }
    fn mkdir(&self, path: &str) -> Result<(), i32> {
        self.kernel().mkdir(path).map_err(|e| e.raw())
    }
    fn rmdir(&self, path: &str) -> Result<(), i32> {
        self.kernel().rmdir(path).map_err(|e| e.raw())
    }
    fn write_blocking(&self, group: &str, file: &str, data: &str) -> Result<(), i32> {
        let mut kernel = self.kernel();
        kernel.check_open(group, file, true).map_err(|e| e.raw())?;
        kernel
            .write_file(group, file, data.as_bytes(), false)
            .map(drop)
            .map_err(|e| e.raw_errno())
    }
}

/// The FUSE environment: the simulator mounted on a fresh tempdir, read and written by `SysfsCgroups`.
pub struct FuseEnv {
    // Declared before `dir`: fields drop in order, so the mount goes before its directory.
    mount: SimFsMount,
    backend: SysfsCgroups,
    kernel: Arc<Mutex<SimKernel>>,
    dir: tempfile::TempDir,
}

impl FuseEnv {
    /// Mounts `kernel` on a new tempdir.
    pub fn mount(kernel: SimKernel) -> std::io::Result<FuseEnv> {
        let dir = tempfile::tempdir()?;
        let kernel = Arc::new(Mutex::new(kernel));
        let mount = simfs::mount(kernel.clone(), dir.path())?;
        Ok(FuseEnv {
            mount,
            backend: SysfsCgroups::with_root(dir.path()),
            kernel,
            dir,
        })
    }

    /// The mount point.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The host path of a cgroup or file below the mount point.
    pub fn host_path(&self, group: &str, file: Option<&str>) -> PathBuf {
        let mut p = self.dir.path().join(group.trim_start_matches('/'));
        if let Some(f) = file {
            p.push(f);
        }
        p
    }

    /// The simulated kernel behind the mount, for hooks that change it from another thread.
    pub fn shared_kernel(&self) -> Arc<Mutex<SimKernel>> {
        self.kernel.clone()
    }

    /// Unmounts now (instead of at drop) and reports the result.
    pub fn unmount(self) -> std::io::Result<()> {
        self.mount.unmount()
    }
}

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

impl Env for FuseEnv {
    fn fs(&self) -> &dyn CgroupFs {
        &self.backend
    }
    fn kernel(&self) -> MutexGuard<'_, SimKernel> {
        self.kernel.lock().expect("kernel lock")
    }
    fn mkdir(&self, path: &str) -> Result<(), i32> {
        std::fs::create_dir(self.host_path(path, None)).map_err(errno)
    }
    fn rmdir(&self, path: &str) -> Result<(), i32> {
        std::fs::remove_dir(self.host_path(path, None)).map_err(errno)
    }
    fn write_blocking(&self, group: &str, file: &str, data: &str) -> Result<(), i32> {
        let mut f = OpenOptions::new()
            .write(true)
            .custom_flags(0)
            .open(self.host_path(group, Some(file)))
            .map_err(errno)?;
        let n = f.write(data.as_bytes()).map_err(errno)?;
        assert_eq!(n, data.len(), "short write");
        Ok(())
    }
}

/// Which environment a test runs in.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// `SimCgroups` in-process.
    InProcess,
    /// `SysfsCgroups` over the FUSE mount.
    Fuse,
}

/// A kernel with regions R0 and R1 registered (drivers with a reclaim op), no cgroups.
pub fn kernel(profile: Profile) -> SimKernel {
    let mut k = SimKernel::new(SimConfig::with_profile(profile));
    k.register_region(R0, 8_514_437_120, true);
    k.register_region(R1, 17_095_983_104, true);
    k
}

/// An environment of `kind` over `kernel`.
pub fn env(kind: Kind, kernel: SimKernel) -> Box<dyn Env> {
    match kind {
        Kind::InProcess => Box::new(SimEnv {
            backend: SimCgroups::from_kernel(kernel),
        }),
        Kind::Fuse => Box::new(FuseEnv::mount(kernel).expect("mount the simulator")),
    }
}

/// Setup S of `docs/kernel.md` §9 in a fresh environment of `kind`.
pub fn setup_s(kind: Kind, profile: Profile) -> Box<dyn Env> {
    let env = env(kind, kernel(profile));
    apply_setup_s(&*env);
    env
}

/// Setup S on `env`: `/` and `/k` enable dmem; `/k/a`, `/k/b` have tasks. The `+dmem` writes and the
/// `mkdir`s go through the environment's files, like on a real node.
pub fn apply_setup_s(env: &dyn Env) {
    let subtree = CgroupFile::CgroupSubtreeControl;
    env.fs()
        .write(&cg("/"), subtree, "+dmem")
        .expect("enable dmem at /");
    env.mkdir("/k").expect("mkdir /k");
    env.fs()
        .write(&cg("/k"), subtree, "+dmem")
        .expect("enable dmem at /k");
    for child in ["/k/a", "/k/b"] {
        env.mkdir(child).expect("mkdir child");
        env.kernel().set_has_tasks(child, true).expect("tasks");
    }
}

/// The simulator mounted with FUSE, with the kubelet's systemd-driver hierarchy down to the
/// BestEffort slice made through the mount (as the kubelet would) and dmem enabled top-down.
pub fn kubepods_node(profile: Profile) -> FuseEnv {
    let env = FuseEnv::mount(kernel(profile)).expect("mount");
    let fs = SysfsCgroups::with_root(env.root());
    fs.write(&cg("/"), CgroupFile::CgroupSubtreeControl, "+dmem")
        .expect("+dmem");
    for dir in [
        "/kubepods.slice",
        "/kubepods.slice/kubepods-besteffort.slice",
    ] {
        std::fs::create_dir(env.host_path(dir, None)).expect("mkdir");
        fs.write(&cg(dir), CgroupFile::CgroupSubtreeControl, "+dmem")
            .expect("+dmem");
    }
    env
}

/// Makes `group` through the mount (as runc would) with a task in it.
pub fn add_running_cgroup(env: &FuseEnv, group: &str) {
    std::fs::create_dir(env.host_path(group, None)).expect("mkdir");
    env.kernel().set_has_tasks(group, true).expect("tasks");
}

/// Whether FUSE mounts work here (root, `/dev/fuse`). Checked once by mounting a probe. With
/// `KUBE_DMEM_REQUIRE_FUSE=1` a missing FUSE fails the tests instead of skipping them.
pub fn fuse_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| match FuseEnv::mount(kernel(Profile::Current)) {
        Ok(env) => env.unmount().is_ok(),
        Err(e) => {
            assert!(
                std::env::var("KUBE_DMEM_REQUIRE_FUSE").as_deref() != Ok("1"),
                "FUSE required but unavailable: {e}"
            );
            eprintln!("FUSE unavailable ({e}); skipping FUSE tests");
            false
        }
    })
}

/// Runs `body` on its own thread and fails if it does not finish within [`TEST_TIMEOUT`]; a panic
/// in `body` is re-raised here (its fixtures, and so its mount, are dropped while unwinding).
pub fn with_timeout(body: impl FnOnce() + Send + 'static) {
    let (done_tx, done) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        body();
        let _ = done_tx.send(());
    });
    match done.recv_timeout(TEST_TIMEOUT) {
        Ok(()) => handle.join().expect("finished thread joins"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread ended without reporting"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test body hung for {TEST_TIMEOUT:?}"),
    }
}

/// Runs `body` in both environments: in-process, then (if available) through FUSE under a timeout.
pub fn in_both(body: fn(Kind)) {
    body(Kind::InProcess);
    if fuse_available() {
        with_timeout(move || body(Kind::Fuse));
    }
}
