//! An embeddings call through the same steps as every chat attempt: the model's
//! `requests_per_second`, the key's admission (its prompt tokens counted from the input
//! before anything is sent), the concurrency slots, the send and the health bookkeeping,
//! then the account — prompt tokens from the upstream's usage, or the proxy's count when it
//! reports none. The answer is the upstream's bytes, read whole under
//! `server.max_response_bytes` and `server.request_timeout`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::Value;

use super::{admit, fail, reject_limited, send, slots, Call, Target};
use crate::body::{self, Body};
use crate::canonical::Usage;
use crate::error::ApiError;
use crate::models::Route;
use crate::telemetry::{Account, Source, Tokens, UpstreamCall};

/// One embeddings request to `route`, whose body is `body` (the client's, model set);
/// `counted` is the input's token count for the key and for an upstream that reports none.
pub async fn embed(
    call: &Call,
    route: &Arc<Route>,
    body: Bytes,
    counted: u64,
    mut account: Account,
) -> Response<Body> {
    account.model = Some(route.metrics.clone());
    if let Err(limited) = admit(route) {
        return answered(fail(call, route, false, account, limited).await);
    }
    if let (Err(refusal), Some(key)) = (call.admit_key(&mut account), &call.key) {
        return reject_limited(account, key, refusal);
    }
    let permits = match slots(&call.runtime.upstream_calls, route).await {
        Ok(p) => p,
        Err(busy) => return answered(fail(call, route, false, account, busy).await),
    };
    account.upstream = Some(UpstreamCall {
        sent: Instant::now(),
        outcome: usize::MAX,
    });
    let sent = send(
        route,
        body,
        Target::Embeddings,
        &call.request_id,
        &call.headers,
    )
    .await;
    let resp = match sent {
        Ok(resp) => resp,
        Err(failure) => return answered(fail(call, route, false, account, failure).await),
    };
    let server = &call.runtime.config.server;
    let left = server
        .request_timeout
        .saturating_sub(account.started().elapsed());
    let read = body::collect_limited(resp.into_body(), server.max_response_bytes);
    let bytes = match tokio::time::timeout(left, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            return broken(
                account,
                route,
                format!("its response could not be read: {e}"),
            )
        }
        Err(_) => {
            account.upstream_outcome("timeout");
            let e = ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                format!("provider `{}` did not answer in time", route.upstream.name),
            )
            .with_code("upstream_timeout");
            return account.reject(e);
        }
    };
    let reported = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(|v| v.get("data").is_some_and(Value::is_array))
        .map(|v| v["usage"]["prompt_tokens"].as_u64());
    let Some(reported) = reported else {
        return broken(
            account,
            route,
            "its response is not an embeddings list".into(),
        );
    };
    account.upstream_outcome("ok");
    account.tokens = Some(Tokens {
        usage: Usage {
            prompt_tokens: reported.unwrap_or(counted),
            ..Usage::default()
        },
        prompt_source: match reported {
            Some(_) => Source::Upstream,
            None => Source::Estimated,
        },
        output_source: Source::Upstream,
        ttft: None,
        empty: None,
    });
    account.status = 200;
    drop(permits);
    let mut out = body::json_response(StatusCode::OK, bytes);
    out.headers_mut()
        .insert("x-thinkgate-model", route.header.clone());
    out
}

/// The answer of a call that cannot hand over (an embeddings call has no fallback).
fn answered(result: Result<Response<Body>, Account>) -> Response<Body> {
    result.unwrap_or_else(|account| {
        account.reject(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_error",
            "no model could take the request",
        ))
    })
}

fn broken(mut account: Account, route: &Route, why: String) -> Response<Body> {
    account.upstream_outcome("broken");
    account.reject(
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("provider `{}`: {why}", route.upstream.name),
        )
        .with_code("upstream_broken"),
    )
}
