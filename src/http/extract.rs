//! Request pieces parsed and validated before a handler runs.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use super::error::ApiError;
use crate::storage::{BlobName, ContainerName};

/// The `{container}/{blob}` part of an upload or download path, validated.
pub struct BlobPath {
    /// The container.
    pub container: ContainerName,
    /// The blob inside it.
    pub blob: BlobName,
}

impl<S: Send + Sync> FromRequestParts<S> for BlobPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((container, blob)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::BadRequest(format!("invalid path: {rejection}")))?;
        Ok(Self {
            container: ContainerName::parse(&container)?,
            blob: BlobName::parse(&blob)?,
        })
    }
}
