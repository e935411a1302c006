//! Typed access to the `dmem.*` files over any `&dyn CgroupFs`: read parsed values, read the regions, and
//! apply limits with the read-back the kernel rules demand.
//!
//! EDGE helpers (they perform I/O through the trait, but hold no `std::fs`, so they run unchanged against
//! the simulator). Kernel rules enforced here (`docs/kernel.md` §10): one region per write, always
//! with a value; every limit write is read back, because a 6.14–7.2 kernel silently ignores a
//! `dmem.max` below current usage (`docs/kernel.md` §3.3) and reports success.

use std::path::PathBuf;

use super::format::{
    DmemValue, DmemValues, RegionCapacity, format_limit_write, parse_capacity, parse_dmem_values,
};
use super::{CgroupError, CgroupFile, CgroupFs, CgroupPath};

/// What a limit write achieved, as seen by reading the file back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The file now shows the value written.
    Confirmed(DmemValue),
    /// The write returned success but the file shows something else: on 6.14–7.2, a `dmem.max` below
    /// current usage is dropped silently. The caller must report this, never claim success.
    NotApplied {
        /// The value written.
        wanted: DmemValue,
        /// The value the file shows afterwards.
        actual: DmemValue,
    },
}

impl Applied {
    /// Whether the value is in force.
    pub const fn is_confirmed(self) -> bool {
        matches!(self, Applied::Confirmed(_))
    }
}

/// A display path for errors raised above the backend (the backend's own errors carry its real path).
fn display_path(group: &CgroupPath, file: CgroupFile) -> PathBuf {
    PathBuf::from(group.as_str()).join(file.file_name())
}

/// Reads and parses a per-region file (`dmem.current`, `.min`, `.low`, `.max`, `.peak`, `.high`).
pub fn read_values(
    fs: &dyn CgroupFs,
    group: &CgroupPath,
    file: CgroupFile,
) -> Result<DmemValues, CgroupError> {
    let text = fs.read(group, file)?;
    parse_dmem_values(&text).map_err(|source| CgroupError::Parse {
        path: display_path(group, file),
        source,
    })
}

/// Reads the registered regions and their sizes from the root's `dmem.capacity`.
pub fn capacity(fs: &dyn CgroupFs) -> Result<Vec<RegionCapacity>, CgroupError> {
    let root = CgroupPath::root();
    let text = fs.read(&root, CgroupFile::DmemCapacity)?;
    parse_capacity(&text).map_err(|source| CgroupError::Parse {
        path: display_path(&root, CgroupFile::DmemCapacity),
        source,
    })
}

/// Writes `value` for `region` to the limit file `file` of `group` (one region, one `write(2)`), then
/// reads the file back and reports whether the kernel really holds the value.
pub fn apply_limit(
    fs: &dyn CgroupFs,
    group: &CgroupPath,
    file: CgroupFile,
    region: &str,
    value: DmemValue,
) -> Result<Applied, CgroupError> {
    let mut each = apply_limits(fs, group, file, &[(region, value)])?;
    each.pop().unwrap_or_else(|| {
        Err(CgroupError::RegionMissing {
            path: display_path(group, file),
            region: region.to_owned(),
        })
    })
}

/// Writes each `(region, value)` of `lines` to the limit file `file` of `group`, one region per
/// `write(2)` and every one attempted even after another failed, then reads the file back once:
/// what each write achieved, in the order of `lines`. One read for all of a pod's regions rather
/// than one per region: each read is a round trip the pod's limits wait on (several through FUSE).
///
/// # Errors
/// `file` is not a limit file (nothing written), or the read-back failed: the writes that
/// succeeded are then in the kernel but unconfirmed.
pub fn apply_limits(
    fs: &dyn CgroupFs,
    group: &CgroupPath,
    file: CgroupFile,
    lines: &[(&str, DmemValue)],
) -> Result<Vec<Result<Applied, CgroupError>>, CgroupError> {
    if !file.is_dmem_limit() {
        return Err(CgroupError::NotALimitFile {
            path: display_path(group, file),
        });
    }
    let written: Vec<Result<(), CgroupError>> = (lines.iter())
        .map(|&(region, value)| {
            let line = format_limit_write(region, value).map_err(|source| CgroupError::Format {
                path: display_path(group, file),
                region: region.to_owned(),
                source,
            })?;
            fs.write(group, file, &line)
        })
        .collect();
    // Nothing to read back when no write went through.
    let actual = if written.iter().any(Result::is_ok) {
        Some(read_values(fs, group, file)?)
    } else {
        None
    };
    Ok((lines.iter().zip(written))
        .map(|(&(region, value), written)| {
            written?;
            let actual = (actual.as_ref())
                .and_then(|values| values.get(region))
                .ok_or_else(|| CgroupError::RegionMissing {
                    path: display_path(group, file),
                    region: region.to_owned(),
                })?;
            Ok(if value.reads_back_as(actual) {
                Applied::Confirmed(actual)
            } else {
                Applied::NotApplied {
                    wanted: value,
                    actual,
                }
            })
        })
        .collect())
}

