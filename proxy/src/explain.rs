//! The whole plan for one request, as `thinkgate route --explain` prints it: mode and budget
//! with where they came from, the domain with every score, each candidate model with its
//! score (published, or estimated and from what) and why it was left out (capability,
//! context, health, key), the models that are no candidates at all, the contemplating cast
//! (agents, their models and budgets, the synthesis), the choice and the fallbacks. It
//! renders what [`crate::plan::plan`] returns, the same call the server makes; nothing is
//! sent anywhere.

use http::HeaderMap;
use serde_json::{json, Value};
use thinkgate_config::{Mode, Policy};

use crate::canonical::Budget;
use crate::error::ApiError;
use crate::ingress;
use crate::plan::cast::cast;
use crate::plan::{self, Caller};
use crate::state::Runtime;

/// The plan for one request body, as JSON, as the client key named `key` (if any) would
/// get it (`thinkgate route --explain` against a config file).
pub async fn explain(runtime: &Runtime, body: &[u8], key: Option<&str>) -> Result<Value, ApiError> {
    let key = match key {
        Some(name) => Some(runtime.keys.by_name(name).ok_or_else(|| {
            ApiError::invalid_request(format!("the config has no client key named `{name}`"))
        })?),
        None => None,
    };
    plan_of(runtime, body, &HeaderMap::new(), key.map(|k| k.as_ref())).await
}

/// The plan for one request body with its headers, as `key` would get it: what the running
/// server answers on `POST /v1/route`, with its live circuit breakers.
pub async fn plan_of(
    runtime: &Runtime,
    body: &[u8],
    headers: &HeaderMap,
    key: Option<&crate::auth::KeyState>,
) -> Result<Value, ApiError> {
    let chat = ingress::parse_chat(body)?;
    let caller = Caller { headers, key };
    let plan = plan::plan(&runtime.tables(), &chat, &caller).await?;
    let mode = plan.budget.as_ref().map_or(Value::Null, |b| {
        json!({
            "mode": b.mode.as_str(),
            "from": b.source.as_str(),
            "reasoning_budget": b.reported(),
            "budget_learned": b.learned,
            "answer_reserve": b.reserve,
            "budget_hint": b.hint && !b.off,
            "clamped_from": b.clamped_from,
            "notice": b.notice,
        })
    });
    let (domain, candidates) = match &plan.routed {
        Some(routed) => {
            let d = &routed.decision;
            let policy = match runtime.config.routing.policy(&d.domain) {
                Policy::Best => "best".to_string(),
                Policy::Efficient => "efficient".to_string(),
                Policy::Order(ids) => format!("fixed order: {}", ids.join(", ")),
            };
            let domain = json!({
                "domain": d.domain,
                "confidence": d.confidence,
                "by": d.by,
                "scores": d.scores.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "policy": policy,
            });
            let candidates: Vec<Value> = routed
                .candidates
                .iter()
                .map(|c| {
                    json!({
                        "model": c.route.model.id,
                        "provider": c.route.upstream.name,
                        "score": (c.score.value * 10.0).round() / 10.0,
                        "estimated": c.score.estimated,
                        "fits": c.excluded.is_none(),
                        "excluded": c.excluded,
                        "breaker": breaker(&c.route),
                        "deployments": deployments(&c.route),
                    })
                })
                .collect();
            (domain, candidates)
        }
        None => {
            let r = &plan.named;
            let excluded = plan.refusal.as_ref().map(|e| e.message.clone());
            let candidate = json!({
                "model": r.model.id,
                "provider": r.upstream.name,
                "score": null,
                "fits": excluded.is_none(),
                "excluded": excluded,
                "breaker": breaker(r),
                "deployments": deployments(r),
            });
            (Value::Null, vec![candidate])
        }
    };
    // Models `auto` never considers: they publish no scores.
    let not_ranked: Vec<Value> = if plan.routed.is_some() {
        runtime
            .config
            .models
            .iter()
            .filter(|m| m.scores.is_empty())
            .map(|m| json!({"model": m.id, "reason": "no published scores: not a candidate for auto"}))
            .collect()
    } else {
        Vec::new()
    };
    let contemplating = plan
        .budget
        .as_ref()
        .filter(|b| b.mode == Mode::Contemplating)
        .and_then(|b| {
            let tables = runtime.tables();
            cast(
                &runtime.config.contemplating,
                plan.domain(),
                &plan.order,
                b,
                tables.routes,
            )
        })
        .map_or(Value::Null, |c| {
            let reasoning = |b: &Option<Budget>| b.as_ref().map(|b| b.reasoning);
            json!({
                "agents": c.agents.iter().map(|(role, route, budget)| json!({
                    "role": role,
                    "model": route.model.id,
                    "reasoning_budget": reasoning(budget),
                })).collect::<Vec<_>>(),
                "synthesis": {
                    "model": c.synthesis.model.id,
                    "reasoning_budget": reasoning(&c.synthesis_budget),
                },
            })
        });
    let order: Vec<&str> = plan.order.iter().map(|r| r.model.id.as_str()).collect();
    Ok(json!({
        "model_asked": chat.model,
        "key": key.map(|k| k.key.name.clone()),
        "prompt_tokens": plan.prompt_tokens.get(),
        "mode": mode,
        "domain": domain,
        "candidates": candidates,
        "not_ranked": not_ranked,
        "contemplating": contemplating,
        "chosen": order.first(),
        "fallbacks": order.iter().skip(1).collect::<Vec<_>>(),
        "refusal": plan.refusal.as_ref().map(|e| e.message.clone()),
    }))
}

