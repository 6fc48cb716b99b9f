//! How long a request body may take: an idle timeout and a minimum rate after a grace period.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

/// How slowly a request body may arrive, in the manner of Apache's mod_reqtimeout
/// (`body=20,MinRate=500`): no pause longer than `idle_timeout`, and in all no longer than
/// `grace` plus one second per `min_rate` bytes received.
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyPace {
    pub(super) idle_timeout: Duration,
    pub(super) grace: Duration,
    pub(super) min_rate: u64,
}

/// How long a request body has been waited for. Only time spent waiting on the client counts,
/// not time in which the proxy was busy and did not ask for more.
pub(super) struct BodyTimer {
    pace: BodyPace,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// When the current wait began, if the body is being waited for.
    waiting_since: Option<tokio::time::Instant>,
    /// Waits that have ended, in all.
    waited: Duration,
}

impl BodyTimer {
    pub(super) fn new(pace: BodyPace) -> Self {
        Self {
            pace,
            deadline: Box::pin(tokio::time::sleep(pace.idle_timeout)),
            waiting_since: None,
            waited: Duration::ZERO,
        }
    }

    /// Called when the body had nothing, with the bytes received so far: the reason to give up
    /// once the client has been silent too long, or too slow in all.
    pub(super) fn expired(&mut self, received: u64, cx: &mut Context<'_>) -> Option<BodyTooSlow> {
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
    pub(super) fn answered(&mut self) {
        if let Some(since) = self.waiting_since.take() {
            self.waited += since.elapsed();
        }
    }
}

/// The request body stopped arriving, or arrives too slowly.
#[derive(Debug, thiserror::Error)]
pub(super) enum BodyTooSlow {
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
