//! Reasoning modes and the budget policy: how much each kind of request may think, how the
//! client's own reasoning knobs map onto modes, and how each model's thinking can be
//! controlled. Typed values only; the rules that build them live in `validate`.

use std::collections::BTreeMap;

/// How much a request may think.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// No thinking where the model allows it, the smallest budget where it does not.
    Instant,
    /// Bounded thinking.
    Thinking,
    /// Several reasoning agents and one synthesis, under one total budget.
    Contemplating,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Instant, Mode::Thinking, Mode::Contemplating];
    pub const NAMES: [&'static str; 3] = ["instant", "thinking", "contemplating"];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// The budget policy of one mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModePolicy {
    /// Reasoning tokens a request may spend. In instant mode this is the backstop for models
    /// whose thinking cannot be turned off.
    pub reasoning_budget: u64,
    /// Output tokens kept for the answer after the thinking.
    pub answer_reserve: u64,
    /// Tell the model its budget in the system prompt (TALE).
    pub budget_hint: bool,
    /// Tighter budgets for some domains (the tightest of mode, domain and key wins).
    pub domain_budgets: BTreeMap<String, u64>,
    /// Budgets learned from traffic (`adaptive = true`), when on.
    pub adaptive: Option<Adaptive>,
}

/// A mode's budget per domain follows the traffic: every `period`, the `percentile` of the
/// reasoning its answers needed, within `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adaptive {
    pub min: u64,
    pub max: u64,
    /// In percent (50 to 99): answers above it are the share the budget may cut.
    pub percentile: u32,
    pub period: std::time::Duration,
}

/// What a client's `reasoning_effort` value (or OpenRouter's `reasoning.effort`) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffortAsk {
    pub mode: Mode,
    /// The budget asked for; `None` asks for the mode's whole budget.
    pub reasoning_budget: Option<u64>,
}

/// `[modes]`: the three policies and the tables that map requests onto them.
#[derive(Debug, Clone, PartialEq)]
pub struct Modes {
    /// The mode of a request that names none. `None`: such requests get no budget policy and
    /// are relayed as they are.
    pub default: Option<Mode>,
    /// Per-domain default modes, between the request's own knobs and `default`.
    pub domain_defaults: BTreeMap<String, Mode>,
    /// Indexed by `Mode as usize`.
    pub policies: [ModePolicy; 3],
    /// `reasoning_effort` value → mode and budget. Values not listed are ignored (noted in a
    /// response header), so a vendor's new level never breaks a client.
    pub efforts: BTreeMap<String, EffortAsk>,
    /// For upstreams whose knob is an effort level: `(level, smallest budget it is used
    /// for)`, ascending. The level sent is the last one whose budget fits.
    pub upstream_efforts: Vec<(String, u64)>,
    /// The budget hint added to the system prompt; `{budget}` is replaced by the number.
    pub hint: String,
}

impl Modes {
    pub fn policy(&self, mode: Mode) -> &ModePolicy {
        &self.policies[mode as usize]
    }
}

