//! thinkgate's request path.
//!
//! The crate is a stack: each module uses only those listed after it, so the import graph
//! has no cycle (`shared/tools/module-cycles.py` checks it). In the order a request meets
//! them:
//! - [`http`]: accept loop, tower layers (request id), endpoint table, hot reload, shutdown;
//!   `http/chat.rs` calls the stages below in order, `http/messages.rs` (Anthropic's
//!   Messages API) and `http/responses.rs` (OpenAI's Responses API) translate and then call
//!   the same chat stages, `http/openai.rs` sends embeddings and legacy completions through
//!   the pipeline's calls for them;
//! - [`messages`]: the Messages API as a front end — request and answer translation, no IO;
//! - [`contemplate`]: contemplating mode — agents and the synthesis, each an attempt;
//! - [`explain`]: `thinkgate route --explain` and `POST /v1/route`, the plan rendered;
//! - [`pipeline`]: the attempt path — every upstream call, end to end, with fallback;
//! - [`state`]: the [`Runtime`], everything built once per config load;
//! - [`cache`]: the exact response cache — whether a request may be answered from it, its
//!   key, the answer recorded as it streams to the client, and the replay of a hit;
//! - [`responses`]: OpenAI's Responses API as a front end (`http/responses.rs` calls the chat
//!   stages) and its bounded conversation store (in memory, and in Redis with the shared
//!   state);
//! - [`relay`]: the upstream's response → the client (pass-through, translate, budget guard);
//! - [`plan`]: mode, budget, domain and the models to try (pure, no IO);
//! - [`ingress`]: HTTP body → canonical [`canonical::ChatRequest`] (limits, precise 400s);
//! - [`models`]: each configured model joined to its upstream, circuit breaker and limits;
//! - [`upstream`]: one [`upstream::Upstream`] per provider, its transport and wire format;
//! - [`telemetry`]: each request's metrics, access line and trace spans, recorded once when
//!   it ends; OTLP export on a background task;
//! - [`auth`]: client keys, their limits and quotas, in memory or shared by every replica in
//!   Redis;
//! - [`resilience`]: retry backoff, retry budgets and circuit breakers (no IO, no clock).
//!
//! Shared by all: [`canonical`] (request, event and budget types), [`error`] (OpenAI-shaped
//! errors), [`body`] (the response body type), [`digest`] (length-prefixed SHA-256 fields). The built-in simulator is its own crate
//! (`thinkgate-sim`), plugged in through [`upstream::LocalUpstream`].

// Request paths never panic on outside data: outside tests, no unwrap or expect at all
// (`cargo clippy -p thinkgate-proxy --lib` checks it).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod auth;
pub mod body;
pub mod cache;
pub mod canonical;
pub mod contemplate;
pub mod digest;
pub mod error;
pub mod explain;
pub mod http;
pub mod ingress;
pub mod messages;
pub mod models;
pub mod pipeline;
pub mod plan;
pub mod relay;
pub mod resilience;
pub mod responses;
pub mod state;
pub mod telemetry;
pub mod upstream;

pub use state::Runtime;
