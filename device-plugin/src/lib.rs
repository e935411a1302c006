//! kube-dmem node agent (`kube-dmem-device-plugin`): the library behind the binary.
//!
//! The kernel edge is [`cgroup`] (the `CgroupFs` boundary, the dmem file formats, the real and
//! simulated backends, probing and pod-cgroup discovery) and [`simfs`] (the kernel simulator served
//! over FUSE); the binary's flags are in [`args`], its logging in [`telemetry`]. Kernel facts:
//! `docs/kernel.md`; conventions: `docs/contributing.md`.

pub mod act;
pub mod admin;
pub mod agent;
pub mod args;
pub mod cgroup;
pub mod conditions;
pub mod enforce;
pub mod kubelet;
pub mod metrics;
pub mod node;
pub mod pods;
pub mod pressure;
pub mod protect;
pub mod simfs;
pub mod standalone;
pub mod telemetry;
