//! Property tests: after any sequence of raw charges/uncharges, BO allocations/frees, limit
//! writes and charge-file frees, on every profile,
//! * a pool's usage equals its direct charges (raw + resident BOs) plus its children's usage;
//! * a successful charge or allocation leaves every pool on its chain at or below its max;
//! * the device never holds more than its capacity;
//! * every dmem file reads back in the documented format, one line per registered region.

mod common;

use std::collections::HashMap;

use common::*;
use kube_dmem_sim::{BoId, Profile, SimKernel};
use proptest::prelude::*;

const CGROUPS: [&str; 5] = ["/", "/k", "/k/a", "/k/b", "/c"];
const CHILDREN: [&[usize]; 5] = [&[1, 4], &[2, 3], &[], &[], &[]];
const PARENTS: [Option<usize>; 5] = [None, Some(0), Some(1), Some(1), Some(0)];
const REGIONS: [(&str, u64); 2] = [(R0, 8 * G), (R1, 4 * G)];

#[derive(Debug, Clone)]
enum Op {
    Charge {
        cg: usize,
        region: usize,
        size: u64,
    },
    Uncharge {
        cg: usize,
        region: usize,
        size: u64,
    },
    Limit {
        cg: usize,
        file: usize,
        region: usize,
        value: Option<u64>,
        nonblock: bool,
    },
    Alloc {
        cg: usize,
        region: usize,
        size: u64,
    },
    Free {
        idx: usize,
    },
    FreeBytes {
        cg: usize,
        region: usize,
        size: u64,
    },
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![1u64..4 * G, (1u64..16).prop_map(|n| n * 256 * M)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..5usize, 0..2usize, size()).prop_map(|(cg, region, size)| Op::Charge {
            cg,
            region,
            size
        }),
        (0..5usize, 0..2usize, size()).prop_map(|(cg, region, size)| Op::Uncharge {
            cg,
            region,
            size
        }),
        (
            1..5usize,
            0..3usize,
            0..2usize,
            proptest::option::weighted(0.8, 0..10 * G),
            any::<bool>()
        )
            .prop_map(|(cg, file, region, value, nonblock)| Op::Limit {
                cg,
                file,
                region,
                value,
                nonblock
            }),
        (1..5usize, 0..2usize, size()).prop_map(|(cg, region, size)| Op::Alloc {
            cg,
            region,
            size
        }),
        (0..64usize).prop_map(|idx| Op::Free { idx }),
        (1..5usize, 0..2usize, size()).prop_map(|(cg, region, size)| Op::FreeBytes {
            cg,
            region,
            size
        }),
    ]
}

fn profile() -> impl Strategy<Value = Profile> {
    prop_oneof![
        Just(Profile::Legacy),
        Just(Profile::LegacyUnfixed),
        Just(Profile::Current)
    ]
}

fn build(p: Profile) -> SimKernel {
    let mut k = kernel(p);
    for (name, size) in REGIONS {
        k.register_region(name, size, true);
    }
    for c in &CGROUPS[1..] {
        k.mkdir(c).expect("mkdir");
    }
    w(&mut k, "/k", "cgroup.subtree_control", "+dmem").expect("+dmem");
    k
}

fn max_of(k: &SimKernel, cg: usize, region: &str) -> u64 {
    if cg == 0 {
        return u64::MAX;
    }
    match val(k, CGROUPS[cg], "dmem.max", region).as_str() {
        "max" => u64::MAX,
        v => v.parse().expect("decimal"),
    }
}

fn check_chain_within_max(k: &SimKernel, cg: usize, region: &str) -> Result<(), TestCaseError> {
    let mut c = Some(cg);
    while let Some(i) = c {
        prop_assert!(
            k.usage(CGROUPS[i], region) <= max_of(k, i, region),
            "{} over max",
            CGROUPS[i]
        );
        c = PARENTS[i];
    }
    Ok(())
}

