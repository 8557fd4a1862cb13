//! OpenAI's other endpoints, relayed through the pipeline's calls for them
//! ([`pipeline::embed`], [`pipeline::complete`]) — the model's rate limit, the key's
//! admission and token limits, the concurrency slots, health and the account — and counted
//! like chat. The body reaches the upstream as the client sent it, `model` set to the
//! upstream's name. Embeddings go through the response cache (an embedding always repeats).
//! - `POST /v1/embeddings`: a model configured with the `embeddings` capability;
//! - `POST /v1/completions` (legacy text completions): a chat model on an OpenAI-format
//!   upstream, whole or streamed.

use std::sync::Arc;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use serde_json::Value;

use crate::auth::{Expected, KeyState};
use crate::body::Body;
use crate::cache;
use crate::error::ApiError;
use crate::http::cached;
use crate::ingress;
use crate::pipeline::{self, Call, KeyAdmission};
use crate::plan;
use crate::state::Runtime;
use crate::telemetry::Account;
use thinkgate_metrics::TokenCounter;

pub async fn embeddings(
    runtime: &Arc<Runtime>,
    req: Request<Incoming>,
    request_id: HeaderValue,
    mut account: Account,
    key: Option<Arc<KeyState>>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let request = match read(runtime, &parts.headers, body, "input").await {
        Ok(r) => r,
        Err(e) => return account.reject(e),
    };
    let asked = field_str(&request, "model");
    let route = match plan::embeddings_route(&runtime.tables(), &asked, key.as_deref()) {
        Ok(r) => r,
        Err(e) => return account.reject(e),
    };
    account.trace(|span| span.requested("embeddings", &asked, None));
    // An embedding repeats by nature: the cache answers every repeat the client allows.
    let mut fill = None;
    if let Some(cache) = &runtime.cache {
        let use_ = match cache::decide_for(&parts.headers, true) {
            Ok(use_) => use_,
            Err(e) => return account.reject(e),
        };
        let endpoint = account.endpoint();
        let entry_key = || {
            let owner = cached::owner(cache, key.as_deref());
            cache::key::of_embeddings(endpoint, owner, &route, &request)
        };
        let looked = cache.consult(endpoint, use_, entry_key).await;
        (fill, account) = match cached::after_lookup(runtime, cache, looked, account) {
            Ok(next) => next,
            Err(hit) => return *hit,
        };
    }
    let cache_status = account.cache;
    let counted = request.get("input").map_or(0, |i| count(i, route.counter));
    let call = call(runtime, request_id, parts.headers, key, counted, 0);
    let resp = pipeline::embed(&call, &route, request, counted, account).await;
    cached::recorded(resp, fill, cache_status)
}

/// `POST /v1/completions`: the prompt counted for the key, the usage chunk asked for on a
/// stream (dropped again when the client did not ask for it).
pub async fn completions(
    runtime: &Arc<Runtime>,
    req: Request<Incoming>,
    request_id: HeaderValue,
    mut account: Account,
    key: Option<Arc<KeyState>>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let mut request = match read(runtime, &parts.headers, body, "prompt").await {
        Ok(r) => r,
        Err(e) => return account.reject(e),
    };
    let stream = match request.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            let e = ApiError::invalid_request("`stream` must be a boolean").with_param("stream");
            return account.reject(e);
        }
    };
    let asked = field_str(&request, "model");
    let route = match plan::completions_route(&runtime.tables(), &asked, key.as_deref()) {
        Ok(r) => r,
        Err(e) => return account.reject(e),
    };
    let counted = request.get("prompt").map_or(0, |p| count(p, route.counter));
    let output = request
        .get("max_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let include_usage = stream
        && request
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true);
    if stream {
        let options = request
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(o) = options {
            o.insert("include_usage".into(), true.into());
        }
    }
    account
        .trace(|span| span.requested("text_completion", &asked, Some(output).filter(|n| *n > 0)));
    let call = call(runtime, request_id, parts.headers, key, counted, output);
    pipeline::complete(
        &call,
        &route,
        request,
        stream,
        include_usage,
        counted,
        account,
    )
    .await
}

/// What every call of these endpoints shares: the key is asked to admit the counted prompt
/// and at most `output` tokens (there is no reasoning, no mode).
fn call(
    runtime: &Arc<Runtime>,
    request_id: HeaderValue,
    headers: http::HeaderMap,
    key: Option<Arc<KeyState>>,
    prompt: u64,
    output: u64,
) -> Call {
    let expected = Expected {
        output,
        reasoning: 0,
    };
    Call {
        runtime: runtime.clone(),
        request_id,
        headers,
        admission: KeyAdmission {
            pending: key.as_ref().map(|_| (None, prompt, expected)),
            admitted: Default::default(),
        },
        key,
        domain: 0,
        // Only an orchestrated request's calls hang under a span of their own.
        trace: None,
    }
}

/// The body read under the server's bounds and checked for the fields the proxy reads:
/// `model` (a string) and `field` (the input or prompt: a string, a list of strings, or
/// token arrays, as OpenAI takes).
async fn read(
    runtime: &Runtime,
    headers: &http::HeaderMap,
    body: Incoming,
    field: &str,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let body = ingress::read_object(headers, body, &runtime.config.server).await?;
    match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => {}
        _ => return Err(ApiError::invalid_request("`model` is required").with_param("model")),
    }
    let token_list = |v: &Value| v.as_array().is_some_and(|t| t.iter().all(Value::is_u64));
    let valid = match body.get(field) {
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
        return Err(ApiError::invalid_request(format!(
            "`{field}` must be a string, a non-empty list of strings, or token arrays"
        ))
        .with_param(field));
    }
    Ok(body)
}

/// A string field of the body (a `Map` panics on a missing key where a `Value` does not:
/// only `get` is used on it).
fn field_str(body: &serde_json::Map<String, Value>, key: &str) -> String {
    body.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
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
