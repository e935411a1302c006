//! EDGE (HTTP): the admin server on its own port: `/live` (the process serves), `/ready` (what the
//! binary's [`Readiness`] says) and `/metrics` (the binary's Prometheus registry, OpenMetrics text).
//! Each binary keeps its own readiness rule; the server is shared.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// What `/ready` reports; the binary decides when it is ready.
pub trait Readiness: Send + Sync {
    /// Whether the process should receive traffic and count as rolled out.
    fn is_ready(&self) -> bool;
}

/// Why the admin server could not run.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address could not be bound.
    #[error("could not bind the admin server to {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("admin server failed")]
    Serve(#[source] std::io::Error),
}

impl AdminError {
    /// PascalCase reason for logs and the `reason` metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Bind { .. } => "BindAdminServer",
            Self::Serve(_) => "ServeAdmin",
        }
    }

    /// A taken or forbidden port stays so until the configuration changes.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Bind { .. })
    }
}

#[derive(Clone)]
struct AdminState {
    readiness: Arc<dyn Readiness>,
    registry: Arc<Registry>,
}

/// The admin routes, separate from binding so tests can drive them.
pub fn router(readiness: Arc<dyn Readiness>, registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/live", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(AdminState {
            readiness,
            registry,
        })
}

/// Binds the admin address; separate from [`serve`] so a taken port fails start-up.
///
/// # Errors
/// [`AdminError::Bind`].
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, AdminError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })
}

/// Serves until `stop` is cancelled.
///
/// # Errors
/// [`AdminError::Serve`] when serving fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    readiness: Arc<dyn Readiness>,
    registry: Arc<Registry>,
    stop: CancellationToken,
) -> Result<(), AdminError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(addr = %addr, "Admin server listening");
    }
    axum::serve(listener, router(readiness, registry))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .map_err(AdminError::Serve)
}

async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            String::new(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::body::Body;
    use axum::http::Request;
    use prometheus_client::metrics::counter::Counter;
    use tower::ServiceExt as _;

    use super::*;

    struct Flag(AtomicBool);

    impl Readiness for Flag {
        fn is_ready(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }

    async fn get(router: &Router, path: &str) -> (StatusCode, String) {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn live_ready_and_metrics() {
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register("demo", "A demo counter", counter.clone());
        counter.inc();
        let router = router(flag.clone(), Arc::new(registry));
        assert_eq!(get(&router, "/live").await, (StatusCode::OK, "ok".into()));
        assert_eq!(
            get(&router, "/ready").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        flag.0.store(true, Ordering::SeqCst);
        assert_eq!(
            get(&router, "/ready").await,
            (StatusCode::OK, "ready".into())
        );
        let (status, text) = get(&router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("demo_total 1"), "{text}");
        assert_eq!(get(&router, "/nope").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_taken_port_is_a_permanent_bind_error() {
        let first = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = first.local_addr().expect("addr");
        let err = bind(addr).await.expect_err("taken");
        assert_eq!(err.reason(), "BindAdminServer");
        assert!(err.is_permanent());
    }
}
