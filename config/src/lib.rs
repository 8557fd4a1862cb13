//! thinkgate's configuration: one TOML file, parsed once, validated into typed values.
//!
//! Layout:
//! - [`raw`]: serde structs that mirror the file (untrusted, unknown keys rejected);
//! - [`validate`]: the rules that turn raw into [`Config`], with [`ConfigError`]s that name
//!   file, line and key path;
//! - this file: the typed runtime config the proxy reads on the hot path (no TOML there).
//!
//! Secrets enter only as `${ENV_VAR}` references and live in [`Secret`], whose `Debug`
//! prints nothing of the value.

pub mod error;
mod locate;
pub mod modes;
pub mod raw;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{ConfigError, KeyPath};
pub use modes::{
    Adaptive, AgentModels, Contemplating, EffortAsk, Knob, Mode, ModePolicy, ModelThinking, Modes,
    Overrun,
};

/// The validated configuration the proxy runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from (errors and reloads name it).
    pub source: PathBuf,
    pub server: Server,
    /// The model `auto` and `auto:<mode>` resolve to until domain routing decides.
    pub default_model: String,
    /// Sorted by name.
    pub providers: Vec<Provider>,
    /// Sorted by id.
    pub models: Vec<Model>,
    pub simulator: Simulator,
    pub metrics: MetricsConfig,
    /// Reasoning modes and budgets.
    pub modes: Modes,
    /// Task domains the classifier is trained on (built-in ones merged with the file's),
    /// sorted by name; `general` is always one.
    pub domains: Vec<Domain>,
    /// Under this confidence a request goes to the `general` route.
    pub confidence_threshold: f32,
    /// How `auto` picks a model per domain.
    pub routing: Routing,
    /// Contemplating mode's agents.
    pub contemplating: Contemplating,
    /// Client authentication.
    pub auth: Auth,
    /// Client API keys, sorted by name.
    pub keys: Vec<ClientKey>,
    /// OpenTelemetry export (traces, and metrics when asked); off without an endpoint.
    pub telemetry: Telemetry,
    /// Where the keys' limit and quota state lives.
    pub state: StateBackend,
    /// The exact response cache; `None` when it is off (the default).
    pub cache: Option<CacheConfig>,
}

/// `[cache]`: which answers are kept, for how long, in how much memory, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// How long an answer is served from the cache after it was stored.
    pub ttl: Duration,
    /// The memory backend's cap on what all entries hold together.
    pub max_bytes: u64,
    /// An answer larger than this is not kept (it bounds what one response buffers).
    pub max_entry_bytes: usize,
    pub scope: CacheScope,
    pub backend: CacheBackend,
}

/// Whose requests an entry answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    /// Only the client key's that stored it (the default).
    Key,
    /// Every client key's.
    Shared,
}

impl CacheScope {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheScope::Key => "key",
            CacheScope::Shared => "shared",
        }
    }
}

/// Where entries live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheBackend {
    /// This process's memory, under `max_bytes`.
    Memory,
    /// The `[state]` Redis, shared by every replica (with Redis's own memory policy).
    Redis,
}

/// `[state]`: one process's memory, or a Redis shared by every replica.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum StateBackend {
    #[default]
    Memory,
    Redis(RedisState),
}

/// A Redis that holds every replica's limits.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisState {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://`), `${VAR}` resolved.
    pub url: Secret,
    /// The longest an admission waits for Redis before the failure behaviour applies.
    pub timeout: Duration,
    pub on_failure: OnFailure,
    /// How many replicas share the limits: failing open, each holds limit / replicas.
    pub replicas: u32,
    /// Prefix of every key written.
    pub prefix: String,
}

/// What a replica does while Redis cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Admit by local limits at limit / replicas.
    Open,
    /// Refuse with 429 `rate_limit_state_unavailable`.
    Closed,
}

