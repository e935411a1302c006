//! One test's world: a temporary namespace labelled for cleanup, a directory for its logs, and the
//! component logs to show when it fails. Run a test body with [`run`]: on an error or a panic the
//! namespace is described (objects, events, `describe`) and the components' logs are dumped, then
//! the namespace is deleted in every case. Leftover namespaces of earlier runs (same label, other
//! run id) are deleted when the first test of a binary starts.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::env::{E2E_LABEL, Env, RUN_LABEL};
use crate::kubectl::Kubectl;
use crate::poll::eventually;

/// Lines of each component log shown on failure (the whole log stays in the run dir).
const LOG_TAIL_LINES: usize = 60;

/// A test's namespace and diagnostics; see the module docs.
#[derive(Debug)]
pub struct TestCtx {
    /// The namespace, `e2e-<test>-<suffix>`.
    pub ns: String,
    /// Directory for this test's logs and files.
    pub dir: PathBuf,
    /// Admin kubectl.
    pub kubectl: Kubectl,
    logs: RefCell<Vec<(String, PathBuf)>>,
    failed: Cell<bool>,
}

/// Runs `body` in a fresh [`TestCtx`]; an error fails the test (after the diagnostics dump).
///
/// # Panics
/// When the namespace cannot be made or `body` fails: that is how a test fails.
pub fn run(test: &str, body: impl FnOnce(&TestCtx) -> Result<()>) {
    if std::env::var_os("KUBECONFIG").is_none() {
        // `cargo test --workspace` on a machine without a cluster: one clear failure per test
        // binary (cargo stops at the first), not one panic per test.
        static TOLD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !TOLD.swap(true, std::sync::atomic::Ordering::SeqCst) {
            panic!(
                "the e2e suite needs a cluster and KUBECONFIG is unset: run it with \
                 tests/scripts/e2e.sh, which builds a local control plane and installs the chart"
            );
        }
        return;
    }
    let ctx = match TestCtx::new(test) {
        Ok(ctx) => ctx,
        Err(err) => panic!("e2e {test}: setup failed: {err:#}"),
    };
    if let Err(err) = body(&ctx) {
        ctx.failed.set(true);
        drop(ctx);
        panic!("e2e {test} failed: {err:#}");
    }
}

static CLEAN_LEFTOVERS: Once = Once::new();

impl TestCtx {
    /// Creates the namespace and waits for its `default` ServiceAccount (pods need it).
    ///
    /// # Errors
    /// When the namespace cannot be created.
    pub fn new(test: &str) -> Result<Self> {
        let env = Env::get();
        let kubectl = Kubectl::admin();
        CLEAN_LEFTOVERS.call_once(|| {
            let selector = format!("{E2E_LABEL},{RUN_LABEL}!={}", env.run_id);
            if let Err(err) = delete_namespaces(&kubectl, &selector) {
                eprintln!("e2e: cleaning leftover namespaces failed: {err:#}");
            }
        });
        let slug: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        let suffix = format!("{:x}", std::process::id() ^ nanos());
        let ns = format!("e2e-{}-{suffix}", slug.trim_matches('-'));
        let dir = env.run_dir.join(&ns);
        std::fs::create_dir_all(&dir)?;
        let manifest = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    \
             {E2E_LABEL}: \"true\"\n    {RUN_LABEL}: \"{}\"\n",
            env.run_id
        );
        kubectl.apply(&manifest).context("create test namespace")?;
        let ctx = Self {
            ns,
            dir,
            kubectl,
            logs: RefCell::new(Vec::new()),
            failed: Cell::new(false),
        };
        eventually(
            "the namespace's default ServiceAccount",
            Duration::from_secs(30),
            || {
                Ok(ctx
                    .kubectl
                    .run(&["get", "sa", "default", "-n", &ctx.ns], None)?
                    .ok
                    .then_some(()))
            },
        )?;
        eprintln!("e2e: namespace {} (logs in {})", ctx.ns, ctx.dir.display());
        Ok(ctx)
    }

    /// Registers a component's log file to show if the test fails.
    pub fn attach_log(&self, name: &str, path: PathBuf) {
        self.logs.borrow_mut().push((name.to_owned(), path));
    }

    /// Writes the diagnostics dump (to stderr and `<dir>/failure.txt`).
    pub fn dump(&self) {
        let mut out = String::new();
        let ns = self.ns.as_str();
        let sections: [(&str, Vec<&str>); 5] = [
            (
                "objects",
                vec!["get", "-n", ns, "pods,dmemquotas,pdb", "-o", "wide"],
            ),
            (
                "events",
                vec!["get", "events", "-n", ns, "--sort-by=.lastTimestamp"],
            ),
            (
                "describe dmemquotas",
                vec!["describe", "dmemquotas", "-n", ns],
            ),
            ("describe pods", vec!["describe", "pods", "-n", ns]),
            (
                "chart namespace",
                vec![
                    "get",
                    "pods,leases",
                    "-n",
                    crate::env::RELEASE_NAMESPACE,
                    "-o",
                    "wide",
                ],
            ),
        ];
        for (title, args) in sections {
            let _ = writeln!(out, "----- {title}: kubectl {}", args.join(" "));
            match self.kubectl.run(&args, None) {
                Ok(o) => {
                    out.push_str(&o.stdout);
                    out.push_str(&o.stderr);
                }
                Err(err) => {
                    let _ = writeln!(out, "{err:#}");
                }
            }
        }
        for (name, path) in self.logs.borrow().iter() {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
            let _ = writeln!(
                out,
                "----- {name} log (last {LOG_TAIL_LINES} lines of {}):\n{tail}",
                path.display()
            );
        }
        let _ = std::fs::write(self.dir.join("failure.txt"), &out);
        eprintln!(
            "===== e2e diagnostics for namespace {ns} =====\n{out}===== end of diagnostics ====="
        );
    }
}

impl Drop for TestCtx {
    fn drop(&mut self) {
        if self.failed.get() || std::thread::panicking() {
            self.dump();
        }
        if std::env::var_os("KUBE_DMEM_E2E_KEEP").is_some() {
            eprintln!("e2e: keeping namespace {} (KUBE_DMEM_E2E_KEEP)", self.ns);
            return;
        }
        let selector = format!("kubernetes.io/metadata.name={}", self.ns);
        if let Err(err) = delete_namespaces(&self.kubectl, &selector) {
            eprintln!("e2e: deleting namespace {} failed: {err:#}", self.ns);
        }
    }
}

/// Deletes the namespaces matching `selector` without waiting, after dropping the finalizers of
/// the DmemQuotas in them (no operator may be left to remove them).
fn delete_namespaces(kubectl: &Kubectl, selector: &str) -> Result<()> {
    let list = kubectl.json(&["get", "namespaces", "-l", selector])?;
    for ns in list["items"].as_array().into_iter().flatten() {
        let Some(name) = ns["metadata"]["name"].as_str() else {
            continue;
        };
        let quotas = kubectl.json(&["get", "dmemquotas", "-n", name])?;
        for q in quotas["items"].as_array().into_iter().flatten() {
            if let Some(q) = q["metadata"]["name"].as_str() {
                let _ = kubectl.run(
                    &[
                        "patch",
                        "dmemquota",
                        q,
                        "-n",
                        name,
                        "--type=merge",
                        "-p",
                        r#"{"metadata":{"finalizers":null}}"#,
                    ],
                    None,
                );
            }
        }
        kubectl.ok(&[
            "delete",
            "namespace",
            name,
            "--wait=false",
            "--ignore-not-found",
        ])?;
    }
    Ok(())
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}
