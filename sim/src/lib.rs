//! The built-in upstream simulator: an OpenAI-compatible reasoning model for demos, tests and
//! benchmarks, with no network and no model.
//!
//! Deterministic for a seed and a request. Per simulated model (config `[simulator.models]`)
//! it shows reasoning the way real servers do (vLLM's `reasoning`, DeepSeek/SGLang's
//! `reasoning_content`, or hidden like OpenAI), paces tokens, and injects faults. Tests
//! override any of that per request with `x-sim-*` headers:
//!
//! | header | effect |
//! |---|---|
//! | `x-sim-status` | answer with this error status |
//! | `x-sim-fail-first` | fail only the first N calls with this `x-request-id` (a proxy's retries of one request share it), with `x-sim-status` or 503 |
//! | `x-sim-retry-after` | the error response asks for this many seconds in `Retry-After` |
//! | `x-sim-tail-percent`, `x-sim-tail-ms` | this share of calls (each drawn on its own, retries and hedges too) waits this long before its first token: a heavy-tailed latency |
//! | `x-sim-reset-after` | drop the connection after N streamed tokens |
//! | `x-sim-stall-after` | stop sending after N streamed tokens |
//! | `x-sim-reasoning-tokens`, `x-sim-answer-tokens` | response length |
//! | `x-sim-ttft-ms`, `x-sim-tokens-per-second` | pacing |
//! | `x-sim-reasoning` | `reasoning_content`, `reasoning`, `hidden` or `none` |
//! | `x-sim-echo` | add `sim_echo` (the request body as received) to the response |
//! | `x-sim-finish` | `content_filter`: end the answer the way a safety filter does |
//! | `x-sim-usage` | `full` (default); `basic` (no token details, like llama.cpp); `none` (no usage at all); `inconsistent` (completion excludes reasoning and the total is off, as some vendors' bugs do) |
//!
//! It serves in process (provider kind `simulator`) or on a socket (`thinkgate simulate`).

mod anthropic;
mod gemini;
mod knobs;
mod responses;
mod script;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use thinkgate_config::{Dialect, Encoding, ReasoningField, ReasoningStyle, SimProfile, WireFormat};
use thinkgate_metrics::TokenCounter;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use script::{Rng, Script, WORDS};
use thinkgate_wire::body::{self, Body, BoxError};
use thinkgate_wire::ApiError;

/// Counters tests read to see what reached the simulated upstream.
#[derive(Debug, Default)]
pub struct SimStats {
    pub started: AtomicU64,
    pub completed: AtomicU64,
    pub cancelled: AtomicU64,
    /// The `x-request-id` of the latest chat request.
    pub last_request_id: std::sync::Mutex<String>,
    /// The last [`SimStats::RECENT`] chat request bodies of at most
    /// [`SimStats::RECENT_BYTES`] each, oldest first, for tests that check what reached the
    /// upstream (bounded: the demo serves large prompts too).
    pub recent_bodies: std::sync::Mutex<std::collections::VecDeque<Value>>,
}

impl SimStats {
    pub const RECENT: usize = 32;
    pub const RECENT_BYTES: usize = 64 * 1024;

    fn remember(&self, body: &Value) {
        if let Ok(mut recent) = self.recent_bodies.lock() {
            if recent.len() == Self::RECENT {
                recent.pop_front();
            }
            recent.push_back(body.clone());
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "started": self.started.load(Ordering::Relaxed),
            "completed": self.completed.load(Ordering::Relaxed),
            "cancelled": self.cancelled.load(Ordering::Relaxed),
            "last_request_id": self.last_request_id.lock().map(|s| s.clone()).unwrap_or_default(),
            "recent_bodies": self.recent_bodies.lock().map(|r| r.iter().cloned().collect::<Vec<_>>()).unwrap_or_default(),
        })
    }
}

/// Marks a request cancelled unless it is finished before being dropped.
struct Completion {
    stats: Arc<SimStats>,
    done: bool,
}