/// `[telemetry]`: where and what to export over OTLP/HTTP (protobuf).
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    /// The collector's base URL (`http://host:4318`): spans go to `/v1/traces`, metrics
    /// to `/v1/metrics`. `None`: nothing is exported and nothing is traced.
    pub endpoint: Option<String>,
    /// Sent with every export; values came from the config with `${VAR}` resolved.
    pub headers: Vec<(String, Secret)>,
    /// Share of new traces sampled; a client's sampled flag is followed whatever it is.
    pub sample_ratio: f64,
    pub service_name: String,
    /// Whether spans carry the prompt and answer (`gen_ai.input.messages`, ...).
    pub capture_content: bool,
    /// Whether the GenAI metric instruments are exported too (Prometheus stays).
    pub metrics: bool,
    pub metrics_interval: Duration,
    /// Finished spans waiting for export (besides the batch being sent); more are dropped
    /// and counted.
    pub queue_spans: usize,
    /// The longest one export may take before it is given up (and its spans counted).
    pub export_timeout: Duration,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            endpoint: None,
            headers: Vec::new(),
            sample_ratio: 1.0,
            service_name: "thinkgate".to_string(),
            capture_content: false,
            metrics: false,
            metrics_interval: Duration::from_secs(60),
            queue_spans: 2048,
            export_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No keys: said explicitly with `auth = "none"`.
    None,
    Keys,
}

/// A client API key: its name (the only thing logs and metrics show), the SHA-256 of its
/// secret, what it may use and its limits.
#[derive(Clone, PartialEq)]
pub struct ClientKey {
    pub name: String,
    /// The SHA-256 of the secret (a key whose `${VAR}` is unset is a config error).
    pub digest: [u8; 32],
    /// Model ids (and `auto`) it may use; `None`: all.
    pub models: Option<Vec<String>>,
    pub modes: Option<Vec<Mode>>,
    /// The most reasoning budget it may have per mode.
    pub max_budget: BTreeMap<String, u64>,
    pub limits: KeyLimits,
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKey")
            .field("name", &self.name)
            .field("digest", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// Per-key limits; `None`/absent: unlimited. Mode maps take a mode name or `all`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLimits {
    pub requests_per_second: Option<u32>,
    pub requests_per_minute: Option<u32>,
    /// Requests allowed at once above the rate (default: the rate itself).
    pub burst: Option<u32>,
    /// Prompt + output tokens per minute.
    pub tokens_per_minute: Option<u32>,
    pub reasoning_tokens_per_minute: BTreeMap<String, u32>,
    pub reasoning_tokens_per_day: BTreeMap<String, u64>,
    pub output_tokens_per_day: Option<u64>,
}

/// How `auto` picks among the models that fit.
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    /// The policy of domains without their own.
    pub policy: Policy,
    pub policies: BTreeMap<String, Policy>,
    /// `efficient` considers models within this many score points of the best.
    pub efficient_margin: f64,
    pub efficient_by: EfficientBy,
    /// `[routing.model_names]`: names clients send, mapped to what the proxy serves.
    pub model_names: ModelNames,
}

impl Routing {
    pub fn policy(&self, domain: &str) -> &Policy {
        self.policies.get(domain).unwrap_or(&self.policy)
    }
}

/// Model names a client sends that the proxy serves under another name: Claude Code asks
/// for `claude-sonnet-4-5-20250929`, the config says where that goes. A name is matched
/// exactly first, then by the longest pattern ending in `*` that it starts with.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelNames {
    exact: BTreeMap<String, String>,
    /// (prefix, target), longest prefix first.
    prefixes: Vec<(String, String)>,
}

