//! `POST /v1/chat/completions`: ingress, the plan, the key's admission, then the answer —
//! through the attempt path ([`crate::pipeline`]) or, in contemplating mode, through the
//! orchestration that calls it for every agent and the synthesis. The request's [`Account`]
//! is carried to whichever of them ends it.

use std::sync::Arc;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use thinkgate_config::Mode;

use crate::auth::{Admission, Expected, KeyState, Refusal};
use crate::body::Body;
use crate::canonical::ChatRequest;
use crate::contemplate;
use crate::error::ApiError;
use crate::ingress;
use crate::pipeline::{self, mode_index, Ask, Call};
use crate::plan::{self, Caller, Plan};
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
    let chat = match read.await.and_then(|bytes| ingress::parse_chat(&bytes)) {
        Ok(c) => c,
        Err(e) => return reject(account, e),
    };
    let caller = Caller {
        headers: &parts.headers,
        key: key.as_deref(),
    };
    let plan = match plan::plan(&runtime.tables(), &chat, &caller).await {
        Ok(p) => p,
        Err(e) => return reject(account, e),
    };
    label(&mut account, runtime, &plan);
    if let Some(refusal) = plan.refusal.clone() {
        account.model = Some(plan.named.metrics.clone());
        return reject(account, refusal);
    }
    // Limits are checked before anything is sent; the response's tokens are charged when it
    // ends (the account settles them).
    let admission = match &key {
        Some(k) => match admit(k, &plan, &chat, &mut account) {
            Ok(a) => Some(a),
            Err(refused) => return reject_limited(account, k, refused),
        },
        None => None,
    };
    let call = Call {
        runtime: runtime.clone(),
        request_id,
        headers: parts.headers,
        key,
        domain: account.domain,
    };
    let mut resp = answer(call, &plan, chat, account).await;
    request_headers(resp.headers_mut(), &plan, admission.as_ref());
    resp
}

/// The account's labels: the mode, and the domain of a routed request.
fn label(account: &mut Account, runtime: &Runtime, plan: &Plan) {
    account.mode = mode_index(plan.budget.as_ref().map(|b| b.mode));
    if let Some(r) = &plan.routed {
        account.routed = true;
        account.domain = runtime
            .domains
            .iter()
            .position(|d| *d == r.decision.domain)
            .unwrap_or(0);
    }
}

/// The key's limits and quotas for this request, holding what it may spend; the account is
/// charged to the key from here on.
fn admit(
    key: &Arc<KeyState>,
    plan: &Plan,
    chat: &ChatRequest,
    account: &mut Account,
) -> Result<Admission, Refusal> {
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
    let admission = key.admit(mode, plan.prompt_tokens, expected)?;
    account.key = Some((key.clone(), mode));
    account.hold = admission.hold;
    Ok(admission)
}

/// The answer: contemplating's orchestration, or the attempt path over the plan's order.
async fn answer(
    call: Call,
    plan: &Plan,
    chat: ChatRequest,
    mut account: Account,
) -> Response<Body> {
    let contemplating = plan
        .budget
        .as_ref()
        .filter(|b| b.mode == Mode::Contemplating)
        .cloned();
    match contemplating {
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
    }
}

/// What the response says about the whole request: the key's limits and the routing.
fn request_headers(headers: &mut http::HeaderMap, plan: &Plan, admission: Option<&Admission>) {
    if let Some(a) = admission {
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
}

fn reject(mut account: Account, e: ApiError) -> Response<Body> {
    account.status = e.status.as_u16();
    e.into_response()
}

/// A 429 for a key over a limit, with `Retry-After`.
fn reject_limited(account: Account, key: &KeyState, refusal: Refusal) -> Response<Body> {
    account.rate_limited(&key.key.name, refusal.limit);
    tracing::info!(key = %key.key.name, limit = refusal.limit, "Refused a request over a rate limit.");
    let retry = refusal.retry_after.as_secs().max(1);
    let mut resp = reject(account, refusal.to_api(&key.key.name));
    resp.headers_mut()
        .insert(http::header::RETRY_AFTER, retry.into());
    resp
}
