//! CORE: which node agent pod to ask about which node, on which port, and what came back.
//!
//! The chart's DaemonSet labels its pods `app.kubernetes.io/part-of=kube-dmem,
//! app.kubernetes.io/component=device-plugin` and names the admin port `admin`
//! (`charts/kube-dmem/templates/device-plugin-daemonset.yaml`). Per node, a running pod wins over
//! one that is not (a rolling update can briefly show two); the port named `admin` wins over the
//! default. `--agent-url NODE=URL` replaces a node's pod with a URL read directly.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

use crate::snapshot::NodeSnapshot;

/// The label selector of the chart's node agent pods.
pub const AGENT_SELECTOR: &str =
    "app.kubernetes.io/part-of=kube-dmem,app.kubernetes.io/component=device-plugin";
/// The agent's admin port when its pod does not name one (`devicePlugin.adminPort`).
pub const DEFAULT_ADMIN_PORT: u16 = 9808;
/// The name of the admin container port in the chart.
const ADMIN_PORT_NAME: &str = "admin";

/// Where to read one node agent's `/metrics`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "via")]
pub enum AgentEndpoint {
    /// The agent pod, through the API server's pod proxy (the default: it needs nothing but the
    /// user's kubeconfig and `pods/proxy` on the release namespace).
    Pod {
        /// The agent pod's namespace.
        namespace: String,
        /// The agent pod's name.
        pod: String,
        /// Its admin port.
        port: u16,
    },
    /// A URL the user named with `--agent-url NODE=URL`, read directly: for clusters where the
    /// API server cannot proxy to pods (RBAC without `pods/proxy`, an API server outside the pod
    /// network) and the user reaches the agent another way, such as `kubectl port-forward`.
    Url {
        /// The agent's admin base URL, without a trailing slash.
        url: String,
    },
}

impl AgentEndpoint {
    /// What is read: the pod proxy's API path, or the URL of `/metrics`.
    pub fn metrics_location(&self) -> String {
        match self {
            Self::Pod {
                namespace,
                pod,
                port,
            } => format!("/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/metrics"),
            Self::Url { url } => format!("{url}/metrics"),
        }
    }

    /// Who answers, for messages: the pod's name or the URL.
    pub fn name(&self) -> &str {
        match self {
            Self::Pod { pod, .. } => pod,
            Self::Url { url } => url,
        }
    }
}

/// Why an `--agent-url` argument was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AgentUrlError {
    /// Not `NODE=URL`.
    #[error("expected NODE=URL, for example node-1=http://127.0.0.1:9808")]
    Shape,
    /// The URL is not an absolute http(s) URL.
    #[error("{0:?} is not an http:// or https:// URL")]
    Scheme(String),
    /// The URL does not parse.
    #[error("{url:?} is not a URL: {why}")]
    Parse {
        /// The URL as given.
        url: String,
        /// The parser's message.
        why: String,
    },
}

/// Parses one `--agent-url NODE=URL` argument into the node's name and its agent endpoint.
///
/// # Errors
/// [`AgentUrlError`] for an empty node, a missing `=`, or a URL that is not absolute http(s).
pub fn parse_agent_url(arg: &str) -> Result<(String, AgentEndpoint), AgentUrlError> {
    let (node, url) = arg.split_once('=').ok_or(AgentUrlError::Shape)?;
    let (node, url) = (node.trim(), url.trim().trim_end_matches('/'));
    if node.is_empty() || url.is_empty() {
        return Err(AgentUrlError::Shape);
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| AgentUrlError::Parse {
            url: url.to_owned(),
            why: e.to_string(),
        })?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(AgentUrlError::Scheme(url.to_owned()));
    }
    Ok((
        node.to_owned(),
        AgentEndpoint::Url {
            url: url.to_owned(),
        },
    ))
}

/// The endpoints to read: the agent pods' ([`endpoints`]), where the user named a URL for a node
/// (`--agent-url`), that URL instead.
pub fn with_urls(
    mut endpoints: BTreeMap<String, AgentEndpoint>,
    urls: impl IntoIterator<Item = (String, AgentEndpoint)>,
) -> BTreeMap<String, AgentEndpoint> {
    endpoints.extend(urls);
    endpoints
}

/// The endpoint per node name, from the agent pods listed with [`AGENT_SELECTOR`].
pub fn endpoints(agent_pods: &[Pod], default_port: u16) -> BTreeMap<String, AgentEndpoint> {
    let mut best: BTreeMap<String, (bool, AgentEndpoint)> = BTreeMap::new();
    for pod in agent_pods {
        let (Some(node), Some(name), Some(namespace)) = (
            pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            pod.metadata.name.clone(),
            pod.metadata.namespace.clone(),
        ) else {
            continue;
        };
        let running = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Running");
        let endpoint = AgentEndpoint::Pod {
            namespace,
            pod: name,
            port: admin_port(pod).unwrap_or(default_port),
        };
        match best.get(&node) {
            Some((was_running, _)) if *was_running || !running => {}
            _ => {
                best.insert(node, (running, endpoint));
            }
        }
    }
    best.into_iter().map(|(node, (_, e))| (node, e)).collect()
}

fn admin_port(pod: &Pod) -> Option<u16> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(ADMIN_PORT_NAME))
        .and_then(|p| u16::try_from(p.container_port).ok())
}

/// What reading one node's agent gave.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum AgentState {
    /// The agent answered and its metrics parsed.
    Read {
        /// What it said.
        snapshot: NodeSnapshot,
    },
    /// The agent could not be read, or its answer did not parse.
    Failed {
        /// The error, for the user.
        error: String,
    },
    /// No agent pod runs on the node.
    NoAgent,
}

