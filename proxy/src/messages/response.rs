//! The pipeline's answer (an OpenAI chat completion, or an OpenAI error) in the shape of
//! Anthropic's Messages API.

use http::StatusCode;
use serde_json::{json, Map, Value};

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`.
pub fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// `msg_…` for the completion's id (Anthropic's SDKs show it as the message id); an
/// Anthropic upstream's own id is kept as it is.
pub fn message_id(openai_id: &str) -> String {
    if openai_id.starts_with("msg_") {
        return openai_id.to_string();
    }
    let bare = openai_id.strip_prefix("chatcmpl-").unwrap_or(openai_id);
    format!("msg_{bare}")
}

/// The usage block: Anthropic's `input_tokens` leave out the prompt tokens read from the
/// cache (`cache_read_input_tokens`) and written to it (`cache_creation_input_tokens`).
pub fn usage(openai: &Value) -> Value {
    let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64);
    let prompt = n(openai, "prompt_tokens").unwrap_or(0);
    let cached = openai
        .get("prompt_tokens_details")
        .and_then(|d| n(d, "cached_tokens"))
        .or_else(|| n(openai, "cache_read_input_tokens"))
        .unwrap_or(0);
    let written = n(openai, "cache_creation_input_tokens").unwrap_or(0);
    let mut out = Map::new();
    out.insert(
        "input_tokens".into(),
        prompt.saturating_sub(cached + written).into(),
    );
    out.insert(
        "output_tokens".into(),
        n(openai, "completion_tokens").unwrap_or(0).into(),
    );
    out.insert("cache_read_input_tokens".into(), cached.into());
    out.insert("cache_creation_input_tokens".into(), written.into());
    Value::Object(out)
}

/// A whole chat completion as an Anthropic message: thinking blocks first (signed ones as
/// the upstream signed them; reasoning from any other upstream as an unsigned block), then
/// the text, then the tool calls.
pub fn message(completion: &Value) -> Value {
    let choice = &completion["choices"][0];
    let m = &choice["message"];
    let mut content = Vec::new();
    match m.get("thinking_blocks").and_then(Value::as_array) {
        Some(blocks) if !blocks.is_empty() => content.extend(blocks.iter().cloned()),
        _ => {
            let reasoning = m
                .get("reasoning_content")
                .or_else(|| m.get("reasoning"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if !reasoning.is_empty() {
                content.push(json!({"type": "thinking", "thinking": reasoning, "signature": ""}));
            }
        }
    }
    if let Some(text) = m.get("content").and_then(Value::as_str) {
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
    }
    for call in m
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let f = &call["function"];
        content.push(json!({
            "type": "tool_use",
            "id": call.get("id").and_then(Value::as_str).unwrap_or(""),
            "name": f.get("name").and_then(Value::as_str).unwrap_or(""),
            "input": tool_input(f.get("arguments").and_then(Value::as_str).unwrap_or("")),
        }));
    }
    let finish = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .unwrap_or("stop");
    let mut out = json!({
        "id": message_id(completion.get("id").and_then(Value::as_str).unwrap_or("")),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model").cloned().unwrap_or(Value::Null),
        "content": content,
        "stop_reason": stop_reason(finish),
        "stop_sequence": null,
        "usage": usage(&completion["usage"]),
    });
    if let Some(t) = completion.get("thinkgate") {
        out["thinkgate"] = t.clone();
    }
    out
}

/// A tool call's argument text as the `input` object (an upstream that wrote something
/// other than an object has it kept under `arguments`, not dropped).
pub fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ if arguments.trim().is_empty() => json!({}),
        _ => json!({ "arguments": arguments }),
    }
}

/// Anthropic's error `type` and status for a proxy error's status: an overloaded upstream
/// or proxy (503) is Anthropic's 529 `overloaded_error`, which its clients retry.
pub fn error_kind(status: StatusCode) -> (StatusCode, &'static str) {
    let overloaded = StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    match status.as_u16() {
        400 | 405 | 422 => (status, "invalid_request_error"),
        401 => (status, "authentication_error"),
        403 => (status, "permission_error"),
        404 => (status, "not_found_error"),
        408 | 504 => (status, "timeout_error"),
        413 => (status, "request_too_large"),
        429 => (status, "rate_limit_error"),
        503 | 529 => (overloaded, "overloaded_error"),
        _ => (status, "api_error"),
    }
}

/// An OpenAI error body (`{"error": {message, type, code, param}}`) as Anthropic's
/// `{"type": "error", "error": {type, message}}`; the proxy's own `code` stays beside, so a
/// client can still tell `key_quota_exceeded` from a plain rate limit.
pub fn error_body(status: StatusCode, openai: &Value) -> (StatusCode, Value) {
    let (status, kind) = error_kind(status);
    let e = &openai["error"];
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("the request failed");
    let mut error = json!({"type": kind, "message": message});
    if let Some(code) = e.get("code").filter(|c| !c.is_null()) {
        error["code"] = code.clone();
    }
    (status, json!({"type": "error", "error": error}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completion_becomes_a_message_with_blocks_in_order() {
        let completion = json!({
            "id": "chatcmpl-abc", "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Checking.", "reasoning_content": "think",
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "get", "arguments": "{\"q\":1}"}}]
            }}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 12,
                      "prompt_tokens_details": {"cached_tokens": 10},
                      "completion_tokens_details": {"reasoning_tokens": 5}}
        });
        let m = message(&completion);
        assert_eq!(m["id"], "msg_abc");
        assert_eq!(m["stop_reason"], "tool_use");
        let kinds: Vec<_> = m["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["type"].clone())
            .collect();
        assert_eq!(kinds, ["thinking", "text", "tool_use"]);
        assert_eq!(m["content"][2]["input"], json!({"q": 1}));
        assert_eq!(m["usage"]["input_tokens"], 20);
        assert_eq!(m["usage"]["cache_read_input_tokens"], 10);
        assert_eq!(m["usage"]["output_tokens"], 12);
    }

    #[test]
    fn signed_blocks_are_returned_as_the_upstream_signed_them() {
        let block = json!({"type": "thinking", "thinking": "t", "signature": "EqQBCkYIBhgCKkD=="});
        let completion = json!({"id": "x", "choices": [{"finish_reason": "stop", "message": {
            "content": "hi", "reasoning_content": "t", "thinking_blocks": [block.clone()]}}], "usage": {}});
        assert_eq!(message(&completion)["content"][0], block);
    }

    #[test]
    fn errors_take_anthropic_types_and_statuses() {
        let openai = json!({"error": {"message": "slow down", "type": "rate_limit_error", "code": "key_rate_limited"}});
        let (status, body) = error_body(StatusCode::TOO_MANY_REQUESTS, &openai);
        assert_eq!(status, 429);
        assert_eq!(
            body,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down", "code": "key_rate_limited"}})
        );
        assert_eq!(
            error_kind(StatusCode::SERVICE_UNAVAILABLE),
            (StatusCode::from_u16(529).unwrap(), "overloaded_error")
        );
        assert_eq!(error_kind(StatusCode::BAD_GATEWAY).1, "api_error");
        assert_eq!(error_kind(StatusCode::NOT_FOUND).1, "not_found_error");
    }

    #[test]
    fn tool_arguments_that_are_not_an_object_are_kept() {
        assert_eq!(tool_input(""), json!({}));
        assert_eq!(tool_input("[1]"), json!({"arguments": "[1]"}));
    }
}
