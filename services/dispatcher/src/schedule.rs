//! Pure: when a recurring job is due.
//!
//! Slots of a job with interval `i` are `k*i + offset`, where `offset` is a stable hash of the
//! job id modulo `i` (Zabbix's `delay*floor(t/delay) + seed mod delay`): jobs with the same
//! interval spread over it instead of firing in the same second, and the spread survives
//! restarts. A job late by more than one interval (downtime, a clock jump) fires once, for its
//! latest slot, and realigns: missed slots are never fired in a burst.

use std::time::Duration;

use chrono::{DateTime, Utc};
use faro_shared::domain::JobId;

/// Shortest interval accepted for a recurring job.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The job's place inside its interval, in milliseconds.
pub fn offset_ms(job: &JobId, interval: Duration) -> i64 {
    let interval_ms = interval_ms(interval);
    let hash = job
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
        });
    i64::try_from(hash % interval_ms.unsigned_abs()).unwrap_or(0)
}

fn interval_ms(interval: Duration) -> i64 {
    i64::try_from(interval.as_millis())
        .unwrap_or(i64::MAX)
        .max(1)
}

/// The latest slot at or before `t`.
pub fn slot_at_or_before(job: &JobId, interval: Duration, t: DateTime<Utc>) -> DateTime<Utc> {
    let i = interval_ms(interval);
    let offset = offset_ms(job, interval);
    let k = (t.timestamp_millis() - offset).div_euclid(i);
    DateTime::from_timestamp_millis(k * i + offset).unwrap_or(t)
}

/// The first slot at or after `t`.
pub fn slot_at_or_after(job: &JobId, interval: Duration, t: DateTime<Utc>) -> DateTime<Utc> {
    let before = slot_at_or_before(job, interval, t);
    if before == t {
        t
    } else {
        before + chrono::Duration::milliseconds(interval_ms(interval))
    }
}

/// The id of the run of `job`'s slot at `slot`: a UUIDv7 of the slot's millisecond whose other
/// bits hash the job and the slot. Every dispatcher derives the same id for a slot, so the
/// primary key of `runs` records each slot once however many try, and the run lands in the
/// day of history of its slot.
pub fn slot_run_id(job: &JobId, slot: DateTime<Utc>) -> uuid::Uuid {
    let ms = slot.timestamp_millis();
    let fnv = |seed: u64| {
        job.as_str()
            .bytes()
            .chain(ms.to_be_bytes())
            .fold(seed, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
            })
    };
    let (high, low) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
    let mut bits = [0u8; 10];
    bits[..8].copy_from_slice(&high.to_be_bytes());
    bits[8..].copy_from_slice(&low.to_be_bytes()[..2]);
    uuid::Builder::from_unix_timestamp_millis(u64::try_from(ms).unwrap_or(0), &bits).into_uuid()
}

/// What to do about a job whose planned slot is `planned`, at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Not yet: wake at `planned`.
    Wait(DateTime<Utc>),
    /// Fire once for `slot`; plan `next`.
    Fire {
        slot: DateTime<Utc>,
        next: DateTime<Utc>,
    },
}

/// Decides whether `planned` is due. When several slots were missed, only the latest fires.
pub fn due(job: &JobId, interval: Duration, planned: DateTime<Utc>, now: DateTime<Utc>) -> Due {
    if planned > now {
        return Due::Wait(planned);
    }
    let latest = slot_at_or_before(job, interval, now).max(planned);
    Due::Fire {
        slot: latest,
        next: latest + chrono::Duration::milliseconds(interval_ms(interval)),
    }
}

/// The most slots passed over that one fire records as skipped; older ones are only counted
/// in the log.
pub const MAX_MISSED: usize = 100;

