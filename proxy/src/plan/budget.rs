//! The request's reasoning mode and budget: which mode it runs in (resolved from the
//! request's own knobs, the domain default and the global default), how many reasoning
//! tokens it may spend and how many are kept for the answer. Pure: no IO.
//!
//! Precedence, highest first: the model suffix (`auto:thinking`), the header
//! `x-thinkgate-mode`, OpenRouter's `reasoning` object, `reasoning_effort`, the domain's
//! default mode, the global default. A client may ask for a smaller budget (header
//! `x-thinkgate-reasoning-budget`, `reasoning.max_tokens`, or an effort level's budget),
//! never a larger one: asking for more is clamped and the response says so.

use http::HeaderMap;
use serde_json::{Map, Value};
use thinkgate_config::{Mode, Modes};

pub use crate::canonical::{Budget, ModeSource};
use crate::error::ApiError;

/// The request's fields and headers that bear on its mode.
pub struct Asks<'a> {
    pub suffix: Option<Mode>,
    pub headers: &'a HeaderMap,
    pub body: &'a Map<String, Value>,
    pub domain: Option<&'a str>,
    /// The output cap the client set, if any.
    pub client_cap: Option<u64>,
    /// Budgets adaptive modes learned from traffic, per mode and domain.
    pub learned: &'a Learned,
}

/// The budgets adaptive modes learned from traffic: per mode and domain, the reasoning its
/// answers needed (a domain without enough data has none and keeps the configured budget).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Learned(pub std::collections::BTreeMap<usize, std::collections::BTreeMap<String, u64>>);

impl Learned {
    pub fn get(&self, mode: Mode, domain: &str) -> Option<u64> {
        self.0.get(&(mode as usize))?.get(domain).copied()
    }

    pub fn set(&mut self, mode: Mode, domain: &str, budget: u64) {
        self.0
            .entry(mode as usize)
            .or_default()
            .insert(domain.to_string(), budget);
    }
}

/// The mode and budget for a request, or `None` when no mode applies (no knob in the request
/// and no default in the config): such requests are relayed without a budget policy.
pub fn resolve(modes: &Modes, asks: &Asks<'_>) -> Result<Option<Budget>, ApiError> {
    let mut ask: Option<u64> = header_budget(asks.headers)?;
    let reasoning = asks.body.get("reasoning").and_then(Value::as_object);
    let exclude = reasoning.and_then(|r| r.get("exclude")) == Some(&Value::Bool(true));

    // Each source names a mode (or not) and may ask for a budget within it.
    let mut chosen: Option<Choice> = asks
        .suffix
        .map(|m| (m, ModeSource::Suffix, None))
        .or(header_mode(asks.headers)?.map(|m| (m, ModeSource::Header, None)));
    let (candidates, notice) = body_asks(modes, asks.body);
    match &mut chosen {
        // A mode named outright still takes a budget the body asks for within that mode.
        Some((mode, _, _)) => {
            if ask.is_none() {
                ask = candidates.iter().find(|c| c.0 == *mode).and_then(|c| c.2);
            }
        }
        None => chosen = candidates.into_iter().next(),
    }
    let chosen = chosen
        .or_else(|| {
            asks.domain
                .and_then(|d| modes.domain_defaults.get(d))
                .map(|m| (*m, ModeSource::DomainDefault, None))
        })
        .or_else(|| modes.default.map(|m| (m, ModeSource::Default, None)));
    let Some((mode, source, body_ask)) = chosen else {
        return Ok(None);
    };
    let policy = modes.policy(mode);
    let mut allowed = policy.reasoning_budget;
    if let Some(cap) = asks.domain.and_then(|d| policy.domain_budgets.get(d)) {
        allowed = allowed.min(*cap);
    }
    // An adaptive mode's learned budget replaces the configured one (it stays within the
    // mode's adaptive bounds by construction).
    let learned = policy
        .adaptive
        .and_then(|_| asks.learned.get(mode, asks.domain.unwrap_or("none")));
    if let Some(l) = learned {
        allowed = l;
    }
    let mut budget = Budget {
        mode,
        source,
        off: mode == Mode::Instant,
        reasoning: allowed,
        reserve: policy.answer_reserve,
        hint: policy.budget_hint,
        clamped_from: None,
        exclude,
        notice,
        learned: learned.is_some(),
    };
    match ask.or(body_ask) {
        Some(0) => budget.off = true,
        Some(n) if n > allowed => budget.clamped_from = Some(n),
        Some(n) => budget.reasoning = n,
        None => {}
    }
    if let Some(cap) = asks.client_cap {
        within_client_cap(&mut budget, cap);
    }
    Ok(Some(budget))
}

