//! The FUSE-mounted simulator behaves like cgroupfs for what the agent and a shell do: modes and
//! mount options, reads by offset, `O_TRUNC`, one simulator write per `write(2)`, errnos passed through
//! unchanged (EINVAL, EAGAIN, ENOENT, EBUSY, EEXIST, E2BIG; EACCES for others), `mkdir`/`rmdir`, other users
//! reading but not writing; and the `simfs` binary serving until SIGTERM or an external unmount.

// The vector bodies are plain fns shared by the generated #[test]s, which clippy's
// allow-unwrap-in-tests does not see as tests; here a failed unwrap is a failed assertion.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{
    Env, FuseEnv, Kind, R0, R1, apply_setup_s, cg, fuse_available, kernel, setup_s, with_timeout,
};
use kube_dmem_device_plugin::cgroup::CgroupFile::*;
use kube_dmem_sim::Profile;

/// Runs a FUSE test body under the timeout guard, or skips it where FUSE is unavailable.
fn fuse_test(body: fn()) {
    if fuse_available() {
        with_timeout(body);
    }
}

/// Setup S through FUSE, returned as the concrete type for its host paths.
fn fuse_s(profile: Profile) -> FuseEnv {
    let env = FuseEnv::mount(kernel(profile)).expect("mount");
    apply_setup_s(&env);
    env
}

#[test]
fn modes_sizes_and_mount_options() {
    fuse_test(|| {
        let env = fuse_s(Profile::Current);
        let mode = |group: &str, file: Option<&str>| {
            let meta = fs::metadata(env.host_path(group, file)).unwrap();
            assert_eq!(meta.size(), 0, "cgroupfs files report size 0");
            meta.permissions().mode() & 0o7777
        };
        assert_eq!(mode("/", None), 0o755);
        assert_eq!(mode("/", Some("dmem.capacity")), 0o444);
        assert_eq!(mode("/", Some("cgroup.subtree_control")), 0o644);
        assert_eq!(mode("/k/a", Some("dmem.max")), 0o644);
        assert_eq!(mode("/k/a", Some("dmem.current")), 0o444);
        assert_eq!(mode("/k/a", Some("dmem.peak")), 0o444);
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
        let root = env.root().to_str().unwrap();
        let line = mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(root))
            .expect("mounted");
        assert!(line.starts_with("kube-dmem-sim "), "{line}");
        assert!(
            line.contains("default_permissions") && line.contains("allow_other"),
            "{line}"
        );
        let mut names: Vec<_> = fs::read_dir(env.host_path("/k", None))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert!(
            names.contains(&"a".to_owned()) && names.contains(&"dmem.max".to_owned()),
            "{names:?}"
        );
    });
}

#[test]
fn reads_by_offset() {
    fuse_test(|| {
        let env = fuse_s(Profile::Legacy);
        let want = format!("{R0} 8514437120\n{R1} 17095983104\n");
        let mut file = fs::File::open(env.host_path("/", Some("dmem.capacity"))).unwrap();
        let (mut got, mut buf) = (Vec::new(), [0u8; 7]);
        loop {
            let n = file.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(String::from_utf8(got).unwrap(), want);
        let mut tail = vec![0u8; 64];
        let n = file.read_at(&mut tail, 10).unwrap();
        assert_eq!(&tail[..n], &want.as_bytes()[10..]);
        assert_eq!(file.read_at(&mut tail, 10_000).unwrap(), 0);
    });
}

#[test]
fn shell_redirect_and_truncating_open() {
    fuse_test(|| {
        let env = fuse_s(Profile::Current);
        let max = env.host_path("/k/a", Some("dmem.max"));
        let script = format!(
            "echo '{R0} 1G' > '{}' && cat '{}'",
            max.display(),
            max.display()
        );
        let out = Command::new("sh").args(["-c", &script]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("{R0} 1073741824\n{R1} max\n")
        );
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&max)
            .unwrap();
        f.write_all(format!("{R1} 2G").as_bytes()).unwrap();
        let text = fs::read_to_string(&max).unwrap();
        assert_eq!(text, format!("{R0} 1073741824\n{R1} 2147483648\n"));
    });
}

