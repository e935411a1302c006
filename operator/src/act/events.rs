//! EDGE: publishing [`Notice`]s as Kubernetes Events through the kube-runtime `Recorder`
//! (reporting controller `kube-dmem-operator`, instance = our identity).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType};
use kube_dmem_crds::DmemQuota;
use tokio::sync::watch;

use super::{ActError, Actor, timed};
use crate::decide::{Notice, Regarding};

impl Actor {
    /// Publishes events; failures are logged and counted, never retried (events are best effort).
    pub async fn publish(&self, notices: &[Notice], leading: &watch::Receiver<bool>) {
        for notice in notices {
            if !*leading.borrow() {
                return;
            }
            let reference = reference(&notice.regarding);
            let event = Event {
                type_: if notice.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: notice.reason.clone(),
                note: Some(notice.note.clone()),
                action: notice.action.to_owned(),
                secondary: None,
            };
            let object = describe(&reference);
            let result = timed(
                "PublishEvent",
                &object,
                self.recorder.publish(&event, &reference),
            )
            .await
            .and_then(|r| {
                r.map_err(|source| ActError::PublishEvent {
                    reason: notice.reason.clone(),
                    object: object.clone(),
                    source,
                })
            });
            self.record(result);
        }
    }
}

fn reference(regarding: &Regarding) -> ObjectReference {
    match regarding {
        Regarding::Quota(key, uid) => ObjectReference {
            api_version: Some(DmemQuota::api_version(&()).into_owned()),
            kind: Some(DmemQuota::kind(&()).into_owned()),
            namespace: Some(key.namespace.clone()),
            name: Some(key.name.clone()),
            uid: uid.clone(),
            ..ObjectReference::default()
        },
        Regarding::Pod(pod) => ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(pod.namespace.clone()),
            name: Some(pod.name.clone()),
            uid: Some(pod.uid.clone()),
            ..ObjectReference::default()
        },
    }
}

fn describe(r: &ObjectReference) -> String {
    let part = |s: &Option<String>| s.clone().unwrap_or_default();
    format!("{} {}/{}", part(&r.kind), part(&r.namespace), part(&r.name))
}
