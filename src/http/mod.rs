//! The HTTP API: routes, shared state, authentication and serving.

mod download;
mod error;
mod extract;
mod form;
mod framing;
mod observe;
mod openapi;
mod range;
mod recipients;
mod share;
mod upload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

pub use error::ApiError;

use crate::auth::{ApiKeys, Authenticator, PresentedCredentials};
use crate::crypto::data_key::DataKey;
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
    /// Longest pause of a client inside a body: sending an upload, or taking a download.
    pub body_idle_timeout: Duration,
    /// Time a request body may take before [`Self::body_min_rate`] applies.
    pub body_grace: Duration,
    /// Slowest average rate, in bytes per second, at which a request body may arrive once
    /// [`Self::body_grace`] is spent: each byte buys `1 / rate` seconds more (0: no minimum).
    pub body_min_rate: u64,
    /// Uploads and downloads served at once; more get 503.
    pub max_concurrent_transfers: usize,
    /// Wrong credentials allowed per client address and minute before 429 (0: no limit).
    pub auth_failures_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_public_keys_bytes: 64 * 1024,
            max_recipients: 100,
            max_upload_bytes: None,
            max_download_body_bytes: 64 * 1024,
            body_idle_timeout: Duration::from_secs(60),
            body_grace: Duration::from_secs(20),
            body_min_rate: 500,
            max_concurrent_transfers: 256,
            auth_failures_per_minute: 20,
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
    /// The proxy's RSA keys (current and retired) and static key; replaced whole on reload.
    pub keys: Arc<arc_swap::ArcSwap<ProxyKeys>>,
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
    /// One permit per upload or download in progress.
    pub transfers: Arc<Semaphore>,
    /// Set when shutdown starts, so that /readyz tells balancers to stop sending.
    pub draining: Arc<AtomicBool>,
}

impl AppState {
    /// State for a proxy with these keys, storage, API keys and policies.
    pub fn new(
        keys: ProxyKeys,
        storage: Storage,
        api_keys: ApiKeys,
        limits: Limits,
        upload_policy: UploadPolicy,
    ) -> Self {
        Self {
            keys: Arc::new(arc_swap::ArcSwap::from_pointee(keys)),
            storage: Arc::new(storage),
            auth: Arc::new(Authenticator::new(
                api_keys,
                limits.auth_failures_per_minute,
            )),
            transfers: Arc::new(Semaphore::new(limits.max_concurrent_transfers)),
            limits,
            upload_policy,
            metrics: Arc::default(),
            draining: Arc::default(),
        }
    }

    /// Turns /readyz not-ready, then waits until no transfer is in flight or `deadline` passes.
    /// Requests keep being served meanwhile: a balancer needs a few health checks to notice.
    pub async fn drain(&self, deadline: Instant) {
        self.draining.store(true, Ordering::Relaxed);
        while self.transfers.available_permits() < self.limits.max_concurrent_transfers
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Unwraps a wrapped key with the current or a retired private key, counting which opened it.
    pub fn unwrap_key(&self, wrapped: &str) -> Result<DataKey, ApiError> {
        let keys = self.keys.load();
        let unwrapped = keys.unwrap_key(wrapped).map_err(ApiError::Key)?;
        self.metrics
            .key_unwrapped(unwrapped.fingerprint, unwrapped.role.as_str());
        Ok(unwrapped.data_key)
    }

    /// A transfer slot, or 503 when all are taken; hold it until the transfer ends.
    pub fn transfer_permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.transfers
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Busy {
                limit: self.limits.max_concurrent_transfers,
            })
    }
}

/// The full application router, `/metrics` included.
pub fn router(state: AppState) -> Router {
    routes(state, true)
}

/// The application router without `/metrics`, which a listener of its own serves
/// ([`metrics_router`]).
pub fn api_router(state: AppState) -> Router {
    routes(state, false)
}

/// Only `GET /metrics`, for a listener off the API network (`METRICS_ADDR`).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

