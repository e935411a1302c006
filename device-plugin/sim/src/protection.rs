//! CORE: effective protection and the eviction decision (`docs/kernel.md` §3.4, §3.5, §8.7):
//! `page_counter_calculate_protection` over a pre-order walk, `effective_protection` with the
//! kernel's wrapping 64-bit products (or 128-bit "fixed" math), `evict_valuable`, and the 7.3
//! `below_min`/`below_low` queries.
//!
//! Modelling choice beyond `docs/kernel.md` §8.7: the walk visits offline csses too
//! (`css_for_each_descendant_pre` skips only released ones, and a css with charges is not
//! released), and the sibling sums (`children_min_usage`/`children_low_usage`) are recomputed from
//! the children's pools instead of being maintained incrementally — the values are the same.

use crate::errno::Errno;
use crate::kernel::SimKernel;
use crate::pool::RegionId;
use crate::tree::{CssId, ROOT};

/// Which protection a computation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Min,
    Low,
}

/// `effective_protection()` of mm/page_counter.c with recursive protection on.
///
/// `wrap`: the products are computed in wrapping 64-bit arithmetic (kernels up to 7.3) instead of
/// 128-bit (the linux-next fix).
pub fn effective_protection(
    usage: u64,
    parent_usage: u64,
    setting: u64,
    parent_effective: u64,
    siblings_protected: u64,
    wrap: bool,
) -> u64 {
    let mul_div = |a: u64, b: u64, d: u64| -> u64 {
        if wrap {
            a.wrapping_mul(b) / d
        } else {
            // The quotient never exceeds max(a, b) here, so the cast back is lossless.
            u64::try_from(u128::from(a) * u128::from(b) / u128::from(d)).unwrap_or(u64::MAX)
        }
    };
    let protected = usage.min(setting);
    if siblings_protected > parent_effective {
        return mul_div(protected, parent_effective, siblings_protected);
    }
    let mut ep = protected;
    if parent_effective > siblings_protected
        && parent_usage > siblings_protected
        && usage > protected
    {
        ep = ep.wrapping_add(mul_div(
            parent_effective - siblings_protected,
            usage - protected,
            parent_usage - siblings_protected,
        ));
    }
    ep
}

impl SimKernel {
    /// `Σ min(usage, X)` over the child pools of `parent` (`children_X_usage`).
    fn siblings_protected(&self, parent: CssId, region: RegionId, kind: Kind) -> u64 {
        self.csses[parent]
            .children
            .iter()
            .filter_map(|&c| self.pool(c, region))
            .map(|p| p.usage.min(if kind == Kind::Min { p.min } else { p.low }))
            .fold(0u64, u64::wrapping_add)
    }

    /// `page_counter_calculate_protection(root, c)` for one pool.
    fn calculate_one(&mut self, root: CssId, c: CssId, region: RegionId) {
        if c == root {
            return;
        }
        let Some(pool) = self.pool(c, region) else {
            return;
        };
        let usage = pool.usage;
        if usage == 0 {
            return; // emin/elow stay stale
        }
        let (min, low) = (pool.min, pool.low);
        let Some(parent) = self.csses[c].parent else {
            return;
        };
        if parent == root {
            let p = self.pool_mut(c, region);
            p.emin = min;
            p.elow = low;
            return;
        }
        let Some(pp) = self.pool(parent, region) else {
            return;
        };
        let (parent_usage, pemin, pelow) = (pp.usage, pp.emin, pp.elow);
        let wrap = self.config.wrap_protection_math;
        let sib_min = self.siblings_protected(parent, region, Kind::Min);
        let sib_low = self.siblings_protected(parent, region, Kind::Low);
        let emin = effective_protection(usage, parent_usage, min, pemin, sib_min, wrap);
        let elow = effective_protection(usage, parent_usage, low, pelow, sib_low, wrap);
        let p = self.pool_mut(c, region);
        p.emin = emin;
        p.elow = elow;
    }