impl Default for Modes {
    fn default() -> Self {
        let policy = |budget, reserve, hint| ModePolicy {
            reasoning_budget: budget,
            answer_reserve: reserve,
            budget_hint: hint,
            domain_budgets: BTreeMap::new(),
            adaptive: None,
        };
        let ask = |mode, budget| EffortAsk {
            mode,
            reasoning_budget: budget,
        };
        Modes {
            default: None,
            domain_defaults: BTreeMap::new(),
            policies: [
                policy(256, 1024, false),
                policy(4096, 4096, true),
                policy(16384, 4096, false),
            ],
            efforts: [
                ("none", ask(Mode::Instant, Some(0))),
                ("minimal", ask(Mode::Instant, None)),
                ("low", ask(Mode::Thinking, Some(1024))),
                ("medium", ask(Mode::Thinking, Some(4096))),
                ("high", ask(Mode::Thinking, None)),
                ("xhigh", ask(Mode::Contemplating, Some(16384))),
                ("max", ask(Mode::Contemplating, None)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            upstream_efforts: [
                ("minimal", 0),
                ("low", 1024),
                ("medium", 4096),
                ("high", 16384),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            hint: DEFAULT_HINT.to_string(),
        }
    }
}

/// TALE's prompt, adapted: the budget in plain words, before the model starts.
pub const DEFAULT_HINT: &str =
    "Think step by step, but keep your reasoning under {budget} tokens before you answer.";

/// Qwen3's published early-stop sentence for budget forcing.
pub const DEFAULT_STOP_PHRASE: &str = "\n\nConsidering the limited time by the user, I have to give the solution based on the thinking directly now.";

/// How a model's thinking is controlled natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Knob {
    /// Whatever the provider's format and dialect use.
    Auto,
    /// A token budget (Anthropic `budget_tokens`, Gemini `thinkingBudget`, vLLM
    /// `thinking_token_budget`, OpenRouter `reasoning.max_tokens`).
    Budget,
    /// An effort level (OpenAI `reasoning_effort`, Anthropic `output_config.effort` with
    /// adaptive thinking, Gemini 3 `thinkingLevel`).
    Effort,
    /// No knob: only the proxy's enforcement applies.
    None,
}

impl Knob {
    pub const NAMES: [&'static str; 4] = ["auto", "budget", "effort", "none"];
}

/// What the proxy does when a model's visible reasoning reaches the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overrun {
    /// Budget forcing: stop, close the thought with the stop phrase and the end-of-thinking
    /// delimiter, and let the model continue the same answer (open models).
    Force,
    /// Stop, then ask again with thinking off and the reasoning so far as context.
    Cut,
    /// Stop and end the answer with `finish_reason: "length"`.
    Length,
}

impl Overrun {
    pub const NAMES: [&'static str; 3] = ["force", "cut", "length"];
}

/// `[models.<id>.thinking]`: how this model's thinking is controlled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelThinking {
    pub knob: Knob,
    /// The native knob's range: budgets are clamped into it.
    pub min_budget: u64,
    pub max_budget: Option<u64>,
    /// Whether thinking can be turned off (Gemini 2.5 Pro's cannot).
    pub can_disable: bool,
    /// The effort levels the model accepts, when it takes levels (`None`: all).
    pub efforts: Option<Vec<String>>,
    /// `None`: by the provider (force for open-model servers, cut for the others).
    pub overrun: Option<Overrun>,
    pub stop_phrase: String,
    /// What opens and closes the thought in the model's chat template.
    pub think_start: String,
    pub think_end: String,
}

impl Default for ModelThinking {
    fn default() -> Self {
        ModelThinking {
            knob: Knob::Auto,
            min_budget: 0,
            max_budget: None,
            can_disable: true,
            efforts: None,
            overrun: None,
            stop_phrase: DEFAULT_STOP_PHRASE.to_string(),
            think_start: "<think>\n".to_string(),
            think_end: "\n</think>\n\n".to_string(),
        }
    }
}

/// `[contemplating]`: the parallel agents of contemplating mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Contemplating {
    /// Agents per request, unless the domain says otherwise.
    pub agents: usize,
    pub domain_agents: BTreeMap<String, usize>,
    /// The same model for every agent, or the domain's top models.
    pub models: AgentModels,
    /// Role prompts, given to the agents in turn.
    pub roles: Vec<String>,
    /// The model that writes the final answer (default: the best for the domain).
    pub synthesis_model: Option<String>,
    /// The share of the reasoning budget kept for the synthesis; the agents split the rest.
    pub synthesis_share: f64,
    /// Skip the synthesis when every agent's final answer is the same.
    pub early_agreement: bool,
    /// Agents still running then are cancelled.
    pub deadline: std::time::Duration,
    /// Answers needed for a synthesis.
    pub quorum: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentModels {
    Same,
    Top,
}

impl Contemplating {
    pub fn agents_for(&self, domain: Option<&str>) -> usize {
        domain
            .and_then(|d| self.domain_agents.get(d))
            .copied()
            .unwrap_or(self.agents)
    }
}

impl Default for Contemplating {
    fn default() -> Self {
        Contemplating {
            agents: 3,
            domain_agents: BTreeMap::new(),
            models: AgentModels::Same,
            roles: vec![
                "Solve the problem directly and carefully, then state your final answer on the last line.".into(),
                "Solve the problem by a different method than the most obvious one, check the result, then state your final answer on the last line.".into(),
                "Look for the flaw or trap in the obvious answer before settling on one, then state your final answer on the last line.".into(),
            ],
            synthesis_model: None,
            synthesis_share: 0.25,
            early_agreement: true,
            deadline: std::time::Duration::from_secs(120),
            quorum: 2,
        }
    }
}
