//! CORE: the TTM driver model (`docs/kernel.md` §3.6, §8.8): allocating a VRAM buffer object with
//! both profiles' pass structure and the LRU eviction walk. (The 7.3 reclaim is in `reclaim`.)
//!
//! Modelling choices beyond `docs/kernel.md` §8.8:
//! * A BO has a single placement, VRAM ("VRAM-only"): where TTM would fall back to the next
//!   placement (GTT), the allocation fails instead — `EAGAIN` (with the limit pool) when the last
//!   attempt hit a max, `ENOSPC` when it found the device full. A BO larger than the region fails
//!   with `ENOSPC` up front, without evicting anything; a zero-sized one with `EINVAL`.
//! * One eviction walk per pass, with the limit pool fixed at the start of the pass, as TTM does;
//!   after every eviction the allocation is retried (charge + device space, or only device space
//!   while a charge is held on `Current`); a retry whose charge succeeds but finds the device still
//!   full returns the charge and the walk continues.
//! * Eviction = the BO moves to GTT: it is uncharged from the pool it was charged to and leaves
//!   VRAM; it is never moved back. `evicted_bytes` counts it for that pool.
//! * The LRU is ordered by (priority, last use); new BOs are most recently used.

use crate::config::Profile;
use crate::errno::{ChargeError, Errno};
use crate::kernel::{Bo, BoId, SimKernel};
use crate::pool::{PoolId, RegionId};
use crate::tree::{CssId, NodeId};

/// Why one placement attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    /// A max would be exceeded at this css (`-EAGAIN` with `ret_limit_pool`).
    Limit(CssId),
    /// The device region has no room (`-ENOSPC` from the allocator).
    Full,
}

/// The limit pool an eviction walk passes to `evict_valuable`.
#[derive(Debug, Clone, Copy)]
enum WalkLimit {
    /// The same for every BO: the pool whose max was hit, or none (device full, legacy).
    Fixed(Option<CssId>),
    /// 7.3 device full: per BO, the common ancestor of the BO's pool and this charge pool.
    CommonAncestorWith(CssId),
}

/// What to retry after each eviction.
#[derive(Debug, Clone, Copy)]
enum Retry {
    /// Charge this css and look for device space.
    Charge(CssId),
    /// The charge is held; only look for device space.
    Held(PoolId),
}

/// One `ttm_bo_evict_alloc`.
#[derive(Debug, Clone, Copy)]
struct Walk {
    limit: WalkLimit,
    /// Skip BOs charged to this css (7.3, while `may_try_low` is false).
    skip: Option<CssId>,
    /// Whether the "ignore low" pass may run (after a first pass that hit low).
    low_pass: bool,
    retry: Retry,
}

impl SimKernel {
    fn room(&self, region: RegionId, size: u64) -> bool {
        let r = &self.regions[region];
        r.resident.saturating_add(size) <= r.size
    }

    /// `ttm_resource_alloc`: charge, then device space; the charge is returned on a full device.
    fn try_place(&mut self, css: CssId, region: RegionId, size: u64) -> Result<PoolId, Fail> {
        let pool = self.charge_css(css, region, size).map_err(Fail::Limit)?;
        if self.room(region, size) {
            Ok(pool)
        } else {
            self.uncharge_pool(pool, size);
            Err(Fail::Full)
        }
    }

    /// Resident, unpinned BOs of `region` in eviction order.
    pub(crate) fn lru(&self, region: RegionId) -> Vec<BoId> {
        let mut v: Vec<(&BoId, &Bo)> = self
            .bos
            .iter()
            .filter(|(_, b)| b.region == region && b.resident && !b.pinned)
            .collect();
        v.sort_by_key(|(_, b)| (b.priority, b.lru));
        v.into_iter().map(|(id, _)| *id).collect()
    }

    /// Move a BO to GTT: uncharge it and free its VRAM.
    pub(crate) fn evict(&mut self, id: BoId) {
        let Some(bo) = self.bos.get_mut(&id) else {
            return;
        };
        if !bo.resident {
            return;
        }
        bo.resident = false;
        let (pool, size) = (bo.pool, bo.size);
        self.uncharge_pool(pool, size);
        self.regions[pool.region].resident -= size;
        *self.evicted.entry((pool.css, pool.region)).or_default() += size;
    }

    /// `ttm_bo_evict_alloc`: a first pass respecting low, then (if some BO was skipped for low and
    /// the walk allows it) a pass ignoring low; min is always respected.
    fn evict_alloc(
        &mut self,
        region: RegionId,
        size: u64,
        walk: Walk,
        mut last: Fail,
    ) -> Result<PoolId, Fail> {
        let mut hit_low = false;
        for ignore_low in [false, true] {
            if ignore_low && !(hit_low && walk.low_pass) {
                break;
            }
            for id in self.lru(region) {
                let Some(bo) = self.bos.get(&id).filter(|b| b.resident) else {
                    continue;
                };
                let test = bo.pool.css;
                if walk.skip == Some(test) {
                    continue;
                }
                let limit = match walk.limit {
                    WalkLimit::Fixed(l) => l,
                    WalkLimit::CommonAncestorWith(c) => Some(self.css_common_ancestor(test, c)),
                };
                let (ok, hit) = self.evict_valuable_css(limit, test, region, ignore_low);
                hit_low |= hit;
                if !ok {
                    continue;
                }
                self.evict(id);
                match walk.retry {
                    Retry::Charge(css) => match self.try_place(css, region, size) {
                        Ok(pool) => return Ok(pool),
                        Err(e) => last = e,
                    },
                    Retry::Held(pool) if self.room(region, size) => return Ok(pool),
                    Retry::Held(_) => last = Fail::Full,
                }
            }
        }
        Err(last)
    }

