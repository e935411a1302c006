//! A kubelet test double built from the same protos, behaving like the kubelet's device manager in
//! `docs/kubelet.md` §3: it serves `Registration` on `<dir>/kubelet.sock`; inside `Register` it
//! checks the version and resource name, dials the plugin's socket back (10 s), calls
//! `GetDevicePluginOptions`, then (in a task, as the kubelet does) runs `ListAndWatch` and records
//! every message. It can call the plugin's other RPCs and simulate a kubelet restart; PodResources
//! `List` comes from the double shared with the agent-loop tests (`tests/pod_resources_double`).

use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube_dmem_device_plugin::kubelet::proto::v1beta1::device_plugin_client::DevicePluginClient;
use kube_dmem_device_plugin::kubelet::proto::v1beta1::registration_server::{
    Registration, RegistrationServer,
};
use kube_dmem_device_plugin::kubelet::proto::v1beta1::{
    DevicePluginOptions, Empty, ListAndWatchResponse, RegisterRequest,
};
use kube_dmem_device_plugin::kubelet::uds;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

/// The kubelet's dial-back timeout.
const DIAL_BACK: Duration = Duration::from_secs(10);
/// Bound on every wait in tests: generous, only there so a broken test fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(10);

/// What the double observed, in order.
#[derive(Debug, Clone)]
pub enum Event {
    /// `Register` succeeded: dial-back and `GetDevicePluginOptions` worked.
    Registered {
        endpoint: String,
        resource: String,
        options: DevicePluginOptions,
    },
    /// `Register` was called and hangs (see [`KubeletDouble::hang_register`]).
    Hanging { endpoint: String },
    /// `Register` was refused with this status code.
    Rejected { code: tonic::Code },
    /// A `ListAndWatch` message from the plugin at `endpoint`.
    Devices {
        endpoint: String,
        response: ListAndWatchResponse,
    },
    /// The `ListAndWatch` stream from `endpoint` ended (`None`) or failed.
    StreamEnded {
        endpoint: String,
        error: Option<tonic::Code>,
    },
}

struct Shared {
    dir: PathBuf,
    events: mpsc::UnboundedSender<Event>,
    /// Endpoint and client of the latest successful registration.
    current: Mutex<Option<(String, DevicePluginClient<Channel>)>>,
    /// ListAndWatch readers; aborted on a simulated restart (the kubelet process dies).
    streams: Mutex<Vec<JoinHandle<()>>>,
    /// Refuse this many further `Register` calls with `Unavailable`.
    reject_next: Mutex<u32>,
    /// Never answer `Register` (a kubelet stuck in its dial-back).
    hang: Mutex<bool>,
}

struct RegistrationDouble(Arc<Shared>);

#[tonic::async_trait]
impl Registration for RegistrationDouble {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let shared = &self.0;
        let req = request.into_inner();
        let reject = |code: tonic::Code, msg: String| {
            let _ = shared.events.send(Event::Rejected { code });
            Err(Status::new(code, msg))
        };
        {
            let mut left = shared.reject_next.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                drop(left);
                return reject(
                    tonic::Code::Unavailable,
                    "kubelet double told to refuse".into(),
                );
            }
        }
        if *shared.hang.lock().unwrap() {
            let _ = shared.events.send(Event::Hanging {
                endpoint: req.endpoint.clone(),
            });
            std::future::pending::<()>().await;
        }
        if req.version != "v1beta1" {
            return reject(
                tonic::Code::InvalidArgument,
                format!("unsupported version {}", req.version),
            );
        }
        let extended =
            req.resource_name.contains('/') && !req.resource_name.starts_with("kubernetes.io/");
        if !extended {
            return reject(
                tonic::Code::InvalidArgument,
                format!("not extended: {}", req.resource_name),
            );
        }
        let path = shared.dir.join(&req.endpoint);
        let channel = match tokio::time::timeout(DIAL_BACK, uds::connect(&path, DIAL_BACK)).await {
            Ok(Ok(channel)) => channel,
            _ => {
                return reject(
                    tonic::Code::Unavailable,
                    format!("cannot dial {}", path.display()),
                );
            }
        };
        let mut client = DevicePluginClient::new(channel);
        let options = client
            .get_device_plugin_options(Empty {})
            .await?
            .into_inner();
        *shared.current.lock().unwrap() = Some((req.endpoint.clone(), client.clone()));
        let _ = shared.events.send(Event::Registered {
            endpoint: req.endpoint.clone(),
            resource: req.resource_name.clone(),
            options,
        });
        // Like the kubelet: the stream runs after Register returned, in its own task.
        let (events, endpoint) = (shared.events.clone(), req.endpoint);
        let reader = tokio::spawn(async move {
            let mut stream = match client.list_and_watch(Empty {}).await {
                Ok(stream) => stream.into_inner(),
                Err(status) => {
                    let _ = events.send(Event::StreamEnded {
                        endpoint,
                        error: Some(status.code()),
                    });
                    return;
                }
            };
            let error = loop {
                match stream.message().await {
                    Ok(Some(response)) => {
                        let _ = events.send(Event::Devices {
                            endpoint: endpoint.clone(),
                            response,
                        });
                    }
                    Ok(None) => break None,
                    Err(status) => break Some(status.code()),
                }
            };
            let _ = events.send(Event::StreamEnded { endpoint, error });
        });
        shared.streams.lock().unwrap().push(reader);
        Ok(Response::new(Empty {}))
    }
}

