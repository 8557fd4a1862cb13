//! Reasoning knobs as each simulated vendor honours them, so that budget enforcement can be
//! tested against every behaviour found in the wild:
//!
//! | upstream | knob | honoured as |
//! |---|---|---|
//! | OpenAI | `reasoning_effort` | effort (unknown values are a 400; `max_tokens` is refused) |
//! | OpenAI Responses | `reasoning.effort` | effort (unknown values and parameters are a 400) |
//! | vLLM | `thinking_token_budget` | hard cap; `chat_template_kwargs.enable_thinking=false` turns it off |
//! | llama.cpp | `thinking_budget_tokens`; `chat_template_kwargs.enable_thinking=false` | hard cap (the sampler closes the thought) / off |
//! | SGLang | `chat_template_kwargs.enable_thinking=false` | off; no per-request budget |
//! | DeepSeek | `thinking.type=disabled`, `reasoning_effort` | off / effort; no token budget |
//! | Ollama | `think` (`false` or a level), `reasoning_effort` | off / effort |
//! | OpenRouter | `reasoning` {`enabled`, `max_tokens`, `effort`, `exclude`} | off / soft target / effort / hidden |
//! | Muse Spark | `reasoning_effort` | effort |
//! | Anthropic | `thinking` {`enabled` + `budget_tokens`, `disabled`, `adaptive`} | soft target (checked: ≥ 1024, < `max_tokens`) / off |
//! | Gemini | `thinkingBudget` (0 off, -1 dynamic) or `thinkingLevel` | soft target / effort |
//! | generic | — | ignored |
//!
//! An effort scales the profile's natural reasoning length (high = the profile's length); a
//! soft target is overshot by [`SOFT_OVERSHOOT`] when the model would think longer.

use serde_json::Value;
use thinkgate_config::Dialect;

use thinkgate_wire::ApiError;

/// How much a request lets the simulated model think.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Thinking {
    /// No knob set (or the upstream ignores it): the profile's length.
    Natural,
    Off,
    /// Never more than this many reasoning tokens.
    Hard(u64),
    /// Aim for this many; a model that would think longer goes past it a little.
    Soft(u64),
    /// A fraction of the natural length.
    Effort(f64),
}

/// How far past a soft target a model that would think longer goes.
pub const SOFT_OVERSHOOT: f64 = 0.1;

impl Thinking {
    /// The reasoning tokens produced when the model would naturally produce `natural`.
    pub fn tokens(self, natural: u32) -> u32 {
        let n = natural as u64;
        let out = match self {
            Thinking::Natural => n,
            Thinking::Off => 0,
            Thinking::Hard(budget) => n.min(budget),
            Thinking::Soft(budget) if n > budget => {
                n.min(budget + (budget as f64 * SOFT_OVERSHOOT).ceil() as u64)
            }
            Thinking::Soft(_) => n,
            Thinking::Effort(f) => (n as f64 * f).round() as u64,
        };
        out.min(u32::MAX as u64) as u32
    }
}

/// The fraction of the natural length an effort level thinks for.
fn effort(level: &str) -> Option<f64> {
    Some(match level {
        "none" => 0.0,
        "minimal" => 0.125,
        "low" => 0.25,
        "medium" => 0.5,
        "high" => 1.0,
        "xhigh" => 1.5,
        "max" => 2.0,
        _ => return None,
    })
}

/// An effort as OpenAI takes it: a known level, or a 400 naming `param`.
pub(super) fn strict_effort(level: &Value, param: &str) -> Result<Thinking, ApiError> {
    let name = level.as_str().unwrap_or("");
    match effort(name) {
        Some(0.0) => Ok(Thinking::Off),
        Some(f) => Ok(Thinking::Effort(f)),
        None => Err(ApiError::invalid_request(format!(
            "Unsupported value: '{param}' does not support '{name}' with this model. Supported values are: 'none', 'minimal', 'low', 'medium', 'high', 'xhigh' and 'max'."
        ))
        .with_param(param)
        .with_code("unsupported_value")),
    }
}

/// An effort knob: a known level scales, an unknown one is ignored (as lenient servers do).
fn lenient_effort(level: Option<&Value>) -> Thinking {
    match level.and_then(Value::as_str).and_then(effort) {
        Some(0.0) => Thinking::Off,
        Some(f) => Thinking::Effort(f),
        None => Thinking::Natural,
    }
}

fn template_thinking_off(request: &Value) -> bool {
    request.pointer("/chat_template_kwargs/enable_thinking") == Some(&Value::Bool(false))
}

