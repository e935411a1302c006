//! CORE: the simulated kernel state, [`SimKernel`]. Its methods are spread over the modules that
//! own each concern: `tree` (cgroups), `pool` (regions, charges), `protection`, `files` and
//! `write` (cgroupfs view), `evict` (the TTM driver model).

use std::collections::BTreeMap;

use crate::config::{Profile, SimConfig};
use crate::pool::{Pool, PoolId, Region, RegionId};
use crate::tree::{Css, CssId, Node, NodeId, ROOT};

/// Identifies a buffer object created by [`SimKernel::alloc_bo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BoId(pub u64);

/// A buffer object of the driver model (`docs/kernel.md` §8.8).
#[derive(Debug, Clone)]
pub(crate) struct Bo {
    pub region: RegionId,
    pub size: u64,
    /// The pool its VRAM resource is charged to (kept after eviction, for `evicted_bytes`).
    pub pool: PoolId,
    /// The cgroup of the task that allocated it (for `dmem.sim.charge` frees).
    pub owner: NodeId,
    /// In VRAM (charged) or evicted to GTT (uncharged).
    pub resident: bool,
    pub pinned: bool,
    /// TTM LRU priority bucket; lower buckets are walked first.
    pub priority: u8,
    /// LRU position: higher = more recently used.
    pub lru: u64,
}

/// An in-memory model of the kernel's dmem controller plus a TTM-like driver (`docs/kernel.md` §8).
#[derive(Debug, Clone)]
pub struct SimKernel {
    pub(crate) config: SimConfig,
    pub(crate) regions: Vec<Region>,
    pub(crate) nodes: Vec<Node>,
    pub(crate) csses: Vec<Css>,
    pub(crate) pools: BTreeMap<(CssId, RegionId), Pool>,
    pub(crate) bos: BTreeMap<BoId, Bo>,
    /// Bytes evicted per pool (the pool the BO was charged to), not hierarchical.
    pub(crate) evicted: BTreeMap<(CssId, RegionId), u64>,
    pub(crate) next_bo: u64,
    pub(crate) lru_clock: u64,
    pub(crate) oopses: u32,
    /// The root shows `dmem.capacity` and `dmem.current`: set by the first `+dmem` in the root's
    /// `cgroup.subtree_control` (a controller enabled there), never cleared.
    pub(crate) root_files: bool,
}

impl SimKernel {
    /// A kernel with only the root cgroup `/` (which has the dmem css) and no regions, as after
    /// boot: nothing enabled in the root's `cgroup.subtree_control` yet, so the root does not show
    /// `dmem.capacity` and `dmem.current` until `+dmem` is written there.
    pub fn new(config: SimConfig) -> Self {
        SimKernel {
            config,
            regions: Vec::new(),
            nodes: vec![Node {
                path: "/".to_string(),
                parent: None,
                children: BTreeMap::new(),
                subtree_dmem: false,
                has_tasks: false,
                css: Some(ROOT),
                alive: true,
            }],
            csses: vec![Css {
                path: "/".to_string(),
                parent: None,
                children: Vec::new(),
                online: true,
            }],
            pools: BTreeMap::new(),
            bos: BTreeMap::new(),
            evicted: BTreeMap::new(),
            next_bo: 1,
            lru_clock: 0,
            oopses: 0,
            root_files: false,
        }
    }

    /// The kernel profile.
    pub fn profile(&self) -> Profile {
        self.config.profile
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// How many writes "crashed the kernel" so far ([`crate::SimError::KernelOops`]).
    pub fn oopsed(&self) -> u32 {
        self.oopses
    }
}
