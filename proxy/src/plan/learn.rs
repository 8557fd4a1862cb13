//! Budgets learned from traffic (an adaptive mode): from one window's counts of a mode and
//! domain — the reasoning of answers that ended on their own, and those that reached the
//! budget — the budget the traffic needs. Pure: the caller reads the counters and keeps the
//! windows (`state.rs`).
//!
//! Answers cut at the budget say only that they needed more, so the percentile is taken over
//! all answers with those counted above the budget. When it falls among them the budget is
//! already at (or under) the percentile: clearly under it — half again more cut than the
//! configured share — it is raised by half (the cut answers' true length is unknown);
//! otherwise it holds, which is the fixed point. When the percentile falls among natural
//! answers the budget is that reasoning, rounded up to 16. So a converged budget cuts about
//! the configured share of answers, and the hold keeps it from wavering around it.

use thinkgate_config::Adaptive;

/// Fewer answers than this in a window and the budget stays (the window grows).
pub const MIN_ANSWERS: u64 = 20;

/// One window's counts: cumulative `(upper bound, count)` of natural reasoning, ascending,
/// their total, and the answers that reached the budget.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    pub buckets: Vec<(f64, u64)>,
    pub natural: u64,
    pub hits: u64,
}

impl Window {
    /// What was counted since `earlier` (a snapshot of the same counters).
    pub fn since(&self, earlier: &Window) -> Window {
        let buckets = self
            .buckets
            .iter()
            .map(|(le, n)| {
                let before = earlier
                    .buckets
                    .iter()
                    .find(|(l, _)| l == le)
                    .map_or(0, |(_, b)| *b);
                (*le, n.saturating_sub(before))
            })
            .collect();
        Window {
            buckets,
            natural: self.natural.saturating_sub(earlier.natural),
            hits: self.hits.saturating_sub(earlier.hits),
        }
    }

    /// The natural reasoning at `rank` (answers counted from the shortest).
    fn natural_at(&self, rank: f64) -> f64 {
        let buckets = self.buckets.iter().map(|(le, n)| (*le, *n as f64));
        thinkgate_metrics::budgets::value_at_rank(buckets, rank)
    }
}

/// The budget this window says the traffic needs, within the mode's bounds; `None` when the
/// window has too few answers to say.
pub fn next_budget(window: &Window, current: u64, adaptive: &Adaptive) -> Option<u64> {
    let total = window.natural + window.hits;
    if total < MIN_ANSWERS {
        return None;
    }
    let share = 1.0 - f64::from(adaptive.percentile) / 100.0;
    let rank = (1.0 - share) * total as f64;
    let cut = window.hits as f64;
    let next = if cut > 1.5 * share * total as f64 {
        (current as f64 * 1.5).ceil() as u64
    } else if rank >= window.natural as f64 {
        current
    } else {
        let q = window.natural_at(rank);
        ((q / 16.0).ceil() as u64).max(1) * 16
    };
    Some(next.clamp(adaptive.min, adaptive.max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const ADAPTIVE: Adaptive = Adaptive {
        min: 64,
        max: 4096,
        percentile: 90,
        period: Duration::from_secs(60),
    };

    fn window(natural: &[u64], hits: u64) -> Window {
        let bounds = thinkgate_metrics::registry::natural_buckets();
        let buckets = bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .map(|le| {
                (
                    le,
                    natural.iter().filter(|v| **v as f64 <= le).count() as u64,
                )
            })
            .collect();
        Window {
            buckets,
            natural: natural.len() as u64,
            hits,
        }
    }

    #[test]
    fn the_budget_follows_the_percentile_of_natural_reasoning() {
        let natural: Vec<u64> = (0..100).map(|i| 200 + 2 * i).collect();
        let next = next_budget(&window(&natural, 0), 2048, &ADAPTIVE).unwrap();
        // The true p90 is 380; the buckets are 15 % apart.
        assert!((next as f64 - 380.0).abs() / 380.0 < 0.1, "{next}");
        assert_eq!(next % 16, 0);
    }

    #[test]
    fn cut_answers_past_the_percentile_raise_it_and_bounds_hold() {
        // Half the answers reached a budget of 256: the percentile is past it.
        let natural: Vec<u64> = (0..20).map(|i| 100 + i).collect();
        assert_eq!(
            next_budget(&window(&natural, 20), 256, &ADAPTIVE),
            Some(384)
        );
        assert_eq!(
            next_budget(&window(&natural, 20), 4000, &ADAPTIVE),
            Some(4096)
        );
        // Tiny reasoning stays at the floor; too few answers say nothing.
        assert_eq!(next_budget(&window(&[1; 30], 0), 2048, &ADAPTIVE), Some(64));
        assert_eq!(next_budget(&window(&[300; 5], 0), 2048, &ADAPTIVE), None);
        // About the configured share cut: the budget holds.
        let natural: Vec<u64> = (0..90).map(|i| 100 + i).collect();
        assert_eq!(
            next_budget(&window(&natural, 10), 192, &ADAPTIVE),
            Some(192)
        );
    }

    #[test]
    fn a_window_is_what_was_counted_since_the_last() {
        let before = window(&[100, 200], 1);
        let now = window(&[100, 200, 300, 400], 3);
        let w = now.since(&before);
        assert_eq!((w.natural, w.hits), (2, 2));
        assert_eq!(w.buckets.last().unwrap().1, 2);
    }
}
