//! The whole plan for one request, as `thinkgate route --explain` prints it: mode and budget
//! with where they came from, the domain with every score, each candidate model with its
//! score and why it was left out, the choice and the fallbacks. It renders what
//! [`crate::plan::plan`] returns, the same call the server makes; nothing is sent anywhere.

use http::HeaderMap;
use serde_json::{json, Value};
use thinkgate_config::Policy;

use crate::error::ApiError;
use crate::ingress;
use crate::plan::{self, Caller};
use crate::state::Runtime;

/// The plan for one request body, as JSON.
pub async fn explain(runtime: &Runtime, body: &[u8]) -> Result<Value, ApiError> {
    let chat = ingress::parse_chat(body)?;
    let headers = HeaderMap::new();
    let caller = Caller {
        headers: &headers,
        key: None,
    };
    let plan = plan::plan(&runtime.tables(), &chat, &caller).await?;
    let mode = plan.budget.as_ref().map_or(Value::Null, |b| {
        json!({
            "mode": b.mode.as_str(),
            "from": b.source.as_str(),
            "reasoning_budget": b.reported(),
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
                        "score": (c.score * 10.0).round() / 10.0,
                        "fits": c.excluded.is_none(),
                        "excluded": c.excluded,
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
            });
            (Value::Null, vec![candidate])
        }
    };
    let order: Vec<&str> = plan.order.iter().map(|r| r.model.id.as_str()).collect();
    Ok(json!({
        "model_asked": chat.model,
        "prompt_tokens": plan.prompt_tokens,
        "mode": mode,
        "domain": domain,
        "candidates": candidates,
        "chosen": order.first(),
        "fallbacks": order.iter().skip(1).collect::<Vec<_>>(),
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
            "mode       {} (from {}); reasoning budget {}, answer reserve {}, budget hint {}\n",
            s(&m["mode"]),
            s(&m["from"]),
            s(&m["reasoning_budget"]),
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
        out.push_str(&format!(
            "  {}. {:<22} score {:>6}  {}\n",
            i + 1,
            s(&c["model"]),
            s(&c["score"]),
            why
        ));
    }
    out.push_str(&format!("chosen     {}\n", s(&plan["chosen"])));
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
