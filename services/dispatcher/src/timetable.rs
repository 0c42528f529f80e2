//! The recurring jobs' timetable: which job fires next, and whether its slot runs, waits
//! (`overlap: queue_one`) or is skipped because the job's previous run is still going.
//!
//! Sync and free of I/O: the dispatcher's scheduler task (`scheduler`) feeds it definitions,
//! ended runs and the clock, and records what it returns. The slot arithmetic lives in
//! `schedule`.
//!
//! It keeps only what timing needs (id, interval, overlap, next slot): a million jobs fit in
//! a few hundred MiB. What a slot runs is read from the job's stored definition when the slot
//! is recorded, so a definition changed in PostgreSQL applies from its next slot.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use faro_shared::domain::{JobId, MaxAttempts, Retryable};
use faro_shared::messages::{Overlap, RunMessage};
use uuid::Uuid;

use crate::schedule::{self, Due};

/// A recurring job as the scheduler needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recurring {
    pub id: JobId,
    pub interval: Duration,
    pub overlap: Overlap,
    /// The last slot fired, from PostgreSQL, when the job is loaded.
    pub last_slot: Option<DateTime<Utc>>,
}

/// A job definition with the run it makes (chained jobs, and recurring ones as submitted).
#[derive(Debug, Clone, PartialEq)]
pub struct JobDef {
    pub interval: Duration,
    /// The run to make at each slot (its id and attempt are set per slot).
    pub template: RunMessage,
    pub max_attempts: MaxAttempts,
    pub retry_on: Vec<Retryable>,
    /// The last slot fired, from PostgreSQL, when the job is loaded.
    pub last_slot: Option<DateTime<Utc>>,
    pub overlap: Overlap,
}

impl JobDef {
    pub fn id(&self) -> &JobId {
        &self.template.job_id
    }

    /// What the scheduler keeps of it.
    pub fn recurring(&self) -> Recurring {
        Recurring {
            id: self.id().clone(),
            interval: self.interval,
            overlap: self.overlap,
            last_slot: self.last_slot,
        }
    }
}

/// One slot that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fire {
    pub job: JobId,
    pub slot: DateTime<Utc>,
    /// The job's run still going: this slot is skipped and recorded as such.
    pub overlaps: Option<Uuid>,
    /// Earlier slots of the job that passed while no dispatcher could fire or record them (a
    /// leader change, PostgreSQL unavailable): recorded as skipped with that reason.
    pub missed: Vec<DateTime<Utc>>,
}

/// How far back a dispatcher that takes over records the slots its predecessors missed.
pub const MISSED_LOOKBACK: chrono::Duration = chrono::Duration::hours(24);

/// Pure: the fires that could not be recorded so far, merged for one more try: one fire per
/// job, its latest slot; the job's earlier slots in the list become slots it missed.
pub fn merge_unrecorded(fires: Vec<Fire>) -> Vec<Fire> {
    let mut by_job: HashMap<JobId, Fire> = HashMap::new();
    let mut order = Vec::new();
    for mut fire in fires {
        match by_job.remove(&fire.job) {
            None => {
                order.push(fire.job.clone());
                by_job.insert(fire.job.clone(), fire);
            }
            Some(mut kept) => {
                if kept.slot > fire.slot {
                    std::mem::swap(&mut kept, &mut fire);
                }
                // `fire` is the later one: it keeps the job's slot, the earlier becomes missed.
                fire.missed.extend(kept.missed);
                fire.missed.push(kept.slot);
                fire.missed.sort();
                fire.missed.dedup();
                by_job.insert(fire.job.clone(), fire);
            }
        }
    }
    order
        .into_iter()
        .filter_map(|job| by_job.remove(&job))
        .collect()
}

#[derive(Debug)]
struct Entry {
    interval: Duration,
    overlap: Overlap,
    planned: DateTime<Utc>,
    /// A slot that came while the previous run was going, kept to run when it ends
    /// (`overlap: queue_one`).
    queued: Option<DateTime<Utc>>,
    /// Slots passed over before this are not recorded as missed: the job was not scheduled
    /// then (defined, enabled or changed later).
    missed_since: DateTime<Utc>,
}

/// Every enabled recurring job with its next planned slot.
#[derive(Debug, Default)]
pub struct Scheduler {
    jobs: HashMap<JobId, Entry>,
    /// Planned slots, earliest first; stale entries (a job redefined) are skipped when popped.
    timetable: BinaryHeap<Reverse<(DateTime<Utc>, JobId)>>,
    /// Recurring runs not yet ended, by job.
    open: HashMap<JobId, Uuid>,
}

impl Scheduler {
    /// Adds or replaces a job. A changed interval replans from now; an unchanged one keeps
    /// its planned slot.
    pub fn define(&mut self, def: Recurring, now: DateTime<Utc>) {
        self.define_since(def, now, now);
    }

