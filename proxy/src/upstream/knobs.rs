//! The budget in each upstream's own knob, within that vendor's rules, and what the proxy
//! must watch for because the knob alone does not make the budget hold.
//!
//! | upstream | knob | off (instant) |
//! |---|---|---|
//! | OpenAI | `reasoning_effort` from the budget table; `max_completion_tokens` = budget + reserve | `none` where accepted, else the lowest level |
//! | OpenAI Responses | `reasoning.effort` from the budget table (the client's `summary` kept); `max_output_tokens` = budget + reserve | `none` where accepted, else the lowest level |
//! | Anthropic | `thinking.enabled.budget_tokens` (≥ 1024, < `max_tokens`); `adaptive` + `output_config.effort` with knob `effort` | `disabled` |
//! | Gemini | `thinkingBudget` clamped to the model's range; `thinkingLevel` with knob `effort` — never both | budget 0 |
//! | vLLM | `thinking_token_budget` | `chat_template_kwargs.enable_thinking=false` |
//! | llama.cpp | `thinking_budget_tokens` (per request, under the server's `--reasoning-budget`) | `chat_template_kwargs.enable_thinking=false` |
//! | SGLang | none | `chat_template_kwargs.enable_thinking=false` |
//! | DeepSeek | none | `thinking.type=disabled` |
//! | Ollama, Muse Spark | `reasoning_effort` | `think: false` / `reasoning_effort: none` |
//! | OpenRouter | `reasoning.max_tokens` | `reasoning.enabled=false` |
//!
//! Works on the upstream body after translation; knows nothing of the response.

use serde_json::{json, Map, Value};
use thinkgate_config::{Dialect, Knob, Model, Modes, Overrun, WireFormat};

use crate::canonical::Budget;

/// Anthropic refuses thinking budgets below this.
const ANTHROPIC_MIN_BUDGET: u64 = 1024;

/// The knob the upstream was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Native {
    /// A token budget (soft or hard, as the vendor honours it).
    Budget(u64),
    /// An effort level.
    Effort(String),
    /// Thinking turned off.
    Off,
    /// The upstream has no knob: only the proxy's watch applies.
    None,
}

/// How the budget is made to hold for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub native: Native,
    /// The most reasoning tokens the client gets (the guard's line).
    pub limit: u64,
    /// What to do at the line; `None` when the reasoning is hidden (only its count comes
    /// back), so only the native knob and the output cap apply.
    pub overrun: Option<Overrun>,
}

/// Which knob the model is controlled by when its config says `auto`.
fn knob(format: WireFormat, dialect: Dialect, model: &Model) -> Knob {
    match model.thinking.knob {
        Knob::Auto => match (format, dialect) {
            (WireFormat::Anthropic | WireFormat::Gemini, _) => Knob::Budget,
            // The Responses API has no token budget.
            (WireFormat::Responses, _) => Knob::Effort,
            (_, Dialect::Vllm | Dialect::Llamacpp | Dialect::OpenRouter) => Knob::Budget,
            (_, Dialect::OpenAi | Dialect::MuseSpark | Dialect::Ollama) => Knob::Effort,
            _ => Knob::None,
        },
        k => k,
    }
}

/// What the proxy does at the line, when the config does not say.
fn default_overrun(format: WireFormat, dialect: Dialect) -> Option<Overrun> {
    match (format, dialect) {
        (WireFormat::Anthropic | WireFormat::Gemini, _) => Some(Overrun::Cut),
        (_, Dialect::OpenAi) => None,
        (WireFormat::Responses, _) => Some(Overrun::Cut),
        (_, Dialect::Vllm | Dialect::Sglang | Dialect::Llamacpp | Dialect::Ollama) => {
            Some(Overrun::Force)
        }
        (_, Dialect::Deepseek) => Some(Overrun::Force),
        (_, Dialect::OpenRouter | Dialect::MuseSpark) => Some(Overrun::Cut),
        (_, Dialect::Generic) => Some(Overrun::Length),
    }
}

