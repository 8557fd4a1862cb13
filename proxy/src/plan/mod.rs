//! Plan: decides, for one request, in which reasoning mode it runs, under which budget, and
//! which models may answer it, in order.
//!
//! Pure: reads the runtime's [`Tables`], does no IO. [`plan`] is the one entry: the server
//! calls it for every request (each contemplating agent and the synthesis run under the plan
//! it returns), and `thinkgate route --explain` prints what it returns.

pub mod budget;
pub mod cast;
pub mod classify;
pub mod learn;
pub mod route;

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use thinkgate_config::Config;
use thinkgate_metrics::TokenCounter;

use crate::auth::{self, KeyState};
use crate::canonical::{Budget, ChatRequest, Message};
use crate::error::ApiError;
use crate::models::Route;
use budget::Asks;
use classify::Classifier;
use route::{Routed, Table};

pub use thinkgate_config::Mode;

/// What the planner reads: borrowed from the runtime of the request.
pub struct Tables<'a> {
    pub config: &'a Config,
    pub routes: &'a HashMap<String, Arc<Route>>,
    pub classifier: &'a Classifier,
    pub table: &'a Table,
    /// The budgets adaptive modes learned, as of this request.
    pub learned: arc_swap::Guard<Arc<budget::Learned>>,
}

/// Who asks: the request's headers and the client key, if keys are configured.
pub struct Caller<'a> {
    pub headers: &'a HeaderMap,
    pub key: Option<&'a KeyState>,
}

/// What the request will do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The model the request named, or the default model for `auto` (whose token counter
    /// estimates the prompt).
    pub named: Arc<Route>,
    /// The mode the model name asked for, if it did.
    pub suffix: Option<Mode>,
    /// For `auto`: the domain decision and every ranked model with why it was left out.
    pub routed: Option<Routed>,
    /// The mode and budget, or `None` when no mode applies.
    pub budget: Option<Budget>,
    /// The prompt's tokens: counted when a key's token limit or a context fit needed them,
    /// else on first use.
    pub prompt_tokens: PromptCount,
    /// The deployments to try, in order (each model's in its balancer's order): the first
    /// answers, the rest are fallbacks.
    pub order: Vec<Arc<Route>>,
    /// Why no model can take the request, when `order` is empty.
    pub refusal: Option<ApiError>,
}

impl Plan {
    /// The domain label, for routed requests.
    pub fn domain(&self) -> Option<&str> {
        self.routed.as_ref().map(|r| r.decision.domain.as_str())
    }

    pub fn mode(&self) -> Option<Mode> {
        self.budget.as_ref().map(|b| b.mode).or(self.suffix)
    }
}