    /// Adds a job loaded when this dispatcher starts leading: the slots it missed since
    /// [`MISSED_LOOKBACK`] (no leader, or no PostgreSQL) are recorded as skipped when it fires.
    pub fn load(&mut self, def: Recurring, now: DateTime<Utc>) {
        self.define_since(def, now, now - MISSED_LOOKBACK);
    }

    fn define_since(&mut self, def: Recurring, now: DateTime<Utc>, missed_since: DateTime<Utc>) {
        let id = def.id;
        let planned = match self.jobs.get(&id) {
            Some(entry) if entry.interval == def.interval => entry.planned,
            Some(_) => schedule::slot_at_or_after(&id, def.interval, now),
            None => schedule::first_planned(&id, def.interval, def.last_slot, now),
        };
        let queued = self.jobs.get(&id).and_then(|entry| entry.queued);
        let missed_since = match self.jobs.get(&id) {
            Some(entry) if entry.interval == def.interval => entry.missed_since,
            _ => missed_since,
        };
        self.timetable.push(Reverse((planned, id.clone())));
        self.jobs.insert(
            id,
            Entry {
                interval: def.interval,
                overlap: def.overlap,
                planned,
                queued,
                missed_since,
            },
        );
    }

    /// Stops scheduling a job.
    pub fn remove(&mut self, job: &JobId) {
        self.jobs.remove(job);
    }

    /// A run of `job` is going (found at start, or just fired).
    pub fn opened(&mut self, job: JobId, run: Uuid) {
        self.open.insert(job, run);
    }

    /// A run ended; if it was the job's open run, the next slot may run, and a slot queued
    /// behind it (`overlap: queue_one`) is returned to fire now.
    pub fn ended(&mut self, job: &JobId, run: Uuid) -> Option<Fire> {
        if self.open.get(job) != Some(&run) {
            return None;
        }
        self.open.remove(job);
        let entry = self.jobs.get_mut(job)?;
        let slot = entry.queued.take()?;
        Some(Fire {
            job: job.clone(),
            slot,
            overlaps: None,
            missed: Vec::new(),
        })
    }

    /// When the earliest planned slot is due.
    pub fn next_wake(&mut self) -> Option<DateTime<Utc>> {
        while let Some(Reverse((at, job))) = self.timetable.peek() {
            match self.jobs.get(job) {
                Some(entry) if entry.planned == *at => return Some(*at),
                _ => {
                    self.timetable.pop();
                }
            }
        }
        None
    }

