//! Generated prost messages of the NRI API and of ttrpc's envelopes (from `proto/nri/`, compiled
//! by `build.rs` into `OUT_DIR`). Layer: generated types only, no logic.

/// NRI plugin API subset, package `nri.pkg.api.v1alpha1` (`proto/nri/nri.proto`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod api {
    include!(concat!(env!("OUT_DIR"), "/nri.pkg.api.v1alpha1.rs"));
}

/// ttrpc request and response envelopes, package `ttrpc` (`proto/nri/ttrpc.proto`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod ttrpc {
    include!(concat!(env!("OUT_DIR"), "/ttrpc.rs"));
}

/// The runtime's service name in ttrpc requests.
pub const RUNTIME_SERVICE: &str = "nri.pkg.api.v1alpha1.Runtime";
/// The plugin's service name in ttrpc requests.
pub const PLUGIN_SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";