/// Pure: the slots from `planned` (a slot of the job) up to, not including, `fired`, that
/// came due at or after `since`: slots that passed while no dispatcher could fire them, to be
/// recorded as skipped. At most the latest [`MAX_MISSED`]; the second value counts the others.
pub fn missed_slots(
    planned: DateTime<Utc>,
    fired: DateTime<Utc>,
    interval: Duration,
    since: DateTime<Utc>,
) -> (Vec<DateTime<Utc>>, u64) {
    let step = interval_ms(interval);
    let first = if planned >= since {
        planned
    } else {
        // The first slot at or after `since`, on the job's grid.
        let behind = (since - planned).num_milliseconds();
        planned
            + chrono::Duration::milliseconds(
                behind.div_euclid(step) * step + if behind % step == 0 { 0 } else { step },
            )
    };
    if first >= fired {
        return (Vec::new(), 0);
    }
    let count =
        u64::try_from((fired - first).num_milliseconds().saturating_sub(1) / step + 1).unwrap_or(0);
    let kept = count.min(MAX_MISSED as u64);
    let start = fired - chrono::Duration::milliseconds(i64::try_from(kept).unwrap_or(0) * step);
    let slots = (0..kept)
        .map(|k| start + chrono::Duration::milliseconds(i64::try_from(k).unwrap_or(0) * step))
        .collect();
    (slots, count - kept)
}