/// The effort level for a budget: the last level of the table whose budget fits, among
/// those the model accepts.
pub fn effort_for(modes: &Modes, model: &Model, budget: u64) -> String {
    let accepted = |level: &str| {
        model
            .thinking
            .efforts
            .as_ref()
            .is_none_or(|l| l.iter().any(|a| a == level))
    };
    let usable: Vec<&(String, u64)> = modes
        .upstream_efforts
        .iter()
        .filter(|(level, _)| accepted(level))
        .collect();
    usable
        .iter()
        .rev()
        .find(|(_, from)| *from <= budget)
        .or(usable.first())
        .map(|(level, _)| level.clone())
        .or_else(|| {
            model
                .thinking
                .efforts
                .as_ref()
                .and_then(|l| l.first().cloned())
        })
        .unwrap_or_else(|| "low".to_string())
}

fn clamp(model: &Model, budget: u64, floor: u64) -> u64 {
    let t = &model.thinking;
    let b = budget.max(t.min_budget).max(floor);
    t.max_budget.map_or(b, |max| b.min(max))
}

/// Whether the model can be told not to think, and the efforts accept `none`.
fn can_turn_off(model: &Model, knob: Knob) -> bool {
    let t = &model.thinking;
    t.can_disable
        && (knob != Knob::Effort
            || t.efforts
                .as_ref()
                .is_none_or(|l| l.iter().any(|e| e == "none")))
}

/// What each vendor's knob is set from: the model, the knob it is controlled by, whether
/// thinking is off, the reasoning limit and the answer's reserve.
struct Setting<'a> {
    model: &'a Model,
    knob: Knob,
    off: bool,
    limit: u64,
    reserve: u64,
    modes: &'a Modes,
}

impl Setting<'_> {
    /// The output cap: the reserve alone when thinking is off, else limit + reserve.
    fn cap(&self) -> u64 {
        if self.off {
            self.reserve
        } else {
            self.limit + self.reserve
        }
    }

    /// The effort level for the limit.
    fn effort(&self) -> String {
        effort_for(self.modes, self.model, self.limit)
    }
}

/// Sets the budget in `body` (already in the upstream's format) and says how it is enforced.
/// Models without the reasoning capability get nothing.
pub fn apply(
    body: &mut Map<String, Value>,
    format: WireFormat,
    dialect: Dialect,
    model: &Model,
    budget: &Budget,
    modes: &Modes,
) -> Option<Control> {
    if !model.reasoning {
        return None;
    }
    let knob = knob(format, dialect, model);
    let has_switch = !(format == WireFormat::OpenAi && dialect == Dialect::Generic);
    let off = budget.off && has_switch && can_turn_off(model, knob);
    let limit = if budget.off && !off {
        // Cannot be turned off: the smallest budget the model takes, within the backstop.
        match model.thinking.min_budget {
            0 => budget.reasoning,
            min => min.min(budget.reasoning),
        }
        .max(1)
    } else if off {
        0
    } else {
        budget.reasoning
    };
    let overrun = model.thinking.overrun.or(default_overrun(format, dialect));
    let setting = Setting {
        model,
        knob,
        off,
        limit,
        reserve: budget.reserve,
        modes,
    };
    let native = match format {
        WireFormat::Anthropic => anthropic(body, &setting),
        WireFormat::Gemini => gemini(body, &setting),
        WireFormat::OpenAi => openai(body, dialect, &setting),
        WireFormat::Responses => responses(body, &setting),
    };
    // Hidden reasoning cannot be stopped at a line the proxy never sees (OpenAI shows only
    // a summary of it, if that).
    let hidden = format.is_openai() && dialect == Dialect::OpenAi;
    let overrun = if hidden { None } else { overrun };
    Some(Control {
        native,
        limit,
        overrun,
    })
}

