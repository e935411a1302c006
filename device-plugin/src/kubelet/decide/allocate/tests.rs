use std::collections::BTreeMap;

use super::*;
use crate::kubelet::decide::inventory::RegionKey;

const GIB: u64 = 1 << 30;
const A: &str = "drm/0000:03:00.0/vram0";
const B: &str = "drm/0000:04:00.0/vram0";
const C: &str = "drm/0000:05:00.0/vram0";

/// A: 4 units, B: 2 units, C: 3 units.
fn inventory() -> Inventory {
    let cap: BTreeMap<String, u64> = [(A, 4 * GIB), (B, 2 * GIB), (C, 3 * GIB)]
        .iter()
        .map(|(n, b)| ((*n).to_owned(), *b))
        .collect();
    Inventory::default().observe(&cap).unwrap()
}

fn id(region: &str, unit: u32) -> String {
    format!("{}-{unit}", RegionKey::of(region))
}

fn all_ids() -> Vec<String> {
    let mut ids: Vec<String> = (0..4).map(|u| id(A, u)).collect();
    ids.extend((0..2).map(|u| id(B, u)));
    ids.extend((0..3).map(|u| id(C, u)));
    ids
}

fn request(
    available: Vec<String>,
    must: Vec<String>,
    size: i32,
) -> ContainerPreferredAllocationRequest {
    ContainerPreferredAllocationRequest {
        available_device_i_ds: available,
        must_include_device_i_ds: must,
        allocation_size: size,
    }
}

fn regions_of(inv: &Inventory, ids: &[String]) -> Vec<String> {
    units_by_region(inv, ids).unwrap().into_keys().collect()
}

#[test]
fn preferred_is_best_fit_on_one_region() {
    let inv = inventory();
    // 2 units fit B (2 free), C (3) and A (4): best fit is B.
    let got = preferred(&inv, &request(all_ids(), vec![], 2)).unwrap();
    assert_eq!(got, vec![id(B, 0), id(B, 1)]);
    // 3 units: C is the tightest fit.
    let got = preferred(&inv, &request(all_ids(), vec![], 3)).unwrap();
    assert_eq!(regions_of(&inv, &got), vec![C.to_owned()]);
    // 4 units: only A fits.
    let got = preferred(&inv, &request(all_ids(), vec![], 4)).unwrap();
    assert_eq!(regions_of(&inv, &got), vec![A.to_owned()]);
    // 1 unit with only A and C free: C has fewer free units.
    let only_a_c: Vec<String> = all_ids()
        .into_iter()
        .filter(|i| !i.starts_with(RegionKey::of(B).as_str()))
        .collect();
    let got = preferred(&inv, &request(only_a_c, vec![], 1)).unwrap();
    assert_eq!(got, vec![id(C, 0)]);
}

#[test]
fn preferred_honours_must_include() {
    let inv = inventory();
    let got = preferred(&inv, &request(all_ids(), vec![id(A, 2)], 2)).unwrap();
    assert_eq!(got, vec![id(A, 0), id(A, 2)]);
    assert!(got.contains(&id(A, 2)));
    // must-include outside the available list still counts.
    let available: Vec<String> = (0..2).map(|u| id(B, u)).collect();
    let got = preferred(&inv, &request(available, vec![id(B, 1)], 2)).unwrap();
    assert_eq!(got, vec![id(B, 0), id(B, 1)]);
}

#[test]
fn preferred_fills_from_the_fewest_regions_when_none_fits() {
    let inv = inventory();
    // 5 units: no region fits; largest (A, 4) + best fit for the remaining 1 (B, 2 free).
    let got = preferred(&inv, &request(all_ids(), vec![], 5)).unwrap();
    assert_eq!(got.len(), 5);
    assert_eq!(regions_of(&inv, &got), vec![A.to_owned(), B.to_owned()]);
    // must-include on B: fill B first, then the region that fits the rest best (C for 3).
    let got = preferred(&inv, &request(all_ids(), vec![id(B, 0)], 5)).unwrap();
    assert_eq!(regions_of(&inv, &got), vec![B.to_owned(), C.to_owned()]);
    // everything.
    let got = preferred(&inv, &request(all_ids(), vec![], 9)).unwrap();
    assert_eq!(got.len(), 9);
}

#[test]
fn preferred_refuses_bad_requests() {
    let inv = inventory();
    let cases = [
        (request(all_ids(), vec![], 0), "InvalidSize"),
        (request(all_ids(), vec![], -1), "InvalidSize"),
        (request(all_ids(), vec![], 10), "InsufficientUnits"),
        (
            request(all_ids(), vec![id(A, 0), id(A, 1)], 1),
            "MustIncludeExceedsSize",
        ),
        (request(vec!["nope".into()], vec![], 1), "MalformedDeviceId"),
        (request(vec![id(A, 9)], vec![], 1), "UnknownDevice"),
    ];
    for (req, reason) in cases {
        assert_eq!(
            preferred(&inv, &req).unwrap_err().reason(),
            reason,
            "{req:?}"
        );
    }
    // Duplicate available IDs are tolerated in a preference.
    let dup = request(vec![id(B, 0), id(B, 0), id(B, 1)], vec![], 2);
    assert_eq!(preferred(&inv, &dup).unwrap(), vec![id(B, 0), id(B, 1)]);
}

