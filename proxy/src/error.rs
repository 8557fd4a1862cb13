//! Errors as clients see them: always OpenAI's `{"error": {message, type, param, code}}`.
//! Built by each stage; rendered only by [`ApiError::into_response`] (the type lives in
//! `thinkgate-wire`, which the simulator shares).

pub use thinkgate_wire::ApiError;
