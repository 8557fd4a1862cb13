//! The simulator speaking Anthropic's Messages API: request checks as the real API makes them
//! (`anthropic-version`, `max_tokens`, user/assistant roles only), whole messages with
//! `thinking`/`redacted_thinking`/`text`/`tool_use` blocks, the streamed event sequence, and
//! Anthropic-shaped errors.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};
use thinkgate_config::ReasoningStyle;
use thinkgate_metrics::TokenCounter;

use super::{knobs, Frames, Job, RequestView};
use thinkgate_wire::body::{self, Body};
use thinkgate_wire::ApiError;

/// Checks and reads a Messages request the way the real API does.
pub(super) fn parse(
    request: &Value,
    headers: &HeaderMap,
    counter: &TokenCounter,
    cache: &PromptCache,
) -> Result<RequestView, ApiError> {
    if !headers.contains_key("anthropic-version") {
        return Err(ApiError::invalid_request(
            "anthropic-version: header is required",
        ));
    }
    let cap = request
        .get("max_tokens")
        .and_then(Value::as_u64)
        .ok_or_else(|| ApiError::invalid_request("max_tokens: Field required"))?;
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid_request("messages: Field required"))?;
    let mut prompt_tokens = 3;
    if let Some(system) = request.get("system") {
        prompt_tokens += 3 + text_tokens(system, counter);
    }
    // System turns inside the conversation are a beta (Claude Code turns it on).
    let mid_system = headers
        .get("anthropic-beta")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|b| b.contains("mid-conversation-system"));
    for (i, m) in messages.iter().enumerate() {
        match m.get("role").and_then(Value::as_str) {
            Some("user") | Some("assistant") => {}
            Some("system") if mid_system => {}
            other => {
                return Err(ApiError::invalid_request(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant', got {other:?}"
                )))
            }
        }
        prompt_tokens += 3 + m.get("content").map_or(0, |c| text_tokens(c, counter));
    }
    let thinking_on = request.pointer("/thinking/type").and_then(Value::as_str) == Some("enabled");
    if thinking_on {
        signed_thinking_first(messages)?;
    }
    // One tool round per conversation: once a result is in the history, the model answers.
    let answers_a_tool = messages.iter().any(|m| {
        m.get("content")
            .and_then(Value::as_array)
            .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"))
    });
    Ok(RequestView {
        stream: request
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        // Anthropic always reports usage in the stream.
        include_usage: true,
        cap: Some(cap),
        tool: request
            .get("tools")
            .and_then(Value::as_array)
            .and_then(|t| t.first())
            .and_then(|t| t.get("name"))
            .and_then(Value::as_str)
            .filter(|_| !answers_a_tool)
            .map(str::to_string),
        prompt_tokens,
        show_thoughts: true,
        thinking: knobs::anthropic(request, cap)?,
        hide_reasoning: false,
        cache: cache.serve(request, prompt_tokens, counter),
        include_encrypted: false,
    })
}

/// With thinking on, the last assistant turn that used a tool must open with its signed
/// thinking block, sent back unchanged.
fn signed_thinking_first(messages: &[Value]) -> Result<(), ApiError> {
    let last_assistant = messages
        .iter()
        .enumerate()
        .rev()
        .find(|(_, m)| m["role"] == "assistant");
    let Some((i, m)) = last_assistant else {
        return Ok(());
    };
    let Some(blocks) = m.get("content").and_then(Value::as_array) else {
        return Ok(());
    };
    if !blocks.iter().any(|b| b["type"] == "tool_use") {
        return Ok(());
    }
    let first = blocks
        .first()
        .and_then(|b| b.get("type"))
        .and_then(Value::as_str);
    let signed = match first {
        Some("thinking") => blocks[0]
            .get("signature")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty()),
        Some("redacted_thinking") => true,
        _ => false,
    };
    if signed {
        return Ok(());
    }
    Err(ApiError::invalid_request(format!(
        "messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{}`. When `thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks).",
        first.unwrap_or("nothing")
    )))
}

/// Tokens of a string, or of the text in a list of blocks (an image counts a fixed amount).
fn text_tokens(content: &Value, counter: &TokenCounter) -> u64 {
    match content {
        Value::String(s) => counter.count(s) as u64,
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| match b.get("type").and_then(Value::as_str) {
                Some("image") => 85,
                _ => ["text", "content"]
                    .iter()
                    .filter_map(|k| b.get(*k))
                    .map(|v| text_tokens(v, counter))
                    .sum(),
            })
            .sum(),
        _ => 0,
    }
}

fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

fn usage(job: &Job, output_tokens: u64) -> Value {
    let cached = job.cache.read + job.cache.written;
    json!({
        "input_tokens": job.prompt_tokens.saturating_sub(cached),
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": job.cache.written,
        "cache_read_input_tokens": job.cache.read
    })
}

/// Prompt tokens a request read from the prompt cache and wrote to it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CacheUse {
    pub read: u64,
    pub written: u64,
}

/// Prompt caching as Anthropic's API does it, simplified: the prefix up to the last block
/// marked `cache_control` (system blocks, then messages) is written to the cache the first
/// time it is seen and read from it after. Bounded: the oldest prefixes are forgotten.
#[derive(Default)]
pub(crate) struct PromptCache {
    seen: std::sync::Mutex<std::collections::VecDeque<u64>>,
}

impl PromptCache {
    const CAPACITY: usize = 4096;