/// A mode, where it came from, and the budget asked for within it.
type Choice = (Mode, ModeSource, Option<u64>);

/// The modes the body's own knobs ask for, in precedence order (OpenRouter's `reasoning`
/// object, then `reasoning_effort`), and a notice for an effort level the table lacks.
fn body_asks(modes: &Modes, body: &Map<String, Value>) -> (Vec<Choice>, Option<String>) {
    let mut notice = None;
    let mut candidates = Vec::new();
    let mut effort =
        |field: &str, level: &str, source: ModeSource, out: &mut Vec<Choice>| match modes
            .efforts
            .get(level)
        {
            Some(e) => out.push((e.mode, source, e.reasoning_budget)),
            None => notice = Some(unknown_effort(field, level, modes)),
        };
    if let Some(r) = body.get("reasoning").and_then(Value::as_object) {
        if r.get("enabled") == Some(&Value::Bool(false)) {
            candidates.push((Mode::Instant, ModeSource::ReasoningObject, Some(0)));
        } else if let Some(n) = r.get("max_tokens").and_then(Value::as_u64) {
            let mode = if n == 0 {
                Mode::Instant
            } else {
                Mode::Thinking
            };
            candidates.push((mode, ModeSource::ReasoningObject, Some(n)));
        } else if let Some(level) = r.get("effort").and_then(Value::as_str) {
            effort(
                "reasoning.effort",
                level,
                ModeSource::ReasoningObject,
                &mut candidates,
            );
        }
    }
    if let Some(level) = body.get("reasoning_effort").and_then(Value::as_str) {
        effort(
            "reasoning_effort",
            level,
            ModeSource::ReasoningEffort,
            &mut candidates,
        );
    }
    (candidates, notice)
}

/// The client's own output cap wins; the answer keeps at least half of it.
fn within_client_cap(budget: &mut Budget, cap: u64) {
    if cap < budget.output_cap() {
        budget.reserve = budget.reserve.min(cap - cap / 2).max(1);
        budget.reasoning = budget.reasoning.min(cap.saturating_sub(budget.reserve));
        if budget.reasoning == 0 {
            budget.off = true;
        }
    }
}

fn unknown_effort(field: &str, level: &str, modes: &Modes) -> String {
    let known: Vec<&str> = modes.efforts.keys().map(String::as_str).collect();
    format!(
        "{field} `{level}` is not in the proxy's effort table ({}); it was ignored",
        known.join(", ")
    )
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.trim())).map_err(|_| {
            ApiError::invalid_request(format!("header {name} is not readable text"))
                .with_code("invalid_header")
        }),
    }
}

fn header_mode(headers: &HeaderMap) -> Result<Option<Mode>, ApiError> {
    let Some(text) = header_str(headers, "x-thinkgate-mode")? else {
        return Ok(None);
    };
    Mode::parse(text).map(Some).ok_or_else(|| {
        ApiError::invalid_request(format!(
            "header x-thinkgate-mode `{text}` is not a reasoning mode; use instant, thinking or contemplating"
        ))
        .with_code("invalid_header")
    })
}

fn header_budget(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(text) = header_str(headers, "x-thinkgate-reasoning-budget")? else {
        return Ok(None);
    };
    text.parse().map(Some).map_err(|_| {
        ApiError::invalid_request(format!(
            "header x-thinkgate-reasoning-budget `{text}` is not a whole number of tokens"
        ))
        .with_code("invalid_header")
    })
}

