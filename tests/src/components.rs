//! Starting kube-dmem's binaries as host processes under the chart's ServiceAccounts: the operator
//! (waits for `/ready`), the node agent in cluster mode, and the FUSE kernel simulator that stands
//! in for a node's `/sys/fs/cgroup`.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::ctx::TestCtx;
use crate::env::{Env, RELEASE_NAMESPACE};
use crate::poll::eventually;
use crate::process::Proc;
use crate::token;

/// How long a component may take to report ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A free loopback port (the kernel picks it; it is released before the component binds it).
///
/// # Errors
/// When no port can be bound.
pub fn free_addr() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// A minimal HTTP/1.0 GET: `(status code, body)`.
///
/// # Errors
/// When nothing listens at `addr` or the answer is not HTTP.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer from {addr}{path}: {text:.80}"))?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Ok((status, body))
}

/// Waits until `GET addr/ready` answers 200 while `proc` keeps running.
///
/// # Errors
/// When the process exits or the deadline passes (the log tail is in the error).
pub fn wait_ready(proc: &mut Proc, addr: SocketAddr) -> Result<()> {
    let name = proc.name().to_owned();
    let result = eventually(&format!("{name} /ready"), READY_TIMEOUT, || {
        if let Some(status) = proc.exited() {
            bail!("{name} exited with {status}");
        }
        let (code, body) = http_get(addr, "/ready")?;
        if code == 200 {
            Ok(Some(()))
        } else {
            bail!("/ready answered {code} {}", body.trim())
        }
    });
    result.with_context(|| format!("{name} log tail:\n{}", proc.log_tail(25)))
}

/// The operator, running as the chart's operator ServiceAccount.
#[derive(Debug)]
pub struct Operator {
    /// The process.
    pub proc: Proc,
    /// Its admin server (`/live`, `/ready`, `/metrics`).
    pub admin: SocketAddr,
    kubeconfig: PathBuf,
    name: String,
}

impl Operator {
    /// Starts `kube-dmem-operator` with a fresh token of the chart's operator ServiceAccount and
    /// waits for `/ready` (watches synced, Lease held, first status pass done).
    ///
    /// # Errors
    /// When it cannot start or does not become ready (for example because the chart's RBAC lacks
    /// a permission it needs).
    pub fn start(ctx: &TestCtx) -> Result<Self> {
        let kubeconfig = token::operator_kubeconfig(&ctx.dir)?;
        let admin = free_addr()?;
        let mut op = Self {
            proc: Self::spawn(ctx, &kubeconfig, admin, "operator")?,
            admin,
            kubeconfig,
            name: format!("e2e-{}", ctx.ns),
        };
        wait_ready(&mut op.proc, op.admin)?;
        Ok(op)
    }

    fn spawn(ctx: &TestCtx, kubeconfig: &Path, admin: SocketAddr, name: &str) -> Result<Proc> {
        let env = Env::get();
        let mut cmd = Command::new(env.binary("kube-dmem-operator")?);
        cmd.env("KUBECONFIG", kubeconfig)
            .env("KUBE_DMEM_ADMIN_ADDR", admin.to_string())
            .env("KUBE_DMEM_LOG", "info,kube_dmem_operator=debug")
            .env("KUBE_DMEM_LOG_FORMAT", "plain")
            .env("NO_COLOR", "1")
            .env("KUBE_DMEM_LEASE_NAMESPACE", RELEASE_NAMESPACE)
            .env("KUBE_DMEM_POD_NAME", format!("e2e-{}", ctx.ns))
            .env("KUBE_DMEM_MAX_EVICTIONS_PER_MINUTE", "60")
            .env("KUBE_DMEM_RESYNC", "30s");
        let proc = Proc::spawn(name, &ctx.dir, cmd)?;
        ctx.attach_log(name, proc.log_path().to_path_buf());
        Ok(proc)
    }

    /// Stops the process (SIGTERM: it releases its Lease) and starts it again with the same
    /// credentials, waiting for `/ready`.
    ///
    /// # Errors
    /// When the new process does not become ready.
    pub fn restart(&mut self, ctx: &TestCtx) -> Result<()> {
        self.proc.stop();
        self.admin = free_addr()?;
        self.proc = Self::spawn(ctx, &self.kubeconfig, self.admin, "operator")?;
        wait_ready(&mut self.proc, self.admin)
    }

