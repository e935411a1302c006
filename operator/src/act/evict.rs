//! EDGE: one eviction through the Eviction API, translated into an [`EvictionOutcome`]: 429 (a
//! PodDisruptionBudget) is a refusal to retry, 404 and 409 (UID precondition) mean the pod is gone.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::Eviction as PolicyEviction;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta, Preconditions};
use kube::api::{Api, PostParams};
use kube_dmem_crds::REASON_EVICTION_BLOCKED;
use tracing::warn;

use super::{ActError, Actor, timed};
use crate::decide::chain;
use crate::decide::remediation::{Eviction, EvictionOutcome};

impl Actor {
    pub(super) async fn evict(&self, eviction: &Eviction) -> EvictionOutcome {
        let pod = format!("{}/{}", eviction.pod.namespace, eviction.pod.name);
        let api: Api<Pod> = Api::namespaced(self.eviction_client.clone(), &eviction.pod.namespace);
        // The UID precondition keeps a same-named replacement (StatefulSet) from being evicted.
        // Posted as a typed policy/v1 Eviction rather than through `Api::evict`: kube 5.0.0
        // serializes that body's options as `delete_options`, which the API server ignores as an
        // unknown field, silently dropping the precondition.
        let body = PolicyEviction {
            metadata: ObjectMeta {
                name: Some(eviction.pod.name.clone()),
                namespace: Some(eviction.pod.namespace.clone()),
                ..ObjectMeta::default()
            },
            delete_options: Some(DeleteOptions {
                preconditions: Some(Preconditions {
                    uid: Some(eviction.pod.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteOptions::default()
            }),
        };
        let post = PostParams::default();
        let call = api.create_subresource::<_, kube::core::Status>(
            "eviction",
            &eviction.pod.name,
            &post,
            &body,
        );
        match timed("EvictPod", &pod, call).await {
            Ok(Ok(_)) => EvictionOutcome::Evicted,
            Ok(Err(kube::Error::Api(s))) if s.code == 429 => {
                warn!(pod = %pod, quota = %eviction.quota, message = %s.message, "Eviction refused, will retry");
                EvictionOutcome::Refused {
                    reason: REASON_EVICTION_BLOCKED,
                    message: s.message.clone(),
                }
            }
            Ok(Err(kube::Error::Api(s))) if s.code == 404 || s.code == 409 => EvictionOutcome::Gone,
            Ok(Err(source)) => self.refused(ActError::EvictPod { pod, source }),
            Err(err) => self.refused(err),
        }
    }

    fn refused(&self, err: ActError) -> EvictionOutcome {
        let message = chain(&err);
        let reason = err.reason();
        self.record::<()>(Err(err));
        EvictionOutcome::Refused { reason, message }
    }
}
