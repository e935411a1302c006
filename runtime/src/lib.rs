//! kube-dmem-runtime: what the operator and the node agent run the same way, in one place so the
//! two binaries cannot drift: the admin server ([`admin`]: `/live`, `/ready`, `/metrics`), logging
//! ([`telemetry`]) and the loop that feeds a Kubernetes watch into its cache ([`watch`]).
//!
//! Everything here is EDGE (process setup, HTTP, the API server); the decisions of both binaries
//! stay in their own `decide/` modules and in `kube-dmem-crds`.

pub mod admin;
pub mod telemetry;
pub mod watch;
