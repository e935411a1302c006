//! The workload of the real-node e2e suite (`tests/node/`). It runs as a pod's container and does,
//! in order, the steps its arguments name, printing one JSON object per step on stdout, so a test
//! reads from `kubectl logs` exactly what the kernel answered and when:
//!
//! - `limits`: the pod cgroup's `dmem.max`, `dmem.low`, `dmem.min` as the kernel shows them. The pod
//!   cgroup is found from `POD_UID` (downward API) under the node's cgroup tree mounted read-only at
//!   `HOST_CGROUP` (default `/host-cgroup`); the container's own `/sys/fs/cgroup` is its private
//!   cgroup namespace and shows only the container.
//! - `alloc REGION SIZE`, `free REGION SIZE` (`@` for the region the device plugin granted): one command to the GPU device (`GPU_DEVICE`, default
//!   the first `/dev/dri/renderD*`, else `/dev/dmemtest`): the test driver charges the writer's
//!   cgroup and answers `EAGAIN` at a dmem limit, `ENOSPC` on a full device.
//! - `sleep SECONDS`; `hold`: wait for SIGTERM, then free what this process allocated and exit 0.
//!
//! The first step is the container's first instruction that touches the GPU: `limits` or `alloc`
//! first is how the suite proves limits were in force before the workload ran.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            emit(&format!(r#""step":"error","message":{}"#, json_str(&e)));
            2
        }
    };
    std::process::exit(code);
}

/// Frees on SIGTERM (`kubectl delete pod`): buffers belong to the pod's cgroup, not to the process,
/// and would stay charged to a deleted pod's cgroup otherwise.
#[expect(
    unsafe_code,
    reason = "installing a signal handler has no safe std API"
)]
fn on_sigterm_stop() {
    let handler: extern "C" fn(libc::c_int) = on_term;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

fn run(args: &[String]) -> Result<(), String> {
    on_sigterm_stop();
    let mut held: Vec<(String, u64)> = Vec::new();
    let mut it = args.iter();
    while let Some(step) = it.next() {
        let mut arg = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("`{step}` needs an argument"))
        };
        match step.as_str() {
            "limits" => limits()?,
            "alloc" => {
                let (region, size) = (region(arg()?)?, arg()?);
                let bytes = parse_size(&size)?;
                if gpu(&region, '+', bytes, "alloc")? {
                    held.push((region, bytes));
                }
            }
            "free" => {
                let (region, size) = (region(arg()?)?, arg()?);
                let bytes = parse_size(&size)?;
                gpu(&region, '-', bytes, "free")?;
                release(&mut held, &region, bytes);
            }
            "sleep" => {
                let secs: u64 = arg()?.parse().map_err(|e| format!("sleep: {e}"))?;
                std::thread::sleep(Duration::from_secs(secs));
            }
            "hold" => {
                emit(r#""step":"hold""#);
                while !STOP.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                for (region, bytes) in held.drain(..) {
                    gpu(&region, '-', bytes, "free")?;
                }
                emit(r#""step":"stopped""#);
                return Ok(());
            }
            other => return Err(format!("unknown step `{other}`")),
        }
    }
    Ok(())
}

/// A region argument: `@` is the region the device plugin granted (`KUBE_DMEM_REGION`, set by
/// Allocate), so a pod spec need not know which region the kubelet picked.
fn region(arg: String) -> Result<String, String> {
    if arg != "@" {
        return Ok(arg);
    }
    // A container's units always come from one region (Allocate refuses a split).
    std::env::var("KUBE_DMEM_REGION").map_err(|_| "`@`: KUBE_DMEM_REGION is not set".to_owned())
}

/// Forgets `bytes` of what this process holds in `region` (the driver frees newest first).
fn release(held: &mut Vec<(String, u64)>, region: &str, mut bytes: u64) {
    while bytes > 0 {
        let Some(i) = held.iter().rposition(|(r, _)| r == region) else {
            return;
        };
        let take = held[i].1.min(bytes);
        held[i].1 -= take;
        bytes -= take;
        if held[i].1 == 0 {
            held.remove(i);
        }
    }
}

/// Prints one step as a JSON object: `fields` (`"k":v,...`) and the wall-clock time.
fn emit(fields: &str) {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    // One write per line: the log collector sees whole lines even if the pod is killed.
    let _ = writeln!(io::stdout().lock(), "{{{fields},\"unix_ms\":{ms}}}");
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'M') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|e| format!("size `{s}`: {e}"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size `{s}` overflows"))
}

fn gpu_device() -> PathBuf {
    if let Ok(p) = std::env::var("GPU_DEVICE") {
        return p.into();
    }
    let render = fs::read_dir("/dev/dri").ok().and_then(|d| {
        let mut nodes: Vec<PathBuf> = d
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("renderD"))
            })
            .collect();
        nodes.sort();
        nodes.into_iter().next()
    });
    render.unwrap_or_else(|| "/dev/dmemtest".into())
}

