//! Trace spans with the OpenTelemetry GenAI semantic conventions: one server span per
//! client request, an internal span per contemplating agent and synthesis, a client span
//! per upstream call (each try, each hedge, each budget-guard follow-up).
//!
//! This layer only builds spans and names their attributes; [`super::otlp`] exports them.
//! A span's context goes upstream as the call's `traceparent`, so the vendor's side of the
//! trace hangs under the call that made it. A [`TraceSpan`] dropped without being ended
//! (a hedge that lost, a call the client walked away from) ends marked `cancelled`.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};

use super::otlp::Exporter;
use super::trace_context;
use crate::canonical::Usage;

/// Attribute names: the GenAI conventions', then thinkgate's own.
pub mod attr {
    pub const OPERATION: &str = "gen_ai.operation.name";
    pub const PROVIDER: &str = "gen_ai.provider.name";
    pub const REQUEST_MODEL: &str = "gen_ai.request.model";
    pub const RESPONSE_MODEL: &str = "gen_ai.response.model";
    pub const MAX_TOKENS: &str = "gen_ai.request.max_tokens";
    pub const FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
    pub const INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    pub const OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    pub const REASONING_TOKENS: &str = "gen_ai.usage.reasoning.output_tokens";
    pub const CACHE_READ_TOKENS: &str = "gen_ai.usage.cache_read.input_tokens";
    pub const CACHE_WRITE_TOKENS: &str = "gen_ai.usage.cache_creation.input_tokens";
    pub const AGENT_NAME: &str = "gen_ai.agent.name";
    pub const INPUT_MESSAGES: &str = "gen_ai.input.messages";
    pub const OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
    pub const ERROR_TYPE: &str = "error.type";
    pub const HTTP_STATUS: &str = "http.response.status_code";
    pub const HTTP_ROUTE: &str = "http.route";
    pub const MODE: &str = "thinkgate.mode";
    pub const DOMAIN: &str = "thinkgate.domain";
    pub const CONFIDENCE: &str = "thinkgate.route.confidence";
    pub const BUDGET: &str = "thinkgate.reasoning.budget";
    pub const ENFORCEMENT: &str = "thinkgate.reasoning.enforcement";
    pub const KEY: &str = "thinkgate.key";
    pub const MODEL: &str = "thinkgate.model";
    pub const PROVIDER_NAME: &str = "thinkgate.provider";
    pub const ATTEMPT: &str = "thinkgate.attempt";
    pub const HEDGE: &str = "thinkgate.hedge";
    pub const CALL: &str = "thinkgate.call";
    pub const REQUEST_ID: &str = "thinkgate.request_id";
    pub const TOKEN_SOURCE: &str = "thinkgate.usage.source";
    pub const CACHE: &str = "thinkgate.cache";
}

/// The `gen_ai.operation.name` of a proxied API, by its endpoint label; `None` for the
/// endpoints that call no model (they are not traced).
pub fn operation(endpoint: &str) -> Option<&'static str> {
    match endpoint {
        "chat_completions" | "messages" | "responses" => Some("chat"),
        "completions" => Some("text_completion"),
        "embeddings" => Some("embeddings"),
        _ => None,
    }
}

/// A model's attribute values, made once per deployment so a span clones an `Arc`, not a
/// string.
#[derive(Debug, Clone)]
pub struct ModelValues {
    /// The model id clients use.
    pub model: StringValue,
    /// The id the vendor knows it by (`gen_ai.request.model` of a call).
    pub upstream_model: StringValue,
    /// `gen_ai.provider.name`: the conventions' well-known vendor name.
    pub provider: StringValue,
    /// The provider's name in the config.
    pub provider_name: StringValue,
}

impl ModelValues {
    pub fn new(model: &thinkgate_config::Model, kind: thinkgate_config::ProviderKind) -> Self {
        use thinkgate_config::ProviderKind;
        let shared = |s: &str| StringValue::from(Arc::<str>::from(s));
        let provider = match kind {
            ProviderKind::OpenAi => shared("openai"),
            ProviderKind::Anthropic => shared("anthropic"),
            ProviderKind::Gemini => shared("gcp.gemini"),
            ProviderKind::Simulator => shared("thinkgate.simulator"),
            // A server that speaks OpenAI's API (vLLM, Ollama, ...): only its name says which.
            ProviderKind::OpenAiCompatible => shared(&model.provider),
        };
        ModelValues {
            model: shared(&model.id),
            upstream_model: shared(&model.upstream_model),
            provider,
            provider_name: shared(&model.provider),
        }
    }
}

