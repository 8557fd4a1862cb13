//! Providers: one [`Upstream`] per configured provider, built once when the config loads.
//!
//! An upstream owns its transport (a pooled HTTP client, or the in-process simulator), its
//! precomputed auth header and URL, and its timeouts. Each wire format lives in its own
//! file: [`openai`] (relayed as is), [`responses`], [`anthropic`] and [`gemini`] (translated
//! both ways, with what they share in [`convert`]; a client of the same API has its body
//! sent as it wrote it). [`Decoder`] is the one entry egress uses to read a
//! translated response.

pub mod anthropic;
pub mod convert;
mod driven;
pub mod gemini;
pub mod knobs;
pub mod openai;
pub mod responses;
pub mod transport;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
pub use thinkgate_config::WireFormat;
use thinkgate_config::{
    ApiKey, BreakerPolicy, Dialect, HeaderPattern, Provider, ProviderKind, RetryBudget, RetryPolicy,
};

use crate::resilience::RetryBudgetState;

use crate::canonical::Budget;
use crate::canonical::{ChatRequest, Delta};
pub use knobs::{Control, Native};
use serde_json::{Map, Value};
use thinkgate_config::Modes;

use crate::body::Body;
use crate::error::ApiError;
pub use transport::{
    set_serving_thread, set_serving_threads, HttpClients, LocalFactory, LocalUpstream, Transport,
    TransportError,
};

/// The follow-up call that turns a stopped response into an answer.
#[derive(Debug, Clone, Copy)]
pub enum FollowUp<'a> {
    /// Continue the same answer after the thought so far, closed (open models).
    Force { reasoning: &'a str },
    /// Ask again with thinking off and the thought so far as context.
    Cut { reasoning: &'a str },
    /// Ask again with a lower effort (hidden reasoning that left no room for the answer).
    Retry,
}

/// What a cut follow-up asks of the model.
const CUT_INSTRUCTION: &str = "Time for thinking is up. Using the reasoning above, give your final answer now, directly, without further deliberation.";

fn to_bytes(body: Map<String, Value>) -> Bytes {
    Bytes::from(Value::Object(body).to_string())
}

/// A configured provider, ready to take requests.
pub struct Upstream {
    pub name: String,
    pub kind: ProviderKind,
    pub format: WireFormat,
    pub dialect: Dialect,
    default_max_tokens: u64,
    transport: Transport,
    /// The chat endpoint; Gemini's has the model in it and is built per request from `base`.
    chat_uri: Uri,
    base: String,
    auth: Option<HeaderValue>,
    /// Why this upstream cannot be used (its key's variable is not set), if so.
    pub unusable: Option<String>,
    pub response_timeout: Duration,
    pub stream_idle_timeout: Duration,
    forward_headers: Vec<HeaderPattern>,
    /// The provider's `max_concurrent_calls`, as slots each call holds until it ends.
    pub concurrency: Option<Arc<tokio::sync::Semaphore>>,
    /// When a failed call is tried again, and how many retries recent traffic allows.
    pub retry: RetryPolicy,
    pub retry_budget: RetryBudgetState,
    /// The breaker policy of each model (deployment) on this provider.
    pub breaker: BreakerPolicy,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("chat_uri", &self.chat_uri)
            .finish_non_exhaustive()
    }
}

/// Where an upstream call comes from: the client request's id and headers (some are
/// forwarded, by the provider's patterns), and the proxy's span of the call when it traces.
#[derive(Clone, Copy)]
pub struct Origin<'a> {
    pub request_id: &'a HeaderValue,
    pub client_headers: &'a HeaderMap,
    /// The call span's own `traceparent`, sent in place of the client's.
    pub traceparent: Option<&'a HeaderValue>,
}

/// Why an upstream call produced no response.
#[derive(Debug)]
pub enum UpstreamError {
    Unusable(String),
    Connect(String),
    Timeout(Duration),
    Broken(String),
}

