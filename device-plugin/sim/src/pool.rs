//! CORE: regions and pools (`docs/kernel.md` §8.1, §8.3, §8.6, §8.9): lazy pool creation, the
//! hierarchical page_counter charge and uncharge, and region (un)registration.

use crate::errno::{ChargeError, Errno};
use crate::kernel::SimKernel;
use crate::tree::CssId;

/// Index of a region in the region arena (registration order).
pub(crate) type RegionId = usize;

/// A registered (or formerly registered) device memory region.
#[derive(Debug, Clone)]
pub(crate) struct Region {
    pub name: String,
    pub size: u64,
    pub unregistered: bool,
    pub has_reclaim: bool,
    /// Bytes of BOs resident in this region (driver model; `Σ resident BO sizes`, `docs/kernel.md`
    /// §8.6).
    pub resident: u64,
}

/// One `struct dmem_cgroup_pool_state` (its page_counter, in bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pool {
    pub usage: u64,
    pub min: u64,
    pub low: u64,
    pub max: u64,
    pub watermark: u64,
    pub emin: u64,
    pub elow: u64,
}

/// A handle on one pool: a (dmem css, region) pair. Stays valid after the cgroup is removed or the
/// region unregistered, so charges can always be returned to the pool they were taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId {
    pub(crate) css: CssId,
    pub(crate) region: RegionId,
}

impl SimKernel {
    /// Register a region of `size` bytes, appended after the existing ones. `size == 0` is
    /// ignored, like `dmem_cgroup_register_region`. `has_reclaim`: the driver registered a
    /// reclaim op (xe/amdgpu VRAM on 7.3+), used by blocking `dmem.max` writes on `Current`.
    pub fn register_region(&mut self, name: &str, size: u64, has_reclaim: bool) {
        if size == 0 {
            return;
        }
        self.regions.push(Region {
            name: name.to_string(),
            size,
            unregistered: false,
            has_reclaim,
            resident: 0,
        });
    }

    /// Unregister the first registered region called `name` (`docs/kernel.md` §8.9). `ENOENT` if
    /// there is none.
    pub fn unregister_region(&mut self, name: &str) -> Result<(), Errno> {
        let id = self.lookup_region(name.as_bytes()).ok_or(Errno::ENOENT)?;
        self.regions[id].unregistered = true;
        Ok(())
    }

    /// The registered regions, in registration order, with their sizes.
    pub fn regions(&self) -> Vec<(String, u64)> {
        self.registered()
            .map(|r| (self.regions[r].name.clone(), self.regions[r].size))
            .collect()
    }

