//! A real Prometheus (Debian's `prometheus` binary, or `$PROMETHEUS`) as a host process on
//! loopback, scraping the kube-dmem processes of a test through `static_configs`, and its HTTP
//! query API. Used to check that the chart's dashboard queries return data from real scrapes and
//! that its alert rules load.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::components::{free_addr, http_get};
use crate::ctx::TestCtx;
use crate::poll::eventually;
use crate::process::Proc;

/// How long Prometheus may take to start and answer `/-/ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One scrape job: its name, targets and extra target labels.
#[derive(Clone, Debug)]
pub struct Job {
    /// `job` label.
    pub name: String,
    /// `host:port` targets.
    pub targets: Vec<SocketAddr>,
    /// Extra labels on every target (for example `node`, as the chart's ServiceMonitor adds).
    pub labels: Vec<(String, String)>,
}

/// A running Prometheus.
#[derive(Debug)]
pub struct Prometheus {
    /// The process.
    pub proc: Proc,
    /// Its web address.
    pub addr: SocketAddr,
}

/// The binary: `$PROMETHEUS`, else `prometheus` on PATH.
///
/// # Errors
/// When neither exists, with how to install it.
pub fn binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PROMETHEUS") {
        return Ok(PathBuf::from(path));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("prometheus"))
        .find(|p| p.is_file())
        .context(
            "no prometheus binary: install it (Debian: apt-get install prometheus) or set PROMETHEUS=/path/to/prometheus",
        )
}

/// The configuration text: a 1 s scrape and evaluation interval, the jobs, the rule files.
pub fn config(jobs: &[Job], rule_files: &[&Path]) -> String {
    let mut text = String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n");
    if !rule_files.is_empty() {
        text.push_str("rule_files:\n");
        for file in rule_files {
            let _ = writeln!(text, "  - {:?}", file.display().to_string());
        }
    }
    text.push_str("scrape_configs:\n");
    for job in jobs {
        let _ = writeln!(text, "  - job_name: {:?}", job.name);
        text.push_str("    static_configs:\n      - targets: [");
        let targets: Vec<String> = job
            .targets
            .iter()
            .map(|t| format!("{:?}", t.to_string()))
            .collect();
        text.push_str(&targets.join(", "));
        text.push_str("]\n");
        if !job.labels.is_empty() {
            text.push_str("        labels:\n");
            for (k, v) in &job.labels {
                let _ = writeln!(text, "          {k}: {v:?}");
            }
        }
    }
    text
}

impl Prometheus {
    /// Starts Prometheus with `jobs` and `rule_files`, storing under the test's directory, and
    /// waits until it is ready.
    ///
    /// # Errors
    /// When the binary is missing, or it exits or is not ready in time (the log tail is in the
    /// error).
    pub fn start(ctx: &TestCtx, jobs: &[Job], rule_files: &[&Path]) -> Result<Self> {
        let dir = ctx.dir.join("prometheus");
        std::fs::create_dir_all(&dir)?;
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config(jobs, rule_files))?;
        let addr = free_addr()?;
        let mut cmd = Command::new(binary()?);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=info");
        let mut proc = Proc::spawn("prometheus", &ctx.dir, cmd)?;
        ctx.attach_log("prometheus", proc.log_path().to_path_buf());
        eventually("prometheus /-/ready", READY_TIMEOUT, || {
            if let Some(status) = proc.exited() {
                bail!("prometheus exited with {status}: {}", proc.log_tail(20));
            }
            let (code, _) = http_get(addr, "/-/ready")?;
            Ok((code == 200).then_some(()))
        })?;
        Ok(Self { proc, addr })
    }

    /// `GET /api/v1/<path>`: the `data` of a successful answer.
    ///
    /// # Errors
    /// When the request fails or Prometheus answers with an error (a query that does not parse).
    pub fn api(&self, path: &str) -> Result<Value> {
        let (code, body) = http_get(self.addr, &format!("/api/v1/{path}"))?;
        let value: Value = serde_json::from_str(&body)
            .with_context(|| format!("not JSON ({code}): {body:.200}"))?;
        if value["status"] != "success" {
            bail!("{path}: {code} {}: {}", value["errorType"], value["error"]);
        }
        Ok(value["data"].clone())
    }

    /// The result vector of an instant query.
    ///
    /// # Errors
    /// As [`Prometheus::api`].
    pub fn query(&self, promql: &str) -> Result<Vec<Value>> {
        let data = self.api(&format!("query?query={}", encode(promql)))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }
}

/// Percent-encodes a query-string value.
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}
