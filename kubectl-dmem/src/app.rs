//! EDGE: runs one command: reads what it needs through [`crate::cluster`], hands the values to the
//! core modules, and returns the text to print and the warnings for stderr.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::agents::{self, AgentEndpoint, AgentState};
use crate::args::{Args, Command, TopArgs, TopKind, WhyArgs};
use crate::cluster::{Cluster, ClusterError};
use crate::render::{self, Format, RenderError, Table};
use crate::top::SortBy;
use crate::{top, why, whytext};

/// What a command produced.
#[derive(Clone, Debug, Default)]
pub struct Output {
    /// For stdout.
    pub text: String,
    /// For stderr, one line each.
    pub warnings: Vec<String>,
}

/// A command that failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// An API call failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Encoding the output failed.
    #[error(transparent)]
    Render(#[from] RenderError),
}

/// `-o json|yaml` of `top`: the rows, and the nodes whose agent could not be read.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TopView<T> {
    items: Vec<T>,
    unreadable_agents: BTreeMap<String, String>,
}

/// Runs the command the arguments name.
///
/// # Errors
/// [`AppError`]: an API call that the command cannot do without, or an encoding failure. An
/// unreadable agent is not an error: it becomes a warning and empty cells.
pub async fn run(args: Args) -> Result<Output, AppError> {
    let Args {
        namespace,
        all_namespaces,
        output,
        dmem_namespace,
        agent_selector,
        admin_port,
        agent_urls,
        agent_timeout_seconds,
        command,
    } = args;
    let cluster = Cluster::connect(Duration::from_secs(agent_timeout_seconds)).await?;
    let namespace = namespace.unwrap_or_else(|| cluster.default_namespace().to_owned());
    let agent_pods = cluster.agent_pods(&dmem_namespace, &agent_selector).await?;
    let endpoints = agents::with_urls(agents::endpoints(&agent_pods, admin_port), agent_urls);
    let (text, states) = match command {
        Command::Top(TopArgs {
            kind: TopKind::Pods,
            sort_by,
        }) => {
            let scope = (!all_namespaces).then_some(namespace.as_str());
            top_pods(&cluster, &endpoints, scope, sort_by, output).await?
        }
        Command::Top(TopArgs {
            kind: TopKind::Nodes,
            sort_by,
        }) => top_nodes(&cluster, &endpoints, sort_by, output).await?,
        Command::Why(WhyArgs { pod }) => {
            why_pod(&cluster, &endpoints, &namespace, &pod, output).await?
        }
    };
    Ok(Output {
        text,
        warnings: agents::warnings(&endpoints, &states, &dmem_namespace, &agent_selector),
    })
}

/// The text, and what each agent read gave.
type Rendered = (String, BTreeMap<String, AgentState>);

async fn top_pods(
    cluster: &Cluster,
    endpoints: &BTreeMap<String, AgentEndpoint>,
    scope: Option<&str>,
    sort_by: SortBy,
    output: Format,
) -> Result<Rendered, AppError> {
    let pods = cluster.pods(scope).await?;
    let nodes: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    let states = cluster.read_agents(endpoints, nodes).await;
    let mut rows = top::pod_rows(&pods, &states);
    top::sort_pods(&mut rows, sort_by);
    let text = table_or(output, top::pods_table(&rows), rows, &states)?;
    Ok((text, states))
}

async fn top_nodes(
    cluster: &Cluster,
    endpoints: &BTreeMap<String, AgentEndpoint>,
    sort_by: SortBy,
    output: Format,
) -> Result<Rendered, AppError> {
    let nodes = cluster.nodes().await?;
    let all_pods = cluster.pods(None).await?;
    let names = nodes.iter().filter_map(|n| n.metadata.name.clone());
    let states = cluster.read_agents(endpoints, names).await;
    let mut rows = top::node_rows(&nodes, &all_pods, &states);
    top::sort_nodes(&mut rows, sort_by);
    let text = table_or(output, top::nodes_table(&rows), rows, &states)?;
    Ok((text, states))
}

async fn why_pod(
    cluster: &Cluster,
    endpoints: &BTreeMap<String, AgentEndpoint>,
    namespace: &str,
    name: &str,
    output: Format,
) -> Result<Rendered, AppError> {
    let pod = cluster.pod(namespace, name).await?;
    let quotas = cluster.quotas(namespace).await?;
    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let node = match &node_name {
        Some(name) => cluster.node(name).await?,
        None => None,
    };
    let states = cluster.read_agents(endpoints, node_name).await;
    let events = cluster.pod_events(&pod).await?;
    let explained = why::explain(why::WhyInput {
        pod: &pod,
        quotas: &quotas,
        node: node.as_ref(),
        agent: states.values().next().unwrap_or(&AgentState::NoAgent),
        events: &events,
        now: Timestamp::now(),
    });
    let text = match output {
        Format::Table => whytext::render(&explained),
        format => render::encode(&explained, format)?,
    };
    Ok((text, states))
}

fn table_or<T: Serialize>(
    format: Format,
    table: Table,
    items: Vec<T>,
    states: &BTreeMap<String, AgentState>,
) -> Result<String, RenderError> {
    match format {
        Format::Table if table.is_empty() => Ok("No resources found.\n".to_owned()),
        Format::Table => Ok(table.render()),
        format => render::encode(
            &TopView {
                items,
                unreadable_agents: agents::unreadable(states),
            },
            format,
        ),
    }
}
