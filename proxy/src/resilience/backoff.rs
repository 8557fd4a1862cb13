//! How long to wait before a retry: exponential backoff with full jitter, or the upstream's
//! own `Retry-After`.
//!
//! Full jitter (a uniform draw between zero and the exponential ceiling) spreads the retries
//! of many clients that failed together, where a fixed or "equal jitter" delay sends them
//! back in waves. Written here rather than taken from a crate: it is one line, and the retry
//! loop must interleave it with admission, the budget and `Retry-After`, which the crates'
//! retry drivers do not.

use std::cell::Cell;
use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// The wait before retry number `retry` (1 for the first): uniform in
/// `[0, min(max, base · 2^(retry-1))]`.
pub fn backoff(retry: u32, base: Duration, max: Duration) -> Duration {
    let ceiling = base
        .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
        .min(max);
    ceiling.mul_f64(unit_random())
}

/// The wait an upstream asked for in `Retry-After` (seconds, or an HTTP date), if any.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // OpenAI and Anthropic send seconds; an HTTP date is allowed too (RFC 9110 §10.2.3).
    let date = httpdate(text)?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An IMF-fixdate such as `Sun, 06 Nov 1994 08:49:37 GMT`.
fn httpdate(text: &str) -> Option<SystemTime> {
    let mut parts = text.split_ascii_whitespace();
    let _weekday = parts.next()?;
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next()? != "GMT" || day == 0 || day > 31 || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Days since 1970-01-01 by the civil-from-days inverse (Howard Hinnant's algorithm).
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + s;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// A uniform draw in `[0, 1)` from a per-thread xorshift generator: jitter and balancing
/// need spread, not unpredictability, and this costs no lock and no dependency.
pub fn unit_random() -> f64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish() | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_stays_under_a_doubling_ceiling_and_spreads() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for (retry, ceiling) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (5, 1600),
            (6, 2000),
            (30, 2000),
        ] {
            let draws: Vec<Duration> = (0..2000).map(|_| backoff(retry, base, max)).collect();
            let ceiling = Duration::from_millis(ceiling);
            assert!(draws.iter().all(|d| *d <= ceiling), "retry {retry}");
            // Spread over the whole range, not bunched at the top as equal jitter would be.
            let low = draws.iter().filter(|d| **d < ceiling / 4).count();
            let high = draws.iter().filter(|d| **d > ceiling * 3 / 4).count();
            assert!(
                low > 300 && high > 300,
                "retry {retry}: {low} low, {high} high"
            );
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, SystemTime::now()), None);
        h.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(
            retry_after(&h, SystemTime::now()),
            Some(Duration::from_secs(7))
        );
        // 1994-11-06T08:49:37Z is 784111777 s after the epoch.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_770);
        h.insert(
            http::header::RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        // A date in the past means now.
        let later = now + Duration::from_secs(100);
        assert_eq!(retry_after(&h, later), Some(Duration::ZERO));
        h.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }
}
