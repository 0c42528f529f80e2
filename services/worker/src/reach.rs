//! Pure: which SNMP agents answer (Zabbix's unreachable state, with faro's own defaults).
//!
//! After `after` timeouts in a row, an address is unreachable: its runs fail at once with
//! `target_unreachable` instead of each holding a worker slot (and a target slot) for a full
//! timeout. Every `delay`, one run goes through as a probe; the first answer makes the address
//! reachable again. Any answer, even an SNMP error, counts as an answer: only silence counts
//! against an address. Time is passed in, so every transition is tested without waiting.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What a run of an address may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Poll as usual.
    Go,
    /// Poll: the one probe of an unreachable address.
    Probe,
    /// Do not poll: the address is unreachable, and the next probe is `next_probe` from now.
    Unreachable {
        timeouts: u32,
        for_how_long: Duration,
        next_probe: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Reachable {
        timeouts: u32,
    },
    Unreachable {
        since: Instant,
        timeouts: u32,
        probe_at: Instant,
        probing: bool,
    },
}

/// What a result changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    BecameUnreachable,
    BecameReachable,
}

#[derive(Debug)]
pub struct Reachability {
    after: u32,
    delay: Duration,
    addresses: HashMap<String, State>,
}

impl Reachability {
    /// `after` consecutive timeouts make an address unreachable (at least 1); a probe goes
    /// every `delay`.
    pub fn new(after: u32, delay: Duration) -> Self {
        Self {
            after: after.max(1),
            delay,
            addresses: HashMap::new(),
        }
    }

    /// Whether a run of `address` may poll now.
    pub fn admit(&mut self, address: &str, now: Instant) -> Gate {
        match self.addresses.get_mut(address) {
            None | Some(State::Reachable { .. }) => Gate::Go,
            Some(State::Unreachable {
                since,
                timeouts,
                probe_at,
                probing,
            }) => {
                if !*probing && now >= *probe_at {
                    *probing = true;
                    Gate::Probe
                } else {
                    Gate::Unreachable {
                        timeouts: *timeouts,
                        for_how_long: now.saturating_duration_since(*since),
                        next_probe: probe_at.saturating_duration_since(now),
                    }
                }
            }
        }
    }

    /// The agent answered (anything, even an error).
    pub fn answered(&mut self, address: &str) -> Option<Change> {
        match self.addresses.remove(address) {
            Some(State::Unreachable { .. }) => Some(Change::BecameReachable),
            _ => None,
        }
    }

    /// A request of `address` got no answer, retries included.
    pub fn timed_out(&mut self, address: &str, now: Instant) -> Option<Change> {
        let state = self
            .addresses
            .entry(address.to_owned())
            .or_insert(State::Reachable { timeouts: 0 });
        match state {
            State::Reachable { timeouts } => {
                *timeouts += 1;
                if *timeouts >= self.after {
                    *state = State::Unreachable {
                        since: now,
                        timeouts: *timeouts,
                        probe_at: now + self.delay,
                        probing: false,
                    };
                    return Some(Change::BecameUnreachable);
                }
                None
            }
            State::Unreachable {
                timeouts,
                probe_at,
                probing,
                ..
            } => {
                *timeouts += 1;
                *probe_at = now + self.delay;
                *probing = false;
                None
            }
        }
    }

    /// A probe that ended without saying anything (the run was cancelled or aborted): the
    /// next run may probe.
    pub fn probe_abandoned(&mut self, address: &str) {
        if let Some(State::Unreachable { probing, .. }) = self.addresses.get_mut(address) {
            *probing = false;
        }
    }

    /// Addresses unreachable now.
    pub fn unreachable(&self) -> usize {
        self.addresses
            .values()
            .filter(|s| matches!(s, State::Unreachable { .. }))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: &str = "10.0.0.1:161";

    #[test]
    fn three_timeouts_in_a_row_make_it_unreachable_and_an_answer_resets_the_count() {
        let t0 = Instant::now();
        let mut r = Reachability::new(3, Duration::from_secs(30));
        assert_eq!(r.timed_out(A, t0), None);
        assert_eq!(r.timed_out(A, t0), None);
        assert_eq!(r.answered(A), None);
        assert_eq!(r.timed_out(A, t0), None);
        assert_eq!(r.timed_out(A, t0), None);
        assert_eq!(r.admit(A, t0), Gate::Go);
        assert_eq!(r.timed_out(A, t0), Some(Change::BecameUnreachable));
        assert_eq!(r.unreachable(), 1);
        assert_eq!(
            r.admit(A, t0 + Duration::from_secs(10)),
            Gate::Unreachable {
                timeouts: 3,
                for_how_long: Duration::from_secs(10),
                next_probe: Duration::from_secs(20)
            }
        );
        // Other addresses are not affected.
        assert_eq!(r.admit("10.0.0.2:161", t0), Gate::Go);
    }

    #[test]
    fn one_probe_per_delay_and_the_first_answer_makes_it_reachable() {
        let t0 = Instant::now();
        let mut r = Reachability::new(1, Duration::from_secs(30));
        r.timed_out(A, t0);
        let later = t0 + Duration::from_secs(30);
        assert_eq!(r.admit(A, later), Gate::Probe);
        // While the probe runs, the others still fail fast.
        assert!(matches!(r.admit(A, later), Gate::Unreachable { .. }));
        // The probe timed out: the next one is a delay later.
        assert_eq!(r.timed_out(A, later), None);
        assert!(matches!(
            r.admit(A, later + Duration::from_secs(29)),
            Gate::Unreachable { timeouts: 2, .. }
        ));
        assert_eq!(r.admit(A, later + Duration::from_secs(30)), Gate::Probe);
        assert_eq!(r.answered(A), Some(Change::BecameReachable));
        assert_eq!(r.admit(A, later + Duration::from_secs(30)), Gate::Go);
        assert_eq!(r.unreachable(), 0);
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_run_probe() {
        let t0 = Instant::now();
        let mut r = Reachability::new(1, Duration::ZERO);
        r.timed_out(A, t0);
        assert_eq!(r.admit(A, t0), Gate::Probe);
        r.probe_abandoned(A);
        assert_eq!(r.admit(A, t0), Gate::Probe);
    }

    proptest! {
        /// Whatever happens, an address is unreachable only after `after` timeouts with no
        /// answer since, and never two probes are out at once.
        #[test]
        fn unreachable_only_after_enough_silence(
            events in proptest::collection::vec(0u8..3, 0..60),
            after in 1u32..5,
        ) {
            let t0 = Instant::now();
            let mut r = Reachability::new(after, Duration::from_secs(5));
            let mut silent = 0u32;
            let mut probes_out = 0u32;
            for (i, event) in events.into_iter().enumerate() {
                let now = t0 + Duration::from_secs(i as u64);
                match event {
                    0 => {
                        silent += 1;
                        r.timed_out(A, now);
                        probes_out = 0;
                    }
                    1 => {
                        silent = 0;
                        r.answered(A);
                        probes_out = 0;
                    }
                    _ => {
                        if r.admit(A, now) == Gate::Probe {
                            probes_out += 1;
                        }
                    }
                }
                prop_assert!(probes_out <= 1);
                prop_assert_eq!(r.unreachable() == 1, silent >= after);
            }
        }
    }
}