    /// Its identity in the leader Lease.
    pub fn identity(&self) -> &str {
        &self.name
    }
}

/// The FUSE kernel simulator mounted on a directory: one fake node's `/sys/fs/cgroup`.
#[derive(Debug)]
pub struct SimFs {
    /// The process serving the mount.
    pub proc: Proc,
    /// The mountpoint (the cgroup root).
    pub root: PathBuf,
}

impl SimFs {
    /// Mounts the simulator at `<test dir>/<name>` with `regions` (`NAME=SIZE` each) and waits
    /// until the root's `dmem.capacity` lists them.
    ///
    /// # Errors
    /// When the mount does not appear (no `/dev/fuse`, no permission).
    pub fn mount(ctx: &TestCtx, name: &str, regions: &[&str]) -> Result<Self> {
        let env = Env::get();
        let root = ctx.dir.join(name);
        std::fs::create_dir_all(&root)?;
        let mut cmd = Command::new(env.binary("kube-dmem-device-plugin")?);
        cmd.arg("simfs")
            .arg("--mount")
            .arg(&root)
            .env("NO_COLOR", "1");
        for region in regions {
            cmd.arg("--region").arg(region);
        }
        let log_name = format!("simfs-{name}");
        let mut proc = Proc::spawn(&log_name, &ctx.dir, cmd)?;
        ctx.attach_log(&log_name, proc.log_path().to_path_buf());
        let capacity = root.join("dmem.capacity");
        eventually(
            &format!("the simulator mounted at {}", root.display()),
            READY_TIMEOUT,
            || {
                if let Some(status) = proc.exited() {
                    bail!("simfs exited with {status}: {}", proc.log_tail(10));
                }
                // Like a node's init system: the root's `dmem.capacity` appears once `+dmem` is in
                // the root's `cgroup.subtree_control` (docs/kernel.md; the agent does not do it).
                if root.join("cgroup.subtree_control").exists() {
                    enable_dmem(&root)?;
                }
                Ok(std::fs::read_to_string(&capacity)
                    .ok()
                    .filter(|c| !c.is_empty())
                    .map(|_| ()))
            },
        )?;
        Ok(Self { proc, root })
    }

    /// Plays the kubelet: makes the pod cgroup in the cgroupfs-driver layout for its QoS class
    /// (`kubepods/pod<uid>`, `kubepods/burstable/pod<uid>`, `kubepods/besteffort/pod<uid>`), with
    /// the dmem controller enabled on the way down; returns its path.
    ///
    /// # Errors
    /// When a directory or `cgroup.subtree_control` write fails.
    pub fn make_pod_cgroup(&self, pod_uid: &str, qos_class: &str) -> Result<PathBuf> {
        let pod = format!("pod{pod_uid}");
        let parts: Vec<&str> = match qos_class {
            "Guaranteed" => vec!["kubepods", &pod],
            "Burstable" => vec!["kubepods", "burstable", &pod],
            _ => vec!["kubepods", "besteffort", &pod],
        };
        let mut dir = self.root.clone();
        for part in parts {
            enable_dmem(&dir)?;
            dir = dir.join(part);
            if !dir.exists() {
                std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
            }
        }
        Ok(dir)
    }

    /// Charges (`bytes` > 0) or frees (< 0) VRAM in `region` to the cgroup at `cgroup`, like a
    /// task in it allocating through the driver.
    ///
    /// # Errors
    /// When the simulator refuses the charge (for example above `dmem.max`).
    pub fn charge(cgroup: &Path, region: &str, bytes: i64) -> Result<()> {
        let line = format!("{region} {bytes:+}\n");
        std::fs::write(cgroup.join("dmem.sim.charge"), &line)
            .with_context(|| format!("charge {line:?} to {}", cgroup.display()))
    }

    /// The value for `region` in the cgroup's `file` (`dmem.max`, `dmem.current`, ...), as text.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn read(cgroup: &Path, file: &str, region: &str) -> Result<Option<String>> {
        let text = std::fs::read_to_string(cgroup.join(file))
            .with_context(|| format!("read {}/{file}", cgroup.display()))?;
        Ok(text.lines().find_map(|l| {
            let (name, value) = l.split_once(' ')?;
            (name == region).then(|| value.trim().to_owned())
        }))
    }
}