impl Completion {
    fn finish(mut self) {
        self.done = true;
        self.stats.completed.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.done {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub struct Simulator {
    config: thinkgate_config::Simulator,
    stats: Arc<SimStats>,
    counter: TokenCounter,
    /// Prompt prefixes cached by Anthropic-format requests (`cache_control`).
    prompt_cache: anthropic::PromptCache,
    /// Calls seen per `x-request-id`, for `x-sim-fail-first`.
    calls_by_request: FailFirst,
}

/// A draw in 0..100 per call, independent of the request (its body and id are the same
/// for a retry or a hedge, which must not be slow just because the first call was).
fn tail_draw() -> u64 {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut x = n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (x ^ (x >> 29)) % 100
}

/// Counts calls per request id for `x-sim-fail-first`, forgetting them all when
/// [`FailFirst::CAPACITY`] ids are held (a long soak must not grow the simulator).
#[derive(Default)]
struct FailFirst(std::sync::Mutex<std::collections::HashMap<String, u64>>);

impl FailFirst {
    const CAPACITY: usize = 100_000;

    /// Whether this call is one of the first `n` with `id`.
    fn fails(&self, id: &str, n: u64) -> bool {
        let Ok(mut seen) = self.0.lock() else {
            return false;
        };
        if seen.len() >= Self::CAPACITY && !seen.contains_key(id) {
            seen.clear();
        }
        let count = seen.entry(id.to_string()).or_insert(0);
        *count += 1;
        *count <= n
    }
}

/// The request fields the simulator acts on, whatever format they came in.
pub(crate) struct RequestView {
    stream: bool,
    include_usage: bool,
    cap: Option<u64>,
    /// The tool to call, when the request offers tools and does not answer a call.
    tool: Option<String>,
    prompt_tokens: u64,
    /// Whether the format's switch for showing reasoning is on (Gemini's `includeThoughts`;
    /// the others show what the profile shows).
    show_thoughts: bool,
    /// How long the request's reasoning knobs let the model think.
    thinking: knobs::Thinking,
    /// The request asked for the reasoning to be left out (OpenRouter's `exclude`).
    hide_reasoning: bool,
    /// Prompt tokens read from and written to the prompt cache (Anthropic's `cache_control`).
    cache: anthropic::CacheUse,
    /// The reasoning is to be handed out encrypted (Responses' `include`).
    include_encrypted: bool,
}

/// One request, as the simulator understood it.
struct Job {
    format: WireFormat,
    id: String,
    model: String,
    created: u64,
    stream: bool,
    include_usage: bool,
    profile: SimProfile,
    script: Script,
    prompt_tokens: u64,
    echo: Option<Value>,
    logprobs: bool,
    usage: UsageStyle,
    show_thoughts: bool,
    cache: anthropic::CacheUse,
    include_encrypted: bool,
}

impl Job {
    fn tool_call_id(&self) -> String {
        let prefix = match self.format {
            WireFormat::OpenAi | WireFormat::Responses | WireFormat::Gemini => "call_",
            WireFormat::Anthropic => "toolu_",
        };
        format!("{prefix}{}", self.id_suffix())
    }

    /// The seed-derived end of the response id, for ids and signatures derived from it.
    fn id_suffix(&self) -> &str {
        &self.id[self.id.len().saturating_sub(16)..]
    }

    /// A signature over the reasoning (opaque to clients, as the real ones are).
    fn signature(&self) -> String {
        format!("sig_{}", self.id_suffix())
    }

    /// The tool call's arguments as a JSON value.
    fn tool_input(&self) -> Value {
        self.script
            .tool_arguments()
            .and_then(|a| serde_json::from_str(&a).ok())
            .unwrap_or_else(|| json!({}))
    }

    /// Whether the profile shows reasoning text at all.
    fn shows_thinking(&self) -> bool {
        matches!(
            self.script.style,
            ReasoningStyle::ReasoningContent | ReasoningStyle::Reasoning
        )
    }
}

/// How a simulated upstream reports usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UsageStyle {
    Full,
    Basic,
    None,
    Inconsistent,
}

impl Simulator {
    pub fn new(config: thinkgate_config::Simulator) -> Self {
        Simulator {
            config,
            stats: Arc::new(SimStats::default()),
            counter: TokenCounter::new(Encoding::O200kBase),
            prompt_cache: anthropic::PromptCache::default(),
            calls_by_request: FailFirst::default(),
        }
    }

    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// OpenAI's legacy text completions: the profile's answer (no reasoning) for the prompt,
    /// whole or streamed a word per event, with usage (on a stream when
    /// `stream_options.include_usage` asks); the profile's faults apply (`status`, and
    /// `reset_after` breaking the stream).
    fn completions(&self, headers: &HeaderMap, body: &Bytes) -> Result<Response<Body>, ApiError> {
        let request: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::invalid_request(format!("invalid JSON: {e}")))?;
        let model = request["model"].as_str().unwrap_or("").to_string();
        let mut profile = self.profile_for(&model, headers)?;
        if let Some(status) = profile.faults.status {
            return Ok(fault_response(status));
        }
        let prompt = match &request["prompt"] {
            Value::String(s) => s.clone(),
            Value::Array(items) => items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n"),
            _ => return Err(ApiError::invalid_request("`prompt` is required").with_param("prompt")),
        };
        profile.reasoning = ReasoningStyle::None;
        let mut rng = Rng::new(script::fnv1a(self.config.seed, body));
        let script = Script::new(&profile, &mut rng, request["max_tokens"].as_u64(), None);
        let prompt_tokens = self.counter.count(&prompt) as u64;
        let completion_tokens = script.answer.len() as u64;
        let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                           "total_tokens": prompt_tokens + completion_tokens});
        let id = format!("cmpl-sim{:016x}", rng.next_u64());
        let chunk = |text: &str, finish: Value| {
            json!({"id": id, "object": "text_completion", "created": 0, "model": model,
                   "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]})
        };
        if request["stream"].as_bool() != Some(true) {
            let mut whole = chunk(&script.answer.concat(), script.finish_reason.into());
            whole["usage"] = usage;
            return Ok(json_response(StatusCode::OK, whole));
        }
        let mut frames: Vec<Result<Bytes, BoxError>> = Vec::new();
        let sse = |v: &Value| Ok(Bytes::from(format!("data: {v}\n\n")));
        for (i, word) in script.answer.iter().enumerate() {
            if profile.faults.reset_after.is_some_and(|n| i as u32 >= n) {
                frames.push(Err("simulated connection reset".into()));
                break;
            }
            frames.push(sse(&chunk(word, Value::Null)));
        }
        if !matches!(frames.last(), Some(Err(_))) {
            frames.push(sse(&chunk("", script.finish_reason.into())));
            if request["stream_options"]["include_usage"].as_bool() == Some(true) {
                let mut last = chunk("", Value::Null);
                last["choices"] = json!([]);
                last["usage"] = usage;
                frames.push(sse(&last));
            }
            frames.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
        }
        Ok(body::sse_response(body::stream(
            futures_util::stream::iter(frames),
        )))
    }

    /// OpenAI's embeddings: a deterministic unit vector per input (from its text), of
    /// `dimensions` (default 8) numbers, with the usage a server reports. The faults of the
    /// model's profile (`x-sim-status`) apply as to chat.
    fn embeddings(&self, headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
        let request: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::invalid_request(format!("invalid JSON: {e}")))?;
        let model = request["model"].as_str().unwrap_or("").to_string();
        let profile = self.profile_for(&model, headers)?;
        if let Some(status) = profile.faults.status {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Err(ApiError::new(
                code,
                "server_error",
                format!("simulated upstream fault: {code}"),
            ));
        }
        let inputs: Vec<String> = match &request["input"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                .collect(),
            _ => return Err(ApiError::invalid_request("`input` is required").with_param("input")),
        };
        let dims = request["dimensions"].as_u64().unwrap_or(8).clamp(1, 4096) as usize;
        let mut prompt_tokens = 0;
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, text)| {
                prompt_tokens += self.counter.count(text) as u64;
                json!({"object": "embedding", "index": i, "embedding": unit_vector(text, dims)})
            })
            .collect();
        Ok(json!({
            "object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }))
    }

    /// Answers one request, as the HTTP server and the in-process transport both call it.
    pub async fn handle(&self, req: Request<Full<Bytes>>) -> Response<Body> {
        let (head, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(never) => match never {},
        };
        self.handle_parts(&head.method, head.uri.path(), &head.headers, body)
            .await
    }

    pub async fn handle_parts(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Response<Body> {
        // `/<dialect>/v1/...` imitates that server (`/vllm/v1/chat/completions`, say).
        let (dialect, path) = match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
            Some((first, _)) => match Dialect::parse(first) {
                Some(d) => (d, &path[first.len() + 1..]),
                None => (Dialect::Generic, path),
            },
            None => (Dialect::Generic, path),
        };
        match (method, path) {
            (&Method::POST, "/v1/chat/completions" | "/chat/completions") => {
                self.chat_response(path, dialect, headers, &body, WireFormat::OpenAi)
                    .await
            }
            (&Method::POST, "/v1/responses" | "/responses") => {
                self.chat_response(path, dialect, headers, &body, WireFormat::Responses)
                    .await
            }
            (&Method::POST, "/v1/messages" | "/messages") => {
                self.chat_response(path, dialect, headers, &body, WireFormat::Anthropic)
                    .await
            }
            (&Method::POST, _) if gemini::route(path).is_some() => {
                self.chat_response(path, dialect, headers, &body, WireFormat::Gemini)
                    .await
            }
            (&Method::POST, "/v1/completions" | "/completions") => {
                match self.completions(headers, &body) {
                    Ok(resp) => resp,
                    Err(e) => e.into_response(),
                }
            }
            (&Method::POST, "/v1/embeddings" | "/embeddings") => {
                match self.embeddings(headers, &body) {
                    Ok(v) => json_response(StatusCode::OK, v),
                    Err(e) => e.into_response(),
                }
            }
            (&Method::GET, "/v1/models" | "/models") => {
                let data: Vec<Value> = self
                    .config
                    .models
                    .keys()
                    .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "simulator"}))
                    .collect();
                json_response(StatusCode::OK, json!({"object": "list", "data": data}))
            }
            (&Method::GET, "/sim/stats") => json_response(StatusCode::OK, self.stats.to_json()),
            _ => ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("Invalid URL ({method} {path})"),
            )
            .into_response(),
        }
    }

    /// A chat call in `format`, its error in that API's shape.
    async fn chat_response(
        &self,
        path: &str,
        dialect: Dialect,
        headers: &HeaderMap,
        body: &[u8],
        format: WireFormat,
    ) -> Response<Body> {
        match self.chat(path, dialect, headers, body, format).await {
            Ok(resp) => resp,
            Err(e) => match format {
                WireFormat::OpenAi | WireFormat::Responses => e.into_response(),
                WireFormat::Anthropic => anthropic::error_response(e.status, &e.message),
                WireFormat::Gemini => gemini::error_response(e.status, &e.message),
            },
        }
    }

    async fn chat(
        &self,
        path: &str,
        dialect: Dialect,
        headers: &HeaderMap,
        body: &[u8],
        format: WireFormat,
    ) -> Result<Response<Body>, ApiError> {
        let request: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::invalid_request(format!("invalid JSON: {e}")))?;
        let in_path = gemini::route(path).filter(|_| format == WireFormat::Gemini);
        let model = match in_path {
            Some((model, _)) => model,
            None => request
                .get("model")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::invalid_request("`model` is required").with_param("model")
                })?,
        }
        .to_string();
        let mut profile = self.profile_for(&model, headers)?;
        if let Some(status) = profile.faults.status {
            let mut resp = match format {
                WireFormat::OpenAi | WireFormat::Responses => fault_response(status),
                WireFormat::Anthropic => anthropic::fault_response(status),
                WireFormat::Gemini => gemini::fault_response(status),
            };
            if let Some(v) = headers.get("x-sim-retry-after") {
                resp.headers_mut().insert(header::RETRY_AFTER, v.clone());
            }
            return Ok(resp);
        }
        let request_view = match (format, in_path) {
            (WireFormat::Anthropic, _) => {
                anthropic::parse(&request, headers, &self.counter, &self.prompt_cache)?
            }
            (WireFormat::Gemini, Some((_, stream))) => {
                gemini::parse(&request, stream, &self.counter)?
            }
            (WireFormat::Responses, _) => responses::parse(&request, dialect, &self.counter)?,
            _ => self.openai_request(&request, dialect, &profile)?,
        };
        let RequestView {
            stream,
            include_usage,
            cap,
            tool,
            prompt_tokens,
            show_thoughts,
            thinking,
            hide_reasoning,
            cache,
            include_encrypted,
        } = request_view;
        profile.reasoning_tokens = thinking.tokens(profile.reasoning_tokens);
        let visible = matches!(
            profile.reasoning,
            ReasoningStyle::ReasoningContent | ReasoningStyle::Reasoning
        );
        if visible {
            // The imitated server decides where reasoning shows, or that it does not.
            profile.reasoning = match (hide_reasoning, dialect, dialect.reasoning_field()) {
                (true, _, _) | (false, Dialect::OpenAi, _) => ReasoningStyle::Hidden,
                (false, _, Some(ReasoningField::Reasoning)) => ReasoningStyle::Reasoning,
                (false, _, Some(ReasoningField::ReasoningContent)) => {
                    ReasoningStyle::ReasoningContent
                }
                (false, _, None) => profile.reasoning,
            };
        }
        let seed = script::fnv1a(self.config.seed, body);
        let mut rng = Rng::new(seed);
        let mut script = Script::new(&profile, &mut rng, cap, tool);
        match headers.get("x-sim-finish").and_then(|v| v.to_str().ok()) {
            None => {}
            Some("content_filter") => script.filter(),
            Some(other) => {
                return Err(ApiError::invalid_request(format!(
                    "x-sim-finish `{other}` is unknown (content_filter is the one to force)"
                )))
            }
        }

        self.stats.started.fetch_add(1, Ordering::Relaxed);
        if body.len() <= SimStats::RECENT_BYTES {
            self.stats.remember(&request);
        }
        if let (Some(id), Ok(mut last)) = (
            headers.get("x-request-id").and_then(|v| v.to_str().ok()),
            self.stats.last_request_id.lock(),
        ) {
            id.clone_into(&mut last);
        }
        let job = Job {
            format,
            id: match format {
                WireFormat::OpenAi => format!("chatcmpl-sim{seed:016x}"),
                WireFormat::Responses => format!("resp_sim{seed:016x}"),
                WireFormat::Anthropic => format!("msg_sim{seed:016x}"),
                WireFormat::Gemini => format!("sim{seed:016x}"),
            },
            created: 1_750_000_000 + (seed % 1_000_000),
            model,
            stream,
            include_usage,
            profile,
            script,
            prompt_tokens,
            echo: headers
                .contains_key("x-sim-echo")
                .then_some(request.clone()),
            logprobs: request
                .get("logprobs")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            usage: match headers.get("x-sim-usage").and_then(|v| v.to_str().ok()) {
                None | Some("full") => UsageStyle::Full,
                Some("basic") => UsageStyle::Basic,
                Some("none") => UsageStyle::None,
                Some("inconsistent") => UsageStyle::Inconsistent,
                Some(other) => {
                    return Err(ApiError::invalid_request(format!(
                        "x-sim-usage `{other}` is unknown"
                    )))
                }
            },
            show_thoughts,
            cache,
            include_encrypted,
        };
        let completion = Completion {
            stats: self.stats.clone(),
            done: false,
        };
        if job.stream {
            Ok(self.stream(job, completion))
        } else {
            self.whole(job, completion).await
        }
    }

    /// What the simulator reads from an OpenAI chat request, as `dialect`'s server reads it.
    fn openai_request(
        &self,
        request: &Value,
        dialect: Dialect,
        profile: &SimProfile,
    ) -> Result<RequestView, ApiError> {
        let reasons = profile.reasoning != ReasoningStyle::None && profile.reasoning_tokens > 0;
        let (mut thinking, hide_reasoning) = knobs::openai_format(dialect, request, reasons)?;
        let messages = request.get("messages").and_then(Value::as_array);
        if knobs::continues_closed_thought(dialect, request)? {
            // Continuing an assistant turn whose thought is closed: the answer comes next.
            thinking = knobs::Thinking::Off;
        }
        // One tool round per conversation: once a result is in the history, the model answers.
        let has_tool_result = messages.is_some_and(|list| {
            list.iter()
                .any(|m| m.get("role").and_then(Value::as_str) == Some("tool"))
        });
        Ok(RequestView {
            stream: request
                .get("stream")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            include_usage: request
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            cap: ["max_completion_tokens", "max_tokens"]
                .iter()
                .find_map(|k| request.get(*k).and_then(Value::as_u64)),
            tool: request
                .get("tools")
                .and_then(Value::as_array)
                .and_then(|t| t.first())
                .and_then(|t| t.pointer("/function/name"))
                .and_then(Value::as_str)
                .filter(|_| !has_tool_result)
                .map(str::to_string),
            prompt_tokens: self.prompt_tokens(messages.map(Vec::as_slice).unwrap_or(&[])),
            show_thoughts: true,
            thinking,
            hide_reasoning,
            cache: anthropic::CacheUse::default(),
            include_encrypted: false,
        })
    }

    /// The model's profile with the request's `x-sim-*` overrides applied.
    fn profile_for(&self, model: &str, headers: &HeaderMap) -> Result<SimProfile, ApiError> {
        let mut p = self.config.profile(model).clone();
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let num = |name: &str| -> Result<Option<u64>, ApiError> {
            get(name)
                .map(|v| {
                    v.parse::<u64>().map_err(|_| {
                        ApiError::invalid_request(format!("header {name} must be a number"))
                    })
                })
                .transpose()
        };
        if let Some(s) = num("x-sim-status")? {
            p.faults.status = Some(s.clamp(400, 599) as u16);
        }
        if let Some(n) = num("x-sim-reset-after")? {
            p.faults.reset_after = Some(n as u32);
        }
        if let Some(n) = num("x-sim-stall-after")? {
            p.faults.stall_after = Some(n as u32);
        }
        if let Some(n) = num("x-sim-reasoning-tokens")? {
            p.reasoning_tokens = n.min(1_000_000) as u32;
        }
        if let Some(n) = num("x-sim-answer-tokens")? {
            p.answer_tokens = n.min(1_000_000) as u32;
        }
        if let Some(n) = num("x-sim-ttft-ms")? {
            p.time_to_first_token = Duration::from_millis(n);
        }
        if let Some(n) = num("x-sim-tokens-per-second")? {
            p.tokens_per_second = n as f64;
        }
        if let Some(style) = get("x-sim-reasoning") {
            p.reasoning = ReasoningStyle::parse(style).ok_or_else(|| {
                ApiError::invalid_request(format!("x-sim-reasoning `{style}` is unknown"))
            })?;
        }
        if let (Some(percent), Some(ms)) = (num("x-sim-tail-percent")?, num("x-sim-tail-ms")?) {
            if tail_draw() < percent.min(100) {
                p.time_to_first_token = Duration::from_millis(ms);
            }
        }
        if let Some(n) = num("x-sim-fail-first")? {
            let id = get("x-request-id").unwrap_or("");
            p.faults.status = self
                .calls_by_request
                .fails(id, n)
                .then(|| p.faults.status.unwrap_or(503));
        }
        Ok(p)
    }

    /// Prompt tokens the way OpenAI counts chat: text plus a few tokens per message.
    fn prompt_tokens(&self, messages: &[Value]) -> u64 {
        let mut n = 3;
        for m in messages {
            n += 3;
            match m.get("content") {
                Some(Value::String(s)) => n += self.counter.count(s) as u64,
                Some(Value::Array(parts)) => {
                    for p in parts {
                        if let Some(t) = p.get("text").and_then(Value::as_str) {
                            n += self.counter.count(t) as u64;
                        } else {
                            n += 85; // an image at low detail
                        }
                    }
                }
                _ => {}
            }
        }
        n
    }

    /// Every token the model produced: reasoning, answer and tool-call arguments.
    fn output_tokens(&self, job: &Job) -> u64 {
        let tool_tokens = job
            .script
            .tool_arguments()
            .map_or(0, |a| self.counter.count(&a) as u64);
        (job.script.reasoning.len() + job.script.answer.len()) as u64 + tool_tokens
    }

    /// The usage block as this job's upstream reports it (`Null` when it reports none).
    fn usage(&self, job: &Job) -> Value {
        let reasoning = job.script.reasoning.len() as u64;
        let completion = self.output_tokens(job);
        match job.usage {
            UsageStyle::None => return Value::Null,
            UsageStyle::Basic => {
                return json!({
                    "prompt_tokens": job.prompt_tokens,
                    "completion_tokens": completion,
                    "total_tokens": job.prompt_tokens + completion,
                })
            }
            UsageStyle::Inconsistent => {
                return json!({
                    "prompt_tokens": job.prompt_tokens,
                    "completion_tokens": completion - reasoning,
                    "total_tokens": job.prompt_tokens,
                    "prompt_tokens_details": {"cached_tokens": 3},
                    "completion_tokens_details": {"reasoning_tokens": reasoning}
                })
            }
            UsageStyle::Full => {}
        }
        json!({
            "prompt_tokens": job.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": job.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0
            }
        })
    }

    async fn whole(&self, job: Job, completion: Completion) -> Result<Response<Body>, ApiError> {
        let tokens = job.script.reasoning.len() + job.script.answer.len();
        let mut wait = job.profile.time_to_first_token;
        if job.profile.tokens_per_second > 0.0 {
            wait += Duration::from_secs_f64(tokens as f64 / job.profile.tokens_per_second);
        }
        if job
            .profile
            .faults
            .stall_after
            .is_some_and(|n| (n as usize) < tokens)
        {
            // Dropping this future (the caller gave up) marks the request cancelled.
            std::future::pending::<()>().await;
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        if job
            .profile
            .faults
            .reset_after
            .is_some_and(|n| (n as usize) < tokens)
        {
            let body = body::stream(futures_util::stream::once(async {
                Err::<Bytes, BoxError>("simulated connection reset".into())
            }));
            completion.finish();
            return Ok(Response::new(body));
        }
        let translated = match job.format {
            WireFormat::OpenAi => None,
            WireFormat::Anthropic => Some(anthropic::message(&job, self.output_tokens(&job))),
            WireFormat::Responses => Some(responses::message(&job, self.output_tokens(&job))),
            WireFormat::Gemini => Some(gemini::message(&job, self.output_tokens(&job))),
        };
        if let Some(out) = translated {
            completion.finish();
            return Ok(json_response(StatusCode::OK, out));
        }
        let mut message =
            json!({"role": "assistant", "content": job.script.answer_text(), "refusal": null});
        let reasoning = job.script.reasoning_text();
        match job.script.style {
            ReasoningStyle::ReasoningContent => message["reasoning_content"] = json!(reasoning),
            ReasoningStyle::Reasoning => message["reasoning"] = json!(reasoning),
            ReasoningStyle::Hidden | ReasoningStyle::None => {}
        }
        if let Some((name, _)) = &job.script.tool_call {
            message["content"] = Value::Null;
            message["tool_calls"] = json!([{
                "id": job.tool_call_id(),
                "type": "function",
                "function": {"name": name, "arguments": job.script.tool_arguments()}
            }]);
        }
        let logprobs = if job.logprobs {
            json!({"content": job.script.answer.iter().map(|w| json!({
                "token": w, "logprob": -0.25, "bytes": w.as_bytes(), "top_logprobs": []
            })).collect::<Vec<_>>(), "refusal": null})
        } else {
            Value::Null
        };
        let mut out = json!({
            "id": job.id,
            "object": "chat.completion",
            "created": job.created,
            "model": job.model,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": logprobs,
                "finish_reason": job.script.finish_reason
            }],
            "service_tier": "default",
            "system_fingerprint": "fp_thinkgate_sim"
        });
        let usage = self.usage(&job);
        if !usage.is_null() {
            out["usage"] = usage;
        }
        if let Some(echo) = &job.echo {
            out["sim_echo"] = echo.clone();
        }
        completion.finish();
        Ok(json_response(StatusCode::OK, out))
    }

    fn stream(&self, job: Job, completion: Completion) -> Response<Body> {
        let (tx, rx) = mpsc::channel::<Result<Bytes, BoxError>>(32);
        let frames = match job.format {
            WireFormat::OpenAi => openai_frames(&job, &self.usage(&job)),
            WireFormat::Anthropic => anthropic::frames(&job, self.output_tokens(&job)),
            WireFormat::Responses => responses::frames(&job, self.output_tokens(&job)),
            WireFormat::Gemini => gemini::frames(&job, self.output_tokens(&job)),
        };
        tokio::spawn(run_stream(job, frames, tx, completion));
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        body::sse_response(body::stream(frames))
    }
}