/// Plans one request: the model asked for, its mode and budget (the key's caps applied), the
/// domain for `auto`, and the models that fit, in order. A request the key may not make is
/// an error; one no model can take is a plan with an empty order and its `refusal`.
pub async fn plan(
    tables: &Tables<'_>,
    chat: &ChatRequest,
    caller: &Caller<'_>,
) -> Result<Plan, ApiError> {
    let (named, suffix, is_auto) = resolve_model(tables, &chat.model)?;
    if let Some(k) = caller.key {
        let asked = if is_auto {
            "auto"
        } else {
            named.model.id.as_str()
        };
        if !k.allows_model(asked) {
            return Err(auth::forbidden(&k.key.name, "model", asked));
        }
    }
    // The conversation is read as messages once; every stage below works on it.
    let messages = chat.messages();
    let shape = Shape::of(chat, &messages);
    let decision = is_auto.then(|| {
        tables
            .classifier
            .classify_messages(&messages, chat.has_tools)
    });
    let asks = Asks {
        suffix,
        headers: caller.headers,
        body: &chat.body,
        domain: decision.as_ref().map(|d| d.domain.as_str()),
        client_cap: crate::upstream::convert::max_tokens(&chat.body),
        learned: &tables.learned,
    };
    let asks_cap = asks.client_cap;
    let mut budget = budget::resolve(&tables.config.modes, &asks)?;
    if let (Some(k), Some(b)) = (caller.key, budget.as_mut()) {
        if !k.allows_mode(b.mode) {
            return Err(auth::forbidden(&k.key.name, "mode", b.mode.as_str()));
        }
        // The key's own cap: the tightest of mode, domain and key wins.
        if let Some(cap) = k.max_budget(b.mode) {
            if b.reasoning > cap {
                b.clamped_from = Some(b.clamped_from.unwrap_or(b.reasoning).max(b.reasoning));
                b.reasoning = cap;
            }
        }
    }
    // BPE costs ~14 ms per 100k tokens: count only what a decision needs. A token is at
    // least a byte, so the byte bound settles every context fit it passes.
    let bound = prompt_bound(&messages);
    let mut prompt_tokens = if caller.key.is_some_and(|k| k.limits_prompt_tokens()) {
        PromptCount::counted(count_prompt(&messages, named.counter).await)
    } else {
        PromptCount::later(&messages, named.counter)
    };
    let (routed, order, refusal) = match decision {
        Some(d) => {
            let mut fit = route::Fit {
                shape: &shape,
                budget: budget.as_ref(),
                client_cap: asks_cap,
                prompt_tokens: prompt_tokens.known().unwrap_or(bound),
            };
            let mut r = route::choose(tables.table, &fit, d.clone());
            if prompt_tokens.known().is_none()
                && r.candidates
                    .iter()
                    .any(|c| !route::fits_context(&c.route, &fit))
            {
                let exact = count_prompt(&messages, named.counter).await;
                prompt_tokens = PromptCount::counted(exact);
                fit.prompt_tokens = exact;
                r = route::choose(tables.table, &fit, d);
            }
            if let Some(k) = caller.key {
                exclude_for_key(&mut r, k);
            }
            let order = r.order();
            let refusal = order.is_empty().then(|| nothing_fits(&r));
            (Some(r), order, refusal)
        }
        None => match check_capabilities(&shape, &named.model) {
            Ok(()) => (None, vec![named.clone()], None),
            Err(e) => (None, Vec::new(), Some(e)),
        },
    };
    // Each model's deployments, in the balancer's order, stand in for it.
    let now = std::time::Instant::now();
    let order = order.iter().flat_map(|r| r.arranged(now)).collect();
    Ok(Plan {
        named,
        suffix,
        routed,
        budget,
        prompt_tokens,
        order,
        refusal,
    })
}

/// The client's `model`: a model id, `auto`, or either with a `:<mode>` suffix.
fn resolve_model(
    tables: &Tables<'_>,
    asked: &str,
) -> Result<(Arc<Route>, Option<Mode>, bool), ApiError> {
    let mapped = mapped_name(tables, asked);
    let requested = mapped.as_deref().unwrap_or(asked);
    let (base, mode) = match requested.rsplit_once(':') {
        Some((base, suffix)) => match Mode::parse(suffix) {
            Some(mode) => (base, Some(mode)),
            None => {
                return Err(not_found(
                    requested,
                    format!(
                        "`{suffix}` is not a reasoning mode; use instant, thinking or contemplating"
                    ),
                ))
            }
        },
        None => (requested, None),
    };
    let id = if base == "auto" {
        tables.config.default_model.as_str()
    } else {
        base
    };
    match tables.routes.get(id) {
        Some(route) if route.model.embeddings => Err(ApiError::invalid_request(format!(
            "`{id}` is an embeddings model; send it to POST /v1/embeddings"
        ))
        .with_param("model")
        .with_code("model_not_supported")),
        Some(route) => Ok((route.clone(), mode, base == "auto")),
        None => Err(not_found(
            asked,
            "see GET /v1/models for the models this proxy serves".to_string(),
        )),
    }
}

/// The model an embeddings request names (mapped names too): one marked `embeddings`, on
/// an upstream that serves them, that the key may use.
pub fn embeddings_route(
    tables: &Tables<'_>,
    asked: &str,
    key: Option<&KeyState>,
) -> Result<Arc<Route>, ApiError> {
    openai_route(tables, asked, key, true)
}

/// The model a legacy text completion names: a chat model (not an embeddings one) on an
/// OpenAI-format upstream, which the key may use.
pub fn completions_route(
    tables: &Tables<'_>,
    asked: &str,
    key: Option<&KeyState>,
) -> Result<Arc<Route>, ApiError> {
    openai_route(tables, asked, key, false)
}

