//! EDGE: every API call kubectl-dmem makes, all reads: pods, nodes, DmemQuotas, events, the node
//! agent pods, and each agent's `/metrics` through the API server's pod proxy
//! (`GET /api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy/metrics`), or at a URL the user named
//! (`--agent-url`). It uses the caller's kubeconfig and RBAC, and never writes.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::ListParams;
use kube::{Api, Client};
use kube_dmem_crds::DmemQuota;

use crate::agents::{AgentEndpoint, AgentState};
use crate::promtext;
use crate::snapshot::NodeSnapshot;

/// An API call that failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("connecting to the cluster (kubeconfig)")]
    Connect(#[source] kube::Error),
    /// Listing pods failed.
    #[error("listing pods in {scope}")]
    ListPods {
        /// A namespace, or `all namespaces`.
        scope: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Reading one pod failed (also: it does not exist).
    #[error("reading pod {namespace}/{name}")]
    GetPod {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Listing or reading nodes failed.
    #[error("reading nodes")]
    ListNodes(#[source] kube::Error),
    /// Listing DmemQuotas failed (is the CRD installed?).
    #[error("listing DmemQuotas in {namespace}")]
    ListQuotas {
        /// Namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Listing events failed.
    #[error("listing events of pod {namespace}/{name}")]
    ListEvents {
        /// Namespace.
        namespace: String,
        /// Pod name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Listing the node agent pods failed.
    #[error("listing the kube-dmem node agents in {namespace} ({selector})")]
    ListAgents {
        /// The release namespace.
        namespace: String,
        /// The label selector.
        selector: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The proxy request could not be built (a name with characters a URI cannot carry).
    #[error("building the request {path}")]
    BuildRequest {
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: http::Error,
    },
    /// No HTTP client could be made for an `--agent-url`.
    #[error("connecting to the agent at {url}")]
    AgentUrl {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// An `--agent-url` does not parse (the argument parser checks it first; this is the edge's own
    /// guard).
    #[error("{url:?} is not a URL")]
    AgentUrlParse {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// Reading an agent's `/metrics` (through the pod proxy or at its URL) failed.
    #[error("reading {path}")]
    ReadMetrics {
        /// The proxy path.
        path: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// An agent did not answer in time (through the proxy, an agent pod that does not answer can
    /// hold a request for long).
    #[error("reading {path}: no answer within {seconds} s")]
    AgentTimeout {
        /// The proxy path.
        path: String,
        /// The limit.
        seconds: u64,
    },
    /// An agent's `/metrics` did not parse.
    #[error("parsing the metrics of {agent}")]
    ParseMetrics {
        /// The agent pod, or its URL.
        agent: String,
        /// Where and why.
        #[source]
        source: promtext::ParseError,
    },
}

impl ClusterError {
    /// PascalCase reason (docs/contributing.md §4).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Connect(_) => "Connect",
            Self::ListPods { .. } => "ListPods",
            Self::GetPod { .. } => "GetPod",
            Self::ListNodes(_) => "ListNodes",
            Self::ListQuotas { .. } => "ListQuotas",
            Self::ListEvents { .. } => "ListEvents",
            Self::ListAgents { .. } => "ListAgents",
            Self::BuildRequest { .. } => "BuildRequest",
            Self::AgentUrl { .. } => "AgentUrl",
            Self::AgentUrlParse { .. } => "AgentUrlParse",
            Self::ReadMetrics { .. } => "ReadMetrics",
            Self::AgentTimeout { .. } => "AgentTimeout",
            Self::ParseMetrics { .. } => "ParseMetrics",
        }
    }
}

/// A connection to the cluster the kubeconfig points at.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    agent_timeout: Duration,
}

impl Cluster {
    /// Connects with the user's kubeconfig (or in-cluster configuration).
    /// Each agent read gets at most `agent_timeout`.
    ///
    /// # Errors
    /// [`ClusterError::Connect`].
    pub async fn connect(agent_timeout: Duration) -> Result<Self, ClusterError> {
        let client = Client::try_default().await.map_err(ClusterError::Connect)?;
        Ok(Self {
            client,
            agent_timeout,
        })
    }

    /// The kubeconfig context's namespace (`default` if it names none).
    pub fn default_namespace(&self) -> &str {
        self.client.default_namespace()
    }

    /// Pods of one namespace, or of all (`None`).
    ///
    /// # Errors
    /// [`ClusterError::ListPods`].
    pub async fn pods(&self, namespace: Option<&str>) -> Result<Vec<Pod>, ClusterError> {
        let api: Api<Pod> = match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let list =
            api.list(&ListParams::default())
                .await
                .map_err(|source| ClusterError::ListPods {
                    scope: namespace.unwrap_or("all namespaces").to_owned(),
                    source,
                })?;
        Ok(list.items)
    }

    /// One pod.
    ///
    /// # Errors
    /// [`ClusterError::GetPod`], also when it does not exist.
    pub async fn pod(&self, namespace: &str, name: &str) -> Result<Pod, ClusterError> {
        Api::<Pod>::namespaced(self.client.clone(), namespace)
            .get(name)
            .await
            .map_err(|source| ClusterError::GetPod {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source,
            })
    }

    /// Every node.
    ///
    /// # Errors
    /// [`ClusterError::ListNodes`].
    pub async fn nodes(&self) -> Result<Vec<Node>, ClusterError> {
        let api: Api<Node> = Api::all(self.client.clone());
        Ok(api
            .list(&ListParams::default())
            .await
            .map_err(ClusterError::ListNodes)?
            .items)
    }

    /// One node, `None` when it does not exist.
    ///
    /// # Errors
    /// [`ClusterError::ListNodes`].
    pub async fn node(&self, name: &str) -> Result<Option<Node>, ClusterError> {
        let api: Api<Node> = Api::all(self.client.clone());
        api.get_opt(name).await.map_err(ClusterError::ListNodes)
    }

    /// The DmemQuotas of a namespace.
    ///
    /// # Errors
    /// [`ClusterError::ListQuotas`].
    pub async fn quotas(&self, namespace: &str) -> Result<Vec<DmemQuota>, ClusterError> {
        let api: Api<DmemQuota> = Api::namespaced(self.client.clone(), namespace);
        Ok(api
            .list(&ListParams::default())
            .await
            .map_err(|source| ClusterError::ListQuotas {
                namespace: namespace.to_owned(),
                source,
            })?
            .items)
    }

    /// Events about one pod (core/v1 view; the components write events.k8s.io/v1 ones, which the
    /// API server serves under both).
    ///
    /// # Errors
    /// [`ClusterError::ListEvents`].
    pub async fn pod_events(&self, pod: &Pod) -> Result<Vec<Event>, ClusterError> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let selector = match &pod.metadata.uid {
            Some(uid) => format!("involvedObject.uid={uid}"),
            None => format!("involvedObject.name={name}"),
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        Ok(api
            .list(&ListParams::default().fields(&selector))
            .await
            .map_err(|source| ClusterError::ListEvents {
                namespace,
                name,
                source,
            })?
            .items)
    }

    /// The node agent pods.
    ///
    /// # Errors
    /// [`ClusterError::ListAgents`].
    pub async fn agent_pods(
        &self,
        namespace: &str,
        selector: &str,
    ) -> Result<Vec<Pod>, ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        Ok(api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|source| ClusterError::ListAgents {
                namespace: namespace.to_owned(),
                selector: selector.to_owned(),
                source,
            })?
            .items)
    }

    /// One agent's metrics, parsed.
    ///
    /// # Errors
    /// [`ClusterError::AgentUrl`], [`ClusterError::AgentUrlParse`], [`ClusterError::BuildRequest`],
    /// [`ClusterError::ReadMetrics`], [`ClusterError::ParseMetrics`].
    pub async fn read_agent(&self, agent: &AgentEndpoint) -> Result<NodeSnapshot, ClusterError> {
        let location = agent.metrics_location();
        let text = match agent {
            AgentEndpoint::Pod { .. } => get_text(&self.client, &location, &location).await?,
            AgentEndpoint::Url { url } => {
                get_text(&direct_client(url)?, "/metrics", &location).await?
            }
        };
        let samples = promtext::parse(&text).map_err(|source| ClusterError::ParseMetrics {
            agent: agent.name().to_owned(),
            source,
        })?;
        Ok(NodeSnapshot::from_samples(&samples))
    }

    /// Reads the agents of `nodes` concurrently; nodes without an endpoint get
    /// [`AgentState::NoAgent`], failures [`AgentState::Failed`] with the error chain.
    pub async fn read_agents(
        &self,
        endpoints: &BTreeMap<String, AgentEndpoint>,
        nodes: impl IntoIterator<Item = String>,
    ) -> BTreeMap<String, AgentState> {
        let reads = nodes.into_iter().map(|node| async move {
            let state = match endpoints.get(&node) {
                None => AgentState::NoAgent,
                Some(endpoint) => {
                    let read = tokio::time::timeout(self.agent_timeout, self.read_agent(endpoint));
                    let result = read.await.unwrap_or_else(|_| {
                        Err(ClusterError::AgentTimeout {
                            path: endpoint.metrics_location(),
                            seconds: self.agent_timeout.as_secs(),
                        })
                    });
                    match result {
                        Ok(snapshot) => AgentState::Read { snapshot },
                        Err(err) => AgentState::Failed {
                            error: kube_dmem_crds::error_chain(&err),
                        },
                    }
                }
            };
            (node, state)
        });
        join_all(reads).await.into_iter().collect()
    }
}

/// `GET path` as text with `client`; `location` names what is read in errors.
async fn get_text(client: &Client, path: &str, location: &str) -> Result<String, ClusterError> {
    let request = http::Request::get(path)
        .header(http::header::ACCEPT, "text/plain")
        .body(Vec::new())
        .map_err(|source| ClusterError::BuildRequest {
            path: location.to_owned(),
            source,
        })?;
    client
        .request_text(request)
        .await
        .map_err(|source| ClusterError::ReadMetrics {
            path: location.to_owned(),
            source,
        })
}

/// A plain HTTP(S) client for an agent's admin URL: no kubeconfig credentials go to it (the
/// agent's `/metrics` needs none, and a URL the user typed is not the API server).
fn direct_client(url: &str) -> Result<Client, ClusterError> {
    let failed = |source| ClusterError::AgentUrl {
        url: url.to_owned(),
        source,
    };
    let uri: http::Uri = url.parse().map_err(|source| ClusterError::AgentUrlParse {
        url: url.to_owned(),
        source,
    })?;
    Client::try_from(kube::Config::new(uri)).map_err(failed)
}
