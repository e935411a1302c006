//! CORE: the 7.3 synchronous reclaim run by a blocking `dmem.max` write below usage
//! (`docs/kernel.md` §3.3, §8.8): the dmem core's retry loop around the TTM reclaim op
//! `ttm_bo_evict_cgroup`.
//!
//! Modelling choice beyond `docs/kernel.md` §8.8: a round walks the LRU once respecting low and
//! once ignoring it, stopping as soon as usage ≤ max; a round that evicts nothing counts as the
//! op's `-ENOSPC` ("no progress"), and the loop gives up after 16 of them. No signals exist in the
//! model.

use crate::config::DMEM_MAX_RECLAIM_RETRIES;
use crate::kernel::SimKernel;
use crate::pool::PoolId;

impl SimKernel {
    /// 7.3 synchronous reclaim after a `dmem.max` write below usage (`docs/kernel.md` §3.3, §8.8):
    /// rounds of `ttm_bo_evict_cgroup` until usage ≤ max or 16 rounds made no progress.
    pub(crate) fn reclaim(&mut self, pool: PoolId) {
        let mut no_progress = 0;
        while self.over_max(pool) {
            if !self.reclaim_round(pool) {
                no_progress += 1;
                if no_progress >= DMEM_MAX_RECLAIM_RETRIES {
                    break;
                }
            }
        }
    }

    fn over_max(&self, pool: PoolId) -> bool {
        self.pool(pool.css, pool.region)
            .is_some_and(|p| p.usage > p.max)
    }

    /// One reclaim round: LRU walks over BOs charged to `pool`'s subtree, respecting low first,
    /// then ignoring it (descendants' min always holds; `pool`'s own BOs always go).
    fn reclaim_round(&mut self, pool: PoolId) -> bool {
        let mut progress = false;
        for ignore_low in [false, true] {
            for id in self.lru(pool.region) {
                if !self.over_max(pool) {
                    return progress;
                }
                let Some(bo) = self.bos.get(&id).filter(|b| b.resident) else {
                    continue;
                };
                let test = bo.pool.css;
                if !self.css_is_ancestor(pool.css, test) {
                    continue;
                }
                if self
                    .evict_valuable_css(Some(pool.css), test, pool.region, ignore_low)
                    .0
                {
                    self.evict(id);
                    progress = true;
                }
            }
        }
        progress
    }
}
