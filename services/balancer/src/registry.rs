//! Pure: the worker registry, each worker's state from the age of its last heartbeat.
//!
//! A worker is `active` while it beats; `unstable` once a beat is missed (no beat for one and a
//! half intervals); `lost` after `max_missed` missed beats; `left` when it deleted its key on a
//! clean shutdown. A lost or unstable worker that beats again has `recovered`; a left one that
//! comes back has `joined` again. Times are the NATS server's (the heartbeat entry's creation),
//! so a worker's clock does not matter.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use faro_shared::domain::WorkerId;
use faro_shared::messages::Heartbeat;

/// A worker's state in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RegState {
    Active,
    Unstable,
    Lost,
    Left,
}

impl RegState {
    pub fn as_str(self) -> &'static str {
        match self {
            RegState::Active => "active",
            RegState::Unstable => "unstable",
            RegState::Lost => "lost",
            RegState::Left => "left",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            RegState::Active,
            RegState::Unstable,
            RegState::Lost,
            RegState::Left,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// What happened to a worker, recorded in `worker_events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Joined,
    Unstable,
    Lost,
    Recovered,
    Left,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Joined => "joined",
            EventKind::Unstable => "unstable",
            EventKind::Lost => "lost",
            EventKind::Recovered => "recovered",
            EventKind::Left => "left",
        }
    }
}

/// One registry event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub worker: WorkerId,
    pub kind: EventKind,
    pub at: DateTime<Utc>,
    /// Beats missed in a row when it happened.
    pub missed: u64,
    /// The state it came from, for a recovery.
    pub from: Option<RegState>,
}

/// One worker in the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub state: RegState,
    pub first_seen: DateTime<Utc>,
    /// When its last beat was stored.
    pub last_seen: DateTime<Utc>,
    pub beats_received: u64,
    pub beats_missed: u64,
    /// Beats missed since the last one (already added to `beats_missed`).
    pub missed_now: u64,
    /// Its last heartbeat; `None` for an entry loaded without one.
    pub beat: Option<Heartbeat>,
    /// Changed since it was last saved.
    pub dirty: bool,
}

/// Every worker ever seen, by id.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    pub workers: BTreeMap<WorkerId, Entry>,
}

/// Beats missed after `age` without one, at `interval`: none until one and a half intervals.
pub fn missed(age: chrono::Duration, interval: chrono::Duration) -> u64 {
    if interval <= chrono::Duration::zero() {
        return 0;
    }
    let slack = age - interval / 2;
    if slack < interval {
        return 0;
    }
    (slack.num_milliseconds() / interval.num_milliseconds().max(1)) as u64
}

impl Registry {
    /// A beat stored at `at`.
    pub fn beat(&mut self, beat: Heartbeat, at: DateTime<Utc>) -> Option<Event> {
        let id = beat.worker_id.clone();
        let interval = interval_of(&beat);
        let Some(entry) = self.workers.get_mut(&id) else {
            self.workers.insert(
                id.clone(),
                Entry {
                    state: RegState::Active,
                    first_seen: at,
                    last_seen: at,
                    beats_received: 1,
                    beats_missed: 0,
                    missed_now: 0,
                    beat: Some(beat),
                    dirty: true,
                },
            );
            return Some(event(id, EventKind::Joined, at, 0, None));
        };
        if at <= entry.last_seen {
            // A beat already counted, seen again (a restarted watch), or an older one.
            return None;
        }
        let gap_missed = missed(at - entry.last_seen, interval);
        if entry.state != RegState::Left {
            entry.beats_missed += gap_missed.saturating_sub(entry.missed_now);
        }
        let before = entry.state;
        let missed_then = gap_missed.max(entry.missed_now);
        entry.state = RegState::Active;
        entry.last_seen = at;
        entry.beats_received += 1;
        entry.missed_now = 0;
        entry.beat = Some(beat);
        entry.dirty = true;
        match before {
            RegState::Active => None,
            RegState::Left => {
                entry.first_seen = at;
                Some(event(id, EventKind::Joined, at, 0, None))
            }
            RegState::Unstable | RegState::Lost => Some(event(
                id,
                EventKind::Recovered,
                at,
                missed_then,
                Some(before),
            )),
        }
    }

