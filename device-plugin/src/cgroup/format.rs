//! The text formats of the `dmem.*` files: parsing what the kernel prints and formatting what we write.
//!
//! CORE: pure functions over strings, no I/O. Read format (`docs/kernel.md` §1.2): one
//! `"<region> <value>\n"` line per registered region, split at the LAST space, value a decimal or `max`.
//! Write format (`docs/kernel.md` §10): exactly one region per write, `"<region> <bytes>\n"` or
//! `"<region> max\n"`, never a bare name (a bare name oopses 6.14–6.18 kernels without the stable
//! fix, `docs/kernel.md` §2.3). Parsing never panics on any input; errors carry the 1-based line
//! number and the line text.

use std::fmt;

/// `PAGE_COUNTER_MAX` on 4 KiB-page kernels: stored values at or above it print as `max`
/// (`docs/kernel.md` §1.2).
pub const PAGE_COUNTER_MAX_4K: u64 = 2_251_799_813_685_247;

/// `PAGE_COUNTER_MAX` on 64 KiB-page arm64 kernels, the smallest value that can print as `max`.
pub const PAGE_COUNTER_MAX_64K: u64 = 140_737_488_355_327;

/// Longest line text kept in a [`ParseError`], so a garbage file cannot blow up logs and Events.
const MAX_ERROR_TEXT: usize = 160;

/// A per-region value as the kernel prints it: bytes, or `max` (no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DmemValue {
    /// A number of bytes.
    Bytes(u64),
    /// The literal `max`: unlimited (any stored value `>= PAGE_COUNTER_MAX`).
    Max,
}

impl DmemValue {
    /// The byte count, `None` for `max`.
    pub const fn bytes(self) -> Option<u64> {
        match self {
            DmemValue::Bytes(b) => Some(b),
            DmemValue::Max => None,
        }
    }

    /// The value as a limit for comparisons: `max` counts as `u64::MAX`.
    pub const fn as_limit(self) -> u64 {
        match self {
            DmemValue::Bytes(b) => b,
            DmemValue::Max => u64::MAX,
        }
    }

    /// Whether a file reading `actual` shows this value in force. A byte value the kernel stores at or
    /// above its `PAGE_COUNTER_MAX` reads back as `max`; the page size is unknown here, so any value from
    /// the smallest known `PAGE_COUNTER_MAX` up counts as matching `max`.
    pub const fn reads_back_as(self, actual: DmemValue) -> bool {
        match (self, actual) {
            (DmemValue::Bytes(w), DmemValue::Bytes(a)) => w == a,
            (DmemValue::Max, DmemValue::Max) => true,
            (DmemValue::Bytes(w), DmemValue::Max) => w >= PAGE_COUNTER_MAX_64K,
            (DmemValue::Max, DmemValue::Bytes(_)) => false,
        }
    }
}

impl fmt::Display for DmemValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DmemValue::Bytes(b) => write!(f, "{b}"),
            DmemValue::Max => f.write_str("max"),
        }
    }
}

/// One line of a `dmem.*` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionValue {
    /// The region name, e.g. `drm/0000:03:00.0/vram0`.
    pub region: String,
    /// Its value.
    pub value: DmemValue,
}

/// A parsed `dmem.current/min/low/max/peak/high` file, lines in kernel (registration) order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DmemValues {
    entries: Vec<RegionValue>,
}

impl DmemValues {
    /// The value for `region`; the first line wins if a name repeats, as the kernel's lookup does
    /// (`docs/kernel.md` §4.1).
    pub fn get(&self, region: &str) -> Option<DmemValue> {
        self.entries
            .iter()
            .find(|e| e.region == region)
            .map(|e| e.value)
    }

    /// All lines in file order.
    pub fn iter(&self) -> impl Iterator<Item = &RegionValue> {
        self.entries.iter()
    }

    /// Number of lines.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file was empty (no region registered).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One line of `dmem.capacity`: a registered region and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionCapacity {
    /// The region name.
    pub region: String,
    /// The size the driver registered, in bytes (not enforced by dmem, `docs/kernel.md` §1.3).
    pub bytes: u64,
}

/// A malformed line in a `dmem.*` file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} {text:?}: {problem}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// The offending line (truncated to a bounded length).
    pub text: String,
    /// What is wrong with it.
    pub problem: ParseProblem,
}

/// What is wrong with a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseProblem {
    /// An empty line before the end of the file; the kernel never prints one.
    #[error("blank line")]
    BlankLine,
    /// No space between region and value.
    #[error("no space between region and value")]
    NoSeparator,
    /// Nothing before the last space.
    #[error("empty region name")]
    EmptyRegion,
    /// The value is neither a plain unsigned decimal that fits 64 bits nor `max`.
    #[error("value is not a decimal byte count or 'max'")]
    BadValue,
    /// `dmem.capacity` prints plain numbers only.
    #[error("'max' is not a capacity")]
    MaxInCapacity,
}