fn anthropic(body: &mut Map<String, Value>, s: &Setting<'_>) -> Native {
    body.remove("output_config");
    // Anthropic refuses thinking when the tool-use turn being continued has no thinking
    // block (as after a no-thinking answer the proxy asked for): that turn goes on without.
    if s.off || tool_turn_without_thinking(body) {
        body.insert("thinking".into(), json!({"type": "disabled"}));
        body.insert("max_tokens".into(), s.reserve.into());
        return Native::Off;
    }
    match s.knob {
        Knob::Effort => {
            let level = s.effort();
            body.insert("thinking".into(), json!({"type": "adaptive"}));
            body.insert("output_config".into(), json!({ "effort": level }));
            body.insert("max_tokens".into(), s.cap().into());
            Native::Effort(level)
        }
        Knob::None => {
            body.remove("thinking");
            body.insert("max_tokens".into(), s.cap().into());
            Native::None
        }
        _ => {
            let native = clamp(s.model, s.limit, ANTHROPIC_MIN_BUDGET);
            body.insert(
                "thinking".into(),
                json!({"type": "enabled", "budget_tokens": native}),
            );
            body.insert("max_tokens".into(), (native + s.reserve).into());
            Native::Budget(native)
        }
    }
}

/// Whether the last assistant turn calls tools without starting with a thinking block.
fn tool_turn_without_thinking(body: &Map<String, Value>) -> bool {
    let messages = body.get("messages").and_then(Value::as_array);
    let last_assistant = messages
        .into_iter()
        .flatten()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("assistant"));
    let Some(blocks) = last_assistant
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
    else {
        return false;
    };
    let calls_tools = blocks.iter().any(|b| b["type"] == "tool_use");
    let thinks_first = blocks
        .first()
        .is_some_and(|b| b["type"] == "thinking" || b["type"] == "redacted_thinking");
    calls_tools && !thinks_first
}

fn gemini(body: &mut Map<String, Value>, s: &Setting<'_>) -> Native {
    let config = body
        .entry("generationConfig")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(config) = config else {
        return Native::None;
    };
    let (thinking, native) = match s.knob {
        _ if s.off => (json!({"thinkingBudget": 0}), Native::Off),
        Knob::Effort => {
            let level = s.effort();
            (
                json!({"includeThoughts": true, "thinkingLevel": level}),
                Native::Effort(level),
            )
        }
        Knob::None => (json!({"includeThoughts": true}), Native::None),
        _ => {
            let native = clamp(s.model, s.limit, 0);
            (
                json!({"includeThoughts": true, "thinkingBudget": native}),
                Native::Budget(native),
            )
        }
    };
    let room = match &native {
        Native::Budget(n) => n + s.reserve,
        _ => s.cap(),
    };
    config.insert("thinkingConfig".into(), thinking);
    config.insert("maxOutputTokens".into(), room.into());
    native
}

/// Removes the reasoning knobs a client set in an OpenAI-format body: the policy's replace
/// them.
pub fn strip_client_knobs(body: &mut Map<String, Value>) {
    for field in [
        "reasoning_effort",
        "reasoning",
        "thinking_token_budget",
        "thinking_budget_tokens",
        "think",
        "thinking",
    ] {
        body.remove(field);
    }
    if let Some(Value::Object(kwargs)) = body.get_mut("chat_template_kwargs") {
        kwargs.remove("enable_thinking");
    }
}

