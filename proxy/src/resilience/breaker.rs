//! The circuit breaker of one deployment (a model on a provider). Closed, it counts calls
//! and failures over a sliding window; too many failures in a row, or too high a share of
//! them, open it. Open, it refuses calls (the router goes around it, a named model answers
//! 503 with `Retry-After`) until `open_for` has passed; then it is half-open: a few probe
//! calls go through, and the first outcome closes it again or reopens it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use thinkgate_config::BreakerPolicy;

/// Slots the failure-rate window is cut into: the window slides by a tenth at a time.
const SLOTS: u32 = 10;

/// What the breaker does with calls, for metrics and `route --explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }

    /// The gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

/// A change of state, for the transition counter and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition(pub BreakerState);

#[derive(Debug)]
pub struct Breaker {
    policy: BreakerPolicy,
    origin: Instant,
    slot_len: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    consecutive_failures: u32,
    slots: [Slot; SLOTS as usize],
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    /// `sent` probes went out since `since`; probes never answered (their request was
    /// dropped) stop counting after `open_for`.
    HalfOpen {
        sent: u32,
        since: Instant,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    epoch: u64,
    calls: u32,
    failures: u32,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy, origin: Instant) -> Self {
        let slot_len = (policy.window / SLOTS).max(Duration::from_millis(1));
        Breaker {
            policy,
            origin,
            slot_len,
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                consecutive_failures: 0,
                slots: [Slot::default(); SLOTS as usize],
            }),
        }
    }

    pub fn policy(&self) -> &BreakerPolicy {
        &self.policy
    }

    /// Whether a call may go now (`Err`: how long until it may); a half-open breaker lets
    /// its probes through one by one.
    pub fn allow(&self, now: Instant) -> (Result<(), Duration>, Option<Transition>) {
        let Ok(mut inner) = self.inner.lock() else {
            return (Ok(()), None);
        };
        match inner.phase {
            Phase::Closed => (Ok(()), None),
            Phase::Open { until } if now < until => (Err(until - now), None),
            Phase::Open { .. } => {
                inner.phase = Phase::HalfOpen {
                    sent: 1,
                    since: now,
                };
                (Ok(()), Some(Transition(BreakerState::HalfOpen)))
            }
            Phase::HalfOpen { sent, since } => {
                if sent < self.policy.half_open_probes {
                    inner.phase = Phase::HalfOpen {
                        sent: sent + 1,
                        since,
                    };
                    (Ok(()), None)
                } else if now.saturating_duration_since(since) >= self.policy.open_for {
                    // The probes were lost (cancelled before an outcome): probe again.
                    inner.phase = Phase::HalfOpen {
                        sent: 1,
                        since: now,
                    };
                    (Ok(()), None)
                } else {
                    (Err(since + self.policy.open_for - now), None)
                }
            }
        }
    }

    /// Counts a call's outcome.
    pub fn record(&self, now: Instant, succeeded: bool) -> Option<Transition> {
        let mut inner = self.inner.lock().ok()?;
        match inner.phase {
            Phase::HalfOpen { .. } if succeeded => {
                inner.close();
                Some(Transition(BreakerState::Closed))
            }
            Phase::HalfOpen { .. } => {
                inner.open(now + self.policy.open_for);
                Some(Transition(BreakerState::Open))
            }
            // A call let through before the breaker opened: the decision is made.
            Phase::Open { .. } => None,
            Phase::Closed => {
                let epoch = self.epoch(now);
                let slot = inner.slot(epoch);
                slot.calls = slot.calls.saturating_add(1);
                if succeeded {
                    inner.consecutive_failures = 0;
                    return None;
                }
                slot.failures = slot.failures.saturating_add(1);
                inner.consecutive_failures += 1;
                let (calls, failures) = inner.window(epoch);
                let by_rate = calls >= u64::from(self.policy.min_calls)
                    && failures as f64 >= self.policy.failure_rate * calls as f64;
                if inner.consecutive_failures >= self.policy.consecutive_failures || by_rate {
                    inner.open(now + self.policy.open_for);
                    return Some(Transition(BreakerState::Open));
                }
                None
            }
        }
    }

    /// The state as calls would meet it now, and how long an open breaker stays open.
    pub fn state(&self, now: Instant) -> (BreakerState, Option<Duration>) {
        let Ok(inner) = self.inner.lock() else {
            return (BreakerState::Closed, None);
        };
        match inner.phase {
            Phase::Closed => (BreakerState::Closed, None),
            Phase::Open { until } if now < until => (BreakerState::Open, Some(until - now)),
            Phase::Open { .. } => (BreakerState::HalfOpen, None),
            Phase::HalfOpen { sent, since } => {
                let waiting = sent >= self.policy.half_open_probes
                    && now.saturating_duration_since(since) < self.policy.open_for;
                let left = waiting.then(|| since + self.policy.open_for - now);
                (BreakerState::HalfOpen, left)
            }
        }
    }

    /// Failures in a row (for `route --explain`).
    pub fn consecutive_failures(&self) -> u32 {
        self.inner.lock().map_or(0, |i| i.consecutive_failures)
    }

    fn epoch(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_nanos() / self.slot_len.as_nanos()) as u64
    }
}