#[test]
fn each_write_call_is_one_kernel_write() {
    fuse_test(|| {
        let env = fuse_s(Profile::Current);
        let max = env.host_path("/k/a", Some("dmem.max"));
        let mut f = OpenOptions::new().write(true).open(&max).unwrap();
        // Two single-region writes on one descriptor: two handler calls, both accepted on 7.3+.
        assert_eq!(f.write(format!("{R0} 1G\n").as_bytes()).unwrap(), 26);
        assert_eq!(f.write(format!("{R1} 2G\n").as_bytes()).unwrap(), 25);
        let text = fs::read_to_string(&max).unwrap();
        assert_eq!(text, format!("{R0} 1073741824\n{R1} 2147483648\n"));
        // The same bytes in one call are one multi-line write: EINVAL on 7.3+.
        let err = f
            .write(format!("{R0} 1G\n{R1} 2G\n").as_bytes())
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        // Larger than the cgroup write limit (PAGE_SIZE): E2BIG, as one request.
        let big = format!("{R0} {}\n", "1".repeat(5000));
        assert_eq!(
            f.write(big.as_bytes()).unwrap_err().raw_os_error(),
            Some(libc::E2BIG)
        );
    });
}

#[test]
fn errors_pass_through_with_path_and_errno() {
    fuse_test(|| {
        let env = fuse_s(Profile::Current);
        let a = cg("/k/a");
        let err = env
            .fs()
            .write(&a, DmemCurrent, &format!("{R0} 1"))
            .unwrap_err();
        // Root opens the 0444 file for writing (CAP_DAC_OVERRIDE); the write fails with EINVAL,
        // as `cgroup_file_write` answers a file without a write handler.
        assert_eq!(err.errno(), Some(libc::EINVAL));
        assert_eq!(err.path(), env.host_path("/k/a", Some("dmem.current")));
        let err = env.fs().write(&cg("/"), DmemCapacity, "x").unwrap_err();
        assert_eq!(err.errno(), Some(libc::EINVAL));
        let err = env
            .fs()
            .write(&cg("/"), DmemMax, &format!("{R0} 1"))
            .unwrap_err();
        assert_eq!(
            err.errno(),
            Some(libc::ENOENT),
            "dmem.max is not on the root"
        );
        let err = env.fs().read(&cg("/k/gone"), DmemMax).unwrap_err();
        assert_eq!(
            (err.errno(), err.reason()),
            (Some(libc::ENOENT), "CgroupNotFound")
        );
        let err = env.fs().write(&a, DmemMax, "bogus 1G").unwrap_err();
        assert_eq!(
            (err.errno(), err.reason()),
            (Some(libc::EINVAL), "CgroupWriteRejected")
        );
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("Invalid argument"), "{source}");
        // "No internal processes": /k/a has tasks.
        let err = env
            .fs()
            .write(&a, CgroupSubtreeControl, "+dmem")
            .unwrap_err();
        assert_eq!(
            (err.errno(), err.reason()),
            (Some(libc::EBUSY), "CgroupBusy")
        );
        // EAGAIN from the driver model through the charge file.
        env.fs().write(&a, DmemMax, &format!("{R0} 1G")).unwrap();
        assert_eq!(env.charge("/k/a", R0, "+2G"), Err(libc::EAGAIN));
        // mkdir/rmdir errnos.
        assert_eq!(env.mkdir("/k/a"), Err(libc::EEXIST));
        assert_eq!(env.rmdir("/k"), Err(libc::EBUSY), "children block rmdir");
        assert_eq!(env.rmdir("/k/nope"), Err(libc::ENOENT));
        let unlink = fs::remove_file(env.host_path("/k/a", Some("dmem.max"))).unwrap_err();
        assert_eq!(unlink.raw_os_error(), Some(libc::EPERM));
    });
}

#[test]
fn controller_enabling_through_files() {
    fuse_test(|| {
        let env = FuseEnv::mount(kernel(Profile::Legacy)).unwrap();
        env.mkdir("/k").unwrap();
        env.mkdir("/k/a").unwrap();
        // dmem is not in /k's cgroup.controllers until the root enables it.
        let err = env
            .fs()
            .write(&cg("/k"), CgroupSubtreeControl, "+dmem")
            .unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOENT));
        assert_eq!(env.fs().read(&cg("/k"), CgroupControllers).unwrap(), "");
        env.fs()
            .write(&cg("/"), CgroupSubtreeControl, "+dmem")
            .unwrap();
        assert_eq!(
            env.fs().read(&cg("/k"), CgroupControllers).unwrap(),
            "dmem\n"
        );
        assert!(env.fs().exists(&cg("/k"), DmemMax));
        assert!(
            !env.fs().exists(&cg("/k/a"), DmemMax),
            "a new child still lacks a css"
        );
        env.fs()
            .write(&cg("/k"), CgroupSubtreeControl, "+dmem")
            .unwrap();
        assert!(
            env.fs().exists(&cg("/k/a"), DmemMax),
            "files appear without a remount"
        );
        env.rmdir("/k/a").unwrap();
        assert!(!env.host_path("/k/a", None).exists());
    });
}

