//! kube-dmem node agent (`kube-dmem-device-plugin`): the library behind the binary.
//!
//! One enforcement round is [`round`]: observe (kernel reads) -> decide (pure) -> act (kernel
//! writes) -> report. The pure decisions live in [`decide`] (and the kubelet's in
//! [`kubelet::decide`]); the purity check enforces that by path. Around the round:
//! - [`cluster`]: cluster mode (`run`): watches, the drive loop, API writes, the PreStart hook;
//! - [`kubelet`]: the kubelet edge (device plugin, registration, PodResources);
//! - [`dra`]: the DRA driver (ResourceSlice per node, claims prepared into pod limits);
//! - [`nri`]: the NRI plugin (containerd 2.x, CRI-O): limits in force before a container starts;
//! - [`cgroup`]: the kernel edge (the `CgroupFs` boundary, dmem file formats, the real and
//!   simulated backends, probing and pod-cgroup discovery), and [`simfs`], the kernel simulator
//!   served over FUSE;
//! - [`standalone`]: the same round on an embedded example, no cluster.
//!
//! Kernel facts: `docs/kernel.md`; conventions: `docs/contributing.md`.

pub mod args;
pub mod cgroup;
pub mod cluster;
pub mod decide;
pub mod dra;
pub mod kubelet;
pub mod metrics;
pub mod nri;
pub mod round;
pub mod simfs;
pub mod standalone;