/// The simulator as a tower service over HTTP requests, for `thinkgate simulate` and tests.
pub fn service(
    sim: Arc<Simulator>,
) -> impl tower::Service<
    Request<hyper::body::Incoming>,
    Response = Response<Body>,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |req: Request<hyper::body::Incoming>| {
        let sim = sim.clone();
        async move {
            let (head, body) = req.into_parts();
            let resp = match body.collect().await {
                Ok(b) => {
                    sim.handle_parts(&head.method, head.uri.path(), &head.headers, b.to_bytes())
                        .await
                }
                Err(e) => {
                    ApiError::invalid_request(format!("body unreadable: {e}")).into_response()
                }
            };
            Ok(resp)
        }
    })
}

/// Renders one `chat.completion.chunk` SSE event.
struct ChunkWriter {
    prefix: String,
    usage_null: bool,
}

impl ChunkWriter {
    fn new(job: &Job) -> Self {
        let model = serde_json::to_string(&job.model).unwrap_or_else(|_| "\"\"".into());
        ChunkWriter {
            prefix: format!(
                "data: {{\"id\":\"{}\",\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":{},\"system_fingerprint\":\"fp_thinkgate_sim\",\"choices\":[",
                job.id, job.created, model
            ),
            usage_null: job.include_usage && job.usage != UsageStyle::None,
        }
    }

