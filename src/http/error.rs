//! The one place where failures become HTTP statuses and `{"detail": ...}` bodies.

use axum::Json;
use axum::http::StatusCode;
use axum::http::header::{CONTENT_RANGE, HeaderValue, RETRY_AFTER};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::AuthError;
use crate::crypto::CryptoError;
use crate::storage::StorageError;
use crate::transfer::TransferError;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No route has this path.
    #[error("Not Found")]
    RouteNotFound,
    /// The route exists, the method does not.
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    /// Credentials missing or wrong.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The request is malformed; the text says how.
    #[error("{0}")]
    BadRequest(String),
    /// Required form fields are absent (FastAPI's 422 shape).
    #[error("missing form fields: {0:?}")]
    MissingFields(Vec<&'static str>),
    /// The requested byte range lies past the end of a body of `size` bytes.
    #[error("the requested range is past the end of the {size}-byte file")]
    RangeNotSatisfiable {
        /// Plaintext size.
        size: u64,
    },
    /// Every transfer slot is taken.
    #[error("too many transfers in progress (the limit is {limit}); retry shortly")]
    Busy {
        /// The configured limit.
        limit: usize,
    },
    /// Part of the request is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// The wrapped key cannot be used.
    #[error(transparent)]
    Key(CryptoError),
    /// Storage or the blob formats failed.
    #[error(transparent)]
    Transfer(#[from] TransferError),
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        ApiError::Transfer(TransferError::Storage(error))
    }
}

impl ApiError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Auth(AuthError::Failed) => StatusCode::UNAUTHORIZED,
            ApiError::Auth(AuthError::Throttled { .. }) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Auth(AuthError::Busy) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadRequest(_) | ApiError::Key(_) => StatusCode::BAD_REQUEST,
            ApiError::MissingFields(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Transfer(error) => match error {
                TransferError::WrongKey => StatusCode::FORBIDDEN,
                TransferError::Corrupt(_) => StatusCode::BAD_GATEWAY,
                TransferError::Crypto(_) => StatusCode::INTERNAL_SERVER_ERROR,
                TransferError::Storage(error) => match error {
                    StorageError::ContainerNotFound | StorageError::BlobNotFound => {
                        StatusCode::NOT_FOUND
                    }
                    StorageError::AlreadyExists | StorageError::NameConflict => {
                        StatusCode::CONFLICT
                    }
                    // The blob was replaced between two reads of one download: worth a retry.
                    StorageError::Changed => StatusCode::SERVICE_UNAVAILABLE,
                    StorageError::InvalidName(_) => StatusCode::BAD_REQUEST,
                    StorageError::Unauthorized(_) => StatusCode::BAD_GATEWAY,
                    StorageError::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
                    StorageError::Unavailable(_) | StorageError::Config(_) => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                },
            },
        }
    }

    /// The `detail` text, in the original's words where clients may match on them.
    fn detail(&self) -> String {
        match self {
            ApiError::Transfer(TransferError::Storage(error)) => match error {
                StorageError::ContainerNotFound => "Container not found".into(),
                StorageError::BlobNotFound => "Blob not found".into(),
                StorageError::AlreadyExists => "Blob already exists".into(),
                other => other.to_string(),
            },
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        }
        let body = match &self {
            ApiError::MissingFields(fields) => json!({
                "detail": fields.iter().map(|field| json!({
                    "type": "missing",
                    "loc": ["body", field],
                    "msg": "Field required",
                    "input": null,
                })).collect::<Vec<_>>()
            }),
            other => json!({ "detail": other.detail() }),
        };
        let mut response = (status, Json(body)).into_response();
        if matches!(
            self,
            ApiError::Transfer(TransferError::Storage(
                StorageError::Unavailable(_)
                    | StorageError::Unauthorized(_)
                    | StorageError::Full(_)
            ))
        ) {
            response
                .extensions_mut()
                .insert(super::observe::StorageFailure);
        }
        let retry_after = match self {
            ApiError::Auth(AuthError::Throttled { retry_after_secs }) => Some(retry_after_secs),
            ApiError::Busy { .. }
            | ApiError::Auth(AuthError::Busy)
            | ApiError::Transfer(TransferError::Storage(StorageError::Changed)) => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let ApiError::RangeNotSatisfiable { size } = self {
            let value = HeaderValue::from_str(&format!("bytes */{size}")).expect("ASCII");
            response.headers_mut().insert(CONTENT_RANGE, value);
        }
        response
    }
}
