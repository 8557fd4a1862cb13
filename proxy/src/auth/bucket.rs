//! A per-minute token limit that can be over-drawn: charges known only after a response
//! (output and reasoning tokens) are always taken, and a bucket charged past its burst is in
//! debt, which it pays back at the limit's rate before it admits anything new.
//!
//! It is GCRA (the algorithm governor implements) with one change governor cannot make: a
//! debit may move the theoretical arrival time past the burst window. The state is that one
//! time, in nanoseconds since the bucket's start on governor's clock, changed only by
//! compare-and-swap, so concurrent charges are neither lost nor counted twice; tests drive it
//! with governor's `FakeRelativeClock`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};

/// Tokens per minute, with debt.
pub struct TokenBucket<C: Clock = DefaultClock> {
    clock: C,
    start: C::Instant,
    /// Nanoseconds one token is worth: a minute over the rate.
    per_token: u64,
    /// The most that may be taken at once: one minute's worth.
    pub burst: u32,
    /// Theoretical arrival time: when the bucket is full again (ns since `start`).
    tat: AtomicU64,
}

impl TokenBucket {
    pub fn per_minute(n: u32) -> TokenBucket {
        TokenBucket::per_minute_with_clock(n, DefaultClock::default())
    }
}

const MINUTE_NS: u64 = 60_000_000_000;

impl<C: Clock> TokenBucket<C> {
    pub fn per_minute_with_clock(n: u32, clock: C) -> TokenBucket<C> {
        let burst = n.max(1);
        TokenBucket {
            start: clock.now(),
            clock,
            per_token: MINUTE_NS / burst as u64,
            burst,
            tat: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.clock.now().duration_since(self.start).as_u64()
    }

    /// Tokens charged beyond the burst, not yet paid back.
    pub fn owed(&self) -> u64 {
        let ahead = self.tat.load(Ordering::Acquire).saturating_sub(self.now());
        (ahead.saturating_sub(MINUTE_NS)).div_ceil(self.per_token)
    }

    /// Takes `n` now, or says how long until it could (a debt is paid first).
    pub fn take(&self, n: u64) -> Result<u32, Duration> {
        let cost = n.saturating_mul(self.per_token);
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let now = self.now();
            let next = tat.max(now).saturating_add(cost);
            // Conforming while the arrival time stays within one minute (the burst) of now.
            let limit = now.saturating_add(MINUTE_NS);
            if next > limit {
                return Err(Duration::from_nanos(next - limit));
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(((limit - next) / self.per_token) as u32),
                Err(seen) => tat = seen,
            }
        }
    }

    /// Charges `n` after the fact: always taken, owed when it does not fit.
    pub fn debit(&self, n: u64) {
        let cost = n.saturating_mul(self.per_token);
        let now = self.now();
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.max(now).saturating_add(cost))
            });
    }

    /// Tokens that could be taken now.
    pub fn remaining(&self) -> u32 {
        let now = self.now();
        let ahead = self.tat.load(Ordering::Acquire).saturating_sub(now);
        (MINUTE_NS.saturating_sub(ahead) / self.per_token) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::sync::Arc;

    #[test]
    fn an_overdrawn_bucket_recovers_at_its_rate() {
        let clock = FakeRelativeClock::default();
        let bucket = TokenBucket::per_minute_with_clock(600, clock.clone());
        // A response far over the limit: 600 taken, 2,400 owed.
        bucket.debit(3_000);
        assert_eq!(bucket.owed(), 2_400);
        assert!(bucket.take(1).is_err());
        // At ten tokens a second the debt is paid in four minutes, and the next token
        // takes a tenth of a second more.
        clock.advance(Duration::from_secs(239));
        assert_eq!(bucket.owed(), 10);
        assert_eq!(bucket.take(1).unwrap_err(), Duration::from_millis(1_100));
        clock.advance(Duration::from_millis(1_100));
        assert_eq!(bucket.owed(), 0);
        assert!(bucket.take(1).is_ok());
    }

    #[test]
    fn a_debt_larger_than_the_burst_drains_instead_of_refusing_forever() {
        let clock = FakeRelativeClock::default();
        let bucket = TokenBucket::per_minute_with_clock(100, clock.clone());
        bucket.debit(100);
        bucket.debit(1_000);
        for _ in 0..10 {
            clock.advance(Duration::from_secs(60));
            let _ = bucket.take(0);
        }
        assert_eq!(bucket.owed(), 0);
        clock.advance(Duration::from_secs(1));
        assert!(bucket.take(1).is_ok());
    }

    #[test]
    fn concurrent_debits_add_up_exactly() {
        let clock = FakeRelativeClock::default();
        let bucket = Arc::new(TokenBucket::per_minute_with_clock(1_000, clock));
        let threads: Vec<_> = (0..64)
            .map(|_| {
                let b = bucket.clone();
                std::thread::spawn(move || b.debit(37))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Whatever order the threads ran in, every charge counts: 2,368 on a burst of 1,000.
        assert_eq!(bucket.owed(), 64 * 37 - 1_000);
        assert_eq!(bucket.remaining(), 0);
    }

    #[test]
    fn concurrent_payments_and_debits_lose_nothing() {
        let clock = FakeRelativeClock::default();
        let bucket = Arc::new(TokenBucket::per_minute_with_clock(60, clock.clone()));
        bucket.debit(60 + 6_000);
        let threads: Vec<_> = (0..64)
            .map(|i| {
                let b = bucket.clone();
                std::thread::spawn(move || {
                    if i % 2 == 0 {
                        b.debit(10)
                    } else {
                        let _ = b.take(0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Nothing was paid (the clock did not move): the debt is exactly the sum.
        assert_eq!(bucket.owed(), 6_000 + 32 * 10);
        // At one token a second, 6,320 seconds pay it; a token more takes one second.
        clock.advance(Duration::from_secs(6_320));
        assert_eq!(bucket.owed(), 0);
        assert!(bucket.take(1).is_err());
        clock.advance(Duration::from_secs(1));
        assert!(bucket.take(1).is_ok());
    }
}
