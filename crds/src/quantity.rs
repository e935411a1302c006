//! CORE: Kubernetes quantity strings (`8Gi`, `512Mi`, `1G`, `1e9`, `1.5Gi`) as whole bytes.
//!
//! Owns the one conversion from the quantities users write in a `DmemQuota` to the byte counts the
//! kernel takes. It accepts the grammar of Kubernetes' `resource.Quantity`:
//!
//! ```text
//! quantity := [+|-] number suffix
//! number   := digits | digits "." digits? | "." digits
//! suffix   := "" | "m" | "k" | "M" | "G" | "T" | "P" | "E"          (powers of 1000)
//!           | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"                 (powers of 1024)
//!           | ("e" | "E") [+|-] digits                               (power of ten)
//! ```
//!
//! and rounds a fractional byte count up, as `Quantity.Value()` does: `0.5` is 1 byte, `1500m` is
//! 2 bytes. The arithmetic is exact: the digits are scaled as a decimal string, never through
//! floating point.

use std::fmt;

/// Why a text is not a byte count we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text is empty.
    #[error("quantity is empty")]
    Empty,
    /// The text does not follow the quantity grammar.
    #[error(
        "{text:?} is not a quantity: expected a number with an optional suffix \
         (Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E, m) or exponent (e9)"
    )]
    Malformed {
        /// The offending text.
        text: String,
    },
    /// The quantity is below zero.
    #[error("quantity {text:?} is negative")]
    Negative {
        /// The offending text.
        text: String,
    },
    /// The quantity does not fit in 64 bits of bytes.
    #[error("quantity {text:?} is larger than 2^64-1 bytes")]
    Overflow {
        /// The offending text.
        text: String,
    },
}

/// How a suffix scales the number in front of it.
#[derive(Clone, Copy)]
enum Scale {
    /// Multiply by 10^n (n may be negative).
    Decimal(i64),
    /// Multiply by 2^n.
    Binary(u32),
}

/// Parses a Kubernetes quantity into bytes, rounding a fractional result up to the next byte.
///
/// # Errors
/// [`QuantityError`] naming the text when it is empty, malformed, negative or above `u64::MAX`.
pub fn parse_quantity(text: &str) -> Result<u64, QuantityError> {
    if text.is_empty() {
        return Err(QuantityError::Empty);
    }
    let malformed = || QuantityError::Malformed {
        text: text.to_owned(),
    };
    let (negative, unsigned) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let number_len = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_len);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return Err(malformed());
    }
    let scale = parse_suffix(suffix).ok_or_else(malformed)?;

    // The number as an integer of digits times 10^exp10.
    let mut digits: Vec<u8> = int_part
        .bytes()
        .chain(frac_part.bytes())
        .map(|b| b - b'0')
        .collect();
    let frac_len = i64::try_from(frac_part.len()).map_err(|_| malformed())?;
    let mut exp10 = -frac_len;
    match scale {
        Scale::Decimal(n) => exp10 = exp10.checked_add(n).ok_or_else(malformed)?,
        Scale::Binary(n) => multiply_by_power_of_two(&mut digits, n),
    }
    if digits.iter().all(|&d| d == 0) {
        return Ok(0);
    }
    if negative {
        return Err(QuantityError::Negative {
            text: text.to_owned(),
        });
    }
    ceil_to_u64(&digits, exp10).ok_or_else(|| QuantityError::Overflow {
        text: text.to_owned(),
    })
}

/// Reads a suffix; `None` when it is not one Kubernetes knows.
fn parse_suffix(suffix: &str) -> Option<Scale> {
    let scale = match suffix {
        "" => Scale::Decimal(0),
        "m" => Scale::Decimal(-3),
        "k" => Scale::Decimal(3),
        "M" => Scale::Decimal(6),
        "G" => Scale::Decimal(9),
        "T" => Scale::Decimal(12),
        "P" => Scale::Decimal(15),
        "E" => Scale::Decimal(18),
        "Ki" => Scale::Binary(10),
        "Mi" => Scale::Binary(20),
        "Gi" => Scale::Binary(30),
        "Ti" => Scale::Binary(40),
        "Pi" => Scale::Binary(50),
        "Ei" => Scale::Binary(60),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E'])?;
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Scale::Decimal(exponent.parse().ok()?)
        }
    };
    Some(scale)
}

/// Multiplies a big-endian decimal digit string by 2^n in place (n <= 60, so 2^10 per step keeps
/// every intermediate product far below `u64::MAX`).
fn multiply_by_power_of_two(digits: &mut Vec<u8>, mut n: u32) {
    while n > 0 {
        let step = n.min(10);
        n -= step;
        let mut carry: u64 = 0;
        for digit in digits.iter_mut().rev() {
            let product = u64::from(*digit) * (1 << step) + carry;
            *digit = (product % 10) as u8;
            carry = product / 10;
        }
        while carry > 0 {
            digits.insert(0, (carry % 10) as u8);
            carry /= 10;
        }
    }
}

