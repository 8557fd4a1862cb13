//! `POST /v1/messages` and `POST /v1/messages/count_tokens`: Anthropic's Messages API (what
//! Claude Code speaks), translated into the canonical request and answered by
//! [`chat::serve`] — the same plan, key admission, attempts, budget guard and accounting
//! as chat completions — then rendered back in Anthropic's shape, errors included.

use std::sync::Arc;

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::chat;
use crate::auth::KeyState;
use crate::body::{self, Body};
use crate::canonical::ChatRequest;
use crate::error::ApiError;
use crate::ingress;
use crate::messages::{self, response};
use crate::plan::{self, Caller};
use crate::state::Runtime;
use crate::telemetry::Account;

/// The bound on a whole answer read back for rendering (the relay already held it to
/// `server.max_response_bytes`; errors are the proxy's own and small).
fn reread_limit(runtime: &Runtime) -> usize {
    runtime
        .config
        .server
        .max_response_bytes
        .saturating_add(64 * 1024)
}

pub async fn handle(
    runtime: &Arc<Runtime>,
    req: Request<Incoming>,
    request_id: HeaderValue,
    account: Account,
    key: Option<Arc<KeyState>>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let chat = match read(runtime, &parts.headers, body, false).await {
        Ok(c) => c,
        Err(e) => return in_shape(runtime, account.reject(e)).await,
    };
    let resp = chat::serve(runtime, parts.headers, chat, request_id, account, key).await;
    in_shape(runtime, resp).await
}

/// `count_tokens`: the prompt as the model the request names (or `auto` picks) counts it.
pub async fn count_tokens(
    runtime: &Arc<Runtime>,
    req: Request<Incoming>,
    mut account: Account,
    key: Option<Arc<KeyState>>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let chat = match read(runtime, &parts.headers, body, true).await {
        Ok(c) => c,
        Err(e) => return in_shape(runtime, account.reject(e)).await,
    };
    let caller = Caller {
        headers: &parts.headers,
        key: key.as_deref(),
    };
    let plan = match plan::plan(&runtime.tables(), &chat, &caller).await {
        Ok(p) => p,
        Err(e) => return in_shape(runtime, account.reject(e)).await,
    };
    let tokens = plan::count_prompt(&chat.messages(), plan.named.counter).await;
    account.model = Some(plan.named.metrics.clone());
    account.status = 200;
    body::json_response(StatusCode::OK, json!({"input_tokens": tokens}).to_string())
}

async fn read(
    runtime: &Runtime,
    headers: &http::HeaderMap,
    body: Incoming,
    count_only: bool,
) -> Result<ChatRequest, ApiError> {
    let body = ingress::read_object(headers, body, &runtime.config.server).await?;
    messages::to_chat(body, count_only)
}

/// The pipeline's answer in Anthropic's shape: a stream through the event translator, a
/// whole completion as a message, an error as Anthropic's error (statuses mapped: 503 is
/// 529 `overloaded_error`). Headers (the key's limits, `retry-after`, routing) are kept.
pub async fn in_shape(runtime: &Runtime, resp: Response<Body>) -> Response<Body> {
    let (mut parts, inner) = resp.into_parts();
    let is_stream = body::is_event_stream(&parts.headers);
    if parts.status.is_success() && is_stream {
        return Response::from_parts(parts, messages::stream::events(inner));
    }
    let bytes = match body::collect_limited(inner, reread_limit(runtime)).await {
        Ok(b) => b,
        Err(e) => {
            let err = ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                format!("the answer could not be read back: {e}"),
            );
            return in_shape_error(err);
        }
    };
    let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if parts.status.is_success() && !parsed.is_object() {
        return in_shape_error(unreadable());
    }
    let (status, rendered) = if parts.status.is_success() {
        (parts.status, response::message(&parsed))
    } else {
        response::error_body(parts.status, &parsed)
    };
    parts.status = status;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, body::full(rendered.to_string()))
}

/// A success the proxy cannot render: its own relay wrote something that is not a
/// completion (never expected; answered as an error rather than as an empty message).
fn unreadable() -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "upstream_error",
        "the answer is not a chat completion and cannot be rendered",
    )
}

/// One of the proxy's own errors, in Anthropic's shape.
fn in_shape_error(err: ApiError) -> Response<Body> {
    let (status, rendered) = response::error_body(err.status, &err.to_json());
    body::json_response(status, rendered.to_string())
}
