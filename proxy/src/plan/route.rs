//! Routing `auto`: the models ranked for the request's domain by the domain's policy (built
//! once per config), then filtered by what fits this request — context window, vision and
//! tools, a usable and healthy upstream. The first that fits answers; the rest, in order,
//! are the fallbacks for a failure before the first byte. Pure apart from reading the circuit breakers.

use std::collections::HashMap;
use std::sync::Arc;

use thinkgate_config::{Config, EfficientBy, Policy};

use crate::canonical::Budget;
use crate::models::Route;
use crate::plan::classify::Decision;
use crate::plan::Shape;

/// A model's score for a domain, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub value: f64,
    /// `None`: the model's published figure for the domain. Else how it was estimated.
    pub estimated: Option<String>,
}

/// The models ranked per domain, by that domain's policy. Built with the runtime.
#[derive(Debug, Default)]
pub struct Table {
    ranked: HashMap<String, Vec<(Arc<Route>, Score)>>,
    /// When no model has scores: `auto` is the default model.
    fallback: Option<Arc<Route>>,
    /// A digest of what decides where `auto` goes and how it answers: the domains (their
    /// examples train the classifier), the confidence threshold, every ranking and what
    /// serves each ranked model ([`Route::serving`]). The same config gives the
    /// same version on every replica; the response cache keys `auto` answers by it.
    pub version: [u8; 16],
}

impl Table {
    pub fn build(config: &Config, routes: &HashMap<String, Arc<Route>>) -> Table {
        let scored: Vec<&Arc<Route>> = config
            .models
            .iter()
            .filter(|m| !m.scores.is_empty() && !m.embeddings)
            .filter_map(|m| routes.get(&m.id))
            .collect();
        let fallback = routes.get(&config.default_model).cloned();
        let mut ranked = HashMap::new();
        for d in &config.domains {
            ranked.insert(d.name.clone(), rank(config, &scored, &d.name));
        }
        let version = version(config, &ranked, fallback.as_deref());
        Table {
            ranked,
            fallback,
            version,
        }
    }

