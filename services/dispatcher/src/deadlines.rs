//! Pure: runs in flight and when each must have a result by.
//!
//! A published attempt gets a deadline (its timeout plus a grace). An attempt with no result by
//! then is recorded as `timed_out` by the dispatcher, through the same path as a worker's
//! result: it may be retried, it frees its target's slot, and a result arriving later for it is
//! late and changes nothing.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use chrono::{DateTime, Utc};
use faro_shared::messages::RunMessage;
use uuid::Uuid;

/// Deadlines of the attempts in flight.
#[derive(Debug, Default)]
pub struct Deadlines {
    by_run: HashMap<Uuid, (u32, DateTime<Utc>, RunMessage)>,
    timetable: BinaryHeap<Reverse<(DateTime<Utc>, Uuid, u32)>>,
}

impl Deadlines {
    /// Starts watching an attempt (replacing an earlier attempt of the same run).
    pub fn track(&mut self, run: RunMessage, deadline: DateTime<Utc>) {
        self.timetable
            .push(Reverse((deadline, run.run_id, run.attempt)));
        self.by_run.insert(run.run_id, (run.attempt, deadline, run));
    }

    /// When `run`'s attempt in flight must have a result by.
    pub fn deadline_of(&self, run: Uuid) -> Option<DateTime<Utc>> {
        self.by_run.get(&run).map(|(_, deadline, _)| *deadline)
    }

    /// A result for `run` came (it ended, or its attempt will be retried).
    pub fn clear(&mut self, run: Uuid) {
        self.by_run.remove(&run);
    }

    /// The earliest deadline still watched.
    pub fn next_wake(&mut self) -> Option<DateTime<Utc>> {
        while let Some(Reverse((at, run, attempt))) = self.timetable.peek() {
            match self.by_run.get(run) {
                Some((a, d, _)) if a == attempt && d == at => return Some(*at),
                _ => {
                    self.timetable.pop();
                }
            }
        }
        None
    }

    /// The attempts whose deadline passed at `now`; they are no longer watched.
    pub fn expired(&mut self, now: DateTime<Utc>) -> Vec<RunMessage> {
        let mut out = Vec::new();
        while let Some(at) = self.next_wake() {
            if at > now {
                break;
            }
            if let Some(Reverse((_, run, _))) = self.timetable.pop() {
                if let Some((_, _, message)) = self.by_run.remove(&run) {
                    out.push(message);
                }
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.by_run.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_run.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(attempt: u32) -> RunMessage {
        let mut run = crate::fixtures::run("j", None, 5);
        run.attempt = attempt;
        run
    }

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    #[test]
    fn only_attempts_without_a_result_expire() {
        let mut d = Deadlines::default();
        let (a, b, c) = (run(1), run(1), run(1));
        d.track(a.clone(), at(100));
        d.track(b.clone(), at(200));
        d.track(c.clone(), at(300));
        d.clear(b.run_id);
        assert_eq!(d.next_wake(), Some(at(100)));
        assert!(d.expired(at(99)).is_empty());
        let expired: Vec<_> = d.expired(at(250)).iter().map(|r| r.run_id).collect();
        assert_eq!(expired, [a.run_id]);
        assert_eq!(d.next_wake(), Some(at(300)));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn a_retried_attempt_gets_a_new_deadline() {
        let mut d = Deadlines::default();
        let first = run(1);
        d.track(first.clone(), at(100));
        let mut second = first.clone();
        second.attempt = 2;
        d.track(second, at(500));
        // The first attempt's deadline no longer counts.
        assert_eq!(d.next_wake(), Some(at(500)));
        let expired = d.expired(at(1000));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].attempt, 2);
        assert!(d.is_empty());
    }
}
