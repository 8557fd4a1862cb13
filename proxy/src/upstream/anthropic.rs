//! Anthropic's native Messages API (`POST /v1/messages`).
//!
//! Requests: the client's OpenAI chat request is translated — system and developer turns
//! become `system`; user, assistant and tool turns become alternating `user`/`assistant`
//! messages of `text`, `image`, `tool_use` and `tool_result` blocks; OpenAI tools, tool choice
//! and stop sequences map to theirs. What Anthropic cannot do (`n > 1`, logprobs) is a 400,
//! never silently dropped.
//!
//! Thinking blocks reach the client as reasoning text plus `thinking_blocks` (the block with
//! its signature, or a `redacted_thinking` block) on the message or delta — the name LiteLLM
//! clients already use — and an assistant turn's `thinking_blocks` go back first in its
//! content, unchanged, as Anthropic requires in tool-use loops.
//!
//! Responses: a whole `message` and the streamed events (`message_start`,
//! `content_block_start/delta/stop` with `text_delta`, `thinking_delta`, `signature_delta`,
//! `input_json_delta`, `message_delta`, `message_stop`, `ping`, `error`) become canonical
//! [`Delta`]s.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::convert::{self, str_field, unsupported};
use crate::canonical::{ChatRequest, Content, Delta, Message, Usage};
use crate::error::ApiError;

pub const VERSION: &str = "2023-06-01";

/// OpenAI request fields Anthropic has no equivalent for; sending them is a 400.
const UNSUPPORTED: [(&str, &str); 3] = [
    (
        "logprobs",
        "Anthropic models do not return log probabilities",
    ),
    (
        "top_logprobs",
        "Anthropic models do not return log probabilities",
    ),
    ("audio", "Anthropic models do not produce audio"),
];

/// Translates an OpenAI chat request into a Messages request for `upstream_model`.
pub fn request_body(
    req: &ChatRequest,
    upstream_model: &str,
    default_max_tokens: u64,
) -> Result<Map<String, Value>, ApiError> {
    let body = &req.body;
    convert::refuse_choices(body, "Anthropic")?;
    convert::refuse_fields(body, &UNSUPPORTED)?;
    if let Some(format) = body
        .get("response_format")
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
    {
        if format != "text" {
            return Err(unsupported(
                "response_format",
                "Anthropic has no response_format; describe the JSON you want in the prompt or use a tool",
            ));
        }
    }

    let mut out = Map::new();
    out.insert("model".into(), upstream_model.into());
    let max_tokens = convert::max_tokens(body).unwrap_or(default_max_tokens);
    out.insert("max_tokens".into(), max_tokens.into());

    let history = req.messages();
    let system: Vec<String> = history
        .iter()
        .filter(|m| m.role == "system" || m.role == "developer")
        .map(|m| m.text().into_owned())
        .filter(|t| !t.is_empty())
        .collect();
    if !system.is_empty() {
        out.insert("system".into(), system.join("\n\n").into());
    }
    out.insert("messages".into(), Value::Array(messages(&history)?));

    let stop = convert::stop_list(body);
    if !stop.is_empty() {
        out.insert("stop_sequences".into(), Value::Array(stop));
    }
    for field in ["temperature", "top_p"] {
        if let Some(v) = body.get(field).filter(|v| !v.is_null()) {
            out.insert(field.into(), v.clone());
        }
    }
    // Anthropic's own `thinking` object, sent by clients through the SDK's extra body.
    if let Some(thinking) = body.get("thinking").filter(|t| t.is_object()) {
        out.insert("thinking".into(), thinking.clone());
    }
    if let Some(user) = body.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    if let Some(tools) = convert::tools(body) {
        out.insert(
            "tools".into(),
            Value::Array(tools.iter().filter_map(tool).collect()),
        );
        if let Some(choice) = tool_choice(body) {
            out.insert("tool_choice".into(), choice);
        }
    }
    if req.stream {
        out.insert("stream".into(), true.into());
    }
    Ok(out)
}

/// A Messages body from an Anthropic client, as it sent it: only the model (the configured
/// upstream name) and `stream` (the proxy streams whenever it watches the reasoning) are
/// set here, the budget's knob after. Everything else — `cache_control`, system blocks,
/// `context_management`, server tools — is the client's.
pub fn native_body(
    native: &Map<String, Value>,
    upstream_model: &str,
    stream: bool,
) -> Map<String, Value> {
    convert::as_sent(native, upstream_model, stream)
}

/// OpenAI's function tool → Anthropic's tool.
fn tool(t: &Value) -> Option<Value> {
    let f = t.get("function")?;
    let mut out = Map::new();
    out.insert("name".into(), f.get("name")?.clone());
    if let Some(d) = f.get("description") {
        out.insert("description".into(), d.clone());
    }
    let schema = f
        .get("parameters")
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    out.insert("input_schema".into(), schema);
    Some(Value::Object(out))
}