fn openai_route(
    tables: &Tables<'_>,
    asked: &str,
    key: Option<&KeyState>,
    embeddings: bool,
) -> Result<Arc<Route>, ApiError> {
    let mapped = mapped_name(tables, asked);
    let id = mapped.as_deref().unwrap_or(asked);
    let route = tables.routes.get(id).ok_or_else(|| {
        not_found(
            asked,
            "see GET /v1/models for the models this proxy serves".to_string(),
        )
    })?;
    let refuse = |why: String| {
        ApiError::invalid_request(why)
            .with_param("model")
            .with_code("model_not_supported")
    };
    if embeddings && !route.model.embeddings {
        return Err(refuse(format!(
            "`{id}` is not an embeddings model (a model serves /v1/embeddings when its capabilities include \"embeddings\")"
        )));
    }
    if !embeddings && route.model.embeddings {
        return Err(refuse(format!(
            "`{id}` is an embeddings model; send it to POST /v1/embeddings"
        )));
    }
    if !route.upstream.speaks_openai() {
        return Err(refuse(format!(
            "`{id}`'s provider `{}` does not speak OpenAI's format, which has this endpoint",
            route.upstream.name
        )));
    }
    if let Some(k) = key.filter(|k| !k.allows_model(id)) {
        return Err(auth::forbidden(&k.key.name, "model", id));
    }
    Ok(route.clone())
}

/// A name the proxy does not serve may be one the config maps (`claude-*` → `auto`); a mode
/// suffix the client added (`claude-sonnet-4-5:thinking`) is kept over the target's.
fn mapped_name(tables: &Tables<'_>, asked: &str) -> Option<String> {
    let names = &tables.config.routing.model_names;
    if names.is_empty() || tables.routes.contains_key(asked) {
        return None;
    }
    let (base, suffix) = match asked.rsplit_once(':') {
        Some((base, suffix)) if Mode::parse(suffix).is_some() => (base, Some(suffix)),
        _ => (asked, None),
    };
    let target = names.resolve(base)?;
    Some(match suffix {
        Some(suffix) => {
            let target_base = target.rsplit_once(':').map_or(target, |(b, _)| b);
            format!("{target_base}:{suffix}")
        }
        None => target.to_string(),
    })
}

/// A key that names models may only be routed to those.
fn exclude_for_key(routed: &mut Routed, key: &KeyState) {
    let names_models = key
        .key
        .models
        .as_ref()
        .is_some_and(|m| m.iter().any(|x| x != "auto"));
    if !names_models {
        return;
    }
    for c in routed
        .candidates
        .iter_mut()
        .filter(|c| c.excluded.is_none())
    {
        if !key.allows_model(&c.route.model.id) {
            c.excluded = Some(format!("not allowed for key `{}`", key.key.name));
        }
    }
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
    let all_down = r.candidates.iter().all(|c| c.down);
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

fn not_found(requested: &str, hint: String) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("The model `{requested}` does not exist: {hint}"),
    )
    .with_param("model")
    .with_code("model_not_found")
}

/// Tokens an image part adds to a prompt (OpenAI's low-detail figure).
const IMAGE_TOKENS: u64 = 85;
/// Texts above this many bytes are counted on the blocking pool: BPE on long inputs (and
/// worse, on long runs without spaces) would stall the async workers.
const BLOCKING_COUNT_BYTES: usize = 32 * 1024;

/// The prompt's token count, counted now or on first use (a relay asks only when the
/// upstream reported no usage). Cheap to clone.
#[derive(Clone)]
pub struct PromptCount(Arc<PromptCountInner>);

struct PromptCountInner {
    counted: std::sync::OnceLock<u64>,
    /// What to count when asked: framing and image tokens, the texts (an owned copy: a
    /// memcpy is ~300x cheaper than the count it defers) and the model's counter. `None`
    /// when counted up front.
    deferred: Option<(u64, Vec<String>, TokenCounter)>,
}

impl std::fmt::Debug for PromptCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.known() {
            Some(n) => write!(f, "PromptCount({n})"),
            None => write!(f, "PromptCount(not counted yet)"),
        }
    }
}

impl PromptCount {
    pub fn counted(tokens: u64) -> PromptCount {
        PromptCount(Arc::new(PromptCountInner {
            counted: std::sync::OnceLock::from(tokens),
            deferred: None,
        }))
    }

