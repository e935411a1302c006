//! Restarting kube-apiserver alone, to check that components ride out an API outage.
//!
//! kwokctl (v0.8) can only stop and start the whole cluster, so this reads a running component's
//! command line and working directory through its pid file in the cluster's state dir
//! (`tests/scripts/cluster-up.sh`), kills it, and starts the same command again detached
//! (`setsid`) with output appended to the same log and the new pid in the pid file, so that
//! `tests/scripts/cluster-down.sh` still finds and stops it.
//!
//! kube-controller-manager and kube-scheduler exit when they cannot renew their leader Lease
//! (about 10 s without an API server), and nothing restarts them in the binary runtime; the
//! apiserver is therefore killed (SIGKILL: its graceful shutdown can hang with watches open, and
//! etcd holds the state) and, after the restart, either of them found dead is started again.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::env::Env;
use crate::kubectl::Kubectl;
use crate::poll::{consistently, eventually};

/// How long after the restart dead controllers are looked for.
const SETTLE: Duration = Duration::from_secs(12);

fn cluster_dir() -> PathBuf {
    let name = std::env::var("KUBE_DMEM_CLUSTER_NAME").unwrap_or_else(|_| "kube-dmem".into());
    Env::get().state_dir.join("kwok/clusters").join(name)
}

/// A control-plane component started by kwokctl: how to start it again.
struct Component {
    name: &'static str,
    pid_file: PathBuf,
    pid: u32,
    args: Vec<String>,
    cwd: PathBuf,
}

impl Component {
    fn read(name: &'static str) -> Result<Self> {
        let pid_file = cluster_dir().join(format!("pids/{name}.pid"));
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("read {} (cluster from cluster-up.sh?)", pid_file.display()))?
            .trim()
            .parse()?;
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let cmdline = std::fs::read(proc_dir.join("cmdline"))
            .with_context(|| format!("{name} (pid {pid}) is not running"))?;
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.first().is_some_and(|a| a.ends_with(name)) {
            bail!("pid {pid} is not {name}: {args:?}");
        }
        let cwd = std::fs::read_link(proc_dir.join("cwd"))?;
        Ok(Self {
            name,
            pid_file,
            pid,
            args,
            cwd,
        })
    }

    fn alive(&self) -> bool {
        alive(&PathBuf::from(format!("/proc/{}", self.pid)))
    }

    fn kill(&self) -> Result<()> {
        Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status()?;
        eventually(
            &format!("{} to die", self.name),
            Duration::from_secs(10),
            || Ok((!self.alive()).then_some(())),
        )
    }

    fn start(&mut self) -> Result<()> {
        let log = cluster_dir().join(format!("logs/{}.log", self.name));
        let out = OpenOptions::new().append(true).create(true).open(&log)?;
        let err = out.try_clone()?;
        let child = Command::new("setsid")
            .args(&self.args)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("restart {}", self.name))?;
        // setsid execs the program in place (we are not a group leader), so the pid is its own.
        self.pid = child.id();
        std::fs::write(&self.pid_file, self.pid.to_string())?;
        // Dropping a Child neither waits for nor kills it: the component outlives the test binary.
        drop(child);
        Ok(())
    }
}

/// Kills kube-apiserver, runs `while_down`, starts it again and waits for `/readyz`; then brings
/// back kube-controller-manager and kube-scheduler if the outage made them exit.
///
/// # Errors
/// When the pid files are missing (not a cluster from `cluster-up.sh`) or the control plane does
/// not come back.
pub fn restart(while_down: impl FnOnce() -> Result<()>) -> Result<()> {
    let mut apiserver = Component::read("kube-apiserver")?;
    let mut others = vec![
        Component::read("kube-controller-manager")?,
        Component::read("kube-scheduler")?,
    ];
    apiserver.kill()?;
    let down = while_down();
    apiserver.start()?;
    let admin = Kubectl::admin();
    let readyz = || -> Result<Option<()>> {
        let out = admin.run(&["get", "--raw", "/readyz"], None)?;
        Ok((out.ok && out.stdout.trim() == "ok").then_some(()))
    };
    eventually(
        "kube-apiserver /readyz after a restart",
        Duration::from_secs(90),
        readyz,
    )?;
    // They notice a lost Lease up to their renew deadline (10 s) after the outage began.
    consistently("controller-manager and scheduler settle", SETTLE, || {
        for component in &mut others {
            if !component.alive() {
                eprintln!(
                    "e2e: {} exited during the outage; starting it again",
                    component.name
                );
                component.start()?;
            }
        }
        Ok(true)
    })?;
    down
}

/// Whether the process behind `/proc/<pid>` still runs: gone, or a zombie nobody reaps (PID 1 in
/// a container often does not), count as exited.
fn alive(proc_dir: &Path) -> bool {
    std::fs::read_to_string(proc_dir.join("stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}
