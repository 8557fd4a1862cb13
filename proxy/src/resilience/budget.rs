//! The retry budget of one provider (as Finagle's and Envoy's): over the last
//! [`WINDOW_SECS`] seconds, retries stay under a share of first tries, or a small floor per
//! second when that is more. When an upstream fails everything, its calls stop growing with
//! retries at `1 + ratio` of the traffic instead of `attempts` times it.

use std::sync::Mutex;
use std::time::Instant;

use thinkgate_config::RetryBudget;

/// The window the budget looks back over, in one-second slots.
pub const WINDOW_SECS: usize = 10;

/// First tries and retries per second, for the last [`WINDOW_SECS`] seconds.
#[derive(Debug)]
pub struct RetryBudgetState {
    policy: RetryBudget,
    origin: Instant,
    slots: Mutex<[Slot; WINDOW_SECS]>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Which second since `origin` this slot counts (a stale one is reset on use).
    second: u64,
    calls: u32,
    retries: u32,
}

impl RetryBudgetState {
    pub fn new(policy: RetryBudget, origin: Instant) -> Self {
        RetryBudgetState {
            policy,
            origin,
            slots: Mutex::new([Slot::default(); WINDOW_SECS]),
        }
    }

    /// Counts a first try.
    pub fn called(&self, now: Instant) {
        self.with_slot(now, |slot| slot.calls = slot.calls.saturating_add(1));
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn try_retry(&self, now: Instant) -> bool {
        let second = self.second(now);
        let Ok(mut slots) = self.slots.lock() else {
            return false;
        };
        let (mut calls, mut retries) = (0u64, 0u64);
        for slot in slots.iter() {
            if second.saturating_sub(slot.second) < WINDOW_SECS as u64 && slot.second <= second {
                calls += u64::from(slot.calls);
                retries += u64::from(slot.retries);
            }
        }
        let floor = f64::from(self.policy.min_per_second) * WINDOW_SECS as f64;
        let allowed = (self.policy.ratio * calls as f64).max(floor);
        if retries as f64 + 1.0 > allowed {
            return false;
        }
        let slot = current(&mut slots, second);
        slot.retries = slot.retries.saturating_add(1);
        true
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    fn with_slot(&self, now: Instant, f: impl FnOnce(&mut Slot)) {
        let second = self.second(now);
        if let Ok(mut slots) = self.slots.lock() {
            f(current(&mut slots, second));
        }
    }
}

/// The slot for `second`, reset when it last counted an older second.
fn current(slots: &mut [Slot; WINDOW_SECS], second: u64) -> &mut Slot {
    let slot = &mut slots[(second % WINDOW_SECS as u64) as usize];
    if slot.second != second {
        *slot = Slot {
            second,
            ..Slot::default()
        };
    }
    slot
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn budget(ratio: f64, min_per_second: u32) -> (RetryBudgetState, Instant) {
        let origin = Instant::now();
        (
            RetryBudgetState::new(
                RetryBudget {
                    ratio,
                    min_per_second,
                },
                origin,
            ),
            origin,
        )
    }

    #[test]
    fn retries_stay_under_the_share_of_recent_calls() {
        let (b, t0) = budget(0.2, 0);
        for _ in 0..100 {
            b.called(t0);
        }
        let granted = (0..100).filter(|_| b.try_retry(t0)).count();
        assert_eq!(granted, 20);
    }

    #[test]
    fn a_quiet_provider_still_gets_the_floor() {
        let (b, t0) = budget(0.2, 1);
        b.called(t0);
        // One per second over the ten-second window.
        let granted = (0..100).filter(|_| b.try_retry(t0)).count();
        assert_eq!(granted, 10);
    }

    #[test]
    fn the_window_slides_so_old_calls_and_retries_stop_counting() {
        let (b, t0) = budget(0.5, 0);
        for _ in 0..10 {
            b.called(t0);
        }
        assert_eq!((0..10).filter(|_| b.try_retry(t0)).count(), 5);
        // Nine seconds on, the first second still counts: nothing new is granted.
        let t9 = t0 + Duration::from_secs(9);
        assert!(!b.try_retry(t9));
        // Past the window its calls and retries are gone: new calls earn new retries.
        let t10 = t0 + Duration::from_secs(10);
        assert!(
            !b.try_retry(t10),
            "no calls in the window, no floor: no retry"
        );
        for _ in 0..4 {
            b.called(t10);
        }
        assert_eq!((0..4).filter(|_| b.try_retry(t10)).count(), 2);
    }
}
