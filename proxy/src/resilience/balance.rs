//! Which of a model's deployments a call goes to first, and the order of the rest (its
//! fallbacks): at random by weight, the fewest calls in flight, the lowest peak-EWMA
//! latency times load (as linkerd balances), chosen by two random draws so that replicas
//! of the proxy that see the same figures do not all pile onto one deployment — or simply
//! in the order the config lists them.

use std::time::{Duration, Instant};

use thinkgate_config::Balance;

/// How quickly the latency estimate forgets a slow spell once calls are fast again.
const DECAY: Duration = Duration::from_secs(10);

/// What the balancer knows of one deployment.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub weight: u32,
    pub in_flight: u32,
    /// Peak-EWMA latency to the response head, in nanoseconds (0: no call measured yet).
    pub latency_ns: f64,
}

/// The deployments' indices in the order to try them.
pub fn arrange(loads: &[Load], balance: Balance, mut draw: impl FnMut() -> f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..loads.len()).collect();
    if loads.len() < 2 {
        return order;
    }
    match balance {
        Balance::Ordered => {}
        Balance::Weighted => {
            // Efraimidis–Spirakis: sorting by u^(1/w) draws without replacement in
            // proportion to weight.
            let keys: Vec<f64> = loads
                .iter()
                .map(|l| {
                    draw()
                        .max(f64::MIN_POSITIVE)
                        .powf(1.0 / f64::from(l.weight.max(1)))
                })
                .collect();
            order.sort_by(|a, b| keys[*b].total_cmp(&keys[*a]));
        }
        Balance::LeastInFlight | Balance::PeakEwma => {
            let cost = |l: &Load| {
                let load = f64::from(l.in_flight) + 1.0;
                let per_call = match balance {
                    Balance::PeakEwma => l.latency_ns.max(1.0) * load,
                    _ => load,
                };
                per_call / f64::from(l.weight.max(1))
            };
            // Two drawn at random, the cheaper first; the rest by cost.
            let a = (draw() * loads.len() as f64) as usize % loads.len();
            let mut b = (draw() * (loads.len() - 1) as f64) as usize % (loads.len() - 1);
            if b >= a {
                b += 1;
            }
            let first = if cost(&loads[b]) < cost(&loads[a]) {
                b
            } else {
                a
            };
            order.retain(|i| *i != first);
            order.sort_by(|x, y| cost(&loads[*x]).total_cmp(&cost(&loads[*y])));
            order.insert(0, first);
        }
    }
    order
}

/// A latency estimate that jumps up to a slow sample at once and decays back over
/// [`DECAY`] while samples are fast — and, read without new samples, decays toward zero, so
/// a deployment left alone after a slow spell is tried again.
#[derive(Debug, Clone, Copy)]
pub struct PeakEwma {
    ns: f64,
    at: Option<Instant>,
}

impl PeakEwma {
    pub const fn new() -> Self {
        PeakEwma { ns: 0.0, at: None }
    }

    pub fn observe(&mut self, sample: Duration, now: Instant) {
        let sample = sample.as_nanos() as f64;
        self.ns = match self.at {
            None => sample,
            Some(_) if sample >= self.ns => sample,
            Some(at) => {
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                let keep = (-elapsed / DECAY.as_secs_f64()).exp();
                sample + (self.ns - sample) * keep
            }
        };
        self.at = Some(now);
    }

    /// The estimate at `now`.
    pub fn nanos(&self, now: Instant) -> f64 {
        match self.at {
            None => 0.0,
            Some(at) => {
                let idle = now.saturating_duration_since(at).as_secs_f64();
                self.ns * (-idle / DECAY.as_secs_f64()).exp()
            }
        }
    }
}

