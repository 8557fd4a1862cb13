//! `POST /v1/responses`: OpenAI's Responses API (what Codex speaks), translated into the
//! canonical request and answered by [`chat::serve`] — the same plan, key admission,
//! attempts, budget guard and accounting as chat completions — then rendered as a
//! `response` object or its event stream. Errors keep OpenAI's shape, as on chat.

use std::sync::Arc;

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;

use super::chat;
use crate::auth::KeyState;
use crate::body::{self, Body};
use crate::error::ApiError;
use crate::ingress;
use crate::responses::{self, response, stream, Parsed};
use crate::state::Runtime;
use crate::telemetry::Account;

pub async fn handle(
    runtime: &Arc<Runtime>,
    req: Request<Incoming>,
    request_id: HeaderValue,
    account: Account,
    key: Option<Arc<KeyState>>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let owner = key.as_ref().map(|k| k.key.name.clone());
    let parsed = match read(runtime, &parts.headers, body, owner.as_deref()).await {
        Ok(p) => p,
        Err(e) => return account.reject(e),
    };
    let meta = response::Meta::new(parsed.echo.clone(), parsed.store, parsed.namespaces.clone());
    let dropped = (!parsed.dropped_tools.is_empty())
        .then(|| HeaderValue::from_str(&parsed.dropped_tools.join(", ")).ok())
        .flatten();
    let keep = parsed.store.then(|| stream::Keep {
        store: runtime.responses.clone(),
        owner,
        conversation: parsed.conversation.clone(),
    });
    let resp = chat::serve(
        runtime,
        parts.headers,
        parsed.chat,
        request_id,
        account,
        key,
    )
    .await;
    let mut resp = in_shape(runtime, resp, meta, keep).await;
    if let Some(dropped) = dropped {
        resp.headers_mut()
            .insert("x-thinkgate-dropped-tools", dropped);
    }
    resp
}

async fn read(
    runtime: &Runtime,
    headers: &http::HeaderMap,
    body: Incoming,
    owner: Option<&str>,
) -> Result<Parsed, ApiError> {
    let body = ingress::read_object(headers, body, &runtime.config.server).await?;
    let history = match body.get("previous_response_id") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(id)) => runtime.responses.get(id, owner).await.ok_or_else(|| {
            ApiError::invalid_request(format!(
                "Previous response with id '{id}' not found (it expired, was stored with `store: false`, or belongs to another key)."
            ))
            .with_param("previous_response_id")
            .with_code("previous_response_not_found")
        })?,
        Some(_) => {
            return Err(ApiError::invalid_request("`previous_response_id` must be a string")
                .with_param("previous_response_id"))
        }
    };
    responses::to_chat(body, history)
}

/// The pipeline's answer as a Responses object or event stream; errors pass as they are.
async fn in_shape(
    runtime: &Runtime,
    resp: Response<Body>,
    meta: response::Meta,
    keep: Option<stream::Keep>,
) -> Response<Body> {
    let (mut parts, inner) = resp.into_parts();
    if !parts.status.is_success() {
        return Response::from_parts(parts, inner);
    }
    let is_stream = body::is_event_stream(&parts.headers);
    if is_stream {
        let limit = runtime.config.server.max_response_bytes;
        return Response::from_parts(parts, stream::events(inner, meta, keep, limit));
    }
    let limit = runtime
        .config
        .server
        .max_response_bytes
        .saturating_add(64 * 1024);
    let bytes = match body::collect_limited(inner, limit).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                format!("the answer could not be read back: {e}"),
            )
            .into_response()
        }
    };
    let completion: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !completion.is_object() {
        return ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "the answer is not a chat completion and cannot be rendered",
        )
        .into_response();
    }
    let (object, output) = response::whole(&meta, &completion);
    if let Some(keep) = keep {
        keep.put(&meta.id, &output);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, body::full(object.to_string()))
}
