//! ServiceAccount credentials for the components: a token from the TokenRequest API
//! (`kubectl create token`), optionally bound to a pod so that it carries the pod's node name
//! (user extra `authentication.kubernetes.io/node-name`, which the chart's admission policy reads),
//! written into a kubeconfig next to the admin one's server and CA.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::env::{AGENT_POD_SELECTOR, Env, RELEASE_NAMESPACE};
use crate::kubectl::Kubectl;

/// A pod a token is bound to.
#[derive(Debug, Clone)]
pub struct BoundPod {
    /// Pod name (in the ServiceAccount's namespace).
    pub name: String,
    /// Pod UID.
    pub uid: String,
}

/// Mints a one-hour token for `namespace/service_account` (bound to `pod` when given) and writes
/// a kubeconfig using it to `path`, with `namespace` as the default namespace.
///
/// # Errors
/// When the TokenRequest is refused or the admin kubeconfig has no server.
pub fn service_account_kubeconfig(
    namespace: &str,
    service_account: &str,
    pod: Option<&BoundPod>,
    path: &Path,
) -> Result<PathBuf> {
    let admin = Kubectl::admin();
    let mut args = vec![
        "create",
        "token",
        service_account,
        "-n",
        namespace,
        "--duration=1h",
    ];
    if let Some(pod) = pod {
        args.extend([
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            &pod.name,
            "--bound-object-uid",
            &pod.uid,
        ]);
    }
    let token = admin.ok(&args)?.trim().to_owned();
    if token.is_empty() {
        bail!("kubectl create token {service_account} returned nothing");
    }
    let view = admin.json(&["config", "view", "--minify", "--raw"])?;
    let cluster = view["clusters"][0]["cluster"].clone();
    let server = cluster["server"]
        .as_str()
        .context("admin kubeconfig has no server")?;
    let mut cluster_out = json!({ "server": server });
    for key in [
        "certificate-authority",
        "certificate-authority-data",
        "insecure-skip-tls-verify",
        "tls-server-name",
    ] {
        if let Some(v) = cluster.get(key).filter(|v| !v.is_null()) {
            cluster_out[key] = v.clone();
        }
    }
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": cluster_out}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {
            "cluster": "e2e", "user": service_account, "namespace": namespace}}],
        "current-context": "e2e",
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(&config)?)?;
    Ok(path.to_path_buf())
}

/// The chart's node-agent DaemonSet pod on `node` (kwok "runs" it on the fake node).
///
/// # Errors
/// When there is none.
pub fn agent_pod_on(node: &str) -> Result<BoundPod> {
    let field = format!("spec.nodeName={node}");
    let list = Kubectl::admin().json(&[
        "get",
        "pods",
        "-n",
        RELEASE_NAMESPACE,
        "-l",
        AGENT_POD_SELECTOR,
        "--field-selector",
        &field,
    ])?;
    let pod: &Value = list["items"]
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .find(|p| p["metadata"]["deletionTimestamp"].is_null())
        })
        .with_context(|| {
            format!("no kube-dmem node-agent pod on {node}; is the chart installed (e2e.sh)?")
        })?;
    Ok(BoundPod {
        name: pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        uid: pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    })
}

/// A kubeconfig for the node agent of `node`: the chart's agent ServiceAccount with a token bound
/// to the chart's agent pod on that node, as the kubelet would project it.
///
/// # Errors
/// When there is no agent pod on `node` or the TokenRequest fails.
pub fn agent_kubeconfig(node: &str, dir: &Path) -> Result<PathBuf> {
    let pod = agent_pod_on(node)?;
    service_account_kubeconfig(
        RELEASE_NAMESPACE,
        crate::env::AGENT_SA,
        Some(&pod),
        &dir.join(format!("agent-{node}.kubeconfig")),
    )
}

/// A kubeconfig for the operator: the chart's operator ServiceAccount.
///
/// # Errors
/// When the TokenRequest fails.
pub fn operator_kubeconfig(dir: &Path) -> Result<PathBuf> {
    service_account_kubeconfig(
        RELEASE_NAMESPACE,
        crate::env::OPERATOR_SA,
        None,
        &dir.join("operator.kubeconfig"),
    )
}

/// Where [`Env`] keeps this run's credentials (not inside a test's dir, which is per namespace).
pub fn credentials_dir() -> PathBuf {
    Env::get().run_dir.join("credentials")
}
