//! The pods and quotas of the standalone mode, read from multi-document YAML.
//!
//! EDGE: reads files (or the embedded example). Documents of other kinds are skipped with a
//! warning, so a whole namespace dump can be fed in; a document that claims to be a Pod or a
//! DmemQuota but does not parse as one is an error naming the file and the document.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use kube_dmem_crds::DmemQuota;
use kube_dmem_crds::consts::SIM_USAGE_ANNOTATION;
use kube_dmem_crds::select::PodFacts;
use kube_dmem_crds::usage::{SimUsageError, parse_sim_usage};

use super::EMBEDDED_EXAMPLE;

/// Where a document came from, for error messages.
const EMBEDDED: &str = "<embedded example>";

/// Pods and quotas, in document order.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// Every DmemQuota document.
    pub quotas: Vec<DmemQuota>,
    /// Every Pod document.
    pub pods: Vec<Pod>,
}

/// Why inputs could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum InputsError {
    /// A file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not YAML.
    #[error("parsing YAML in {origin}")]
    Yaml {
        /// The file.
        origin: String,
        /// The parser's error (boxed: it is large, and errors are rare).
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// A document of a known kind does not have that kind's shape.
    #[error("document {index} of {origin} is not a valid {kind}")]
    Document {
        /// The file.
        origin: String,
        /// 1-based document number.
        index: usize,
        /// `Pod` or `DmemQuota`.
        kind: &'static str,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
}

impl InputsError {
    /// PascalCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Read { .. } => "InputUnreadable",
            Self::Yaml { .. } => "InputNotYaml",
            Self::Document { .. } => "InputInvalid",
        }
    }
}

impl Inputs {
    /// Loads every file in order; no files means the embedded example.
    pub fn load(paths: &[PathBuf]) -> Result<Self, InputsError> {
        let mut inputs = Inputs::default();
        if paths.is_empty() {
            inputs.add(EMBEDDED, EMBEDDED_EXAMPLE)?;
        }
        for path in paths {
            let text = read(path)?;
            inputs.add(&path.display().to_string(), &text)?;
        }
        Ok(inputs)
    }

    /// Adds the documents of one YAML text.
    pub fn add(&mut self, origin: &str, text: &str) -> Result<(), InputsError> {
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(text).map_err(|source| InputsError::Yaml {
                origin: origin.to_owned(),
                source: Box::new(source),
            })?;
        for (i, doc) in docs.into_iter().enumerate() {
            let kind = doc
                .get("kind")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default();
            let invalid = |kind, source| InputsError::Document {
                origin: origin.to_owned(),
                index: i + 1,
                kind,
                source,
            };
            match kind {
                "Pod" => self
                    .pods
                    .push(serde_json::from_value(doc).map_err(|e| invalid("Pod", e))?),
                "DmemQuota" => self
                    .quotas
                    .push(serde_json::from_value(doc).map_err(|e| invalid("DmemQuota", e))?),
                "" if doc.is_null() => {}
                other => {
                    tracing::warn!(origin, document = i + 1, kind = other, "Skipping document")
                }
            }
        }
        Ok(())
    }

    /// The rule inputs of every pod (standalone pods hold no VRAM units, so no grants).
    pub fn pod_facts(&self) -> Vec<PodFacts> {
        self.pods
            .iter()
            .map(|pod| PodFacts::from_pod(pod, Vec::new()))
            .collect()
    }
}

/// The VRAM a pod's workload allocates per region, from its simulation annotation. A malformed
/// annotation is logged and read as no usage: one bad pod must not stop the node.
pub fn sim_usage(pod: &Pod) -> Vec<(String, u64)> {
    let Some(value) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SIM_USAGE_ANNOTATION))
    else {
        return Vec::new();
    };
    match parse_sim_usage(value) {
        Ok(usage) => usage.into_iter().collect(),
        Err(err) => {
            let err: &SimUsageError = &err;
            tracing::warn!(
                pod = pod.metadata.name.as_deref().unwrap_or_default(),
                error = err as &dyn std::error::Error,
                "Ignoring malformed usage annotation"
            );
            Vec::new()
        }
    }
}

fn read(path: &Path) -> Result<String, InputsError> {
    std::fs::read_to_string(path).map_err(|source| InputsError::Read {
        path: path.to_owned(),
        source,
    })
}
