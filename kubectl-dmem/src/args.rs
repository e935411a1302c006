//! CORE: the command line of `kubectl dmem` (clap). kubectl runs `kubectl-dmem` with the words
//! after `kubectl dmem`, so the flags follow kubectl's names (`-n`, `-A`, `-o`, `--sort-by`).

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};

use crate::agents::{AGENT_SELECTOR, AgentEndpoint, DEFAULT_ADMIN_PORT, parse_agent_url};
use crate::render::Format;
use crate::top::SortBy;

/// VRAM usage, peaks, limits and pressure of pods and nodes under kube-dmem, and why a pod has the
/// limits it has. Reads only: pods, nodes, DmemQuotas, events, and the node agents' metrics
/// through the API server's pod proxy.
#[derive(Debug, Parser)]
#[command(name = "kubectl-dmem", bin_name = "kubectl dmem", version)]
pub struct Args {
    /// Namespace of the pods to show (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Pods of every namespace.
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Namespace kube-dmem is installed in (the Helm release namespace, where the agents run).
    #[arg(
        long,
        global = true,
        env = "KUBECTL_DMEM_NAMESPACE",
        default_value = "kube-dmem"
    )]
    pub dmem_namespace: String,
    /// Label selector of the node agent pods.
    #[arg(long, global = true, default_value = AGENT_SELECTOR)]
    pub agent_selector: String,
    /// Admin port of the agents when their pods do not name one `admin`.
    #[arg(long, global = true, default_value_t = DEFAULT_ADMIN_PORT)]
    pub admin_port: u16,
    /// Read NODE's agent at URL (its admin address, for example the local end of
    /// `kubectl port-forward -n kube-dmem pod/AGENT 9808`) instead of through the API server's pod
    /// proxy. Repeat it for several nodes.
    #[arg(long = "agent-url", global = true, value_name = "NODE=URL", value_parser = parse_agent_url)]
    pub agent_urls: Vec<(String, AgentEndpoint)>,
    /// Seconds to wait for each node agent's metrics; a slower agent is reported as unreachable.
    #[arg(long, global = true, default_value_t = 5)]
    pub agent_timeout_seconds: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// VRAM usage, peak, limits and pressure per pod and region, or per node.
    Top(TopArgs),
    /// Which DmemQuota governs a pod and why, the limits that follow, and what is in force.
    Why(WhyArgs),
}

/// `top` arguments.
#[derive(Debug, ClapArgs)]
pub struct TopArgs {
    /// `pods` (default) or `nodes`.
    #[arg(value_enum, default_value_t = TopKind::Pods)]
    pub kind: TopKind,
    /// Order of the rows.
    #[arg(long, value_enum, default_value_t = SortBy::Name)]
    pub sort_by: SortBy,
}

/// What `top` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TopKind {
    /// One row per pod and region.
    #[value(alias = "pod", alias = "po")]
    Pods,
    /// One row per node.
    #[value(alias = "node", alias = "no")]
    Nodes,
}

/// `why` arguments.
#[derive(Debug, ClapArgs)]
pub struct WhyArgs {
    /// The pod's name.
    pub pod: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn kubectl_style_flags_anywhere() {
        let args = Args::try_parse_from([
            "kubectl-dmem",
            "top",
            "nodes",
            "--sort-by",
            "pressure",
            "-o",
            "json",
        ])
        .expect("parses");
        assert_eq!(args.output, Format::Json);
        let Command::Top(top) = args.command else {
            panic!("top expected");
        };
        assert_eq!((top.kind, top.sort_by), (TopKind::Nodes, SortBy::Pressure));

        let args =
            Args::try_parse_from(["kubectl-dmem", "-n", "ml", "why", "trainer-0", "-o", "yaml"])
                .expect("parses");
        assert_eq!(args.namespace.as_deref(), Some("ml"));
        assert_eq!(args.output, Format::Yaml);
        assert!(matches!(args.command, Command::Why(WhyArgs { ref pod }) if pod == "trainer-0"));

        let args = Args::try_parse_from(["kubectl-dmem", "top", "-A"]).expect("parses");
        assert!(args.all_namespaces);
        assert!(matches!(
            args.command,
            Command::Top(TopArgs {
                kind: TopKind::Pods,
                ..
            })
        ));
        assert!(Args::try_parse_from(["kubectl-dmem", "top", "--sort-by", "size"]).is_err());
        assert!(Args::try_parse_from(["kubectl-dmem", "why"]).is_err());
    }
}