/// Parses a `dmem.current/min/low/max/peak/high` file.
pub fn parse_dmem_values(text: &str) -> Result<DmemValues, ParseError> {
    let mut entries = Vec::new();
    for (line, region, value) in split_lines(text)? {
        let value =
            parse_value(value).ok_or_else(|| error(line, region, value, ParseProblem::BadValue))?;
        entries.push(RegionValue {
            region: region.to_owned(),
            value,
        });
    }
    Ok(DmemValues { entries })
}

/// Parses the root's `dmem.capacity` file.
pub fn parse_capacity(text: &str) -> Result<Vec<RegionCapacity>, ParseError> {
    let mut regions = Vec::new();
    for (line, region, value) in split_lines(text)? {
        let bytes = match parse_value(value) {
            Some(DmemValue::Bytes(b)) => b,
            Some(DmemValue::Max) => {
                return Err(error(line, region, value, ParseProblem::MaxInCapacity));
            }
            None => return Err(error(line, region, value, ParseProblem::BadValue)),
        };
        regions.push(RegionCapacity {
            region: region.to_owned(),
            bytes,
        });
    }
    Ok(regions)
}

/// Parses one value as the kernel prints it: `max`, or digits only. Stricter than `u64::from_str`,
/// which would accept a leading `+` the kernel never prints.
pub fn parse_value(value: &str) -> Option<DmemValue> {
    if value == "max" {
        return Some(DmemValue::Max);
    }
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().map(DmemValue::Bytes)
}

/// Splits a file into `(line number, region, value)`, at the last space of each line.
fn split_lines(text: &str) -> Result<Vec<(usize, &str, &str)>, ParseError> {
    // One trailing newline terminates the last line; an empty file means no regions
    // (`docs/kernel.md` §1.2).
    let body = text.strip_suffix('\n').unwrap_or(text);
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (i, line) in body.split('\n').enumerate() {
        let n = i + 1;
        if line.is_empty() {
            return Err(error_text(n, line, ParseProblem::BlankLine));
        }
        // Region names may in theory contain spaces; values never do, so the last space separates.
        let Some((region, value)) = line.rsplit_once(' ') else {
            return Err(error_text(n, line, ParseProblem::NoSeparator));
        };
        if region.is_empty() {
            return Err(error_text(n, line, ParseProblem::EmptyRegion));
        }
        out.push((n, region, value));
    }
    Ok(out)
}

fn error(line: usize, region: &str, value: &str, problem: ParseProblem) -> ParseError {
    error_text(line, &format!("{region} {value}"), problem)
}

fn error_text(line: usize, text: &str, problem: ParseProblem) -> ParseError {
    let cut = text
        .char_indices()
        .nth(MAX_ERROR_TEXT)
        .map_or(text.len(), |(i, _)| i);
    ParseError {
        line,
        text: text[..cut].to_owned(),
        problem,
    }
}

/// Why a limit write was refused before reaching the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// An empty name would make the kernel see a bare value (EINVAL at best).
    #[error("empty region name")]
    EmptyRegion,
    /// Whitespace would split the name (the kernel splits at the first space or tab) or, with a newline,
    /// turn one write into several lines (partial application on legacy kernels, `docs/kernel.md`
    /// §2.3).
    #[error("region name contains whitespace")]
    Whitespace,
    /// Control characters (NUL ends the kernel's C string early) have no place in a region name.
    #[error("region name contains a control character")]
    ControlChar,
}