#[test]
fn other_users_read_but_cannot_write() {
    fuse_test(|| {
        let env = fuse_s(Profile::Current);
        let as_nobody = |script: String| {
            Command::new("setpriv")
                .args([
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "sh",
                    "-c",
                    &script,
                ])
                .output()
        };
        let capacity = env.host_path("/", Some("dmem.capacity"));
        let Ok(out) = as_nobody(format!("cat '{}'", capacity.display())) else {
            eprintln!("setpriv unavailable; skipping");
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with(R0));
        let max = env.host_path("/k/a", Some("dmem.max"));
        let out = as_nobody(format!("echo '{R0} 1' > '{}'", max.display())).unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
        let text = env.fs().read(&cg("/k/a"), DmemMax).unwrap();
        assert!(text.starts_with(&format!("{R0} max")), "{text}");
    });
}

/// The `simfs` binary as a child process; killed and its mount detached if a test fails midway.
struct Served {
    child: Child,
    lines: mpsc::Receiver<String>,
    dir: tempfile::TempDir,
}

impl Served {
    fn start(envs: &[(&str, &str)]) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_kube-dmem-device-plugin"))
            .args(["simfs", "--mount"])
            .arg(dir.path())
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let served = Served { child, lines, dir };
        served.wait_for("Simulator mounted");
        served
    }

    fn wait_for(&self, text: &str) {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(20)) {
                Ok(line) if line.contains(text) => return,
                Ok(_) => {}
                Err(e) => panic!("waiting for {text:?} in the log: {e}"),
            }
        }
    }

    fn is_mounted(&self) -> bool {
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
        let root = self.dir.path().to_str().unwrap().to_owned();
        mounts
            .lines()
            .any(|l| l.split(' ').nth(1) == Some(root.as_str()))
    }

    fn exit_status(&mut self) -> std::process::ExitStatus {
        self.wait_for("Simulator unmounted");
        self.child.wait().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.is_mounted() {
            let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

#[test]
fn binary_serves_until_sigterm() {
    fuse_test(|| {
        let mut served = Served::start(&[
            ("KUBE_DMEM_SIMFS_PROFILE", "legacy"),
            (
                "KUBE_DMEM_SIMFS_REGIONS",
                "drm/0000:03:00.0/vram0=8Gi,drm/0000:0a:00.0/vram=512Mi",
            ),
        ]);
        let backend = kube_dmem_device_plugin::cgroup::SysfsCgroups::with_root(served.dir.path());
        use kube_dmem_device_plugin::cgroup::CgroupFs;
        // Like a freshly booted kernel, the root shows dmem.capacity once a controller is enabled.
        let before = backend.read(&cg("/"), DmemCapacity).unwrap_err();
        assert_eq!(before.errno(), Some(libc::ENOENT));
        (backend.write(&cg("/"), CgroupSubtreeControl, "+dmem")).unwrap();
        let text = backend.read(&cg("/"), DmemCapacity);
        assert_eq!(text.unwrap(), format!("{R0} 8589934592\n{R1} 536870912\n"));
        // The backend holds directory handles in the mount, which would keep it busy.
        drop(backend);
        let kill = Command::new("kill")
            .args(["-TERM", &served.child.id().to_string()])
            .status();
        assert!(kill.unwrap().success());
        assert!(served.exit_status().success());
        assert!(!served.is_mounted());
    });
}

#[test]
fn binary_exits_on_external_unmount() {
    fuse_test(|| {
        let mut served = Served::start(&[("KUBE_DMEM_SIMFS_REGIONS", "r0=1Gi")]);
        nix::mount::umount(served.dir.path()).unwrap();
        served.wait_for("unmounted externally");
        assert!(served.exit_status().success());
        assert!(!served.is_mounted());
    });
}

#[test]
fn in_process_and_fuse_agree_on_a_session() {
    // The same sequence through both backends yields the same file texts (the FUSE layer adds nothing).
    let run = |kind| {
        let env = setup_s(kind, Profile::Current);
        env.charge("/k/a", R0, "+1G").unwrap();
        env.fs()
            .write(&cg("/k/a"), DmemLow, &format!("{R0} 512M"))
            .unwrap();
        [DmemCurrent, DmemLow, DmemMax, DmemPeak].map(|f| env.fs().read(&cg("/k/a"), f).unwrap())
    };
    let in_process = run(Kind::InProcess);
    if fuse_available() {
        let (tx, rx) = mpsc::channel();
        with_timeout(move || tx.send(run(Kind::Fuse)).unwrap());
        assert_eq!(rx.recv().unwrap(), in_process);
    }
}