    fn delta(&self, delta: &str, finish: Option<&str>) -> Bytes {
        let finish = finish.map_or("null".to_string(), |f| format!("\"{f}\""));
        let usage = if self.usage_null {
            ",\"usage\":null"
        } else {
            ""
        };
        Bytes::from(format!(
            "{}{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]{usage}}}\n\n",
            self.prefix
        ))
    }

    fn usage(&self, usage: &Value) -> Bytes {
        Bytes::from(format!("{}],\"usage\":{usage}}}\n\n", self.prefix))
    }
}

/// Sends one frame, or reports that the receiver (the client) is gone.
async fn send(tx: &mpsc::Sender<Result<Bytes, BoxError>>, b: Bytes) -> Result<(), ()> {
    tx.send(Ok(b)).await.map_err(|_| ())
}

/// Waits until `at`, or reports that the receiver went away meanwhile.
async fn wait_until(tx: &mpsc::Sender<Result<Bytes, BoxError>>, at: Instant) -> Result<(), ()> {
    // tokio's timer rounds up to the next millisecond: never sleep for a deadline that passed.
    if at <= Instant::now() {
        return if tx.is_closed() { Err(()) } else { Ok(()) };
    }
    tokio::select! {
        _ = tokio::time::sleep_until(at) => Ok(()),
        _ = tx.closed() => Err(()),
    }
}