/// The slot to plan when a job is loaded: the one after its last fired slot (possibly in the
/// past, so a job down for a while fires once at start), or the next one for a new job.
pub fn first_planned(
    job: &JobId,
    interval: Duration,
    last_slot: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    match last_slot {
        Some(last) => slot_at_or_after(job, interval, last + chrono::Duration::milliseconds(1)),
        None => slot_at_or_after(job, interval, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn job(i: usize) -> JobId {
        JobId::parse(format!("job-{i}")).unwrap()
    }

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    #[test]
    fn a_slot_has_one_run_id_made_at_its_time() {
        let slot = at(1_764_590_400_123);
        let id = slot_run_id(&job(1), slot);
        assert_eq!(id, slot_run_id(&job(1), slot));
        assert_eq!(id.get_version_num(), 7);
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        assert_eq!(
            i64::try_from(secs).unwrap() * 1000 + i64::from(nanos / 1_000_000),
            slot.timestamp_millis()
        );
        assert_ne!(id, slot_run_id(&job(2), slot));
        assert_ne!(id, slot_run_id(&job(1), at(1_764_590_400_124)));
        // Neither a job's slots nor many jobs' same slot share an id.
        let ids: std::collections::HashSet<_> = (0..10_000)
            .map(|i| slot_run_id(&job(i), slot))
            .chain((0..10_000).map(|k| slot_run_id(&job(1), at(1_764_590_400_000 + k * 60_000))))
            .collect();
        assert_eq!(ids.len(), 20_000);
    }

    #[test]
    fn slots_passed_over_are_listed_from_when_they_count_and_bounded() {
        let i = Duration::from_secs(10);
        // Fired at 100 s, planned at 40 s: 40, 50, ..., 90 were passed over.
        let (slots, more) = missed_slots(at(40_000), at(100_000), i, at(0));
        assert_eq!(slots, (4..10).map(|k| at(k * 10_000)).collect::<Vec<_>>());
        assert_eq!(more, 0);
        // Only those at or after `since`, on the grid.
        let (slots, _) = missed_slots(at(40_000), at(100_000), i, at(75_000));
        assert_eq!(slots, vec![at(80_000), at(90_000)]);
        let (slots, _) = missed_slots(at(40_000), at(100_000), i, at(80_000));
        assert_eq!(slots, vec![at(80_000), at(90_000)]);
        // On time: nothing.
        assert_eq!(
            missed_slots(at(100_000), at(100_000), i, at(0)),
            (Vec::new(), 0)
        );
        // A long gap: the latest MAX_MISSED, the rest counted.
        let (slots, more) = missed_slots(at(0), at(10_000_000), i, at(0));
        assert_eq!(slots.len(), MAX_MISSED);
        assert_eq!(*slots.last().unwrap(), at(9_990_000));
        assert_eq!(more, 1000 - MAX_MISSED as u64);
    }

    #[test]
    fn slots_repeat_every_interval_at_a_stable_offset() {
        let i = Duration::from_secs(60);
        let j = job(1);
        let s1 = slot_at_or_after(&j, i, at(1_700_000_000_000));
        let s2 = slot_at_or_after(&j, i, s1 + chrono::Duration::milliseconds(1));
        assert_eq!((s2 - s1).num_milliseconds(), 60_000);
        assert_eq!(s1.timestamp_millis().rem_euclid(60_000), offset_ms(&j, i));
        assert_eq!(slot_at_or_after(&j, i, s1), s1);
    }

    #[test]
    fn many_jobs_spread_over_the_interval() {
        // 100,000 jobs at 300 s: no second holds more than a few times its fair share.
        let i = Duration::from_secs(300);
        let mut per_second = vec![0u32; 300];
        for n in 0..100_000 {
            per_second[(offset_ms(&job(n), i) / 1000) as usize] += 1;
        }
        let fair = 100_000 / 300;
        let busiest = *per_second.iter().max().unwrap();
        assert!(
            busiest < fair * 2,
            "busiest second has {busiest}, fair share {fair}"
        );
        assert!(per_second.iter().all(|n| *n > 0));
    }

    #[test]
    fn a_job_late_by_many_intervals_fires_once_and_realigns() {
        let i = Duration::from_secs(10);
        let j = job(7);
        let planned = slot_at_or_after(&j, i, at(1_000_000));
        let now = planned + chrono::Duration::seconds(95);
        let Due::Fire { slot, next } = due(&j, i, planned, now) else {
            panic!("not due");
        };
        assert!(slot <= now && now - slot < chrono::Duration::seconds(10));
        assert!(next > now);
        // The next decision waits: no burst of the nine missed slots.
        assert_eq!(due(&j, i, next, now), Due::Wait(next));
    }

    #[test]
    fn a_job_loaded_after_downtime_fires_at_once_then_keeps_its_rhythm() {
        let i = Duration::from_secs(10);
        let j = job(3);
        let last = slot_at_or_after(&j, i, at(5_000_000));
        let now = last + chrono::Duration::seconds(37);
        let planned = first_planned(&j, i, Some(last), now);
        assert_eq!(planned, last + chrono::Duration::seconds(10));
        assert!(matches!(due(&j, i, planned, now), Due::Fire { .. }));
        let fresh = first_planned(&j, i, None, now);
        assert!(fresh >= now && fresh - now <= chrono::Duration::seconds(10));
    }

    proptest! {
        /// Following the decisions from any start, every fired slot is a slot of the job,
        /// each fires at most once, in order, and never before it is due.
        #[test]
        fn slots_fire_once_in_order_and_never_early(
            n in 0usize..1000,
            interval_ms in 100u64..100_000,
            start in 0i64..10_000_000,
            steps in proptest::collection::vec(1i64..250_000, 1..60),
        ) {
            let i = Duration::from_millis(interval_ms);
            let j = job(n);
            let mut now = at(start);
            let mut planned = first_planned(&j, i, None, now);
            let mut fired: Vec<DateTime<Utc>> = Vec::new();
            for step in steps {
                now += chrono::Duration::milliseconds(step);
                loop {
                    match due(&j, i, planned, now) {
                        Due::Wait(_) => break,
                        Due::Fire { slot, next } => {
                            prop_assert!(slot <= now);
                            prop_assert_eq!(slot_at_or_before(&j, i, slot), slot);
                            if let Some(last) = fired.last() {
                                prop_assert!(slot > *last);
                            }
                            fired.push(slot);
                            prop_assert!(next > now);
                            planned = next;
                        }
                    }
                }
            }
        }
    }
}
