//! CORE: the text form of [`crate::why::Why`], in sections like `kubectl describe`.

use std::fmt::Write as _;

use crate::render::{Table, opt_bytes};
use crate::why::Why;

/// Renders the explanation.
pub fn render(why: &Why) -> String {
    let mut out = String::new();
    let node = why.node.as_deref().unwrap_or("<none>");
    let _ = writeln!(
        out,
        "Pod:       {}/{} (node {node}, {} {} units)",
        why.pod.namespace,
        why.pod.name,
        why.vram_units,
        kube_dmem_crds::VRAM_RESOURCE
    );
    let _ = writeln!(out, "Decision:  {}", why.decision);

    section(&mut out, &format!("Quotas in {}:", why.pod.namespace));
    if why.quotas.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let mut t = Table::new(&["QUOTA", "PRIORITY", "AGE", "OUTCOME", "DETAIL"]);
        for q in &why.quotas {
            t.row(vec![
                q.name.clone(),
                q.priority.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                q.age.clone().unwrap_or_else(|| "-".to_owned()),
                q.outcome.to_owned(),
                q.detail.clone(),
            ]);
        }
        indent(&mut out, &t);
    }

    section(
        &mut out,
        "Effective limits (the governing quota on the node's regions):",
    );
    if why.effective_limits.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let mut t = Table::new(&["REGION", "MAX", "HIGH", "LOW", "MIN"]);
        for (region, l) in &why.effective_limits {
            t.row(vec![
                region.clone(),
                opt_bytes(l.max),
                opt_bytes(l.high),
                opt_bytes(l.low),
                opt_bytes(l.min),
            ]);
        }
        indent(&mut out, &t);
    }

    section(
        &mut out,
        &format!("In the pod's cgroup (node agent: {}):", why.agent),
    );
    match &why.cgroup {
        None => out.push_str("  <agent not read>\n"),
        Some(regions) if regions.is_empty() => {
            out.push_str("  <the agent reports nothing for this pod>\n")
        }
        Some(regions) => {
            let mut t = Table::new(&[
                "REGION", "USAGE", "PEAK", "MAX", "HIGH", "LOW", "MIN", "TIER",
            ]);
            for (region, s) in regions {
                t.row(vec![
                    region.clone(),
                    opt_bytes(s.usage),
                    s.peak.map_or_else(
                        || "-".to_owned(),
                        |p| format!("{} ({})", opt_bytes(Some(p.bytes)), p.source.as_str()),
                    ),
                    opt_bytes(s.max),
                    opt_bytes(s.high),
                    opt_bytes(s.low),
                    opt_bytes(s.min),
                    s.tier
                        .map_or_else(|| "-".to_owned(), |t| t.as_str().to_owned()),
                ]);
            }
            indent(&mut out, &t);
        }
    }

    section(&mut out, "Conditions:");
    if why.conditions.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let mut t = Table::new(&["TYPE", "STATUS", "REASON", "MESSAGE"]);
        for c in &why.conditions {
            t.row(vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.message.clone(),
            ]);
        }
        indent(&mut out, &t);
    }

    section(&mut out, "Events:");
    if why.events.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let mut t = Table::new(&["AGE", "TYPE", "REASON", "FROM", "MESSAGE"]);
        for e in &why.events {
            t.row(vec![
                e.age.clone().unwrap_or_else(|| "-".to_owned()),
                e.type_.clone(),
                e.reason.clone(),
                e.from.clone(),
                e.message.clone(),
            ]);
        }
        indent(&mut out, &t);
    }

    if !why.notes.is_empty() {
        section(&mut out, "Notes:");
        for note in &why.notes {
            let _ = writeln!(out, "  - {note}");
        }
    }
    out
}

fn section(out: &mut String, title: &str) {
    out.push('\n');
    out.push_str(title);
    out.push('\n');
}

fn indent(out: &mut String, table: &Table) {
    for line in table.render().lines() {
        let _ = writeln!(out, "  {line}");
    }
}
