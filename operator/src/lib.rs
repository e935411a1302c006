//! kube-dmem-operator: keeps every `DmemQuota`'s status, flags conflicts between quotas and evicts
//! pods that stay above their `high` limit (`docs/architecture.md` §4).
//!
//! The pipeline is observe (edge, [`observe`]) → decide (core, [`decide`], [`status`],
//! [`remediation`]) → act (edge, [`act`]), driven by [`reconcile`] and wired by [`controller`].
//! Core modules take time as a `now` argument and never touch the client. The binary in `main.rs`
//! only parses flags, sets up telemetry and waits for a signal.

pub mod act;
pub mod admin;
pub mod args;
pub mod controller;
pub mod decide;
pub mod lease;
pub mod metrics;
pub mod notices;
pub mod observe;
pub mod observed;
pub mod reconcile;
pub mod remediation;
pub mod status;
pub mod telemetry;

// Builders for tests and the `decide` bench; plain data, no I/O.
#[doc(hidden)]
pub mod fixtures;
