//! A worker's hold on the run it executes, and when it must let go.
//!
//! JetStream gives a run to another worker [`RUN_ACK_WAIT`] after the last acknowledgement it
//! received for it (its delivery, then each in-progress ack). A worker counts its hold only
//! from what it knows happened: the delivery as it received it, then each in-progress ack the
//! server confirmed, from when it was sent. It lets go [`RUN_HOLD_MARGIN`] before the hold
//! could end, so a worker cut off from NATS, or frozen (SIGSTOP, a paused VM), never polls an
//! OLT next to the worker its run went to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use faro_shared::nats::{RUN_ACK_WAIT, RUN_HOLD_MARGIN};
use tokio::time::Instant;

/// How long after its last confirmation a worker may still act on a run.
pub const HOLD: Duration = RUN_ACK_WAIT.saturating_sub(RUN_HOLD_MARGIN);

/// One attempt's hold, shared by the loop that confirms it and the code that polls.
#[derive(Debug)]
pub struct Hold {
    /// When the worker received the run.
    received: Instant,
    /// The latest confirmation, in milliseconds after `received`.
    confirmed_ms: AtomicU64,
}

/// The hold ended: the run may be another worker's by now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    /// Since when (the worker may notice much later: it was frozen).
    pub ended: Instant,
}

impl Hold {
    pub fn new(received: Instant) -> Self {
        Self {
            received,
            confirmed_ms: AtomicU64::new(0),
        }
    }

    /// An in-progress ack sent at `sent` was confirmed by the server.
    pub fn confirm(&self, sent: Instant) {
        let ms = u64::try_from(sent.saturating_duration_since(self.received).as_millis())
            .unwrap_or(u64::MAX);
        self.confirmed_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// When the worker must have let go, unless a confirmation comes first.
    pub fn ends_at(&self) -> Instant {
        self.received + Duration::from_millis(self.confirmed_ms.load(Ordering::Relaxed)) + HOLD
    }

    /// Whether the worker may still act on the run at `now`.
    pub fn check_at(&self, now: Instant) -> Result<(), Lost> {
        let ended = self.ends_at();
        if now < ended {
            Ok(())
        } else {
            Err(Lost { ended })
        }
    }

    /// Whether the worker may still act on the run: asked before every device request.
    pub fn check(&self) -> Result<(), Lost> {
        self.check_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_lasts_from_the_latest_confirmation_and_lets_go_before_jetstream_could_redeliver() {
        let t0 = Instant::now();
        let hold = Hold::new(t0);
        assert!(HOLD < RUN_ACK_WAIT);
        assert_eq!(hold.ends_at(), t0 + HOLD);
        assert!(hold.check_at(t0 + HOLD - Duration::from_millis(1)).is_ok());
        assert_eq!(hold.check_at(t0 + HOLD), Err(Lost { ended: t0 + HOLD }));

        hold.confirm(t0 + Duration::from_secs(3));
        assert_eq!(hold.ends_at(), t0 + Duration::from_secs(3) + HOLD);
        assert!(hold.check_at(t0 + HOLD + Duration::from_secs(1)).is_ok());
        // A confirmation that arrives late for an older ack never moves the hold back.
        hold.confirm(t0 + Duration::from_secs(1));
        assert_eq!(hold.ends_at(), t0 + Duration::from_secs(3) + HOLD);
    }
}
