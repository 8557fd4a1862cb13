//! Plan: decides, for one request, which model answers and in which reasoning mode.
//!
//! Pure: reads the runtime's tables, does no IO. `auto` goes to the config's default model
//! until domain routing lands; [`budget`] resolves the mode and the reasoning budget.

pub mod budget;
pub mod classify;
pub mod explain;
pub mod route;

use std::sync::Arc;

use http::StatusCode;

use thinkgate_metrics::TokenCounter;

use crate::canonical::ChatRequest;
use crate::error::ApiError;
use crate::runtime::{Route, Runtime};

pub use thinkgate_config::Mode;

/// What the request will do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub route: Arc<Route>,
    /// The mode the model name asked for, if it did.
    pub mode: Option<Mode>,
    /// The client asked for `auto` and the proxy chose the model.
    pub routed: bool,
}

/// Resolves the client's `model`: a model id, `auto`, or either with a `:<mode>` suffix.
pub fn plan(runtime: &Runtime, requested: &str) -> Result<Plan, ApiError> {
    let (base, mode) = match requested.rsplit_once(':') {
        Some((base, suffix)) => match Mode::parse(suffix) {
            Some(mode) => (base, Some(mode)),
            None => {
                return Err(not_found(
                    requested,
                    format!(
                        "`{suffix}` is not a reasoning mode; use instant, thinking or contemplating"
                    ),
                ))
            }
        },
        None => (requested, None),
    };
    let id = if base == "auto" {
        runtime.config.default_model.as_str()
    } else {
        base
    };
    match runtime.route(id) {
        Some(route) => Ok(Plan {
            route: route.clone(),
            mode,
            routed: base == "auto",
        }),
        None => Err(not_found(
            requested,
            "see GET /v1/models for the models this proxy serves".to_string(),
        )),
    }
}

fn not_found(requested: &str, hint: String) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("The model `{requested}` does not exist: {hint}"),
    )
    .with_param("model")
    .with_code("model_not_found")
}

/// Tokens an image part adds to a prompt (OpenAI's low-detail figure).
const IMAGE_TOKENS: u64 = 85;
/// Texts above this many bytes are counted on the blocking pool: BPE on long inputs (and
/// worse, on long runs without spaces) would stall the async workers.
const BLOCKING_COUNT_BYTES: usize = 32 * 1024;

/// Prompt tokens as OpenAI counts chat: each message's text plus a few tokens of framing.
pub async fn prompt_tokens(req: &ChatRequest, counter: TokenCounter) -> u64 {
    let framing: u64 = 3 + 3 * req.messages.len() as u64;
    let images: u64 = req.messages.iter().filter(|m| m.has_image()).count() as u64 * IMAGE_TOKENS;
    let size: usize = req.messages.iter().map(|m| m.text().len()).sum();
    let text_tokens = if size <= BLOCKING_COUNT_BYTES {
        req.messages
            .iter()
            .map(|m| counter.count(&m.text()) as u64)
            .sum()
    } else {
        let texts: Vec<String> = req.messages.iter().map(|m| m.text().into_owned()).collect();
        tokio::task::spawn_blocking(move || texts.iter().map(|t| counter.count(t) as u64).sum())
            .await
            .unwrap_or(0)
    };
    framing + images + text_tokens
}

/// Refuses a request the chosen model cannot serve, rather than dropping what it asked for.
pub fn check_capabilities(
    req: &ChatRequest,
    model: &thinkgate_config::Model,
) -> Result<(), ApiError> {
    if !model.vision {
        if let Some(i) = req.messages.iter().position(|m| m.has_image()) {
            return Err(ApiError::invalid_request(format!(
                "model `{}` does not accept images (messages[{i}] has one); use a model with the vision capability",
                model.id
            ))
            .with_param(format!("messages[{i}].content"))
            .with_code("unsupported_content"));
        }
    }
    if req.has_tools && !model.tools {
        return Err(ApiError::invalid_request(format!(
            "model `{}` does not support tools; use a model with the tools capability",
            model.id
        ))
        .with_param("tools")
        .with_code("unsupported_parameter"));
    }
    Ok(())
}
