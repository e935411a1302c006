//! Differential kernel tests: the `docs/kernel.md` §9 vectors (and eviction and reclaim scenarios)
//! run against a real dmem kernel through the production backend (`SysfsCgroups` on
//! `/sys/fs/cgroup`, buffers through the `dmemtest` driver of `tests/vm/dmemtest`) and against the
//! simulator (`SimCgroups`, legacy profile for 7.2, current for 7.3). Each vector records what it
//! observes (file contents, errnos, which buffers were evicted) on both sides; the records must be
//! equal. Differences the team knows about are listed in `tests/vm/known-differences.txt` (and
//! explained in `tests/vm/FINDINGS.md`): a listed difference is reported, an unlisted one fails,
//! and a listed one that no longer happens fails too, so the list stays exact.
//!
//! Runs only inside the test VM (`tests/vm/run.sh` sets `KUBE_DMEM_REAL_KERNEL=1`; `tests/vm/test.sh`
//! is what CI calls). Elsewhere it says loudly that it skipped. Inside the VM a kernel without dmem
//! is a failure. `harness = false`: this binary is also the helper process that moves itself into
//! a cgroup and allocates there (`KUBE_DMEM_RK_HELPER`), so no `fork` or `unsafe` is needed.
//! Arguments: vector names to run (default: all).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};

use kube_dmem_device_plugin::cgroup::CgroupFile::{self, *};
use kube_dmem_device_plugin::cgroup::dmem::apply_limit;
use kube_dmem_device_plugin::cgroup::format::DmemValue;
use kube_dmem_device_plugin::cgroup::{CgroupFs, CgroupPath, SimCgroups, SysfsCgroups};
use kube_dmem_sim::{BoId, CHARGE_FILE, Profile, SimConfig, SimKernel};

const R0: &str = "drm/0000:03:00.0/vram0";
const R1: &str = "drm/0000:0a:00.0/vram";
const R0_SIZE: u64 = 8_514_437_120;
const R1_SIZE: u64 = 17_095_983_104;
const G: u64 = 1 << 30;
const CGROOT: &str = "/sys/fs/cgroup";
const DEVICE: &str = "/dev/dmemtest";
const HELPER: &str = "KUBE_DMEM_RK_HELPER";
const KNOWN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/vm/known-differences.txt"
);

fn cg(path: &str) -> CgroupPath {
    CgroupPath::new(path).expect("test paths are valid")
}

fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EINVAL => "EINVAL",
        libc::ENOENT => "ENOENT",
        libc::EAGAIN => "EAGAIN",
        libc::ENOSPC => "ENOSPC",
        libc::EBUSY => "EBUSY",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::ENODEV => "ENODEV",
        libc::E2BIG => "E2BIG",
        libc::EIO => "EIO",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => return format!("errno {e}"),
    };
    name.to_owned()
}

fn io_errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// A buffer as the driver (or the simulator's driver model) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Buffer {
    id: u64,
    region: String,
    bytes: u64,
    charged: String,
    resident: bool,
}

/// One side of the comparison: the real kernel or the simulator.
trait Side {
    /// The `CgroupFs` backend under test.
    fn fs(&self) -> &dyn CgroupFs;
    fn mkdir(&mut self, group: &str) -> Result<(), i32>;
    fn rmdir(&mut self, group: &str) -> Result<(), i32>;
    /// One blocking `write(2)` (no `O_NONBLOCK`); the byte count or the errno.
    fn write_blocking(&mut self, group: &str, file: &str, data: &str) -> Result<usize, i32>;
    /// Puts a long-lived task into `group` (or takes it out again).
    fn set_tasks(&mut self, group: &str, on: bool);
    /// A task in `group` allocates (`+BYTES`) or frees (`-BYTES`) VRAM in `region`.
    fn alloc(&mut self, group: &str, region: &str, amount: &str) -> Result<(), i32>;
    fn unregister(&mut self, region: &str) -> Result<(), i32>;
    fn buffers(&mut self) -> Vec<Buffer>;
}

// ---------------------------------------------------------------------------------------------
// The simulator side.

struct SimSide {
    backend: SimCgroups,
}

impl SimSide {
    /// `root_files`: the kernel's root already shows `dmem.capacity` (something was enabled in
    /// its `cgroup.subtree_control` since boot, by an earlier vector); the simulator gets there the
    /// same way, `+dmem` then `-dmem` at the root.
    fn new(profile: Profile, regions: &[(&str, u64)], root_files: bool) -> SimSide {
        let mut kernel = SimKernel::new(SimConfig::with_profile(profile));
        for (name, size) in regions {
            kernel.register_region(name, *size, true);
        }
        if root_files {
            for op in ["+dmem", "-dmem"] {
                kernel
                    .write_file("/", "cgroup.subtree_control", op.as_bytes(), false)
                    .expect("root subtree_control");
            }
        }
        SimSide {
            backend: SimCgroups::from_kernel(kernel),
        }
    }

    fn kernel(&self) -> std::sync::MutexGuard<'_, SimKernel> {
        self.backend.kernel().lock().expect("kernel lock")
    }
}

