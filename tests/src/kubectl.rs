//! kubectl as a library: every call has a request timeout, its own kubeconfig, and returns the
//! exit status with both output streams so that tests can assert on the API server's messages.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::env::Env;

/// What one kubectl call did.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit status 0.
    pub ok: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error (the API server's messages end up here).
    pub stderr: String,
}

/// kubectl bound to one kubeconfig.
#[derive(Debug, Clone)]
pub struct Kubectl {
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// kubectl as the cluster admin (`$KUBECONFIG`).
    pub fn admin() -> Self {
        Self::with_kubeconfig(&Env::get().kubeconfig)
    }

    /// kubectl with another kubeconfig, e.g. one from [`crate::token`].
    pub fn with_kubeconfig(kubeconfig: &Path) -> Self {
        Self {
            kubeconfig: kubeconfig.to_path_buf(),
        }
    }

    /// Runs kubectl with `args` and optional standard input; fails only when kubectl cannot start.
    ///
    /// # Errors
    /// When the kubectl binary cannot be run.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        let env = Env::get();
        let mut cmd = Command::new(&env.kubectl);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=30s")
            .args(args)
            .env("KUBECACHEDIR", env.run_dir.join("kube-cache"))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", env.kubectl.display()))?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().context("kubectl stdin")?;
            pipe.write_all(input.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        Ok(Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs kubectl and returns its standard output; a non-zero exit is an error carrying stderr.
    ///
    /// # Errors
    /// When kubectl fails.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        self.ok_stdin(args, None)
    }

    /// [`Self::ok`] with standard input.
    ///
    /// # Errors
    /// When kubectl fails.
    pub fn ok_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let out = self.run(args, stdin)?;
        if !out.ok {
            bail!("kubectl {} failed: {}", args.join(" "), out.stderr.trim());
        }
        Ok(out.stdout)
    }

    /// Runs kubectl with `-o json` and parses the result.
    ///
    /// # Errors
    /// When kubectl fails or prints something that is not JSON.
    pub fn json(&self, args: &[&str]) -> Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let text = self.ok(&all)?;
        serde_json::from_str(&text).with_context(|| format!("kubectl {}: not JSON", args.join(" ")))
    }

    /// `kubectl apply -f -` of `yaml`; the result says whether the API server accepted it.
    ///
    /// # Errors
    /// When kubectl cannot be run.
    pub fn try_apply(&self, yaml: &str) -> Result<Output> {
        self.run(&["apply", "-f", "-"], Some(yaml))
    }

    /// `kubectl apply -f -` of `yaml`, which must succeed.
    ///
    /// # Errors
    /// When the API server rejects it.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        self.ok_stdin(&["apply", "-f", "-"], Some(yaml))
    }

    /// Server-side apply of `yaml` to a subresource (e.g. `status`) with a field manager.
    ///
    /// # Errors
    /// When kubectl cannot be run (a rejection is reported in the [`Output`]).
    pub fn try_apply_subresource(
        &self,
        yaml: &str,
        subresource: &str,
        field_manager: &str,
    ) -> Result<Output> {
        let sub = format!("--subresource={subresource}");
        let fm = format!("--field-manager={field_manager}");
        self.run(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                &sub,
                &fm,
                "-f",
                "-",
            ],
            Some(yaml),
        )
    }

    /// A field of an object through a JSONPath; empty when the field is absent.
    ///
    /// # Errors
    /// When the object cannot be read.
    pub fn jsonpath(&self, ns: &str, object: &str, path: &str) -> Result<String> {
        let jp = format!("jsonpath={path}");
        self.ok(&["get", "-n", ns, object, "-o", &jp])
    }
}
