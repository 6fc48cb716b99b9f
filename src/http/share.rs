//! `POST /share/{container}/{blob}`: wrap the data key of a stored blob for more recipients,
//! without rewriting the blob.

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};

use super::AppState;
use super::download::{BLOB_KEY_FIELD, missing_wrapped_key, wrapped_key_header};
use super::error::ApiError;
use super::extract::BlobPath;
use super::form::{self, FormReader};
use super::recipients::{KeysResponse, PUBLIC_KEYS_FIELD, Recipients, parse_recipients};
use crate::transfer::{OpenedBlob, wrap_for_recipients};

/// Proves the caller's wrapped key opens the blob, then answers it wrapped for each recipient.
pub async fn share(
    State(state): State<AppState>,
    target: BlobPath,
    request: Request,
) -> Result<Json<KeysResponse>, ApiError> {
    let _transfer = state.transfer_permit()?;
    let header_key = wrapped_key_header(request.headers())?;
    let fields = read_fields(request, &state).await?;
    let recipients = fields
        .recipients
        .ok_or(ApiError::MissingFields(vec![PUBLIC_KEYS_FIELD]))?;
    let wrapped = header_key
        .or(fields.wrapped_key)
        .ok_or_else(missing_wrapped_key)?;
    let key = state.unwrap_key(&wrapped)?;
    // Opening checks the key commitment (stream) or the MAC over the whole token (Fernet).
    OpenedBlob::find(
        &state.storage,
        &target.container,
        target.blob.clone(),
        key.clone(),
    )
    .await?;
    let wrapped_keys = wrap_for_recipients(&key, &recipients, &state.keys.load())?;
    Ok(Json(KeysResponse::new(target.blob.as_str(), wrapped_keys)))
}

/// The fields of a share request.
#[derive(Default)]
struct ShareFields {
    recipients: Option<Recipients>,
    wrapped_key: Option<String>,
}

impl ShareFields {
    /// Takes one field by name, refusing a second copy; unknown fields are ignored, as FastAPI does.
    fn take(&mut self, name: &str, text: String, state: &AppState) -> Result<(), ApiError> {
        let repeated =
            || ApiError::BadRequest(format!("form field {name:?} is given more than once"));
        match name {
            PUBLIC_KEYS_FIELD if self.recipients.is_some() => Err(repeated()),
            PUBLIC_KEYS_FIELD => {
                self.recipients = Some(parse_recipients(&text, state.limits.max_recipients)?);
                Ok(())
            }
            BLOB_KEY_FIELD if self.wrapped_key.is_some() => Err(repeated()),
            BLOB_KEY_FIELD => {
                self.wrapped_key = Some(text);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Reads a multipart or urlencoded form; `public-keys` may be a text field or a file part.
async fn read_fields(request: Request, state: &AppState) -> Result<ShareFields, ApiError> {
    let limits = &state.limits;
    let max_field = |name: &str| match name {
        PUBLIC_KEYS_FIELD => limits.max_public_keys_bytes,
        _ => limits.max_download_body_bytes,
    };
    let mut fields = ShareFields::default();
    let (parts, body) = request.into_parts();
    if form::is_multipart(&parts.headers) {
        let mut form = FormReader::new(&parts.headers, body)?;
        while let Some(mut field) = form.next_field().await? {
            let name = field.name().to_owned();
            if name == PUBLIC_KEYS_FIELD || name == BLOB_KEY_FIELD {
                let text = field.text(max_field(&name)).await?;
                fields.take(&name, text, state)?;
            } else {
                field.skip().await?;
            }
        }
        return Ok(fields);
    }
    let max_body = limits.max_public_keys_bytes + limits.max_download_body_bytes;
    let body = axum::body::to_bytes(Body::new(body), max_body)
        .await
        .map_err(|_| {
            ApiError::TooLarge(format!(
                "the request body is larger than {max_body} bytes; a share needs only the \
                 {PUBLIC_KEYS_FIELD} and {BLOB_KEY_FIELD} fields"
            ))
        })?;
    for (name, value) in form_urlencoded::parse(&body) {
        fields.take(&name, value.into_owned(), state)?;
    }
    Ok(fields)
}