/// What a child span needs of its parent: the exporter and the parent's context.
#[derive(Clone)]
pub struct Parent {
    exporter: Arc<Exporter>,
    context: SpanContext,
}

impl Parent {
    /// An upstream call's span (client kind): `chat <upstream model>`.
    pub fn call(
        &self,
        operation: &'static str,
        model: &ModelValues,
        attempt: u32,
        hedge: bool,
    ) -> TraceSpan {
        self.child(SpanKind::Client, || {
            let name = format!("{operation} {}", model.upstream_model.as_str());
            let attributes = [
                KeyValue::new(attr::OPERATION, operation),
                KeyValue::new(attr::PROVIDER, model.provider.clone()),
                KeyValue::new(attr::REQUEST_MODEL, model.upstream_model.clone()),
                KeyValue::new(attr::MODEL, model.model.clone()),
                KeyValue::new(attr::PROVIDER_NAME, model.provider_name.clone()),
                KeyValue::new(attr::ATTEMPT, i64::from(attempt)),
                KeyValue::new(attr::HEDGE, hedge),
            ];
            (name, attributes)
        })
    }

    /// A contemplating agent's or the synthesis's span (internal kind).
    pub fn orchestrated(&self, call: &'static str) -> TraceSpan {
        self.child(SpanKind::Internal, || {
            let attributes = [
                KeyValue::new(attr::OPERATION, "invoke_agent"),
                KeyValue::new(attr::AGENT_NAME, call),
                KeyValue::new(attr::CALL, call),
            ];
            (format!("invoke_agent {call}"), attributes)
        })
    }

    /// A child span. The sampler follows a local parent, so under an unsampled one no span
    /// is made at all: the child passes on its parent's context (a valid W3C parent for the
    /// upstream, flagged unsampled), and costs nothing more.
    fn child<const N: usize>(
        &self,
        kind: SpanKind,
        made: impl FnOnce() -> (String, [KeyValue; N]),
    ) -> TraceSpan {
        if !self.context.is_sampled() {
            return TraceSpan {
                span: None,
                context: self.context.clone(),
                exporter: self.exporter.clone(),
                ended: false,
            };
        }
        let (name, attributes) = made();
        let parent = Context::new().with_remote_span_context(self.context.clone());
        let mut all = Vec::with_capacity(CALL_ATTRIBUTES);
        all.extend(attributes);
        let tracer = self.exporter.tracer();
        let builder = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(all);
        TraceSpan::made(tracer.build_with_context(builder, &parent), &self.exporter)
    }
}

/// Room for every attribute a span gets, so setting them never regrows the list.
const CALL_ATTRIBUTES: usize = 20;
const REQUEST_ATTRIBUTES: usize = 32;

/// One span this proxy owns (or, under an unsampled parent, only the context it passes on).
pub struct TraceSpan {
    span: Option<opentelemetry_sdk::trace::Span>,
    context: SpanContext,
    exporter: Arc<Exporter>,
    ended: bool,
}