/// `ceil(int(digits) * 10^exp10)` when it fits in a `u64`.
fn ceil_to_u64(digits: &[u8], exp10: i64) -> Option<u64> {
    let significant = digits
        .iter()
        .position(|&d| d != 0)
        .map_or(&[][..], |i| &digits[i..]);
    let (whole, fraction): (&[u8], &[u8]) = if exp10 >= 0 {
        (significant, &[])
    } else {
        let cut = usize::try_from(exp10.unsigned_abs()).unwrap_or(usize::MAX);
        significant.split_at(significant.len().saturating_sub(cut))
    };
    let mut value: u64 = 0;
    for &digit in whole {
        value = value.checked_mul(10)?.checked_add(u64::from(digit))?;
    }
    // Terminates early: a non-zero value overflows after at most 20 multiplications.
    for _ in 0..exp10.max(0) {
        value = value.checked_mul(10)?;
    }
    let round_up = fraction.iter().any(|&d| d != 0);
    value.checked_add(u64::from(round_up))
}

/// Formats bytes as the shortest exact Kubernetes quantity (`8Gi`, `1536Mi`, `1000`), for
/// messages and conditions a person reads.
pub fn format_bytes(bytes: u64) -> String {
    const SUFFIXES: [&str; 6] = ["Ei", "Pi", "Ti", "Gi", "Mi", "Ki"];
    for (i, suffix) in SUFFIXES.iter().enumerate() {
        let shift = 60 - 10 * i as u32;
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// A byte count shown as [`format_bytes`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_bytes(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: u64 = 1 << 30;

    #[test]
    fn parses_every_form_to_bytes() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("1073741824", GI),
            ("+12", 12),
            ("1k", 1_000),
            ("1M", 1_000_000),
            ("1G", 1_000_000_000),
            ("2T", 2_000_000_000_000),
            ("1P", 1_000_000_000_000_000),
            ("1E", 1_000_000_000_000_000_000),
            ("1Ki", 1 << 10),
            ("512Mi", 512 << 20),
            ("8Gi", 8 * GI),
            ("1Ti", 1 << 40),
            ("1Pi", 1 << 50),
            ("15Ei", 15 << 60),
            ("1e9", 1_000_000_000),
            ("1E9", 1_000_000_000),
            ("1e+3", 1_000),
            ("25e-1", 3),
            ("1.5Gi", 3 * GI / 2),
            ("0.5Ki", 512),
            ("1.", 1),
            (".5", 1),
            ("0.5", 1),
            ("1500m", 2),
            ("1000m", 1),
            ("1.000000000000000000000000000000001", 2),
            ("0.0000000001Ki", 1),
            ("1e-999", 1),
            ("0e999", 0),
            ("-0", 0),
            ("18446744073709551615", u64::MAX),
            ("00012", 12),
        ];
        for (text, want) in cases {
            assert_eq!(parse_quantity(text), Ok(*want), "{text}");
        }
    }

    #[test]
    fn rejects_bad_text_with_the_text_in_the_error() {
        let malformed = [
            "abc", "1GB", "1 Gi", " 1", "1gi", "Gi", ".", "1.2.3", "1e", "e9", "1e1.5", "1Gi1",
            "--1", "1.5e", "0x10",
        ];
        for text in malformed {
            assert_eq!(
                parse_quantity(text),
                Err(QuantityError::Malformed { text: text.into() }),
                "{text}"
            );
        }
        assert_eq!(parse_quantity(""), Err(QuantityError::Empty));
        assert_eq!(
            parse_quantity("-1Gi"),
            Err(QuantityError::Negative {
                text: "-1Gi".into()
            })
        );
        for text in ["16Ei", "18446744073709551616", "1e20", "19E", "1e99999"] {
            assert_eq!(
                parse_quantity(text),
                Err(QuantityError::Overflow { text: text.into() }),
                "{text}"
            );
        }
        let msg = parse_quantity("8GB").expect_err("malformed").to_string();
        assert!(msg.contains("\"8GB\""), "{msg}");
    }

    #[test]
    fn formats_the_shortest_exact_quantity() {
        let cases: &[(u64, &str)] = &[
            (0, "0"),
            (1000, "1000"),
            (1024, "1Ki"),
            (1536 << 20, "1536Mi"),
            (8 * GI, "8Gi"),
            (1 << 60, "1Ei"),
            (u64::MAX, "18446744073709551615"),
        ];
        for (bytes, want) in cases {
            assert_eq!(format_bytes(*bytes), *want);
            assert_eq!(parse_quantity(want), Ok(*bytes));
        }
        assert_eq!(Bytes(4 * GI).to_string(), "4Gi");
    }
}
