//! CORE: kubectl-like output: aligned tables with upper-case headers, byte sizes as `13Gi`, ages as
//! `5d` or `3h`, and the `-o json|yaml` encodings of the same values.

use std::fmt::Write as _;

use serde::Serialize;

/// Output format (`-o`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns, like `kubectl get`.
    #[default]
    Table,
    /// JSON, pretty-printed.
    Json,
    /// YAML.
    Yaml,
}

/// Why a value could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// JSON encoding failed.
    #[error("encoding JSON")]
    Json(#[source] serde_json::Error),
    /// YAML encoding failed.
    #[error("encoding YAML")]
    Yaml(#[source] serde_saphyr::ser::Error),
}

/// `value` as JSON (with a final newline) or YAML.
///
/// # Errors
/// When the encoder fails (it does not for the types of this crate).
pub fn encode<T: Serialize>(value: &T, format: Format) -> Result<String, RenderError> {
    match format {
        Format::Json | Format::Table => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(RenderError::Json),
        Format::Yaml => serde_saphyr::to_string(value).map_err(RenderError::Yaml),
    }
}

/// A table: a header row and rows of cells, rendered with columns separated by three spaces.
#[derive(Clone, Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Adds a row (cells beyond the headers are kept, missing ones are empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether only the header row exists.
    pub fn is_empty(&self) -> bool {
        self.rows.len() <= 1
    }

    /// The aligned text, one line per row, without trailing spaces.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                let _ = write!(line, "{cell:<width$}   ");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Bytes in binary units as Kubernetes writes quantities: `0`, `512Ki`, `1.5Gi`, `13Gi`.
pub fn bytes(value: u64) -> String {
    const UNITS: [(&str, u64); 5] = [
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (suffix, size) in UNITS {
        if value >= size {
            // One decimal is what a table needs; precision loss in the cast is irrelevant here.
            #[allow(clippy::cast_precision_loss)]
            let scaled = value as f64 / size as f64;
            let text = format!("{scaled:.1}");
            let text = text.strip_suffix(".0").unwrap_or(&text);
            return format!("{text}{suffix}");
        }
    }
    value.to_string()
}

/// An optional byte value; `-` when absent.
pub fn opt_bytes(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), bytes)
}

/// A duration in seconds as kubectl shows ages: `45s`, `12m`, `5h`, `3d`; `-` when negative.
pub fn age(seconds: i64) -> String {
    match seconds {
        s if s < 0 => "-".to_owned(),
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// A percentage of `part` in `whole`, `-` when either is unknown or `whole` is zero.
pub fn percent(part: Option<u64>, whole: Option<u64>) -> String {
    match (part, whole) {
        (Some(p), Some(w)) if w > 0 => {
            #[allow(clippy::cast_precision_loss)]
            let pct = p as f64 * 100.0 / w as f64;
            format!("{pct:.0}%")
        }
        _ => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_quantities() {
        let cases = [
            (0, "0"),
            (1023, "1023"),
            (1024, "1Ki"),
            (1536, "1.5Ki"),
            (512 << 20, "512Mi"),
            (1 << 30, "1Gi"),
            (13 << 30, "13Gi"),
            ((15 << 30) / 2, "7.5Gi"),
            (8_556_380_160, "8Gi"),
            (8_000_000_000, "7.5Gi"),
            (3 << 40, "3Ti"),
            (u64::MAX, "16384Pi"),
        ];
        for (value, want) in cases {
            assert_eq!(bytes(value), want, "{value}");
        }
        assert_eq!(opt_bytes(None), "-");
    }

    #[test]
    fn ages_and_percentages() {
        assert_eq!(age(-1), "-");
        assert_eq!(age(59), "59s");
        assert_eq!(age(600), "10m");
        assert_eq!(age(3 * 3600), "3h");
        assert_eq!(age(10 * 86400 + 5), "10d");
        assert_eq!(percent(Some(16), Some(24)), "67%");
        assert_eq!(percent(Some(1), Some(0)), "-");
        assert_eq!(percent(None, Some(4)), "-");
    }

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let mut t = Table::new(&["NAME", "VALUE"]);
        assert!(t.is_empty());
        t.row(vec!["a".into(), "1".into()]);
        t.row(vec!["longer-name".into(), String::new()]);
        assert_eq!(
            t.render(),
            "NAME          VALUE\na             1\nlonger-name\n"
        );
    }

    #[test]
    fn json_and_yaml_encode_the_same_value() {
        #[derive(Serialize)]
        struct V {
            name: &'static str,
            bytes: u64,
        }
        let v = V {
            name: "x",
            bytes: 5,
        };
        let json = encode(&v, Format::Json).expect("json");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json).expect("valid"),
            serde_json::json!({"name": "x", "bytes": 5})
        );
        let yaml = encode(&v, Format::Yaml).expect("yaml");
        assert!(
            yaml.contains("name: x") && yaml.contains("bytes: 5"),
            "{yaml}"
        );
    }
}