impl Side for SimSide {
    fn fs(&self) -> &dyn CgroupFs {
        &self.backend
    }
    fn mkdir(&mut self, group: &str) -> Result<(), i32> {
        self.kernel().mkdir(group).map_err(|e| e.raw())
    }
    fn rmdir(&mut self, group: &str) -> Result<(), i32> {
        self.kernel().rmdir(group).map_err(|e| e.raw())
    }
    fn write_blocking(&mut self, group: &str, file: &str, data: &str) -> Result<usize, i32> {
        let mut kernel = self.kernel();
        kernel.check_open(group, file, true).map_err(|e| e.raw())?;
        kernel
            .write_file(group, file, data.as_bytes(), false)
            .map_err(|e| e.raw_errno())
    }
    fn set_tasks(&mut self, group: &str, on: bool) {
        self.kernel().set_has_tasks(group, on).expect("set tasks");
    }
    fn alloc(&mut self, group: &str, region: &str, amount: &str) -> Result<(), i32> {
        let data = format!("{region} {amount}");
        self.kernel()
            .write_file(group, CHARGE_FILE, data.as_bytes(), false)
            .map(drop)
            .map_err(|e| e.raw_errno())
    }
    fn unregister(&mut self, region: &str) -> Result<(), i32> {
        self.kernel().unregister_region(region).map_err(|e| e.raw())
    }
    fn buffers(&mut self) -> Vec<Buffer> {
        let k = self.kernel();
        (1..=256)
            .filter_map(|id| {
                let bo = BoId(id);
                Some(Buffer {
                    id,
                    region: k.bo_region(bo)?,
                    bytes: k.bo_size(bo)?,
                    charged: k.bo_pool_path(bo)?,
                    resident: k.bo_resident(bo)?,
                })
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The real kernel side.

struct RealSide {
    backend: SysfsCgroups,
    /// Long-lived tasks, by cgroup.
    sleepers: Vec<(String, Child)>,
    /// Cgroups this side created, in creation order.
    made: Vec<String>,
}

/// `GROUP/FILE` for labels, without a doubled slash at the root.
fn at(group: &str, name: &str) -> String {
    format!("{}/{name}", group.trim_end_matches('/'))
}

fn host_dir(group: &str) -> String {
    format!("{CGROOT}{}", if group == "/" { "" } else { group })
}

fn run_quiet(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl RealSide {
    /// Removes what earlier vectors left, reloads the driver with `regions`.
    fn new(regions: &[(&str, u64)], reclaim: bool) -> Result<RealSide, String> {
        let ko = std::env::var("KUBE_DMEM_DMEMTEST_KO")
            .map_err(|_| "KUBE_DMEM_DMEMTEST_KO is not set (run through tests/vm/run.sh)")?;
        // The driver may not be loaded (first vector loads it with our parameters).
        let _ = Command::new("/bin/busybox")
            .args(["rmmod", "dmemtest"])
            .output();
        remove_test_cgroups(Path::new(CGROOT))?;
        let _ = fs::write(format!("{CGROOT}/cgroup.subtree_control"), "-dmem");
        let spec: Vec<String> = regions.iter().map(|(n, s)| format!("{n}={s}")).collect();
        run_quiet(Command::new("/bin/busybox").args([
            "insmod",
            &ko,
            &format!("regions={}", spec.join(",")),
            &format!("reclaim={}", if reclaim { 1 } else { 0 }),
        ]))?;
        Ok(RealSide {
            backend: SysfsCgroups::default(),
            sleepers: Vec::new(),
            made: Vec::new(),
        })
    }

    fn spawn_helper(&self, mode: &str, group: &str, command: &str) -> Child {
        Command::new(std::env::current_exe().expect("own path"))
            .env(HELPER, mode)
            .args([host_dir(group).as_str(), command])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn helper")
    }
}

/// Every test cgroup (all of them: the guest runs nothing else), deepest first.
fn remove_test_cgroups(dir: &Path) -> Result<(), String> {
    for entry in fs::read_dir(dir).map_err(|e| format!("{dir:?}: {e}"))? {
        let entry = entry.map_err(|e| e.to_string())?;
        if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
            remove_test_cgroups(&entry.path())?;
            fs::remove_dir(entry.path()).map_err(|e| format!("rmdir {:?}: {e}", entry.path()))?;
        }
    }
    Ok(())
}

impl Drop for RealSide {
    fn drop(&mut self) {
        for (_, mut child) in self.sleepers.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Side for RealSide {
    fn fs(&self) -> &dyn CgroupFs {
        &self.backend
    }
    fn mkdir(&mut self, group: &str) -> Result<(), i32> {
        fs::create_dir(host_dir(group)).map_err(|e| io_errno(&e))?;
        self.made.push(group.to_owned());
        Ok(())
    }
    fn rmdir(&mut self, group: &str) -> Result<(), i32> {
        fs::remove_dir(host_dir(group)).map_err(|e| io_errno(&e))
    }
    fn write_blocking(&mut self, group: &str, file: &str, data: &str) -> Result<usize, i32> {
        let mut f = OpenOptions::new()
            .write(true)
            .open(format!("{}/{file}", host_dir(group)))
            .map_err(|e| io_errno(&e))?;
        f.write(data.as_bytes()).map_err(|e| io_errno(&e))
    }
    fn set_tasks(&mut self, group: &str, on: bool) {
        if on {
            let mut child = self.spawn_helper("sleep", group, "");
            let mut line = String::new();
            let stdout = child.stdout.take().expect("piped");
            BufReader::new(stdout)
                .read_line(&mut line)
                .expect("helper ready");
            assert_eq!(line.trim(), "ready", "sleeper in {group} did not start");
            self.sleepers.push((group.to_owned(), child));
        } else if let Some(i) = self.sleepers.iter().position(|(g, _)| g == group) {
            let (_, mut child) = self.sleepers.remove(i);
            drop(child.stdin.take());
            child.wait().expect("sleeper exits");
        }
    }
    fn alloc(&mut self, group: &str, region: &str, amount: &str) -> Result<(), i32> {
        let child = self.spawn_helper("alloc", group, &format!("{region} {amount}"));
        let out = child.wait_with_output().expect("helper runs");
        match out.status.code() {
            Some(0) => Ok(()),
            Some(e) if e < 200 => Err(e),
            other => panic!("alloc helper in {group} failed: {other:?}"),
        }
    }
    fn unregister(&mut self, region: &str) -> Result<(), i32> {
        let mut f = OpenOptions::new()
            .write(true)
            .open(DEVICE)
            .map_err(|e| io_errno(&e))?;
        f.write(format!("{region} unregister").as_bytes())
            .map(drop)
            .map_err(|e| io_errno(&e))
    }
    fn buffers(&mut self) -> Vec<Buffer> {
        let text = fs::read_to_string(DEVICE).expect("read the driver");
        text.lines()
            .filter_map(|l| {
                // buffer ID REGION BYTES owner OWNER charged CHARGED resident|evicted
                let f: Vec<&str> = l.split(' ').collect();
                (f.len() == 9 && f[0] == "buffer").then(|| Buffer {
                    id: f[1].parse().expect("id"),
                    region: f[2].to_owned(),
                    bytes: f[3].parse().expect("bytes"),
                    charged: f[7].to_owned(),
                    resident: f[8] == "resident",
                })
            })
            .collect()
    }
}

/// Helper process modes: move into the cgroup directory `args[1]`, then `alloc` (write `args[2]`
/// to the driver, exit with the errno) or `sleep` (say "ready", wait for stdin to close).
fn helper(mode: &str, args: &[String]) -> ExitCode {
    let (Some(dir), Some(command)) = (args.get(1), args.get(2)) else {
        eprintln!("helper: usage: CGROUP_DIR COMMAND");
        return ExitCode::from(201);
    };
    if let Err(e) = fs::write(
        format!("{dir}/cgroup.procs"),
        std::process::id().to_string(),
    ) {
        eprintln!("helper: moving into {dir}: {e}");
        return ExitCode::from(202);
    }
    if mode == "sleep" {
        println!("ready");
        let _ = std::io::stdout().flush();
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        return ExitCode::SUCCESS;
    }
    let result = OpenOptions::new()
        .write(true)
        .open(DEVICE)
        .and_then(|mut f| f.write(command.as_bytes()));
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => ExitCode::from(u8::try_from(io_errno(&e)).unwrap_or(199).min(199)),
    }
}

// ---------------------------------------------------------------------------------------------
// Observations.

/// What a vector saw, step by step: (label, observation).
#[derive(Default)]
struct Log(Vec<(String, String)>);

impl Log {
    /// Records a step; a label seen before in this vector gets ` #N` (N = 2, 3, ...) appended,
    /// so every label is a unique, stable key.
    fn note(&mut self, label: impl Into<String>, seen: impl Into<String>) {
        let mut label = label.into();
        let n = self
            .0
            .iter()
            .filter(|(l, _)| l == &label || l.starts_with(&format!("{label} #")))
            .count();
        if n > 0 {
            label = format!("{label} #{}", n + 1);
        }
        self.0.push((label, seen.into()));
    }
}

fn show<T: std::fmt::Debug>(r: Result<T, i32>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => errno_name(e),
    }
}

fn file(name: &str) -> CgroupFile {
    CgroupFile::from_file_name(name).expect("known file")
}

/// Reads through the production backend.
fn read(s: &mut dyn Side, log: &mut Log, group: &str, name: &str) {
    let seen = match s.fs().read(&cg(group), file(name)) {
        Ok(text) if name == "cgroup.controllers" => format!("{:?}", modelled_controllers(&text)),
        Ok(text) => format!("{text:?}"),
        Err(e) => errno_name(e.errno().unwrap_or(-1)),
    };
    log.note(format!("read {}", at(group, name)), seen);
}

/// A `cgroup.controllers` line cut down to the controllers the simulator models. A kernel built
/// for a container node (the 7.3 node kernel serves this stage) lists cpu, memory, io and the
/// rest at the root as well; that is configuration, not a difference in dmem.
fn modelled_controllers(line: &str) -> String {
    let kept: Vec<&str> = line.split_whitespace().filter(|c| *c == "dmem").collect();
    format!("{}\n", kept.join(" "))
}

/// One write through the production backend (`dmem.max` non-blocking, like the agent).
fn write(s: &mut dyn Side, log: &mut Log, group: &str, name: &str, data: &str) {
    let seen = match s.fs().write(&cg(group), file(name), data) {
        Ok(()) => "Ok".to_owned(),
        Err(e) => errno_name(e.errno().unwrap_or(-1)),
    };
    log.note(format!("write {} {data:?}", at(group, name)), seen);
}

fn wblock(s: &mut dyn Side, log: &mut Log, group: &str, name: &str, data: &str) {
    let seen = show(s.write_blocking(group, name, data));
    log.note(format!("blocking write {} {data:?}", at(group, name)), seen);
}

/// A non-blocking write and a read-back of the same file, as one step (for value-form tables).
fn write_read(s: &mut dyn Side, log: &mut Log, group: &str, name: &str, data: &str) {
    let wrote = match s.fs().write(&cg(group), file(name), data) {
        Ok(()) => "Ok".to_owned(),
        Err(e) => errno_name(e.errno().unwrap_or(-1)),
    };
    let now = match s.fs().read(&cg(group), file(name)) {
        Ok(text) => format!("{text:?}"),
        Err(e) => errno_name(e.errno().unwrap_or(-1)),
    };
    log.note(
        format!("write {} {data:?}, read back", at(group, name)),
        format!("{wrote}, then {now}"),
    );
}

fn alloc(s: &mut dyn Side, log: &mut Log, group: &str, region: &str, amount: &str) {
    let seen = show(s.alloc(group, region, amount));
    log.note(format!("alloc in {group}: {region} {amount}"), seen);
}

fn buffers(s: &mut dyn Side, log: &mut Log, step: &str) {
    let mut text = String::new();
    let mut all = s.buffers();
    // The driver lists buffers region by region; the simulator by id.
    all.sort_by_key(|b| b.id);
    for b in all {
        let state = if b.resident { "resident" } else { "EVICTED" };
        let _ = write!(text, "#{} {} {} {}; ", b.id, b.charged, b.bytes, state);
    }
    log.note(format!("buffers {step}"), text);
}

fn currents(s: &mut dyn Side, log: &mut Log, groups: &[&str]) {
    for g in groups {
        read(s, log, g, "dmem.current");
    }
}

// ---------------------------------------------------------------------------------------------
// Vectors. Each starts from a fresh side with the regions its `Vector` names.

/// Setup S of §9: `/` and `/k` enable dmem; `/k/a`, `/k/b` exist and hold a task.
fn setup_s(s: &mut dyn Side, log: &mut Log) {
    write(s, log, "/", "cgroup.subtree_control", "+dmem");
    log.note("mkdir /k", show(s.mkdir("/k")));
    write(s, log, "/k", "cgroup.subtree_control", "+dmem");
    for g in ["/k/a", "/k/b"] {
        log.note(format!("mkdir {g}"), show(s.mkdir(g)));
        s.set_tasks(g, true);
    }
}

fn t00_fresh_boot_root(s: &mut dyn Side, log: &mut Log) {
    // Before anything enabled a controller at the root (this runs first after boot).
    read(s, log, "/", "dmem.capacity");
    read(s, log, "/", "dmem.current");
    read(s, log, "/", "cgroup.controllers");
    write(s, log, "/", "cgroup.subtree_control", "+dmem");
    read(s, log, "/", "dmem.capacity");
    read(s, log, "/", "cgroup.subtree_control");
    write(s, log, "/", "cgroup.subtree_control", "-dmem");
    read(s, log, "/", "dmem.capacity");
    read(s, log, "/", "cgroup.subtree_control");
}

fn t01_t02_read_defaults(s: &mut dyn Side, log: &mut Log) {
    setup_s(s, log);
    read(s, log, "/", "dmem.capacity");
    for f in [
        "dmem.max",
        "dmem.min",
        "dmem.low",
        "dmem.current",
        "dmem.peak",
    ] {
        read(s, log, "/k/a", f);
    }
    for f in ["dmem.current", "dmem.max", "dmem.peak"] {
        read(s, log, "/", f);
    }
    read(s, log, "/k", "cgroup.controllers");
}

fn t03_t04_write_max(s: &mut dyn Side, log: &mut Log) {
    setup_s(s, log);
    wblock(s, log, "/k/a", "dmem.max", &format!("{R0} 1G\n"));
    read(s, log, "/k/a", "dmem.max");
    write(s, log, "/k/a", "dmem.max", &format!("{R0} max"));
    read(s, log, "/k/a", "dmem.max");
}

fn t05_value_forms(s: &mut dyn Side, log: &mut Log) {
    setup_s(s, log);
    let forms = [
        "0x40000000",
        "010",
        "0x10",
        "1g",
        "100M",
        "12345",
        "2251799813685246",
        "2251799813685247",
        "8E",
        "16E",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999",
        "17179869184G",
        "0G",
        "G",
        "k",
    ];
    for v in forms {
        write_read(s, log, "/k/a", "dmem.max", &format!("{R0} {v}"));
    }
}

fn t06_value_errors(s: &mut dyn Side, log: &mut Log) {
    setup_s(s, log);
    write(s, log, "/k/a", "dmem.max", &format!("{R0} 1G"));
    for v in [
        "08", "1.5G", "1GB", "1Gi", "-1", "+1", "MAX", "Max", "1 G", "",
    ] {
        write(s, log, "/k/a", "dmem.max", &format!("{R0} {v}"));
        read(s, log, "/k/a", "dmem.max");
    }
}

fn t07_t09_names_and_spacing(s: &mut dyn Side, log: &mut Log) {
    setup_s(s, log);
    for data in [
        "drm/0000:03:00.0/vram9 1G",
        "DRM/0000:03:00.0/vram0 1G",
        "drm/0000:03:00.0/vram0  2G",
        "drm/0000:03:00.0/vram0",
        " 1G",
    ] {
        write_read(s, log, "/k/a", "dmem.max", data);
    }
    write_read(s, log, "/k/a", "dmem.max", &format!("  {R0}\t2G  \n"));
}

fn t10_t13_lines(s: &mut dyn Side, log: &mut Log) {
    setup_s(s, log);
    wblock(s, log, "/k/a", "dmem.low", &format!("{R0}\n"));
    wblock(s, log, "/k/a", "dmem.low", &format!("{R0} 1G\n{R1} 2G\n"));
    read(s, log, "/k/a", "dmem.low");
    wblock(s, log, "/k/b", "dmem.low", &format!("{R0} 1G\nbogus 2G\n"));
    read(s, log, "/k/b", "dmem.low");
    wblock(s, log, "/k/b", "dmem.min", &format!("{R0} 1G\n\n{R1} 3G"));
    read(s, log, "/k/b", "dmem.min");
    wblock(s, log, "/k/b", "dmem.min", "\n");
    wblock(s, log, "/k/b", "dmem.min", "");
    read(s, log, "/k/b", "dmem.min");
}

fn t_read_only_files(s: &mut dyn Side, log: &mut Log) {
    setup_s(s, log);
    for (g, f) in [
        ("/k/a", "dmem.current"),
        ("/k/a", "dmem.peak"),
        ("/", "dmem.capacity"),
        ("/", "dmem.current"),
        ("/k/a", "cgroup.controllers"),
    ] {
        wblock(s, log, g, f, &format!("{R0} 1G"));
        wblock(s, log, g, f, "");
    }
}

fn t14_t15_charges(s: &mut dyn Side, log: &mut Log) {
    setup_s(s, log);
    alloc(s, log, "/k/a", R0, "+1G");
    alloc(s, log, "/k/b", R0, "+2G");
    currents(s, log, &["/k/a", "/k/b", "/k", "/"]);
    write(s, log, "/k", "dmem.max", &format!("{R0} 3G"));
    alloc(s, log, "/k/a", R0, "+1");
    write(s, log, "/k/a", "dmem.max", &format!("{R0} 1G"));
    alloc(s, log, "/k/b", R0, "+512M");
    currents(s, log, &["/k/a", "/k/b", "/k"]);
    buffers(s, log, "after limits");
}

fn t15_exact_max(s: &mut dyn Side, log: &mut Log) {
    setup_s(s, log);
    write(s, log, "/k/a", "dmem.max", &format!("{R0} 1G"));
    alloc(s, log, "/k/a", R0, "+1G");
    alloc(s, log, "/k/b", R0, "+1G");
    alloc(s, log, "/k/a", R0, "+1");
    alloc(s, log, "/k/a", R1, "+1");
    alloc(s, log, "/k/a", R0, "-1G");
    alloc(s, log, "/k/a", R0, "+1");
    currents(s, log, &["/k/a", "/k/b"]);
    // Malformed driver commands.
    for bad in ["+0", "+", "1G", "+1X", "-0"] {
        alloc(s, log, "/k/a", R0, bad);
    }
}

fn t16_max_below_usage(s: &mut dyn Side, log: &mut Log) {
    setup_s(s, log);
    alloc(s, log, "/k/a", R0, "+1G");
    let outcome = apply_limit(s.fs(), &cg("/k/a"), DmemMax, R0, DmemValue::Bytes(G / 2))
        .map_err(|e| e.errno().unwrap_or(-1));
    log.note("apply_limit /k/a max 512M", show(outcome));
    read(s, log, "/k/a", "dmem.max");
    alloc(s, log, "/k/a", R0, "+1");
    currents(s, log, &["/k/a"]);
    buffers(s, log, "after non-blocking max");
}

fn t16c_blocking_reclaim(s: &mut dyn Side, log: &mut Log) {
    setup_s(s, log);
    for _ in 0..4 {
        alloc(s, log, "/k/a", R0, "+256M");
    }
    alloc(s, log, "/k/b", R0, "+256M");
    wblock(s, log, "/k/a", "dmem.max", &format!("{R0} 600M"));
    read(s, log, "/k/a", "dmem.max");
    currents(s, log, &["/k/a", "/k/b"]);
    buffers(s, log, "after blocking max on /k/a");
    // A parent's max: evicts from its children, oldest first.
    alloc(s, log, "/k/b", R0, "+256M");
    wblock(s, log, "/k", "dmem.max", &format!("{R0} 300M"));
    currents(s, log, &["/k/a", "/k/b", "/k"]);
    buffers(s, log, "after blocking max on /k");
}

fn t21_peak(s: &mut dyn Side, log: &mut Log) {
    setup_s(s, log);
    alloc(s, log, "/k/a", R0, "+3G");
    alloc(s, log, "/k/a", R0, "-1G");
    read(s, log, "/k/a", "dmem.peak");
    read(s, log, "/k", "dmem.peak");
    read(s, log, "/", "dmem.peak");
    read(s, log, "/k/a", "dmem.current");
    buffers(s, log, "after partial free");
}

fn t22_no_css_below_root(s: &mut dyn Side, log: &mut Log) {
    log.note("mkdir /k", show(s.mkdir("/k")));
    for f in ["dmem.current", "dmem.max", "dmem.min", "dmem.low"] {
        read(s, log, "/k", f);
    }
    alloc(s, log, "/k", R0, "+1G");
    read(s, log, "/", "dmem.current");
    buffers(s, log, "charged to the root");
}

fn t23_rmdir_keeps_charges(s: &mut dyn Side, log: &mut Log) {
    setup_s(s, log);
    alloc(s, log, "/k/b", R0, "+2G");
    log.note("rmdir /k/b with a task", show(s.rmdir("/k/b")));
    s.set_tasks("/k/b", false);
    log.note("rmdir /k/b", show(s.rmdir("/k/b")));
    read(s, log, "/k", "dmem.current");
    let children = s
        .fs()
        .children(&cg("/k"))
        .map_err(|e| e.errno().unwrap_or(-1));
    log.note("children of /k", show(children));
}

fn t24_unregister(s: &mut dyn Side, log: &mut Log) {
    setup_s(s, log);
    alloc(s, log, "/k/a", R1, "+1G");
    log.note("unregister R1", show(s.unregister(R1)));
    read(s, log, "/", "dmem.capacity");
    for f in ["dmem.current", "dmem.max", "dmem.min", "dmem.low"] {
        read(s, log, "/k/a", f);
    }
    write(s, log, "/k/a", "dmem.max", &format!("{R1} 1G"));
    alloc(s, log, "/k/a", R1, "+1G");
    read(s, log, "/", "dmem.current");
}

fn t25_low_max(s: &mut dyn Side, log: &mut Log) {
    setup_s(s, log);
    write(s, log, "/k/a", "dmem.low", &format!("{R0} max"));
    read(s, log, "/k/a", "dmem.low");
    write(s, log, "/k/a", "dmem.min", &format!("{R1} 1G"));
    read(s, log, "/k/a", "dmem.min");
}

/// Eviction setup: region R0 only; `/` and `/k` enable dmem; `/k/a`, `/k/b` and `/c` exist.
fn evict_setup(s: &mut dyn Side, log: &mut Log) {
    write(s, log, "/", "cgroup.subtree_control", "+dmem");
    for g in ["/k", "/k/a", "/k/b", "/c"] {
        log.note(format!("mkdir {g}"), show(s.mkdir(g)));
        if g == "/k" {
            write(s, log, "/k", "cgroup.subtree_control", "+dmem");
        }
    }
}

const EVICT_GROUPS: [&str; 5] = ["/k", "/k/a", "/k/b", "/c", "/"];

/// T17–T19: nested low under `/k` (low of /k varies); a uses 6G, b 2G; then /c and /k/b allocate.
fn nested_low(s: &mut dyn Side, log: &mut Log, k_low: &str) {
    evict_setup(s, log);
    write(s, log, "/k", "dmem.low", &format!("{R0} {k_low}"));
    write(s, log, "/k/a", "dmem.low", &format!("{R0} 4G"));
    write(s, log, "/k/b", "dmem.low", &format!("{R0} 4G"));
    for _ in 0..3 {
        alloc(s, log, "/k/a", R0, "+2G");
    }
    alloc(s, log, "/k/b", R0, "+2G");
    alloc(s, log, "/c", R0, "+1G");
    buffers(s, log, "after /c allocates into a full device");
    // Siblings compete: the common ancestor is /k, whose low is shared out between a and b.
    alloc(s, log, "/k/b", R0, "+2G");
    buffers(s, log, "after /k/b allocates");
    currents(s, log, &EVICT_GROUPS);
}

fn t17_nested_low_8g(s: &mut dyn Side, log: &mut Log) {
    nested_low(s, log, "8G");
}
fn t18_nested_low_6g(s: &mut dyn Side, log: &mut Log) {
    nested_low(s, log, "6G");
}
fn t19_nested_low_4g(s: &mut dyn Side, log: &mut Log) {
    nested_low(s, log, "4G");
}

fn t20_min(s: &mut dyn Side, log: &mut Log) {
    evict_setup(s, log);
    write(s, log, "/k/a", "dmem.min", &format!("{R0} 2G"));
    alloc(s, log, "/k/a", R0, "+2G");
    for _ in 0..3 {
        alloc(s, log, "/k/b", R0, "+2G");
    }
    alloc(s, log, "/k/b", R0, "+2G");
    buffers(s, log, "after /k/b allocates into a full device");
    alloc(s, log, "/c", R0, "+3G");
    buffers(s, log, "after /c allocates");
    // a's own max: its own buffers go.
    write(s, log, "/k/a", "dmem.max", &format!("{R0} 2G"));
    alloc(s, log, "/k/a", R0, "+1G");
    buffers(s, log, "after /k/a hits its own max");
    currents(s, log, &EVICT_GROUPS);
}

/// Top-level protection against a top-level evictor (T26 shape) and siblings under /k.
fn t26_top_level_protection(s: &mut dyn Side, log: &mut Log) {
    evict_setup(s, log);
    write(s, log, "/c", "dmem.low", &format!("{R0} 4G"));
    write(s, log, "/k/a", "dmem.min", &format!("{R0} 2G"));
    write(s, log, "/k", "dmem.min", &format!("{R0} 2G"));
    alloc(s, log, "/c", R0, "+2G");
    alloc(s, log, "/c", R0, "+2G");
    alloc(s, log, "/k/a", R0, "+2G");
    alloc(s, log, "/k/b", R0, "+2G");
    buffers(s, log, "device full");
    alloc(s, log, "/k/b", R0, "+2G");
    buffers(s, log, "after /k/b allocates");
    alloc(s, log, "/k/a", R0, "+2G");
    buffers(s, log, "after /k/a allocates");
    currents(s, log, &EVICT_GROUPS);
}

/// Unprotected LRU eviction, and a protected allocation's pre-pass (7.3 below_low).
fn t27_lru_and_protected_alloc(s: &mut dyn Side, log: &mut Log) {
    evict_setup(s, log);
    alloc(s, log, "/k/a", R0, "+3G");
    alloc(s, log, "/k/b", R0, "+3G");
    alloc(s, log, "/c", R0, "+3G");
    buffers(s, log, "after /c allocates (LRU)");
    write(s, log, "/k/b", "dmem.low", &format!("{R0} 8G"));
    write(s, log, "/k", "dmem.low", &format!("{R0} 8G"));
    alloc(s, log, "/k/b", R0, "+3G");
    buffers(s, log, "after protected /k/b allocates");
    alloc(s, log, "/k/a", R0, "+3G");
    buffers(s, log, "after /k/a allocates");
    currents(s, log, &EVICT_GROUPS);
}

#[path = "real_kernel/agent.rs"]
mod agent;
#[path = "real_kernel/bench.rs"]
mod bench;

struct Vector {
    name: &'static str,
    /// Regions the driver registers (two: setup S; one: the eviction scenarios).
    regions: &'static [(&'static str, u64)],
    run: fn(&mut dyn Side, &mut Log),
}

const fn v(
    name: &'static str,
    regions: &'static [(&'static str, u64)],
    run: fn(&mut dyn Side, &mut Log),
) -> Vector {
    Vector { name, regions, run }
}

