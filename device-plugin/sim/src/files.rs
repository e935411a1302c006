//! CORE: the cgroupfs view (`docs/kernel.md` §1, §8.4): which files a cgroup has, which can be
//! opened for writing, and what a read returns.
//!
//! Modelling choices beyond `docs/kernel.md` §8.4:
//! * `cgroup.controllers` reads `"dmem\n"` when the cgroup has a dmem css (always on the root),
//!   else `""`; `cgroup.subtree_control` reads `"dmem\n"` or `""` (cgroup core prints nothing,
//!   not even a newline, for an empty mask). Only the dmem controller is modelled.
//! * The root's `dmem.capacity` and `dmem.current` appear only once a controller has been enabled
//!   in the root's `cgroup.subtree_control` (here: the first `+dmem` there) and stay after `-dmem`;
//!   until then they are `ENOENT`, as on the 7.2 and 7.3 kernels (`docs/kernel.md` §1.1, T27).
//! * Opens are modelled for root (the agent's case): a read-only file opens for writing
//!   (`CAP_DAC_OVERRIDE`), and the write then fails with `EINVAL` (`cgroup_file_write` finds no
//!   write handler). [`has_write_handler`] tells which files have one (a file server shows the
//!   others as 0444, so that an unprivileged writer gets `EACCES` at open, as from the kernel).
//! * `dmem.sim.charge` (every non-root cgroup, read-write) is the simulator's "task in this
//!   cgroup" control file; a read shows, per registered region, the bytes of BOs allocated by
//!   tasks of this cgroup that are resident in VRAM: `"{name} {bytes}\n"`.

use crate::config::Profile;
use crate::errno::Errno;
use crate::kernel::SimKernel;
use crate::tree::{NodeId, ROOT};

/// The simulator's control file through which "a task in this cgroup" allocates and frees VRAM.
pub const CHARGE_FILE: &str = "dmem.sim.charge";

const CONTROLLERS: &str = "cgroup.controllers";
const SUBTREE_CONTROL: &str = "cgroup.subtree_control";

/// The `dmem.*` interface files of the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DmemFile {
    /// `dmem.capacity` (root only, read-only).
    Capacity,
    /// `dmem.current` (read-only).
    Current,
    /// `dmem.min`.
    Min,
    /// `dmem.low`.
    Low,
    /// `dmem.max`.
    Max,
    /// `dmem.peak` (7.3+, read-only).
    Peak,
}

impl DmemFile {
    /// Every dmem file.
    pub const ALL: [DmemFile; 6] = [
        DmemFile::Capacity,
        DmemFile::Current,
        DmemFile::Min,
        DmemFile::Low,
        DmemFile::Max,
        DmemFile::Peak,
    ];

    /// The cgroupfs file name, e.g. `"dmem.max"`.
    pub fn name(self) -> &'static str {
        match self {
            DmemFile::Capacity => "dmem.capacity",
            DmemFile::Current => "dmem.current",
            DmemFile::Min => "dmem.min",
            DmemFile::Low => "dmem.low",
            DmemFile::Max => "dmem.max",
            DmemFile::Peak => "dmem.peak",
        }
    }

    /// The file called `name`, if it is a dmem file.
    pub fn from_name(name: &str) -> Option<DmemFile> {
        DmemFile::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether the file has a write handler (min, low, max).
    pub fn writable(self) -> bool {
        matches!(self, DmemFile::Min | DmemFile::Low | DmemFile::Max)
    }
}

/// Whether a file the simulator serves has a write handler (`dmem.min`, `dmem.low`, `dmem.max`,
/// `cgroup.subtree_control`, the charge file); writing any other file fails with `EINVAL`.
pub fn has_write_handler(file: &str) -> bool {
    match DmemFile::from_name(file) {
        Some(f) => f.writable(),
        None => file == SUBTREE_CONTROL || file == CHARGE_FILE,
    }
}

