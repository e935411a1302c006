use std::collections::BTreeMap;
use std::num::NonZeroU64;

use super::*;

const GIB: u64 = 1 << 30;
const R0: &str = "drm/0000:03:00.0/vram0";
const R1: &str = "drm/0000:04:00.0/vram0";

fn capacity(entries: &[(&str, u64)]) -> BTreeMap<String, u64> {
    entries.iter().map(|(n, b)| ((*n).to_owned(), *b)).collect()
}

fn health(inv: &Inventory) -> Vec<(String, String)> {
    list_and_watch_response(inv)
        .devices
        .into_iter()
        .map(|d| (d.id, d.health))
        .collect()
}

#[test]
fn region_key_is_pinned() {
    // The kubelet checkpoints device IDs: the key function must never change (value computed
    // independently: FNV-1a 64 of the name, xor-folded to 48 bits).
    assert_eq!(RegionKey::of(R0).as_str(), "a6bdd3881787");
    assert_ne!(RegionKey::of(R0), RegionKey::of(R1));
    assert_eq!(RegionKey::of(R1).as_str().len(), RegionKey::LEN);
}

#[test]
fn units_are_floor_of_capacity() {
    let inv = Inventory::default()
        .observe(&capacity(&[(R0, 4 * GIB + GIB / 2), (R1, GIB - 1)]))
        .unwrap();
    assert_eq!(inv.region(R0).unwrap().listed_units(), 4);
    assert_eq!(inv.region(R1).unwrap().listed_units(), 0);
    assert_eq!(inv.counts(), (4, 4));
    let small = Inventory::new(NonZeroU64::new(GIB / 2).unwrap())
        .observe(&capacity(&[(R1, GIB - 1)]))
        .unwrap();
    assert_eq!(small.counts(), (1, 1));
}

#[test]
fn device_ids_are_short_unique_and_resolve() {
    let inv = Inventory::default()
        .observe(&capacity(&[(R0, 12 * GIB), (R1, 2 * GIB)]))
        .unwrap();
    let ids: Vec<String> = health(&inv).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 14);
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 14);
    for id in &ids {
        assert!(id.len() <= 63, "{id}");
        assert!(!id.contains('/') && !id.contains(':'), "{id}");
        let unit = inv.resolve(id).unwrap();
        assert_eq!(unit.region.device_id(unit.unit).to_string(), *id);
    }
    let first = format!("{}-11", RegionKey::of(R0));
    assert_eq!(inv.resolve(&first).unwrap().region.name(), R0);
    assert_eq!(inv.resolve(&first).unwrap().unit, 11);
}

#[test]
fn resolve_rejects_malformed_and_unknown_ids() {
    let inv = Inventory::default()
        .observe(&capacity(&[(R0, 2 * GIB)]))
        .unwrap();
    let key = RegionKey::of(R0);
    for bad in [
        "",
        "x",
        "-1",
        &format!("{key}-"),
        &format!("{key}-01"),
        &format!("{key}-+1"),
        &format!("{}-1", key.as_str().to_uppercase()),
        "abc-1",
        &format!("{key}-99999999999"),
    ] {
        assert!(
            matches!(inv.resolve(bad), Err(ResolveError::Malformed { .. })),
            "{bad:?}"
        );
    }
    let other = RegionKey::of(R1);
    for unknown in [format!("{key}-2"), format!("{other}-0")] {
        assert!(
            matches!(inv.resolve(&unknown), Err(ResolveError::Unknown { .. })),
            "{unknown}"
        );
    }
}

#[test]
fn vanished_region_keeps_units_unhealthy_and_recovers() {
    let both = capacity(&[(R0, 2 * GIB), (R1, GIB)]);
    let inv = Inventory::default().observe(&both).unwrap();
    let gone = inv.observe(&capacity(&[(R1, GIB)])).unwrap();
    assert_eq!(gone.counts(), (3, 1));
    let r0 = RegionKey::of(R0);
    let states = health(&gone);
    assert!(
        states
            .iter()
            .filter(|(id, _)| id.starts_with(r0.as_str()))
            .all(|(_, h)| h == UNHEALTHY)
    );
    assert!(!gone.resolve(&format!("{r0}-0")).unwrap().is_healthy());
    let back = gone.observe(&both).unwrap();
    assert_eq!(back, inv);
}

#[test]
fn shrunk_region_marks_lost_units_unhealthy() {
    let inv = Inventory::default()
        .observe(&capacity(&[(R0, 3 * GIB)]))
        .unwrap();
    let shrunk = inv.observe(&capacity(&[(R0, GIB)])).unwrap();
    let key = RegionKey::of(R0);
    assert_eq!(
        health(&shrunk),
        vec![
            (format!("{key}-0"), HEALTHY.to_owned()),
            (format!("{key}-1"), UNHEALTHY.to_owned()),
            (format!("{key}-2"), UNHEALTHY.to_owned()),
        ]
    );
}

#[test]
fn list_is_ordered_by_region_name_then_unit() {
    let inv = Inventory::default()
        .observe(&capacity(&[(R1, GIB), (R0, 2 * GIB)]))
        .unwrap();
    let ids: Vec<String> = health(&inv).into_iter().map(|(id, _)| id).collect();
    let (k0, k1) = (RegionKey::of(R0), RegionKey::of(R1));
    assert_eq!(
        ids,
        vec![format!("{k0}-0"), format!("{k0}-1"), format!("{k1}-0")]
    );
}

#[test]
fn too_many_devices_is_refused() {
    let tiny = Inventory::new(NonZeroU64::new(1 << 20).unwrap());
    let err = tiny.observe(&capacity(&[(R0, 64 * GIB)])).unwrap_err();
    assert_eq!(err.reason(), "TooManyDevices");
}
