//! One log line and one metrics record per request, with a request id, written when the
//! response body has ended (so a download's line has its real size and duration).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH};
use axum::http::{HeaderValue, Version};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::AppState;
use crate::metrics::{Metrics, RequestRecord};
use crate::transfer::{BlobFormat, TransferError};

/// The request id header, accepted from the client or generated, and echoed.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Marks a response whose failure came from storage, for the storage error count.
#[derive(Debug, Clone, Copy)]
pub struct StorageFailure;

/// Wraps every request: request id, byte counts, the log line and the metrics.
pub async fn observe(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let request_id = request_id(&request);
    // Route templates only: blob names can identify patients, so they stay out of logs.
    let route = matched.map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = request.method().to_string();
    let received = Arc::new(AtomicU64::new(0));
    let request_ended = Arc::new(AtomicBool::new(request.body().is_end_stream()));
    let http1 = request.version() <= Version::HTTP_11;
    let request = request.map(|body| {
        Body::new(CountingBody {
            inner: body,
            bytes: received.clone(),
            ended: request_ended.clone(),
            expected_len: None,
            on_end: None,
        })
    });
    state.metrics.request_started();
    // Should the handler be dropped (the client left mid-request, or shutdown's grace ran out),
    // the guard still records the request, as aborted.
    let mut guard = Unanswered(Some(Finish {
        metrics: state.metrics.clone(),
        request_id: request_id.to_str().unwrap_or_default().to_owned(),
        method,
        route,
        status: CLIENT_CLOSED_REQUEST,
        format: None,
        received,
        started,
    }));
    let mut response = next.run(request).await;
    if response.extensions().get::<StorageFailure>().is_some() {
        state.metrics.storage_failed();
    }
    response.headers_mut().insert(REQUEST_ID_HEADER, request_id);
    // An answer given before the request body was read (a refused upload) ends the connection;
    // saying so keeps a client from sending its next request on a connection about to close.
    if http1 && !request_ended.load(Ordering::Relaxed) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    let mut finish = guard.0.take().expect("taken once");
    finish.status = response.status().as_u16();
    finish.format = response.extensions().get::<BlobFormat>().copied();
    // Hyper stops polling a body once it has sent Content-Length bytes, so reaching that
    // length is what makes a response complete.
    let expected_len = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    response.map(|body| {
        Body::new(CountingBody {
            inner: body,
            bytes: Arc::new(AtomicU64::new(0)),
            ended: Arc::default(),
            expected_len,
            on_end: Some(finish),
        })
    })
}

/// The client's request id when it is short and printable, else a fresh one.
fn request_id(request: &Request) -> HeaderValue {
    request
        .headers()
        .get(REQUEST_ID_HEADER)
        .filter(|value| value.len() <= 128 && value.to_str().is_ok())
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("ASCII"))
}

/// Status recorded for a request whose handler never answered (nginx's convention).
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Records a request whose handler was dropped before it answered.
struct Unanswered(Option<Finish>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(finish) = self.0.take() {
            finish.run(0, true);
        }
    }
}

/// What to log and record once the response body is done.
struct Finish {
    metrics: Arc<Metrics>,
    request_id: String,
    method: String,
    route: String,
    status: u16,
    /// The format of the blob a download serves.
    format: Option<BlobFormat>,
    received: Arc<AtomicU64>,
    started: Instant,
}

impl Finish {
    /// Reports why a response body was cut off; an integrity failure is counted by format.
    fn body_failed(&self, error: &axum::Error) {
        let transfer = std::iter::successors(Some(error as &dyn std::error::Error), |e| e.source())
            .find_map(|e| e.downcast_ref::<TransferError>());
        match (transfer, self.format) {
            (Some(failure), Some(format)) if failure.is_integrity_failure() => {
                self.metrics.integrity_failed(format);
                tracing::warn!(
                    request_id = %self.request_id,
                    format = format.as_str(),
                    error = %failure,
                    "response cut off: stored data failed authentication"
                );
            }
            _ => tracing::warn!(
                request_id = %self.request_id,
                error = %transfer.map_or_else(|| error.to_string(), ToString::to_string),
                "response cut off"
            ),
        }
    }

    fn run(self, bytes_out: u64, aborted: bool) {
        let record = RequestRecord {
            route: &self.route,
            status: self.status,
            bytes_in: self.received.load(Ordering::Relaxed),
            bytes_out,
            duration: self.started.elapsed(),
            aborted,
        };
        tracing::info!(
            request_id = %self.request_id,
            method = %self.method,
            route = %record.route,
            status = record.status,
            bytes_in = record.bytes_in,
            bytes_out = record.bytes_out,
            duration_ms = record.duration.as_millis() as u64,
            aborted,
            "request"
        );
        self.metrics.request_finished(&record);
    }
}

/// A body that counts its data bytes; for responses it also reports when it ends or is dropped.
struct CountingBody {
    inner: Body,
    bytes: Arc<AtomicU64>,
    /// Set once the body has been read to its end.
    ended: Arc<AtomicBool>,
    expected_len: Option<u64>,
    on_end: Option<Finish>,
}

impl HttpBody for CountingBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                // A reader may stop at its last expected byte without polling the end.
                if self.inner.is_end_stream() {
                    self.ended.store(true, Ordering::Relaxed);
                }
            }
            Poll::Ready(None) => {
                self.ended.store(true, Ordering::Relaxed);
                self.finish(false)
            }
            Poll::Ready(Some(Err(error))) => {
                if let Some(finish) = &self.on_end {
                    finish.body_failed(error);
                }
                self.finish(true);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl CountingBody {
    fn finish(&mut self, aborted: bool) {
        if let Some(finish) = self.on_end.take() {
            finish.run(self.bytes.load(Ordering::Relaxed), aborted);
        }
    }
}

impl Drop for CountingBody {
    fn drop(&mut self) {
        // Dropped before its end: the client went away, or the connection was aborted.
        let ended = self.inner.is_end_stream()
            || self.expected_len == Some(self.bytes.load(Ordering::Relaxed));
        self.finish(!ended);
    }
}