    /// The ranking for `domain` (the general one for a domain the table does not know).
    pub fn ranked(&self, domain: &str) -> Vec<(Arc<Route>, Score)> {
        match self
            .ranked
            .get(domain)
            .or_else(|| self.ranked.get("general"))
        {
            Some(r) if !r.is_empty() => r.clone(),
            _ => self
                .fallback
                .iter()
                .map(|r| {
                    let why = "no model has scores: the default model".to_string();
                    (
                        r.clone(),
                        Score {
                            value: 0.0,
                            estimated: Some(why),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// The digest of [`Table::version`], over the domains in the config's order.
fn version(
    config: &Config,
    ranked: &HashMap<String, Vec<(Arc<Route>, Score)>>,
    fallback: Option<&Route>,
) -> [u8; 16] {
    let mut h = crate::digest::Fields::default();
    h.field(&config.confidence_threshold.to_le_bytes());
    if let Some(r) = fallback {
        h.field(r.model.id.as_bytes());
        r.serving(|f| h.field(f));
    }
    for d in &config.domains {
        h.field(d.name.as_bytes());
        for text in d.examples.iter().chain(&d.keywords) {
            h.field(text.as_bytes());
        }
        for (route, score) in ranked.get(&d.name).into_iter().flatten() {
            h.field(route.model.id.as_bytes());
            route.serving(|f| h.field(f));
            h.field(&score.value.to_le_bytes());
        }
    }
    h.finish16()
}

/// A model's score for `domain`. A model without a published figure for it gets its
/// general score, carried onto the domain benchmark's scale by the models that have both
/// (benchmarks differ in scale: HLE tops out near 45 where GPQA nears 95), so a missing
/// figure neither wins nor loses by the scale of another benchmark.
pub fn score(scored: &[&Arc<Route>], route: &Route, domain: &str) -> Score {
    let general = |r: &Route| r.model.scores.get("general").copied();
    if let Some(own) = route.model.scores.get(domain) {
        return Score {
            value: *own,
            estimated: None,
        };
    }
    let ratios: Vec<f64> = scored
        .iter()
        .filter_map(|r| Some(r.model.scores.get(domain)? / general(r)?))
        .collect();
    let ratio = if ratios.is_empty() {
        1.0
    } else {
        ratios.iter().sum::<f64>() / ratios.len() as f64
    };
    let estimated = match general(route) {
        Some(g) => format!(
            "estimated: no {domain} figure; general {g:.1} x {ratio:.2} (the {domain}/general ratio of {} model(s) with both)",
            ratios.len()
        ),
        None => format!("estimated: no {domain} or general figure"),
    };
    Score {
        value: general(route).unwrap_or(0.0) * ratio,
        estimated: Some(estimated),
    }
}

/// Orders the scored models for one domain by its policy.
fn rank(config: &Config, scored: &[&Arc<Route>], domain: &str) -> Vec<(Arc<Route>, Score)> {
    let mut out: Vec<(Arc<Route>, Score)> = scored
        .iter()
        .map(|r| ((*r).clone(), score(scored, r, domain)))
        .collect();
    // Best first; ties go to the model that writes fewer tokens, then the cheaper one.
    let wordiness = |r: &Route| r.model.output_tokens_mtok.unwrap_or(f64::MAX);
    out.sort_by(|a, b| {
        b.1.value
            .total_cmp(&a.1.value)
            .then(wordiness(&a.0).total_cmp(&wordiness(&b.0)))
            .then(
                a.0.model
                    .price_output_per_mtok
                    .total_cmp(&b.0.model.price_output_per_mtok),
            )
    });
    let routing = &config.routing;
    match routing.policy(domain) {
        Policy::Best => {}
        Policy::Efficient => {
            let best = out.first().map_or(0.0, |c| c.1.value);
            let value = |r: &Route, score: f64| {
                let tokens = r.model.output_tokens_mtok.unwrap_or(f64::MAX);
                match routing.efficient_by {
                    EfficientBy::Tokens => score / tokens,
                    EfficientBy::Cost => score / (tokens * r.model.price_output_per_mtok.max(1e-9)),
                }
            };
            let (mut near, rest): (Vec<_>, Vec<_>) = out
                .into_iter()
                .partition(|c| c.1.value >= best - routing.efficient_margin);
            near.sort_by(|a, b| value(&b.0, b.1.value).total_cmp(&value(&a.0, a.1.value)));
            out = near.into_iter().chain(rest).collect();
        }
        Policy::Order(ids) => {
            out = ids
                .iter()
                .filter_map(|id| {
                    scored
                        .iter()
                        .find(|r| &r.model.id == id)
                        .map(|r| ((*r).clone(), score(scored, r, domain)))
                })
                .collect();
        }
    }
    out
}

/// One model considered for a request.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub route: Arc<Route>,
    pub score: Score,
    /// Why it cannot take this request, if it cannot.
    pub excluded: Option<String>,
    /// It was left out because it is down (its provider unusable, or unhealthy), not
    /// because of the request.
    pub down: bool,
}

/// The routing decision for one request.
#[derive(Debug, Clone)]
pub struct Routed {
    pub decision: Decision,
    /// Every ranked model, in policy order, with why it was left out.
    pub candidates: Vec<Candidate>,
}

impl Routed {
    /// The models that fit, best first: the first answers, the rest are fallbacks.
    pub fn order(&self) -> Vec<Arc<Route>> {
        self.candidates
            .iter()
            .filter(|c| c.excluded.is_none())
            .map(|c| c.route.clone())
            .collect()
    }
}

/// What a request needs of a model, read once per request.
pub struct Fit<'a> {
    pub shape: &'a Shape,
    pub budget: Option<&'a Budget>,
    /// The client's own output cap, if it set one.
    pub client_cap: Option<u64>,
    pub prompt_tokens: u64,
}

/// The output a request may take on `m`: its budget's cap, or the client's own.
fn output_tokens(m: &thinkgate_config::Model, fit: &Fit<'_>) -> u64 {
    match fit.budget {
        Some(b) if m.reasoning => b.output_cap(),
        Some(b) => b.reserve,
        None => fit.client_cap.unwrap_or(0),
    }
}

/// Whether the prompt and the output fit `route`'s context window.
pub fn fits_context(route: &Route, fit: &Fit<'_>) -> bool {
    fit.prompt_tokens + output_tokens(&route.model, fit) <= route.model.context_window
}

/// Why `route` cannot take the request, if so, and whether that is because it is down.
pub fn misfit(route: &Route, fit: &Fit<'_>) -> Option<(String, bool)> {
    let m = &route.model;
    if let Err(e) = crate::plan::check_capabilities(fit.shape, m) {
        return Some((e.message, false));
    }
    if !fits_context(route, fit) {
        let output = output_tokens(m, fit);
        let prompt_tokens = fit.prompt_tokens;
        let why = format!(
            "context window {} < {prompt_tokens} prompt + {output} output tokens",
            m.context_window
        );
        return Some((why, false));
    }
    // Down only when every deployment is.
    if route.deployments().all(|d| d.upstream.unusable.is_some()) {
        let why = route.upstream.unusable.as_deref().unwrap_or_default();
        let why = format!("provider `{}` unusable: {why}", route.upstream.name);
        return Some((why, true));
    }
    let now = std::time::Instant::now();
    let open: Option<Vec<_>> = route
        .deployments()
        .map(|d| match d.breaker.state(now) {
            (state, Some(left)) => Some((state, left)),
            _ => None,
        })
        .collect();
    if let Some((state, left)) = open.and_then(|o| o.into_iter().min_by_key(|(_, left)| *left)) {
        let why = format!(
            "circuit breaker {}: tried again in {}s",
            state.as_str().replace('_', "-"),
            left.as_secs().max(1)
        );
        return Some((why, true));
    }
    None
}

/// Ranks the models for the decision's domain and marks those that cannot take the request.
pub fn choose(table: &Table, fit: &Fit<'_>, decision: Decision) -> Routed {
    let candidates = table
        .ranked(&decision.domain)
        .into_iter()
        .map(|(route, score)| {
            let (excluded, down) = match misfit(&route, fit) {
                Some((why, down)) => (Some(why), down),
                None => (None, false),
            };
            Candidate {
                excluded,
                down,
                route,
                score,
            }
        })
        .collect();
    Routed {
        decision,
        candidates,
    }
}