    /// `calc(R, T)` (`docs/kernel.md` §8.7, `dmem_cgroup_calculate_protection`): pre-order over
    /// `root`'s subtree, stopping after `test`.
    pub(crate) fn calculate_protection(&mut self, root: CssId, test: CssId, region: RegionId) {
        for c in self.css_preorder(root) {
            if self.pool(c, region).is_none() {
                continue;
            }
            self.calculate_one(root, c, region);
            if c == test {
                break;
            }
        }
    }

    /// `dmem_cgroup_state_evict_valuable(limit, test, ignore_low, &hit_low)` exactly as
    /// `docs/kernel.md` §3.5. Returns (evictable, hit_low).
    pub(crate) fn evict_valuable_css(
        &mut self,
        limit: Option<CssId>,
        test: CssId,
        region: RegionId,
        ignore_low: bool,
    ) -> (bool, bool) {
        let root = match limit {
            Some(l) if l == test => return (true, false),
            Some(l) if self.csses[l].parent.is_none() => return (true, false),
            Some(l) if !self.css_is_ancestor(l, test) => return (false, false),
            Some(l) => l,
            None => ROOT,
        };
        self.calculate_protection(root, test, region);
        let Some(p) = self.pool(test, region) else {
            return (true, false);
        };
        if p.usage <= p.emin {
            return (false, false);
        }
        if ignore_low {
            return (true, false);
        }
        if p.usage > p.elow {
            (true, false)
        } else {
            (false, true)
        }
    }

    /// `dmem_cgroup_below_min/low(root, test)` (7.3): false for the root pool (or `root` itself),
    /// else recompute relative to `root` (global root when `None`) and compare usage.
    pub(crate) fn below_css(
        &mut self,
        root: Option<CssId>,
        test: CssId,
        region: RegionId,
        min: bool,
    ) -> bool {
        let root = root.unwrap_or(ROOT);
        if root == test || self.csses[test].parent.is_none() {
            return false;
        }
        self.calculate_protection(root, test, region);
        self.pool(test, region)
            .is_some_and(|p| p.usage <= if min { p.emin } else { p.elow })
    }

    /// Resolve (optional root cgroup, cgroup, region) to csses via effective css.
    fn resolve(
        &self,
        root: Option<&str>,
        cgroup: &str,
        region: &str,
    ) -> Result<(Option<CssId>, CssId, RegionId), Errno> {
        let root = match root {
            Some(r) => Some(self.effective_css(self.node_id(r)?)),
            None => None,
        };
        let css = self.effective_css(self.node_id(cgroup)?);
        let region = self.find_region_any(region).ok_or(Errno::ENODEV)?;
        Ok((root, css, region))
    }

    /// Recompute and return (emin, elow) of `cgroup`'s effective pool relative to `root` (global
    /// root when `None`), per `docs/kernel.md` §3.4/§8.7. (0, 0) when the cgroup, region or pool
    /// does not exist. Values stay stale for a pool with zero usage, as in the kernel.
    pub fn effective_protection(
        &mut self,
        root: Option<&str>,
        cgroup: &str,
        region: &str,
    ) -> (u64, u64) {
        let Ok((root, css, region)) = self.resolve(root, cgroup, region) else {
            return (0, 0);
        };
        if self.pool(css, region).is_none() {
            return (0, 0);
        }
        self.calculate_protection(root.unwrap_or(ROOT), css, region);
        self.pool(css, region).map_or((0, 0), |p| (p.emin, p.elow))
    }

    /// `evict_valuable` (`docs/kernel.md` §3.5) for BOs charged to `test`'s effective pool, with
    /// the limit pool of `limit`'s effective css (or none). Returns (evictable, hit_low). Errors
    /// for a missing cgroup or region; a missing test pool counts as evictable.
    pub fn evict_valuable(
        &mut self,
        limit: Option<&str>,
        test: &str,
        region: &str,
        ignore_low: bool,
    ) -> Result<(bool, bool), Errno> {
        let (limit, css, region) = self.resolve(limit, test, region)?;
        if let Some(l) = limit {
            self.ensure_pool(l, region);
        }
        self.ensure_pool(css, region);
        Ok(self.evict_valuable_css(limit, css, region, ignore_low))
    }