impl SimKernel {
    /// The files present in `node` now, sorted by name.
    pub(crate) fn node_files(&self, node: NodeId) -> Vec<&'static str> {
        let mut out = vec![CONTROLLERS, SUBTREE_CONTROL];
        if node == ROOT {
            if self.root_files {
                out.extend([DmemFile::Capacity.name(), DmemFile::Current.name()]);
            }
        } else {
            if self.nodes[node].css.is_some() {
                out.extend(
                    [
                        DmemFile::Current,
                        DmemFile::Low,
                        DmemFile::Max,
                        DmemFile::Min,
                    ]
                    .map(DmemFile::name),
                );
                if self.config.profile == Profile::Current {
                    out.push(DmemFile::Peak.name());
                }
            }
            out.push(CHARGE_FILE);
        }
        out.sort_unstable();
        out
    }

    /// The names of the files present in cgroup `path` now (depends on the dmem css, root-ness
    /// and profile), sorted.
    pub fn files(&self, path: &str) -> Result<Vec<&'static str>, Errno> {
        Ok(self.node_files(self.node_id(path)?))
    }

    /// Whether `open(2)` of `path/file` by root would succeed: `ENOENT` for a missing cgroup or
    /// file. Root opens a read-only file for writing too (`docs/kernel.md` §1.1, §8.4); the write
    /// itself fails ([`SimKernel::write_file`]). `write` is kept for callers that model the open
    /// mode; it changes nothing for root.
    pub fn check_open(&self, path: &str, file: &str, write: bool) -> Result<(), Errno> {
        let _ = write;
        let node = self.node_id(path)?;
        if !self.node_files(node).contains(&file) {
            return Err(Errno::ENOENT);
        }
        Ok(())
    }

    /// `"max"` for values `>= PAGE_COUNTER_MAX`, else the decimal value (`docs/kernel.md` §1.2).
    fn fmt_value(&self, v: u64) -> String {
        if v >= self.config.page_counter_max {
            "max".to_string()
        } else {
            v.to_string()
        }
    }

    /// The whole content of `path/file` as a read would return it.
    pub fn read_file(&self, path: &str, file: &str) -> Result<String, Errno> {
        self.check_open(path, file, false)?;
        let node = self.node_id(path)?;
        if file == CONTROLLERS {
            return Ok(if self.nodes[node].css.is_some() {
                "dmem\n"
            } else {
                ""
            }
            .to_string());
        }
        if file == SUBTREE_CONTROL {
            return Ok(if self.nodes[node].subtree_dmem {
                "dmem\n"
            } else {
                ""
            }
            .to_string());
        }
        let mut out = String::new();
        if file == CHARGE_FILE {
            for r in self.registered() {
                let bytes: u64 = self
                    .bos
                    .values()
                    .filter(|b| b.owner == node && b.region == r && b.resident)
                    .map(|b| b.size)
                    .sum();
                out.push_str(&format!("{} {bytes}\n", self.regions[r].name));
            }
            return Ok(out);
        }
        let Some(kind) = DmemFile::from_name(file) else {
            return Err(Errno::ENOENT);
        };
        let css = self.nodes[node].css.ok_or(Errno::ENOENT)?;
        for r in self.registered() {
            let region = &self.regions[r];
            let value = if kind == DmemFile::Capacity {
                region.size.to_string()
            } else {
                let pool = self.pool(css, r);
                let pcm = self.config.page_counter_max;
                self.fmt_value(match kind {
                    DmemFile::Current => pool.map_or(0, |p| p.usage),
                    DmemFile::Min => pool.map_or(0, |p| p.min),
                    DmemFile::Low => pool.map_or(0, |p| p.low),
                    DmemFile::Max => pool.map_or(pcm, |p| p.max),
                    DmemFile::Peak => pool.map_or(0, |p| p.watermark),
                    DmemFile::Capacity => 0,
                })
            };
            out.push_str(&format!("{} {value}\n", region.name));
        }
        Ok(out)
    }
}
