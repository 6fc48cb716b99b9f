//! The HTTP API: routes, shared state, authentication and serving.

mod download;
mod error;
mod extract;
mod observe;
mod openapi;
mod range;
mod upload;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;

pub use error::ApiError;

use crate::auth::{Authenticator, PresentedCredentials};
use crate::keys::ProxyKeys;
use crate::metrics::Metrics;
use crate::storage::Storage;
use crate::transfer::BlobFormat;

/// Limits on what a request may carry.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest `public-keys` form field, in bytes.
    pub max_public_keys_bytes: usize,
    /// Most recipients in one upload.
    pub max_recipients: usize,
    /// Largest plaintext upload, in bytes; `None` for no limit.
    pub max_upload_bytes: Option<u64>,
    /// Largest body of a download request (which carries only the wrapped key).
    pub max_download_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_public_keys_bytes: 64 * 1024,
            max_recipients: 100,
            max_upload_bytes: None,
            max_download_body_bytes: 64 * 1024,
        }
    }
}

/// How uploads are encrypted.
#[derive(Debug, Clone, Default)]
pub struct UploadPolicy {
    /// Encrypt every upload with `symmetric_key.key`, as the original did, instead of a fresh key.
    pub static_data_key: bool,
    /// The format new blobs are written in.
    pub format: BlobFormat,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The proxy's RSA key pair and static key.
    pub keys: Arc<ProxyKeys>,
    /// Blob storage.
    pub storage: Arc<Storage>,
    /// The API-key check.
    pub auth: Arc<Authenticator>,
    /// Request limits.
    pub limits: Limits,
    /// Upload encryption choices.
    pub upload_policy: UploadPolicy,
    /// Request counters and histograms.
    pub metrics: Arc<Metrics>,
}

/// The full application router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/key/public", get(public_key))
        .route("/upload/{container}/{*blob}", post(upload::upload))
        .route("/download/{container}/{*blob}", get(download::download))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_auth))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|State(state): State<AppState>| async move { Json(openapi::document(&state.limits)) }),
        )
        .route("/docs", get(|| async { Html(openapi::DOCS_PAGE) }))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(state.clone(), observe::observe))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes, then lets requests in flight
/// finish for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    };
    // Small answers (range reads, errors) must not wait for a delayed ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, router).with_graceful_shutdown(signal);
    let deadline = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server.into_future() => result,
        () = deadline => {
            tracing::warn!(grace_secs = grace.as_secs(), "transfers still running after the grace period; stopping");
            Ok(())
        }
    }
}

async fn require_auth(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    };
    let presented = PresentedCredentials {
        decryption_key: header("x-decryption-key"),
        salt: header("x-salt"),
        comparison_key: header("x-comparison-key"),
    };
    match state.auth.verify(presented).await {
        Ok(()) => next.run(request).await,
        Err(error) => {
            state.metrics.auth_failed();
            ApiError::from(error).into_response()
        }
    }
}

async fn public_key(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "public_key": state.keys.private_key.public_key().to_pem() }))
}

/// Prometheus metrics. Unauthenticated, like the health probes: they hold counts by route
/// template only (no blob names, no secrets), and scrapers rarely send custom headers.
async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.storage.check_reachable().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "detail": error.to_string() })),
        )
            .into_response(),
    }
}