    /// Ids of the registered regions in order.
    pub(crate) fn registered(&self) -> impl Iterator<Item = RegionId> + '_ {
        (0..self.regions.len()).filter(|&r| !self.regions[r].unregistered)
    }

    /// First registered region with exactly this name (`dmemcg_get_region_by_name`).
    pub(crate) fn lookup_region(&self, name: &[u8]) -> Option<RegionId> {
        self.registered()
            .find(|&r| self.regions[r].name.as_bytes() == name)
    }

    /// A region by name for driver-side calls: the first registered one, else the most recently
    /// unregistered one (so charges taken before unregistration can be inspected and returned).
    pub(crate) fn find_region_any(&self, name: &str) -> Option<RegionId> {
        self.lookup_region(name.as_bytes()).or_else(|| {
            (0..self.regions.len())
                .rev()
                .find(|&r| self.regions[r].name == name)
        })
    }

    /// `ensure_pool` (`docs/kernel.md` §8.3): the pool of (`css`, `region`), creating it and every
    /// missing ancestor pool with the defaults.
    pub(crate) fn ensure_pool(&mut self, css: CssId, region: RegionId) -> PoolId {
        for c in self.css_chain(css) {
            let max = self.config.page_counter_max;
            self.pools.entry((c, region)).or_insert(Pool {
                usage: 0,
                min: 0,
                low: 0,
                max,
                watermark: 0,
                emin: 0,
                elow: 0,
            });
        }
        PoolId { css, region }
    }

    /// The pool, if it exists.
    pub(crate) fn pool(&self, css: CssId, region: RegionId) -> Option<&Pool> {
        self.pools.get(&(css, region))
    }

    /// The pool, mutably. Callers guarantee it exists; a missing pool is a simulator bug.
    pub(crate) fn pool_mut(&mut self, css: CssId, region: RegionId) -> &mut Pool {
        let max = self.config.page_counter_max;
        // `ensure_pool` always runs before; falling back to a default pool keeps this total.
        self.pools.entry((css, region)).or_insert(Pool {
            usage: 0,
            min: 0,
            low: 0,
            max,
            watermark: 0,
            emin: 0,
            elow: 0,
        })
    }

    /// Reset the limits of every pool of `css` (`reset_all_resource_limits`, css offline).
    pub(crate) fn reset_limits(&mut self, css: CssId) {
        let max = self.config.page_counter_max;
        for ((_, _), pool) in self.pools.range_mut((css, 0)..(css + 1, 0)) {
            pool.min = 0;
            pool.low = 0;
            pool.max = max;
        }
    }

    /// The cgroup path of a pool's css (as it was when the cgroup existed).
    pub fn pool_path(&self, pool: PoolId) -> String {
        self.csses[pool.css].path.clone()
    }

    /// `page_counter_try_charge` on `css`'s pool chain (`docs/kernel.md` §8.6). On a limit hit: the
    /// lowest failing css, and no state change.
    pub(crate) fn charge_css(
        &mut self,
        css: CssId,
        region: RegionId,
        size: u64,
    ) -> Result<PoolId, CssId> {
        let pool = self.ensure_pool(css, region);
        let chain = self.css_chain(css);
        for &c in &chain {
            if self
                .pool(c, region)
                .is_some_and(|p| p.usage.saturating_add(size) > p.max)
            {
                return Err(c);
            }
        }
        for &c in &chain {
            let p = self.pool_mut(c, region);
            p.usage += size;
            p.watermark = p.watermark.max(p.usage);
        }
        Ok(pool)
    }

    /// Raw charge (`dmem_cgroup_try_charge`, `docs/kernel.md` §8.6) for a task in `cgroup`,
    /// returning the pool charged (the task's effective css). No eviction and no device-capacity
    /// check.
    pub fn try_charge_pool(
        &mut self,
        cgroup: &str,
        region: &str,
        size: u64,
    ) -> Result<PoolId, ChargeError> {
        let node = self.node_id(cgroup).map_err(ChargeError::new)?;
        let region = self
            .lookup_region(region.as_bytes())
            .ok_or(ChargeError::new(Errno::ENODEV))?;
        let css = self.effective_css(node);
        self.charge_css(css, region, size)
            .map_err(|limit| ChargeError {
                errno: Errno::EAGAIN,
                limit_pool: Some(self.csses[limit].path.clone()),
            })
    }

    /// Raw charge of `size` bytes for a task in `cgroup` (`docs/kernel.md` §8.6): `EAGAIN` with the
    /// limit pool's path when a max would be exceeded (nothing changes), `ENODEV` for an
    /// unregistered or unknown region, `ENOENT` for a missing cgroup.
    pub fn try_charge(&mut self, cgroup: &str, region: &str, size: u64) -> Result<(), ChargeError> {
        self.try_charge_pool(cgroup, region, size).map(|_| ())
    }

    /// `page_counter_uncharge` on the pool chain (`docs/kernel.md` §8.6): saturating at 0 (the
    /// kernel WARNs).
    pub fn uncharge_pool(&mut self, pool: PoolId, size: u64) {
        for c in self.css_chain(pool.css) {
            if let Some(p) = self.pools.get_mut(&(c, pool.region)) {
                p.usage = p.usage.saturating_sub(size);
            }
        }
    }

    /// Uncharge `size` bytes from the pool of `cgroup`'s effective css. Works for unregistered
    /// regions (`docs/kernel.md` §8.9); a missing cgroup, region or pool makes it a no-op.
    pub fn uncharge(&mut self, cgroup: &str, region: &str, size: u64) {
        let (Ok(node), Some(region)) = (self.node_id(cgroup), self.find_region_any(region)) else {
            return;
        };
        let css = self.effective_css(node);
        if self.pool(css, region).is_some() {
            self.uncharge_pool(PoolId { css, region }, size);
        }
    }

    /// Hierarchical usage of the pool of `cgroup`'s effective css (what its `dmem.current` shows
    /// when it has a css); 0 when there is no pool, cgroup or region.
    pub fn usage(&self, cgroup: &str, region: &str) -> u64 {
        let (Ok(node), Some(region)) = (self.node_id(cgroup), self.find_region_any(region)) else {
            return 0;
        };
        self.pool(self.effective_css(node), region)
            .map_or(0, |p| p.usage)
    }
}