    /// `dmem_cgroup_below_min(root, pool)` (7.3) for `cgroup`'s effective pool.
    pub fn below_min(&mut self, root: Option<&str>, cgroup: &str, region: &str) -> bool {
        self.resolve(root, cgroup, region)
            .is_ok_and(|(r, c, reg)| self.pool(c, reg).is_some() && self.below_css(r, c, reg, true))
    }

    /// `dmem_cgroup_below_low(root, pool)` (7.3) for `cgroup`'s effective pool.
    pub fn below_low(&mut self, root: Option<&str>, cgroup: &str, region: &str) -> bool {
        self.resolve(root, cgroup, region).is_ok_and(|(r, c, reg)| {
            self.pool(c, reg).is_some() && self.below_css(r, c, reg, false)
        })
    }

    /// The path of the nearest common ancestor of two cgroups' effective csses
    /// (`dmem_cgroup_get_common_ancestor`).
    pub fn common_ancestor(&self, a: &str, b: &str) -> Result<String, Errno> {
        let a = self.effective_css(self.node_id(a)?);
        let b = self.effective_css(self.node_id(b)?);
        Ok(self.csses[self.css_common_ancestor(a, b)].path.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::effective_protection;

    const G: u64 = 1 << 30;

    #[test]
    fn proportional_and_floating() {
        // T17: parent elow 8G, usage 8G, siblings 4G + 2G protected.
        assert_eq!(
            effective_protection(6 * G, 8 * G, 4 * G, 8 * G, 6 * G, true),
            6 * G
        );
        assert_eq!(
            effective_protection(2 * G, 8 * G, 4 * G, 8 * G, 6 * G, true),
            2 * G
        );
        // T18: parent elow 6G.
        assert_eq!(
            effective_protection(6 * G, 8 * G, 4 * G, 6 * G, 6 * G, true),
            4 * G
        );
        // T19: overcommitted, 4G*4G wraps to 0 in the kernel.
        assert_eq!(
            effective_protection(6 * G, 8 * G, 4 * G, 4 * G, 6 * G, true),
            0
        );
        assert_eq!(
            effective_protection(6 * G, 8 * G, 4 * G, 4 * G, 6 * G, false),
            2_863_311_530
        );
        assert_eq!(
            effective_protection(2 * G, 8 * G, 4 * G, 4 * G, 6 * G, true),
            1_431_655_765
        );
        assert_eq!(
            effective_protection(2 * G, 8 * G, 4 * G, 4 * G, 6 * G, false),
            1_431_655_765
        );
    }

    #[test]
    fn no_floating_without_unprotected_usage() {
        // usage <= setting: just the protected amount.
        assert_eq!(effective_protection(G, 4 * G, 2 * G, 8 * G, 3 * G, true), G);
        // parent usage == siblings: no floating share.
        assert_eq!(effective_protection(2 * G, 3 * G, G, 8 * G, 3 * G, true), G);
        // zero setting and no parent protection.
        assert_eq!(effective_protection(5 * G, 10 * G, 0, 0, 0, true), 0);
    }

    #[test]
    fn floating_share_wraps_too() {
        // (pe - sib) * (usage - prot) = 8G * 8G = 2^66 wraps to 0 with 64-bit math.
        let wrapped = effective_protection(8 * G, 16 * G, 0, 8 * G, 0, true);
        let fixed = effective_protection(8 * G, 16 * G, 0, 8 * G, 0, false);
        assert_eq!(wrapped, 0);
        assert_eq!(fixed, 4 * G);
    }
}