/// The Responses API: `reasoning.effort` (a client's `summary` kept) and
/// `max_output_tokens`, which counts the reasoning as chat's `max_completion_tokens` does.
fn responses(body: &mut Map<String, Value>, s: &Setting<'_>) -> Native {
    body.insert("max_output_tokens".into(), s.cap().into());
    let (level, native) = match (s.off, s.knob) {
        (true, _) => ("none".to_string(), Native::Off),
        (false, Knob::None) => {
            if let Some(Value::Object(r)) = body.get_mut("reasoning") {
                r.remove("effort");
            }
            return Native::None;
        }
        (false, _) => {
            let level = s.effort();
            (level.clone(), Native::Effort(level))
        }
    };
    let reasoning = body
        .entry("reasoning")
        .or_insert_with(|| Value::Object(Map::new()));
    if !reasoning.is_object() {
        *reasoning = Value::Object(Map::new());
    }
    if let Value::Object(r) = reasoning {
        r.insert("effort".into(), level.into());
    }
    native
}

fn openai(body: &mut Map<String, Value>, dialect: Dialect, s: &Setting<'_>) -> Native {
    strip_client_knobs(body);
    body.remove("max_tokens");
    body.remove("max_completion_tokens");
    let cap_field = if dialect == Dialect::OpenAi {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    body.insert(cap_field.into(), s.cap().into());
    if s.off {
        match dialect {
            Dialect::OpenAi | Dialect::MuseSpark => {
                body.insert("reasoning_effort".into(), "none".into())
            }
            Dialect::Ollama => body.insert("think".into(), false.into()),
            Dialect::Deepseek => body.insert("thinking".into(), json!({"type": "disabled"})),
            Dialect::OpenRouter => body.insert("reasoning".into(), json!({"enabled": false})),
            Dialect::Vllm | Dialect::Sglang | Dialect::Llamacpp => {
                let kwargs = body
                    .entry("chat_template_kwargs")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(k) = kwargs {
                    k.insert("enable_thinking".into(), false.into());
                }
                None
            }
            // No switch to turn it off; `apply` never asks for one here.
            Dialect::Generic => return Native::None,
        };
        return Native::Off;
    }
    match s.knob {
        Knob::Effort => {
            let level = s.effort();
            body.insert("reasoning_effort".into(), level.clone().into());
            Native::Effort(level)
        }
        Knob::Budget if dialect == Dialect::OpenRouter => {
            body.insert("reasoning".into(), json!({ "max_tokens": s.limit }));
            Native::Budget(s.limit)
        }
        Knob::Budget if dialect == Dialect::Llamacpp => {
            body.insert("thinking_budget_tokens".into(), s.limit.into());
            Native::Budget(s.limit)
        }
        Knob::Budget => {
            body.insert("thinking_token_budget".into(), s.limit.into());
            Native::Budget(s.limit)
        }
        _ => Native::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::budget::ModeSource;
    use thinkgate_config::{Encoding, Mode, ModelThinking};

    fn model(thinking: ModelThinking) -> Model {
        Model {
            id: "m".into(),
            provider: "p".into(),
            upstream_model: "m".into(),
            context_window: 100_000,
            vision: false,
            embeddings: false,
            tools: true,
            reasoning: true,
            price_input_per_mtok: 0.0,
            price_output_per_mtok: 0.0,
            encoding: Encoding::O200kBase,
            thinking,
            scores: Default::default(),
            output_tokens_mtok: None,
            requests_per_second: None,
            deployments: vec![thinkgate_config::Deployment {
                provider: "p".into(),
                upstream_model: "m".into(),
                weight: 1,
                requests_per_minute: None,
                tokens_per_minute: None,
            }],
            balance: thinkgate_config::Balance::PeakEwma,
        }
    }

    fn budget(reasoning: u64, off: bool) -> Budget {
        Budget {
            mode: if off { Mode::Instant } else { Mode::Thinking },
            source: ModeSource::Default,
            off,
            reasoning,
            reserve: 500,
            hint: false,
            clamped_from: None,
            exclude: false,
            notice: None,
            learned: false,
        }
    }

    fn run(format: WireFormat, dialect: Dialect, m: &Model, b: &Budget) -> (Value, Control) {
        let mut body = Map::new();
        body.insert("max_tokens".into(), 99.into());
        body.insert("reasoning_effort".into(), "high".into());
        let control = apply(&mut body, format, dialect, m, b, &Modes::default()).unwrap();
        (Value::Object(body), control)
    }

    #[test]
    fn openai_gets_an_effort_from_the_budget_and_a_cap_with_room_for_the_answer() {
        let m = model(ModelThinking::default());
        let (body, c) = run(
            WireFormat::OpenAi,
            Dialect::OpenAi,
            &m,
            &budget(4096, false),
        );
        assert_eq!(body["reasoning_effort"], "medium");
        assert_eq!(body["max_completion_tokens"], 4596);
        assert!(body.get("max_tokens").is_none());
        assert_eq!(c.overrun, None, "hidden reasoning is not watched");
        let (body, _) = run(
            WireFormat::OpenAi,
            Dialect::OpenAi,
            &m,
            &budget(2000, false),
        );
        assert_eq!(body["reasoning_effort"], "low");
        let (body, c) = run(WireFormat::OpenAi, Dialect::OpenAi, &m, &budget(256, true));
        assert_eq!(
            (body["reasoning_effort"].as_str(), c.native),
            (Some("none"), Native::Off)
        );
        // A model that rejects `none` gets its lowest level instead.
        let picky = model(ModelThinking {
            efforts: Some(vec!["low".into(), "high".into()]),
            ..ModelThinking::default()
        });
        let (body, c) = run(
            WireFormat::OpenAi,
            Dialect::OpenAi,
            &picky,
            &budget(256, true),
        );
        assert_eq!(body["reasoning_effort"], "low");
        assert_eq!(
            c.limit, 256,
            "the backstop applies when thinking cannot be off"
        );
    }

    #[test]
    fn the_responses_api_gets_an_effort_beside_the_clients_summary() {
        let m = model(ModelThinking::default());
        let mut body = Map::new();
        body.insert(
            "reasoning".into(),
            json!({"effort": "xhigh", "summary": "auto"}),
        );
        body.insert("max_output_tokens".into(), 99_999.into());
        let c = apply(
            &mut body,
            WireFormat::Responses,
            Dialect::OpenAi,
            &m,
            &budget(4096, false),
            &Modes::default(),
        )
        .unwrap();
        assert_eq!(
            body["reasoning"],
            json!({"effort": "medium", "summary": "auto"})
        );
        assert_eq!(body["max_output_tokens"], 4596);
        assert_eq!(
            (c.native, c.overrun),
            (Native::Effort("medium".into()), None)
        );
        let (body, c) = run(
            WireFormat::Responses,
            Dialect::OpenAi,
            &m,
            &budget(256, true),
        );
        assert_eq!(
            (body["reasoning"]["effort"].as_str(), c.native),
            (Some("none"), Native::Off)
        );
        // An open-model server shows its reasoning: the proxy watches it.
        let (_, c) = run(
            WireFormat::Responses,
            Dialect::Vllm,
            &m,
            &budget(4096, false),
        );
        assert_eq!(c.overrun, Some(Overrun::Cut));
    }

    #[test]
    fn anthropic_budgets_keep_the_vendors_rules() {
        let m = model(ModelThinking::default());
        let (body, c) = run(
            WireFormat::Anthropic,
            Dialect::Generic,
            &m,
            &budget(300, false),
        );
        assert_eq!(
            body["thinking"],
            json!({"type": "enabled", "budget_tokens": 1024})
        );
        assert_eq!(body["max_tokens"], 1524, "budget_tokens < max_tokens");
        assert_eq!(
            (c.limit, c.overrun),
            (300, Some(Overrun::Cut)),
            "the guard holds the smaller budget"
        );
        let (body, _) = run(
            WireFormat::Anthropic,
            Dialect::Generic,
            &m,
            &budget(300, true),
        );
        assert_eq!(body["thinking"], json!({"type": "disabled"}));
        let adaptive = model(ModelThinking {
            knob: Knob::Effort,
            ..ModelThinking::default()
        });
        let (body, _) = run(
            WireFormat::Anthropic,
            Dialect::Generic,
            &adaptive,
            &budget(20000, false),
        );
        assert_eq!(body["thinking"], json!({"type": "adaptive"}));
        assert_eq!(body["output_config"], json!({"effort": "high"}));
    }

    #[test]
    fn gemini_gets_a_budget_in_range_or_a_level_never_both() {
        let pro = model(ModelThinking {
            min_budget: 128,
            max_budget: Some(32768),
            can_disable: false,
            ..ModelThinking::default()
        });
        let (body, c) = run(
            WireFormat::Gemini,
            Dialect::Generic,
            &pro,
            &budget(100_000, false),
        );
        assert_eq!(
            body["generationConfig"]["thinkingConfig"]["thinkingBudget"],
            32768
        );
        assert_eq!(c.limit, 100_000);
        let (body, c) = run(
            WireFormat::Gemini,
            Dialect::Generic,
            &pro,
            &budget(256, true),
        );
        assert_eq!(
            body["generationConfig"]["thinkingConfig"]["thinkingBudget"], 128,
            "cannot be off: the smallest budget"
        );
        assert_eq!(c.limit, 128);
        let flash = model(ModelThinking::default());
        let (body, c) = run(
            WireFormat::Gemini,
            Dialect::Generic,
            &flash,
            &budget(256, true),
        );
        assert_eq!(
            body["generationConfig"]["thinkingConfig"]["thinkingBudget"],
            0
        );
        assert_eq!(c.native, Native::Off);
        let leveled = model(ModelThinking {
            knob: Knob::Effort,
            ..ModelThinking::default()
        });
        let (body, _) = run(
            WireFormat::Gemini,
            Dialect::Generic,
            &leveled,
            &budget(4096, false),
        );
        let config = &body["generationConfig"]["thinkingConfig"];
        assert_eq!(config["thinkingLevel"], "medium");
        assert!(config.get("thinkingBudget").is_none());
    }

    #[test]
    fn open_model_servers_get_their_own_switches() {
        let m = model(ModelThinking::default());
        let (body, c) = run(WireFormat::OpenAi, Dialect::Vllm, &m, &budget(800, false));
        assert_eq!(
            (
                body["thinking_token_budget"].as_u64(),
                body["max_tokens"].as_u64()
            ),
            (Some(800), Some(1300))
        );
        assert!(
            body.get("reasoning_effort").is_none(),
            "the client's knob gives way"
        );
        assert_eq!(c.overrun, Some(Overrun::Force));
        let (body, _) = run(
            WireFormat::OpenAi,
            Dialect::Llamacpp,
            &m,
            &budget(800, false),
        );
        assert_eq!(body["thinking_budget_tokens"], 800);
        let (body, _) = run(WireFormat::OpenAi, Dialect::Sglang, &m, &budget(800, true));
        assert_eq!(body["chat_template_kwargs"]["enable_thinking"], false);
        let (body, _) = run(WireFormat::OpenAi, Dialect::Ollama, &m, &budget(800, true));
        assert_eq!(body["think"], false);
        let (body, _) = run(
            WireFormat::OpenAi,
            Dialect::Deepseek,
            &m,
            &budget(800, true),
        );
        assert_eq!(body["thinking"], json!({"type": "disabled"}));
        let (body, _) = run(
            WireFormat::OpenAi,
            Dialect::OpenRouter,
            &m,
            &budget(800, false),
        );
        assert_eq!(body["reasoning"], json!({"max_tokens": 800}));
        // A generic server has no switch: thinking stays on and the guard holds the backstop.
        let (_, c) = run(WireFormat::OpenAi, Dialect::Generic, &m, &budget(64, true));
        assert_eq!((c.native, c.limit), (Native::None, 64));
    }
}