impl ModelNames {
    /// From (name or `prefix*`, target) pairs, already validated.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> ModelNames {
        let mut names = ModelNames::default();
        for (name, target) in pairs {
            match name.strip_suffix('*') {
                Some(prefix) => names.prefixes.push((prefix.to_string(), target)),
                None => drop(names.exact.insert(name, target)),
            }
        }
        names
            .prefixes
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        names
    }

    /// Where `name` goes, if the map names it.
    pub fn resolve(&self, name: &str) -> Option<&str> {
        self.exact.get(name).map(String::as_str).or_else(|| {
            self.prefixes
                .iter()
                .find(|(prefix, _)| name.starts_with(prefix.as_str()))
                .map(|(_, target)| target.as_str())
        })
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    /// The highest score for the domain.
    Best,
    /// Within `efficient_margin` of the best, the most score per output token (or dollar).
    Efficient,
    /// These models in this order (those that fit).
    Order(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EfficientBy {
    Tokens,
    Cost,
}

/// A task domain: what it covers and the examples the classifier learns it from.
#[derive(Debug, Clone, PartialEq)]
pub struct Domain {
    pub name: String,
    pub description: String,
    pub examples: Vec<String>,
    pub keywords: Vec<String>,
}

/// The built-in domains (health, coding, math, science, reasoning, vision, agentic,
/// shopping, general) with their training examples.
pub const BUILTIN_DOMAINS: &str = include_str!("../domains.toml");

/// Histogram buckets; `None` keeps the built-in default for that histogram.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsConfig {
    pub latency_buckets: Option<Vec<f64>>,
    pub ttft_buckets: Option<Vec<f64>>,
    pub reasoning_token_buckets: Option<Vec<f64>>,
}

impl Config {
    /// Reads and validates `path`, resolving `${VAR}` references from the process environment.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        Config::load_listening_on(path, None)
    }

    /// Loads a file with `server.listen` replaced by `listen` (the `--listen` flag) before
    /// validation, so the address meets the same rules as one written in the file.
    pub fn load_listening_on(
        path: impl AsRef<Path>,
        listen: Option<std::net::SocketAddr>,
    ) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        validate::parse_and_validate(&text, path, &|var| std::env::var(var).ok(), listen)
    }

    /// Validates `text` as if read from `path`, resolving `${VAR}` with `env`.
    pub fn parse(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        validate::parse_and_validate(text, path, env, None)
    }

    pub fn model(&self, id: &str) -> Option<&Model> {
        self.models
            .binary_search_by(|m| m.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.models[i])
    }

    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers
            .binary_search_by(|p| p.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.providers[i])
    }
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    /// Upper bound on a whole non-streaming request, upstream included.
    pub request_timeout: Duration,
    /// Longest time a client may take to send its request body (slow clients hold slots).
    pub body_read_timeout: Duration,
    /// A client connection silent this long (before its first request, between requests,
    /// or while sending a request head) is closed.
    pub idle_timeout: Duration,
    /// Upstream calls in flight at once, across every client and provider.
    pub max_upstream_calls: usize,
    /// How many retries each provider may send beside its first tries.
    pub retry_budget: RetryBudget,
    /// Serving threads, each with its own runtime and listening socket (default: one per
    /// core).
    pub threads: usize,
    /// Largest single event of an upstream's stream; a bigger one ends the response.
    pub max_event_bytes: usize,
    /// Largest whole upstream response (and guarded answer) the proxy reads.
    pub max_response_bytes: usize,
    /// How long a stored Responses API conversation can be continued
    /// (`previous_response_id`), and the memory all stored conversations may take.
    pub response_store_ttl: Duration,
    pub response_store_bytes: usize,
    /// How long in-flight requests (streams too) may run after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    /// A `tracing` filter directive such as `info` or `thinkgate_proxy=debug`.
    pub log_level: String,
    /// Where translated responses put reasoning text: `reasoning_content` or `reasoning`.
    pub reasoning_field: ReasoningField,
    /// With `auth = "none"`, listening beyond loopback was allowed explicitly.
    pub allow_public_without_auth: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningField {
    ReasoningContent,
    Reasoning,
}

impl ReasoningField {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasoningField::ReasoningContent => "reasoning_content",
            ReasoningField::Reasoning => "reasoning",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenAI itself.
    OpenAi,
    /// Any server that speaks OpenAI chat completions (vLLM, SGLang, llama.cpp, Ollama, …).
    OpenAiCompatible,
    /// The built-in simulator, run in process: no socket, no network.
    Simulator,
    /// Anthropic's native Messages API.
    Anthropic,
    /// Google's native Gemini API (`generateContent`).
    Gemini,
}