fn check_all(
    k: &SimKernel,
    raw: &HashMap<(usize, usize), u64>,
    bos: &[BoId],
) -> Result<(), TestCaseError> {
    for (ri, (region, capacity)) in REGIONS.iter().enumerate() {
        let mut resident_total = 0;
        for (ci, cg) in CGROUPS.iter().enumerate() {
            let direct_bos: u64 = bos
                .iter()
                .filter(|b| {
                    k.bo_resident(**b) == Some(true) && k.bo_pool_path(**b).as_deref() == Some(*cg)
                })
                .filter(|b| bo_region(k, **b) == Some(ri))
                .map(|b| k.bo_size(*b).unwrap_or(0))
                .sum();
            resident_total += direct_bos;
            let children: u64 = CHILDREN[ci]
                .iter()
                .map(|&c| k.usage(CGROUPS[c], region))
                .sum();
            let direct = raw.get(&(ci, ri)).copied().unwrap_or(0) + direct_bos;
            prop_assert_eq!(k.usage(cg, region), direct + children, "{} {}", cg, region);
        }
        prop_assert_eq!(k.device_used(region), resident_total);
        prop_assert!(resident_total <= *capacity);
    }
    let names: Vec<&str> = REGIONS.iter().map(|(n, _)| *n).collect();
    for cg in CGROUPS {
        for f in k.files(cg).expect("files") {
            if !f.starts_with("dmem.") || f == "dmem.sim.charge" {
                continue;
            }
            let text = r(k, cg, f);
            prop_assert!(text.is_empty() || text.ends_with('\n'));
            let lines: Vec<&str> = text.lines().collect();
            prop_assert_eq!(lines.len(), names.len());
            for (line, name) in lines.iter().zip(&names) {
                let (n, v) = line.rsplit_once(' ').expect("space");
                prop_assert_eq!(n, *name);
                if v != "max" || f == "dmem.capacity" {
                    let parsed: u64 = v
                        .parse()
                        .map_err(|e| TestCaseError::fail(format!("{cg}/{f}: {v}: {e}")))?;
                    if f != "dmem.capacity" {
                        prop_assert!(parsed < kube_dmem_sim::PAGE_COUNTER_MAX_4K);
                    }
                }
            }
        }
    }
    Ok(())
}

/// The index in `REGIONS` of a BO's region.
fn bo_region(k: &SimKernel, bo: BoId) -> Option<usize> {
    k.bo_region(bo)
        .and_then(|name| REGIONS.iter().position(|(n, _)| *n == name))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold(p in profile(), ops in proptest::collection::vec(op(), 1..40)) {
        let mut k = build(p);
        let mut raw: HashMap<(usize, usize), u64> = HashMap::new();
        let mut bos: Vec<BoId> = Vec::new();
        for op in ops {
            match op {
                Op::Charge { cg, region, size } => {
                    if k.try_charge(CGROUPS[cg], REGIONS[region].0, size).is_ok() {
                        *raw.entry((cg, region)).or_default() += size;
                        check_chain_within_max(&k, cg, REGIONS[region].0)?;
                    }
                }
                Op::Uncharge { cg, region, size } => {
                    let have = raw.entry((cg, region)).or_default();
                    let size = size.min(*have);
                    *have -= size;
                    k.uncharge(CGROUPS[cg], REGIONS[region].0, size);
                }
                Op::Limit { cg, file, region, value, nonblock } => {
                    let file = ["dmem.min", "dmem.low", "dmem.max"][file];
                    let v = value.map_or("max".to_string(), |v| v.to_string());
                    let data = format!("{} {v}\n", REGIONS[region].0);
                    prop_assert_eq!(k.write_file(CGROUPS[cg], file, data.as_bytes(), nonblock), Ok(data.len()));
                }
                Op::Alloc { cg, region, size } => {
                    if let Ok(bo) = k.alloc_bo(CGROUPS[cg], REGIONS[region].0, size) {
                        bos.push(bo);
                        check_chain_within_max(&k, cg, REGIONS[region].0)?;
                    }
                }
                Op::Free { idx } => {
                    if let Some(bo) = bos.get(idx % bos.len().max(1)) {
                        k.free_bo(*bo);
                    }
                }
                Op::FreeBytes { cg, region, size } => {
                    let data = format!("{} -{size}", REGIONS[region].0);
                    prop_assert_eq!(w(&mut k, CGROUPS[cg], "dmem.sim.charge", &data), Ok(data.len()));
                }
            }
            check_all(&k, &raw, &bos)?;
        }
    }
}