#[test]
fn allocate_grants_one_region() {
    let inv = inventory();
    let got = allocate(&inv, &[id(C, 2), id(C, 0)]).unwrap();
    assert_eq!(
        got,
        Allocation {
            region: C.to_owned(),
            units: vec![0, 2],
            bytes: 2 * GIB
        }
    );
    let resp = container_response(&got, vec![]);
    assert_eq!(resp.envs.get(ENV_REGION).map(String::as_str), Some(C));
    assert_eq!(
        resp.envs.get(ENV_VRAM_BYTES).map(String::as_str),
        Some("2147483648")
    );
    assert!(resp.devices.is_empty() && resp.mounts.is_empty());
}

#[test]
fn allocate_refuses_splits_with_resource_exhausted() {
    let inv = inventory();
    let err = allocate(&inv, &[id(A, 0), id(B, 0), id(B, 1)]).unwrap_err();
    assert_eq!(
        err,
        AllocateError::SplitAcrossRegions {
            regions: vec![
                RegionShare {
                    region: A.to_owned(),
                    units: 1
                },
                RegionShare {
                    region: B.to_owned(),
                    units: 2
                },
            ]
        }
    );
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status
            .message()
            .starts_with("SplitAcrossRegions: devices span 2 regions"),
        "{}",
        status.message()
    );
    assert!(status.message().contains(A) && status.message().contains(B));
}

#[test]
fn allocate_error_codes() {
    let inv = inventory();
    let gone = inv
        .observe(&[(A.to_owned(), 4 * GIB)].into_iter().collect())
        .unwrap();
    let cases: Vec<(Result<Allocation, AllocateError>, tonic::Code)> = vec![
        (allocate(&inv, &[]), tonic::Code::InvalidArgument),
        (
            allocate(&inv, &["x-1".into()]),
            tonic::Code::InvalidArgument,
        ),
        (
            allocate(&inv, &[id(A, 0), id(A, 0)]),
            tonic::Code::InvalidArgument,
        ),
        (allocate(&inv, &[id(A, 4)]), tonic::Code::NotFound),
        (
            allocate(&gone, &[id(B, 0)]),
            tonic::Code::FailedPrecondition,
        ),
    ];
    for (result, code) in cases {
        let status = tonic::Status::from(result.unwrap_err());
        assert_eq!(status.code(), code, "{status:?}");
    }
}

#[test]
fn pci_address_from_region_names() {
    assert_eq!(pci_address(A), Some("0000:03:00.0"));
    assert_eq!(pci_address("drm/0000:c1:00.7/vram1"), Some("0000:c1:00.7"));
    for bad in [
        "ttm/0000:03:00.0/vram0",
        "drm/card0/vram0",
        "drm",
        "drm/0000:03:00.8/x",
        "drm/0000-03-00.0/x",
    ] {
        assert_eq!(pci_address(bad), None, "{bad}");
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn region(i: usize) -> String {
        format!("drm/0000:{:02x}:00.0/vram0", i + 1)
    }

    proptest! {
        /// For any free-unit layout and any satisfiable size: exactly `size` distinct available IDs;
        /// one region whenever one fits (and then the tightest one); otherwise no more regions than
        /// the fewest that can hold the request.
        #[test]
        fn preferred_packs_minimally(free in prop::collection::vec(0u32..6, 1..5), size in 1i32..20) {
            let cap: BTreeMap<String, u64> =
                free.iter().enumerate().map(|(i, n)| (region(i), u64::from(*n) * GIB)).collect();
            let inv = Inventory::default().observe(&cap).unwrap();
            let available: Vec<String> = free
                .iter()
                .enumerate()
                .flat_map(|(i, n)| (0..*n).map(move |u| id(&region(i), u)))
                .collect();
            let total: u32 = free.iter().sum();
            let result = preferred(&inv, &request(available.clone(), vec![], size));
            if size as u32 > total {
                prop_assert_eq!(result.unwrap_err().reason(), "InsufficientUnits");
                return Ok(());
            }
            let got = result.unwrap();
            prop_assert_eq!(got.len(), size as usize);
            prop_assert!(got.iter().all(|i| available.contains(i)));
            let used = units_by_region(&inv, &got).unwrap();
            let mut sizes: Vec<u32> = free.clone();
            sizes.sort_unstable_by(|a, b| b.cmp(a));
            let mut fewest = 0;
            let mut acc = 0;
            while acc < size as u32 {
                acc += sizes[fewest];
                fewest += 1;
            }
            prop_assert_eq!(used.len(), fewest);
            if fewest == 1 {
                let tightest = free.iter().filter(|n| **n >= size as u32).min().copied();
                let chosen = used.keys().next().and_then(|r| inv.region(r)).map(|r| r.listed_units());
                prop_assert_eq!(chosen, tightest);
            }
        }
    }
}
