//! `POST /upload/{container}/{blob}`: a multipart form whose `file` is encrypted as it streams in.

use axum::Json;
use axum::extract::{Request, State};

use super::AppState;
use super::error::ApiError;
use super::extract::BlobPath;
use super::form::FormReader;
use super::recipients::{KeysResponse, PUBLIC_KEYS_FIELD, Recipients, parse_recipients};
use crate::storage::{BlobName, Container};
use crate::transfer::{DataKeyPolicy, Upload, UploadRules};

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
    let rules = upload_rules(&state);
    let form = receive_form(request, &state, &container, &target.blob, &rules).await?;
    let wrapped_keys = form.upload.wrap_for(&form.recipients, &state.keys.load())?;
    form.upload.publish(form.overwrite).await?;
    Ok(Json(KeysResponse::new(target.blob.as_str(), wrapped_keys)))
}

/// The rules of this proxy's uploads, with the static data key as it is now.
fn upload_rules(state: &AppState) -> UploadRules {
    UploadRules {
        data_key: if state.upload_policy.static_data_key {
            DataKeyPolicy::Static(state.keys.load().symmetric_key.clone())
        } else {
            DataKeyPolicy::Fresh
        },
        format: state.upload_policy.format,
        max_bytes: state.limits.max_upload_bytes,
    }
}

/// A fully received form: the file is staged, not yet published.
struct UploadForm {
    recipients: Recipients,
    overwrite: bool,
    upload: Upload,
}

/// Reads the form in whatever order its fields come, streaming `file` into a staged upload.
async fn receive_form(
    request: Request,
    state: &AppState,
    container: &Container,
    blob: &BlobName,
    rules: &UploadRules,
) -> Result<UploadForm, ApiError> {
    let (parts, body) = request.into_parts();
    let mut form = FormReader::new(&parts.headers, body)?;
    let limits = &state.limits;
    let mut recipients = None;
    let mut overwrite = None;
    let mut upload: Option<Upload> = None;
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
                if upload.is_some() {
                    return Err(repeated());
                }
                let create_only = overwrite == Some(false);
                let mut staged = Upload::start(container, blob, rules, create_only).await?;
                while let Some(chunk) = field.chunk().await? {
                    staged.write(&chunk).await?;
                }
                upload = Some(staged);
            }
            // FastAPI ignores fields it does not know; so does blobprox.
            _ => field.skip().await?,
        }
    }
    match (recipients, upload) {
        (Some(recipients), Some(upload)) => Ok(UploadForm {
            recipients,
            overwrite: overwrite.unwrap_or(false),
            upload,
        }),
        (recipients, upload) => {
            let mut missing = Vec::new();
            if recipients.is_none() {
                missing.push(PUBLIC_KEYS_FIELD);
            }
            if upload.is_none() {
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
