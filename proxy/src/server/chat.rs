//! `POST /v1/chat/completions`: the stages in order — ingress, plan (classify, budget,
//! route), provider, egress — with the request's [`Account`] carried through to whichever of
//! them ends it. A routed request that fails before its first byte moves on to the next
//! model that fits.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::account::{Account, UpstreamCall, MODES};
use crate::body::{self, Body};
use crate::contemplate;
use crate::egress::{self, Guard};
use crate::error::ApiError;
use crate::ingress;
use crate::plan;
use crate::plan::budget::{self, Asks};
use crate::plan::route::{self, Routed};
use crate::providers::{self, convert, ApiErrorOrRaw, UpstreamError};
use crate::runtime::{Route, Runtime};
use crate::server::keys::{self, KeyState};
use thinkgate_config::Mode;

pub async fn handle(
    runtime: &Arc<Runtime>,
    req: Request<Incoming>,
    request_id: HeaderValue,
    mut account: Account,
    key: Option<Arc<KeyState>>,
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
    let chat = match ingress::parse_chat(&bytes) {
        Ok(c) => c,
        Err(e) => return reject(account, e),
    };
    let plan = match plan::plan(runtime, &chat.model) {
        Ok(p) => p,
        Err(e) => return reject(account, e),
    };
    let key_name = key.as_ref().map(|k| k.key.name.clone());
    if let Some(k) = &key {
        let asked = if plan.routed {
            "auto"
        } else {
            plan.route.model.id.as_str()
        };
        if !k.allows_model(asked) {
            return reject(account, keys::forbidden(&k.key.name, "model", asked));
        }
    }
    let decision = plan.routed.then(|| runtime.classifier.classify(&chat));
    let domain = decision.as_ref().map(|d| d.domain.as_str());
    let modes = &runtime.config.modes;
    let asks = Asks {
        suffix: plan.mode,
        headers: &parts.headers,
        body: &chat.body,
        domain,
        client_cap: convert::max_tokens(&chat.body),
    };
    let mut budget = match budget::resolve(modes, &asks) {
        Ok(b) => b,
        Err(e) => return reject(account, e),
    };
    if let (Some(k), Some(b)) = (&key, budget.as_mut()) {
        if !k.allows_mode(b.mode) {
            return reject(
                account,
                keys::forbidden(&k.key.name, "mode", b.mode.as_str()),
            );
        }
        // The key's own cap: the tightest of mode, domain and key wins.
        if let Some(cap) = k.max_budget(b.mode) {
            if b.reasoning > cap {
                b.clamped_from = Some(b.clamped_from.unwrap_or(b.reasoning).max(b.reasoning));
                b.reasoning = cap;
            }
        }
    }
    if let Some(b) = &budget {
        account.mode = MODES
            .iter()
            .position(|n| *n == b.mode.as_str())
            .unwrap_or(0);
    }
    let prompt_estimate = plan::prompt_tokens(&chat, plan.route.counter).await;

    // The models to try, in order: the one named, or those `auto` ranks that fit.
    let routed: Option<Routed> =
        decision.map(|d| route::choose(&runtime.table, &chat, d, budget.as_ref(), prompt_estimate));
    let mut routed = routed;
    if let (Some(k), Some(r)) = (&key, routed.as_mut()) {
        // A key that names models may only be routed to those.
        let names_models = k
            .key
            .models
            .as_ref()
            .is_some_and(|m| m.iter().any(|x| x != "auto"));
        for c in r.candidates.iter_mut().filter(|c| c.excluded.is_none()) {
            if names_models && !k.allows_model(&c.route.model.id) {
                c.excluded = Some(format!("not allowed for key `{}`", k.key.name));
            }
        }
    }
    let order: Vec<Arc<Route>> = match &routed {
        Some(r) => r.order(),
        None => vec![plan.route.clone()],
    };
    // Limits are checked before anything is sent; the response's tokens are charged when it
    // ends (the account settles them).
    let mut admission = None;
    if let Some(k) = &key {
        match k.admit(budget.as_ref().map(|b| b.mode), prompt_estimate) {
            Ok(a) => admission = Some(a),
            Err(refusal) => {
                account.rate_limited(&k.key.name, refusal.limit);
                tracing::info!(key = %k.key.name, limit = refusal.limit, "Refused a request over a rate limit.");
                let retry = refusal.retry_after.as_secs().max(1);
                let mut resp = {
                    account.status = 429;
                    refusal.to_api(&k.key.name).into_response()
                };
                resp.headers_mut()
                    .insert(http::header::RETRY_AFTER, retry.into());
                return resp;
            }
        }
        account.key = Some((k.clone(), budget.as_ref().map(|b| b.mode)));
    }
    if let Some(r) = &routed {
        account.routed = true;
        account.domain = runtime
            .domains
            .iter()
            .position(|d| *d == r.decision.domain)
            .unwrap_or(0);
        if order.is_empty() {
            account.model = Some(plan.route.metrics.clone());
            return reject(account, nothing_fits(r));
        }
    }
    let hinted = budget.as_ref().filter(|b| b.hint && !b.off).map(|b| {
        let mut c = chat.clone();
        c.add_system_note(&budget::hint_text(modes, b));
        c
    });

    let domain_header = routed.as_ref().map(|r| r.decision.domain.clone());
    if let Some(b) = budget.as_ref().filter(|b| b.mode == Mode::Contemplating) {
        account.model = order.first().map(|r| r.metrics.clone());
        let req = contemplate::Request {
            runtime: runtime.clone(),
            budget: b.clone(),
            domain: routed.as_ref().map(|r| r.decision.domain.clone()),
            chat,
            order,
            request_id,
            headers: parts.headers,
            key: key.clone(),
        };
        let mut resp = contemplate::handle(req, account).await;
        let headers = resp.headers_mut();
        if let Some(a) = &admission {
            a.headers(headers);
        }
        if let Some(v) = domain_header.and_then(|d| HeaderValue::from_str(&d).ok()) {
            headers.insert("x-thinkgate-domain", v);
        }
        return resp;
    }

    let mut skipped: Vec<&str> = Vec::new();
    for (attempt, route) in order.iter().enumerate() {
        let last = attempt + 1 == order.len();
        account.model = Some(route.metrics.clone());
        if !plan.routed {
            if let Err(e) = plan::check_capabilities(&chat, &route.model) {
                return reject(account, e);
            }
        }
        // Only a reasoning model's thinking is watched; others are relayed as they are.
        let budget = budget.clone().filter(|_| route.model.reasoning);
        let request = match (&budget, &hinted) {
            (Some(_), Some(h)) => h,
            _ => &chat,
        };
        // Under a budget the upstream is always streamed, so the guard can stop it in time.
        let upstream_req = match &budget {
            Some(_) if !request.stream => Cow::Owned(request.streaming()),
            _ => Cow::Borrowed(request),
        };
        let policy = budget.as_ref().map(|b| (b, modes));
        let (upstream_body, control) = match route.upstream.body(
            &upstream_req,
            &route.model,
            policy,
        ) {
            Ok(b) => b,
            Err(e) if !last && plan.routed => {
                tracing::info!(model = %route.model.id, "Skipping a model that cannot take the request: {}.", e.message);
                skipped.push(&route.model.id);
                continue;
            }
            Err(e) => return reject(account, e),
        };
        if let Some(limiter) = &route.limiter {
            if limiter.check().is_err() {
                if !last {
                    skipped.push(&route.model.id);
                    continue;
                }
                let name = key_name.as_deref().unwrap_or("none");
                account.rate_limited(name, "model requests per second");
                let e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    format!(
                        "Rate limit reached for model `{}`: requests per second (limit {}).",
                        route.model.id,
                        route.model.requests_per_second.unwrap_or(0)
                    ),
                )
                .with_code("rate_limit_exceeded");
                let mut resp = reject(account, e);
                resp.headers_mut()
                    .insert(http::header::RETRY_AFTER, 1.into());
                return resp;
            }
        }
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
                let outcome = match &e {
                    UpstreamError::Connect(_) | UpstreamError::Unusable(_) => "unreachable",
                    UpstreamError::Timeout(_) => "timeout",
                    UpstreamError::Broken(_) => "broken",
                };
                route.health.failed();
                let err = e.into_api(&route.upstream.name);
                tracing::warn!(model = %route.model.id, provider = %route.upstream.name, status = err.status.as_u16(), "Upstream request failed: {}.", err.message);
                if !last {
                    account.failed_attempt(&route.metrics, outcome);
                    skipped.push(&route.model.id);
                    continue;
                }
                account.upstream_outcome(outcome);
                return reject(account, err);
            }
        };
        let status = resp.status();
        let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
        if retryable {
            route.health.failed();
        } else {
            route.health.succeeded();
        }
        if retryable && !last {
            tracing::warn!(model = %route.model.id, provider = %route.upstream.name, status = status.as_u16(), "Upstream refused; trying the next model.");
            account.failed_attempt(&route.metrics, "error_status");
            skipped.push(&route.model.id);
            continue;
        }
        let mut out = if !status.is_success() {
            account.upstream_outcome("error_status");
            account.status = status.as_u16();
            tracing::warn!(model = %route.model.id, provider = %route.upstream.name, status = account.status, "Upstream returned an error.");
            match providers::error_response(&route.upstream.name, route.upstream.format, resp).await
            {
                ApiErrorOrRaw::Api(e) => e.into_response(),
                ApiErrorOrRaw::Raw(status, bytes) => body::json_response(status, bytes),
            }
        } else {
            let ctx = egress::Context {
                request_id,
                route: route.clone(),
                include_usage: chat.include_usage,
                started: account.started(),
                request_timeout: server.request_timeout,
                prompt_estimate,
                account,
                format: route.upstream.format,
                reasoning_field: server.reasoning_field,
            };
            let guard = budget.clone().zip(control).map(|(budget, control)| Guard {
                budget,
                control,
                config: runtime.config.clone(),
                request: upstream_req.into_owned(),
                client_headers: parts.headers.clone(),
            });
            egress::respond(ctx, resp, guard, chat.stream).await
        };
        let headers = out.headers_mut();
        headers.insert("x-thinkgate-model", route.header.clone());
        if let Some(a) = &admission {
            a.headers(headers);
        }
        if let Some(r) = &routed {
            if let Ok(v) = HeaderValue::from_str(&r.decision.domain) {
                headers.insert("x-thinkgate-domain", v);
            }
            let confidence = format!("{:.2}", r.decision.confidence);
            if let Ok(v) = HeaderValue::from_str(&confidence) {
                headers.insert("x-thinkgate-route-confidence", v);
            }
        }
        if !skipped.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&skipped.join(", ")) {
                headers.insert("x-thinkgate-fallback-from", v);
            }
        }
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
        return out;
    }
    // Every model was skipped by its adapter; the loop returns on the last one otherwise.
    let e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream_error",
        "no model could take the request",
    );
    reject(account, e)
}

/// The error for a routed request no configured model can take, with each one's reason.
fn nothing_fits(r: &Routed) -> ApiError {
    let reasons: Vec<String> = r
        .candidates
        .iter()
        .map(|c| {
            format!(
                "{}: {}",
                c.route.model.id,
                c.excluded.as_deref().unwrap_or("fits")
            )
        })
        .collect();
    let all_down = r.candidates.iter().all(|c| {
        c.excluded
            .as_deref()
            .is_some_and(|w| w.starts_with("unhealthy") || w.starts_with("provider"))
    });
    let message = format!(
        "no configured model can take this {} request ({})",
        r.decision.domain,
        reasons.join("; ")
    );
    if all_down {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "upstream_error", message)
            .with_code("no_healthy_model")
    } else {
        ApiError::invalid_request(message).with_code("no_model_fits")
    }
}