impl Inner {
    fn slot(&mut self, epoch: u64) -> &mut Slot {
        let slot = &mut self.slots[(epoch % u64::from(SLOTS)) as usize];
        if slot.epoch != epoch {
            *slot = Slot {
                epoch,
                ..Slot::default()
            };
        }
        slot
    }

    /// Calls and failures in the window ending at `epoch`.
    fn window(&self, epoch: u64) -> (u64, u64) {
        self.slots
            .iter()
            .filter(|s| s.epoch <= epoch && epoch - s.epoch < u64::from(SLOTS))
            .fold((0, 0), |(c, f), s| {
                (c + u64::from(s.calls), f + u64::from(s.failures))
            })
    }

    fn open(&mut self, until: Instant) {
        self.phase = Phase::Open { until };
    }

    fn close(&mut self) {
        self.phase = Phase::Closed;
        self.consecutive_failures = 0;
        self.slots = [Slot::default(); SLOTS as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            consecutive_failures: 3,
            failure_rate: 0.5,
            window: Duration::from_secs(10),
            min_calls: 10,
            open_for: Duration::from_secs(5),
            half_open_probes: 1,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn failures_in_a_row_open_it_and_a_success_in_between_resets_the_count() {
        let t0 = Instant::now();
        let b = Breaker::new(policy(), t0);
        assert_eq!(b.record(t0, false), None);
        assert_eq!(b.record(t0, false), None);
        assert_eq!(b.record(t0, true), None);
        assert_eq!(b.record(t0, false), None);
        assert_eq!(b.record(t0, false), None);
        assert_eq!(b.record(t0, false), Some(Transition(BreakerState::Open)));
        assert_eq!(b.allow(t0 + secs(1)).0, Err(secs(4)));
        assert_eq!(b.state(t0 + secs(1)), (BreakerState::Open, Some(secs(4))));
    }

    #[test]
    fn a_high_failure_rate_opens_it_without_failures_in_a_row() {
        let t0 = Instant::now();
        let b = Breaker::new(policy(), t0);
        // Fail, succeed, fail, succeed...: never 3 in a row, but half of 10 calls.
        let mut opened = None;
        for i in 0..10 {
            opened = opened.or(b.record(t0 + Duration::from_millis(i * 100), i % 2 == 1));
        }
        assert_eq!(
            opened, None,
            "5 of 10 failed, but the 10th call was a success"
        );
        assert_eq!(
            b.record(t0 + secs(1), false),
            Some(Transition(BreakerState::Open))
        );
    }

    #[test]
    fn old_failures_slide_out_of_the_window() {
        let t0 = Instant::now();
        let b = Breaker::new(policy(), t0);
        // 5 failures in 9 calls, never two in a row: under min_calls, so closed.
        for i in 0..9 {
            assert_eq!(b.record(t0, i % 2 == 1), None);
        }
        // Counted together with them, one more failure would open it (6 of 10); eleven
        // seconds later they are out of the 10 s window.
        assert_eq!(b.record(t0 + secs(11), false), None);
        assert_eq!(b.state(t0 + secs(11)).0, BreakerState::Closed);
    }

    #[test]
    fn half_open_lets_one_probe_through_and_its_outcome_decides() {
        let t0 = Instant::now();
        let b = Breaker::new(policy(), t0);
        for _ in 0..3 {
            b.record(t0, false);
        }
        let t5 = t0 + secs(5);
        assert_eq!(
            b.allow(t5),
            (Ok(()), Some(Transition(BreakerState::HalfOpen)))
        );
        assert!(b.allow(t5).0.is_err(), "one probe at a time");
        // The probe fails: open again for another open_for.
        assert_eq!(b.record(t5, false), Some(Transition(BreakerState::Open)));
        assert_eq!(b.allow(t5 + secs(4)).0, Err(secs(1)));
        let t10 = t5 + secs(5);
        assert_eq!(b.allow(t10).1, Some(Transition(BreakerState::HalfOpen)));
        assert_eq!(b.record(t10, true), Some(Transition(BreakerState::Closed)));
        assert_eq!(b.state(t10), (BreakerState::Closed, None));
        // Closed afresh: it takes three new failures in a row to open again.
        assert_eq!(b.record(t10, false), None);
        assert_eq!(b.record(t10, false), None);
        assert_eq!(b.record(t10, false), Some(Transition(BreakerState::Open)));
    }

    #[test]
    fn a_probe_that_never_answered_does_not_keep_it_half_open_forever() {
        let t0 = Instant::now();
        let b = Breaker::new(policy(), t0);
        for _ in 0..3 {
            b.record(t0, false);
        }
        let t5 = t0 + secs(5);
        assert!(b.allow(t5).0.is_ok());
        // The probe's request was cancelled: no outcome is ever recorded.
        assert!(b.allow(t5 + secs(4)).0.is_err());
        assert!(
            b.allow(t5 + secs(5)).0.is_ok(),
            "a new probe after open_for"
        );
    }

    #[test]
    fn an_outcome_arriving_while_open_changes_nothing() {
        let t0 = Instant::now();
        let b = Breaker::new(policy(), t0);
        for _ in 0..3 {
            b.record(t0, false);
        }
        assert_eq!(b.record(t0, true), None);
        assert_eq!(b.state(t0).0, BreakerState::Open);
    }
}
