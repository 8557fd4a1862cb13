//! thinkgate's request path.
//!
//! Layout — one module per stage, in the order a request meets them:
//! - [`server`]: accept loop, tower layers (request id), endpoint table, graceful shutdown;
//! - [`ingress`]: HTTP body → canonical [`canonical::ChatRequest`] (limits, precise 400s);
//! - [`plan`]: which model answers and in which mode (pure, no IO);
//! - [`providers`]: one [`providers::Upstream`] per provider, its transport and wire format;
//! - [`egress`]: upstream response → client (lossless JSON, SSE relay), observed as events;
//! - [`account`]: each request's metrics, recorded once when it ends;
//! - [`simulator`]: the built-in OpenAI-compatible upstream for demos, tests and benchmarks.
//!
//! Shared: [`canonical`] (request and event types), [`runtime`] (everything built once per
//! config load), [`error`] (OpenAI-shaped errors), [`body`] (the response body type).

pub mod account;
pub mod body;
pub mod canonical;
pub mod contemplate;
pub mod egress;
pub mod error;
pub mod ingress;
pub mod plan;
pub mod providers;
pub mod runtime;
pub mod server;
pub mod simulator;

pub use runtime::Runtime;