fn tool_choice(body: &Map<String, Value>) -> Option<Value> {
    let mut choice = match body.get("tool_choice") {
        Some(Value::String(s)) if s == "none" => json!({"type": "none"}),
        Some(Value::String(s)) if s == "required" => json!({"type": "any"}),
        Some(Value::Object(o)) => {
            let name = o.get("function").and_then(|f| f.get("name"))?.clone();
            json!({"type": "tool", "name": name})
        }
        _ => json!({"type": "auto"}),
    };
    if body.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        choice["disable_parallel_tool_use"] = true.into();
    }
    Some(choice)
}

/// The conversation as alternating user/assistant messages of blocks; consecutive turns of
/// the same side (several tool results, say) merge into one message.
fn messages(history: &[Message]) -> Result<Vec<Value>, ApiError> {
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    for (i, m) in history.iter().enumerate() {
        let (role, blocks) = match m.role.as_ref() {
            "system" | "developer" => continue,
            "user" => ("user", content_blocks(m, i)?),
            "assistant" => {
                // Signed thinking goes back first and unchanged, as Anthropic requires.
                let mut blocks: Vec<Value> = m
                    .thinking_blocks
                    .iter()
                    .flatten()
                    .filter(|b| {
                        matches!(
                            b.get("type").and_then(Value::as_str),
                            Some("thinking" | "redacted_thinking")
                        )
                    })
                    .cloned()
                    .collect();
                blocks.extend(content_blocks(m, i)?);
                for (j, call) in m.tool_calls.iter().flatten().enumerate() {
                    let input = convert::call_arguments(call, i, j)?;
                    blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": input}));
                }
                ("assistant", blocks)
            }
            "tool" | "function" => {
                let id = m
                    .tool_call_id
                    .clone()
                    .ok_or_else(|| convert::missing_call_id(i))?;
                (
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": m.text()})],
                )
            }
            _ => continue,
        };
        if blocks.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some((last, existing)) if last == role => existing.extend(blocks),
            _ => out.push((role.to_string(), blocks)),
        }
    }
    Ok(out
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect())
}

/// A message's text and image parts as blocks.
fn content_blocks(m: &Message, i: usize) -> Result<Vec<Value>, ApiError> {
    let mut blocks = Vec::new();
    match &m.content {
        None => {}
        Some(Content::Text(t)) if t.is_empty() => {}
        Some(Content::Text(t)) => blocks.push(json!({"type": "text", "text": t})),
        Some(Content::Parts(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                match (p.kind.as_ref(), &p.text, &p.image_url) {
                    ("text", Some(t), _) => blocks.push(json!({"type": "text", "text": t})),
                    ("image_url", _, Some(image)) => {
                        blocks.push(image_block(&image.url).ok_or_else(|| {
                            convert::bad_image(i, j, "must be an http(s) URL or a base64 data URL")
                        })?)
                    }
                    (other, _, _) => return Err(convert::bad_part(i, j, other, "Anthropic")),
                }
            }
        }
    }
    Ok(blocks)
}

fn image_block(url: &str) -> Option<Value> {
    if let Some((media_type, data)) = convert::data_url(url) {
        return Some(
            json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}),
        );
    }
    if convert::is_http_url(url) {
        return Some(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    None
}

/// Anthropic's `stop_reason` as an OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and reasons added later.
        _ => "stop",
    }
}

#[derive(Deserialize, Default, Clone, Copy)]
struct UsageWire {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct OutputDetails {
    #[serde(default)]
    thinking_tokens: Option<u64>,
}

/// Folds a usage report into `usage`: OpenAI's prompt tokens include cached and cache-write
/// tokens, which Anthropic reports apart.
fn merge_usage(usage: &mut Usage, u: UsageWire) {
    if u.input_tokens.is_some() || u.cache_read_input_tokens.is_some() {
        usage.prompt_tokens = u.input_tokens.unwrap_or(0)
            + u.cache_creation_input_tokens.unwrap_or(0)
            + u.cache_read_input_tokens.unwrap_or(0);
        usage.cached_tokens = u.cache_read_input_tokens;
        usage.cache_creation_tokens = u.cache_creation_input_tokens;
    }
    if let Some(out) = u.output_tokens {
        usage.completion_tokens = out;
    }
    if let Some(t) = u.output_tokens_details.and_then(|d| d.thinking_tokens) {
        usage.reasoning_tokens = Some(t);
    }
}

#[derive(Deserialize)]
struct MessageWire {
    /// Always `message`: what tells a Messages response from any other JSON.
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    /// Required: a body without it is not an answer the proxy can vouch for.
    content: Vec<Value>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: UsageWire,
}

/// A whole Messages response as deltas, in content order.
pub fn decode_message(bytes: &[u8]) -> Result<Vec<Delta>, String> {
    let m: MessageWire =
        serde_json::from_slice(bytes).map_err(|e| format!("not an Anthropic message: {e}"))?;
    if m.kind != "message" {
        return Err(format!(
            "not an Anthropic message: its type is `{}`",
            m.kind
        ));
    }
    let mut out = vec![Delta::Start {
        id: m.id,
        model: m.model,
    }];
    let mut calls = 0;
    for block in &m.content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => out.push(Delta::Content(str_field(block, "text"))),
            Some("thinking") => {
                out.push(Delta::Reasoning(str_field(block, "thinking")));
                out.push(Delta::ReasoningBlock(block.clone()));
            }
            Some("redacted_thinking") => out.push(Delta::ReasoningBlock(block.clone())),
            Some("tool_use") => {
                out.push(Delta::ToolCallStart {
                    index: calls,
                    id: str_field(block, "id"),
                    name: str_field(block, "name"),
                });
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                out.push(Delta::ToolCallArguments {
                    index: calls,
                    arguments: input.to_string(),
                });
                calls += 1;
            }
            // Blocks added later are not shown.
            _ => {}
        }
    }
    let mut usage = Usage::default();
    merge_usage(&mut usage, m.usage);
    out.push(Delta::Usage(usage));
    out.push(Delta::Finish(
        finish_reason(m.stop_reason.as_deref().unwrap_or("end_turn")).to_string(),
    ));
    Ok(out)
}