/// The kubelet stand-in. Dropping it stops its servers.
pub struct KubeletDouble {
    shared: Arc<Shared>,
    events: mpsc::UnboundedReceiver<Event>,
    server: Option<(CancellationToken, JoinHandle<()>)>,
}

impl KubeletDouble {
    /// Starts serving `Registration` on `<dir>/kubelet.sock`.
    pub fn start(dir: &Path) -> Self {
        let mut double = Self::new(dir);
        double.serve();
        double
    }

    /// A kubelet that is not running yet; [`KubeletDouble::serve`] starts it.
    pub fn new(dir: &Path) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            events: tx,
            current: Mutex::new(None),
            streams: Mutex::new(Vec::new()),
            reject_next: Mutex::new(0),
            hang: Mutex::new(false),
        });
        Self {
            shared,
            events,
            server: None,
        }
    }

    /// Binds `kubelet.sock` and serves `Registration` on it.
    pub fn serve(&mut self) {
        let incoming = uds::bind(&self.shared.dir.join("kubelet.sock")).expect("bind kubelet.sock");
        let stop = CancellationToken::new();
        let service = RegistrationServer::new(RegistrationDouble(self.shared.clone()));
        let serve = Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned());
        let task = tokio::spawn(async move { serve.await.expect("kubelet double server") });
        self.server = Some((stop, task));
    }

    fn stop_server(&mut self) {
        if let Some((stop, task)) = self.server.take() {
            stop.cancel();
            task.abort();
        }
        for reader in self.shared.streams.lock().unwrap().drain(..) {
            reader.abort();
        }
        *self.shared.current.lock().unwrap() = None;
    }

    /// Refuses the next `n` `Register` calls with `Unavailable`.
    pub fn reject_next(&self, n: u32) {
        *self.shared.reject_next.lock().unwrap() = n;
    }

    /// Makes every further `Register` call hang.
    pub fn hang_register(&self) {
        *self.shared.hang.lock().unwrap() = true;
    }

    /// Simulates a kubelet restart: the process dies (server and streams gone), then on start it
    /// deletes every socket in the directory, ours included, and recreates `kubelet.sock`.
    pub fn restart(&mut self) {
        self.stop_server();
        for entry in std::fs::read_dir(&self.shared.dir).expect("read plugin dir") {
            let entry = entry.expect("dir entry");
            if entry.file_type().expect("file type").is_socket() {
                std::fs::remove_file(entry.path()).expect("remove socket");
            }
        }
        self.serve();
    }

    /// The next event, failing the test after [`WAIT`].
    pub async fn next_event(&mut self) -> Event {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("kubelet double: no event in time")
            .expect("kubelet double: event channel closed")
    }

    /// The first `StreamEnded` event within `window`, if any. Asserting that something does *not*
    /// happen needs a window: a stream that ends because of what a test just did ends within
    /// milliseconds, so a window of a second is ample and still keeps the test fast.
    pub async fn stream_end_within(&mut self, window: Duration) -> Option<Event> {
        tokio::time::timeout(window, async {
            loop {
                match self.events.recv().await {
                    Some(e @ Event::StreamEnded { .. }) => return Some(e),
                    Some(_) => {}
                    None => return None,
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// Skips events until a registration; returns its endpoint and options.
    pub async fn registered(&mut self) -> (String, String, DevicePluginOptions) {
        loop {
            if let Event::Registered {
                endpoint,
                resource,
                options,
            } = self.next_event().await
            {
                return (endpoint, resource, options);
            }
        }
    }

    /// Skips events until a `ListAndWatch` message; returns its endpoint and devices as (ID, health).
    pub async fn devices(&mut self) -> (String, Vec<(String, String)>) {
        loop {
            if let Event::Devices { endpoint, response } = self.next_event().await {
                let devices = response
                    .devices
                    .into_iter()
                    .map(|d| (d.id, d.health))
                    .collect();
                return (endpoint, devices);
            }
        }
    }

    /// A client to the latest registered plugin, as the kubelet holds it.
    pub fn plugin(&self) -> DevicePluginClient<Channel> {
        self.shared
            .current
            .lock()
            .unwrap()
            .as_ref()
            .expect("no plugin registered")
            .1
            .clone()
    }
}

impl Drop for KubeletDouble {
    fn drop(&mut self) {
        self.stop_server();
    }
}

pub use crate::pod_resources_double::PodResourcesDouble;
