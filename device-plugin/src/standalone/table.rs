//! The standalone mode's table: one row per pod and region it uses or is limited in.
//!
//! CORE: a pure rendering of a [`RoundReport`].

use std::fmt::Write as _;

use crate::round::{PodReport, RegionReport, RoundReport};

const HEADER: [&str; 10] = [
    "POD", "QUOTA", "REGION", "USAGE", "MIN", "LOW", "HIGH", "MAX", "TIER", "LIMITS",
];

/// Renders the report as an aligned text table, headed by the round number and the node's regions.
pub fn render(report: &RoundReport, round: u64) -> String {
    let mut rows: Vec<[String; 10]> = vec![HEADER.map(str::to_owned)];
    for pod in &report.pods {
        let shown: Vec<&RegionReport> = pod.regions.iter().filter(|r| is_interesting(r)).collect();
        if shown.is_empty() {
            rows.push(row(pod, None));
        }
        rows.extend(shown.into_iter().map(|r| row(pod, Some(r))));
    }
    let mut widths = [0usize; 10];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let regions: Vec<String> = report
        .regions
        .iter()
        .map(|r| format!("{} ({})", r.region, human(r.bytes)))
        .collect();
    let mut out = format!(
        "round {round}: {} writes; regions: {}\n",
        report.writes,
        regions.join(", ")
    );
    for r in &rows {
        let mut line = String::new();
        for (cell, w) in r.iter().zip(widths) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str(EMULATION_NOTE);
    out
}

/// Why LOW and the kernel's `dmem.low` differ: the kernel has no `dmem.high` yet.
const EMULATION_NOTE: &str = "LOW is the declared protection; with HIGH set the kernel holds \
dmem.low = HIGH, so memory above HIGH is evicted first (docs/kernel.md §7).\n";

/// A region is shown for a pod when the pod uses it or has a limit in it.
fn is_interesting(r: &RegionReport) -> bool {
    let d = &r.desired;
    r.reading.usage > 0
        || d.max.is_some()
        || d.low.is_some()
        || d.min.is_some()
        || r.reading.high.is_some()
}

fn row(pod: &PodReport, region: Option<&RegionReport>) -> [String; 10] {
    let name = format!("{}/{}", pod.facts.namespace, pod.facts.name);
    let quota = pod
        .governing
        .as_ref()
        .map_or_else(|| "-".to_owned(), |q| q.name.clone());
    let limits = if pod.outcome.in_force() {
        pod.outcome.reason().to_owned()
    } else {
        format!("NOT APPLIED: {}", pod.outcome.reason())
    };
    let Some(r) = region else {
        let dash = || "-".to_owned();
        return [
            name,
            quota,
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            pod.tier.to_string(),
            limits,
        ];
    };
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), human);
    [
        name,
        quota,
        r.region.clone(),
        human(r.reading.usage),
        opt(r.desired.min),
        opt((r.reading.declared_low > 0).then_some(r.reading.declared_low)),
        opt(r.reading.high),
        opt(r.desired.max),
        r.tier.to_string(),
        limits,
    ]
}

/// Bytes for people: the largest binary unit that keeps the number at least 1, one decimal.
pub fn human(bytes: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)];
    for (unit, shift) in UNITS {
        if bytes >= 1 << shift {
            let value = bytes as f64 / (1u64 << shift) as f64;
            let text = format!("{value:.1}");
            return format!("{}{unit}", text.trim_end_matches(".0"));
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn human_sizes_are_short_and_exact_where_they_can_be() {
        assert_eq!(human(0), "0");
        assert_eq!(human(512), "512");
        assert_eq!(human(8 << 30), "8Gi");
        assert_eq!(human((6 << 30) + (256 << 20)), "6.2Gi");
        assert_eq!(human(1536 << 20), "1.5Gi");
    }
}