/// The knobs of an OpenAI-format request as `dialect` honours them, and whether the reasoning
/// is to be hidden from the response (OpenRouter's `exclude`).
pub(super) fn openai_format(
    dialect: Dialect,
    request: &Value,
    reasons: bool,
) -> Result<(Thinking, bool), ApiError> {
    let thinking = match dialect {
        Dialect::Generic => Thinking::Natural,
        Dialect::OpenAi => {
            if reasons && request.get("max_tokens").is_some() {
                return Err(ApiError::invalid_request(
                    "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
                )
                .with_param("max_tokens")
                .with_code("unsupported_parameter"));
            }
            match request.get("reasoning_effort") {
                None => Thinking::Natural,
                Some(level) => strict_effort(level, "reasoning_effort")?,
            }
        }
        Dialect::Vllm if template_thinking_off(request) => Thinking::Off,
        Dialect::Vllm => match request.get("thinking_token_budget").and_then(Value::as_u64) {
            Some(budget) => Thinking::Hard(budget),
            None => Thinking::Natural,
        },
        Dialect::Sglang | Dialect::Llamacpp if template_thinking_off(request) => Thinking::Off,
        Dialect::Llamacpp => match request
            .get("thinking_budget_tokens")
            .and_then(Value::as_u64)
        {
            Some(budget) => Thinking::Hard(budget),
            None => Thinking::Natural,
        },
        Dialect::Sglang => Thinking::Natural,
        Dialect::Deepseek => {
            if request.pointer("/thinking/type").and_then(Value::as_str) == Some("disabled") {
                Thinking::Off
            } else {
                deepseek_history(request)?;
                lenient_effort(request.get("reasoning_effort"))
            }
        }
        Dialect::Ollama => match request.get("think") {
            Some(Value::Bool(false)) => Thinking::Off,
            Some(Value::Bool(true)) => Thinking::Natural,
            Some(level @ Value::String(_)) => lenient_effort(Some(level)),
            _ => lenient_effort(request.get("reasoning_effort")),
        },
        Dialect::OpenRouter => {
            let r = request.get("reasoning");
            let field = |k: &str| r.and_then(|r| r.get(k));
            if field("enabled") == Some(&Value::Bool(false)) {
                Thinking::Off
            } else if let Some(budget) = field("max_tokens").and_then(Value::as_u64) {
                Thinking::Soft(budget)
            } else if field("effort").is_some() {
                lenient_effort(field("effort"))
            } else {
                lenient_effort(request.get("reasoning_effort"))
            }
        }
        Dialect::MuseSpark => lenient_effort(request.get("reasoning_effort")),
    };
    let hide = dialect == Dialect::OpenRouter
        && request.pointer("/reasoning/exclude") == Some(&Value::Bool(true));
    Ok((thinking, hide))
}

/// Whether the request continues a final assistant turn whose thought is already closed
/// (budget forcing), the way `dialect`'s server continues one: vLLM and SGLang only with
/// `continue_final_message` (and refuse it together with `add_generation_prompt`), DeepSeek
/// with `prefix: true`, llama.cpp and Ollama by prefilling any final assistant turn.
pub(super) fn continues_closed_thought(
    dialect: Dialect,
    request: &Value,
) -> Result<bool, ApiError> {
    let last = request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last());
    let Some(last) = last.filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
    else {
        return Ok(false);
    };
    let flag = |k: &str| request.get(k).and_then(Value::as_bool);
    let content = last.get("content").and_then(Value::as_str).unwrap_or("");
    Ok(match dialect {
        Dialect::Vllm | Dialect::Sglang | Dialect::Generic => {
            if flag("continue_final_message") != Some(true) {
                return Ok(false);
            }
            if flag("add_generation_prompt") != Some(false) {
                return Err(ApiError::invalid_request(
                    "Cannot set both `continue_final_message` and `add_generation_prompt` to True.",
                ));
            }
            content.contains("</think>")
        }
        Dialect::Deepseek => last.get("prefix") == Some(&Value::Bool(true)),
        Dialect::Llamacpp | Dialect::Ollama => content.contains("</think>"),
        _ => false,
    })
}

/// DeepSeek's thinking mode requires the reasoning of every tool-calling assistant turn back.
fn deepseek_history(request: &Value) -> Result<(), ApiError> {
    let messages = request.get("messages").and_then(Value::as_array);
    for m in messages.into_iter().flatten() {
        let calls_tools = m
            .get("tool_calls")
            .and_then(Value::as_array)
            .is_some_and(|c| !c.is_empty());
        if m.get("role").and_then(Value::as_str) == Some("assistant")
            && calls_tools
            && m.get("reasoning_content").is_none()
        {
            return Err(ApiError::invalid_request(
                "The reasoning_content in the thinking mode must be passed back to the API.",
            ));
        }
    }
    Ok(())
}