    fn serve(&self, request: &Value, total: u64, counter: &TokenCounter) -> CacheUse {
        let marked = |b: &Value| b.get("cache_control").is_some_and(Value::is_object);
        let mut prefix: Vec<&Value> = Vec::new();
        let mut cut = 0;
        let system = request.get("system").and_then(Value::as_array);
        for b in system.into_iter().flatten() {
            prefix.push(b);
            if marked(b) {
                cut = prefix.len();
            }
        }
        let messages = request.get("messages").and_then(Value::as_array);
        for m in messages.into_iter().flatten() {
            for b in m
                .get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                prefix.push(b);
                if marked(b) {
                    cut = prefix.len();
                }
            }
        }
        if cut == 0 {
            return CacheUse::default();
        }
        let cached = &prefix[..cut];
        let tokens: u64 = cached
            .iter()
            .map(|b| text_tokens(&Value::Array(vec![(*b).clone()]), counter))
            .sum::<u64>()
            .min(total);
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for b in cached {
            b.to_string().hash(&mut h);
        }
        let key = h.finish();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&key) {
            return CacheUse {
                read: tokens,
                written: 0,
            };
        }
        if seen.len() >= Self::CAPACITY {
            seen.pop_front();
        }
        seen.push_back(key);
        CacheUse {
            read: 0,
            written: tokens,
        }
    }
}

/// A whole `message` response.
pub(super) fn message(job: &Job, output_tokens: u64) -> Value {
    let mut content = Vec::new();
    if !job.script.reasoning.is_empty() {
        if job.shows_thinking() {
            content.push(json!({"type": "thinking", "thinking": job.script.reasoning_text(), "signature": job.signature()}));
        } else if job.script.style == ReasoningStyle::Hidden {
            content.push(json!({"type": "redacted_thinking", "data": job.signature()}));
        }
    }
    if !job.script.answer.is_empty() {
        content.push(json!({"type": "text", "text": job.script.answer_text()}));
    }
    if let Some((name, _)) = &job.script.tool_call {
        content.push(json!({"type": "tool_use", "id": job.tool_call_id(), "name": name, "input": job.tool_input()}));
    }
    json!({
        "id": job.id,
        "type": "message",
        "role": "assistant",
        "model": job.model,
        "content": content,
        "stop_reason": stop_reason(job.script.finish_reason),
        "stop_sequence": null,
        "usage": usage(job, output_tokens)
    })
}

fn event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// The streamed event sequence, one paced piece per token.
pub(super) fn frames(job: &Job, output_tokens: u64) -> Frames {
    let mut start_usage = usage(job, 1);
    start_usage["output_tokens"] = 1.into();
    let head = event(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": job.id, "type": "message", "role": "assistant", "model": job.model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": start_usage
        }}),
    ) + &event("ping", json!({"type": "ping"}));

    let mut pieces: Vec<String> = Vec::new();
    let mut index = 0;
    let block_stop = |index: usize| {
        event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        )
    };
    let mut hidden = 0;
    if !job.script.reasoning.is_empty() && job.shows_thinking() {
        for (i, word) in job.script.reasoning.iter().enumerate() {
            let mut piece = String::new();
            if i == 0 {
                piece += &event(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index, "content_block": {"type": "thinking", "thinking": ""}}),
                );
            }
            piece += &event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": word}}),
            );
            pieces.push(piece);
        }
        if let Some(last) = pieces.last_mut() {
            *last += &event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": job.signature()}}),
            );
            *last += &block_stop(index);
        }
        index += 1;
    }
    let mut prefix = String::new();
    if !job.script.reasoning.is_empty() && job.script.style == ReasoningStyle::Hidden {
        hidden = job.script.reasoning.len();
        prefix += &event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": {"type": "redacted_thinking", "data": job.signature()}}),
        );
        prefix += &block_stop(index);
        index += 1;
    }
    if !job.script.answer.is_empty() {
        let first = pieces.len();
        for (i, word) in job.script.answer.iter().enumerate() {
            let mut piece = std::mem::take(&mut prefix);
            if i == 0 {
                piece += &event(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
                );
            }
            piece += &event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": word}}),
            );
            pieces.push(piece);
        }
        if pieces.len() > first {
            if let Some(last) = pieces.last_mut() {
                *last += &block_stop(index);
            }
        }
        index += 1;
    }
    if let Some((name, args)) = &job.script.tool_call {
        let mut piece = std::mem::take(&mut prefix);
        piece += &event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": job.tool_call_id(), "name": name, "input": {}}}),
        );
        pieces.push(piece);
        for part in args {
            pieces.push(event("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": part}})));
        }
        if let Some(last) = pieces.last_mut() {
            *last += &block_stop(index);
        }
    }
    let mut tail_text = prefix;
    tail_text += &event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(job.script.finish_reason), "stop_sequence": null}, "usage": {"output_tokens": output_tokens}}),
    );
    tail_text += &event("message_stop", json!({"type": "message_stop"}));
    Frames {
        head: Bytes::from(head),
        pieces: pieces.into_iter().map(Bytes::from).collect(),
        hidden,
        tail: vec![Bytes::from(tail_text)],
    }
}

/// An error in Anthropic's shape: `{"type":"error","error":{"type","message"}}`.
pub(super) fn error_response(status: StatusCode, message: &str) -> Response<Body> {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    };
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    let mut resp = body::json_response(status, body.to_string());
    if status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

pub(super) fn fault_response(status: u16) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error_response(status, &format!("simulated upstream fault: {status}"))
}