    /// Every slot due at `now`, each job at most once, and plans their next slots.
    pub fn fire(&mut self, now: DateTime<Utc>) -> Vec<Fire> {
        let mut fires = Vec::new();
        while let Some(at) = self.next_wake() {
            if at > now {
                break;
            }
            let Some(Reverse((_, id))) = self.timetable.pop() else {
                break;
            };
            let Some(entry) = self.jobs.get_mut(&id) else {
                continue;
            };
            if let Due::Fire { slot, next } = schedule::due(&id, entry.interval, entry.planned, now)
            {
                let (missed, uncounted) =
                    schedule::missed_slots(entry.planned, slot, entry.interval, entry.missed_since);
                if uncounted > 0 {
                    tracing::warn!(job = %id, slots = uncounted, "older slots passed while no dispatcher could fire them; only the latest are recorded as skipped");
                }
                entry.planned = next;
                self.timetable.push(Reverse((next, id.clone())));
                let overlaps = self.open.get(&id).copied();
                if overlaps.is_some()
                    && entry.overlap == Overlap::QueueOne
                    && entry.queued.is_none()
                {
                    // Kept for when the run going ends; later slots are skipped meanwhile.
                    entry.queued = Some(slot);
                    continue;
                }
                fires.push(Fire {
                    job: id.clone(),
                    slot,
                    overlaps,
                    missed,
                });
            }
        }
        fires
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::def;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    #[test]
    fn each_job_fires_once_per_slot_in_time_order() {
        let mut s = Scheduler::default();
        s.define(def("a", 1000).recurring(), at(0));
        s.define(def("b", 1000).recurring(), at(0));
        let mut fired: Vec<(String, i64)> = Vec::new();
        for t in (0..5_000).step_by(50) {
            for f in s.fire(at(t)) {
                assert!(f.slot <= at(t));
                fired.push((f.job.to_string(), f.slot.timestamp_millis()));
            }
        }
        for job in ["a", "b"] {
            let slots: Vec<_> = fired
                .iter()
                .filter(|(j, _)| j == job)
                .map(|(_, s)| *s)
                .collect();
            let offset = schedule::offset_ms(&JobId::parse(job).unwrap(), Duration::from_secs(1));
            // Slots offset, offset+1000, ... up to the last tick at 4950 (none at 0 itself
            // unless the offset is 0, since the first plan is at or after the definition).
            let expected = (offset..=4950).step_by(1000).count();
            assert_eq!(slots.len(), expected, "{job}: {slots:?}");
            assert!(slots.windows(2).all(|w| w[1] - w[0] == 1000));
        }
    }

    #[test]
    fn an_open_run_makes_the_next_slot_a_skip() {
        let mut s = Scheduler::default();
        s.define(def("a", 1000).recurring(), at(0));
        let first = s.fire(at(1000));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].overlaps, None);
        let run = Uuid::new_v4();
        s.opened(JobId::parse("a").unwrap(), run);
        let second = s.fire(at(2000));
        assert_eq!(second[0].overlaps, Some(run));
        s.ended(&JobId::parse("a").unwrap(), run);
        assert_eq!(s.fire(at(3000))[0].overlaps, None);
    }

    #[test]
    fn queue_one_keeps_one_slot_for_when_the_run_ends() {
        let mut s = Scheduler::default();
        let mut job = def("a", 1000);
        job.overlap = Overlap::QueueOne;
        s.define(job.recurring(), at(0));
        let first = s.fire(at(1000));
        assert_eq!(first.len(), 1);
        let id = JobId::parse("a").unwrap();
        let run = Uuid::new_v4();
        s.opened(id.clone(), run);
        // The next slot waits (nothing fired, nothing skipped), the one after is skipped.
        assert!(s.fire(at(2000)).is_empty());
        let third = s.fire(at(3000));
        assert_eq!(third.len(), 1);
        assert_eq!(third[0].overlaps, Some(run));
        // Another run ending changes nothing; the open run ending fires the kept slot.
        assert_eq!(s.ended(&id, Uuid::new_v4()), None);
        let kept = s.ended(&id, run).expect("the kept slot fires");
        assert_eq!(kept.overlaps, None);
        assert!(kept.slot > first[0].slot && kept.slot < third[0].slot);
        assert_eq!(s.ended(&id, run), None, "kept once");
        // Nothing open now: the next slot runs.
        assert_eq!(s.fire(at(4000))[0].overlaps, None);
    }

    #[test]
    fn redefining_and_removing_jobs() {
        let mut s = Scheduler::default();
        s.define(def("a", 1000).recurring(), at(0));
        let planned = s.next_wake().unwrap();
        // Same interval: the plan stands (a resubmitted file changes nothing).
        s.define(def("a", 1000).recurring(), at(500));
        assert_eq!(s.next_wake(), Some(planned));
        // New interval: replanned.
        s.define(def("a", 60_000).recurring(), at(500));
        assert!(s.next_wake().unwrap() >= at(500));
        assert_eq!(s.fire(planned).len(), 0, "the old plan fired");
        s.remove(&JobId::parse("a").unwrap());
        assert_eq!(s.next_wake(), None);
        assert!(s.is_empty());
    }

    #[test]
    fn a_long_pause_fires_each_job_once() {
        let mut s = Scheduler::default();
        for n in 0..10 {
            s.define(def(&format!("j{n}"), 100).recurring(), at(0));
        }
        assert_eq!(s.fire(at(100_000)).len(), 10);
        assert!(s.fire(at(100_000)).is_empty());
    }

    /// A job defined while a dispatcher leads records nothing as missed; one loaded at a
    /// takeover records the slots that passed since its last, the latest firing.
    #[test]
    fn a_takeover_records_the_slots_that_passed_unfired_and_a_new_job_does_not() {
        let mut loaded = def("a", 1000).recurring();
        loaded.last_slot = Some(schedule::slot_at_or_before(
            &loaded.id,
            Duration::from_secs(1),
            at(10_000),
        ));
        let mut s = Scheduler::default();
        s.load(loaded.clone(), at(15_500));
        let fired = s.fire(at(15_500));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].missed.len(), 4, "{:?}", fired[0]);
        assert!(fired[0].missed.iter().all(|m| *m < fired[0].slot));

        let mut s = Scheduler::default();
        s.define(loaded, at(15_500));
        let fired = s.fire(at(15_500));
        assert_eq!(fired.len(), 1);
        assert!(fired[0].missed.is_empty(), "{:?}", fired[0]);
    }

    #[test]
    fn unrecorded_fires_merge_into_one_per_job_its_earlier_slots_missed() {
        let fire = |job: &str, slot: i64, missed: &[i64]| Fire {
            job: JobId::parse(job).unwrap(),
            slot: at(slot),
            overlaps: None,
            missed: missed.iter().map(|m| at(*m)).collect(),
        };
        let merged = merge_unrecorded(vec![
            fire("a", 1000, &[]),
            fire("b", 1500, &[]),
            fire("a", 3000, &[2000]),
            fire("a", 4000, &[]),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].job.as_str(), "a");
        assert_eq!(merged[0].slot, at(4000));
        assert_eq!(merged[0].missed, vec![at(1000), at(2000), at(3000)]);
        assert_eq!(merged[1].slot, at(1500));
        assert!(merged[1].missed.is_empty());
    }
}