/// Anthropic's `thinking`, checked as the Messages API checks it.
pub(super) fn anthropic(request: &Value, max_tokens: u64) -> Result<Thinking, ApiError> {
    let Some(thinking) = request.get("thinking") else {
        // The real API thinks only when asked; the simulator keeps its profile so that a
        // translated request without budgets still shows reasoning.
        return Ok(Thinking::Natural);
    };
    match thinking.get("type").and_then(Value::as_str) {
        Some("disabled") => Ok(Thinking::Off),
        Some("adaptive") => Ok(lenient_effort(request.pointer("/output_config/effort"))),
        Some("enabled") => {
            let budget = thinking
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    ApiError::invalid_request("thinking.enabled.budget_tokens: Field required")
                })?;
            if budget < 1024 {
                return Err(ApiError::invalid_request(
                    "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
                ));
            }
            if budget >= max_tokens {
                return Err(ApiError::invalid_request(format!(
                    "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size (max_tokens {max_tokens}, budget_tokens {budget})"
                )));
            }
            Ok(Thinking::Soft(budget))
        }
        other => Err(ApiError::invalid_request(format!(
            "thinking.type: Input tag {other:?} found using 'type' does not match any of the expected tags: 'enabled', 'disabled', 'adaptive'"
        ))),
    }
}

/// Gemini's `thinkingConfig` (the request was already checked not to set both knobs).
pub(super) fn gemini(thinking_config: Option<&Value>) -> Thinking {
    let Some(config) = thinking_config else {
        return Thinking::Natural;
    };
    if let Some(budget) = config.get("thinkingBudget").and_then(Value::as_i64) {
        return match budget {
            0 => Thinking::Off,
            b if b < 0 => Thinking::Natural,
            b => Thinking::Soft(b as u64),
        };
    }
    match config.get("thinkingLevel").and_then(Value::as_str) {
        Some(level) => lenient_effort(Some(&Value::String(level.to_ascii_lowercase()))),
        None => Thinking::Natural,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_kind_of_knob_bounds_the_natural_length_its_own_way() {
        assert_eq!(Thinking::Natural.tokens(100), 100);
        assert_eq!(Thinking::Off.tokens(100), 0);
        assert_eq!(Thinking::Hard(40).tokens(100), 40);
        assert_eq!(Thinking::Hard(400).tokens(100), 100);
        assert_eq!(Thinking::Soft(40).tokens(100), 44, "overshoots by 10 %");
        assert_eq!(Thinking::Soft(400).tokens(100), 100);
        assert_eq!(Thinking::Effort(0.25).tokens(100), 25);
    }

    #[test]
    fn vendors_read_their_own_knobs() {
        let vllm = json!({"thinking_token_budget": 10});
        assert_eq!(
            openai_format(Dialect::Vllm, &vllm, true).unwrap().0,
            Thinking::Hard(10)
        );
        // DeepSeek has no budget knob: the same field does nothing.
        assert_eq!(
            openai_format(Dialect::Deepseek, &vllm, true).unwrap().0,
            Thinking::Natural
        );
        let llamacpp = json!({"thinking_budget_tokens": 10});
        assert_eq!(
            openai_format(Dialect::Llamacpp, &llamacpp, true).unwrap().0,
            Thinking::Hard(10)
        );
        let openai = json!({"reasoning_effort": "ultra"});
        let e = openai_format(Dialect::OpenAi, &openai, true).unwrap_err();
        assert!(e.message.contains("Supported values"));
        let router = json!({"reasoning": {"max_tokens": 50, "exclude": true}});
        assert_eq!(
            openai_format(Dialect::OpenRouter, &router, true).unwrap(),
            (Thinking::Soft(50), true)
        );
        let off = json!({"chat_template_kwargs": {"enable_thinking": false}});
        assert_eq!(
            openai_format(Dialect::Sglang, &off, true).unwrap().0,
            Thinking::Off
        );
        assert_eq!(gemini(Some(&json!({"thinkingBudget": 0}))), Thinking::Off);
        assert_eq!(
            gemini(Some(&json!({"thinkingLevel": "LOW"}))),
            Thinking::Effort(0.25)
        );
        let small = json!({"thinking": {"type": "enabled", "budget_tokens": 512}});
        assert!(anthropic(&small, 4096).is_err());
        let over = json!({"thinking": {"type": "enabled", "budget_tokens": 2048}});
        assert!(anthropic(&over, 2048).is_err());
        assert_eq!(anthropic(&over, 4096).unwrap(), Thinking::Soft(2048));
    }
}
