//! Where the suite finds things: the cluster (`$KUBECONFIG`), kubectl, the built binaries and the
//! directory that collects this run's logs. Read once per test binary.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};

/// Label on every namespace the suite creates; cleanup deletes by it.
pub const E2E_LABEL: &str = "kube-dmem.io/e2e";
/// Label naming the run that created a namespace (leftovers of other runs are deleted).
pub const RUN_LABEL: &str = "kube-dmem.io/e2e-run";
/// Namespace the chart is installed into by `tests/scripts/e2e.sh`.
pub const RELEASE_NAMESPACE: &str = "kube-dmem";
/// Helm release name used by `tests/scripts/e2e.sh`; resource names derive from it.
pub const RELEASE: &str = "kube-dmem";
/// The chart's operator ServiceAccount (`<release>-operator`).
pub const OPERATOR_SA: &str = "kube-dmem-operator";
/// The chart's node-agent ServiceAccount (`<release>-device-plugin`).
pub const AGENT_SA: &str = "kube-dmem-device-plugin";
/// Label selector of the chart's node-agent DaemonSet pods.
pub const AGENT_POD_SELECTOR: &str =
    "app.kubernetes.io/instance=kube-dmem,app.kubernetes.io/component=device-plugin";
/// The kwok fake GPU nodes made by `cluster-up.sh`.
pub const NODES: [&str; 2] = ["gpu-node-0", "gpu-node-1"];

/// Paths and identifiers of this run.
#[derive(Debug)]
pub struct Env {
    /// The admin kubeconfig (`$KUBECONFIG`).
    pub kubeconfig: PathBuf,
    /// kubectl at the cluster's version.
    pub kubectl: PathBuf,
    /// Repository root.
    pub root: PathBuf,
    /// Directory of `kube-dmem-operator` and `kube-dmem-device-plugin`.
    pub bin_dir: PathBuf,
    /// This run's identifier (shared by every test binary when `e2e.sh` sets it).
    pub run_id: String,
    /// Logs, kubeconfigs and dumps of this run.
    pub run_dir: PathBuf,
    /// The cluster's state dir (`$KUBE_DMEM_E2E_DIR`, default `/tmp/kube-dmem-e2e`).
    pub state_dir: PathBuf,
}

static ENV: OnceLock<Env> = OnceLock::new();

impl Env {
    /// The environment, read on first use.
    ///
    /// # Panics
    /// When `$KUBECONFIG` is unset or the run directory cannot be made: nothing can run then.
    pub fn get() -> &'static Env {
        ENV.get_or_init(|| match Env::read() {
            Ok(env) => env,
            Err(err) => panic!("kube-dmem e2e: {err:#}"),
        })
    }

    fn read() -> Result<Env> {
        let kubeconfig = match std::env::var_os("KUBECONFIG") {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => bail!(
                "KUBECONFIG is not set. The e2e suite needs a running cluster with the chart \
                 installed: run tests/scripts/e2e.sh, or `eval \"$(tests/scripts/cluster-up.sh)\"` \
                 and the helm install from that script, then `cargo test -p kube-dmem-e2e`."
            ),
        };
        if !kubeconfig.is_file() {
            bail!("KUBECONFIG={} is not a file", kubeconfig.display());
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("the e2e crate has no parent directory")?
            .to_path_buf();
        let kubectl = match std::env::var_os("KUBE_DMEM_KUBECTL") {
            Some(p) => PathBuf::from(p),
            None => {
                let built = root.join("tests/tools/bin/kubectl");
                if built.exists() {
                    built
                } else {
                    PathBuf::from("kubectl")
                }
            }
        };
        // target/debug/deps/<test binary> -> target/debug
        let bin_dir = match std::env::var_os("KUBE_DMEM_E2E_BIN_DIR") {
            Some(p) => PathBuf::from(p),
            None => std::env::current_exe()?
                .parent()
                .and_then(Path::parent)
                .context("cannot locate the target directory from the test binary")?
                .to_path_buf(),
        };
        let run_id = std::env::var("KUBE_DMEM_E2E_RUN_ID").unwrap_or_else(|_| {
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            format!("{secs}-{}", std::process::id())
        });
        let run_dir = match std::env::var_os("KUBE_DMEM_E2E_RUN_DIR") {
            Some(p) => PathBuf::from(p),
            None => root.join("target/e2e-runs").join(&run_id),
        };
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("cannot create {}", run_dir.display()))?;
        let state_dir = std::env::var_os("KUBE_DMEM_E2E_DIR")
            .map_or_else(|| PathBuf::from("/tmp/kube-dmem-e2e"), PathBuf::from);
        Ok(Env {
            kubeconfig,
            kubectl,
            root,
            bin_dir,
            run_id,
            run_dir,
            state_dir,
        })
    }

    /// Path of a built binary, with a clear error when `cargo build` has not made it.
    ///
    /// # Errors
    /// When the binary does not exist.
    pub fn binary(&self, name: &str) -> Result<PathBuf> {
        let path = self.bin_dir.join(name);
        if !path.is_file() {
            bail!(
                "{} does not exist; build it first: cargo build -p {name}",
                path.display()
            );
        }
        Ok(path)
    }
}
