//! Reading `multipart/form-data` bodies field by field, with the limits a proxy needs.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use futures::Stream;

use super::error::ApiError;

/// Body bytes the parser may hold that no field has handed out yet: part headers, boundaries,
/// and data read ahead from the socket. Past this a client is sending headers without end.
const MAX_UNCONSUMED_BYTES: u64 = 16 * 1024 * 1024;

/// A multipart body, read one field at a time.
pub struct FormReader {
    multipart: multer::Multipart<'static>,
    consumed: Arc<AtomicU64>,
}

/// One field of a [`FormReader`].
pub struct FormField {
    field: multer::Field<'static>,
    consumed: Arc<AtomicU64>,
}

impl FormReader {
    /// A reader for `body`, or 400 when `headers` do not declare a multipart body.
    pub fn new(headers: &HeaderMap, body: Body) -> Result<Self, ApiError> {
        let boundary = boundary(headers).ok_or_else(|| {
            ApiError::BadRequest(
                "expected a multipart/form-data body with a boundary in its Content-Type".into(),
            )
        })?;
        let consumed = Arc::new(AtomicU64::new(0));
        let stream = Accounted {
            inner: body.into_data_stream(),
            fed: 0,
            consumed: consumed.clone(),
        };
        Ok(Self {
            multipart: multer::Multipart::new(stream, boundary),
            consumed,
        })
    }

    /// The next field, or `None` at the end of the form.
    pub async fn next_field(&mut self) -> Result<Option<FormField>, ApiError> {
        let field = self.multipart.next_field().await.map_err(malformed)?;
        Ok(field.map(|field| FormField {
            field,
            consumed: self.consumed.clone(),
        }))
    }
}

/// Whether `headers` declare a multipart body.
pub fn is_multipart(headers: &HeaderMap) -> bool {
    boundary(headers).is_some()
}

fn boundary(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| multer::parse_boundary(value).ok())
}

impl FormField {
    /// The field's name (empty when it has none).
    pub fn name(&self) -> &str {
        self.field.name().unwrap_or_default()
    }

    /// The next piece of the field's content.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ApiError> {
        let chunk = self.field.chunk().await.map_err(malformed)?;
        if let Some(chunk) = &chunk {
            self.consumed
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        Ok(chunk)
    }

    /// The whole field as text, refusing more than `max` bytes or non-UTF-8 content.
    pub async fn text(&mut self, max: usize) -> Result<String, ApiError> {
        let name = self.name().to_owned();
        let mut bytes = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            if bytes.len() + chunk.len() > max {
                return Err(ApiError::TooLarge(format!(
                    "form field {name:?} is larger than the limit of {max} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        String::from_utf8(bytes)
            .map_err(|_| ApiError::BadRequest(format!("form field {name:?} is not UTF-8 text")))
    }

    /// Reads and discards the rest of the field.
    pub async fn skip(&mut self) -> Result<(), ApiError> {
        while self.chunk().await?.is_some() {}
        Ok(())
    }
}

fn malformed(error: multer::Error) -> ApiError {
    match error {
        // The body itself failed (a slow or vanished client, endless headers): say so.
        multer::Error::StreamReadFailed(source) => {
            ApiError::BadRequest(format!("the request body could not be read: {source}"))
        }
        other => ApiError::BadRequest(format!("malformed multipart body: {other}")),
    }
}

/// More body arrived than fields have handed out, by more than [`MAX_UNCONSUMED_BYTES`].
#[derive(Debug, thiserror::Error)]
#[error("the multipart headers are larger than {MAX_UNCONSUMED_BYTES} bytes")]
struct HeadersTooLarge;

/// The body stream, counting what goes into the parser against what fields hand out.
struct Accounted<S> {
    inner: S,
    fed: u64,
    consumed: Arc<AtomicU64>,
}

impl<S> Stream for Accounted<S>
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(bytes))) = &polled {
            self.fed += bytes.len() as u64;
            let held = self
                .fed
                .saturating_sub(self.consumed.load(Ordering::Relaxed));
            if held > MAX_UNCONSUMED_BYTES {
                return Poll::Ready(Some(Err(axum::Error::new(HeadersTooLarge))));
            }
        }
        polled
    }
}