    /// The worker deleted its key: a clean shutdown.
    pub fn left(&mut self, id: &WorkerId, at: DateTime<Utc>) -> Option<Event> {
        let entry = self.workers.get_mut(id)?;
        if entry.state == RegState::Left {
            return None;
        }
        entry.state = RegState::Left;
        entry.dirty = true;
        Some(event(
            id.clone(),
            EventKind::Left,
            at,
            entry.missed_now,
            None,
        ))
    }

    /// Ages every worker at `now`: a missed beat makes it unstable, `max_missed` lost.
    pub fn tick(&mut self, now: DateTime<Utc>, max_missed: u64) -> Vec<Event> {
        let mut events = Vec::new();
        for (id, entry) in &mut self.workers {
            if matches!(entry.state, RegState::Left | RegState::Lost) {
                continue;
            }
            let interval = entry
                .beat
                .as_ref()
                .map_or(chrono::Duration::seconds(5), interval_of);
            let missed = missed(now - entry.last_seen, interval);
            if missed > entry.missed_now {
                entry.beats_missed += missed - entry.missed_now;
                entry.missed_now = missed;
                entry.dirty = true;
            }
            let next = if missed >= max_missed.max(1) {
                RegState::Lost
            } else if missed >= 1 {
                RegState::Unstable
            } else {
                RegState::Active
            };
            if next != entry.state {
                entry.state = next;
                entry.dirty = true;
                let kind = match next {
                    RegState::Lost => EventKind::Lost,
                    _ => EventKind::Unstable,
                };
                events.push(event(id.clone(), kind, now, missed, None));
            }
        }
        events
    }

    /// When the first active worker becomes unstable if it does not beat before: a cycle
    /// then replaces a dead worker without waiting for the next `cycle_interval`.
    pub fn next_unstable(&self) -> Option<DateTime<Utc>> {
        self.workers
            .values()
            .filter(|e| e.state == RegState::Active)
            .map(|e| {
                let interval = e
                    .beat
                    .as_ref()
                    .map_or(chrono::Duration::seconds(5), interval_of);
                e.last_seen + interval + interval / 2
            })
            .min()
    }

    /// Forgets lost and left workers not seen since `cutoff` (their rows stay in `workers`):
    /// workers named after short-lived containers do not pile up. Returns how many.
    pub fn forget_before(&mut self, cutoff: DateTime<Utc>) -> usize {
        let before = self.workers.len();
        self.workers.retain(|_, e| {
            matches!(e.state, RegState::Active | RegState::Unstable) || e.last_seen >= cutoff
        });
        before - self.workers.len()
    }

    /// Workers the balancer assigns: active and unstable ones.
    pub fn live(&self) -> impl Iterator<Item = (&WorkerId, &Entry)> {
        self.workers
            .iter()
            .filter(|(_, e)| matches!(e.state, RegState::Active | RegState::Unstable))
    }

    /// The longest heartbeat interval among live workers: how long the heartbeat watch may
    /// be quiet while it works. `None` when no worker is live.
    pub fn longest_beat_interval(&self) -> Option<std::time::Duration> {
        self.live()
            .filter_map(|(_, entry)| entry.beat.as_ref())
            .map(|beat| std::time::Duration::from_millis(u64::from(beat.interval_ms.max(1))))
            .max()
    }
}

fn interval_of(beat: &Heartbeat) -> chrono::Duration {
    chrono::Duration::milliseconds(i64::from(beat.interval_ms.max(1)))
}