/// Turns the Messages event stream into deltas; keeps the state the events refer back to.
#[derive(Default)]
pub struct StreamDecoder {
    usage: Usage,
    /// Content block index → tool call index.
    tool_blocks: HashMap<u64, usize>,
    /// The thinking text of the block being streamed, handed back whole with its signature.
    thinking: String,
    calls: usize,
    /// `message_stop` was seen: the response is complete.
    pub done: bool,
}

impl StreamDecoder {
    /// The deltas of one SSE event (`name` is the `event:` line, `data` its JSON).
    pub fn event(&mut self, name: &str, data: &str) -> Result<Vec<Delta>, String> {
        let v: Value =
            serde_json::from_str(data).map_err(|e| format!("unreadable `{name}` event: {e}"))?;
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(name);
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                let m = v.get("message").cloned().unwrap_or_default();
                self.merge_usage(m.get("usage"));
                out.push(Delta::Start {
                    id: str_field(&m, "id"),
                    model: str_field(&m, "model"),
                });
            }
            "content_block_start" => self.block_start(&v, &mut out),
            "content_block_delta" => self.block_delta(&v, &mut out),
            "message_delta" => {
                self.merge_usage(v.get("usage"));
                out.push(Delta::Usage(self.usage));
                if let Some(reason) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    out.push(Delta::Finish(finish_reason(reason).to_string()));
                }
            }
            "message_stop" => self.done = true,
            "error" => out.push(Delta::Error {
                kind: v
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("api_error")
                    .to_string(),
                message: v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("upstream error")
                    .to_string(),
            }),
            // ping, content_block_stop, and events added later.
            _ => {}
        }
        Ok(out)
    }

    fn merge_usage(&mut self, usage: Option<&Value>) {
        if let Some(u) = usage {
            merge_usage(
                &mut self.usage,
                serde_json::from_value(u.clone()).unwrap_or_default(),
            );
        }
    }

    fn block_start(&mut self, v: &Value, out: &mut Vec<Delta>) {
        let block = v.get("content_block").cloned().unwrap_or_default();
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        match block.get("type").and_then(Value::as_str) {
            Some("tool_use") => {
                let call = self.calls;
                self.calls += 1;
                self.tool_blocks.insert(index, call);
                out.push(Delta::ToolCallStart {
                    index: call,
                    id: str_field(&block, "id"),
                    name: str_field(&block, "name"),
                });
            }
            Some("text") if !str_field(&block, "text").is_empty() => {
                out.push(Delta::Content(str_field(&block, "text")))
            }
            Some("thinking") => self.thinking.clear(),
            Some("redacted_thinking") => out.push(Delta::ReasoningBlock(block)),
            _ => {}
        }
    }

    fn block_delta(&mut self, v: &Value, out: &mut Vec<Delta>) {
        let delta = v.get("delta").cloned().unwrap_or_default();
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => out.push(Delta::Content(str_field(&delta, "text"))),
            Some("thinking_delta") => {
                let text = str_field(&delta, "thinking");
                self.thinking.push_str(&text);
                out.push(Delta::Reasoning(text))
            }
            // The signature closes a thinking block: the client gets the block whole, to
            // send back in its next turn.
            Some("signature_delta") => out.push(Delta::ReasoningBlock(json!({
                "type": "thinking",
                "thinking": std::mem::take(&mut self.thinking),
                "signature": str_field(&delta, "signature"),
            }))),
            Some("input_json_delta") => {
                if let Some(call) = self.tool_blocks.get(&index) {
                    out.push(Delta::ToolCallArguments {
                        index: *call,
                        arguments: str_field(&delta, "partial_json"),
                    });
                }
            }
            _ => {}
        }
    }
}

/// Anthropic's error body `{"type":"error","error":{"type","message"}}` in OpenAI's shape.
pub fn error_body(bytes: &[u8]) -> Option<(String, String)> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let e = v.get("error")?;
    Some((
        e.get("type")
            .and_then(Value::as_str)
            .unwrap_or("api_error")
            .to_string(),
        e.get("message").and_then(Value::as_str)?.to_string(),
    ))
}
