//! The middleware that checks the API credentials of every protected route.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::auth::PresentedCredentials;

/// Lets the request through when its credential headers are accepted; answers the error otherwise.
pub async fn require_auth(
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
