//! Command-line arguments of the node-agent binary (clap derive; every flag also reads a
//! `KUBE_DMEM_*` environment variable), and the small value parsers they need.
//!
//! CORE: parsing only; `main.rs` runs what was parsed.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::simfs::serve::ServeConfig;
use kube_dmem_runtime::telemetry::LogFormat;

/// kube-dmem node agent: kubelet device plugin and dmem cgroup enforcement.
#[derive(Debug, Parser)]
#[command(name = "kube-dmem-device-plugin", version)]
pub struct Args {
    /// Log filter in tracing EnvFilter syntax, e.g. `info` or `kube_dmem_device_plugin=debug`.
    #[arg(long, env = "KUBE_DMEM_LOG", default_value = "info", global = true)]
    pub log_level: String,
    /// Log line format.
    #[arg(long, env = "KUBE_DMEM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain, global = true)]
    pub log_format: LogFormat,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the dmem kernel simulator as a FUSE filesystem (a fake /sys/fs/cgroup) until SIGINT,
    /// SIGTERM or an external unmount.
    Simfs(SimfsArgs),
    /// Run the agent's enforcement and pressure rounds on a simulated GPU node, with pods and
    /// DmemQuotas from local YAML (an embedded example by default), printing a live table.
    Standalone(StandaloneArgs),
    /// Run the node agent in a cluster: watch this node's pods and all DmemQuotas, enforce their
    /// limits through dmem cgroups, report pod conditions, serve the kubelet device plugin.
    Run(Box<RunArgs>),
}

/// Which kernel interface `run` enforces on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CgroupBackend {
    /// The node's cgroupfs under `--cgroup-root`.
    Sysfs,
    /// The in-process dmem simulator, with simulated pod cgroups and workloads (kind, kwok, laptops).
    Sim,
}

/// Whether a kubelet runs on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kubelet {
    /// Register the device plugin and read grants from PodResources.
    Enabled,
    /// No kubelet (fake nodes): no registration, no PodResources.
    Disabled,
}