impl ProviderKind {
    pub const NAMES: [&'static str; 5] = [
        "openai",
        "openai-compatible",
        "simulator",
        "anthropic",
        "gemini",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::OpenAiCompatible => "openai-compatible",
            ProviderKind::Simulator => "simulator",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    /// Without a trailing slash, e.g. `https://api.openai.com/v1`. Empty for the simulator.
    pub base_url: String,
    pub api_key: ApiKey,
    pub connect_timeout: Duration,
    /// Time allowed until the upstream's response headers arrive.
    pub response_timeout: Duration,
    /// Longest silence allowed between two chunks of a streamed response.
    pub stream_idle_timeout: Duration,
    /// HTTP/2 connections to open in parallel (hyper opens one per host otherwise).
    pub http2_connections: usize,
    /// Calls to this provider in flight at once (its account's concurrency), if capped.
    pub max_concurrent_calls: Option<usize>,
    /// Client request headers copied to this upstream.
    pub forward_headers: Vec<HeaderPattern>,
    /// `max_tokens` sent when the client sets none (Anthropic requires one).
    pub default_max_tokens: u64,
    /// For `simulator` providers: the wire format the simulated upstream speaks.
    pub format: WireFormat,
    /// Which OpenAI-format server this is, for its quirks (`Generic` for other formats).
    pub dialect: Dialect,
    /// When a failed call is tried again on this provider.
    pub retry: RetryPolicy,
    /// When a model on this provider is left out after failures.
    pub breaker: BreakerPolicy,
}

/// `[providers.<name>.retry]`: a call that failed before its first byte (connect error,
/// timeout, one of `on_status`) is sent again after a backoff with full jitter, or after the
/// upstream's `Retry-After` when that is no longer than `max_retry_after`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Tries per call on this provider, the first included (1: never retry).
    pub attempts: u32,
    /// The statuses worth another try.
    pub on_status: Vec<u16>,
    /// How long each try waits for the response head; `response_timeout` bounds them all.
    pub per_try_timeout: Duration,
    /// The first backoff's ceiling; each retry doubles it, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// A longer `Retry-After` hands the call to the next model instead of waiting.
    pub max_retry_after: Duration,
    /// A call still without an answer this long (its response head; a stream's first
    /// content) is sent to the model's next deployment too; the first answer wins, the
    /// other is cancelled.
    pub hedge_after: Option<HedgeAfter>,
}

/// When a hedge goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeAfter {
    Fixed(Duration),
    /// The deployment's own 95th percentile of recent answers (no hedge until it has seen
    /// enough calls).
    P95,
}

/// `[providers.<name>.breaker]`: each model (deployment) on the provider opens its breaker
/// after `consecutive_failures` in a row, or when at least `min_calls` calls in the last
/// `window` failed at `failure_rate` or more. Open, it takes no calls for `open_for`; then
/// `half_open_probes` calls test it, and one success closes it.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    pub consecutive_failures: u32,
    pub failure_rate: f64,
    pub window: Duration,
    pub min_calls: u32,
    pub open_for: Duration,
    pub half_open_probes: u32,
}

/// `[server] retry_budget` and `min_retries_per_second`: a provider's retries over the last
/// ten seconds stay under `ratio` of its calls, or `min_per_second` per second when that is
/// more (so a quiet provider can still retry), so retries never multiply an outage.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryBudget {
    pub ratio: f64,
    pub min_per_second: u32,
}

/// The servers that speak OpenAI chat completions, each with its own reasoning field,
/// reasoning knobs and quirks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Any OpenAI-compatible server; nothing assumed.
    Generic,
    /// OpenAI itself: hidden reasoning, `reasoning_effort`, `max_completion_tokens`.
    OpenAi,
    /// vLLM: reasoning in `reasoning`; `thinking_token_budget`, `chat_template_kwargs`.
    Vllm,
    /// SGLang: `reasoning_content`; `chat_template_kwargs`.
    Sglang,
    /// DeepSeek's API: `reasoning_content`, which must not be sent back in the history.
    Deepseek,
    /// llama.cpp's server: `reasoning_content`; usage without a reasoning count.
    Llamacpp,
    /// Ollama's OpenAI endpoint: `reasoning`; `think` or `reasoning_effort`.
    Ollama,
    /// OpenRouter: `reasoning` and `reasoning_details`; the `reasoning` request object.
    OpenRouter,
    /// Meta's Muse Spark API (OpenAI-compatible preview): `reasoning_content`.
    MuseSpark,
}

impl Dialect {
    pub const NAMES: [&'static str; 9] = [
        "generic",
        "openai",
        "vllm",
        "sglang",
        "deepseek",
        "llamacpp",
        "ollama",
        "openrouter",
        "muse-spark",
    ];
    const ALL: [Dialect; 9] = [
        Dialect::Generic,
        Dialect::OpenAi,
        Dialect::Vllm,
        Dialect::Sglang,
        Dialect::Deepseek,
        Dialect::Llamacpp,
        Dialect::Ollama,
        Dialect::OpenRouter,
        Dialect::MuseSpark,
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub fn parse(name: &str) -> Option<Dialect> {
        let i = Self::NAMES.iter().position(|n| *n == name)?;
        Some(Self::ALL[i])
    }

    /// The field the server puts visible reasoning in (`None`: it shows none, or for
    /// `Generic`, nothing is assumed).
    pub fn reasoning_field(self) -> Option<ReasoningField> {
        match self {
            Dialect::OpenAi | Dialect::Generic => None,
            Dialect::Vllm | Dialect::Ollama | Dialect::OpenRouter => {
                Some(ReasoningField::Reasoning)
            }
            Dialect::Sglang | Dialect::Deepseek | Dialect::Llamacpp | Dialect::MuseSpark => {
                Some(ReasoningField::ReasoningContent)
            }
        }
    }
}

/// The API an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// OpenAI chat completions (`/chat/completions`), and every server that imitates it.
    OpenAi,
    /// OpenAI's Responses API (`/responses`): the only API of some OpenAI models, also
    /// served by vLLM and others.
    Responses,
    Anthropic,
    Gemini,
}