const S: &[(&str, u64)] = &[(R0, R0_SIZE), (R1, R1_SIZE)];
const E: &[(&str, u64)] = &[(R0, 8 * G)];

const VECTORS: &[Vector] = &[
    v("T00", S, t00_fresh_boot_root),
    v("T01-T02", S, t01_t02_read_defaults),
    v("T03-T04", S, t03_t04_write_max),
    v("T05", S, t05_value_forms),
    v("T06", S, t06_value_errors),
    v("T07-T09", S, t07_t09_names_and_spacing),
    v("T10-T13", S, t10_t13_lines),
    v("T-ro", S, t_read_only_files),
    v("T14-T15", S, t14_t15_charges),
    v("T15b", S, t15_exact_max),
    v("T16", S, t16_max_below_usage),
    v("T16c", S, t16c_blocking_reclaim),
    v("T21", S, t21_peak),
    v("T22", S, t22_no_css_below_root),
    v("T23", S, t23_rmdir_keeps_charges),
    v("T24", S, t24_unregister),
    v("T25", S, t25_low_max),
    v("T17", E, t17_nested_low_8g),
    v("T18", E, t18_nested_low_6g),
    v("T19", E, t19_nested_low_4g),
    v("T20", E, t20_min),
    v("T26", E, t26_top_level_protection),
    v("T27", E, t27_lru_and_protected_alloc),
    // The node agent's round (real_kernel/agent.rs).
    v("A1", S, agent::a1_limits),
    v("A1b", S, agent::a1b_blocking_max),
    v("A2", E, agent::a2_same_qos),
    v("A2-noanc", E, agent::a2_same_qos_no_ancestors),
    v("A3", E, agent::a3_other_qos),
    v("A3-noanc", E, agent::a3_other_qos_no_ancestors),
    v("A4", E, agent::a4_system),
    v("A4-noanc", E, agent::a4_system_no_ancestors),
];

