//! `kube-dmem-sim`: a pure, in-memory model of the Linux `dmem` cgroup controller and of a
//! TTM-based GPU driver charging it, for both kernel profiles (legacy 6.14–7.2 and current 7.3+).
//! It implements `docs/kernel.md` §8 (normative) with the details of §2 and §3.
//!
//! CORE crate: no I/O, no clocks. Backends (the node agent's in-process `CgroupFs` simulator and
//! the FUSE filesystem) wrap a [`SimKernel`] and translate paths, files and errnos.
//!
//! Map of modules: `config` (profiles), `errno` (errors), `parse` (memparse, strstrip), `tree`
//! (cgroups), `pool` (regions, page_counter charging), `protection` (emin/elow,
//! evict_valuable), `files` (what a read shows), `write` (what a write does), `evict` (BO
//! allocation, TTM eviction passes), `reclaim` (7.3 reclaim on max writes), `bo` (BO bookkeeping).

mod bo;
mod config;
mod errno;
mod evict;
mod files;
mod kernel;
pub mod parse;
mod pool;
mod protection;
mod reclaim;
mod tree;
mod write;

pub use config::{
    DMEM_MAX_RECLAIM_RETRIES, PAGE_COUNTER_MAX_4K, PAGE_COUNTER_MAX_64K, Profile, SimConfig,
};
pub use errno::{ChargeError, Errno, SimError};
pub use files::{CHARGE_FILE, DmemFile, has_write_handler};
pub use kernel::{BoId, SimKernel};
pub use pool::PoolId;
pub use protection::effective_protection;
