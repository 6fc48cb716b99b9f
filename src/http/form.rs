//! Reading `multipart/form-data` bodies field by field, with the limits a proxy needs.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, BodyDataStream, Bytes};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use futures::{Stream, StreamExt};

use super::error::ApiError;
use super::framing::Framing;

/// A multipart body, read one field at a time.
pub struct FormReader {
    multipart: multer::Multipart<'static>,
    feed: Feed,
}

/// One field of a [`FormReader`].
pub struct FormField {
    field: multer::Field<'static>,
}

impl FormReader {
    /// A reader for `body`, or 400 when `headers` do not declare a multipart body.
    pub fn new(headers: &HeaderMap, body: Body) -> Result<Self, ApiError> {
        let boundary = boundary(headers).ok_or_else(|| {
            ApiError::BadRequest(
                "expected a multipart/form-data body with a boundary in its Content-Type".into(),
            )
        })?;
        let feed = Feed(Arc::new(Mutex::new(FeedState {
            body: body.into_data_stream(),
            framing: Framing::new(&boundary),
        })));
        Ok(Self {
            multipart: multer::Multipart::new(feed.clone(), boundary),
            feed,
        })
    }

    /// The next field, or `None` at the end of the form. The end of the form must also be the
    /// end of the body: a body that is cut short of its declared length is refused.
    pub async fn next_field(&mut self) -> Result<Option<FormField>, ApiError> {
        let field = self.multipart.next_field().await.map_err(malformed)?;
        if field.is_none() {
            // The parser stops at the closing boundary; what follows is an epilogue, bounded
            // like the part headers, and must arrive whole.
            while let Some(chunk) = self.feed.next().await {
                chunk.map_err(|error| unreadable(&error))?;
            }
        }
        Ok(field.map(|field| FormField { field }))
    }
}

/// The whole of a small body, or `None` when it is larger than `max` bytes (found without
/// reading it when its length is declared).
pub async fn small_body(body: Body, max: usize) -> Result<Option<Bytes>, ApiError> {
    use http_body::Body as _;
    if body.size_hint().lower() > max as u64 {
        return Ok(None);
    }
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| unreadable(&error))?;
        if bytes.len() + chunk.len() > max {
            return Ok(None);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Some(bytes.into()))
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
        self.field.chunk().await.map_err(malformed)
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
        multer::Error::StreamReadFailed(source) => unreadable(source.as_ref()),
        other => ApiError::BadRequest(format!("malformed multipart body: {other}")),
    }
}

/// The body could not be read; the innermost cause says why.
fn unreadable(error: &(dyn std::error::Error + 'static)) -> ApiError {
    let cause = std::iter::successors(Some(error), |e| e.source())
        .last()
        .expect("the error itself");
    ApiError::BadRequest(format!("the request body could not be read: {cause}"))
}

/// The body as the parser reads it, checked against the framing limits; shared, so that the
/// rest can be read once the parser has seen the end of the form.
#[derive(Clone)]
struct Feed(Arc<Mutex<FeedState>>);

struct FeedState {
    body: BodyDataStream,
    framing: Framing,
}

impl Stream for Feed {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut state = self.0.lock().expect("lock");
        let polled = Pin::new(&mut state.body).poll_next(cx);
        if let Poll::Ready(Some(Ok(bytes))) = &polled
            && let Err(error) = state.framing.feed(bytes)
        {
            return Poll::Ready(Some(Err(axum::Error::new(error))));
        }
        polled
    }
}