    /// Legacy `ttm_bo_alloc_resource`: a pass without eviction, then a forced pass.
    fn alloc_legacy(&mut self, css: CssId, region: RegionId, size: u64) -> Result<PoolId, Fail> {
        if let Ok(pool) = self.try_place(css, region, size) {
            return Ok(pool);
        }
        let first = match self.try_place(css, region, size) {
            Ok(pool) => return Ok(pool),
            Err(e) => e,
        };
        let limit = match first {
            Fail::Limit(c) => Some(c),
            Fail::Full => None,
        };
        let walk = Walk {
            limit: WalkLimit::Fixed(limit),
            skip: None,
            low_pass: true,
            retry: Retry::Charge(css),
        };
        self.evict_alloc(region, size, walk, first)
    }

    /// 7.3 `ttm_bo_alloc_at_place`, non-forced then forced.
    fn alloc_current(&mut self, css: CssId, region: RegionId, size: u64) -> Result<PoolId, Fail> {
        // Non-forced pass: a charge failure goes to the next placement (here: the forced pass).
        if let Ok(pool) = self.charge_css(css, region, size) {
            if self.room(region, size) {
                return Ok(pool);
            }
            let may_try_low = self.below_css(None, css, region, true);
            let may_evict = may_try_low || self.below_css(None, css, region, false);
            if may_evict {
                let walk = Walk {
                    limit: WalkLimit::CommonAncestorWith(css),
                    skip: (!may_try_low).then_some(css),
                    low_pass: may_try_low,
                    retry: Retry::Held(pool),
                };
                if let Ok(pool) = self.evict_alloc(region, size, walk, Fail::Full) {
                    return Ok(pool);
                }
            }
            self.uncharge_pool(pool, size);
        }
        // Forced pass.
        match self.charge_css(css, region, size) {
            Err(limit) => {
                let walk = Walk {
                    limit: WalkLimit::Fixed(Some(limit)),
                    skip: None,
                    low_pass: true,
                    retry: Retry::Charge(css),
                };
                self.evict_alloc(region, size, walk, Fail::Limit(limit))
            }
            Ok(pool) if self.room(region, size) => Ok(pool),
            Ok(pool) => {
                let walk = Walk {
                    limit: WalkLimit::CommonAncestorWith(css),
                    skip: None,
                    low_pass: true,
                    retry: Retry::Held(pool),
                };
                let res = self.evict_alloc(region, size, walk, Fail::Full);
                if res.is_err() {
                    self.uncharge_pool(pool, size);
                }
                res
            }
        }
    }

    /// Allocate a BO of `size` bytes in VRAM for a task in `node`.
    pub(crate) fn alloc_bo_in(
        &mut self,
        node: NodeId,
        region: RegionId,
        size: u64,
    ) -> Result<BoId, ChargeError> {
        if size == 0 {
            return Err(ChargeError::new(Errno::EINVAL));
        }
        if self.regions[region].unregistered {
            return Err(ChargeError::new(Errno::ENODEV));
        }
        if size > self.regions[region].size {
            return Err(ChargeError::new(Errno::ENOSPC));
        }
        let css = self.effective_css(node);
        let res = match self.config.profile {
            Profile::Legacy | Profile::LegacyUnfixed => self.alloc_legacy(css, region, size),
            Profile::Current => self.alloc_current(css, region, size),
        };
        match res {
            Ok(pool) => {
                self.lru_clock += 1;
                let id = BoId(self.next_bo);
                self.next_bo += 1;
                self.regions[region].resident += size;
                let bo = Bo {
                    region,
                    size,
                    pool,
                    owner: node,
                    resident: true,
                    pinned: false,
                    priority: 0,
                    lru: self.lru_clock,
                };
                self.bos.insert(id, bo);
                Ok(id)
            }
            Err(Fail::Limit(c)) => Err(ChargeError {
                errno: Errno::EAGAIN,
                limit_pool: Some(self.csses[c].path.clone()),
            }),
            Err(Fail::Full) => Err(ChargeError::new(Errno::ENOSPC)),
        }
    }

    /// Allocate a buffer object of `size` bytes in VRAM for a task in `cgroup` (`docs/kernel.md`
    /// §8.8): charge its effective css, check device space, evict other BOs in the profile's order
    /// when needed. Errors: `EAGAIN` (+ limit pool) at a max eviction could not resolve, `ENOSPC`
    /// device full, `ENODEV` unregistered or unknown region, `ENOENT` no such cgroup, `EINVAL` zero
    /// size.
    pub fn alloc_bo(&mut self, cgroup: &str, region: &str, size: u64) -> Result<BoId, ChargeError> {
        let node = self.node_id(cgroup).map_err(ChargeError::new)?;
        let region = self
            .lookup_region(region.as_bytes())
            .ok_or(ChargeError::new(Errno::ENODEV))?;
        self.alloc_bo_in(node, region, size)
    }
}