/// Whether the DRA driver runs (`docs/dra.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dra {
    /// Publish this node's ResourceSlice; with a kubelet also register and prepare claims.
    Enabled,
    /// No DRA driver.
    Disabled,
}

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// This node's name (from the downward API, `spec.nodeName`).
    #[arg(long, env = "KUBE_DMEM_NODE_NAME")]
    pub node_name: String,
    /// Kernel interface: the node's cgroupfs, or the simulator.
    #[arg(long, env = "KUBE_DMEM_CGROUP_BACKEND", value_enum, default_value_t = CgroupBackend::Sysfs)]
    pub cgroup_backend: CgroupBackend,
    /// The node's cgroup v2 root as seen by the agent (the hostPath mount point).
    #[arg(long, env = "KUBE_DMEM_CGROUP_ROOT", default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    /// The kubelet's PodResources socket (follows the kubelet's --root-dir).
    #[arg(long, env = "KUBE_DMEM_POD_RESOURCES_SOCKET", default_value = crate::kubelet::podresources::DEFAULT_SOCKET)]
    pub pod_resources_socket: PathBuf,
    /// The kubelet's device-plugin directory. The kubelet hard-codes
    /// /var/lib/kubelet/device-plugins; change it only for tests.
    #[arg(
        long,
        env = "KUBE_DMEM_DEVICE_PLUGIN_DIR",
        default_value = "/var/lib/kubelet/device-plugins"
    )]
    pub device_plugin_dir: PathBuf,
    /// Where the node's `/dev` is mounted in the agent: `Allocate` resolves each region's GPU
    /// device nodes from `dri/by-path` links under it (sysfs backend only).
    #[arg(long, env = "KUBE_DMEM_DEV_ROOT", default_value = "/dev")]
    pub dev_root: PathBuf,
    /// Whether a kubelet runs here; `disabled` for clusters of fake nodes.
    #[arg(long, env = "KUBE_DMEM_KUBELET", value_enum, default_value_t = Kubelet::Enabled)]
    pub kubelet: Kubelet,
    /// Address of the admin server (/live, /ready, /metrics).
    #[arg(long, env = "KUBE_DMEM_ADMIN_ADDR", default_value = "0.0.0.0:9808")]
    pub admin_addr: core::net::SocketAddr,
    /// How often usage is read for pressure, e.g. `1s` (from the start of one poll to the next).
    #[arg(long, env = "KUBE_DMEM_POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_interval: std::time::Duration,
    /// How often usage is read while some pod is within 10 % below its `high` or `max`, e.g.
    /// `100ms`; at or above `--poll-interval` the poll never speeds up.
    #[arg(long, env = "KUBE_DMEM_NEAR_POLL_INTERVAL", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub near_poll_interval: std::time::Duration,
    /// How often everything is re-evaluated against the cached objects, e.g. `60s`.
    #[arg(long, env = "KUBE_DMEM_RESYNC", default_value = "60s", value_parser = humantime::parse_duration)]
    pub resync: std::time::Duration,
    /// Bytes per `kube-dmem.io/vram` unit, e.g. `1Gi`.
    #[arg(long, env = "KUBE_DMEM_VRAM_UNIT", default_value = "1Gi", value_parser = parse_unit)]
    pub vram_unit: std::num::NonZeroU64,
    /// Simulated kernel behaviour (sim backend): legacy (6.14-7.2) or current (7.3+).
    #[arg(long, env = "KUBE_DMEM_SIM_PROFILE", value_enum, default_value_t = ProfileArg::Current)]
    pub sim_profile: ProfileArg,
    /// A simulated region (sim backend), `NAME=SIZE`; repeatable. Default: the standalone example's
    /// two cards.
    #[arg(long = "sim-region", env = "KUBE_DMEM_SIM_REGIONS", value_delimiter = ',', value_parser = parse_region)]
    pub sim_regions: Vec<(String, u64)>,
    /// The container runtime's NRI socket (containerd 2.x, CRI-O), e.g. /var/run/nri/nri.sock:
    /// limits are put in force before containers are created. Unset: no NRI plugin.
    #[arg(long, env = "KUBE_DMEM_NRI_SOCKET")]
    pub nri_socket: Option<PathBuf>,
    /// The DRA driver `vram.kube-dmem.io`: one ResourceSlice device per region, claims enforced
    /// as dmem.max. Can run beside the device plugin.
    #[arg(long, env = "KUBE_DMEM_DRA", value_enum, default_value_t = Dra::Disabled)]
    pub dra: Dra,
    /// Smallest VRAM claim (and the default of a request without capacity), e.g. `256Mi`.
    #[arg(long, env = "KUBE_DMEM_DRA_MIN_REQUEST", default_value = "256Mi", value_parser = parse_unit)]
    pub dra_min_request: std::num::NonZeroU64,
    /// Claims are rounded up to the minimum plus a multiple of this step, e.g. `256Mi`.
    #[arg(long, env = "KUBE_DMEM_DRA_REQUEST_STEP", default_value = "256Mi", value_parser = parse_unit)]
    pub dra_request_step: std::num::NonZeroU64,
    /// The kubelet's plugin registration directory (follows the kubelet's --root-dir).
    #[arg(long, env = "KUBE_DMEM_DRA_REGISTRY_DIR", default_value = crate::dra::plugin::REGISTRY_DIR)]
    pub dra_registry_dir: PathBuf,
    /// The driver's directory under the kubelet's plugins directory: DRA socket and claim checkpoint.
    #[arg(long, env = "KUBE_DMEM_DRA_PLUGIN_DIR", default_value = crate::dra::plugin::PLUGIN_DIR)]
    pub dra_plugin_dir: PathBuf,
    /// Where the container runtime reads CDI specs.
    #[arg(long, env = "KUBE_DMEM_CDI_DIR", default_value = "/var/run/cdi")]
    pub cdi_dir: PathBuf,
    /// The node's sysfs, to read which kernel driver each GPU has.
    #[arg(long, env = "KUBE_DMEM_SYSFS_ROOT", default_value = "/sys")]
    pub sysfs_root: PathBuf,
}

