//! Generated gRPC code for the kubelet APIs (from `proto/`, compiled by `build.rs` into `OUT_DIR`).
//!
//! Layer: generated types only, no logic. Both sides are generated: the plugin side (our server,
//! the PodResources client) and the kubelet side (used by the test double in `tests/`).

/// Kubelet device plugin API v1beta1 (`proto/deviceplugin.proto`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1beta1 {
    tonic::include_proto!("v1beta1");
}

/// Kubelet PodResources API v1 (`proto/podresources.proto`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod podresources {
    tonic::include_proto!("v1");
}

/// API version string sent in `RegisterRequest.version`; the kubelet rejects any other.
pub const DEVICE_PLUGIN_VERSION: &str = "v1beta1";

/// Device health the kubelet counts as allocatable; anything else is unhealthy.
pub const HEALTHY: &str = "Healthy";

/// Device health of a unit that is listed (counts in capacity) but must not be allocated.
pub const UNHEALTHY: &str = "Unhealthy";