impl Default for PeakEwma {
    fn default() -> Self {
        PeakEwma::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stream of draws in [0, 1).
    fn draws(seed: u64) -> impl FnMut() -> f64 {
        let mut x = seed | 1;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn load(weight: u32, in_flight: u32, latency_ms: f64) -> Load {
        Load {
            weight,
            in_flight,
            latency_ns: latency_ms * 1e6,
        }
    }

    #[test]
    fn weighted_first_picks_follow_the_weights() {
        let loads = [load(1, 0, 0.0), load(3, 0, 0.0)];
        let mut draw = draws(7);
        let firsts = (0..4000)
            .filter(|_| arrange(&loads, Balance::Weighted, &mut draw)[0] == 1)
            .count();
        assert!(
            (2800..3200).contains(&firsts),
            "{firsts} of 4000 to the weight-3 one"
        );
    }

    #[test]
    fn every_order_holds_every_deployment_once() {
        let loads = [load(1, 2, 5.0), load(2, 0, 50.0), load(1, 9, 1.0)];
        let mut draw = draws(3);
        for balance in Balance::ALL {
            for _ in 0..100 {
                let mut order = arrange(&loads, balance, &mut draw);
                order.sort();
                assert_eq!(order, [0, 1, 2], "{balance:?}");
            }
        }
    }

    #[test]
    fn ordered_keeps_the_listed_order_whatever_the_load() {
        let loads = [load(1, 9, 90.0), load(5, 0, 1.0), load(1, 0, 0.0)];
        let mut draw = draws(11);
        for _ in 0..100 {
            assert_eq!(arrange(&loads, Balance::Ordered, &mut draw), [0, 1, 2]);
        }
    }

    #[test]
    fn least_in_flight_prefers_the_idle_one() {
        let loads = [load(1, 5, 0.0), load(1, 0, 0.0)];
        let mut draw = draws(11);
        for _ in 0..100 {
            assert_eq!(arrange(&loads, Balance::LeastInFlight, &mut draw), [1, 0]);
        }
    }

    #[test]
    fn peak_ewma_leaves_a_slow_deployment_alone_and_weighs_load() {
        let mut draw = draws(5);
        let slow_and_fast = [load(1, 0, 900.0), load(1, 0, 30.0)];
        assert_eq!(arrange(&slow_and_fast, Balance::PeakEwma, &mut draw)[0], 1);
        // 30 ms with 40 calls in flight costs more than 200 ms idle.
        let busy_and_idle = [load(1, 40, 30.0), load(1, 0, 200.0)];
        assert_eq!(arrange(&busy_and_idle, Balance::PeakEwma, &mut draw)[0], 1);
    }

    #[test]
    fn two_random_choices_do_not_always_pick_the_single_best() {
        // Three equal deployments: the first pick spreads over all of them.
        let loads = [load(1, 0, 10.0), load(1, 0, 10.0), load(1, 0, 10.0)];
        let mut draw = draws(9);
        let mut seen = [0; 3];
        for _ in 0..300 {
            seen[arrange(&loads, Balance::PeakEwma, &mut draw)[0]] += 1;
        }
        assert!(seen.iter().all(|n| *n > 50), "{seen:?}");
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new();
        e.observe(Duration::from_millis(10), t0);
        e.observe(Duration::from_millis(500), t0 + Duration::from_millis(1));
        let t1 = t0 + Duration::from_millis(1);
        assert_eq!(e.nanos(t1), 500e6, "a slow sample counts at once");
        let t10 = t0 + Duration::from_secs(10);
        e.observe(Duration::from_millis(10), t10);
        let after = e.nanos(t10) / 1e6;
        // 10 + 490 · e^-1 ≈ 190 ms.
        assert!((180.0..200.0).contains(&after), "{after}");
        let t60 = t0 + Duration::from_secs(60);
        e.observe(Duration::from_millis(10), t60);
        assert!(e.nanos(t60) / 1e6 < 20.0);
        // Left alone for a minute, even a slow estimate comes down to be tried again.
        e.observe(Duration::from_secs(2), t60);
        assert!(e.nanos(t60 + Duration::from_secs(60)) / 1e6 < 10.0);
    }
}
