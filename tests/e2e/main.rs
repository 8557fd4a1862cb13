//! End-to-end tests: the real server on loopback against the built-in simulator.

mod agents;
mod anthropic;
mod budget_learning;
mod budgets;
mod classify;
mod contemplate;
mod core;
mod deploy;
mod dialects;
mod embeddings;
mod errors;
mod gemini;
mod hardening;
mod keys;
mod lifecycle;
mod messages;
mod metrics;
mod reload;
mod resilience;
mod responses;
mod routing;
mod scale_out;
mod sdk;
mod soak;
mod support;
mod telemetry;
