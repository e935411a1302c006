//! EDGE: one NRI connection: the multiplexed Unix socket, the plugin's ttrpc server on mux
//! connection 1 (the runtime calls us) and a ttrpc client on mux connection 2 (we call the
//! runtime), over the pure framing of [`super::decide::frame`].
//!
//! Why not the `ttrpc` crate: it builds on rust-protobuf (a second protobuf runtime next to prost)
//! and its client and server each own a socket file descriptor, so serving and calling over NRI's
//! one multiplexed socket would need socket pairs and descriptor plumbing. ttrpc's unary protocol
//! is a 10-byte header and two small envelopes, so this file speaks it directly over prost.
//!
//! Each request runs in its own task, so a slow answer never holds up the next request or the
//! responses to our own calls. All writes go through one writer task, whole messages at a time,
//! so frames of different messages never interleave.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::decide::frame::{
    self, FrameError, MuxDecoder, PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN, TTRPC_REQUEST,
    TTRPC_RESPONSE, TtrpcDecoder, TtrpcHeader,
};
use super::proto::{PLUGIN_SERVICE, ttrpc};

/// gRPC status code `INVALID_ARGUMENT`.
pub const INVALID_ARGUMENT: i32 = 3;
/// gRPC status code `UNIMPLEMENTED`.
pub const UNIMPLEMENTED: i32 = 12;
/// gRPC status code `INTERNAL`.
pub const INTERNAL: i32 = 13;

/// Whole messages queued for the writer; a handful, as each request task waits on its own send.
const WRITE_QUEUE: usize = 64;

/// A failed call's status, as ttrpc carries it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("status {code}: {message}")]
pub struct RpcStatus {
    /// gRPC status code.
    pub code: i32,
    /// Human-readable message.
    pub message: String,
}

/// What serves the plugin's side: one call per method name, payload in, payload out.
#[tonic::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles `method` of the plugin service with the encoded request `payload`.
    async fn handle(&self, method: &str, payload: &[u8]) -> Result<Vec<u8>, RpcStatus>;
}

/// Why the connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Reading the socket failed.
    #[error("reading the NRI socket")]
    Read(#[source] std::io::Error),
    /// Writing the socket failed.
    #[error("writing the NRI socket")]
    Write(#[source] std::io::Error),
    /// The peer sent something that is not NRI.
    #[error("the NRI peer broke the framing")]
    Frame(#[from] FrameError),
}

impl ConnError {
    /// PascalCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Read(_) => "NriReadFailed",
            Self::Write(_) => "NriWriteFailed",
            Self::Frame(e) => e.reason(),
        }
    }
}

