//! The one place where failures become HTTP statuses, headers and `{"detail": ...}` bodies.
//!
//! Each aspect of an answer (status, headers, body, whether storage failed) is one exhaustive
//! match per error type, so an error variant added to any layer does not compile until it is
//! classified here.

use axum::Json;
use axum::http::header::{CONTENT_RANGE, HeaderValue, RETRY_AFTER};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::observe::StorageFailure;
use crate::auth::AuthError;
use crate::crypto::CryptoError;
use crate::storage::{NameError, StorageError};
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
    /// The container or blob name in the path is not one blobprox stores.
    #[error(transparent)]
    InvalidName(#[from] NameError),
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

/// Storage errors reach the answer through the transfer layer, as [`TransferError::Storage`].
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
            ApiError::Auth(error) => auth_status(error),
            ApiError::BadRequest(_) | ApiError::InvalidName(_) => StatusCode::BAD_REQUEST,
            ApiError::MissingFields(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Key(error) => crypto_status(error, true),
            ApiError::Transfer(error) => transfer_status(error),
        }
    }

    /// Adds `Retry-After` to answers worth retrying soon and `Content-Range` to a 416.
    fn add_headers(&self, headers: &mut HeaderMap) {
        if let Some(seconds) = self.retry_after_secs() {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let ApiError::RangeNotSatisfiable { size } = self {
            let value = HeaderValue::from_str(&format!("bytes */{size}")).expect("ASCII");
            headers.insert(CONTENT_RANGE, value);
        }
    }

    /// Seconds after which a retry may succeed, for failures that pass by themselves.
    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::Auth(error) => match error {
                AuthError::Throttled { retry_after_secs } => Some(*retry_after_secs),
                AuthError::Busy => Some(1),
                AuthError::Failed => None,
            },
            ApiError::Busy { .. } => Some(1),
            ApiError::Transfer(error) => match error {
                TransferError::Storage(error) => storage_retry_after_secs(error),
                TransferError::WrongKey
                | TransferError::Corrupt(_)
                | TransferError::Crypto(_)
                | TransferError::TooLarge { .. } => None,
            },
            ApiError::RouteNotFound
            | ApiError::MethodNotAllowed
            | ApiError::BadRequest(_)
            | ApiError::InvalidName(_)
            | ApiError::MissingFields(_)
            | ApiError::RangeNotSatisfiable { .. }
            | ApiError::TooLarge(_)
            | ApiError::Key(_) => None,
        }
    }

    /// The JSON body: FastAPI's list of missing fields, or one `detail` text.
    fn body(&self) -> Value {
        match self {
            ApiError::MissingFields(fields) => json!({
                "detail": fields.iter().map(|field| json!({
                    "type": "missing",
                    "loc": ["body", field],
                    "msg": "Field required",
                    "input": null,
                })).collect::<Vec<_>>()
            }),
            ApiError::Transfer(TransferError::Storage(error)) => {
                json!({ "detail": storage_detail(error) })
            }
            ApiError::RouteNotFound
            | ApiError::MethodNotAllowed
            | ApiError::Auth(_)
            | ApiError::BadRequest(_)
            | ApiError::InvalidName(_)
            | ApiError::RangeNotSatisfiable { .. }
            | ApiError::Busy { .. }
            | ApiError::TooLarge(_)
            | ApiError::Key(_)
            | ApiError::Transfer(_) => json!({ "detail": self.to_string() }),
        }
    }

    /// Whether storage itself failed (rather than refused the request), for the storage error
    /// count.
    fn is_storage_failure(&self) -> bool {
        match self {
            ApiError::Transfer(error) => match error {
                TransferError::Storage(error) => is_storage_failure(error),
                TransferError::WrongKey
                | TransferError::Corrupt(_)
                | TransferError::Crypto(_)
                | TransferError::TooLarge { .. } => false,
            },
            ApiError::RouteNotFound
            | ApiError::MethodNotAllowed
            | ApiError::Auth(_)
            | ApiError::BadRequest(_)
            | ApiError::InvalidName(_)
            | ApiError::MissingFields(_)
            | ApiError::RangeNotSatisfiable { .. }
            | ApiError::Busy { .. }
            | ApiError::TooLarge(_)
            | ApiError::Key(_) => false,
        }
    }
}