async fn run_stream(
    job: Job,
    frames: Frames,
    tx: mpsc::Sender<Result<Bytes, BoxError>>,
    completion: Completion,
) {
    if emit_stream(&job, frames, &tx).await.is_ok() {
        completion.finish();
    }
}

/// A stream's frames: `head` (if any) at the first token, one paced `piece` per token, then
/// `tail`.
struct Frames {
    head: Bytes,
    pieces: Vec<Bytes>,
    /// Tokens produced before the first piece without being shown (hidden reasoning).
    hidden: usize,
    tail: Vec<Bytes>,
}

/// OpenAI `chat.completion.chunk` frames.
fn openai_frames(job: &Job, usage: &Value) -> Frames {
    let w = ChunkWriter::new(job);
    let head = w.delta(
        "{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}",
        None,
    );
    let field = match job.script.style {
        ReasoningStyle::ReasoningContent => Some("reasoning_content"),
        ReasoningStyle::Reasoning => Some("reasoning"),
        ReasoningStyle::Hidden | ReasoningStyle::None => None,
    };
    let mut pieces: Vec<Bytes> = Vec::new();
    if let Some(field) = field {
        for word in &job.script.reasoning {
            pieces.push(w.delta(&format!("{{\"{field}\":\"{word}\"}}"), None));
        }
    }
    let hidden = if field.is_none() {
        job.script.reasoning.len()
    } else {
        0
    };
    for word in &job.script.answer {
        pieces.push(w.delta(&format!("{{\"content\":\"{word}\"}}"), None));
    }
    if let Some((name, args)) = &job.script.tool_call {
        let name = serde_json::to_string(name).unwrap_or_default();
        pieces.push(w.delta(
            &format!(
                "{{\"tool_calls\":[{{\"index\":0,\"id\":\"{}\",\"type\":\"function\",\"function\":{{\"name\":{name},\"arguments\":\"\"}}}}]}}",
                job.tool_call_id()
            ),
            None,
        ));
        for piece in args {
            let piece = serde_json::to_string(piece).unwrap_or_default();
            pieces.push(w.delta(
                &format!(
                    "{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":{piece}}}}}]}}"
                ),
                None,
            ));
        }
    }
    let mut tail = vec![w.delta("{}", Some(job.script.finish_reason))];
    if job.include_usage && !usage.is_null() {
        tail.push(w.usage(usage));
    }
    tail.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Frames {
        head,
        pieces,
        hidden,
        tail,
    }
}

