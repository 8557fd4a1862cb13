//! `POST /v1/embeddings`: relayed to a model configured with the `embeddings` capability,
//! through the pipeline's embeddings call ([`pipeline::embed`]) — the model's rate limit,
//! the key's admission and token limits, the concurrency slots, health and the account —
//! and counted as prompt tokens like chat. The body reaches the upstream as the client sent
//! it, `model` set to the upstream's name.

use std::sync::Arc;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use serde_json::Value;

use crate::auth::{Expected, KeyState};
use crate::body::Body;
use crate::error::ApiError;
use crate::ingress;
use crate::pipeline::{self, Call, KeyAdmission};
use crate::plan;
use crate::state::Runtime;
use crate::telemetry::Account;
use thinkgate_metrics::TokenCounter;

pub async fn handle(
    runtime: &Arc<Runtime>,
    req: Request<Incoming>,
    request_id: HeaderValue,
    account: Account,
    key: Option<Arc<KeyState>>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let server = &runtime.config.server;
    let read = ingress::read_body(
        &parts.headers,
        body,
        server.max_body_bytes,
        server.body_read_timeout,
    );
    let mut request = match read.await.and_then(|bytes| parse(&bytes)) {
        Ok(r) => r,
        Err(e) => return account.reject(e),
    };
    let asked = request["model"].as_str().unwrap_or_default().to_string();
    let route = match plan::embeddings_route(&runtime.tables(), &asked, key.as_deref()) {
        Ok(r) => r,
        Err(e) => return account.reject(e),
    };
    let counted = count(&request["input"], route.counter);
    request.insert("model".into(), route.model.upstream_model.clone().into());
    let upstream_body = Value::Object(request).to_string();
    let call = Call {
        runtime: runtime.clone(),
        request_id,
        headers: parts.headers,
        admission: KeyAdmission {
            pending: key.as_ref().map(|_| {
                (
                    None,
                    counted,
                    Expected {
                        output: 0,
                        reasoning: 0,
                    },
                )
            }),
            admitted: Default::default(),
        },
        key,
        domain: 0,
    };
    pipeline::embed(&call, &route, upstream_body.into(), counted, account).await
}

/// The body, checked for the fields the proxy reads: `model` (a string) and `input` (a
/// string, a list of strings, or token arrays, as OpenAI takes).
fn parse(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::invalid_request(format!("the request body is not valid JSON: {e}"))
            .with_code("invalid_json")
    })?;
    let Value::Object(body) = value else {
        return Err(ApiError::invalid_request(
            "the request body must be a JSON object",
        ));
    };
    match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => {}
        _ => return Err(ApiError::invalid_request("`model` is required").with_param("model")),
    }
    let token_list = |v: &Value| v.as_array().is_some_and(|t| t.iter().all(Value::is_u64));
    let valid = match body.get("input") {
        Some(Value::String(_)) => true,
        Some(Value::Array(items)) => {
            !items.is_empty()
                && (items.iter().all(Value::is_string)
                    || items.iter().all(Value::is_u64)
                    || items.iter().all(token_list))
        }
        _ => false,
    };
    if !valid {
        return Err(ApiError::invalid_request(
            "`input` must be a string, a non-empty list of strings, or token arrays",
        )
        .with_param("input"));
    }
    Ok(body)
}

/// The input's tokens as the model's encoding counts them (token arrays count themselves).
fn count(input: &Value, counter: TokenCounter) -> u64 {
    match input {
        Value::String(s) => counter.count(s) as u64,
        Value::Number(_) => 1,
        Value::Array(items) => items.iter().map(|i| count(i, counter)).sum(),
        _ => 0,
    }
}
