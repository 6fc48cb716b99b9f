//! `GET`/`HEAD /download/{container}/{blob}`: unwrap the caller's key, authenticate the blob and
//! stream its plaintext.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{
    ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderValue,
    RANGE,
};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::AppState;
use super::error::ApiError;
use super::extract::BlobPath;
use super::form::{self, FormReader};
use super::range::RangeRequest;
use crate::transfer::OpenedBlob;

/// Header that carries the wrapped key for clients that cannot send a body on `GET`.
pub(super) const BLOB_KEY_HEADER: &str = "x-blob-key";
/// Form field that carries the wrapped key, as in the original.
pub(super) const BLOB_KEY_FIELD: &str = "decryption-key";

/// Characters left as they are in RFC 8187 `filename*` values (attr-char).
const ATTR_CHAR_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// Streams the plaintext of a blob to a holder of its wrapped key.
pub async fn download(
    State(state): State<AppState>,
    target: BlobPath,
    request: Request,
) -> Result<Response, ApiError> {
    let transfer = state.transfer_permit()?;
    let is_head = request.method() == Method::HEAD;
    let range_header = request.headers().get(RANGE).cloned();
    let wrapped = wrapped_key(request, state.limits.max_download_body_bytes).await?;
    let key = state.unwrap_key(&wrapped)?;
    let opened =
        OpenedBlob::find(&state.storage, &target.container, target.blob.clone(), key).await?;

    let size = opened.plaintext_len();
    // A Fernet token cannot be read in parts, so a Range on one gets the whole body.
    let range = match RangeRequest::parse(range_header.as_ref(), size) {
        RangeRequest::Partial(range) if opened.supports_ranges() => Some(range),
        RangeRequest::Unsatisfiable if opened.supports_ranges() => {
            return Err(ApiError::RangeNotSatisfiable { size });
        }
        _ => None,
    };
    let mut response = Response::builder()
        .header(CONTENT_TYPE, content_type(target.blob.as_str()))
        .header(
            CONTENT_DISPOSITION,
            content_disposition(target.blob.as_str()),
        )
        .header(ACCEPT_RANGES, "bytes")
        // For the log and metrics, should the body fail its integrity check.
        .extension(opened.format());
    response = match &range {
        Some(range) => response
            .status(StatusCode::PARTIAL_CONTENT)
            .header(
                CONTENT_RANGE,
                format!("bytes {}-{}/{size}", range.start, range.end - 1),
            )
            .header(CONTENT_LENGTH, range.end - range.start),
        None => response.header(CONTENT_LENGTH, size),
    };
    let body = if is_head {
        Body::empty()
    } else {
        // The slot is held until the last byte has gone out (or the client has gone).
        Body::from_stream(
            opened
                .into_plaintext(range, state.limits.body_idle_timeout)
                .map(move |chunk| {
                    let _held = &transfer;
                    chunk
                }),
        )
    };
    Ok(response.body(body).expect("valid headers"))
}

/// The wrapped key of the `x-blob-key` header, if the request has one.
pub(super) fn wrapped_key_header(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get(BLOB_KEY_HEADER)
        .map(|value| {
            value.to_str().map(str::to_owned).map_err(|_| {
                ApiError::BadRequest(format!("the {BLOB_KEY_HEADER} header is not ASCII text"))
            })
        })
        .transpose()
}

/// The refusal of a request that names no wrapped key.
pub(super) fn missing_wrapped_key() -> ApiError {
    ApiError::BadRequest(format!(
        "missing the wrapped key: send it as form field {BLOB_KEY_FIELD:?} or in the \
         {BLOB_KEY_HEADER} header"
    ))
}

/// The wrapped key from `x-blob-key`, or else from the `decryption-key` field of the body.
async fn wrapped_key(request: Request, max_body: usize) -> Result<String, ApiError> {
    if let Some(wrapped) = wrapped_key_header(request.headers())? {
        return Ok(wrapped);
    }
    let (parts, body) = request.into_parts();
    let body = form::small_body(body, max_body).await?.ok_or_else(|| {
        ApiError::TooLarge(format!(
            "the request body is larger than {max_body} bytes; a download needs only the \
             decryption-key field"
        ))
    })?;
    form_field(&parts.headers, body, BLOB_KEY_FIELD)
        .await?
        .ok_or_else(missing_wrapped_key)
}

/// Finds `name` in an urlencoded or multipart body.
async fn form_field(
    headers: &HeaderMap,
    body: bytes::Bytes,
    name: &str,
) -> Result<Option<String>, ApiError> {
    if body.is_empty() {
        return Ok(None);
    }
    if form::is_multipart(headers) {
        let mut form = FormReader::new(headers, Body::from(body))?;
        while let Some(mut field) = form.next_field().await? {
            if field.name() == name {
                return field.text(usize::MAX).await.map(Some);
            }
        }
        return Ok(None);
    }
    Ok(form_urlencoded::parse(&body)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned()))
}

/// The media type guessed from the name; text types are declared UTF-8, as Starlette does.
fn content_type(blob_name: &str) -> String {
    match mime_guess::from_path(blob_name).first() {
        Some(mime) if mime.type_() == mime_guess::mime::TEXT => format!("{mime}; charset=utf-8"),
        Some(mime) => mime.to_string(),
        None => "application/octet-stream".into(),
    }
}

/// `attachment; filename=<name>` as the original sends it, plus RFC 6266 `filename*` whenever the
/// plain form cannot carry the name faithfully.
fn content_disposition(blob_name: &str) -> HeaderValue {
    let plain_is_exact = blob_name
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b';' | b'\\' | b','));
    let value = if plain_is_exact {
        format!("attachment; filename={blob_name}")
    } else {
        let fallback: String = blob_name
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() && !matches!(c, '"' | '\\') || c == ' ' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let encoded = utf8_percent_encode(blob_name, ATTR_CHAR_ESCAPES);
        format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
    };
    HeaderValue::from_str(&value).expect("ASCII without control characters")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("notes.txt"), "text/plain; charset=utf-8");
        assert_eq!(
            content_type("data.bin.unknownext"),
            "application/octet-stream"
        );
        assert_eq!(content_type("a/b.json"), "application/json");
    }

    #[test]
    fn disposition_keeps_simple_names_and_encodes_others() {
        assert_eq!(
            content_disposition("dir/report.csv"),
            "attachment; filename=dir/report.csv"
        );
        assert_eq!(
            content_disposition("résumé 1.txt"),
            "attachment; filename=\"r_sum_ 1.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%201.txt"
        );
    }
}