fn routes(state: AppState, with_metrics: bool) -> Router {
    let mut router = Router::new()
        .route("/key/public", get(public_key))
        .route("/upload/{container}/{*blob}", post(upload::upload))
        .route("/download/{container}/{*blob}", get(download::download))
        .route("/share/{container}/{*blob}", post(share::share))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_auth))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if with_metrics {
        router = router.route("/metrics", get(metrics));
    }
    router
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

/// Connection-level limits against slow or oversized requests.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time a client has to send the request line and headers.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) in bytes; larger gets 431.
    pub max_header_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 128 * 1024,
        }
    }
}

/// Serves `router` on `listener` over plain HTTP/1.1 until `shutdown` completes, then stops
/// accepting and lets requests in flight finish until the deadline that `shutdown` returned.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = Instant> + Send + 'static,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    serve_on(listener, None, router, shutdown, limits).await
}

/// Like [`serve`], over TLS: HTTP/2 when the client offers it by ALPN, else HTTP/1.1.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = Instant> + Send + 'static,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    serve_on(listener, Some(acceptor), router, shutdown, limits).await
}

/// The HTTP/1.1 and HTTP/2 connection settings, from the same limits.
struct Protocols {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(limits: ConnectionLimits) -> Self {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192));
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        // HTTP/2 has no header read timeout: the TLS handshake gets that time instead, and a
        // peer that stops answering pings for as long is dropped.
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(MAX_HTTP2_STREAMS)
            .keep_alive_interval(limits.header_read_timeout)
            .keep_alive_timeout(limits.header_read_timeout);
        Self { http1, http2 }
    }
}

/// A connection's byte stream: plain TCP or TLS over it.
trait Transport: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Transport for T {}

/// The connection ready for HTTP, and whether it speaks HTTP/2; `None` when the TLS handshake
/// failed or took longer than the header read timeout.
async fn handshake(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ConnectionLimits,
) -> Option<(Box<dyn Transport>, bool)> {
    let Some(acceptor) = tls else {
        return Some((Box::new(tcp), false));
    };
    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            Some((Box::new(stream), http2))
        }
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// Requests one HTTP/2 connection may have open at once; transfers are limited globally too.
const MAX_HTTP2_STREAMS: u32 = 100;

async fn serve_on(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    shutdown: impl Future<Output = Instant> + Send + 'static,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    let protocols = Arc::new(Protocols::new(limits));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    let deadline = loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: wait, do not spin.
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            deadline = &mut shutdown => break deadline,
        };
        // Small answers (range reads, errors) must not wait for a delayed ACK.
        let _ = tcp.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone().map_request(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        ));
        // Held through the handshake too, so that shutdown waits for it.
        let watcher = graceful.watcher();
        let protocols = protocols.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let Some((io, http2)) = handshake(tcp, peer, tls, limits).await else {
                return;
            };
            let io = TokioIo::new(io);
            let _ = if http2 {
                watcher
                    .watch(protocols.http2.serve_connection(io, service))
                    .await
            } else {
                watcher
                    .watch(protocols.http1.serve_connection(io, service))
                    .await
            };
        });
    };
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep_until(deadline) => {
            tracing::warn!("transfers still running after the grace period; stopping");
        }
    }
    Ok(())
}

async fn require_auth(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
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
    match state.auth.verify(presented, peer.ip()).await {
        Ok(_) => next.run(request).await,
        Err(error) => {
            state.metrics.auth_failed();
            ApiError::from(error).into_response()
        }
    }
}

async fn public_key(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "public_key": state.keys.load().private_key.public_key().to_pem() }))
}

/// Prometheus metrics. Unauthenticated, like the health probes: they hold counts by route
/// template only (no blob names, no secrets), and scrapers rarely send custom headers.
async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining", "detail": "shutting down; finishing transfers in flight" })),
        )
            .into_response();
    }
    match state.storage.check_reachable().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "detail": error.to_string() })),
        )
            .into_response(),
    }
}