/// The plan as a person reads it.
pub fn render(plan: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    out.push_str(&format!(
        "request    model `{}`, {} prompt tokens\n",
        s(&plan["model_asked"]),
        s(&plan["prompt_tokens"])
    ));
    let m = &plan["mode"];
    if m.is_null() {
        out.push_str("mode       none (no mode asked and no default): relayed without a budget\n");
    } else {
        out.push_str(&format!(
            "mode       {} (from {}); reasoning budget {}{}, answer reserve {}, budget hint {}\n",
            s(&m["mode"]),
            s(&m["from"]),
            s(&m["reasoning_budget"]),
            if m["budget_learned"] == true {
                " (learned from traffic)"
            } else {
                ""
            },
            s(&m["answer_reserve"]),
            if m["budget_hint"] == true {
                "on"
            } else {
                "off"
            }
        ));
        if !m["clamped_from"].is_null() {
            out.push_str(&format!(
                "           the request asked for {}: clamped\n",
                s(&m["clamped_from"])
            ));
        }
        if !m["notice"].is_null() {
            out.push_str(&format!("           {}\n", s(&m["notice"])));
        }
    }
    let d = &plan["domain"];
    if d.is_null() {
        out.push_str("domain     not classified: the request names its model\n");
    } else {
        out.push_str(&format!(
            "domain     {} (confidence {:.2}, by {}; policy {})\n",
            s(&d["domain"]),
            d["confidence"].as_f64().unwrap_or(0.0),
            s(&d["by"]),
            s(&d["policy"])
        ));
        let mut scores: Vec<(&String, f64)> = d["scores"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k, v.as_f64().unwrap_or(0.0)))
                    .collect()
            })
            .unwrap_or_default();
        scores.sort_by(|a, b| b.1.total_cmp(&a.1));
        let line: Vec<String> = scores.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
        out.push_str(&format!("           {}\n", line.join("  ")));
    }
    out.push_str("candidates\n");
    for (i, c) in plan["candidates"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let why = match c["excluded"].as_str() {
            Some(w) => format!("excluded: {w}"),
            None => "fits".into(),
        };
        let why = match c["breaker"]["state"].as_str() {
            Some(state) if state != "closed" && c["excluded"].is_null() => {
                format!("{why} (circuit breaker {})", state.replace('_', "-"))
            }
            _ => why,
        };
        let mark = if c["estimated"].is_string() { "*" } else { " " };
        out.push_str(&format!(
            "  {}. {:<22} score {:>6}{mark} {}\n",
            i + 1,
            s(&c["model"]),
            s(&c["score"]),
            why
        ));
        if let Some(e) = c["estimated"].as_str() {
            out.push_str(&format!("     {:<22} * {e}\n", ""));
        }
        let deployments = c["deployments"].as_array().map_or(&[][..], Vec::as_slice);
        if deployments.len() > 1 {
            for d in deployments {
                out.push_str(&format!(
                    "     @ {:<20} weight {:<3} in flight {:<4} latency {} ms, breaker {}\n",
                    s(&d["provider"]),
                    s(&d["weight"]),
                    s(&d["in_flight"]),
                    s(&d["latency_ms"]),
                    s(&d["breaker"]["state"]).replace('_', "-"),
                ));
            }
        }
    }
    for m in plan["not_ranked"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  -  {:<22} {}\n",
            s(&m["model"]),
            s(&m["reason"])
        ));
    }
    let c = &plan["contemplating"];
    if !c.is_null() {
        out.push_str("contemplating\n");
        for (i, a) in c["agents"].as_array().into_iter().flatten().enumerate() {
            out.push_str(&format!(
                "  agent {}  {:<22} reasoning budget {:>6}  role: {}\n",
                i + 1,
                s(&a["model"]),
                s(&a["reasoning_budget"]),
                s(&a["role"])
            ));
        }
        out.push_str(&format!(
            "  synthesis {:<20} reasoning budget {:>6}\n",
            s(&c["synthesis"]["model"]),
            s(&c["synthesis"]["reasoning_budget"])
        ));
    }
    match plan["refusal"].as_str() {
        Some(why) => out.push_str(&format!("chosen     none: {why}\n")),
        None => out.push_str(&format!("chosen     {}\n", s(&plan["chosen"]))),
    }
    let fallbacks: Vec<String> = plan["fallbacks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    out.push_str(&format!(
        "fallbacks  {}\n",
        if fallbacks.is_empty() {
            "none".to_string()
        } else {
            fallbacks.join(", ")
        }
    ));
    out
}

/// A model's deployments as the server sees them now: provider, upstream model, weight,
/// calls in flight, latency estimate and breaker.
fn deployments(route: &crate::models::Route) -> Value {
    route
        .deployments()
        .map(|d| {
            json!({
                "provider": d.upstream.name,
                "upstream_model": d.model.upstream_model,
                "weight": d.deployment.config.weight,
                "in_flight": d.deployment.in_flight(),
                "latency_ms": (d.deployment.latency().as_secs_f64() * 1e4).round() / 10.0,
                "breaker": breaker(d),
            })
        })
        .collect()
}

/// A deployment's circuit breaker as the server sees it now.
fn breaker(route: &crate::models::Route) -> Value {
    let (state, left) = route.breaker.state(std::time::Instant::now());
    json!({
        "state": state.as_str(),
        "consecutive_failures": route.breaker.consecutive_failures(),
        "open_for_seconds": left.map(|d| d.as_secs_f64().ceil()),
    })
}
