//! `POST /upload/{container}/{blob}`: a multipart form whose `file` is encrypted as it streams in.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Request, State};
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use super::extract::BlobPath;
use super::form::FormReader;
use crate::crypto::data_key::DataKey;
use crate::crypto::rsa::RecipientKey;
use crate::storage::{BlobName, Container, StorageError};
use crate::transfer::BlobWriter;

/// Largest `overwrite` value worth reading.
const MAX_OVERWRITE_BYTES: usize = 64;

/// The upload answer, under the original's names and the seed README's names alike.
#[derive(Debug, Serialize)]
pub struct UploadResponse {
    filename: String,
    decryption_keys: BTreeMap<String, String>,
    file_name: String,
    keys: BTreeMap<String, String>,
}

/// Encrypts the uploaded file into storage and returns its data key wrapped for each recipient.
pub async fn upload(
    State(state): State<AppState>,
    target: BlobPath,
    request: Request,
) -> Result<Json<UploadResponse>, ApiError> {
    let _transfer = state.transfer_permit()?;
    let container = state.storage.container(&target.container).await?;
    let data_key = if state.upload_policy.static_data_key {
        state.keys.symmetric_key.clone()
    } else {
        DataKey::generate().map_err(|e| ApiError::Transfer(e.into()))?
    };
    let form = receive_form(request, &state, &container, &target.blob, &data_key).await?;
    let mut decryption_keys = BTreeMap::new();
    for (id, recipient) in &form.recipients {
        let wrapped = recipient
            .wrap_key(&data_key)
            .map_err(|e| ApiError::Transfer(e.into()))?;
        decryption_keys.insert(id.clone(), wrapped);
    }
    // Publishing runs to its end even if the client goes away meanwhile, so that it never stops
    // halfway through a storage operation.
    let UploadForm {
        writer, overwrite, ..
    } = form;
    tokio::spawn(writer.commit(overwrite))
        .await
        .map_err(|e| ApiError::Transfer(StorageError::Unavailable(e.to_string()).into()))??;
    let name = target.blob.as_str().to_owned();
    Ok(Json(UploadResponse {
        filename: name.clone(),
        decryption_keys: decryption_keys.clone(),
        file_name: name,
        keys: decryption_keys,
    }))
}

/// A fully received form: the file is staged, not yet published.
struct UploadForm {
    recipients: Vec<(String, RecipientKey)>,
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
            "public-keys" => {
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
                missing.push("public-keys");
            }
            if writer.is_none() {
                missing.push("file");
            }
            Err(ApiError::MissingFields(missing))
        }
    }
}

/// Parses `public-keys`: a non-empty JSON object of recipient id → RSA public key PEM.
fn parse_recipients(
    text: &str,
    max_recipients: usize,
) -> Result<Vec<(String, RecipientKey)>, ApiError> {
    let bad = |why: String| ApiError::BadRequest(format!("public-keys: {why}"));
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON ({e})")))?;
    let serde_json::Value::Object(entries) = value else {
        return Err(bad(
            "must be a JSON object of recipient id to public key PEM".into(),
        ));
    };
    if entries.is_empty() {
        return Err(bad("names no recipient".into()));
    }
    if entries.len() > max_recipients {
        return Err(bad(format!(
            "names {} recipients; at most {max_recipients} are allowed",
            entries.len()
        )));
    }
    entries
        .into_iter()
        .map(|(id, pem)| {
            let serde_json::Value::String(pem) = pem else {
                return Err(bad(format!(
                    "recipient {id:?}: the value must be a PEM string"
                )));
            };
            let key = RecipientKey::from_pem(&pem)
                .map_err(|e| bad(format!("recipient {id:?}: the public key {e}")))?;
            Ok((id, key))
        })
        .collect()
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

    #[test]
    fn recipients_must_be_a_non_empty_object_of_pems() {
        for text in [
            "[]",
            "{}",
            "\"x\"",
            "{\"a\": 1}",
            "{\"a\": \"not a pem\"}",
            "not json",
        ] {
            let error = parse_recipients(text, 100).err().expect(text);
            assert!(matches!(error, ApiError::BadRequest(_)), "{text}");
        }
        let error = parse_recipients("{\"clinic-a\": \"garbage\"}", 100)
            .err()
            .unwrap();
        assert!(error.to_string().contains("clinic-a"));
    }
}
