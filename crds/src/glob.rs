//! CORE: region patterns in `spec.limits[].region` and which one is the most specific.
//!
//! A region name is `drm/<device>/<memory>`, for example `drm/0000:03:00.0/vram0`. A pattern is
//! matched against it with these rules:
//!
//! - `*` matches any run of characters (including none) except `/`, so `drm/*/vram*` matches
//!   `drm/0000:03:00.0/vram0` but `drm/*` does not (the star cannot swallow the second `/`);
//! - every other character matches itself, case-sensitively (there is no `?`, `[...]` or escaping;
//!   region names never contain `*`);
//! - the pattern `*` alone is special: it matches every region.
//!
//! When several entries match one region, the one with the highest [`Specificity`] applies: an
//! exact name beats any glob, a glob with more literal (non-`*`) characters beats one with fewer, and
//! `*` alone is the broadest of all. Equal specificity is broken by list order (the earlier entry
//! wins); that last step is the caller's, see [`crate::limits`].

/// The wildcard character.
const STAR: char = '*';

/// Whether `pattern` matches the region name `region`.
pub fn matches(pattern: &str, region: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let mut pattern_parts = pattern.split('/');
    let mut region_parts = region.split('/');
    loop {
        match (pattern_parts.next(), region_parts.next()) {
            (None, None) => return true,
            (Some(p), Some(r)) if segment_matches(p.as_bytes(), r.as_bytes()) => {}
            _ => return false,
        }
    }
}

/// Wildcard match within one `/`-free segment, where `*` matches any run of bytes.
///
/// Byte-wise comparison is sound for UTF-8: a literal's bytes can only line up with whole characters
/// of the region name. Classic greedy algorithm with one backtrack point: linear for typical names,
/// `O(p * r)` at worst.
fn segment_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // After the latest star: where the pattern resumes, and where in the text that attempt started.
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            backtrack = Some((p + 1, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((resume, start)) = backtrack {
            // Let the star swallow one more byte and retry.
            backtrack = Some((resume, start + 1));
            p = resume;
            t = start + 1;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Whether a pattern contains a wildcard (otherwise it names exactly one region).
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(STAR)
}

/// How narrowly a pattern selects regions; a greater value is more specific.
///
/// Ordered by `exact` first, then by `literals`, so `Ord` gives the precedence directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Specificity {
    /// The pattern has no `*`: it names one region.
    pub exact: bool,
    /// Number of non-`*` characters in the pattern.
    pub literals: usize,
}

/// The [`Specificity`] of a pattern.
pub fn specificity(pattern: &str) -> Specificity {
    Specificity {
        exact: !is_glob(pattern),
        literals: pattern.chars().filter(|&c| c != STAR).count(),
    }
}

/// Index of the entry that applies to `region`: the highest [`specificity`] among the matching
/// patterns, the earliest on a tie; `None` if no pattern matches.
pub fn best_match<'a, I>(patterns: I, region: &str) -> Option<usize>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut best: Option<(usize, Specificity)> = None;
    for (index, pattern) in patterns.into_iter().enumerate() {
        if !matches(pattern, region) {
            continue;
        }
        let spec = specificity(pattern);
        // Strictly greater: on a tie the earlier entry stays.
        if best.is_none_or(|(_, b)| spec > b) {
            best = Some((index, spec));
        }
    }
    best.map(|(index, _)| index)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VRAM0: &str = "drm/0000:03:00.0/vram0";

    #[test]
    fn matching_follows_the_documented_rules() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", VRAM0, true),
            ("*", "", true),
            (VRAM0, VRAM0, true),
            ("drm/0000:03:00.0/vram1", VRAM0, false),
            ("drm/*/vram*", VRAM0, true),
            ("drm/*/vram*", "drm/0000:03:00.0/vram", true),
            ("drm/*/vram*", "drm/0000:03:00.0/gtt", false),
            ("drm/*", VRAM0, false),
            ("drm/*/*", VRAM0, true),
            ("*/*/*", VRAM0, true),
            ("*/*", VRAM0, false),
            ("drm/0000:0*:00.0/vram0", VRAM0, true),
            ("drm/*:03:*/vram0", VRAM0, true),
            ("drm/*:04:*/vram0", VRAM0, false),
            ("drm/**/vram0", VRAM0, true),
            ("drm/*0/*0", VRAM0, true),
            ("drm/*a*a*/vram0", "drm/xaya/vram0", true),
            ("drm/*a*a*/vram0", "drm/xay/vram0", false),
            ("DRM/*/vram0", VRAM0, false),
            ("drm/*/vram0/", VRAM0, false),
            ("drm/*/vram0", "drm/0000:03:00.0/vram0/", false),
            ("drm/*/v*m0", "drm/é/vüüm0", true),
        ];
        for (pattern, region, want) in cases {
            assert_eq!(matches(pattern, region), *want, "{pattern} vs {region}");
        }
    }

    #[test]
    fn exact_beats_glob_and_more_literals_beat_fewer() {
        let exact = specificity(VRAM0);
        let narrow = specificity("drm/0000:03:00.0/vram*");
        let wide = specificity("drm/*/vram*");
        let all = specificity("*");
        assert!(exact > narrow && narrow > wide && wide > all);
        assert!(specificity("a") > specificity("drm/*/vram0********"));
        assert_eq!(
            all,
            Specificity {
                exact: false,
                literals: 0
            }
        );
    }

    #[test]
    fn best_match_prefers_specific_then_earlier() {
        let cases: &[(&[&str], &str, Option<usize>)] = &[
            (&["*", VRAM0], VRAM0, Some(1)),
            (&[VRAM0, "*"], VRAM0, Some(0)),
            (&["*", "drm/*/vram*", "drm/0000:03:00.0/*"], VRAM0, Some(2)),
            (&["drm/*/vram*", "drm/*/*ram0"], VRAM0, Some(0)),
            (&["drm/*/*ram0", "drm/*/vram*"], VRAM0, Some(0)),
            (&["drm/*/gtt"], VRAM0, None),
            (&[], VRAM0, None),
            (&["*", "*"], VRAM0, Some(0)),
        ];
        for (patterns, region, want) in cases {
            assert_eq!(
                best_match(patterns.iter().copied(), region),
                *want,
                "{patterns:?}"
            );
        }
    }
}
