//! A kubelet PodResources `List` served from a table over a real unix socket, for tests of the
//! agent loop and its hooks. Only `List` is served; it can be told to refuse calls, as a kubelet
//! that is restarting does, or to hold them, as a kubelet on a loaded node does.
#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use kube_dmem_device_plugin::kubelet::proto::podresources::pod_resources_lister_server::{
    PodResourcesLister, PodResourcesListerServer,
};
use kube_dmem_device_plugin::kubelet::proto::podresources::{
    AllocatableResourcesRequest, AllocatableResourcesResponse, GetPodResourcesRequest,
    GetPodResourcesResponse, ListPodResourcesRequest, ListPodResourcesResponse, PodResources,
};
use kube_dmem_device_plugin::kubelet::uds;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

/// PodResources `List` served from a table.
#[derive(Clone, Default)]
pub struct PodResourcesDouble {
    table: Arc<Mutex<Vec<PodResources>>>,
    refusing: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    /// While `true`, `List` calls wait.
    stalled: Arc<tokio::sync::watch::Sender<bool>>,
    /// Told of every `List` call as it arrives.
    called: Arc<tokio::sync::Notify>,
}

impl PodResourcesDouble {
    /// Serves on `socket` until `stop`.
    pub fn start(socket: &Path, stop: CancellationToken) -> Self {
        let double = Self::default();
        let incoming = uds::bind(socket).expect("bind pod-resources socket");
        let serve = Server::builder()
            .add_service(PodResourcesListerServer::new(double.clone()))
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned());
        tokio::spawn(async move { serve.await.expect("pod-resources double server") });
        double
    }

    /// What `List` answers from now on.
    pub fn set(&self, pods: Vec<PodResources>) {
        *self.table.lock().expect("table") = pods;
    }

    /// Whether `List` fails with `Unavailable` from now on.
    pub fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Whether `List` calls wait (from now on) or go on (those waiting too).
    pub fn stall(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }

    /// Waits until a `List` call arrives.
    pub async fn list_called(&self) {
        self.called.notified().await;
    }

    /// How many `List` calls got an answer.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }
}

#[tonic::async_trait]
impl PodResourcesLister for PodResourcesDouble {
    async fn list(
        &self,
        _request: Request<ListPodResourcesRequest>,
    ) -> Result<Response<ListPodResourcesResponse>, Status> {
        self.called.notify_one();
        let mut stalled = self.stalled.subscribe();
        let _ = stalled.wait_for(|stalled| !*stalled).await;
        if self.refusing.load(Ordering::SeqCst) {
            return Err(Status::unavailable("the kubelet is restarting"));
        }
        let pod_resources = self.table.lock().expect("table").clone();
        self.answered.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(ListPodResourcesResponse { pod_resources }))
    }

    async fn get_allocatable_resources(
        &self,
        _request: Request<AllocatableResourcesRequest>,
    ) -> Result<Response<AllocatableResourcesResponse>, Status> {
        Err(Status::unimplemented("not used"))
    }

    async fn get(
        &self,
        _request: Request<GetPodResourcesRequest>,
    ) -> Result<Response<GetPodResourcesResponse>, Status> {
        Err(Status::unimplemented("not used"))
    }
}
