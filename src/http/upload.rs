//! `POST /upload/{container}/{blob}`: a multipart form whose `file` is encrypted as it streams in.

use axum::Json;
use axum::extract::{Request, State};

use super::AppState;
use super::error::ApiError;
use super::extract::BlobPath;
use super::form::FormReader;
use super::recipients::{KeysResponse, PUBLIC_KEYS_FIELD, Recipients, parse_recipients};
use crate::crypto::data_key::DataKey;
use crate::storage::{BlobName, Container, StorageError};
use crate::transfer::BlobWriter;

/// Largest `overwrite` value worth reading.
const MAX_OVERWRITE_BYTES: usize = 64;

/// Encrypts the uploaded file into storage and returns its data key wrapped for each recipient.
pub async fn upload(
    State(state): State<AppState>,
    target: BlobPath,
    request: Request,
) -> Result<Json<KeysResponse>, ApiError> {
    let _transfer = state.transfer_permit()?;
    let container = state.storage.container(&target.container).await?;
    let data_key = if state.upload_policy.static_data_key {
        state.keys.load().symmetric_key.clone()
    } else {
        DataKey::generate().map_err(|e| ApiError::Transfer(e.into()))?
    };
    let form = receive_form(request, &state, &container, &target.blob, &data_key).await?;
    let answer = KeysResponse::wrap(target.blob.as_str(), &data_key, &form.recipients)?;
    // Publishing runs to its end even if the client goes away meanwhile, so that it never stops
    // halfway through a storage operation.
    let UploadForm {
        writer, overwrite, ..
    } = form;
    tokio::spawn(writer.commit(overwrite))
        .await
        .map_err(|e| ApiError::Transfer(StorageError::Unavailable(e.to_string()).into()))??;
    Ok(Json(answer))
}

/// A fully received form: the file is staged, not yet published.
struct UploadForm {
    recipients: Recipients,
    overwrite: bool,
    writer: BlobWriter,
}

/// Reads the form in whatever order its fields come, streaming `file` into a staged blob.
async fn receive_form(
    request: Request,
    state: &AppState,
    container: &Container,
    blob: &BlobName,
    data_key: &DataKey,
) -> Result<UploadForm, ApiError> {
    let (parts, body) = request.into_parts();
    let mut form = FormReader::new(&parts.headers, body)?;
    let limits = &state.limits;
    let mut recipients = None;
    let mut overwrite = None;
    let mut writer: Option<BlobWriter> = None;
    while let Some(mut field) = form.next_field().await? {
        let name = field.name().to_owned();
        let repeated =
            || ApiError::BadRequest(format!("form field {name:?} is given more than once"));
        match name.as_str() {
            PUBLIC_KEYS_FIELD => {
                if recipients.is_some() {
                    return Err(repeated());
                }
                let text = field.text(limits.max_public_keys_bytes).await?;
                recipients = Some(parse_recipients(&text, limits.max_recipients)?);
            }
            "overwrite" => {
                if overwrite.is_some() {
                    return Err(repeated());
                }
                let text = field.text(MAX_OVERWRITE_BYTES).await?;
                overwrite = Some(parse_bool(&text)?);
            }
            "file" => {
                if writer.is_some() {
                    return Err(repeated());
                }
                // Refuse early when the answer is already certain; the commit re-checks atomically.
                if overwrite == Some(false) && container.exists(blob).await? {
                    return Err(StorageError::AlreadyExists.into());
                }
                let mut staged =
                    BlobWriter::start(container, blob, data_key, state.upload_policy.format)
                        .await?;
                while let Some(chunk) = field.chunk().await? {
                    staged.write(&chunk).await?;
                    if let Some(max) = limits.max_upload_bytes
                        && staged.plaintext_len() > max
                    {
                        return Err(ApiError::TooLarge(format!(
                            "the file is larger than the limit of {max} bytes"
                        )));
                    }
                }
                writer = Some(staged);
            }
            // FastAPI ignores fields it does not know; so does blobprox.
            _ => field.skip().await?,
        }
    }
    match (recipients, writer) {
        (Some(recipients), Some(writer)) => Ok(UploadForm {
            recipients,
            overwrite: overwrite.unwrap_or(false),
            writer,
        }),
        (recipients, writer) => {
            let mut missing = Vec::new();
            if recipients.is_none() {
                missing.push(PUBLIC_KEYS_FIELD);
            }
            if writer.is_none() {
                missing.push("file");
            }
            Err(ApiError::MissingFields(missing))
        }
    }
}

/// Parses the `overwrite` field the way form users write booleans.
fn parse_bool(text: &str) -> Result<bool, ApiError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ApiError::BadRequest(format!(
            "overwrite must be one of true/false/1/0/yes/no/on/off, not {text:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_in_any_case() {
        for (text, expected) in [("TRUE", true), ("on", true), (" 0 ", false), ("No", false)] {
            assert_eq!(parse_bool(text).unwrap(), expected);
        }
        assert!(parse_bool("maybe").is_err());
        assert!(parse_bool("").is_err());
    }
}
