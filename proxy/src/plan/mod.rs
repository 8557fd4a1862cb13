//! Plan: decides, for one request, which model answers and in which reasoning mode.
//!
//! Pure: reads the runtime's tables, does no IO. `auto` goes to the config's default model
//! until domain routing lands.

use std::sync::Arc;

use http::StatusCode;

use crate::error::ApiError;
use crate::runtime::{Route, Runtime};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Instant,
    Thinking,
    Contemplating,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Instant, Mode::Thinking, Mode::Contemplating];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Instant => "instant",
            Mode::Thinking => "thinking",
            Mode::Contemplating => "contemplating",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// What the request will do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub route: Arc<Route>,
    /// The mode the model name asked for, if it did.
    pub mode: Option<Mode>,
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