    /// Counted on first [`get`](Self::get), as [`count_prompt`] would.
    pub fn later(messages: &[Message<'_>], counter: TokenCounter) -> PromptCount {
        let (framing, images) = prompt_fixed(messages);
        PromptCount(Arc::new(PromptCountInner {
            counted: std::sync::OnceLock::new(),
            deferred: Some((
                framing + images,
                messages.iter().map(|m| m.text().into_owned()).collect(),
                counter,
            )),
        }))
    }

    /// The count, if it was made.
    pub fn known(&self) -> Option<u64> {
        self.0.counted.get().copied()
    }

    /// The count, made now if it was not (synchronously, as the relay counts output text an
    /// upstream did not report).
    pub fn get(&self) -> u64 {
        let inner = &self.0;
        *inner.counted.get_or_init(|| {
            inner
                .deferred
                .as_ref()
                .map_or(0, |(fixed, texts, counter)| {
                    fixed + texts.iter().map(|t| counter.count(t) as u64).sum::<u64>()
                })
        })
    }
}

/// Framing and image tokens, which need no counting.
fn prompt_fixed(messages: &[Message<'_>]) -> (u64, u64) {
    let framing: u64 = 3 + 3 * messages.len() as u64;
    let images: u64 = messages.iter().filter(|m| m.has_image()).count() as u64 * IMAGE_TOKENS;
    (framing, images)
}

/// At least the prompt's token count, without counting: a BPE token is at least one byte.
fn prompt_bound(messages: &[Message<'_>]) -> u64 {
    let (framing, images) = prompt_fixed(messages);
    framing + images + messages.iter().map(|m| m.text().len() as u64).sum::<u64>()
}

/// Prompt tokens as OpenAI counts chat: each message's text plus a few tokens of framing.
pub async fn count_prompt(messages: &[Message<'_>], counter: TokenCounter) -> u64 {
    let (framing, images) = prompt_fixed(messages);
    let size: usize = messages.iter().map(|m| m.text().len()).sum();
    let text_tokens = if size <= BLOCKING_COUNT_BYTES {
        messages
            .iter()
            .map(|m| counter.count(&m.text()) as u64)
            .sum()
    } else {
        // Owned for the blocking pool: the one copy of a large prompt the proxy makes.
        let texts: Vec<String> = messages.iter().map(|m| m.text().into_owned()).collect();
        tokio::task::spawn_blocking(move || texts.iter().map(|t| counter.count(t) as u64).sum())
            .await
            .unwrap_or(0)
    };
    framing + images + text_tokens
}

/// What a model must be able to take for a request: images (the first message with one)
/// and tools. Read once per request; every candidate is checked against it.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub image_at: Option<usize>,
    pub has_tools: bool,
}

impl Shape {
    pub fn of(chat: &ChatRequest, messages: &[Message<'_>]) -> Shape {
        Shape {
            image_at: messages.iter().position(|m| m.has_image()),
            has_tools: chat.has_tools,
        }
    }
}

/// Refuses a request the chosen model cannot serve, rather than dropping what it asked for.
pub fn check_capabilities(shape: &Shape, model: &thinkgate_config::Model) -> Result<(), ApiError> {
    if !model.vision {
        if let Some(i) = shape.image_at {
            return Err(ApiError::invalid_request(format!(
                "model `{}` does not accept images (messages[{i}] has one); use a model with the vision capability",
                model.id
            ))
            .with_param(format!("messages[{i}].content"))
            .with_code("unsupported_content"));
        }
    }
    if shape.has_tools && !model.tools {
        return Err(ApiError::invalid_request(format!(
            "model `{}` does not support tools; use a model with the tools capability",
            model.id
        ))
        .with_param("tools")
        .with_code("unsupported_parameter"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_deferred_count_equals_the_count_and_the_bound_is_never_below_it() {
        let body = serde_json::json!({"model": "auto", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "数学の問題: ∑ 1/n² = π²/6 — why? "},
            {"role": "user", "content": [{"type": "text", "text": "and in code"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]});
        let chat = crate::ingress::parse_chat(body.to_string().as_bytes()).expect("request");
        let messages = chat.messages();
        let counter = TokenCounter::new(thinkgate_config::Encoding::O200kBase);
        let now = count_prompt(&messages, counter).await;
        let later = PromptCount::later(&messages, counter);
        assert_eq!(later.known(), None, "nothing is counted until asked");
        assert_eq!(later.get(), now);
        assert_eq!(later.known(), Some(now));
        assert!(prompt_bound(&messages) >= now);
        assert_eq!(PromptCount::counted(7).get(), 7);
    }
}