impl WireFormat {
    pub const NAMES: [&'static str; 4] = ["openai", "responses", "anthropic", "gemini"];
    /// What an OpenAI or OpenAI-compatible provider may speak (`format`).
    pub const OPENAI_NAMES: [&'static str; 2] = ["openai", "responses"];

    /// Whether the upstream serves OpenAI's other endpoints (`/embeddings`, `/completions`).
    pub fn is_openai(self) -> bool {
        matches!(self, WireFormat::OpenAi | WireFormat::Responses)
    }
}

impl Provider {
    /// Whether requests can be sent: a key that is referenced must resolve.
    pub fn usable(&self) -> bool {
        !matches!(self.api_key, ApiKey::FromEnv { value: None, .. })
    }
}

/// An upstream API key.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiKey {
    /// The upstream takes no key.
    None,
    /// `${VAR}`: `value` is `None` when the variable is not set.
    FromEnv { var: String, value: Option<Secret> },
}

/// A secret value. `Debug` and `Display` never print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The value itself; call only where it is sent, never where it is logged.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A lower-case header name, or a prefix when written with a trailing `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderPattern {
    Exact(String),
    Prefix(String),
}

impl HeaderPattern {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            HeaderPattern::Exact(n) => n == name,
            HeaderPattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Model {
    /// The id clients send in `model`.
    pub id: String,
    /// Name of the provider (an entry of [`Config::providers`]).
    pub provider: String,
    /// The name the upstream knows the model by.
    pub upstream_model: String,
    pub context_window: u64,
    pub vision: bool,
    pub tools: bool,
    pub reasoning: bool,
    /// An embeddings model: served on `/v1/embeddings` only, never routed for chat.
    pub embeddings: bool,
    pub price_input_per_mtok: f64,
    pub price_output_per_mtok: f64,
    /// The tiktoken encoding used to count this model's tokens.
    pub encoding: Encoding,
    /// How its thinking is controlled (meaningful for reasoning models).
    pub thinking: ModelThinking,
    /// Published scores by domain; empty: not a candidate for `auto`.
    pub scores: BTreeMap<String, f64>,
    /// Output tokens (millions) for the AA Intelligence Index, when published.
    pub output_tokens_mtok: Option<f64>,
    /// Requests per second to this model across all keys.
    pub requests_per_second: Option<u32>,
    /// Where the model is served: one deployment per provider (region, account), the first
    /// being `provider` and `upstream_model` above. Never empty.
    pub deployments: Vec<Deployment>,
    /// How a request picks among several deployments.
    pub balance: Balance,
}

/// One provider (region, account) serving a model, with the vendor account's own limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub provider: String,
    pub upstream_model: String,
    /// Its share under `balance = "weighted"`, and its cost divisor under the others.
    pub weight: u32,
    /// The vendor account's requests and tokens per minute: a deployment at either is
    /// skipped, not tried.
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
}

/// How a request's deployment is chosen; the others follow as its fallbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// At random, in proportion to `weight`.
    Weighted,
    /// The one with the fewest calls in flight.
    LeastInFlight,
    /// The lowest peak-EWMA latency times calls in flight (as linkerd), of two drawn at
    /// random: fast and idle wins, and a slow one is left alone at once.
    PeakEwma,
    /// In the order listed: the first is the primary, each next one the fallback of the one
    /// before (active-passive failover, with no draw).
    Ordered,
}