/// Formats one limit write: `"<region> <bytes>\n"` or `"<region> max\n"`. Always one region with a
/// value, so a bare name can never reach the kernel.
pub fn format_limit_write(region: &str, value: DmemValue) -> Result<String, FormatError> {
    if region.is_empty() {
        return Err(FormatError::EmptyRegion);
    }
    if region.chars().any(char::is_whitespace) {
        return Err(FormatError::Whitespace);
    }
    if region.chars().any(char::is_control) {
        return Err(FormatError::ControlChar);
    }
    Ok(format!("{region} {value}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const R0: &str = "drm/0000:03:00.0/vram0";

    #[test]
    fn parses_kernel_output() {
        let v = parse_dmem_values("drm/0000:03:00.0/vram0 1073741824\ndrm/0000:0a:00.0/vram max\n")
            .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v.get(R0), Some(DmemValue::Bytes(1 << 30)));
        assert_eq!(v.get("drm/0000:0a:00.0/vram"), Some(DmemValue::Max));
        assert_eq!(v.get("nope"), None);
        assert!(parse_dmem_values("").unwrap().is_empty());
        // No trailing newline is tolerated; a name with a space splits at the last one.
        let v = parse_dmem_values("odd name 5").unwrap();
        assert_eq!(v.get("odd name"), Some(DmemValue::Bytes(5)));
        // Duplicate names: first wins, like the kernel's write lookup.
        let v = parse_dmem_values("a 1\na 2\n").unwrap();
        assert_eq!(v.get("a"), Some(DmemValue::Bytes(1)));
    }

    #[test]
    fn reports_line_and_text() {
        let cases = [
            ("a 1\nb\n", 2, "b", ParseProblem::NoSeparator),
            ("a 1\n\nb 2\n", 2, "", ParseProblem::BlankLine),
            ("\n\n", 1, "", ParseProblem::BlankLine),
            (" 5\n", 1, " 5", ParseProblem::EmptyRegion),
            ("a +5\n", 1, "a +5", ParseProblem::BadValue),
            ("a MAX\n", 1, "a MAX", ParseProblem::BadValue),
            ("a -1\n", 1, "a -1", ParseProblem::BadValue),
            (
                "a 18446744073709551616\n",
                1,
                "a 18446744073709551616",
                ParseProblem::BadValue,
            ),
            ("a 1\nb 2 \n", 2, "b 2 ", ParseProblem::BadValue),
            ("a 1\r\n", 1, "a 1\r", ParseProblem::BadValue),
        ];
        for (text, line, bad, problem) in cases {
            let err = parse_dmem_values(text).unwrap_err();
            assert_eq!(
                (err.line, err.text.as_str(), err.problem),
                (line, bad, problem),
                "{text:?}"
            );
        }
        let err = parse_capacity("a 1\nb max\n").unwrap_err();
        assert_eq!((err.line, err.problem), (2, ParseProblem::MaxInCapacity));
        assert_eq!(err.to_string(), "line 2 \"b max\": 'max' is not a capacity");
    }

    #[test]
    fn parses_capacity() {
        let caps = parse_capacity(
            "drm/0000:03:00.0/vram0 8514437120\ndrm/0000:0a:00.0/vram 17095983104\n",
        )
        .unwrap();
        assert_eq!(
            caps,
            [
                RegionCapacity {
                    region: R0.into(),
                    bytes: 8_514_437_120
                },
                RegionCapacity {
                    region: "drm/0000:0a:00.0/vram".into(),
                    bytes: 17_095_983_104
                },
            ]
        );
    }

    #[test]
    fn error_text_is_bounded() {
        let long = format!("{} x\n", "é".repeat(10_000));
        let err = parse_dmem_values(&long).unwrap_err();
        assert_eq!(err.text.chars().count(), MAX_ERROR_TEXT);
    }

    #[test]
    fn formats_one_region_per_write() {
        assert_eq!(
            format_limit_write(R0, DmemValue::Bytes(1 << 30)).unwrap(),
            format!("{R0} 1073741824\n")
        );
        assert_eq!(
            format_limit_write(R0, DmemValue::Max).unwrap(),
            format!("{R0} max\n")
        );
        assert_eq!(
            format_limit_write("", DmemValue::Max),
            Err(FormatError::EmptyRegion)
        );
        for bad in ["a b", "a\tb", "a\n", "a\nb 1", "\u{a0}x", "a\u{2003}"] {
            assert_eq!(
                format_limit_write(bad, DmemValue::Max),
                Err(FormatError::Whitespace),
                "{bad:?}"
            );
        }
        assert_eq!(
            format_limit_write("a\0", DmemValue::Max),
            Err(FormatError::ControlChar)
        );
    }

    #[test]
    fn read_back_matching() {
        use DmemValue::{Bytes, Max};
        assert!(Bytes(5).reads_back_as(Bytes(5)));
        assert!(!Bytes(5).reads_back_as(Bytes(6)));
        assert!(Max.reads_back_as(Max));
        assert!(!Max.reads_back_as(Bytes(PAGE_COUNTER_MAX_4K)));
        assert!(Bytes(PAGE_COUNTER_MAX_4K).reads_back_as(Max));
        assert!(Bytes(PAGE_COUNTER_MAX_64K).reads_back_as(Max));
        assert!(!Bytes(1 << 30).reads_back_as(Max));
        assert_eq!(Max.as_limit(), u64::MAX);
        assert_eq!(Bytes(3).bytes(), Some(3));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            let _ = parse_dmem_values(&text);
            let _ = parse_capacity(&text);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_dmem_values(&text);
            let _ = parse_capacity(&text);
        }

        #[test]
        fn line_shaped_text_never_panics(text in "([a-z/:. 0-9]{0,12}( max| [0-9]{0,22})?\n?){0,6}") {
            let _ = parse_dmem_values(&text);
            let _ = parse_capacity(&text);
        }

        #[test]
        fn formatted_writes_parse_back(region in "[!-~]{1,40}", value in prop_oneof![
            any::<u64>().prop_map(DmemValue::Bytes), Just(DmemValue::Max)]) {
            let line = format_limit_write(&region, value).unwrap();
            let parsed = parse_dmem_values(&line).unwrap();
            prop_assert_eq!(parsed.get(&region), Some(value));
            prop_assert_eq!(parsed.len(), 1);
        }
    }
}
