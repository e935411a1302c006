//! CORE: what a `write(2)` to a cgroup file does (`docs/kernel.md` §2, §8.2, §8.5): the limit
//! files (`dmem.min`/`dmem.low`/`dmem.max`) per profile, `cgroup.subtree_control`, and the
//! simulator's `dmem.sim.charge`.
//!
//! Modelling choices beyond `docs/kernel.md` §8.5:
//! * Writes longer than [`crate::SimConfig::write_limit`] fail with `E2BIG` before any parsing
//!   (kernfs `atomic_write_len`, `docs/kernel.md` §2.4); then a zero-byte write returns 0 for every
//!   file without reaching a handler (`cgroup_file_write`: `if (!nbytes) return 0`, both
//!   profiles); then a write to a read-only file (no write handler) fails with `EINVAL`.
//! * `LegacyUnfixed`: the region is looked up before the missing value is dereferenced (the NULL
//!   dereference is in `dmemcg_parse_limit`, after the lookup, `docs/kernel.md` §2.3), so an
//!   *unknown* name without a value is `EINVAL`, and only a known region without a value oopses.
//!   With the fix (`Legacy`) both are `EINVAL`, as `docs/kernel.md` §8.5 says.
//! * `cgroup.subtree_control` follows `cgroup_subtree_control_write`: the stripped buffer is split
//!   at single spaces, empty tokens are skipped, each token must be `+dmem` or `-dmem` (any other
//!   name is not a subsystem → `EINVAL`; the last token for dmem wins); enabling what is already
//!   enabled, or disabling what is not, is a successful no-op (no `EBUSY` check then).
//! * `dmem.sim.charge` takes exactly one `"REGION +BYTES"` or `"REGION -BYTES"` (stripped, split at
//!   the first space/tab like the limit files; BYTES in [`crate::parse::memparse`] syntax, non-zero;
//!   `max` is not accepted). Unknown region → `EINVAL`. `+` runs [`SimKernel::alloc_bo`] for a task
//!   in this cgroup and returns its errno (`EAGAIN`, `ENOSPC`); `-` frees that many bytes of this
//!   cgroup's resident BOs, newest first, shrinking the last one if needed; freeing more than is
//!   resident frees everything resident and succeeds.

use crate::config::Profile;
use crate::errno::{Errno, SimError};
use crate::files::{CHARGE_FILE, DmemFile, has_write_handler};
use crate::kernel::SimKernel;
use crate::parse::{c_str, memparse, parse_limit, split_name, strstrip};
use crate::pool::{PoolId, RegionId};
use crate::tree::NodeId;

impl SimKernel {
    /// One `write(2)` of `data` to `path/file` by root; `nonblock` = the file was opened with
    /// `O_NONBLOCK`. Returns the number of bytes written (always `data.len()` on success).
    pub fn write_file(
        &mut self,
        path: &str,
        file: &str,
        data: &[u8],
        nonblock: bool,
    ) -> Result<usize, SimError> {
        self.check_open(path, file, true)?;
        if data.len() > self.config.write_limit {
            return Err(Errno::E2BIG.into());
        }
        if data.is_empty() {
            return Ok(0);
        }
        if !has_write_handler(file) {
            return Err(Errno::EINVAL.into());
        }
        let node = self.node_id(path)?;
        if file == CHARGE_FILE {
            self.write_charge(node, data)?;
        } else if let Some(kind) = DmemFile::from_name(file) {
            self.write_limit(node, kind, data, nonblock)?;
        } else {
            self.write_subtree_control(node, data)?;
        }
        Ok(data.len())
    }

