//! `POST /v1/chat/completions`: the stages in order — ingress, plan, provider, egress —
//! with the request's [`Account`] carried through to whichever of them ends it.

use std::time::Instant;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::account::{Account, UpstreamCall, DOMAINS, MODES};
use crate::body::{self, Body};
use crate::egress;
use crate::egress::Guard;
use crate::error::ApiError;
use crate::ingress;
use crate::plan::{
    self,
    budget::{self, Asks},
};
use crate::providers::convert;
use crate::providers::{self, ApiErrorOrRaw, UpstreamError};
use crate::runtime::Runtime;

pub async fn handle(
    runtime: &Runtime,
    req: Request<Incoming>,
    request_id: HeaderValue,
    mut account: Account,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let server = &runtime.config.server;
    let reject = |mut account: Account, e: ApiError| {
        account.status = e.status.as_u16();
        e.into_response()
    };
    let bytes = match ingress::read_body(&parts.headers, body, server.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return reject(account, e),
    };
    let mut chat = match ingress::parse_chat(&bytes) {
        Ok(c) => c,
        Err(e) => return reject(account, e),
    };
    let plan = match plan::plan(runtime, &chat.model) {
        Ok(p) => p,
        Err(e) => return reject(account, e),
    };
    let route = plan.route;
    account.model = Some(route.metrics.clone());
    if plan.routed {
        account.routed = true;
        account.domain = DOMAINS.iter().position(|d| *d == "general").unwrap_or(0);
    }
    let modes = &runtime.config.modes;
    let asks = Asks {
        suffix: plan.mode,
        headers: &parts.headers,
        body: &chat.body,
        domain: plan.routed.then_some("general"),
        client_cap: convert::max_tokens(&chat.body),
    };
    let budget = match budget::resolve(modes, &asks) {
        Ok(b) => b,
        Err(e) => return reject(account, e),
    };
    if let Some(b) = &budget {
        account.mode = MODES
            .iter()
            .position(|n| *n == b.mode.as_str())
            .unwrap_or(0);
    }
    if let Err(e) = plan::check_capabilities(&chat, &route.model) {
        return reject(account, e);
    }
    // Only a reasoning model's thinking is watched; others are relayed as they are.
    let budget = budget.filter(|_| route.model.reasoning);
    if let Some(b) = budget.as_ref().filter(|b| b.hint && !b.off) {
        chat.add_system_note(&budget::hint_text(modes, b));
    }
    // Under a budget the upstream is always streamed, so the guard can stop it in time.
    let upstream_req = match &budget {
        Some(_) if !chat.stream => chat.streaming(),
        _ => chat.clone(),
    };
    let (upstream_body, control) = match route.upstream.body(
        &upstream_req,
        &route.model,
        budget.as_ref().map(|b| (b, modes)),
    ) {
        Ok(b) => b,
        Err(e) => return reject(account, e),
    };
    let prompt_estimate = plan::prompt_tokens(&chat, route.counter).await;

    account.upstream = Some(UpstreamCall {
        sent: Instant::now(),
        outcome: usize::MAX,
    });
    let sent = route
        .upstream
        .send(
            upstream_body,
            &route.model.upstream_model,
            upstream_req.stream,
            &request_id,
            &parts.headers,
        )
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            account.upstream_outcome(match &e {
                UpstreamError::Connect(_) | UpstreamError::Unusable(_) => "unreachable",
                UpstreamError::Timeout(_) => "timeout",
                UpstreamError::Broken(_) => "broken",
            });
            let err = e.into_api(&route.upstream.name);
            tracing::warn!(model = %route.model.id, provider = %route.upstream.name, status = err.status.as_u16(), "Upstream request failed: {}.", err.message);
            return reject(account, err);
        }
    };
    let model_header = route.header.clone();
    let upstream_format = route.upstream.format;
    let mut out = if !resp.status().is_success() {
        account.upstream_outcome("error_status");
        account.status = resp.status().as_u16();
        tracing::warn!(model = %route.model.id, provider = %route.upstream.name, status = account.status, "Upstream returned an error.");
        match providers::error_response(&route.upstream.name, route.upstream.format, resp).await {
            ApiErrorOrRaw::Api(e) => e.into_response(),
            ApiErrorOrRaw::Raw(status, bytes) => body::json_response(status, bytes),
        }
    } else {
        let is_sse = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let ctx = egress::Context {
            request_id,
            route,
            include_usage: chat.include_usage,
            started: account.started(),
            request_timeout: server.request_timeout,
            prompt_estimate,
            account,
            format: upstream_format,
            reasoning_field: server.reasoning_field,
        };
        match (budget.clone(), control) {
            (Some(budget), Some(control)) if is_sse => {
                let guard = Guard {
                    budget,
                    control,
                    config: runtime.config.clone(),
                    request: upstream_req,
                    client_headers: parts.headers.clone(),
                };
                if chat.stream {
                    egress::guarded_stream(ctx, guard, resp)
                } else {
                    egress::guarded_whole(ctx, guard, resp).await
                }
            }
            _ if chat.stream && is_sse => egress::stream(ctx, resp),
            _ => egress::whole(ctx, resp).await,
        }
    };
    let headers = out.headers_mut();
    headers.insert("x-thinkgate-model", model_header);
    if let Some(b) = &budget {
        headers.insert(
            "x-thinkgate-mode",
            HeaderValue::from_static(b.mode.as_str()),
        );
        headers.insert("x-thinkgate-reasoning-budget", b.reported().into());
        if let Some(asked) = b.clamped_from {
            let text = format!("asked {asked}, allowed {}", b.reasoning);
            if let Ok(v) = HeaderValue::from_str(&text) {
                headers.insert("x-thinkgate-budget-clamped", v);
            }
        }
        if let Some(v) = b
            .notice
            .as_deref()
            .and_then(|n| HeaderValue::from_str(n).ok())
        {
            headers.insert("x-thinkgate-notice", v);
        }
    } else if let Some(mode) = plan.mode {
        headers.insert("x-thinkgate-mode", HeaderValue::from_static(mode.as_str()));
    }
    out
}
