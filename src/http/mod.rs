//! The HTTP API: the routes here; the shared state ([`AppState`]), the accept loop ([`serve`]),
//! the auth middleware, the body pace limit, probes and the handlers in submodules.

mod auth;
mod body_timeout;
mod download;
mod error;
mod extract;
mod form;
mod framing;
mod observe;
mod openapi;
mod probes;
mod range;
mod recipients;
mod serve;
mod share;
mod state;
mod upload;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::middleware;
use axum::response::Html;
use axum::routing::{get, post};
use serde_json::json;

pub use crate::config::{ConnectionLimits, Limits, UploadPolicy};
pub use error::ApiError;
pub use serve::{serve, serve_tls};
pub use state::AppState;

use auth::require_auth;
use probes::{healthz, metrics, readyz};

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
        .layer(middleware::from_fn_with_state(
            state.clone(),
            body_timeout::limit_body_pace,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe::observe))
        .with_state(state)
}

async fn public_key(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "public_key": state.keys.load().private_key.public_key().to_pem() }))
}