fn auth_status(error: &AuthError) -> StatusCode {
    match error {
        AuthError::Failed => StatusCode::UNAUTHORIZED,
        AuthError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
        AuthError::Busy => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The status of a cryptographic failure: the caller's fault whatever the reason when it is a
/// wrapped key the caller sent; else the proxy's own, since what input can cause while moving a
/// blob became `WrongKey` or `Corrupt` on the way into [`TransferError`].
fn crypto_status(error: &CryptoError, in_callers_key: bool) -> StatusCode {
    match error {
        CryptoError::MalformedKey
        | CryptoError::MalformedToken(_)
        | CryptoError::AuthenticationFailed
        | CryptoError::KeyMismatch
        | CryptoError::Corrupt(_)
        | CryptoError::InvalidRsaKey(_)
        | CryptoError::UnwrapFailed
        | CryptoError::Internal => {
            if in_callers_key {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

fn transfer_status(error: &TransferError) -> StatusCode {
    match error {
        TransferError::Storage(error) => storage_status(error),
        TransferError::WrongKey => StatusCode::FORBIDDEN,
        TransferError::Corrupt(_) => StatusCode::BAD_GATEWAY,
        TransferError::Crypto(error) => crypto_status(error, false),
        TransferError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
    }
}

fn storage_status(error: &StorageError) -> StatusCode {
    match error {
        StorageError::ContainerNotFound | StorageError::BlobNotFound => StatusCode::NOT_FOUND,
        StorageError::AlreadyExists | StorageError::NameConflict => StatusCode::CONFLICT,
        // The blob was replaced between two reads of one download: worth a retry.
        StorageError::Changed => StatusCode::SERVICE_UNAVAILABLE,
        StorageError::InvalidName(_) => StatusCode::BAD_REQUEST,
        StorageError::Unauthorized(_) => StatusCode::BAD_GATEWAY,
        StorageError::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
        StorageError::Unavailable(_) | StorageError::Config(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn storage_retry_after_secs(error: &StorageError) -> Option<u64> {
    match error {
        StorageError::Changed => Some(1),
        StorageError::ContainerNotFound
        | StorageError::BlobNotFound
        | StorageError::AlreadyExists
        | StorageError::NameConflict
        | StorageError::InvalidName(_)
        | StorageError::Unauthorized(_)
        | StorageError::Full(_)
        | StorageError::Unavailable(_)
        | StorageError::Config(_) => None,
    }
}

/// The `detail` of a storage error, in the original's words where clients may match on them.
fn storage_detail(error: &StorageError) -> String {
    match error {
        StorageError::ContainerNotFound => "Container not found".into(),
        StorageError::BlobNotFound => "Blob not found".into(),
        StorageError::AlreadyExists => "Blob already exists".into(),
        StorageError::Changed
        | StorageError::InvalidName(_)
        | StorageError::NameConflict
        | StorageError::Full(_)
        | StorageError::Unauthorized(_)
        | StorageError::Unavailable(_)
        | StorageError::Config(_) => error.to_string(),
    }
}

fn is_storage_failure(error: &StorageError) -> bool {
    match error {
        StorageError::Unavailable(_) | StorageError::Unauthorized(_) | StorageError::Full(_) => {
            true
        }
        StorageError::ContainerNotFound
        | StorageError::BlobNotFound
        | StorageError::AlreadyExists
        | StorageError::Changed
        | StorageError::InvalidName(_)
        | StorageError::NameConflict
        | StorageError::Config(_) => false,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        }
        let mut response = (status, Json(self.body())).into_response();
        self.add_headers(response.headers_mut());
        if self.is_storage_failure() {
            response.extensions_mut().insert(StorageFailure);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_keep_the_originals_words_and_retry_hints() {
        let changed = ApiError::from(StorageError::Changed).into_response();
        assert_eq!(changed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(changed.headers()[RETRY_AFTER], "1");
        assert!(changed.extensions().get::<StorageFailure>().is_none());
        let missing = ApiError::from(StorageError::BlobNotFound);
        assert_eq!(missing.body(), json!({ "detail": "Blob not found" }));
        let down = ApiError::from(StorageError::Unavailable("timeout".into())).into_response();
        assert!(down.headers().get(RETRY_AFTER).is_none());
        assert!(down.extensions().get::<StorageFailure>().is_some());
    }

    #[test]
    fn an_upload_past_the_limit_is_too_large_and_names_the_limit() {
        let error = ApiError::from(TransferError::TooLarge { limit: 5 });
        assert_eq!(error.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            error.body(),
            json!({ "detail": "the file is larger than the limit of 5 bytes" })
        );
    }

    #[test]
    fn an_unsatisfiable_range_names_the_size() {
        let response = ApiError::RangeNotSatisfiable { size: 42 }.into_response();
        assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(response.headers()[CONTENT_RANGE], "bytes */42");
    }
}
