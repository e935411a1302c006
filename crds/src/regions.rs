//! CORE: the value of the node annotation [`crate::NODE_REGIONS_ANNOTATION`],
//! `REGION=BYTES[,REGION=BYTES...]`: the node agent formats it from `dmem.capacity`, the operator
//! parses it to learn which regions exist anywhere in the cluster.

/// The regions in one annotation value, and the entries that were not `REGION=BYTES`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedRegions {
    /// `(region, bytes)`, in annotation order.
    pub regions: Vec<(String, u64)>,
    /// Entries that do not parse, as written.
    pub malformed: Vec<String>,
}

impl ParsedRegions {
    /// The region names, in annotation order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.regions.iter().map(|(name, _)| name.as_str())
    }
}

/// Formats regions as the annotation value, in the order given (registration order). Names with
/// `,` or whitespace cannot come from the kernel's `dmem.capacity` and are skipped.
pub fn format_regions<'a>(regions: impl IntoIterator<Item = (&'a str, u64)>) -> String {
    regions
        .into_iter()
        .filter(|(name, _)| valid_name(name) && !name.contains(','))
        .map(|(name, bytes)| format!("{name}={bytes}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses `REGION=BYTES[,REGION=BYTES...]`. Malformed entries are set aside rather than failing
/// the whole value, so one bad entry cannot hide a node's other regions.
pub fn parse_regions(value: &str) -> ParsedRegions {
    let mut parsed = ParsedRegions::default();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match entry
            .rsplit_once('=')
            .and_then(|(region, bytes)| Some((region, bytes.parse::<u64>().ok()?)))
        {
            Some((region, bytes)) if valid_name(region) => {
                parsed.regions.push((region.to_owned(), bytes));
            }
            _ => parsed.malformed.push(entry.to_owned()),
        }
    }
    parsed
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (annotation value, parsed regions, malformed entries)
    type Case<'a> = (&'a str, &'a [(&'a str, u64)], &'a [&'a str]);

    #[test]
    fn parses_leniently() {
        let cases: &[Case<'_>] = &[
            (
                "drm/0000:03:00.0/vram0=8589934592",
                &[("drm/0000:03:00.0/vram0", 8_589_934_592)],
                &[],
            ),
            ("a=1,b=2", &[("a", 1), ("b", 2)], &[]),
            (" a=1 , ,b=2,", &[("a", 1), ("b", 2)], &[]),
            ("", &[], &[]),
            (
                "a=1,b,c=x,=5,d=-1",
                &[("a", 1)],
                &["b", "c=x", "=5", "d=-1"],
            ),
        ];
        for (value, regions, malformed) in cases {
            let parsed = parse_regions(value);
            let got: Vec<(&str, u64)> = parsed
                .regions
                .iter()
                .map(|(r, b)| (r.as_str(), *b))
                .collect();
            assert_eq!(got, *regions, "{value}");
            assert_eq!(parsed.malformed, *malformed, "{value}");
        }
    }

    #[test]
    fn format_round_trips_and_skips_unwritable_names() {
        let value = format_regions([
            ("drm/0000:03:00.0/vram0", 8 << 30),
            ("r1", 5),
            ("a,b", 1),
            ("", 2),
        ]);
        assert_eq!(value, "drm/0000:03:00.0/vram0=8589934592,r1=5");
        let parsed = parse_regions(&value);
        assert_eq!(
            parsed.names().collect::<Vec<_>>(),
            ["drm/0000:03:00.0/vram0", "r1"]
        );
        assert!(parsed.malformed.is_empty());
        assert_eq!(format_regions([]), "");
    }
}
