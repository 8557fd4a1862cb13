//! What keeps one failing upstream from failing the requests it touches: retries with
//! backoff ([`backoff`]), a per-provider retry budget ([`RetryBudgetState`]) so retries never
//! multiply an outage, a circuit breaker per deployment ([`Breaker`]), and the balancer that
//! orders a model's deployments ([`arrange`]).
//!
//! This layer does no IO and reads no clock: every decision takes `now`, so tests drive it
//! with made-up instants. The pipeline (`pipeline/`) asks it before and after each try.

mod backoff;
mod balance;
mod breaker;
mod budget;

pub use backoff::{backoff, retry_after, unit_random};
pub use balance::{arrange, Load, PeakEwma};
pub use breaker::{Breaker, BreakerState, Transition};
pub use budget::RetryBudgetState;
