//! Compiles the kubelet protos in `../proto` (device plugin v1beta1, PodResources v1, plugin
//! registration v1, DRA v1 and v1beta1, DRA device health v1alpha1) into `OUT_DIR`.
//!
//! `protox` parses them in pure Rust, so no system `protoc` is needed; `tonic-prost-build` generates
//! both clients and servers (the tests use the kubelet side to stand in for a real kubelet). The
//! generated code is included by `src/kubelet/proto.rs` and never committed.

use anyhow::Context as _;

const PROTO_DIR: &str = "../proto";
const PROTOS: [&str; 6] = [
    "deviceplugin.proto",
    "podresources.proto",
    "pluginregistration.proto",
    "dra/v1.proto",
    "dra/v1beta1.proto",
    "dra/health-v1alpha1.proto",
];

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={PROTO_DIR}/{proto}");
    }
    let fds = protox::compile(PROTOS, [PROTO_DIR]).context("parse kubelet protos")?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
        .context("generate gRPC code for kubelet protos")?;
    nri()?;
    Ok(())
}

// --- NRI (src/nri/): messages only. NRI speaks ttrpc, not gRPC, so no tonic services are generated;
// the small ttrpc layer over these prost messages is hand-written (src/nri/conn.rs).
const NRI_DIR: &str = "../proto/nri";
const NRI_PROTOS: [&str; 2] = ["nri.proto", "ttrpc.proto"];

fn nri() -> anyhow::Result<()> {
    for proto in NRI_PROTOS {
        println!("cargo:rerun-if-changed={NRI_DIR}/{proto}");
    }
    let fds = protox::compile(NRI_PROTOS, [NRI_DIR]).context("parse NRI protos")?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_fds(fds)
        .context("generate code for NRI protos")?;
    Ok(())
}
