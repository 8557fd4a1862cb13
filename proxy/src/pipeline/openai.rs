//! Calls to OpenAI's other endpoints — embeddings and legacy text completions — through the
//! same steps as every chat attempt: the model's `requests_per_second`, the key's admission
//! (the input's tokens counted before anything is sent), the concurrency slots, the send with
//! its retries and the circuit breaker, the failure handling, then the account. Embeddings are read
//! whole under `server.max_response_bytes` and `server.request_timeout`; completions go
//! through the relay's completions path, whole or streamed, observed like chat.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Map, Value};
use tokio::sync::OwnedSemaphorePermit;

use super::{fail, reject_limited, send_with_retries, Call, Stopped, Target, Tries};
use crate::body::{self, Body};
use crate::canonical::Usage;
use crate::error::ApiError;
use crate::models::Route;
use crate::plan::PromptCount;
use crate::relay;
use crate::telemetry::{Account, Source, Tokens};
use crate::upstream::UpstreamError;

/// Breaker, admission, slots and the send, with the provider's retries, on each of the
/// model's deployments in the balancer's order until one answers: the deployment that did,
/// its response with its slots, or the answer for the client when every one failed before
/// its first byte. `request` is the client's body; each deployment gets its own model name.
async fn admitted_send(
    call: &Call,
    route: &Arc<Route>,
    request: &Map<String, Value>,
    target: Target,
    counted: u64,
    mut account: Account,
) -> Result<
    (
        Arc<Route>,
        Response<Body>,
        Vec<OwnedSemaphorePermit>,
        Account,
    ),
    Response<Body>,
> {
    let order = route.arranged(Instant::now());
    let mut body: Option<(&str, Bytes)> = None;
    for (i, deployment) in order.iter().enumerate() {
        account.model = Some(deployment.metrics.clone());
        let name = deployment.model.upstream_model.as_str();
        let bytes = match &body {
            Some((for_name, bytes)) if *for_name == name => bytes.clone(),
            _ => {
                let mut request = request.clone();
                request.insert("model".into(), name.into());
                let bytes = Bytes::from(Value::Object(request).to_string());
                body = Some((name, bytes.clone()));
                bytes
            }
        };
        let may_fall_back = i + 1 < order.len();
        // A failure goes to the next deployment; only the last one retries.
        let sent = send_with_retries(
            call,
            deployment,
            bytes,
            target,
            &mut account,
            Tries::retry(!may_fall_back),
            &|| counted,
        )
        .await;
        match sent {
            Ok((resp, permits, _)) => return Ok((deployment.clone(), resp, permits, account)),
            Err(Stopped::KeyRefused(key, refusal)) => {
                return Err(reject_limited(account, &key, refusal))
            }
            Err(Stopped::Failed(failure)) => {
                match fail(call, deployment, may_fall_back, account, failure).await {
                    Ok(answer) => return Err(answer),
                    Err(next) => account = next,
                }
            }
        }
    }
    // `arranged` is never empty; an empty order answers like no model at all.
    Err(answered(Err(account)))
}

/// One embeddings request to `route`, whose body is `body` (the client's, model set);
/// `counted` is the input's token count for the key and for an upstream that reports none.
pub async fn embed(
    call: &Call,
    route: &Arc<Route>,
    request: Map<String, Value>,
    counted: u64,
    account: Account,
) -> Response<Body> {
    let target = Target::OpenAi {
        path: "embeddings",
        stream: false,
    };
    let sent = admitted_send(call, route, &request, target, counted, account).await;
    let (route, resp, permits, mut account) = match sent {
        Ok(sent) => sent,
        Err(answer) => return answer,
    };
    let server = &call.runtime.config.server;
    let left = server
        .request_timeout
        .saturating_sub(account.started().elapsed());
    let read = body::collect_limited(resp.into_body(), server.max_response_bytes);
    let bytes = match tokio::time::timeout(left, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            let why = format!("its response could not be read: {e}");
            return failed(account, &route, "broken", UpstreamError::Broken(why));
        }
        Err(_) => {
            let err = UpstreamError::Timeout(server.request_timeout);
            return failed(account, &route, "timeout", err);
        }
    };
    let reported = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(|v| v.get("data").is_some_and(Value::is_array))
        .map(|v| v["usage"]["prompt_tokens"].as_u64());
    let Some(reported) = reported else {
        let why = "its response is not an embeddings list".to_string();
        return failed(account, &route, "broken", UpstreamError::Broken(why));
    };
    account.upstream_outcome("ok");
    account.set_tokens(Tokens {
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

/// One legacy text completion to `route`: `body` is the client's (model set, the usage
/// chunk asked for on a stream); `include_usage` whether the client asked for it itself.
pub async fn complete(
    call: &Call,
    route: &Arc<Route>,
    request: Map<String, Value>,
    stream: bool,
    include_usage: bool,
    counted: u64,
    account: Account,
) -> Response<Body> {
    let target = Target::OpenAi {
        path: "completions",
        stream,
    };
    let sent = admitted_send(call, route, &request, target, counted, account).await;
    let (route, resp, permits, account) = match sent {
        Ok(sent) => sent,
        Err(answer) => return answer,
    };
    let mut ctx = relay::Context::new(
        call.request_id.clone(),
        route.clone(),
        account,
        include_usage,
        PromptCount::counted(counted),
        &call.runtime.config.server,
    );
    ctx.permits = permits;
    let is_sse = body::is_event_stream(resp.headers());
    let mut out = match (stream, is_sse) {
        (true, true) => relay::completions::stream(ctx, resp),
        (false, _) => relay::completions::whole(ctx, resp).await,
        (true, false) => relay::not_a_stream(ctx, &resp),
    };
    out.headers_mut()
        .insert("x-thinkgate-model", route.header.clone());
    out
}

/// The answer when no deployment was left to try.
fn answered(result: Result<Response<Body>, Account>) -> Response<Body> {
    result.unwrap_or_else(|account| {
        account.reject(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_error",
            "no model could take the request",
        ))
    })
}

/// A call whose answer could not be read back, in the words every upstream failure uses.
fn failed(
    mut account: Account,
    route: &Route,
    outcome: &str,
    err: UpstreamError,
) -> Response<Body> {
    account.upstream_outcome(outcome);
    account.reject(err.into_api(&route.upstream.name))
}
