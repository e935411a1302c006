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

/// Kubelet plugin registration API v1 (`proto/pluginregistration.proto`): how the DRA driver
/// announces itself (`docs/dra.md` §1).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pluginregistration {
    tonic::include_proto!("pluginregistration");
}

/// Kubelet DRA plugin API v1 (`proto/dra/v1.proto`, `docs/dra.md` §2).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod dra_v1 {
    tonic::include_proto!("k8s.io.kubelet.pkg.apis.dra.v1");
}

/// Kubelet DRA plugin API v1beta1 (`proto/dra/v1beta1.proto`): the same messages without
/// `share_id`, for kubelets older than 1.34.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod dra_v1beta1 {
    tonic::include_proto!("k8s.io.kubelet.pkg.apis.dra.v1beta1");
}

/// Kubelet DRA device health API v1alpha1 (`proto/dra/health-v1alpha1.proto`, `docs/dra.md`
/// §2.4): the stream through which pods learn that a device of their claims went away.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod dra_health {
    tonic::include_proto!("v1alpha1");
}

/// API version string sent in `RegisterRequest.version`; the kubelet rejects any other.
pub const DEVICE_PLUGIN_VERSION: &str = "v1beta1";

/// Device health the kubelet counts as allocatable; anything else is unhealthy.
pub const HEALTHY: &str = "Healthy";

/// Device health of a unit that is listed (counts in capacity) but must not be allocated.
pub const UNHEALTHY: &str = "Unhealthy";
