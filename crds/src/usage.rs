//! CORE: the simulator's usage annotation, `sim.kube-dmem.io/usage` ([`crate::SIM_USAGE_ANNOTATION`]).
//!
//! With the simulator backend, a test or a person declares how much VRAM a pod "allocates" by
//! annotating it: `REGION=QUANTITY[,REGION=QUANTITY...]`, for example
//! `drm/0000:03:00.0/vram0=6Gi,drm/0000:04:00.0/vram0=512Mi`. Region names are exact (no globs);
//! spaces around entries are ignored; an empty value means no usage.

use std::collections::BTreeMap;

use crate::quantity::{QuantityError, parse_quantity};

/// Why an annotation value cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimUsageError {
    /// An entry has no `=`.
    #[error("usage entry {entry:?} is not REGION=QUANTITY")]
    MissingEquals {
        /// The entry as written.
        entry: String,
    },
    /// An entry has nothing before `=`.
    #[error("usage entry {entry:?} has an empty region")]
    EmptyRegion {
        /// The entry as written.
        entry: String,
    },
    /// An entry's quantity does not parse.
    #[error("usage for region {region:?} is not a quantity")]
    InvalidQuantity {
        /// The region of the entry.
        region: String,
        /// Why the quantity does not parse.
        #[source]
        source: QuantityError,
    },
    /// A region appears twice.
    #[error("usage for region {region:?} is given twice")]
    DuplicateRegion {
        /// The repeated region.
        region: String,
    },
}

/// Parses the annotation value into bytes per region.
///
/// # Errors
/// [`SimUsageError`] for the first malformed entry.
pub fn parse_sim_usage(value: &str) -> Result<BTreeMap<String, u64>, SimUsageError> {
    let mut usage = BTreeMap::new();
    if value.trim().is_empty() {
        return Ok(usage);
    }
    for entry in value.split(',').map(str::trim) {
        let (region, quantity) =
            entry
                .split_once('=')
                .ok_or_else(|| SimUsageError::MissingEquals {
                    entry: entry.to_owned(),
                })?;
        let (region, quantity) = (region.trim(), quantity.trim());
        if region.is_empty() {
            return Err(SimUsageError::EmptyRegion {
                entry: entry.to_owned(),
            });
        }
        let bytes = parse_quantity(quantity).map_err(|source| SimUsageError::InvalidQuantity {
            region: region.to_owned(),
            source,
        })?;
        if usage.insert(region.to_owned(), bytes).is_some() {
            return Err(SimUsageError::DuplicateRegion {
                region: region.to_owned(),
            });
        }
    }
    Ok(usage)
}

/// Formats bytes per region as an annotation value that [`parse_sim_usage`] reads back.
pub fn format_sim_usage(usage: &BTreeMap<String, u64>) -> String {
    usage
        .iter()
        .map(|(region, bytes)| format!("{region}={bytes}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "drm/0000:03:00.0/vram0";
    const B: &str = "drm/0000:04:00.0/vram0";

    #[test]
    fn parses_entries() {
        let cases: &[(&str, &[(&str, u64)])] = &[
            ("", &[]),
            ("  ", &[]),
            ("drm/0000:03:00.0/vram0=6Gi", &[(A, 6 << 30)]),
            (
                "drm/0000:03:00.0/vram0=6Gi, drm/0000:04:00.0/vram0 = 512Mi",
                &[(A, 6 << 30), (B, 512 << 20)],
            ),
            ("drm/0000:03:00.0/vram0=0", &[(A, 0)]),
        ];
        for (value, want) in cases {
            let want: BTreeMap<String, u64> =
                want.iter().map(|(r, b)| ((*r).to_owned(), *b)).collect();
            assert_eq!(parse_sim_usage(value).as_ref(), Ok(&want), "{value}");
            assert_eq!(parse_sim_usage(&format_sim_usage(&want)), Ok(want));
        }
    }

    #[test]
    fn rejects_malformed_entries() {
        let cases: &[(&str, SimUsageError)] = &[
            (
                "drm/a",
                SimUsageError::MissingEquals {
                    entry: "drm/a".into(),
                },
            ),
            (
                "drm/a=1,",
                SimUsageError::MissingEquals {
                    entry: String::new(),
                },
            ),
            (
                "=1Gi",
                SimUsageError::EmptyRegion {
                    entry: "=1Gi".into(),
                },
            ),
            (
                "drm/a=lots",
                SimUsageError::InvalidQuantity {
                    region: "drm/a".into(),
                    source: QuantityError::Malformed {
                        text: "lots".into(),
                    },
                },
            ),
            (
                "drm/a=-1",
                SimUsageError::InvalidQuantity {
                    region: "drm/a".into(),
                    source: QuantityError::Negative { text: "-1".into() },
                },
            ),
            (
                "drm/a=1,drm/a=2",
                SimUsageError::DuplicateRegion {
                    region: "drm/a".into(),
                },
            ),
        ];
        for (value, want) in cases {
            assert_eq!(parse_sim_usage(value).as_ref(), Err(want), "{value}");
        }
    }
}
