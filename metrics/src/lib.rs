//! thinkgate's measurements: the Prometheus registry and token counting.
//!
//! Layout:
//! - [`registry`]: every metric family ([`Metrics`]), with configurable [`Buckets`];
//! - [`report`]: the `thinkgate report` table, from a scrape's text;
//! - [`tokens`]: the one interface every token count goes through ([`TokenCounter`]), backed
//!   by tiktoken encoders built once per process.
//!
//! Recording sits in the proxy (`account` stage), which resolves label handles once per
//! model and mode rather than per request.

pub mod budgets;
pub mod registry;
pub mod report;
pub mod tokens;

pub use registry::{Buckets, Metrics, CONTENT_TYPE};
pub use thinkgate_config::Encoding;
pub use tokens::TokenCounter;