impl RunArgs {
    /// The run configuration these arguments describe.
    pub fn into_config(self) -> crate::cluster::RunConfig {
        let RunArgs {
            node_name,
            cgroup_backend,
            cgroup_root,
            pod_resources_socket,
            device_plugin_dir,
            dev_root,
            kubelet,
            admin_addr,
            poll_interval,
            near_poll_interval,
            resync,
            vram_unit,
            sim_profile,
            sim_regions,
            nri_socket,
            dra,
            dra_min_request,
            dra_request_step,
            dra_registry_dir,
            dra_plugin_dir,
            cdi_dir,
            sysfs_root,
        } = self;
        let dra = (dra == Dra::Enabled).then(|| crate::dra::DraConfig {
            policy: crate::dra::RequestPolicy {
                min: dra_min_request.get(),
                step: dra_request_step.get(),
            },
            registry_dir: dra_registry_dir,
            plugin_dir: dra_plugin_dir,
            cdi_dir,
            sysfs: sysfs_root,
        });
        let backend = match cgroup_backend {
            CgroupBackend::Sysfs => crate::cluster::BackendConfig::Sysfs(cgroup_root),
            CgroupBackend::Sim => crate::cluster::BackendConfig::Sim {
                profile: sim_profile.into(),
                regions: if sim_regions.is_empty() {
                    crate::standalone::DEFAULT_REGIONS
                        .iter()
                        .map(|(n, s)| ((*n).to_owned(), *s))
                        .collect()
                } else {
                    sim_regions
                },
            },
        };
        crate::cluster::RunConfig {
            node: node_name,
            backend,
            kubelet: kubelet == Kubelet::Enabled,
            device_plugin_dir,
            dev_root,
            pod_resources_socket,
            admin_addr,
            poll_interval,
            near_poll_interval,
            resync,
            vram_unit,
            nri_socket,
            dra,
        }
    }
}

/// Parses a non-zero byte count (see [`parse_size`]).
pub fn parse_unit(s: &str) -> Result<std::num::NonZeroU64, String> {
    std::num::NonZeroU64::new(parse_size(s)?).ok_or_else(|| format!("{s:?}: must not be zero"))
}

/// Arguments of `standalone`.
#[derive(Debug, clap::Args)]
pub struct StandaloneArgs {
    /// YAML files holding DmemQuotas and Pods (multi-document); re-read every round. Without any,
    /// an embedded example node with two quotas and five pods is used.
    #[arg(
        long = "input",
        env = "KUBE_DMEM_STANDALONE_INPUTS",
        value_delimiter = ','
    )]
    pub inputs: Vec<PathBuf>,
    /// Kernel behaviour to simulate: legacy (6.14-7.2) or current (7.3+).
    #[arg(long, env = "KUBE_DMEM_STANDALONE_PROFILE", value_enum, default_value_t = ProfileArg::Legacy)]
    pub profile: ProfileArg,
    /// A simulated region, `NAME=SIZE`; repeatable. Default: an xe card with 16Gi and an amdgpu
    /// card with 24Gi.
    #[arg(long = "region", env = "KUBE_DMEM_STANDALONE_REGIONS", value_delimiter = ',', value_parser = parse_region)]
    pub regions: Vec<(String, u64)>,
    /// Time between rounds, e.g. `1s` or `500ms`.
    #[arg(long, env = "KUBE_DMEM_POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// Print one round and exit.
    #[arg(long, conflicts_with = "rounds")]
    pub once: bool,
    /// Stop after this many rounds (default: run until interrupted).
    #[arg(long, env = "KUBE_DMEM_STANDALONE_ROUNDS")]
    pub rounds: Option<u64>,
}

impl StandaloneArgs {
    /// The standalone configuration these arguments describe.
    pub fn into_config(self) -> crate::standalone::StandaloneConfig {
        let StandaloneArgs {
            inputs,
            profile,
            regions,
            interval,
            once,
            rounds,
        } = self;
        let regions = if regions.is_empty() {
            crate::standalone::DEFAULT_REGIONS
                .iter()
                .map(|(n, s)| ((*n).to_owned(), *s))
                .collect()
        } else {
            regions
        };
        crate::standalone::StandaloneConfig {
            inputs,
            regions,
            profile: profile.into(),
            interval,
            rounds: if once { Some(1) } else { rounds },
            thresholds: crate::decide::pressure::PressureThresholds::default(),
        }
    }
}