// ---------------------------------------------------------------------------------------------
// The runner.

/// The driver itself (no simulator counterpart): malformed commands fail with EINVAL, and the
/// runner (`run.sh`) fails the run if any of them made the kernel log an oops or a warning.
fn driver_rejects_malformed() -> Result<(), String> {
    RealSide::new(S, true)?;
    let mut bad: Vec<Vec<u8>> = ["", "\n", "x", "nosuchregion +1G", "\0\u{7f}\u{1} +1"]
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    for tail in [
        "",
        " ",
        " +",
        " +-1",
        " *1G",
        " +1G extra",
        " unregister extra",
        " +0",
        " -0",
    ] {
        bad.push(format!("{R0}{tail}").into_bytes());
    }
    bad.push(format!("{R0} +{}", "1".repeat(300)).into_bytes());
    bad.push(vec![0xff, 0xfe, b' ', b'+', b'1']);
    for data in &bad {
        let mut f = OpenOptions::new()
            .write(true)
            .open(DEVICE)
            .map_err(|e| e.to_string())?;
        match f.write(data) {
            Err(e) if io_errno(&e) == libc::EINVAL => {}
            other => return Err(format!("driver command {data:?}: {other:?}, want EINVAL")),
        }
    }
    Ok(())
}

/// `SERIES VECTOR LABEL` lines of `known-differences.txt` (`#` comments, blank lines ignored).
fn known_differences() -> BTreeSet<String> {
    let text = fs::read_to_string(KNOWN).unwrap_or_else(|e| panic!("{KNOWN}: {e}"));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Ok(mode) = std::env::var(HELPER) {
        return helper(&mode, &args);
    }
    let in_vm = std::env::var("KUBE_DMEM_REAL_KERNEL").as_deref() == Ok("1");
    if let Some(i) = args.iter().position(|a| a == "--bench") {
        // `--bench ROUNDS` (tests/vm/bench.sh): in the VM the kernel and the simulator, elsewhere
        // the simulator only.
        let rounds = args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(200);
        let series = std::env::var("KUBE_DMEM_KERNEL_SERIES").ok();
        return match bench::run(rounds, series.as_deref().filter(|_| in_vm)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("real_kernel: bench FAILED: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if !in_vm {
        println!(
            "real_kernel: SKIPPED, not inside the test VM. These tests need a dmem kernel: run \
             tests/vm/test.sh (or tests/vm/run.sh 7.3 -- <this binary>)."
        );
        return ExitCode::SUCCESS;
    }
    let controllers =
        fs::read_to_string(format!("{CGROOT}/cgroup.controllers")).unwrap_or_default();
    if !controllers.split_whitespace().any(|c| c == "dmem") {
        eprintln!(
            "real_kernel: FAIL: KUBE_DMEM_REAL_KERNEL=1 but {CGROOT} has no dmem controller ({controllers:?})"
        );
        return ExitCode::FAILURE;
    }
    let series = std::env::var("KUBE_DMEM_KERNEL_SERIES").unwrap_or_default();
    let profile = match series.as_str() {
        "7.2" => Profile::Legacy,
        "7.3" => Profile::Current,
        other => {
            eprintln!("real_kernel: FAIL: KUBE_DMEM_KERNEL_SERIES={other:?} (7.2 or 7.3)");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = driver_rejects_malformed() {
        eprintln!("real_kernel: FAIL: {e}");
        return ExitCode::FAILURE;
    }
    println!("driver: malformed commands rejected with EINVAL");
    let filter: Vec<&String> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let known = known_differences();
    let mut seen_known = BTreeSet::new();
    let (mut failed, mut ran) = (0, 0);
    for v in VECTORS {
        if !filter.is_empty() && !filter.iter().any(|f| *f == v.name) {
            continue;
        }
        ran += 1;
        let reclaim = true;
        let mut real = match RealSide::new(v.regions, reclaim) {
            Ok(side) => side,
            Err(e) => {
                eprintln!("{}: FAIL: cannot set up the kernel: {e}", v.name);
                failed += 1;
                continue;
            }
        };
        let root_files = Path::new(CGROOT).join("dmem.capacity").exists();
        let mut sim = SimSide::new(profile, v.regions, root_files);
        let (mut kernel_log, mut sim_log) = (Log::default(), Log::default());
        (v.run)(&mut real, &mut kernel_log);
        (v.run)(&mut sim, &mut sim_log);
        drop(real);
        let mut unexpected = 0;
        let steps = kernel_log.0.len().max(sim_log.0.len());
        for i in 0..steps {
            let (k, s) = (kernel_log.0.get(i), sim_log.0.get(i));
            if k == s {
                continue;
            }
            let label = k.or(s).map(|(l, _)| l.as_str()).unwrap_or_default();
            let key = format!("{series} {} {label}", v.name);
            let (kv, sv) = (k.map(|x| x.1.as_str()), s.map(|x| x.1.as_str()));
            if known.contains(&key) {
                seen_known.insert(key);
                println!(
                    "{}: known difference: {label}\n    kernel:    {kv:?}\n    simulator: {sv:?}",
                    v.name
                );
            } else {
                unexpected += 1;
                println!(
                    "{}: DIFFERENCE: {label}\n    kernel:    {kv:?}\n    simulator: {sv:?}\n    key: {key}",
                    v.name
                );
            }
        }
        if let Some((_, before)) =
            (kernel_log.0.iter()).find(|(l, _)| l == "root shows dmem.capacity before the round")
        {
            println!(
                "{}: the root showed dmem.capacity before the agent's first round: {before}",
                v.name
            );
        }
        // What the kernel must show, whatever the simulator says.
        for (es, ev, label, want) in agent::expected() {
            if ev != v.name || (es != "*" && es != series) {
                continue;
            }
            let got = kernel_log
                .0
                .iter()
                .find(|(l, _)| *l == label)
                .map(|(_, x)| x.as_str());
            if got != Some(want.as_str()) {
                unexpected += 1;
                println!(
                    "{}: EXPECTATION FAILED: {label}\n    kernel:   {got:?}\n    expected: {want:?}",
                    v.name
                );
            }
        }
        if unexpected > 0 {
            failed += 1;
            println!(
                "{}: FAIL ({unexpected} unexpected differences in {steps} steps)",
                v.name
            );
        } else {
            println!("{}: ok ({steps} steps)", v.name);
        }
        if std::env::var_os("KUBE_DMEM_RK_VERBOSE").is_some() {
            for (label, seen) in &kernel_log.0 {
                println!("    [{series}] {label} -> {seen}");
            }
        }
    }
    // Known differences of the vectors that ran must all have happened.
    for key in &known {
        let mut parts = key.splitn(3, ' ');
        let (ks, kv) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let ran_it = filter.is_empty() || filter.iter().any(|f| *f == kv);
        if ks == series && ran_it && !seen_known.contains(key) {
            failed += 1;
            println!("STALE known difference (no longer happens; remove it from {KNOWN}): {key}");
        }
    }
    println!(
        "real_kernel [{series}]: {ran} vectors, {failed} failed, {} known differences",
        seen_known.len()
    );
    if failed == 0 && ran > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