impl TraceSpan {
    /// A client request's span (server kind), continuing the client's trace when its
    /// `traceparent` is valid (its sampled flag is followed), a new one otherwise.
    pub fn request(
        exporter: &Arc<Exporter>,
        headers: &HeaderMap,
        operation: &'static str,
        route: &'static str,
    ) -> TraceSpan {
        let remote = trace_context::parent(headers).and_then(|(trace, span, sampled)| {
            let trace = TraceId::from_hex(trace).ok()?;
            let span = SpanId::from_hex(span).ok()?;
            let flags = if sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            };
            Some(SpanContext::new(
                trace,
                span,
                flags,
                true,
                TraceState::default(),
            ))
        });
        // The sampler follows a remote parent's flag: under an unsampled client trace no
        // span is made, only a context of our own to pass upstream.
        if let Some(theirs) = remote.as_ref().filter(|sc| !sc.is_sampled()) {
            use opentelemetry_sdk::trace::IdGenerator;
            let ours = opentelemetry_sdk::trace::RandomIdGenerator::default().new_span_id();
            let context = SpanContext::new(
                theirs.trace_id(),
                ours,
                TraceFlags::default(),
                false,
                TraceState::default(),
            );
            return TraceSpan {
                span: None,
                context,
                exporter: exporter.clone(),
                ended: false,
            };
        }
        let parent = remote.map_or_else(Context::new, |sc| {
            Context::new().with_remote_span_context(sc)
        });
        let tracer = exporter.tracer();
        let mut attributes = Vec::with_capacity(REQUEST_ATTRIBUTES);
        attributes.extend([
            KeyValue::new(attr::OPERATION, operation),
            KeyValue::new(attr::HTTP_ROUTE, route),
        ]);
        let builder = tracer
            .span_builder(operation)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes);
        TraceSpan::made(tracer.build_with_context(builder, &parent), exporter)
    }

    fn made(span: opentelemetry_sdk::trace::Span, exporter: &Arc<Exporter>) -> TraceSpan {
        TraceSpan {
            context: span.span_context().clone(),
            span: Some(span),
            exporter: exporter.clone(),
            ended: false,
        }
    }

    /// Whether this span is sampled (and its attributes worth setting).
    pub fn recording(&self) -> bool {
        self.span.as_ref().is_some_and(|s| s.is_recording())
    }

    /// The span itself, when it records.
    fn live(&mut self) -> Option<&mut opentelemetry_sdk::trace::Span> {
        self.span.as_mut().filter(|s| s.is_recording())
    }

    pub fn exporter(&self) -> &Arc<Exporter> {
        &self.exporter
    }

    /// What a child of this span needs.
    pub fn parent(&self) -> Parent {
        Parent {
            exporter: self.exporter.clone(),
            context: self.context.clone(),
        }
    }

    pub fn trace_id(&self) -> TraceId {
        self.context.trace_id()
    }

    /// This span as the `traceparent` of the request it makes.
    pub fn traceparent(&self) -> Option<HeaderValue> {
        let sc = &self.context;
        if !sc.is_valid() {
            return None;
        }
        let mut text = [0u8; 55];
        text[..3].copy_from_slice(b"00-");
        hex_into(&mut text[3..35], &sc.trace_id().to_bytes());
        text[35] = b'-';
        hex_into(&mut text[36..52], &sc.span_id().to_bytes());
        text[52] = b'-';
        hex_into(&mut text[53..55], &[sc.trace_flags().to_u8()]);
        HeaderValue::from_bytes(&text).ok()
    }

    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        if let Some(span) = self.live() {
            span.set_attribute(KeyValue::new(key, value));
        }
    }

    pub fn set_all(&mut self, attributes: impl IntoIterator<Item = KeyValue>) {
        if let Some(span) = self.live() {
            span.set_attributes(attributes);
        }
    }

    /// What the client asked for: the model it named (the span is named after it, as the
    /// conventions say) and its output cap.
    pub fn requested(&mut self, operation: &'static str, model: &str, max_tokens: Option<u64>) {
        let Some(span) = self.live() else { return };
        span.update_name(format!("{operation} {model}"));
        span.set_attribute(KeyValue::new(attr::REQUEST_MODEL, model.to_string()));
        if let Some(n) = max_tokens {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            span.set_attribute(KeyValue::new(attr::MAX_TOKENS, n));
        }
    }

    /// The prompt or the answer, when the config opts in to content.
    pub fn content(&mut self, key: &'static str, content: impl FnOnce() -> String) {
        if !self.exporter.capture_content() {
            return;
        }
        if let Some(span) = self.live() {
            span.set_attribute(KeyValue::new(key, content()));
        }
    }

    /// The usage of the answer this span made, as the client received it.
    pub fn usage(&mut self, usage: &Usage, source: &'static str) {
        let Some(span) = self.live() else { return };
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        span.set_attributes([
            KeyValue::new(attr::INPUT_TOKENS, int(usage.prompt_tokens)),
            KeyValue::new(attr::OUTPUT_TOKENS, int(usage.completion_tokens)),
            KeyValue::new(attr::TOKEN_SOURCE, source),
        ]);
        let optional = [
            (attr::REASONING_TOKENS, usage.reasoning_tokens),
            (attr::CACHE_READ_TOKENS, usage.cached_tokens),
            (attr::CACHE_WRITE_TOKENS, usage.cache_creation_tokens),
        ];
        for (key, n) in optional {
            if let Some(n) = n {
                span.set_attribute(KeyValue::new(key, int(n)));
            }
        }
    }

    pub fn finish_reason(&mut self, reason: &str) {
        if !self.recording() {
            return;
        }
        // The common reasons without an allocation.
        let reason = match reason {
            "stop" => StringValue::from("stop"),
            "length" => StringValue::from("length"),
            "tool_calls" => StringValue::from("tool_calls"),
            "content_filter" => StringValue::from("content_filter"),
            other => StringValue::from(other.to_string()),
        };
        let reasons = Array::String(vec![reason]);
        self.set(attr::FINISH_REASONS, Value::Array(reasons));
    }

    /// Marks the span failed: `error.type` says how (a status code, `timeout`, ...).
    pub fn fail(&mut self, error_type: impl Into<StringValue>) {
        if let Some(span) = self.live() {
            let error_type = error_type.into();
            span.set_status(Status::error(error_type.as_str().to_string()));
            span.set_attribute(KeyValue::new(attr::ERROR_TYPE, error_type));
        }
    }

    /// Ends the span now, failed as `error_type` says.
    pub fn end_failed(mut self, error_type: impl Into<StringValue>) {
        self.fail(error_type);
        self.end();
    }

    /// Ends the span now.
    pub fn end(mut self) {
        self.ended = true;
        if let Some(span) = self.span.as_mut() {
            span.end();
        }
    }
}

