//! Harness of the kube-dmem end-to-end suite (docs/contributing.md §8, tier 5).
//!
//! The suite runs against a real local control plane (`tests/scripts/cluster-up.sh`) with the Helm
//! chart installed (`tests/scripts/e2e.sh` does both). The components run as host processes under
//! the chart's ServiceAccounts, through tokens minted with the TokenRequest API, so the chart's RBAC
//! and admission policy are what the tests exercise.
//!
//! - [`env`](mod@env): where things are (`$KUBECONFIG`, kubectl, the built binaries, the per-run
//!   log dir).
//! - [`kubectl`]: a thin kubectl runner with JSON output.
//! - [`ctx`]: one labelled temporary namespace per test, diagnostics dumped on failure, cleanup.
//! - [`process`]: host processes with a kill-on-drop guard and a log file each.
//! - [`token`]: ServiceAccount tokens (optionally bound to a pod) written as kubeconfigs.
//! - [`components`]: starting the operator, the node agent and the FUSE simulator.
//! - [`poll`]: waiting for a condition with a deadline.
//! - [`apiserver`]: restarting kube-apiserver alone.
//! - [`prometheus`]: a real Prometheus scraping the test's processes, and its query API.

pub mod apiserver;
pub mod components;
pub mod ctx;
pub mod env;
pub mod fixtures;
pub mod kubectl;
pub mod poll;
pub mod process;
pub mod prometheus;
pub mod token;

pub use ctx::TestCtx;
pub use env::Env;
pub use kubectl::Kubectl;
pub use poll::eventually;