impl Balance {
    /// In declaration order, as [`Balance::ALL`].
    pub const NAMES: [&'static str; 4] = ["weighted", "least_in_flight", "peak_ewma", "ordered"];
    pub const ALL: [Balance; 4] = [
        Balance::Weighted,
        Balance::LeastInFlight,
        Balance::PeakEwma,
        Balance::Ordered,
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub fn parse(name: &str) -> Option<Balance> {
        Balance::ALL.into_iter().find(|b| b.as_str() == name)
    }
}

impl Model {
    /// The model's score for `domain`: its own, else its general score (never zero for a
    /// missing figure). `None` when it has no scores at all.
    pub fn score(&self, domain: &str) -> Option<f64> {
        self.scores
            .get(domain)
            .or_else(|| self.scores.get("general"))
            .copied()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    O200kBase,
    Cl100kBase,
}

impl Encoding {
    pub const NAMES: [&'static str; 2] = ["o200k_base", "cl100k_base"];

    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
        }
    }
}

/// The built-in simulator's behaviour, per upstream model name.
#[derive(Debug, Clone, Default)]
pub struct Simulator {
    pub seed: u64,
    pub default: SimProfile,
    pub models: BTreeMap<String, SimProfile>,
}

impl Simulator {
    pub fn profile(&self, model: &str) -> &SimProfile {
        self.models.get(model).unwrap_or(&self.default)
    }
}

/// How one simulated model behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct SimProfile {
    pub reasoning: ReasoningStyle,
    pub reasoning_tokens: u32,
    pub answer_tokens: u32,
    /// 0 means as fast as possible.
    pub tokens_per_second: f64,
    pub time_to_first_token: Duration,
    pub faults: SimFaults,
}

impl Default for SimProfile {
    fn default() -> Self {
        SimProfile {
            reasoning: ReasoningStyle::ReasoningContent,
            reasoning_tokens: 64,
            answer_tokens: 32,
            tokens_per_second: 0.0,
            time_to_first_token: Duration::ZERO,
            faults: SimFaults::default(),
        }
    }
}

/// Faults a simulated model injects on every request (headers can add them per request).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimFaults {
    /// Answer with this HTTP status and an OpenAI-shaped error body.
    pub status: Option<u16>,
    /// Drop the connection after this many streamed tokens.
    pub reset_after: Option<u32>,
    /// Stop sending (but keep the connection open) after this many streamed tokens.
    pub stall_after: Option<u32>,
}

/// Where a simulated model puts its reasoning, mirroring real servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningStyle {
    /// DeepSeek, SGLang, llama.cpp: `reasoning_content` on message and delta.
    ReasoningContent,
    /// vLLM (late 2025 on), OpenRouter: `reasoning`.
    Reasoning,
    /// OpenAI: no text, only `usage.completion_tokens_details.reasoning_tokens`.
    Hidden,
    /// A model that does not reason.
    None,
}

impl ReasoningStyle {
    pub const NAMES: [&'static str; 4] = ["reasoning_content", "reasoning", "hidden", "none"];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "reasoning_content" => ReasoningStyle::ReasoningContent,
            "reasoning" => ReasoningStyle::Reasoning,
            "hidden" => ReasoningStyle::Hidden,
            "none" => ReasoningStyle::None,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    /// The configs in the repository stay valid with provider keys set or not; the
    /// production one needs its client key's variable.
    #[test]
    fn shipped_configs_validate() {
        let client_key = |v: &str| (v == "THINKGATE_API_KEY").then(|| "tg-local".to_string());
        for (name, text) in [
            ("demo.toml", include_str!("../demo.toml")),
            ("thinkgate.toml", include_str!("../thinkgate.toml")),
        ] {
            let cfg =
                Config::parse(text, Path::new(name), &client_key).unwrap_or_else(|e| panic!("{e}"));
            assert!(cfg.models.len() >= 5, "{name}");
        }
        let unset = Config::parse(include_str!("../thinkgate.toml"), Path::new("t"), &|_| None)
            .unwrap_err();
        assert!(
            unset.message().contains("THINKGATE_API_KEY is not set"),
            "{unset}"
        );
        let demo = Config::parse(
            include_str!("../demo.toml"),
            Path::new("demo.toml"),
            &|_| None,
        )
        .unwrap();
        assert!(
            demo.server.listen.ip().is_loopback(),
            "the demo must listen on loopback only"
        );
        assert!(
            demo.providers.iter().all(|p| p.usable()),
            "the demo needs no keys"
        );
    }
}
