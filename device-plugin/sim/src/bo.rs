//! CORE: buffer-object bookkeeping of the driver model: freeing, inspection and LRU/pinning
//! controls for tests, and the per-cgroup eviction counters.

use crate::kernel::{BoId, SimKernel};
use crate::pool::RegionId;
use crate::tree::NodeId;

impl SimKernel {
    /// Destroy a BO: if it is in VRAM its charge is returned to the pool it was charged to
    /// (which works after rmdir and after region unregistration). Unknown ids are ignored.
    pub fn free_bo(&mut self, bo: BoId) {
        let Some(b) = self.bos.remove(&bo) else {
            return;
        };
        if b.resident {
            self.uncharge_pool(b.pool, b.size);
            self.regions[b.region].resident -= b.size;
        }
    }

    /// Free `bytes` of the resident BOs allocated by tasks of `node` in `region`, newest first,
    /// shrinking the last one if it is larger than what is left to free.
    pub(crate) fn free_bytes(&mut self, node: NodeId, region: RegionId, bytes: u64) {
        let mut ids: Vec<BoId> = self
            .bos
            .iter()
            .filter(|(_, b)| b.owner == node && b.region == region && b.resident)
            .map(|(id, _)| *id)
            .collect();
        ids.reverse();
        let mut left = bytes;
        for id in ids {
            if left == 0 {
                break;
            }
            let Some(b) = self.bos.get_mut(&id) else {
                continue;
            };
            if b.size <= left {
                left -= b.size;
                self.free_bo(id);
            } else {
                b.size -= left;
                let pool = b.pool;
                self.uncharge_pool(pool, left);
                self.regions[region].resident -= left;
                left = 0;
            }
        }
    }

    /// Whether the BO is in VRAM (`Some(false)` once evicted, `None` if unknown or freed).
    pub fn bo_resident(&self, bo: BoId) -> Option<bool> {
        self.bos.get(&bo).map(|b| b.resident)
    }

    /// The size of the BO in bytes, if it exists.
    pub fn bo_size(&self, bo: BoId) -> Option<u64> {
        self.bos.get(&bo).map(|b| b.size)
    }

    /// The name of the region the BO was allocated in.
    pub fn bo_region(&self, bo: BoId) -> Option<String> {
        self.bos
            .get(&bo)
            .map(|b| self.regions[b.region].name.clone())
    }

    /// The cgroup path of the pool the BO is (or was) charged to.
    pub fn bo_pool_path(&self, bo: BoId) -> Option<String> {
        self.bos.get(&bo).map(|b| self.pool_path(b.pool))
    }

    /// Pin or unpin a BO (pinned BOs are never evicted).
    pub fn set_bo_pinned(&mut self, bo: BoId, pinned: bool) {
        if let Some(b) = self.bos.get_mut(&bo) {
            b.pinned = pinned;
        }
    }

    /// Set a BO's LRU priority bucket (lower buckets are evicted first; default 0).
    pub fn set_bo_priority(&mut self, bo: BoId, priority: u8) {
        if let Some(b) = self.bos.get_mut(&bo) {
            b.priority = priority;
        }
    }

    /// Mark a BO as most recently used (moves it to the tail of the LRU).
    pub fn touch_bo(&mut self, bo: BoId) {
        self.lru_clock += 1;
        let clock = self.lru_clock;
        if let Some(b) = self.bos.get_mut(&bo) {
            b.lru = clock;
        }
    }

    /// Bytes of BOs resident in the region's VRAM (device-level usage, independent of dmem).
    pub fn device_used(&self, region: &str) -> u64 {
        self.find_region_any(region)
            .map_or(0, |r| self.regions[r].resident)
    }

    /// Bytes of BOs charged to `cgroup`'s effective css pool or any pool below it that were
    /// evicted (moved to GTT) so far, by allocations or by reclaim. Hierarchical, like `usage`.
    pub fn evicted_bytes(&self, cgroup: &str, region: &str) -> u64 {
        let (Ok(node), Some(region)) = (self.node_id(cgroup), self.find_region_any(region)) else {
            return 0;
        };
        self.css_preorder(self.effective_css(node))
            .into_iter()
            .filter_map(|c| self.evicted.get(&(c, region)))
            .sum()
    }
}