/// Sends a stream's frames at the profile's pace, injecting its faults.
async fn emit_stream(
    job: &Job,
    frames: Frames,
    tx: &mpsc::Sender<Result<Bytes, BoxError>>,
) -> Result<(), ()> {
    let start = Instant::now() + job.profile.time_to_first_token;
    let tps = job.profile.tokens_per_second;
    let at = |i: usize| {
        if tps > 0.0 {
            start + Duration::from_secs_f64(i as f64 / tps)
        } else {
            start
        }
    };
    wait_until(tx, start).await?;
    if !frames.head.is_empty() {
        send(tx, frames.head).await?;
    }
    for (i, piece) in frames.pieces.into_iter().enumerate() {
        if job.profile.faults.reset_after == Some(i as u32) {
            // hyper aborts a connection on a body error without flushing what it buffered;
            // a real reset delivers what was sent before it, so let the writes go out first.
            wait_until(tx, Instant::now() + Duration::from_millis(50)).await?;
            let _ = tx.send(Err("simulated connection reset".into())).await;
            return Err(());
        }
        if job.profile.faults.stall_after == Some(i as u32) {
            tx.closed().await;
            return Err(());
        }
        wait_until(tx, at(i + frames.hidden)).await?;
        send(tx, piece).await?;
    }
    for frame in frames.tail {
        send(tx, frame).await?;
    }
    Ok(())
}