/// Arguments of `simfs`.
#[derive(Debug, clap::Args)]
pub struct SimfsArgs {
    /// Existing directory to mount the simulated cgroup root on.
    #[arg(long, env = "KUBE_DMEM_SIMFS_MOUNT")]
    pub mount: PathBuf,
    /// Kernel behaviour to simulate: legacy (6.14-7.2), legacy-unfixed (6.14-6.18 without the
    /// bare-name fix) or current (7.3+).
    #[arg(long, env = "KUBE_DMEM_SIMFS_PROFILE", value_enum, default_value_t = ProfileArg::Current)]
    pub profile: ProfileArg,
    /// A region to register, `NAME=SIZE` (SIZE in bytes or a quantity such as 8Gi); repeatable, in
    /// registration order. The environment variable takes a comma-separated list.
    #[arg(long = "region", env = "KUBE_DMEM_SIMFS_REGIONS", value_delimiter = ',', value_parser = parse_region)]
    pub regions: Vec<(String, u64)>,
    /// Register the regions without a driver reclaim op (a blocking `dmem.max` write then evicts nothing).
    #[arg(long, env = "KUBE_DMEM_SIMFS_NO_RECLAIM")]
    pub no_reclaim: bool,
}

/// The `--profile` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// 6.14–7.2 with the stable fix.
    Legacy,
    /// 6.14–6.18 without the fix: a bare region name "oopses" (EIO).
    LegacyUnfixed,
    /// 7.3+.
    Current,
}

impl From<ProfileArg> for kube_dmem_sim::Profile {
    fn from(p: ProfileArg) -> Self {
        match p {
            ProfileArg::Legacy => kube_dmem_sim::Profile::Legacy,
            ProfileArg::LegacyUnfixed => kube_dmem_sim::Profile::LegacyUnfixed,
            ProfileArg::Current => kube_dmem_sim::Profile::Current,
        }
    }
}

impl SimfsArgs {
    /// The serve configuration these arguments describe.
    pub fn into_config(self) -> ServeConfig {
        let SimfsArgs {
            mount,
            profile,
            regions,
            no_reclaim,
        } = self;
        ServeConfig {
            mountpoint: mount,
            profile: profile.into(),
            regions,
            reclaim: !no_reclaim,
        }
    }
}

/// Parses `NAME=SIZE`, splitting at the last `=`. The name must be writable to dmem files later, so
/// it may not contain whitespace.
pub fn parse_region(s: &str) -> Result<(String, u64), String> {
    let (name, size) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=SIZE"))?;
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{name:?}: region names are non-empty, without whitespace"
        ));
    }
    Ok((name.to_owned(), parse_size(size)?))
}