impl Drop for TraceSpan {
    fn drop(&mut self) {
        if !self.ended {
            self.fail("cancelled");
            if let Some(span) = self.span.as_mut() {
                span.end();
            }
        }
    }
}

/// Lowercase hex of `bytes` into `out` (twice as long).
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// The most of a prompt's text a span carries, per part (content only when opted in).
const CONTENT_PART_BYTES: usize = 16 * 1024;

/// The client's OpenAI-shaped `messages` in the conventions' `gen_ai.input.messages` shape:
/// `[{"role", "parts": [{"type": "text", "content"} | {"type": "tool_call", ...} |
/// {"type": "tool_call_response", ...}]}]`, each text part cut to a bound.
pub fn input_messages(messages: &serde_json::Value) -> String {
    use serde_json::{json, Value};
    let text = |s: &str| json!({"type": "text", "content": bounded(s)});
    let parts_of = |m: &Value| -> Vec<Value> {
        let mut parts = Vec::new();
        if m["role"] == "tool" {
            let response = m["content"].as_str().map(bounded).unwrap_or_default();
            parts.push(json!({"type": "tool_call_response", "id": m["tool_call_id"], "response": response}));
            return parts;
        }
        match &m["content"] {
            Value::String(s) => parts.push(text(s)),
            Value::Array(items) => {
                for item in items {
                    match item["text"].as_str() {
                        Some(s) => parts.push(text(s)),
                        // An image or file: its kind, never its bytes.
                        None => parts.push(json!({"type": item["type"]})),
                    }
                }
            }
            _ => {}
        }
        for call in m["tool_calls"].as_array().into_iter().flatten() {
            let f = &call["function"];
            let arguments = f["arguments"].as_str().map(bounded).unwrap_or_default();
            parts.push(json!({"type": "tool_call", "id": call["id"], "name": f["name"], "arguments": arguments}));
        }
        parts
    };
    let out: Vec<Value> = messages
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| json!({"role": m["role"], "parts": parts_of(m)}))
        .collect();
    Value::Array(out).to_string()
}

/// An answer in the conventions' `gen_ai.output.messages` shape.
pub fn output_messages(answer: &str, finish_reason: Option<&str>) -> String {
    serde_json::json!([{
        "role": "assistant",
        "parts": [{"type": "text", "content": answer}],
        "finish_reason": finish_reason,
    }])
    .to_string()
}

/// `s` cut to [`CONTENT_PART_BYTES`] at a character boundary.
fn bounded(s: &str) -> String {
    let mut end = s.len().min(CONTENT_PART_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// An HTTP status as `error.type`, as the conventions write it; `None` for a success.
pub fn status_error(status: u16) -> Option<StringValue> {
    (status >= 400).then(|| StringValue::from(status.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_take_the_conventions_shape_and_never_an_images_bytes() {
        let messages = json!([
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{\"q\":1}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "a cat"},
        ]);
        let out: serde_json::Value = serde_json::from_str(&input_messages(&messages)).unwrap();
        assert_eq!(
            out,
            json!([
                {"role": "user", "parts": [
                    {"type": "text", "content": "what is this?"}, {"type": "image_url"}]},
                {"role": "assistant", "parts": [
                    {"type": "tool_call", "id": "c1", "name": "look", "arguments": "{\"q\":1}"}]},
                {"role": "tool", "parts": [
                    {"type": "tool_call_response", "id": "c1", "response": "a cat"}]},
            ])
        );
        assert!(!input_messages(&messages).contains("AAAA"));
        // Long text is cut at a character boundary.
        let long = json!([{"role": "user", "content": "é".repeat(CONTENT_PART_BYTES)}]);
        let out: serde_json::Value = serde_json::from_str(&input_messages(&long)).unwrap();
        let part = out[0]["parts"][0]["content"].as_str().unwrap();
        assert!(part.len() <= CONTENT_PART_BYTES && part.len() >= CONTENT_PART_BYTES - 1);
    }

    #[test]
    fn traceparent_bytes_are_lowercase_hex() {
        let mut out = [0u8; 4];
        hex_into(&mut out, &[0xab, 0x0f]);
        assert_eq!(&out, b"ab0f");
    }
}