/// Sends one command to the GPU; reports the kernel's answer. Ok(true) when it succeeded.
fn gpu(region: &str, sign: char, bytes: u64, step: &str) -> Result<bool, String> {
    let dev = gpu_device();
    let cmd = format!("{region} {sign}{bytes}");
    let result = OpenOptions::new()
        .write(true)
        .open(&dev)
        .and_then(|mut f| f.write(cmd.as_bytes()));
    let (ok, errno) = match &result {
        Ok(_) => (true, 0),
        Err(e) => (false, e.raw_os_error().unwrap_or(-1)),
    };
    emit(&format!(
        r#""step":"{step}","device":{},"region":{},"bytes":{bytes},"ok":{ok},"errno":{errno},"error":{}"#,
        json_str(&dev.display().to_string()),
        json_str(region),
        json_str(&errno_name(errno)),
    ));
    Ok(ok)
}

fn errno_name(errno: i32) -> String {
    match errno {
        0 => String::new(),
        libc::EAGAIN => "EAGAIN".into(),
        libc::ENOSPC => "ENOSPC".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::EPERM => "EPERM".into(),
        libc::EACCES => "EACCES".into(),
        n => format!("errno {n}"),
    }
}

/// The pod cgroup of `uid` under the node's cgroup tree (cgroupfs driver layouts, any QoS class).
fn pod_cgroup(root: &Path, uid: &str) -> Option<PathBuf> {
    let name = format!("pod{uid}");
    let systemd = format!("pod{}.slice", uid.replace('-', "_"));
    ["kubepods", "kubepods/burstable", "kubepods/besteffort"]
        .iter()
        .find_map(|dir| {
            [&name, &systemd]
                .iter()
                .map(|n| root.join(dir).join(n))
                .find(|p| p.is_dir())
        })
}

fn limits() -> Result<(), String> {
    let root =
        PathBuf::from(std::env::var("HOST_CGROUP").unwrap_or_else(|_| "/host-cgroup".into()));
    let uid = std::env::var("POD_UID").map_err(|_| "limits: POD_UID is not set".to_owned())?;
    let cg = pod_cgroup(&root, &uid)
        .ok_or_else(|| format!("limits: no cgroup for pod {uid} under {}", root.display()))?;
    let mut fields = Vec::new();
    for file in ["dmem.max", "dmem.low", "dmem.min"] {
        let text = fs::read_to_string(cg.join(file)).map_err(|e| format!("limits: {file}: {e}"))?;
        let lines: Vec<String> = text.lines().map(json_str).collect();
        fields.push(format!("\"{file}\":[{}]", lines.join(",")));
    }
    emit(&format!(
        r#""step":"limits","cgroup":{},{}"#,
        json_str(&cg.display().to_string()),
        fields.join(",")
    ));
    Ok(())
}
