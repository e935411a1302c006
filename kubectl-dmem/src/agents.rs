//! CORE: which node agent pod to ask about which node, on which port, and what came back.
//!
//! The chart's DaemonSet labels its pods `app.kubernetes.io/part-of=kube-dmem,
//! app.kubernetes.io/component=device-plugin` and names the admin port `admin`
//! (`charts/kube-dmem/templates/device-plugin-daemonset.yaml`). Per node, a running pod wins over
//! one that is not (a rolling update can briefly show two); the port named `admin` wins over the
//! default.

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

/// A node agent pod to read `/metrics` from through the API server's pod proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AgentEndpoint {
    /// The agent pod's namespace.
    pub namespace: String,
    /// The agent pod's name.
    pub pod: String,
    /// Its admin port.
    pub port: u16,
}

impl AgentEndpoint {
    /// The API path of the agent's `/metrics` through the pod proxy.
    pub fn metrics_path(&self) -> String {
        format!(
            "/api/v1/namespaces/{}/pods/{}:{}/proxy/metrics",
            self.namespace, self.pod, self.port
        )
    }
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
        let endpoint = AgentEndpoint {
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
        assert_eq!(got["a"].pod, "a-new");
        assert_eq!(got["a"].port, 9100);
        assert_eq!(got["b"].port, DEFAULT_ADMIN_PORT);
        assert_eq!(
            got["a"].metrics_path(),
            "/api/v1/namespaces/kube-dmem/pods/a-new:9100/proxy/metrics"
        );
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
