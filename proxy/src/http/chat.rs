//! `POST /v1/chat/completions`: ingress, then [`serve`] (which every front end calls): the
//! plan, the key's admission, then the answer — through the attempt path
//! ([`crate::pipeline`]) or, in contemplating mode, through the orchestration that calls it
//! for every agent and the synthesis. The request's [`Account`] is carried to whichever of
//! them ends it.

use std::sync::Arc;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use thinkgate_config::Mode;

use super::cached;
use crate::auth::{Admission, Expected, KeyState};
use crate::body::Body;
use crate::cache::{self, Looked, ResponseCache};
use crate::canonical::ChatRequest;
use crate::contemplate;
use crate::ingress;
use crate::pipeline::{self, mode_index, Ask, Call, KeyAdmission};
use crate::plan::{self, Caller, Plan};
use crate::state::Runtime;
use crate::telemetry::spans::{attr, TraceSpan};
use crate::telemetry::Account;

pub async fn handle(
    runtime: &Arc<Runtime>,
    req: Request<Incoming>,
    request_id: HeaderValue,
    account: Account,
    key: Option<Arc<KeyState>>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let read = ingress::read_within(&parts.headers, body, &runtime.config.server);
    let chat = match read.await.and_then(|bytes| ingress::parse_chat(&bytes)) {
        Ok(c) => c,
        Err(e) => return account.reject(e),
    };
    serve(runtime, parts.headers, chat, request_id, account, key).await
}

/// A canonical request from any front end (chat completions, or a translated Messages or
/// Responses request) from the plan on: the one path every API takes.
pub async fn serve(
    runtime: &Arc<Runtime>,
    headers: http::HeaderMap,
    chat: ChatRequest,
    request_id: HeaderValue,
    mut account: Account,
    key: Option<Arc<KeyState>>,
) -> Response<Body> {
    let caller = Caller {
        headers: &headers,
        key: key.as_deref(),
    };
    let plan = match plan::plan(&runtime.tables(), &chat, &caller).await {
        Ok(p) => p,
        Err(e) => return account.reject(e),
    };
    label(&mut account, runtime, &plan);
    account.trace(|span| traced(span, &chat, &plan));
    if let Some(refusal) = plan.refusal.clone() {
        account.model = Some(plan.named.metrics.clone());
        return account.reject(refusal);
    }
    // The response cache answers before anything is admitted or sent.
    let mut fill = None;
    if let Some(cache) = &runtime.cache {
        let looked = look_up(
            runtime,
            cache,
            &headers,
            &chat,
            &plan,
            key.as_deref(),
            &account,
        );
        let looked = match looked.await {
            Ok(looked) => looked,
            Err(e) => return account.reject(e),
        };
        (fill, account) = match cached::after_lookup(runtime, cache, looked, account) {
            Ok(next) => next,
            Err(hit) => return *hit,
        };
    }
    let cache_status = account.cache;
    // The key's limits are checked before anything is sent (by the first attempt whose
    // model admits the request; up front for contemplating, whose stream starts at once);
    // the response's tokens are charged when it ends (the account settles them).
    let admission = KeyAdmission {
        pending: key.as_ref().map(|_| expected(&plan, &chat)),
        admitted: Default::default(),
    };
    let call = Call {
        runtime: runtime.clone(),
        request_id,
        headers,
        key,
        domain: account.domain,
        admission,
        trace: account.span.as_deref().map(TraceSpan::parent),
    };
    let resp = answer(call, &plan, chat, account).await;
    cached::recorded(resp, fill, cache_status)
}

/// Whether the cache may answer the request, and if it may, what it holds for it.
async fn look_up(
    runtime: &Runtime,
    cache: &ResponseCache,
    headers: &http::HeaderMap,
    chat: &ChatRequest,
    plan: &Plan,
    key: Option<&KeyState>,
    account: &Account,
) -> Result<Looked, crate::error::ApiError> {
    let endpoint = account.endpoint();
    let use_ = cache::decide(headers, chat)?;
    let entry_key = || {
        let owner = cached::owner(cache, key);
        cache::key::of(endpoint, owner, headers, chat, plan, &runtime.table.version)
    };
    Ok(cache.consult(endpoint, use_, entry_key).await)
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

/// What the request's span says of the ask and the plan.
fn traced(span: &mut TraceSpan, chat: &ChatRequest, plan: &Plan) {
    let max_tokens = crate::upstream::convert::max_tokens(&chat.body);
    span.requested("chat", &chat.model, max_tokens);
    if let Some(r) = &plan.routed {
        span.set(attr::CONFIDENCE, f64::from(r.decision.confidence));
    }
    span.content(attr::INPUT_MESSAGES, || {
        let messages = chat
            .body
            .get("messages")
            .unwrap_or(&serde_json::Value::Null);
        crate::telemetry::spans::input_messages(messages)
    });
}

/// What the key is asked to admit: the mode, the prompt, and the most the request may spend.
fn expected(plan: &Plan, chat: &ChatRequest) -> (Option<Mode>, u64, Expected) {
    let budget = plan.budget.as_ref();
    let output = budget
        .map(|b| b.output_cap())
        .or_else(|| crate::upstream::convert::max_tokens(&chat.body))
        .unwrap_or(0);
    let expected = Expected {
        output,
        reasoning: budget.map_or(0, |b| b.reported()),
    };
    // Counted whenever the key has a token limit, the one place admission reads it.
    let prompt = plan.prompt_tokens.known().unwrap_or(0);
    (budget.map(|b| b.mode), prompt, expected)
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
    let Some(budget) = contemplating else {
        let ask = Ask {
            chat: &chat,
            budget: plan.budget.as_ref(),
            suffix: plan.suffix,
            prompt_tokens: &plan.prompt_tokens,
        };
        let mut resp = pipeline::answer(&call, &plan.order, ask, account).await;
        request_headers(resp.headers_mut(), plan, call.admission.admitted.get());
        return resp;
    };
    // Its stream starts at once, so the key admits the whole request first.
    if let (Err(refusal), Some(key)) = (call.admit_key(&mut account).await, &call.key) {
        return pipeline::reject_limited(account, key, refusal);
    }
    let admitted = call.admission.admitted.get().cloned();
    account.model = plan.order.first().map(|r| r.metrics.clone());
    let req = contemplate::Request {
        call,
        budget,
        domain: plan.domain().map(str::to_string),
        chat,
        order: plan.order.clone(),
    };
    // Boxed: the orchestration's future is larger than the attempt path's, and inline it
    // would be copied with every request's.
    let mut resp = Box::pin(contemplate::handle(req, account)).await;
    request_headers(resp.headers_mut(), plan, admitted.as_ref());
    resp
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