fn event(
    worker: WorkerId,
    kind: EventKind,
    at: DateTime<Utc>,
    missed: u64,
    from: Option<RegState>,
) -> Event {
    Event {
        worker,
        kind,
        at,
        missed,
        from,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn hb(id: &str) -> Heartbeat {
        let mut beat = crate::fixtures::beat(id, "default", t(0));
        beat.capacity = 4;
        beat.kinds = vec![];
        beat
    }

    fn kinds(events: &[Event]) -> Vec<&'static str> {
        events.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn the_longest_beat_interval_is_of_live_workers_only() {
        let mut reg = Registry::default();
        assert_eq!(reg.longest_beat_interval(), None);
        let slow = Heartbeat {
            interval_ms: 20_000,
            ..hb("slow")
        };
        reg.beat(hb("w1"), t(0));
        reg.beat(slow, t(0));
        assert_eq!(
            reg.longest_beat_interval(),
            Some(std::time::Duration::from_secs(20))
        );
        // The slow one leaves: the watch is then expected to hear from w1 every 5 s.
        reg.left(&WorkerId::parse("slow").unwrap(), t(1));
        assert_eq!(
            reg.longest_beat_interval(),
            Some(std::time::Duration::from_secs(5))
        );
        reg.tick(t(60), 5);
        assert_eq!(
            reg.longest_beat_interval(),
            None,
            "a lost worker beats no more"
        );
    }

    #[test]
    fn the_next_instability_is_due_when_the_oldest_active_beat_is_missed() {
        let mut reg = Registry::default();
        assert_eq!(reg.next_unstable(), None);
        reg.beat(hb("w1"), t(0));
        reg.beat(hb("w2"), t(3));
        assert_eq!(
            reg.next_unstable(),
            Some(t(0) + chrono::Duration::milliseconds(7500))
        );
        // Once w1 is unstable, only w2 can become so next.
        assert_eq!(
            kinds(&reg.tick(t(0) + chrono::Duration::milliseconds(7500), 5)),
            ["unstable"]
        );
        assert_eq!(
            reg.next_unstable(),
            Some(t(3) + chrono::Duration::milliseconds(7500))
        );
    }

    #[test]
    fn missed_beats_count_from_one_and_a_half_intervals() {
        let i = chrono::Duration::seconds(5);
        assert_eq!(missed(chrono::Duration::seconds(5), i), 0);
        assert_eq!(missed(chrono::Duration::milliseconds(7400), i), 0);
        assert_eq!(missed(chrono::Duration::milliseconds(7500), i), 1);
        assert_eq!(missed(chrono::Duration::milliseconds(27_500), i), 5);
    }

    #[test]
    fn a_silent_worker_becomes_unstable_then_lost_then_recovers() {
        let mut reg = Registry::default();
        let id = WorkerId::parse("w1").unwrap();
        assert_eq!(reg.beat(hb("w1"), t(0)).unwrap().kind, EventKind::Joined);
        assert!(reg.beat(hb("w1"), t(5)).is_none());
        assert!(reg.tick(t(10), 5).is_empty());
        assert_eq!(kinds(&reg.tick(t(13), 5)), ["unstable"]);
        assert_eq!(reg.workers[&id].state, RegState::Unstable);
        assert!(reg.tick(t(20), 5).is_empty());
        let lost = reg.tick(t(33), 5);
        assert_eq!(kinds(&lost), ["lost"]);
        assert_eq!(lost[0].missed, 5);
        assert_eq!(reg.live().count(), 0);
        let back = reg.beat(hb("w1"), t(40)).unwrap();
        assert_eq!(back.kind, EventKind::Recovered);
        assert_eq!(back.from, Some(RegState::Lost));
        let entry = &reg.workers[&id];
        assert_eq!(entry.state, RegState::Active);
        assert_eq!(entry.beats_received, 3);
        // 35 s without a beat at 5 s: 6 missed.
        assert_eq!(entry.beats_missed, 6);
    }

    #[test]
    fn a_clean_shutdown_is_left_and_a_return_is_a_new_join() {
        let mut reg = Registry::default();
        let id = WorkerId::parse("w1").unwrap();
        reg.beat(hb("w1"), t(0));
        assert_eq!(reg.left(&id, t(2)).unwrap().kind, EventKind::Left);
        assert!(reg.left(&id, t(3)).is_none());
        assert!(reg.tick(t(100), 5).is_empty(), "a left worker is not lost");
        assert_eq!(reg.beat(hb("w1"), t(200)).unwrap().kind, EventKind::Joined);
        assert_eq!(reg.workers[&id].first_seen, t(200));
    }

    #[test]
    fn only_long_gone_workers_are_forgotten() {
        let mut reg = Registry::default();
        reg.beat(hb("gone"), t(0));
        reg.beat(hb("quiet"), t(0));
        reg.beat(hb("recent"), t(0));
        reg.left(&WorkerId::parse("gone").unwrap(), t(1));
        reg.tick(t(100), 5);
        reg.beat(hb("recent"), t(100));
        // "quiet" is lost since t(0); "recent" is active.
        assert_eq!(reg.forget_before(t(50)), 2);
        assert_eq!(
            reg.workers.keys().map(WorkerId::as_str).collect::<Vec<_>>(),
            ["recent"]
        );
    }

    #[test]
    fn a_late_old_beat_changes_nothing() {
        let mut reg = Registry::default();
        reg.beat(hb("w1"), t(10));
        assert!(reg.beat(hb("w1"), t(5)).is_none());
        assert_eq!(
            reg.workers[&WorkerId::parse("w1").unwrap()].last_seen,
            t(10)
        );
    }
}