fn enable_dmem(dir: &Path) -> Result<()> {
    let control = dir.join("cgroup.subtree_control");
    let current = std::fs::read_to_string(&control).unwrap_or_default();
    if !current.split_whitespace().any(|c| c == "dmem") {
        std::fs::write(&control, "+dmem")
            .with_context(|| format!("enable dmem in {}", control.display()))?;
    }
    Ok(())
}

impl Drop for SimFs {
    fn drop(&mut self) {
        self.proc.stop();
        // A crashed server leaves a dead mount ("transport endpoint is not connected").
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let root = self.root.to_string_lossy();
        if mounts
            .lines()
            .any(|l| l.split(' ').nth(1) == Some(root.as_ref()))
        {
            let _ = Command::new("umount").arg("-l").arg(&self.root).status();
        }
    }
}

/// The node agent of one fake node in cluster mode, with the kubelet integration off (the test
/// plays the kubelet) and the `sysfs` backend on a [`SimFs`] mount.
#[derive(Debug)]
pub struct Agent {
    /// The process.
    pub proc: Proc,
    /// Its admin server.
    pub admin: SocketAddr,
    /// The node it serves.
    pub node: String,
    kubeconfig: PathBuf,
    cgroup_root: PathBuf,
    extra_args: Vec<String>,
}

impl Agent {
    /// Starts `kube-dmem-device-plugin run` for `node` as the chart's agent ServiceAccount, with a
    /// token bound to the chart's agent pod on that node, and waits for `/ready`.
    ///
    /// # Errors
    /// When it cannot start or does not become ready.
    pub fn start(ctx: &TestCtx, node: &str, cgroup_root: &Path) -> Result<Self> {
        Self::start_with(ctx, node, cgroup_root, &[])
    }

    /// [`Agent::start`] with extra command-line arguments (e.g. `--dra enabled`), kept across
    /// [`Agent::crash_and_restart`].
    ///
    /// # Errors
    /// When it cannot start or does not become ready.
    pub fn start_with(
        ctx: &TestCtx,
        node: &str,
        cgroup_root: &Path,
        extra_args: &[&str],
    ) -> Result<Self> {
        let kubeconfig = token::agent_kubeconfig(node, &ctx.dir)?;
        let admin = free_addr()?;
        let extra_args: Vec<String> = extra_args.iter().map(|a| (*a).to_owned()).collect();
        let mut agent = Self {
            proc: Self::spawn(ctx, node, &kubeconfig, cgroup_root, admin, &extra_args)?,
            admin,
            node: node.to_owned(),
            kubeconfig,
            cgroup_root: cgroup_root.to_path_buf(),
            extra_args,
        };
        wait_ready(&mut agent.proc, agent.admin)?;
        Ok(agent)
    }

    fn spawn(
        ctx: &TestCtx,
        node: &str,
        kubeconfig: &Path,
        cgroup_root: &Path,
        admin: SocketAddr,
        extra_args: &[String],
    ) -> Result<Proc> {
        let env = Env::get();
        let mut cmd = Command::new(env.binary("kube-dmem-device-plugin")?);
        cmd.arg("run")
            .args(["--node-name", node])
            .args(["--cgroup-backend", "sysfs"])
            .arg("--cgroup-root")
            .arg(cgroup_root)
            .args(["--kubelet", "disabled"])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--poll-interval", "200ms"])
            .args(extra_args)
            .env("KUBECONFIG", kubeconfig)
            .env("KUBE_DMEM_LOG", "info,kube_dmem_device_plugin=debug")
            .env("NO_COLOR", "1");
        let name = format!("agent-{node}");
        let proc = Proc::spawn(&name, &ctx.dir, cmd)?;
        ctx.attach_log(&name, proc.log_path().to_path_buf());
        Ok(proc)
    }

    /// Kills the agent with SIGKILL (a crash) and starts it again, waiting for `/ready`.
    ///
    /// # Errors
    /// When the new process does not become ready.
    pub fn crash_and_restart(&mut self, ctx: &TestCtx) -> Result<()> {
        self.proc.kill();
        self.admin = free_addr()?;
        self.proc = Self::spawn(
            ctx,
            &self.node,
            &self.kubeconfig,
            &self.cgroup_root,
            self.admin,
            &self.extra_args,
        )?;
        wait_ready(&mut self.proc, self.admin)
    }

    /// The kubeconfig (pod-bound agent token) it runs with.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }
}
