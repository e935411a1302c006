//! EDGE: the node agent's API writes, behind the small [`ApiSink`] trait so the agent loop can be
//! tested without a server (pods and quotas in, [`ApiWrite`]s out).
//!
//! [`KubeSink`] performs them: pod conditions with server-side apply on `pods/status` under
//! [`AGENT_FIELD_MANAGER`] with force (the body names only our two condition types, so the
//! kubelet's conditions are never touched; never a JSON merge patch, `docs/kubelet.md` §5.3), the node
//! regions annotation with server-side apply on the Node, and Events through kube-runtime's
//! `Recorder`. It translates; what to write is decided by the agent loop.

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, PodCondition};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube_dmem_crds::{AGENT_FIELD_MANAGER, NODE_REGIONS_ANNOTATION};
use serde_json::json;

/// One write the agent wants the API server to see.
#[derive(Clone, Debug, PartialEq)]
pub enum ApiWrite {
    /// Our two conditions of one pod (both, always: dropping one from an apply would delete it).
    PodConditions {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        name: String,
        /// `kube-dmem.io/VRAMPressure`, `kube-dmem.io/VRAMAboveHigh` and
        /// `kube-dmem.io/VRAMLimitsApplied`.
        conditions: Vec<PodCondition>,
    },
    /// An event about a pod or the node.
    Event {
        /// The object the event is about.
        regarding: ObjectReference,
        /// Warning (a problem) or Normal (a recovery).
        warning: bool,
        /// PascalCase reason: a pressure tier or a limits outcome reason.
        reason: String,
        /// The condition message.
        note: String,
    },
    /// This node's regions, as the [`NODE_REGIONS_ANNOTATION`] value.
    NodeRegions {
        /// The node.
        node: String,
        /// `REGION=BYTES[,...]`.
        value: String,
    },
}

impl ApiWrite {
    /// The metric label of the write's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::PodConditions { .. } => "conditions",
            Self::Event { .. } => "event",
            Self::NodeRegions { .. } => "node",
        }
    }
}

/// Why an API write failed.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    /// Applying a pod's conditions failed.
    #[error("could not apply the conditions of pod {namespace}/{name}")]
    PatchPodStatus {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Publishing an event failed.
    #[error("could not publish event {reason}")]
    PublishEvent {
        /// The event reason.
        reason: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Applying the node regions annotation failed.
    #[error("could not annotate node {node} with its regions")]
    PatchNode {
        /// The node.
        node: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl ActError {
    /// PascalCase reason for logs and the `reason` metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::PatchPodStatus { .. } => "PatchPodStatus",
            Self::PublishEvent { .. } => "PublishEvent",
            Self::PatchNode { .. } => "PatchNode",
        }
    }

    /// The pod is gone: its write is moot, not a reason to back off.
    pub fn is_not_found(&self) -> bool {
        let source = match self {
            Self::PatchPodStatus { source, .. }
            | Self::PublishEvent { source, .. }
            | Self::PatchNode { source, .. } => source,
        };
        matches!(source, kube::Error::Api(status) if status.code == 404)
    }
}

/// Where the agent's API writes go.
#[tonic::async_trait]
pub trait ApiSink: Send + Sync {
    /// Performs one write.
    async fn write(&self, write: &ApiWrite) -> Result<(), ActError>;
}

/// An API server that takes every write and keeps none (benchmarks and tests that look at the
/// kernel only).
pub struct DiscardSink;

#[tonic::async_trait]
impl ApiSink for DiscardSink {
    async fn write(&self, _: &ApiWrite) -> Result<(), ActError> {
        Ok(())
    }
}

/// The real API server.
#[derive(Clone)]
pub struct KubeSink {
    client: Client,
    recorder: Recorder,
}

impl KubeSink {
    /// A sink whose events are reported by `kube-dmem-agent` on `node`.
    pub fn new(client: Client, node: &str) -> Self {
        let reporter = Reporter {
            controller: AGENT_FIELD_MANAGER.to_owned(),
            instance: Some(node.to_owned()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
        }
    }
}

#[tonic::async_trait]
impl ApiSink for KubeSink {
    async fn write(&self, write: &ApiWrite) -> Result<(), ActError> {
        let params = PatchParams::apply(AGENT_FIELD_MANAGER).force();
        match write {
            ApiWrite::PodConditions {
                namespace,
                name,
                conditions,
            } => {
                let body = json!({
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": name, "namespace": namespace},
                    "status": {"conditions": conditions},
                });
                Api::<Pod>::namespaced(self.client.clone(), namespace)
                    .patch_status(name, &params, &Patch::Apply(&body))
                    .await
                    .map(drop)
                    .map_err(|source| ActError::PatchPodStatus {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        source,
                    })
            }
            ApiWrite::Event {
                regarding,
                warning,
                reason,
                note,
            } => {
                let event = Event {
                    type_: if *warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: reason.clone(),
                    // The API caps notes at 1 KiB.
                    note: Some(note.chars().take(1000).collect()),
                    action: "Enforce".to_owned(),
                    secondary: None,
                };
                self.recorder
                    .publish(&event, regarding)
                    .await
                    .map_err(|source| ActError::PublishEvent {
                        reason: reason.clone(),
                        source,
                    })
            }
            ApiWrite::NodeRegions { node, value } => {
                let body = json!({
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": node, "annotations": {NODE_REGIONS_ANNOTATION: value}},
                });
                Api::<Node>::all(self.client.clone())
                    .patch(node, &params, &Patch::Apply(&body))
                    .await
                    .map(drop)
                    .map_err(|source| ActError::PatchNode {
                        node: node.clone(),
                        source,
                    })
            }
        }
    }
}

/// A reference to a pod, for events.
pub fn pod_ref(namespace: &str, name: &str, uid: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Pod".to_owned()),
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
        uid: (!uid.is_empty()).then(|| uid.to_owned()),
        ..ObjectReference::default()
    }
}

/// A reference to a node, for events.
pub fn node_ref(node: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Node".to_owned()),
        name: Some(node.to_owned()),
        ..ObjectReference::default()
    }
}
