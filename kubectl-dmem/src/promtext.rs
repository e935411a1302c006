//! CORE: a small parser of the Prometheus text exposition format (0.0.4) and of the OpenMetrics
//! text the agents' `prometheus-client` writes, enough to read the node agents' `/metrics`.
//!
//! Owns the grammar of one sample line: `name{label="value",...} value [timestamp]`, with the label
//! value escapes `\\`, `\"` and `\n`, an optional trailing comma in the label set, the special
//! values `NaN`, `+Inf`, `-Inf`, and an OpenMetrics exemplar (` # {...} v`) after the value, which
//! is ignored. `# HELP`, `# TYPE`, `# UNIT` and other comments are skipped; `# EOF` ends the input.
//! The parser is strict: the first malformed line fails the whole text with its line number, so a
//! format change shows up as an error rather than as silently missing numbers.

use std::collections::BTreeMap;

/// One sample: a metric name, its labels and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name, for example `kube_dmem_agent_pod_usage_bytes`.
    pub name: String,
    /// Label names to (unescaped) values.
    pub labels: BTreeMap<String, String>,
    /// The value; may be NaN or infinite.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// Why a line is not a sample.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// The line does not start with a valid metric name.
    #[error("expected a metric name")]
    MetricName,
    /// A label name is missing or invalid.
    #[error("expected a label name")]
    LabelName,
    /// A label name is not followed by `="`.
    #[error("expected =\" after label name {0:?}")]
    LabelEquals(String),
    /// A label value has no closing quote.
    #[error("unterminated label value")]
    UnterminatedValue,
    /// A backslash in a label value is followed by something other than `\`, `"` or `n`.
    #[error("invalid escape \\{0} in label value")]
    InvalidEscape(char),
    /// Something other than `,` or `}` follows a label value.
    #[error("expected , or }} after a label value")]
    LabelSeparator,
    /// A label name appears twice in one sample.
    #[error("duplicate label {0:?}")]
    DuplicateLabel(String),
    /// The sample has no value.
    #[error("missing value")]
    MissingValue,
    /// The value is not a number.
    #[error("invalid value {0:?}")]
    InvalidValue(String),
    /// The timestamp is not an integer.
    #[error("invalid timestamp {0:?}")]
    InvalidTimestamp(String),
    /// Text follows the value and timestamp.
    #[error("unexpected text after the value: {0:?}")]
    Trailing(String),
}

/// A malformed line, with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    #[source]
    pub kind: ParseErrorKind,
}

/// Parses a whole exposition.
///
/// # Errors
/// The first malformed sample line.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if comment.trim() == "EOF" {
                break;
            }
            continue;
        }
        let sample = parse_line(line).map_err(|kind| ParseError {
            line: index + 1,
            kind,
        })?;
        samples.push(sample);
    }
    Ok(samples)
}

