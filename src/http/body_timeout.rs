//! How long a request body may take: an idle timeout and a minimum rate after a grace period,
//! enforced by a wrapper around every request body.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::AppState;

/// Wraps every request body so that it fails once its client pauses too long or sends too
/// slowly; the handler reading it then answers 400.
pub async fn limit_body_pace(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let pace = BodyPace {
        idle_timeout: state.limits.body_idle_timeout,
        grace: state.limits.body_grace,
        min_rate: state.limits.body_min_rate,
    };
    let request = request.map(|body| {
        Body::new(PacedBody {
            inner: body,
            received: 0,
            timer: BodyTimer::new(pace),
        })
    });
    next.run(request).await
}

/// A request body that fails with [`BodyTooSlow`] when its client falls behind [`BodyPace`].
struct PacedBody {
    inner: Body,
    /// Data bytes delivered so far, which earn the body more time.
    received: u64,
    timer: BodyTimer,
}

impl HttpBody for PacedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if polled.is_pending() {
            if let Some(reason) = this.timer.expired(this.received, cx) {
                return Poll::Ready(Some(Err(axum::Error::new(reason))));
            }
        } else {
            this.timer.answered();
        }
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.received += data.len() as u64;
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

/// How slowly a request body may arrive, in the manner of Apache's mod_reqtimeout
/// (`body=20,MinRate=500`): no pause longer than `idle_timeout`, and in all no longer than
/// `grace` plus one second per `min_rate` bytes received.
#[derive(Debug, Clone, Copy)]
struct BodyPace {
    idle_timeout: Duration,
    grace: Duration,
    min_rate: u64,
}

/// How long a request body has been waited for. Only time spent waiting on the client counts,
/// not time in which the proxy was busy and did not ask for more.
struct BodyTimer {
    pace: BodyPace,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// When the current wait began, if the body is being waited for.
    waiting_since: Option<tokio::time::Instant>,
    /// Waits that have ended, in all.
    waited: Duration,
}

impl BodyTimer {
    fn new(pace: BodyPace) -> Self {
        Self {
            pace,
            deadline: Box::pin(tokio::time::sleep(pace.idle_timeout)),
            waiting_since: None,
            waited: Duration::ZERO,
        }
    }

    /// Called when the body had nothing, with the bytes received so far: the reason to give up
    /// once the client has been silent too long, or too slow in all.
    fn expired(&mut self, received: u64, cx: &mut Context<'_>) -> Option<BodyTooSlow> {
        let since = match self.waiting_since {
            Some(since) => since,
            None => {
                let now = tokio::time::Instant::now();
                self.waiting_since = Some(now);
                let allowed = self.wait_allowed(received);
                self.deadline.as_mut().reset(now + allowed);
                now
            }
        };
        self.deadline.as_mut().poll(cx).is_ready().then(|| {
            if since.elapsed() >= self.pace.idle_timeout {
                BodyTooSlow::Idle(self.pace.idle_timeout)
            } else {
                BodyTooSlow::BelowRate {
                    min_rate: self.pace.min_rate,
                    grace: self.pace.grace,
                }
            }
        })
    }

    /// The longest the current wait may last.
    fn wait_allowed(&self, received: u64) -> Duration {
        let BodyPace {
            idle_timeout,
            grace,
            min_rate,
        } = self.pace;
        if min_rate == 0 {
            return idle_timeout;
        }
        let earned = grace + Duration::from_secs_f64(received as f64 / min_rate as f64);
        idle_timeout.min(earned.saturating_sub(self.waited))
    }

    /// The body delivered something (or ended): the current wait is over.
    fn answered(&mut self) {
        if let Some(since) = self.waiting_since.take() {
            self.waited += since.elapsed();
        }
    }
}

/// The request body stopped arriving, or arrives too slowly.
#[derive(Debug, thiserror::Error)]
enum BodyTooSlow {
    /// A pause longer than the idle timeout.
    #[error("the request body stopped arriving for more than {0:?}")]
    Idle(Duration),
    #[error(
        "the request body arrives slower than {min_rate} bytes per second (after {grace:?} of \
         grace)"
    )]
    /// Less than the minimum rate once the grace period was spent.
    BelowRate { min_rate: u64, grace: Duration },
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn paced(inner: Body, idle_timeout: u64, grace: u64, min_rate: u64) -> Body {
        let pace = BodyPace {
            idle_timeout: Duration::from_secs(idle_timeout),
            grace: Duration::from_secs(grace),
            min_rate,
        };
        Body::new(PacedBody {
            inner,
            received: 0,
            timer: BodyTimer::new(pace),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_given_up_on_after_the_idle_timeout() {
        let silent = futures::stream::pending::<Result<Bytes, std::io::Error>>();
        let started = tokio::time::Instant::now();
        let mut body = paced(Body::from_stream(silent), 60, 20, 0).into_data_stream();
        let error = body.next().await.expect("an item").unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        assert!(error.to_string().contains("stopped arriving"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_below_the_minimum_rate_is_cut_off_once_the_grace_is_spent() {
        // 100 bytes a second against a minimum of 1000: two chunks fit into 2 s of grace
        // (plus 0.2 s they earn), the third wait runs out.
        let trickle = futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from(vec![0; 100])), ()))
        });
        let mut body = paced(Body::from_stream(trickle), 60, 2, 1000).into_data_stream();
        assert_eq!(body.next().await.unwrap().unwrap().len(), 100);
        assert_eq!(body.next().await.unwrap().unwrap().len(), 100);
        let error = body.next().await.unwrap().unwrap_err();
        assert!(
            error
                .to_string()
                .contains("slower than 1000 bytes per second"),
            "{error}"
        );
    }
}