/// The value of `region` in a per-region file; a missing line is an error naming the file.
pub fn read_region(
    fs: &dyn CgroupFs,
    group: &CgroupPath,
    file: CgroupFile,
    region: &str,
) -> Result<DmemValue, CgroupError> {
    read_values(fs, group, file)?
        .get(region)
        .ok_or_else(|| CgroupError::RegionMissing {
            path: display_path(group, file),
            region: region.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    /// A minimal hand-written fake for this module's own logic; the kernel-faithful tests of
    /// `apply_limit` run against the simulator in `tests/`.
    #[derive(Default)]
    struct Files(
        Mutex<HashMap<(String, CgroupFile), String>>,
        Mutex<Vec<String>>,
        /// Reads so far.
        std::sync::atomic::AtomicUsize,
    );

    impl CgroupFs for Files {
        fn read(&self, g: &CgroupPath, f: CgroupFile) -> Result<String, CgroupError> {
            self.2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let files = self.0.lock().unwrap();
            files
                .get(&(g.to_string(), f))
                .cloned()
                .ok_or_else(|| CgroupError::Read {
                    path: display_path(g, f),
                    source: std::io::Error::from_raw_os_error(libc::ENOENT),
                })
        }
        fn write(&self, _: &CgroupPath, _: CgroupFile, v: &str) -> Result<(), CgroupError> {
            self.1.lock().unwrap().push(v.to_owned());
            Ok(())
        }
        fn children(&self, _: &CgroupPath) -> Result<Vec<String>, CgroupError> {
            Ok(Vec::new())
        }
        fn exists(&self, g: &CgroupPath, f: CgroupFile) -> bool {
            self.0.lock().unwrap().contains_key(&(g.to_string(), f))
        }
    }

    fn files(max: &str) -> (Files, CgroupPath) {
        let fake = Files::default();
        let g = CgroupPath::new("/k/a").unwrap();
        fake.0
            .lock()
            .unwrap()
            .insert((g.to_string(), CgroupFile::DmemMax), max.into());
        fake.0
            .lock()
            .unwrap()
            .insert(("/".into(), CgroupFile::DmemCapacity), "r 100\n".into());
        (fake, g)
    }

    #[test]
    fn read_back_decides_the_outcome() {
        let (fake, g) = files("r 5\ns max\n");
        let out = apply_limit(&fake, &g, CgroupFile::DmemMax, "r", DmemValue::Bytes(5)).unwrap();
        assert_eq!(out, Applied::Confirmed(DmemValue::Bytes(5)));
        assert!(out.is_confirmed());
        let out = apply_limit(&fake, &g, CgroupFile::DmemMax, "s", DmemValue::Bytes(1)).unwrap();
        assert_eq!(
            out,
            Applied::NotApplied {
                wanted: DmemValue::Bytes(1),
                actual: DmemValue::Max
            }
        );
        assert_eq!(*fake.1.lock().unwrap(), ["r 5\n", "s 1\n"]);
    }

    #[test]
    fn a_file_is_read_back_once_for_all_the_regions_written_to_it() {
        let (fake, g) = files("r 5\ns max\nt 3\n");
        let lines = [
            ("r", DmemValue::Bytes(5)),
            ("bad region", DmemValue::Bytes(2)),
            ("s", DmemValue::Bytes(1)),
            ("t", DmemValue::Bytes(3)),
        ];
        let each = apply_limits(&fake, &g, CgroupFile::DmemMax, &lines).unwrap();
        assert_eq!(
            fake.2.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "one read back"
        );
        // The bad line refused alone: the writes after it were made and checked.
        assert_eq!(*fake.1.lock().unwrap(), ["r 5\n", "s 1\n", "t 3\n"]);
        assert_eq!(
            each[0].as_ref().ok(),
            Some(&Applied::Confirmed(DmemValue::Bytes(5)))
        );
        assert_eq!(
            each[1].as_ref().map_err(CgroupError::reason).err(),
            Some("DmemInvalidRegion")
        );
        let not_applied = Applied::NotApplied {
            wanted: DmemValue::Bytes(1),
            actual: DmemValue::Max,
        };
        assert_eq!(each[2].as_ref().ok(), Some(&not_applied));
        assert_eq!(
            each[3].as_ref().ok(),
            Some(&Applied::Confirmed(DmemValue::Bytes(3)))
        );
        // Nothing written, nothing read.
        let each =
            apply_limits(&fake, &g, CgroupFile::DmemMax, &[("x y", DmemValue::Max)]).unwrap();
        assert!(each[0].is_err());
        assert_eq!(fake.2.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn refusals_happen_before_any_write() {
        let (fake, g) = files("r 5\n");
        let err = apply_limit(&fake, &g, CgroupFile::DmemMax, "r x", DmemValue::Max).unwrap_err();
        assert_eq!(err.reason(), "DmemInvalidRegion");
        let err = apply_limit(&fake, &g, CgroupFile::DmemCurrent, "r", DmemValue::Max).unwrap_err();
        assert_eq!(err.reason(), "DmemNotALimitFile");
        assert!(fake.1.lock().unwrap().is_empty());
        let err = apply_limit(&fake, &g, CgroupFile::DmemMax, "gone", DmemValue::Max).unwrap_err();
        assert_eq!(err.reason(), "DmemRegionMissing");
        assert_eq!(err.path(), std::path::Path::new("/k/a/dmem.max"));
    }

    #[test]
    fn parse_errors_name_the_file() {
        let (fake, g) = files("r 5\nbroken\n");
        let err = read_values(&fake, &g, CgroupFile::DmemMax).unwrap_err();
        assert_eq!(err.reason(), "DmemParseError");
        assert_eq!(err.path(), std::path::Path::new("/k/a/dmem.max"));
        let cap = capacity(&fake).unwrap();
        assert_eq!(cap[0].bytes, 100);
        let (fake, g) = files("r 5\n");
        assert_eq!(
            read_region(&fake, &g, CgroupFile::DmemMax, "r").unwrap(),
            DmemValue::Bytes(5)
        );
    }
}