impl AgentState {
    /// The snapshot, when the agent was read.
    pub fn snapshot(&self) -> Option<&NodeSnapshot> {
        match self {
            Self::Read { snapshot } => Some(snapshot),
            _ => None,
        }
    }

    /// A short word for tables: `ok`, `unreachable`, `none`.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Read { .. } => "ok",
            Self::Failed { .. } => "unreachable",
            Self::NoAgent => "none",
        }
    }
}

/// Warnings for the user: agents that could not be read, or none found at all.
pub fn warnings(
    endpoints: &BTreeMap<String, AgentEndpoint>,
    states: &BTreeMap<String, AgentState>,
    namespace: &str,
    selector: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    if endpoints.is_empty() {
        out.push(format!(
            "no kube-dmem node agent pods found in namespace {namespace} ({selector}); pass --dmem-namespace (or set KUBECTL_DMEM_NAMESPACE) to the release namespace"
        ));
    }
    for (node, state) in states {
        if let AgentState::Failed { error } = state {
            out.push(format!(
                "the node agent on {node} could not be read: {error}"
            ));
        }
    }
    out
}

/// The nodes whose agent could not be read, with the error (for `-o json|yaml`).
pub fn unreadable(states: &BTreeMap<String, AgentState>) -> BTreeMap<String, String> {
    states
        .iter()
        .filter_map(|(node, state)| match state {
            AgentState::Failed { error } => Some((node.clone(), error.clone())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agent(name: &str, node: Option<&str>, phase: &str, port: Option<i32>) -> Pod {
        let ports = port.map_or(json!([]), |p| {
            json!([{"name": "admin", "containerPort": p}, {"name": "other", "containerPort": 1}])
        });
        serde_json::from_value(json!({
            "metadata": {"namespace": "kube-dmem", "name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports}]},
            "status": {"phase": phase},
        }))
        .expect("pod")
    }

    #[test]
    fn one_endpoint_per_node_preferring_running_pods_and_the_named_port() {
        let pods = vec![
            agent("a-old", Some("a"), "Pending", Some(9000)),
            agent("a-new", Some("a"), "Running", Some(9100)),
            agent("a-late", Some("a"), "Running", Some(9200)),
            agent("b", Some("b"), "Pending", None),
            agent("unscheduled", None, "Pending", Some(1)),
        ];
        let got = endpoints(&pods, DEFAULT_ADMIN_PORT);
        assert_eq!(got.len(), 2);
        assert_eq!(got["a"].name(), "a-new");
        assert_eq!(
            got["a"].metrics_location(),
            "/api/v1/namespaces/kube-dmem/pods/a-new:9100/proxy/metrics"
        );
        assert!(
            got["b"]
                .metrics_location()
                .ends_with(&format!("b:{DEFAULT_ADMIN_PORT}/proxy/metrics")),
            "{:?}",
            got["b"]
        );
    }

    #[test]
    fn an_agent_url_replaces_the_pod_proxy_for_its_node_only() {
        let pods = vec![
            agent("a", Some("a"), "Running", Some(9100)),
            agent("b", Some("b"), "Running", Some(9100)),
        ];
        let urls = ["a=http://127.0.0.1:9808/", "c = https://agent-c:9808"]
            .map(|arg| parse_agent_url(arg).expect("valid"));
        let got = with_urls(endpoints(&pods, DEFAULT_ADMIN_PORT), urls);
        assert_eq!(got["a"].metrics_location(), "http://127.0.0.1:9808/metrics");
        assert_eq!(got["a"].name(), "http://127.0.0.1:9808");
        assert!(
            matches!(got["b"], AgentEndpoint::Pod { .. }),
            "{:?}",
            got["b"]
        );
        // A node without an agent pod can still be read at a URL.
        assert_eq!(got["c"].metrics_location(), "https://agent-c:9808/metrics");
    }

    #[test]
    fn a_malformed_agent_url_is_refused_precisely() {
        assert_eq!(parse_agent_url("http://x:1"), Err(AgentUrlError::Shape));
        assert_eq!(parse_agent_url("=http://x:1"), Err(AgentUrlError::Shape));
        assert_eq!(parse_agent_url("n="), Err(AgentUrlError::Shape));
        assert_eq!(
            parse_agent_url("n=127.0.0.1:9808"),
            Err(AgentUrlError::Scheme("127.0.0.1:9808".into()))
        );
        assert_eq!(
            parse_agent_url("n=ftp://x"),
            Err(AgentUrlError::Scheme("ftp://x".into()))
        );
        assert!(matches!(
            parse_agent_url("n=http://x y"),
            Err(AgentUrlError::Parse { .. })
        ));
    }

    #[test]
    fn unreadable_agents_and_a_missing_release_are_reported() {
        let states = BTreeMap::from([
            (
                "a".to_owned(),
                AgentState::Failed {
                    error: "503".into(),
                },
            ),
            ("b".to_owned(), AgentState::NoAgent),
        ]);
        let none = warnings(&BTreeMap::new(), &states, "kube-dmem", AGENT_SELECTOR);
        assert_eq!(none.len(), 2);
        assert!(none[0].contains("--dmem-namespace"), "{none:?}");
        assert_eq!(none[1], "the node agent on a could not be read: 503");
        assert_eq!(
            unreadable(&states),
            BTreeMap::from([("a".to_owned(), "503".to_owned())])
        );
    }
}
