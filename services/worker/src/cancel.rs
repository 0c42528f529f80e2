//! Cancels asked for by the dispatcher (`faro cancel`): the attempts this worker executes,
//! each with a token that stops it, and the attempts asked for before this worker pulled them,
//! remembered (a bounded number) so they are skipped instead of executed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// An attempt: a run and its attempt number.
type Attempt = (Uuid, u32);

/// Cancels remembered for attempts not (yet) executing here, at most this many.
const REMEMBERED: usize = 10_000;

#[derive(Debug, Default)]
pub struct Cancels {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    running: HashMap<Attempt, CancellationToken>,
    requested: HashSet<Attempt>,
    order: VecDeque<Attempt>,
}

impl Cancels {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An attempt starts here: its stop token, or `None` when a cancel came first.
    pub fn start(&self, run: Uuid, attempt: u32) -> Option<CancellationToken> {
        let mut inner = self.inner();
        if inner.requested.remove(&(run, attempt)) {
            return None;
        }
        let token = CancellationToken::new();
        inner.running.insert((run, attempt), token.clone());
        Some(token)
    }

    /// The attempt ended here.
    pub fn finish(&self, run: Uuid, attempt: u32) {
        self.inner().running.remove(&(run, attempt));
    }

    /// Stops the attempt if it executes here (`true`), else remembers it for a later pull.
    pub fn request(&self, run: Uuid, attempt: u32) -> bool {
        let mut inner = self.inner();
        if let Some(token) = inner.running.get(&(run, attempt)) {
            token.cancel();
            return true;
        }
        if inner.requested.insert((run, attempt)) {
            inner.order.push_back((run, attempt));
            while inner.order.len() > REMEMBERED {
                if let Some(old) = inner.order.pop_front() {
                    inner.requested.remove(&old);
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_attempt_is_stopped_and_a_later_one_is_skipped() {
        let cancels = Cancels::default();
        let (run, other) = (Uuid::new_v4(), Uuid::new_v4());
        let token = cancels.start(run, 1).unwrap();
        assert!(cancels.request(run, 1));
        assert!(token.is_cancelled());
        cancels.finish(run, 1);

        // Asked before it was pulled: skipped once pulled; another attempt is not.
        assert!(!cancels.request(other, 1));
        assert!(cancels.start(other, 1).is_none());
        assert!(cancels.start(other, 2).is_some());
    }

    #[test]
    fn remembered_cancels_are_bounded() {
        let cancels = Cancels::default();
        let first = Uuid::new_v4();
        cancels.request(first, 1);
        for _ in 0..REMEMBERED {
            cancels.request(Uuid::new_v4(), 1);
        }
        assert!(
            cancels.start(first, 1).is_some(),
            "the oldest was forgotten"
        );
        assert_eq!(cancels.inner().requested.len(), REMEMBERED);
    }
}