impl UpstreamError {
    pub fn into_api(self, provider: &str) -> ApiError {
        match self {
            UpstreamError::Unusable(why) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_error",
                format!("provider `{provider}` cannot be used: {why}"),
            )
            .with_code("upstream_unavailable"),
            UpstreamError::Connect(why) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                format!("provider `{provider}` is unreachable: {why}"),
            )
            .with_code("upstream_unreachable"),
            UpstreamError::Timeout(after) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                format!(
                    "provider `{provider}` did not respond within {}",
                    humanize(after)
                ),
            )
            .with_code("upstream_timeout"),
            UpstreamError::Broken(why) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                format!("provider `{provider}` failed: {why}"),
            )
            .with_code("upstream_error"),
        }
    }
}

pub fn humanize(d: Duration) -> String {
    if d.as_secs() >= 1 && d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl Upstream {
    /// Builds the upstream for `provider`. `local` serves providers of kind `simulator`; without
    /// one such a provider is unusable.
    pub fn build(
        provider: &Provider,
        retry_budget: &RetryBudget,
        local: Option<&Arc<dyn LocalUpstream>>,
    ) -> Result<Upstream, String> {
        let path = match provider.format {
            WireFormat::OpenAi => "chat/completions",
            WireFormat::Responses => "responses",
            WireFormat::Anthropic => "messages",
            WireFormat::Gemini => "models",
        };
        let mut unusable = None;
        let (transport, base) = match (provider.kind, local) {
            (ProviderKind::Simulator, local) => (
                match local {
                    Some(local) => Transport::InProcess(local.clone()),
                    None => {
                        unusable =
                            Some("no in-process simulator is linked into this program".to_string());
                        Transport::Http(Arc::new(HttpClients::new(provider.connect_timeout, 1)))
                    }
                },
                match (provider.format, provider.dialect) {
                    (WireFormat::Gemini, _) => "http://simulator.invalid/v1beta".to_string(),
                    (_, Dialect::Generic) => "http://simulator.invalid/v1".to_string(),
                    // The simulator takes the server to imitate from the path.
                    (_, dialect) => format!("http://simulator.invalid/{}/v1", dialect.as_str()),
                },
            ),
            (_, _) => {
                let clients = Arc::new(HttpClients::new(
                    provider.connect_timeout,
                    provider.http2_connections,
                ));
                (Transport::Http(clients), provider.base_url.clone())
            }
        };
        let chat_uri: Uri = format!("{base}/{path}")
            .parse()
            .map_err(|e| format!("base_url `{base}` is not a URI: {e}"))?;
        let (auth, key_unusable) = match &provider.api_key {
            ApiKey::None => (None, None),
            ApiKey::FromEnv { var, value: None } => (
                None,
                Some(format!("the environment variable {var} is not set")),
            ),
            ApiKey::FromEnv {
                var,
                value: Some(secret),
            } => {
                let value = match provider.format {
                    WireFormat::OpenAi | WireFormat::Responses => {
                        format!("Bearer {}", secret.expose())
                    }
                    WireFormat::Anthropic | WireFormat::Gemini => secret.expose().to_string(),
                };
                let mut v = HeaderValue::from_str(&value)
                    .map_err(|_| format!("the value of {var} is not a valid header value"))?;
                v.set_sensitive(true);
                (Some(v), None)
            }
        };
        Ok(Upstream {
            name: provider.name.clone(),
            kind: provider.kind,
            format: provider.format,
            dialect: provider.dialect,
            default_max_tokens: provider.default_max_tokens,
            transport,
            chat_uri,
            base,
            auth,
            unusable: unusable.or(key_unusable),
            response_timeout: provider.response_timeout,
            stream_idle_timeout: provider.stream_idle_timeout,
            forward_headers: provider.forward_headers.clone(),
            concurrency: provider
                .max_concurrent_calls
                .map(|n| Arc::new(tokio::sync::Semaphore::new(n))),
            retry: provider.retry.clone(),
            retry_budget: RetryBudgetState::new(retry_budget.clone(), std::time::Instant::now()),
            breaker: provider.breaker.clone(),
        })
    }

    /// The request in this upstream's wire format, or a 400 for what it cannot do.
    fn translate(
        &self,
        req: &ChatRequest,
        model: &thinkgate_config::Model,
    ) -> Result<Map<String, Value>, ApiError> {
        match self.format {
            WireFormat::OpenAi => Ok(openai::request_body(
                req,
                &model.upstream_model,
                self.dialect,
            )),
            WireFormat::Responses => {
                match req.native.as_ref().and_then(|n| n.in_format(self.format)) {
                    Some(native) => responses::native_body(
                        &native.body,
                        &native.history,
                        &model.upstream_model,
                        req.stream,
                    ),
                    None => responses::request_body(req, &model.upstream_model),
                }
            }
            WireFormat::Anthropic => {
                match req.native.as_ref().and_then(|n| n.in_format(self.format)) {
                    Some(native) => Ok(anthropic::native_body(
                        &native.body,
                        &model.upstream_model,
                        req.stream,
                    )),
                    None => {
                        anthropic::request_body(req, &model.upstream_model, self.default_max_tokens)
                    }
                }
            }
            WireFormat::Gemini => gemini::request_body(req, model.reasoning),
        }
    }

    /// The request body, with the budget (if one applies) set in the upstream's own knob;
    /// the [`Control`] says how the budget is made to hold.
    pub fn body(
        &self,
        req: &ChatRequest,
        model: &thinkgate_config::Model,
        budget: Option<(&Budget, &Modes)>,
    ) -> Result<(Bytes, Option<Control>), ApiError> {
        let knob = |body: &mut Map<String, Value>| {
            budget.and_then(|(budget, modes)| {
                knobs::apply(body, self.format, self.dialect, model, budget, modes)
            })
        };
        if self.format == WireFormat::OpenAi {
            // The conversation is written from the client's body, not copied first.
            let (mut head, messages) =
                openai::request_parts(req, &model.upstream_model, self.dialect);
            let control = knob(&mut head);
            let bytes = openai::serialize(&req.body, &head, messages.as_deref());
            return Ok((Bytes::from(bytes), control));
        }
        let mut body = self.translate(req, model)?;
        let control = knob(&mut body);
        Ok((to_bytes(body), control))
    }

    /// The body of the call that turns a stopped response into an answer, or why there is
    /// none for this model.
    pub fn follow_up_body(
        &self,
        req: &ChatRequest,
        model: &thinkgate_config::Model,
        budget: &Budget,
        modes: &Modes,
        follow_up: FollowUp<'_>,
    ) -> Result<Bytes, String> {
        match follow_up {
            FollowUp::Force { reasoning } => self.force_body(req, model, budget, reasoning),
            FollowUp::Cut { reasoning } => self.cut_body(req, model, budget, modes, reasoning),
            FollowUp::Retry => self.retry_body(req, model, budget, modes),
        }
    }

    /// Continues the same answer after the thought so far, closed with the stop phrase and
    /// the end-of-thinking delimiter, as the start of the assistant's turn.
    fn force_body(
        &self,
        req: &ChatRequest,
        model: &thinkgate_config::Model,
        budget: &Budget,
        reasoning: &str,
    ) -> Result<Bytes, String> {
        if self.format != WireFormat::OpenAi {
            return Err("budget forcing needs an OpenAI-format server".into());
        }
        let t = &model.thinking;
        let mut turn = Map::new();
        turn.insert("role".into(), "assistant".into());
        if self.dialect == Dialect::Deepseek {
            // DeepSeek continues a prefix turn (`prefix: true`) after its reasoning.
            turn.insert("content".into(), "".into());
            let text = format!("{reasoning}{}", t.stop_phrase);
            turn.insert("reasoning_content".into(), text.into());
            turn.insert("prefix".into(), true.into());
        } else {
            let text = format!(
                "{}{reasoning}{}{}",
                t.think_start, t.stop_phrase, t.think_end
            );
            turn.insert("content".into(), text.into());
        }
        let next = req.with_appended(vec![Value::Object(turn)]);
        let mut body = self.translate(&next, model).map_err(|e| e.message)?;
        knobs::strip_client_knobs(&mut body);
        body.remove("max_completion_tokens");
        body.insert("max_tokens".into(), budget.reserve.into());
        if matches!(
            self.dialect,
            Dialect::Vllm | Dialect::Sglang | Dialect::Generic
        ) {
            body.insert("continue_final_message".into(), true.into());
            body.insert("add_generation_prompt".into(), false.into());
        }
        Ok(to_bytes(body))
    }

    /// Asks again with thinking off and the thought so far as context.
    fn cut_body(
        &self,
        req: &ChatRequest,
        model: &thinkgate_config::Model,
        budget: &Budget,
        modes: &Modes,
        reasoning: &str,
    ) -> Result<Bytes, String> {
        let mut turns = Vec::new();
        if !reasoning.trim().is_empty() {
            let thought = format!("(My reasoning so far.) {}", reasoning.trim());
            turns.push(serde_json::json!({"role": "assistant", "content": thought}));
        }
        turns.push(serde_json::json!({"role": "user", "content": CUT_INSTRUCTION}));
        let next = req.with_appended(turns);
        let off = Budget {
            off: true,
            ..budget.clone()
        };
        let (body, control) = self
            .body(&next, model, Some((&off, modes)))
            .map_err(|e| e.message)?;
        match control.map(|c| c.native) {
            Some(knobs::Native::Off) => Ok(body),
            _ => Err(format!(
                "thinking cannot be turned off for model `{}`",
                model.id
            )),
        }
    }

    /// Asks again with a quarter of the thinking; what it frees goes to the answer, so the
    /// output cap stays what the policy allowed.
    fn retry_body(
        &self,
        req: &ChatRequest,
        model: &thinkgate_config::Model,
        budget: &Budget,
        modes: &Modes,
    ) -> Result<Bytes, String> {
        let reasoning = (budget.reasoning / 4).max(1);
        let lower = Budget {
            reasoning,
            reserve: budget.reserve + budget.reasoning.saturating_sub(reasoning),
            ..budget.clone()
        };
        let knob = |b: &Budget| -> Result<_, String> {
            let (body, control) = self
                .body(req, model, Some((b, modes)))
                .map_err(|e| e.message)?;
            Ok((body, control.map(|c| c.native)))
        };
        let (body, native) = knob(&lower)?;
        if native != knob(budget)?.1 {
            return Ok(body);
        }
        // Already the lowest level the table has: the lower effort is none.
        Ok(knob(&Budget { off: true, ..lower })?.0)
    }

    /// Where a request for `upstream_model` goes.
    fn chat_uri(&self, upstream_model: &str, stream: bool) -> Result<Uri, UpstreamError> {
        if self.format != WireFormat::Gemini {
            return Ok(self.chat_uri.clone());
        }
        format!("{}/{}", self.base, gemini::path(upstream_model, stream))
            .parse()
            .map_err(|_| {
                UpstreamError::Broken(format!(
                    "model name `{upstream_model}` does not fit in a URL"
                ))
            })
    }

    /// Sends a chat request body and waits for the response head, up to `timeout`.
    pub async fn send(
        &self,
        body: Bytes,
        upstream_model: &str,
        stream: bool,
        origin: Origin<'_>,
        timeout: Duration,
    ) -> Result<Response<Body>, UpstreamError> {
        let uri = self.chat_uri(upstream_model, stream)?;
        self.send_to(uri, body, stream, origin, timeout).await
    }

    /// Whether this upstream serves OpenAI's other endpoints (`/embeddings`,
    /// `/completions`): servers of either OpenAI format do.
    pub fn speaks_openai(&self) -> bool {
        self.format.is_openai()
    }

    /// Sends a body to one of OpenAI's other endpoints (`path` under the base URL, e.g.
    /// `embeddings`).
    pub async fn send_openai(
        &self,
        path: &str,
        body: Bytes,
        stream: bool,
        origin: Origin<'_>,
        timeout: Duration,
    ) -> Result<Response<Body>, UpstreamError> {
        let uri = format!("{}/{path}", self.base)
            .parse()
            .map_err(|_| UpstreamError::Broken(format!("its base_url has no `{path}` URL")))?;
        self.send_to(uri, body, stream, origin, timeout).await
    }

    async fn send_to(
        &self,
        uri: Uri,
        body: Bytes,
        stream: bool,
        origin: Origin<'_>,
        timeout: Duration,
    ) -> Result<Response<Body>, UpstreamError> {
        let Origin {
            request_id,
            client_headers,
            traceparent,
        } = origin;
        if let Some(why) = &self.unusable {
            return Err(UpstreamError::Unusable(why.clone()));
        }
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        for (name, value) in client_headers {
            if !never_forwarded(name.as_str())
                && self
                    .forward_headers
                    .iter()
                    .any(|p| p.matches(name.as_str()))
            {
                headers.append(name.clone(), value.clone());
            }
        }
        crate::telemetry::trace_context::propagate(client_headers, traceparent, headers);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static(if stream {
                "text/event-stream"
            } else {
                "application/json"
            }),
        );
        headers.insert("x-request-id", request_id.clone());
        match self.format {
            WireFormat::OpenAi | WireFormat::Responses => {
                if let Some(auth) = &self.auth {
                    headers.insert(header::AUTHORIZATION, auth.clone());
                }
            }
            WireFormat::Anthropic => {
                if let Some(auth) = &self.auth {
                    headers.insert("x-api-key", auth.clone());
                }
                // An Anthropic client's version and betas go as it sent them (Claude Code's
                // betas turn on features its requests use); others get the adapter's version.
                let version = client_headers
                    .get("anthropic-version")
                    .cloned()
                    .unwrap_or(HeaderValue::from_static(anthropic::VERSION));
                headers.insert("anthropic-version", version);
                if let Some(beta) = client_headers.get("anthropic-beta") {
                    headers.insert("anthropic-beta", beta.clone());
                }
            }
            WireFormat::Gemini => {
                if let Some(auth) = &self.auth {
                    headers.insert("x-goog-api-key", auth.clone());
                }
            }
        }
        match tokio::time::timeout(timeout, self.transport.send(req)).await {
            Err(_) => Err(UpstreamError::Timeout(timeout)),
            Ok(Err(TransportError::Connect(why))) => Err(UpstreamError::Connect(why)),
            Ok(Err(TransportError::Other(why))) => Err(UpstreamError::Broken(why)),
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

/// Headers no `forward_headers` pattern sends upstream: the client's credentials for the
/// proxy (its key must never reach a vendor) and what describes the client's own connection
/// or body.
const NEVER_FORWARDED: [&str; 13] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
];

/// Whether `name` (lower case, as `http` stores names) is never forwarded.
pub fn never_forwarded(name: &str) -> bool {
    NEVER_FORWARDED.contains(&name) || name.starts_with("proxy-")
}

/// An upstream's own error, passed to the client with its status: its body as is when it is
/// already OpenAI-shaped, wrapped in that shape otherwise.
pub async fn error_response(
    provider: &str,
    format: WireFormat,
    resp: Response<Body>,
) -> ApiErrorOrRaw {
    let status = resp.status();
    let body = match crate::body::collect_limited(resp.into_body(), 1 << 20).await {
        Ok(b) => b,
        Err(e) => {
            return ApiErrorOrRaw::Api(
                UpstreamError::Broken(format!(
                    "returned {status} and its error body could not be read: {e}"
                ))
                .into_api(provider),
            )
        }
    };
    let vendor_error = match format {
        WireFormat::OpenAi | WireFormat::Responses => None,
        WireFormat::Anthropic => anthropic::error_body(&body).map(|(k, m)| (upstream_kind(&k), m)),
        WireFormat::Gemini => gemini::error_body(&body),
    };
    if let Some((kind, message)) = vendor_error {
        return ApiErrorOrRaw::Api(ApiError {
            status,
            message: format!("provider `{provider}`: {message}"),
            kind,
            param: None,
            code: Some(kind),
        });
    }
    let openai_shaped = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .is_some_and(|v| v.get("error").is_some_and(|e| e.is_object()));
    if openai_shaped {
        return ApiErrorOrRaw::Raw(status, body);
    }
    let text = String::from_utf8_lossy(&body);
    let text: String = text.chars().take(500).collect();
    ApiErrorOrRaw::Api(
        ApiError::new(
            status,
            "upstream_error",
            format!("provider `{provider}` returned {status}: {}", text.trim()),
        )
        .with_code("upstream_error"),
    )
}

/// An error to send: one the proxy wrote, or an upstream's own OpenAI-shaped body.
pub enum ApiErrorOrRaw {
    Api(ApiError),
    Raw(StatusCode, Bytes),
}

/// A vendor's error type as a static label (the set is bounded; unknown types are generic).
pub fn upstream_kind(kind: &str) -> &'static str {
    match kind {
        "invalid_request_error" => "invalid_request_error",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "not_found_error" => "not_found_error",
        "request_too_large" => "request_too_large",
        "rate_limit_error" => "rate_limit_error",
        "overloaded_error" => "overloaded_error",
        "api_error" => "api_error",
        "timeout_error" => "timeout_error",
        _ => "upstream_error",
    }
}

/// Reads a translated upstream's response (whole or streamed) as canonical deltas.
pub enum Decoder {
    OpenAi(openai::StreamDecoder),
    Responses(responses::StreamDecoder),
    Anthropic(anthropic::StreamDecoder),
    Gemini(gemini::Decoder),
}

impl Decoder {
    /// The decoder for `format`; `None` for OpenAI, which is relayed as is.
    pub fn for_format(format: WireFormat) -> Option<Decoder> {
        match format {
            WireFormat::OpenAi => None,
            WireFormat::Responses => Some(Decoder::Responses(Default::default())),
            WireFormat::Anthropic => Some(Decoder::Anthropic(Default::default())),
            WireFormat::Gemini => Some(Decoder::Gemini(Default::default())),
        }
    }

    /// A decoder for any format's stream, OpenAI's included, for responses the proxy
    /// rebuilds from deltas.
    pub fn canonical(format: WireFormat) -> Decoder {
        Decoder::for_format(format).unwrap_or(Decoder::OpenAi(Default::default()))
    }

    /// A whole (non-streamed) response.
    pub fn whole(&mut self, bytes: &[u8]) -> Result<Vec<Delta>, String> {
        match self {
            Decoder::OpenAi(d) => d.event(&String::from_utf8_lossy(bytes)),
            Decoder::Responses(_) => responses::decode_response(bytes),
            Decoder::Anthropic(_) => anthropic::decode_message(bytes),
            Decoder::Gemini(d) => d.response(bytes),
        }
    }

    /// One SSE event of a stream (`name` is its `event:` line).
    pub fn event(&mut self, name: &str, data: &str) -> Result<Vec<Delta>, String> {
        match self {
            Decoder::OpenAi(d) => d.event(data),
            Decoder::Responses(d) => d.event(name, data),
            Decoder::Anthropic(d) => d.event(name, data),
            Decoder::Gemini(d) => d.response(data.as_bytes()),
        }
    }

    /// Whether the stream said it is complete (Gemini's ends with the connection instead).
    pub fn done(&self) -> bool {
        match self {
            Decoder::OpenAi(d) => d.done,
            Decoder::Responses(d) => d.done,
            Decoder::Anthropic(d) => d.done,
            Decoder::Gemini(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::ModeSource;
    use thinkgate_config::{Config, Mode};

    fn openai_upstream() -> (Upstream, Config) {
        let text = "auth = \"none\"\n[routing]\ndefault_model = \"m\"\n[providers.p]\nkind = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:9/v1\"\ndialect = \"openai\"\n[models.m]\nprovider = \"p\"\ncontext_window = 1000\ncapabilities = [\"reasoning\"]\n";
        let cfg = Config::parse(text, std::path::Path::new("t.toml"), &|_| None).unwrap();
        (
            Upstream::build(&cfg.providers[0], &cfg.server.retry_budget, None).unwrap(),
            cfg,
        )
    }

    #[test]
    fn a_retry_follow_up_under_a_zero_budget_does_not_underflow() {
        let (up, cfg) = openai_upstream();
        let req = crate::ingress::parse_chat(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        let budget = Budget {
            mode: Mode::Thinking,
            source: ModeSource::Default,
            off: false,
            reasoning: 0,
            reserve: 1,
            hint: false,
            clamped_from: None,
            exclude: false,
            notice: None,
            learned: false,
        };
        let body = up
            .follow_up_body(&req, &cfg.models[0], &budget, &cfg.modes, FollowUp::Retry)
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            v["max_completion_tokens"].as_u64().is_some_and(|n| n >= 1),
            "{v}"
        );
    }
}
