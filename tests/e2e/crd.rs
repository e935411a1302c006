//! The DmemQuota CRD as the chart installs it, against a real API server: valid objects are
//! stored, invalid ones are rejected with the schema's CEL and OpenAPI messages, and kubectl shows
//! the descriptions and printer columns. No kube-dmem process is involved.

use anyhow::{Result, ensure};
use kube_dmem_crds::schema::MSG_NOT_A_QUANTITY;
use kube_dmem_e2e::ctx::{TestCtx, run};

fn quota(name: &str, limits: &str) -> String {
    format!(
        "apiVersion: kube-dmem.io/v1alpha1\nkind: DmemQuota\nmetadata:\n  name: {name}\n\
         spec:\n  selector: {{matchLabels: {{app: demo}}}}\n  limits:\n{limits}"
    )
}

fn apply_in(ctx: &TestCtx, yaml: &str) -> Result<kube_dmem_e2e::kubectl::Output> {
    ctx.kubectl
        .run(&["apply", "-n", &ctx.ns, "-f", "-"], Some(yaml))
}

#[test]
fn valid_quota_is_stored_and_printed_with_columns() {
    run("crd-valid", |ctx| {
        let yaml = quota(
            "ok",
            "  - {region: \"drm/*/vram*\", max: 8Gi, high: 6Gi, low: 1Gi, min: 512Mi}\n  \
             - {region: \"drm/0000:03:00.0/vram0\", max: \"1073741824\"}\n",
        );
        let out = apply_in(ctx, &yaml)?;
        ensure!(out.ok, "a valid DmemQuota was rejected: {}", out.stderr);
        ensure!(
            out.stdout.contains("dmemquota.kube-dmem.io/ok created"),
            "{}",
            out.stdout
        );

        // Defaults from the schema are filled in by the API server.
        let stored = ctx.kubectl.json(&["get", "dmq", "ok", "-n", &ctx.ns])?;
        ensure!(
            stored["spec"]["priority"] == 0,
            "priority default: {stored}"
        );

        let table = ctx.kubectl.ok(&["get", "dmq", "-n", &ctx.ns])?;
        let header: Vec<&str> = table
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        ensure!(
            header
                == [
                    "NAME",
                    "MAX",
                    "HIGH",
                    "PODS",
                    "ENFORCED",
                    "PRESSURED",
                    "AGE"
                ],
            "printer columns: {table}"
        );
        let row: Vec<&str> = table
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        ensure!(row.starts_with(&["ok", "8Gi", "6Gi"]), "row: {table}");
        Ok(())
    });
}

#[test]
fn invalid_quotas_are_rejected_with_the_schema_message() {
    run("crd-invalid", |ctx| {
        let cases: [(&str, &str, &str); 8] = [
            (
                "high-above-max",
                "  - {region: \"*\", max: 4Gi, high: 8Gi}\n",
                "high must not be greater than max",
            ),
            (
                "min-above-low",
                "  - {region: \"*\", low: 1Gi, min: 2Gi}\n",
                "min must not be greater than low",
            ),
            (
                "bad-quantity",
                "  - {region: \"*\", max: 8GB}\n",
                MSG_NOT_A_QUANTITY,
            ),
            (
                "negative",
                "  - {region: \"*\", max: \"-1Gi\"}\n",
                "must be at least 0 and below 16Ei",
            ),
            (
                "empty-region",
                "  - {region: \"\", max: 8Gi}\n",
                "should be at least 1 chars long",
            ),
            (
                "duplicate-region",
                "  - {region: \"drm/*\", max: 8Gi}\n  - {region: \"drm/*\", max: 4Gi}\n",
                "each region may appear only once in limits",
            ),
            (
                "no-limit",
                "  - {region: \"*\"}\n",
                "set at least one of max, high, low or min",
            ),
            (
                "whitespace-region",
                "  - {region: \"drm/a b\", max: 1Gi}\n",
                "must not contain whitespace",
            ),
        ];
        let mut failures = Vec::new();
        for (name, limits, message) in cases {
            let out = apply_in(ctx, &quota(name, limits))?;
            if out.ok {
                failures.push(format!("{name}: accepted ({})", out.stdout.trim()));
            } else if !out.stderr.contains(message) {
                failures.push(format!(
                    "{name}: rejected without {message:?}: {}",
                    out.stderr.trim()
                ));
            } else if !out.stderr.contains("is invalid") {
                failures.push(format!(
                    "{name}: not an Invalid error: {}",
                    out.stderr.trim()
                ));
            }
        }
        let stored = ctx
            .kubectl
            .ok(&["get", "dmq", "-n", &ctx.ns, "-o", "name"])?;
        ensure!(
            stored.trim().is_empty(),
            "invalid quotas were stored: {stored}"
        );
        ensure!(failures.is_empty(), "{}", failures.join("\n"));
        Ok(())
    });
}

#[test]
fn explain_shows_field_descriptions() {
    run("crd-explain", |ctx| {
        let limits = ctx.kubectl.ok(&["explain", "dmemquota.spec.limits"])?;
        for needle in [
            "Limits per VRAM region",
            "high\t<string>",
            "max\t<string>",
            "region\t<string> -required-",
        ] {
            ensure!(
                limits.contains(needle),
                "explain spec.limits lacks {needle:?}:\n{limits}"
            );
        }
        let pressure = ctx.kubectl.ok(&["explain", "dmq.spec.pressure.action"])?;
        ensure!(
            pressure.contains("Evict") && pressure.contains("PodDisruptionBudgets"),
            "explain spec.pressure.action:\n{pressure}"
        );
        let _ = &ctx.ns;
        Ok(())
    });
}
