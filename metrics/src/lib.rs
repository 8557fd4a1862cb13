//! thinkgate's measurements: token counting now, the Prometheus registry as it lands.
//!
//! Layout:
//! - [`tokens`]: the one interface every token count goes through ([`TokenCounter`]), backed
//!   by tiktoken encoders built once per process.

pub mod tokens;

pub use thinkgate_config::Encoding;
pub use tokens::TokenCounter;