/// The budget hint for the system prompt.
pub fn hint_text(modes: &Modes, budget: &Budget) -> String {
    modes
        .hint
        .replace("{budget}", &budget.reasoning.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    fn modes() -> Modes {
        let mut m = Modes {
            default: Some(Mode::Thinking),
            ..Modes::default()
        };
        m.domain_defaults.insert("health".into(), Mode::Instant);
        m.policies[Mode::Thinking as usize]
            .domain_budgets
            .insert("math".into(), 2000);
        m
    }

    fn resolve_with(
        suffix: Option<Mode>,
        headers: &[(&'static str, &'static str)],
        body: Value,
        domain: Option<&str>,
    ) -> Budget {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_static(v));
        }
        let body = body.as_object().cloned().unwrap_or_default();
        let client_cap = crate::upstream::convert::max_tokens(&body);
        let asks = Asks {
            suffix,
            headers: &h,
            body: &body,
            domain,
            client_cap,
            learned: &Learned::default(),
        };
        resolve(&modes(), &asks).unwrap().unwrap()
    }

    #[test]
    fn precedence_runs_suffix_header_reasoning_effort_domain_default() {
        let body = json!({"reasoning": {"enabled": false}, "reasoning_effort": "high"});
        let b = resolve_with(
            Some(Mode::Contemplating),
            &[("x-thinkgate-mode", "thinking")],
            body.clone(),
            Some("health"),
        );
        assert_eq!(
            (b.mode, b.source),
            (Mode::Contemplating, ModeSource::Suffix)
        );
        let b = resolve_with(
            None,
            &[("x-thinkgate-mode", "thinking")],
            body.clone(),
            Some("health"),
        );
        assert_eq!((b.mode, b.source), (Mode::Thinking, ModeSource::Header));
        let b = resolve_with(None, &[], body, Some("health"));
        assert_eq!(
            (b.mode, b.source, b.off),
            (Mode::Instant, ModeSource::ReasoningObject, true)
        );
        let b = resolve_with(
            None,
            &[],
            json!({"reasoning_effort": "xhigh"}),
            Some("health"),
        );
        assert_eq!((b.mode, b.reasoning), (Mode::Contemplating, 16384));
        let b = resolve_with(None, &[], json!({}), Some("health"));
        assert_eq!(
            (b.mode, b.source),
            (Mode::Instant, ModeSource::DomainDefault)
        );
        let b = resolve_with(None, &[], json!({}), None);
        assert_eq!((b.mode, b.source), (Mode::Thinking, ModeSource::Default));
    }

    #[test]
    fn a_client_may_ask_for_less_never_more() {
        let b = resolve_with(None, &[], json!({"reasoning": {"max_tokens": 1000}}), None);
        assert_eq!((b.reasoning, b.clamped_from), (1000, None));
        let b = resolve_with(None, &[], json!({"reasoning": {"max_tokens": 90000}}), None);
        assert_eq!((b.reasoning, b.clamped_from), (4096, Some(90000)));
        let b = resolve_with(
            None,
            &[("x-thinkgate-reasoning-budget", "512")],
            json!({}),
            None,
        );
        assert_eq!(b.reasoning, 512);
        // A suffix names the mode; the body's effort still asks for a budget within it.
        let b = resolve_with(
            Some(Mode::Thinking),
            &[],
            json!({"reasoning_effort": "low"}),
            None,
        );
        assert_eq!(b.reasoning, 1024);
        // The tightest of mode and domain wins.
        let b = resolve_with(None, &[], json!({}), Some("math"));
        assert_eq!(b.reasoning, 2000);
    }

    #[test]
    fn the_client_cap_keeps_room_for_the_answer() {
        let b = resolve_with(None, &[], json!({"max_tokens": 1000}), None);
        assert_eq!((b.reasoning, b.reserve, b.output_cap()), (500, 500, 1000));
        let b = resolve_with(None, &[], json!({"max_completion_tokens": 1}), None);
        assert!(b.off);
    }

    #[test]
    fn unknown_effort_levels_are_noted_and_ignored() {
        let b = resolve_with(None, &[], json!({"reasoning_effort": "ultra"}), None);
        assert_eq!(b.source, ModeSource::Default);
        assert!(b.notice.unwrap().contains("`ultra`"));
        let b = resolve_with(None, &[], json!({"reasoning_effort": "none"}), None);
        assert!(b.off && b.mode == Mode::Instant);
    }

    #[test]
    fn no_mode_anywhere_means_no_policy() {
        let h = HeaderMap::new();
        let body = Map::new();
        let asks = Asks {
            suffix: None,
            headers: &h,
            body: &body,
            domain: None,
            client_cap: None,
            learned: &Learned::default(),
        };
        assert_eq!(resolve(&Modes::default(), &asks).unwrap(), None);
        let mut bad = HeaderMap::new();
        bad.insert("x-thinkgate-mode", HeaderValue::from_static("deep"));
        let asks = Asks {
            headers: &bad,
            ..asks
        };
        assert!(resolve(&Modes::default(), &asks)
            .unwrap_err()
            .message
            .contains("`deep`"));
    }
}
