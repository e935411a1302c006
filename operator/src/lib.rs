//! kube-dmem-operator: keeps every `DmemQuota`'s status, flags conflicts between quotas and evicts
//! pods that stay above their `high` limit (`docs/architecture.md` §4).
//!
//! The pipeline is observe (edge, [`observe`]) → decide (core, [`decide`] with its submodules
//! `observed`, `status`, `remediation` and `notices`) → act (edge, [`act`]), driven by
//! [`reconcile`] and wired by [`controller`]. Everything under `decide/` takes time as a `now`
//! argument and never touches the client; the purity check enforces that by path. The binary in `main.rs`
//! only parses flags, sets up telemetry and waits for a signal.

pub mod act;
pub mod args;
pub mod controller;
pub mod decide;
pub mod health;
pub mod lease;
pub mod metrics;
pub mod observe;
pub mod reconcile;

// Builders for tests and the `decide` bench; plain data, no I/O.
#[doc(hidden)]
pub mod fixtures;
