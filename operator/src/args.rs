//! EDGE (process configuration): the operator's command line; every flag also reads a
//! `KUBE_DMEM_…` environment variable so the chart sets them without templating arguments.

use std::net::SocketAddr;

use clap::Parser;
use kube_dmem_runtime::telemetry::LogFormat;

/// kube-dmem operator: DmemQuota status, conflicts and remediation.
#[derive(Parser, Debug, Clone)]
#[command(name = "kube-dmem-operator", version, about)]
pub struct Args {
    /// Address of the admin server (/live, /ready, /metrics).
    #[arg(long, env = "KUBE_DMEM_ADMIN_ADDR", default_value = "0.0.0.0:9809")]
    pub admin_addr: SocketAddr,

    /// Log filter in tracing EnvFilter syntax, e.g. `info` or `info,kube_dmem_operator=debug`.
    #[arg(long, env = "KUBE_DMEM_LOG", default_value = "info")]
    pub log_level: String,

    /// Log output format.
    #[arg(long, env = "KUBE_DMEM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

    /// Name of the coordination.k8s.io Lease used for leader election.
    #[arg(
        long,
        env = "KUBE_DMEM_LEASE_NAME",
        default_value = "kube-dmem-operator"
    )]
    pub lease_name: String,

    /// Namespace of the Lease; defaults to the client's namespace (in-cluster: the pod's own).
    #[arg(long, env = "KUBE_DMEM_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Identity in the Lease, normally the pod name (downward API); a process-unique name is made
    /// up when absent, which suits a single local run.
    #[arg(long, env = "KUBE_DMEM_POD_NAME")]
    pub pod_name: Option<String>,

    /// Most evictions per minute across all quotas (each quota also has its own limit); 0
    /// disables eviction entirely.
    #[arg(long, env = "KUBE_DMEM_MAX_EVICTIONS_PER_MINUTE", default_value_t = 6)]
    pub max_evictions_per_minute: u32,

    /// Full recomputation interval, on top of watch events, to heal missed writes.
    #[arg(long, env = "KUBE_DMEM_RESYNC", default_value = "5m")]
    pub resync: humantime::Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_is_well_formed() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let args = Args::try_parse_from(["kube-dmem-operator"]).expect("defaults parse");
        assert_eq!(args.admin_addr.port(), 9809);
        assert_eq!(args.max_evictions_per_minute, 6);
        assert_eq!(*args.resync, std::time::Duration::from_secs(300));
        assert_eq!(args.lease_name, "kube-dmem-operator");
        assert_eq!(args.log_format, LogFormat::Plain);
    }
}