fn fault_response(status: u16) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (kind, code) = match status.as_u16() {
        429 => ("requests", "rate_limit_exceeded"),
        400..=499 => ("invalid_request_error", "simulated_error"),
        _ => ("server_error", "simulated_error"),
    };
    let mut resp = ApiError::new(status, kind, format!("simulated upstream fault: {status}"))
        .with_code(code)
        .into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

fn json_response(status: StatusCode, value: Value) -> Response<Body> {
    body::json_response(status, value.to_string())
}

/// A deterministic unit vector for `text`: the same text always embeds the same.
fn unit_vector(text: &str, dims: usize) -> Vec<f64> {
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x1000_0000_01b3)
    });
    let raw: Vec<f64> = (0..dims)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2000) as f64 / 1000.0 - 1.0
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-9);
    raw.into_iter().map(|x| x / norm).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_is_one_token_per_word_in_both_encodings() {
        for enc in [Encoding::O200kBase, Encoding::Cl100kBase] {
            let c = TokenCounter::new(enc);
            for w in WORDS {
                assert_eq!(c.count(w), 1, "{w:?} in {enc:?}");
            }
            assert_eq!(c.count(&WORDS.concat()), WORDS.len());
        }
    }

    #[tokio::test]
    async fn config_faults_apply_and_headers_override_profiles() {
        let mut cfg = thinkgate_config::Simulator::default();
        let mut failing = SimProfile::default();
        failing.faults.status = Some(503);
        cfg.models.insert("down".into(), failing);
        let sim = Simulator::new(cfg);
        let call = |model: &str, headers: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (k, v) in headers {
                map.insert(*k, HeaderValue::from_static(v));
            }
            let body = Bytes::from(format!(
                "{{\"model\":\"{model}\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}"
            ));
            let sim = &sim;
            async move {
                let resp = sim
                    .handle_parts(&Method::POST, "/v1/chat/completions", &map, body)
                    .await;
                let status = resp.status();
                let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                (status, serde_json::from_slice::<Value>(&bytes).unwrap())
            }
        };
        let (status, body) = call("down", &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "simulated_error");
        let (status, body) = call(
            "up",
            &[("x-sim-reasoning", "hidden"), ("x-sim-answer-tokens", "3")],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let message = &body["choices"][0]["message"];
        assert!(
            message.get("reasoning_content").is_none(),
            "hidden reasoning shows no text"
        );
        assert_eq!(
            body["usage"]["completion_tokens_details"]["reasoning_tokens"],
            64
        );
        assert_eq!(
            message["content"]
                .as_str()
                .unwrap()
                .split_whitespace()
                .count(),
            3
        );
        let (status, _) = call("up", &[("x-sim-status", "429")]).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(sim.stats().to_json()["completed"], 1);
    }

    #[test]
    fn scripts_are_deterministic_and_capped() {
        let p = SimProfile::default();
        let a = Script::new(&p, &mut Rng::new(9), None, None);
        let b = Script::new(&p, &mut Rng::new(9), None, None);
        assert_eq!(a.answer, b.answer);
        let capped = Script::new(&p, &mut Rng::new(9), Some(10), None);
        assert_eq!(capped.reasoning.len() + capped.answer.len(), 10);
        assert_eq!(capped.finish_reason, "length");
    }
}
