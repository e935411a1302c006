//! CORE: the kernel's write-side string handling (`docs/kernel.md` §2.1, §8.5): C-string
//! truncation, `strstrip`, the region/value split and `memparse`-based value parsing.
//!
//! Everything works on bytes: kernfs hands the handler raw bytes, and names are compared with
//! `strcmp`.

/// The characters `strstrip` removes (`docs/kernel.md` §8.5).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The bytes of a write as the handler sees them: a C string, cut at the first NUL.
pub fn c_str(buf: &[u8]) -> &[u8] {
    buf.iter().position(|&b| b == 0).map_or(buf, |i| &buf[..i])
}

/// `strstrip`: remove leading and trailing space, `\t`, `\n`, `\v`, `\f`, `\r`.
pub fn strstrip(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_space(b)).unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| !is_space(b))
        .map_or(start, |i| i + 1);
    &s[start..end.max(start)]
}

/// `strsep(&s, " \t")`: split at the first space or tab; `None` when there is no separator.
pub fn split_name(s: &[u8]) -> (&[u8], Option<&[u8]>) {
    match s.iter().position(|&b| b == b' ' || b == b'\t') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

fn digit_value(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

/// `memparse` (lib/cmdline.c, as in the 7.2 and 7.3 kernels) on `s`: `simple_strtoull(s, &end, 0)`
/// (base auto-detection; zero digits allowed; a value that overflows saturates at `u64::MAX`, as
/// `_parse_integer_limit` does), then at most one `KMGTPE` suffix (case-insensitive), consumed only
/// after at least one digit (a bare `G` is left unparsed); a shift that overflows saturates at
/// `u64::MAX` (`check_shl_overflow`), so `16E` is `u64::MAX`. Returns the value and the number of
/// bytes consumed.
pub fn memparse(s: &[u8]) -> (u64, usize) {
    let (base, mut i) = if s.len() > 2
        && s[0] == b'0'
        && (s[1] == b'x' || s[1] == b'X')
        && s[2].is_ascii_hexdigit()
    {
        (16u64, 2)
    } else if s.first() == Some(&b'0') {
        (8, 0)
    } else {
        (10, 0)
    };
    let mut res: u64 = 0;
    while let Some(d) = s
        .get(i)
        .copied()
        .and_then(digit_value)
        .filter(|&d| d < base)
    {
        res = res
            .checked_mul(base)
            .and_then(|r| r.checked_add(d))
            .unwrap_or(u64::MAX);
        i += 1;
    }
    let shift = match s.get(i) {
        Some(b'K' | b'k') => 10,
        Some(b'M' | b'm') => 20,
        Some(b'G' | b'g') => 30,
        Some(b'T' | b't') => 40,
        Some(b'P' | b'p') => 50,
        Some(b'E' | b'e') => 60,
        _ => 0,
    };
    if shift > 0 && i > 0 {
        let shifted = res << shift;
        res = if shifted >> shift == res {
            shifted
        } else {
            u64::MAX
        };
        i += 1;
    }
    (res, i)
}

/// `dmemcg_parse_limit`: `"max"` → `page_counter_max`, otherwise [`memparse`] consuming the whole
/// string. `None` = `-EINVAL`.
pub fn parse_limit(v: &[u8], page_counter_max: u64) -> Option<u64> {
    if v == b"max" {
        return Some(page_counter_max);
    }
    let (val, used) = memparse(v);
    (used == v.len()).then_some(val)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PCM: u64 = crate::config::PAGE_COUNTER_MAX_4K;

    #[test]
    fn value_forms() {
        let cases: &[(&str, Option<u64>)] = &[
            ("max", Some(PCM)),
            ("0x40000000", Some(1 << 30)),
            ("0X1f", Some(31)),
            ("010", Some(8)),
            ("0", Some(0)),
            ("1g", Some(1 << 30)),
            ("1G", Some(1 << 30)),
            ("512M", Some(512 << 20)),
            ("4k", Some(4096)),
            ("1T", Some(1 << 40)),
            ("1p", Some(1 << 50)),
            ("8E", Some(1 << 63)),
            ("16E", Some(u64::MAX)), // the shift saturates
            ("17179869184G", Some(u64::MAX)),
            ("0x10E", Some(0x10e)), // E is a hex digit here
            ("0x100000000000g", Some(u64::MAX)),
            ("G", None), // a suffix needs a digit before it
            ("k", None),
            ("e", None),
            ("0G", Some(0)),
            ("", Some(0)),
            ("0x", None), // octal 0 then 'x'
            ("0xg", None),
            ("08", None),
            ("1.5G", None),
            ("1GB", None),
            ("1Gi", None),
            ("-1", None),
            ("+1", None),
            ("MAX", None),
            ("Max", None),
            ("1 G", None),
            (" 1", None),
            ("1\n", None),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", Some(u64::MAX)), // 2^64 saturates
            ("99999999999999999999999", Some(u64::MAX)),
            ("18446744073709551616K", Some(u64::MAX)),
            ("0xffffffffffffffffff", Some(u64::MAX)),
        ];
        for (s, want) in cases {
            assert_eq!(parse_limit(s.as_bytes(), PCM), *want, "{s:?}");
        }
    }

    #[test]
    fn strip_and_split() {
        assert_eq!(strstrip(b" \t\x0b\x0ca b\r\n"), b"a b");
        assert_eq!(strstrip(b" \n "), b"");
        assert_eq!(strstrip(b""), b"");
        assert_eq!(split_name(b"a\tb c"), (&b"a"[..], Some(&b"b c"[..])));
        assert_eq!(split_name(b"a  b"), (&b"a"[..], Some(&b" b"[..])));
        assert_eq!(split_name(b"a"), (&b"a"[..], None));
        assert_eq!(split_name(b"a "), (&b"a"[..], Some(&b""[..])));
        assert_eq!(c_str(b"ab\0cd"), b"ab");
        assert_eq!(c_str(b"ab"), b"ab");
    }

    proptest::proptest! {
        #[test]
        fn decimal_roundtrip(n in 1u64..) {
            proptest::prop_assert_eq!(parse_limit(n.to_string().as_bytes(), PCM), Some(n));
        }

        #[test]
        fn hex_roundtrip(n: u64) {
            proptest::prop_assert_eq!(parse_limit(format!("{n:#x}").as_bytes(), PCM), Some(n));
        }

        #[test]
        fn octal_roundtrip(n: u64) {
            proptest::prop_assert_eq!(parse_limit(format!("0{n:o}").as_bytes(), PCM), Some(n));
        }

        #[test]
        fn suffix_saturates(n: u64, k in 0usize..6) {
            let s = format!("{n}{}", ["K", "M", "G", "T", "P", "E"][k]);
            let shift = 10 * (k as u32 + 1);
            let want = if n.leading_zeros() >= shift { n << shift } else { u64::MAX };
            proptest::prop_assert_eq!(parse_limit(s.as_bytes(), PCM), Some(want));
        }
    }
}
