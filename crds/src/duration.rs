//! CORE: the duration strings of `spec.pressure.gracePeriod` (`30s`, `5m`, `1h30m`, `1.5h`).
//!
//! Owns the grammar shared by the CRD's CEL rule ([`DURATION_PATTERN`]) and the Rust parser, so the
//! API server and the binaries accept exactly the same texts. It is the non-negative subset of Go's
//! `time.ParseDuration` (which CEL's `duration()` uses): a sequence of decimal numbers, each with a
//! unit `h`, `m`, `s`, `ms`, `us` or `ns`, or the bare `0`.

use std::time::Duration;

/// RE2 pattern (used by the CEL rule) that [`parse_duration`] accepts.
pub const DURATION_PATTERN: &str = r"^(0|([0-9]+(\.[0-9]+)?(h|m|s|ms|us|ns))+)$";

/// Why a text is not a grace period.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text does not follow the grammar.
    #[error(
        "{text:?} is not a duration: expected numbers with units h, m, s, ms, us or ns, such as 30s, 5m or 1h30m"
    )]
    Malformed {
        /// The offending text.
        text: String,
    },
    /// The duration does not fit in a [`Duration`].
    #[error("duration {text:?} is too long")]
    Overflow {
        /// The offending text.
        text: String,
    },
}

/// Parses a duration such as `5m` or `1h30m`; fractions below a nanosecond are dropped.
///
/// # Errors
/// [`DurationError`] naming the text when it does not match [`DURATION_PATTERN`] or overflows.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let malformed = || DurationError::Malformed {
        text: text.to_owned(),
    };
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(malformed());
    }
    let mut total_nanos: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(malformed)?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" => 1_000,
            "ns" => 1,
            _ => return Err(malformed()),
        };
        let (whole, fraction) = match number.split_once('.') {
            Some((w, f)) if !w.is_empty() && !f.is_empty() => (w, f),
            Some(_) => return Err(malformed()),
            None => (number, ""),
        };
        if whole.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let overflow = || DurationError::Overflow {
            text: text.to_owned(),
        };
        let whole: u128 = whole.parse().map_err(|_| overflow())?;
        let mut part = whole.checked_mul(unit_nanos).ok_or_else(overflow)?;
        // Digits past the 18th cannot add a whole nanosecond to any unit (1h = 3.6e12 ns).
        let mut scale = unit_nanos;
        for digit in fraction.bytes().take(18) {
            scale /= 10;
            part += u128::from(digit - b'0') * scale;
        }
        total_nanos = total_nanos.checked_add(part).ok_or_else(overflow)?;
        rest = tail;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| DurationError::Overflow {
        text: text.to_owned(),
    })?;
    let nanos = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        let cases: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5h", Duration::from_secs(5400)),
            ("1m0.5s", Duration::from_millis(60_500)),
            ("250ms", Duration::from_millis(250)),
            ("10us", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("1.0000000001s", Duration::new(1, 0)),
            ("2h2h", Duration::from_secs(4 * 3600)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(*want), "{text}");
        }
    }

    #[test]
    fn rejects_what_the_pattern_rejects() {
        for text in [
            "", "5", "m", "-5m", "5 m", "5min", "1d", ".5s", "5.s", "1h 30m", "5M", "1.2.3s", "+5s",
        ] {
            assert_eq!(
                parse_duration(text),
                Err(DurationError::Malformed { text: text.into() }),
                "{text}"
            );
        }
        let huge = "99999999999999999999999999999999999999999h";
        assert_eq!(
            parse_duration(huge),
            Err(DurationError::Overflow { text: huge.into() })
        );
    }
}