/// Parses one sample line (not a comment, not empty).
fn parse_line(line: &str) -> Result<Sample, ParseErrorKind> {
    let mut cursor = Cursor { rest: line };
    let name = cursor
        .take_while(|c, first| is_name_char(c, first) || c == ':')
        .ok_or(ParseErrorKind::MetricName)?
        .to_owned();
    // The reference parser allows blanks between the name and the label set.
    cursor.skip_spaces();
    let labels = if cursor.eat('{') {
        parse_labels(&mut cursor)?
    } else {
        BTreeMap::new()
    };
    let mut fields = cursor.rest.split_whitespace();
    let value_text = fields.next().ok_or(ParseErrorKind::MissingValue)?;
    let value = parse_value(value_text)?;
    match fields.next() {
        None => {}
        // An OpenMetrics exemplar: not needed here.
        Some("#") => {}
        Some(ts) => {
            // Prometheus 0.0.4 timestamps are integer milliseconds; OpenMetrics allows floats.
            if ts.parse::<f64>().is_err() {
                return Err(ParseErrorKind::InvalidTimestamp(ts.to_owned()));
            }
            match fields.next() {
                None | Some("#") => {}
                Some(other) => return Err(ParseErrorKind::Trailing(other.to_owned())),
            }
        }
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

fn parse_labels(cursor: &mut Cursor<'_>) -> Result<BTreeMap<String, String>, ParseErrorKind> {
    let mut labels = BTreeMap::new();
    loop {
        cursor.skip_spaces();
        if cursor.eat('}') {
            return Ok(labels);
        }
        let key = cursor
            .take_while(is_name_char)
            .ok_or(ParseErrorKind::LabelName)?
            .to_owned();
        cursor.skip_spaces();
        if !cursor.eat('=') {
            return Err(ParseErrorKind::LabelEquals(key));
        }
        cursor.skip_spaces();
        if !cursor.eat('"') {
            return Err(ParseErrorKind::LabelEquals(key));
        }
        let value = cursor.quoted()?;
        if labels.insert(key.clone(), value).is_some() {
            return Err(ParseErrorKind::DuplicateLabel(key));
        }
        cursor.skip_spaces();
        if cursor.eat(',') {
            continue;
        }
        if cursor.eat('}') {
            return Ok(labels);
        }
        return Err(ParseErrorKind::LabelSeparator);
    }
}

fn parse_value(text: &str) -> Result<f64, ParseErrorKind> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => text
            .parse::<f64>()
            .ok()
            // Rust accepts "inf" and "nan" spelled in other ways; the format does not.
            .filter(|v| v.is_finite())
            .ok_or_else(|| ParseErrorKind::InvalidValue(text.to_owned())),
    }
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`: label names; metric names also allow `:`.
fn is_name_char(c: char, first: bool) -> bool {
    c == '_' || c.is_ascii_alphabetic() || (!first && c.is_ascii_digit())
}

struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn eat(&mut self, c: char) -> bool {
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn skip_spaces(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t']);
    }

    /// The longest non-empty prefix whose characters satisfy `ok(c, is_first)`.
    fn take_while(&mut self, ok: impl Fn(char, bool) -> bool) -> Option<&'a str> {
        let end = self
            .rest
            .char_indices()
            .find(|&(i, c)| !ok(c, i == 0))
            .map_or(self.rest.len(), |(i, _)| i);
        if end == 0 {
            return None;
        }
        let (taken, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(taken)
    }

    /// A label value after its opening quote, unescaped; consumes the closing quote.
    fn quoted(&mut self) -> Result<String, ParseErrorKind> {
        let mut out = String::new();
        let mut chars = self.rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &self.rest[i + 1..];
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, '\\')) => out.push('\\'),
                    Some((_, '"')) => out.push('"'),
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, other)) => return Err(ParseErrorKind::InvalidEscape(other)),
                    None => return Err(ParseErrorKind::UnterminatedValue),
                },
                other => out.push(other),
            }
        }
        Err(ParseErrorKind::UnterminatedValue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Result<Sample, ParseError> {
        parse(line).map(|mut s| {
            assert_eq!(s.len(), 1, "{line}");
            s.remove(0)
        })
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn reads_what_prometheus_client_writes() {
        let text = "# HELP kube_dmem_agent_pod_usage_bytes VRAM charged to a pod, per region.\n\
# TYPE kube_dmem_agent_pod_usage_bytes gauge\n\
# UNIT kube_dmem_agent_pod_usage_bytes bytes\n\
kube_dmem_agent_pod_usage_bytes{namespace=\"ml\",pod=\"p\",region=\"drm/0000:03:00.0/vram0\"} 3221225472\n\
kube_dmem_agent_rounds_total{result=\"ok\"} 12\n\
kube_dmem_agent_dmem_available 1\n\
# EOF\n\
this is not parsed after EOF\n";
        let samples = parse(text).expect("parses");
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].name, "kube_dmem_agent_pod_usage_bytes");
        assert_eq!(
            samples[0].labels,
            labels(&[
                ("namespace", "ml"),
                ("pod", "p"),
                ("region", "drm/0000:03:00.0/vram0")
            ])
        );
        assert_eq!(samples[0].value, 3_221_225_472.0);
        assert_eq!(samples[1].label("result"), Some("ok"));
        assert!(samples[2].labels.is_empty());
        assert_eq!(samples[2].value, 1.0);
    }

    #[test]
    fn label_values_are_unescaped() {
        let s = one(r#"m{a="back\\slash",b="say \"hi\"",c="two\nlines",d="{,}= #"} 1"#)
            .expect("parses");
        assert_eq!(
            s.labels,
            labels(&[
                ("a", "back\\slash"),
                ("b", "say \"hi\""),
                ("c", "two\nlines"),
                ("d", "{,}= #"),
            ])
        );
        // An escaped backslash right before the closing quote ends the value there.
        let s = one(r#"m{a="ends\\"} 2"#).expect("parses");
        assert_eq!(s.label("a"), Some("ends\\"));
        // Non-ASCII text passes through.
        let s = one("m{a=\"Grüße ✓\"} 3").expect("parses");
        assert_eq!(s.label("a"), Some("Grüße ✓"));
    }

    #[test]
    fn special_values_timestamps_spacing_and_exemplars() {
        assert!(one("m NaN").expect("parses").value.is_nan());
        assert_eq!(one("m +Inf").expect("parses").value, f64::INFINITY);
        assert_eq!(one("m -Inf").expect("parses").value, f64::NEG_INFINITY);
        assert_eq!(one("m 1.5e3").expect("parses").value, 1500.0);
        assert_eq!(one("m -2").expect("parses").value, -2.0);
        assert_eq!(
            one("m{a=\"x\"} 7 1700000000000").expect("parses").value,
            7.0
        );
        let s = one("  m { a = \"x\" , b=\"y\", }\t4  ").expect("parses");
        assert_eq!(s.labels, labels(&[("a", "x"), ("b", "y")]));
        assert_eq!(s.value, 4.0);
        assert_eq!(one("m{} 5").expect("parses").value, 5.0);
        let s = one("c_total{r=\"ok\"} 3 # {trace_id=\"abc\"} 1.0 1700000000").expect("parses");
        assert_eq!(s.value, 3.0);
        assert_eq!(one("ns:rule_name 1").expect("parses").name, "ns:rule_name");
    }

    #[test]
    fn malformed_lines_fail_with_their_line_number() {
        type Case = (&'static str, ParseErrorKind);
        let cases: Vec<Case> = vec![
            ("{a=\"b\"} 1", ParseErrorKind::MetricName),
            ("9m 1", ParseErrorKind::MetricName),
            ("m{=\"b\"} 1", ParseErrorKind::LabelName),
            ("m{a} 1", ParseErrorKind::LabelEquals("a".into())),
            ("m{a=b} 1", ParseErrorKind::LabelEquals("a".into())),
            ("m{a=\"b} 1", ParseErrorKind::UnterminatedValue),
            ("m{a=\"b\\", ParseErrorKind::UnterminatedValue),
            ("m{a=\"b\\t\"} 1", ParseErrorKind::InvalidEscape('t')),
            ("m{a=\"b\" c=\"d\"} 1", ParseErrorKind::LabelSeparator),
            (
                "m{a=\"b\",a=\"c\"} 1",
                ParseErrorKind::DuplicateLabel("a".into()),
            ),
            ("m", ParseErrorKind::MissingValue),
            ("m{a=\"b\"}", ParseErrorKind::MissingValue),
            ("m one", ParseErrorKind::InvalidValue("one".into())),
            ("m inf", ParseErrorKind::InvalidValue("inf".into())),
            ("m 1 soon", ParseErrorKind::InvalidTimestamp("soon".into())),
            ("m 1 2 3", ParseErrorKind::Trailing("3".into())),
        ];
        for (line, kind) in cases {
            let text = format!("# TYPE m gauge\n\nok 1\n{line}\n");
            assert_eq!(parse(&text), Err(ParseError { line: 4, kind }), "{line:?}");
        }
    }

    #[test]
    fn parses_an_agents_whole_exposition() {
        let samples = parse(crate::fixtures::AGENT_A_METRICS).expect("fixture parses");
        assert!(
            samples
                .iter()
                .any(|s| s.name == "kube_dmem_agent_pod_peak_bytes"
                    && s.label("source") == Some("kernel"))
        );
    }
}