/// Parses a byte count: plain digits, or digits with a Kubernetes quantity suffix, binary
/// (`Ki Mi Gi Ti Pi Ei`) or decimal (`k M G T P E`). Fractions and overflow are errors.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "{s:?}: expected a whole number of bytes, optionally with a suffix"
        ));
    }
    let multiplier: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        other => {
            return Err(format!(
                "{s:?}: unknown suffix {other:?} (use Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P or E)"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("{s:?}: does not fit in 64 bits"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8514437120"), Ok(8_514_437_120));
        assert_eq!(parse_size("8Gi"), Ok(8 << 30));
        assert_eq!(parse_size("512Mi"), Ok(512 << 20));
        assert_eq!(parse_size("2k"), Ok(2000));
        assert_eq!(parse_size("15Ei"), Ok(15 << 60));
        for bad in [
            "",
            "Gi",
            "1.5Gi",
            "-1",
            "1GB",
            "1 Gi",
            "16Ei",
            "99999999999999999999",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn regions_and_subcommand() {
        assert_eq!(
            parse_region("drm/0000:03:00.0/vram0=8Gi"),
            Ok(("drm/0000:03:00.0/vram0".to_owned(), 8 << 30))
        );
        assert_eq!(parse_region("a=b=1"), Ok(("a=b".to_owned(), 1)));
        for bad in ["novalue", "=1", "a b=1", "a=x"] {
            assert!(parse_region(bad).is_err(), "{bad:?}");
        }
        let args = Args::try_parse_from([
            "kube-dmem-device-plugin",
            "simfs",
            "--mount",
            "/tmp/x",
            "--profile",
            "legacy-unfixed",
            "--region",
            "r0=1Gi",
            "--region",
            "r1=2048",
        ])
        .unwrap();
        let Command::Simfs(simfs) = args.command else {
            panic!("expected the simfs subcommand, got {:?}", args.command);
        };
        let config = simfs.into_config();
        assert_eq!(config.profile, kube_dmem_sim::Profile::LegacyUnfixed);
        assert_eq!(
            config.regions,
            [("r0".to_owned(), 1 << 30), ("r1".to_owned(), 2048)]
        );
        assert!(config.reclaim);
    }

    #[test]
    fn run_reads_the_chart_environment_and_defaults() {
        let args = Args::try_parse_from([
            "kube-dmem-device-plugin",
            "run",
            "--node-name",
            "n1",
            "--cgroup-backend",
            "sim",
            "--kubelet",
            "disabled",
            "--sim-region",
            "r0=4Gi",
            "--vram-unit",
            "512Mi",
        ])
        .unwrap();
        let Command::Run(run) = args.command else {
            panic!("expected the run subcommand, got {:?}", args.command);
        };
        let cfg = run.into_config();
        assert_eq!(cfg.node, "n1");
        assert!(!cfg.kubelet);
        assert_eq!(cfg.vram_unit.get(), 512 << 20);
        assert_eq!(cfg.poll_interval, std::time::Duration::from_secs(1));
        assert_eq!(
            cfg.near_poll_interval,
            crate::cluster::drive::NEAR_POLL,
            "the flag's default is the loop's documented near-threshold poll"
        );
        assert_eq!(cfg.resync, std::time::Duration::from_secs(60));
        assert_eq!(cfg.admin_addr.port(), 9808);
        assert_eq!(
            cfg.device_plugin_dir,
            PathBuf::from("/var/lib/kubelet/device-plugins")
        );
        assert!(
            matches!(cfg.backend, crate::cluster::BackendConfig::Sim { ref regions, .. } if regions == &[("r0".to_owned(), 4 << 30)])
        );
        let sysfs =
            Args::try_parse_from(["kube-dmem-device-plugin", "run", "--node-name", "n1"]).unwrap();
        let Command::Run(run) = sysfs.command else {
            panic!("run")
        };
        let cfg = run.into_config();
        assert!(cfg.kubelet);
        assert_eq!(cfg.nri_socket, None, "NRI is off by default");
        assert!(cfg.dra.is_none(), "DRA is off by default");
        let dra = Args::try_parse_from([
            "kube-dmem-device-plugin",
            "run",
            "--node-name",
            "n1",
            "--dra",
            "enabled",
            "--dra-min-request",
            "1Gi",
        ])
        .unwrap();
        let Command::Run(run) = dra.command else {
            panic!("run")
        };
        let dra = run.into_config().dra.expect("DRA enabled");
        assert_eq!((dra.policy.min, dra.policy.step), (1 << 30, 256 << 20));
        assert_eq!(
            dra.registry_dir,
            PathBuf::from("/var/lib/kubelet/plugins_registry")
        );
        assert!(
            matches!(cfg.backend, crate::cluster::BackendConfig::Sysfs(ref root) if root == std::path::Path::new("/sys/fs/cgroup"))
        );
        assert!(
            Args::try_parse_from(["kube-dmem-device-plugin", "run"]).is_err(),
            "node name required"
        );
        assert!(
            Args::try_parse_from([
                "kube-dmem-device-plugin",
                "run",
                "--node-name",
                "n",
                "--vram-unit",
                "0"
            ])
            .is_err()
        );
    }

    #[test]
    fn standalone_defaults_to_the_example_node_and_once_means_one_round() {
        let args =
            Args::try_parse_from(["kube-dmem-device-plugin", "standalone", "--once"]).unwrap();
        let Command::Standalone(standalone) = args.command else {
            panic!("expected the standalone subcommand, got {:?}", args.command);
        };
        let config = standalone.into_config();
        assert!(
            config.inputs.is_empty(),
            "no inputs means the embedded example"
        );
        assert_eq!(config.regions.len(), 2);
        assert_eq!(config.rounds, Some(1));
        assert_eq!(config.profile, kube_dmem_sim::Profile::Legacy);
    }
}
