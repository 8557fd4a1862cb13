//! What keeps one failing upstream from failing the requests it touches: retries with
//! backoff ([`backoff`]), a per-provider retry budget ([`RetryBudgetState`]) so retries never
//! multiply an outage, and a circuit breaker per deployment ([`Breaker`]).
//!
//! This layer does no IO and reads no clock: every decision takes `now`, so tests drive it
//! with made-up instants. The pipeline (`pipeline/`) asks it before and after each try.

mod backoff;
mod breaker;
mod budget;

pub use backoff::{backoff, retry_after};
pub use breaker::{Breaker, BreakerState, Transition};
pub use budget::RetryBudgetState;
