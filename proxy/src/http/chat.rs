//! `POST /v1/chat/completions`: ingress, the plan, the key's admission, then the answer —
//! through the attempt path ([`crate::pipeline`]) or, in contemplating mode, through the
//! orchestration that calls it for every agent and the synthesis. The request's [`Account`]
//! is carried to whichever of them ends it.

use std::sync::Arc;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use thinkgate_config::Mode;

use crate::auth::{Expected, KeyState};
use crate::body::Body;
use crate::contemplate;
use crate::error::ApiError;
use crate::ingress;
use crate::pipeline::{self, mode_index, Ask, Call};
use crate::plan::{self, Caller};
use crate::state::Runtime;
use crate::telemetry::Account;

pub async fn handle(
    runtime: &Arc<Runtime>,
    req: Request<Incoming>,
    request_id: HeaderValue,
    mut account: Account,
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
    let bytes = match read.await {
        Ok(b) => b,
        Err(e) => return reject(account, e),
    };
    let chat = match ingress::parse_chat(&bytes) {
        Ok(c) => c,
        Err(e) => return reject(account, e),
    };
    drop(bytes);
    let caller = Caller {
        headers: &parts.headers,
        key: key.as_deref(),
    };
    let plan = match plan::plan(&runtime.tables(), &chat, &caller).await {
        Ok(p) => p,
        Err(e) => return reject(account, e),
    };
    account.mode = mode_index(plan.budget.as_ref().map(|b| b.mode));
    if let Some(r) = &plan.routed {
        account.routed = true;
        account.domain = runtime
            .domains
            .iter()
            .position(|d| *d == r.decision.domain)
            .unwrap_or(0);
    }
    if let Some(refusal) = plan.refusal.clone() {
        account.model = Some(plan.named.metrics.clone());
        return reject(account, refusal);
    }
    // Limits are checked before anything is sent; the response's tokens are charged when it
    // ends (the account settles them).
    let mut admission = None;
    if let Some(k) = &key {
        let mode = plan.budget.as_ref().map(|b| b.mode);
        let expected = Expected {
            output: plan
                .budget
                .as_ref()
                .map(|b| b.output_cap())
                .or_else(|| crate::upstream::convert::max_tokens(&chat.body))
                .unwrap_or(0),
            reasoning: plan.budget.as_ref().map_or(0, |b| b.reported()),
        };
        match k.admit(mode, plan.prompt_tokens, expected) {
            Ok(a) => admission = Some(a),
            Err(refusal) => {
                account.rate_limited(&k.key.name, refusal.limit);
                tracing::info!(key = %k.key.name, limit = refusal.limit, "Refused a request over a rate limit.");
                let retry = refusal.retry_after.as_secs().max(1);
                let mut resp = reject(account, refusal.to_api(&k.key.name));
                resp.headers_mut()
                    .insert(http::header::RETRY_AFTER, retry.into());
                return resp;
            }
        }
        account.key = Some((k.clone(), mode));
        account.hold = admission.as_ref().map(|a| a.hold).unwrap_or_default();
    }
    let call = Call {
        runtime: runtime.clone(),
        request_id,
        headers: parts.headers,
        key,
        domain: account.domain,
    };
    let contemplating = plan
        .budget
        .as_ref()
        .filter(|b| b.mode == Mode::Contemplating)
        .cloned();
    let mut resp = match contemplating {
        Some(budget) => {
            account.model = plan.order.first().map(|r| r.metrics.clone());
            let req = contemplate::Request {
                call,
                budget,
                domain: plan.domain().map(str::to_string),
                chat,
                order: plan.order.clone(),
            };
            contemplate::handle(req, account).await
        }
        None => {
            let ask = Ask {
                chat: &chat,
                budget: plan.budget.as_ref(),
                suffix: plan.suffix,
                prompt_tokens: plan.prompt_tokens,
            };
            pipeline::answer(&call, &plan.order, ask, account).await
        }
    };
    let headers = resp.headers_mut();
    if let Some(a) = &admission {
        a.headers(headers);
    }
    if let Some(r) = &plan.routed {
        if let Ok(v) = HeaderValue::from_str(&r.decision.domain) {
            headers.insert("x-thinkgate-domain", v);
        }
        let confidence = format!("{:.2}", r.decision.confidence);
        if let Ok(v) = HeaderValue::from_str(&confidence) {
            headers.insert("x-thinkgate-route-confidence", v);
        }
    }
    resp
}

fn reject(mut account: Account, e: ApiError) -> Response<Body> {
    account.status = e.status.as_u16();
    e.into_response()
}
