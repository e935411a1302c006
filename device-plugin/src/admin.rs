//! EDGE (HTTP): the admin server on its own port: `/live`, `/ready`, `/metrics`. Kept alike with
//! the operator's `admin.rs`.
//!
//! `/ready` turns true once both watches (this node's pods, all DmemQuotas) have synced and the
//! first enforcement round has run, so a rollout waits until the agent enforces.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Readiness inputs, shared between the agent loop (writer) and the admin server (reader).
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// Both watches synced and the first round ran.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// The `/ready` answer.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Why the admin server stopped.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address could not be bound.
    #[error("could not bind the admin server to {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
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
    health: Arc<Health>,
    registry: Arc<Registry>,
}

/// The admin routes, separate from binding so tests can drive them.
pub fn router(health: Arc<Health>, registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/live", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(AdminState { health, registry })
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
    health: Arc<Health>,
    registry: Arc<Registry>,
    stop: CancellationToken,
) -> Result<(), AdminError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(addr = %addr, "Admin server listening");
    }
    axum::serve(listener, router(health, registry))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .map_err(AdminError::Serve)
}

async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    if state.health.is_ready() {
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
    use super::*;

    #[test]
    fn readiness_waits_for_the_first_round() {
        let h = Health::default();
        assert!(!h.is_ready());
        h.set_ready();
        assert!(h.is_ready());
    }
}