/// Why a call to the runtime failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The connection closed before the answer came.
    #[error("the NRI connection closed during {0}")]
    Closed(&'static str),
    /// No answer within the call's timeout.
    #[error("{0} got no answer within {1:?}")]
    TimedOut(&'static str, Duration),
    /// The runtime answered with an error.
    #[error("the runtime refused {method}")]
    Refused {
        /// The method.
        method: &'static str,
        /// The runtime's status.
        #[source]
        status: RpcStatus,
    },
    /// The answer did not decode.
    #[error("undecodable answer to {0}")]
    Decode(&'static str, #[source] prost::DecodeError),
    /// The request could not be framed.
    #[error("framing {0}")]
    Encode(&'static str, #[source] FrameError),
}

impl CallError {
    /// PascalCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Closed(_) => "NriConnectionClosed",
            Self::TimedOut(..) => "NriCallTimedOut",
            Self::Refused { .. } => "NriCallRefused",
            Self::Decode(..) => "NriDecodeFailed",
            Self::Encode(..) => "NriMessageTooLong",
        }
    }
}

type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<ttrpc::Response>>>>;

/// Calls the runtime's service over mux connection 2.
#[derive(Clone)]
pub struct Client {
    out: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    next_stream: Arc<AtomicU32>,
}

impl Client {
    /// Calls `service`/`method` and decodes the answer, waiting at most `timeout`.
    pub async fn call<Resp: Message + Default>(
        &self,
        service: &str,
        method: &'static str,
        request: &impl Message,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let stream = self.next_stream.fetch_add(2, Ordering::Relaxed);
        let envelope = ttrpc::Request {
            service: service.to_owned(),
            method: method.to_owned(),
            payload: request.encode_to_vec(),
            timeout_nano: i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX),
            metadata: Vec::new(),
        };
        let header = TtrpcHeader {
            stream,
            kind: TTRPC_REQUEST,
            flags: 0,
        };
        let bytes = framed(RUNTIME_SERVICE_CONN, header, &envelope.encode_to_vec())
            .map_err(|e| CallError::Encode(method, e))?;
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(stream, tx);
        let answer = async {
            self.out
                .send(bytes)
                .await
                .map_err(|_| CallError::Closed(method))?;
            rx.await.map_err(|_| CallError::Closed(method))
        };
        let response = match tokio::time::timeout(timeout, answer).await {
            Ok(r) => r,
            Err(_) => Err(CallError::TimedOut(method, timeout)),
        };
        lock(&self.pending).remove(&stream);
        let response = response?;
        if let Some(status) = response.status.filter(|s| s.code != 0) {
            return Err(CallError::Refused {
                method,
                status: RpcStatus {
                    code: status.code,
                    message: status.message,
                },
            });
        }
        Resp::decode(response.payload.as_slice()).map_err(|e| CallError::Decode(method, e))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock leaves a plain map behind, still consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One ttrpc message for mux connection `conn`, framed for the trunk.
fn framed(conn: u32, header: TtrpcHeader, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut message = Vec::with_capacity(frame::TTRPC_HEADER_LEN + payload.len());
    frame::encode_ttrpc(header, payload, &mut message)?;
    let mut out = Vec::with_capacity(message.len() + frame::MUX_HEADER_LEN);
    frame::encode_mux(conn, &message, &mut out);
    Ok(out)
}

/// Starts serving `handler` on `stream` and returns the client for the runtime's service and the
/// future that drives the connection; it ends when the runtime closes the socket or breaks the
/// protocol. Dropping the future closes the connection.
pub fn open<H: Handler>(
    stream: UnixStream,
    handler: Arc<H>,
) -> (
    Client,
    impl std::future::Future<Output = Result<(), ConnError>> + Send,
) {
    let (rd, wr) = stream.into_split();
    let (out, queue) = mpsc::channel(WRITE_QUEUE);
    let client = Client {
        out: out.clone(),
        pending: Arc::default(),
        next_stream: Arc::new(AtomicU32::new(1)),
    };
    let pending = client.pending.clone();
    let driver = async move {
        let ended = tokio::select! {
            r = read_loop(rd, handler, out, pending.clone()) => r,
            r = write_loop(wr, queue) => r,
        };
        // Calls still waiting learn at once that no answer will come.
        lock(&pending).clear();
        ended
    };
    (client, driver)
}

async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut queue: mpsc::Receiver<Vec<u8>>,
) -> Result<(), ConnError> {
    while let Some(bytes) = queue.recv().await {
        wr.write_all(&bytes).await.map_err(ConnError::Write)?;
    }
    Ok(())
}

async fn read_loop<H: Handler>(
    mut rd: OwnedReadHalf,
    handler: Arc<H>,
    out: mpsc::Sender<Vec<u8>>,
    pending: Pending,
) -> Result<(), ConnError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut mux = MuxDecoder::default();
    let mut served = TtrpcDecoder::default();
    let mut answers = TtrpcDecoder::default();
    loop {
        let n = rd.read(&mut buf).await.map_err(ConnError::Read)?;
        if n == 0 {
            return Ok(());
        }
        mux.push(&buf[..n]);
        while let Some((conn, payload)) = mux.next_frame()? {
            match conn {
                PLUGIN_SERVICE_CONN => {
                    served.push(&payload);
                    while let Some((header, body)) = served.next_message()? {
                        if header.kind == TTRPC_REQUEST {
                            tokio::spawn(serve(handler.clone(), header.stream, body, out.clone()));
                        } else {
                            debug!(kind = header.kind, "Unexpected ttrpc message type, dropped");
                        }
                    }
                }
                RUNTIME_SERVICE_CONN => {
                    answers.push(&payload);
                    while let Some((header, body)) = answers.next_message()? {
                        let waiter = lock(&pending).remove(&header.stream);
                        match (header.kind, waiter) {
                            (TTRPC_RESPONSE, Some(waiter)) => {
                                let response = ttrpc::Response::decode(body.as_slice())
                                    .unwrap_or_else(|e| ttrpc::Response {
                                        status: Some(ttrpc::Status {
                                            code: INTERNAL,
                                            message: format!("undecodable ttrpc response: {e}"),
                                        }),
                                        payload: Vec::new(),
                                    });
                                let _ = waiter.send(response);
                            }
                            _ => debug!(stream = header.stream, "Unmatched ttrpc answer, dropped"),
                        }
                    }
                }
                other => debug!(conn = other, "Frame on an unknown mux connection, dropped"),
            }
        }
    }
}

/// Answers one request on mux connection 1.
async fn serve<H: Handler>(
    handler: Arc<H>,
    stream: u32,
    body: Vec<u8>,
    out: mpsc::Sender<Vec<u8>>,
) {
    let result = match ttrpc::Request::decode(body.as_slice()) {
        Err(e) => Err(RpcStatus {
            code: INVALID_ARGUMENT,
            message: format!("undecodable ttrpc request: {e}"),
        }),
        Ok(req) if req.service != PLUGIN_SERVICE => Err(RpcStatus {
            code: UNIMPLEMENTED,
            message: format!("service {} is not served here", req.service),
        }),
        Ok(req) => handler.handle(&req.method, &req.payload).await,
    };
    let response = match result {
        Ok(payload) => ttrpc::Response {
            status: Some(ttrpc::Status::default()),
            payload,
        },
        Err(status) => ttrpc::Response {
            status: Some(ttrpc::Status {
                code: status.code,
                message: status.message,
            }),
            payload: Vec::new(),
        },
    };
    let header = TtrpcHeader {
        stream,
        kind: TTRPC_RESPONSE,
        flags: 0,
    };
    match framed(PLUGIN_SERVICE_CONN, header, &response.encode_to_vec()) {
        // A closed queue means the connection is gone; the runtime will not wait for this answer.
        Ok(bytes) => {
            let _ = out.send(bytes).await;
        }
        Err(e) => tracing::warn!(
            reason = e.reason(),
            error = &e as &dyn std::error::Error,
            "NRI answer too large, dropped"
        ),
    }
}
