//! CORE: simulator configuration — kernel profile and constants (`docs/kernel.md` §8.1).

/// `PAGE_COUNTER_MAX` on 4 KiB-page 64-bit kernels (x86_64): `LONG_MAX / PAGE_SIZE`.
pub const PAGE_COUNTER_MAX_4K: u64 = 2_251_799_813_685_247;
/// `PAGE_COUNTER_MAX` on 64 KiB-page arm64 kernels.
pub const PAGE_COUNTER_MAX_64K: u64 = 140_737_488_355_327;
/// Rounds of "no progress" the 7.3 max-write reclaim loop tolerates (`DMEM_MAX_RECLAIM_RETRIES`).
pub const DMEM_MAX_RECLAIM_RETRIES: u32 = 16;

/// Which kernel the simulator behaves like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// 6.14–7.2 with the 6.19 (stable) fix: multi-line limit writes, max below usage ignored.
    Legacy,
    /// 6.14–6.18 without the fix: like `Legacy`, but a region without a value oopses.
    LegacyUnfixed,
    /// 7.3+: one region per write, `dmem.peak`, max applied below usage with reclaim.
    Current,
}

impl Profile {
    /// True for both legacy variants.
    pub fn is_legacy(self) -> bool {
        matches!(self, Profile::Legacy | Profile::LegacyUnfixed)
    }
}

/// Simulator configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Kernel profile.
    pub profile: Profile,
    /// `PAGE_COUNTER_MAX`; stored values `>=` this read back as `max`.
    pub page_counter_max: u64,
    /// Compute effective protection with wrapping 64-bit products like kernels up to 7.3 (true), or
    /// with 128-bit intermediates like the linux-next fix (false). `docs/kernel.md` §3.4.
    pub wrap_protection_math: bool,
    /// Largest single write a cgroup file accepts (`PAGE_SIZE`); larger writes fail with `E2BIG`.
    /// Modelling choice beyond `docs/kernel.md` §8 (kernfs `atomic_write_len`, §2.4).
    pub write_limit: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            profile: Profile::Current,
            page_counter_max: PAGE_COUNTER_MAX_4K,
            wrap_protection_math: true,
            write_limit: 4096,
        }
    }
}

impl SimConfig {
    /// The default configuration for `profile`.
    pub fn with_profile(profile: Profile) -> Self {
        SimConfig {
            profile,
            ..SimConfig::default()
        }
    }
}