    fn write_limit(
        &mut self,
        node: NodeId,
        kind: DmemFile,
        data: &[u8],
        nonblock: bool,
    ) -> Result<(), SimError> {
        let css = self.nodes[node].css.ok_or(Errno::ENOENT)?;
        let buf = c_str(data);
        if self.config.profile == Profile::Current {
            let (name, rest) = split_name(strstrip(buf));
            let Some(rest) = rest.filter(|_| !name.is_empty()) else {
                return Err(Errno::EINVAL.into());
            };
            let region = self.lookup_region(name).ok_or(Errno::EINVAL)?;
            let val = parse_limit(rest, self.config.page_counter_max).ok_or(Errno::EINVAL)?;
            let pool = self.ensure_pool(css, region);
            self.apply_limit(kind, pool, val, nonblock);
            return Ok(());
        }
        for (lineno, line) in buf.split(|&b| b == b'\n').enumerate() {
            let s = strstrip(line);
            if s.is_empty() {
                continue;
            }
            let (name, rest) = split_name(s);
            let Some(rest) = rest else {
                if self.config.profile == Profile::LegacyUnfixed
                    && self.lookup_region(name).is_some()
                {
                    self.oopses += 1;
                    return Err(SimError::KernelOops {
                        file: kind.name().to_string(),
                        detail: format!(
                            "NULL pointer dereference in dmemcg_parse_limit: region {:?} without a value on line {}",
                            String::from_utf8_lossy(name),
                            lineno + 1
                        ),
                    });
                }
                return Err(Errno::EINVAL.into());
            };
            let region = self.lookup_region(name).ok_or(Errno::EINVAL)?;
            let val = parse_limit(rest, self.config.page_counter_max).ok_or(Errno::EINVAL)?;
            let pool = self.ensure_pool(css, region);
            self.apply_limit(kind, pool, val, false);
        }
        Ok(())
    }

    /// `apply` of `docs/kernel.md` §8.5: min/low unconditionally; max per profile (ignored below
    /// usage on legacy; applied and reclaimed on current unless non-blocking or the region has no
    /// reclaim op).
    fn apply_limit(&mut self, kind: DmemFile, pool: PoolId, val: u64, nonblock: bool) {
        let current = self.config.profile == Profile::Current;
        let has_reclaim = self.regions[pool.region].has_reclaim;
        let p = self.pool_mut(pool.css, pool.region);
        match kind {
            DmemFile::Min => p.min = val,
            DmemFile::Low => p.low = val,
            DmemFile::Max if current => {
                p.max = val;
                if !nonblock && has_reclaim {
                    self.reclaim(pool);
                }
            }
            DmemFile::Max => {
                if p.usage <= val {
                    p.max = val;
                }
            }
            DmemFile::Capacity | DmemFile::Current | DmemFile::Peak => {}
        }
    }

    fn write_subtree_control(&mut self, node: NodeId, data: &[u8]) -> Result<(), Errno> {
        let mut want = None;
        for tok in strstrip(c_str(data)).split(|&b| b == b' ') {
            let Some((&op, name)) = tok.split_first() else {
                continue;
            };
            if name != b"dmem" {
                return Err(Errno::EINVAL);
            }
            want = Some(match op {
                b'+' => true,
                b'-' => false,
                _ => return Err(Errno::EINVAL),
            });
        }
        match want {
            Some(enable) => self.set_subtree_dmem(node, enable),
            None => Ok(()),
        }
    }

    fn write_charge(&mut self, node: NodeId, data: &[u8]) -> Result<(), Errno> {
        let (name, rest) = split_name(strstrip(c_str(data)));
        let rest = rest.ok_or(Errno::EINVAL)?;
        let region: RegionId = self.lookup_region(name).ok_or(Errno::EINVAL)?;
        let (&sign, digits) = rest.split_first().ok_or(Errno::EINVAL)?;
        let (bytes, used) = memparse(digits);
        if used != digits.len() || bytes == 0 {
            return Err(Errno::EINVAL);
        }
        match sign {
            b'+' => self
                .alloc_bo_in(node, region, bytes)
                .map(|_| ())
                .map_err(|e| e.errno),
            b'-' => {
                self.free_bytes(node, region, bytes);
                Ok(())
            }
            _ => Err(Errno::EINVAL),
        }
    }
}
