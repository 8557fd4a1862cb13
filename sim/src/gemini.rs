//! The simulator speaking Google's Gemini API: `models/{model}:generateContent` and
//! `:streamGenerateContent` (always SSE, as with `?alt=sse`). Requests are checked the way the
//! real API checks them (roles `user`/`model`, not both `thinkingBudget` and `thinkingLevel`,
//! Gemini 3's rule that a function call in the history keeps its `thoughtSignature`);
//! responses carry thought parts when `includeThoughts` is set, `thoughtsTokenCount` always,
//! and function calls signed like Gemini 3's.

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{json, Value};
use thinkgate_metrics::TokenCounter;

use super::{knobs, Frames, Job, RequestView};
use thinkgate_wire::body::{self, Body};
use thinkgate_wire::ApiError;

/// Splits `models/{model}:{method}` into the model and whether it streams.
pub(super) fn route(path: &str) -> Option<(&str, bool)> {
    let rest = path
        .strip_prefix("/v1beta/models/")
        .or_else(|| path.strip_prefix("/models/"))?;
    match rest.rsplit_once(':')? {
        (model, "generateContent") if !model.is_empty() => Some((model, false)),
        (model, "streamGenerateContent") if !model.is_empty() => Some((model, true)),
        _ => None,
    }
}

/// Checks and reads a `generateContent` request the way the real API does.
pub(super) fn parse(
    request: &Value,
    stream: bool,
    counter: &TokenCounter,
) -> Result<RequestView, ApiError> {
    let contents = request
        .get("contents")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            ApiError::invalid_request(
                "* GenerateContentRequest.contents: contents is not specified",
            )
        })?;
    let mut prompt_tokens = 0;
    if let Some(system) = request.get("systemInstruction") {
        prompt_tokens += parts_tokens(system, counter);
    }
    for (i, c) in contents.iter().enumerate() {
        match c.get("role").and_then(Value::as_str) {
            None | Some("user") | Some("model") => {}
            Some(other) => {
                return Err(ApiError::invalid_request(format!(
                    "Please use a valid role: user, model. (contents[{i}] has `{other}`)"
                )))
            }
        }
        let unsigned_call = c
            .get("parts")
            .and_then(Value::as_array)
            .is_some_and(|parts| {
                parts
                    .iter()
                    .any(|p| p.get("functionCall").is_some() && p.get("thoughtSignature").is_none())
            });
        if unsigned_call {
            return Err(ApiError::invalid_request(format!(
                "Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly. (contents[{i}])"
            )));
        }
        prompt_tokens += parts_tokens(c, counter);
    }
    let generation = request.get("generationConfig");
    let thinking = generation.and_then(|g| g.get("thinkingConfig"));
    if thinking
        .is_some_and(|t| t.get("thinkingBudget").is_some() && t.get("thinkingLevel").is_some())
    {
        return Err(ApiError::invalid_request(
            "You can only set only one of thinking budget and thinking level.",
        ));
    }
    // One tool round per conversation: once a result is in the history, the model answers.
    let answers_a_tool = contents.iter().any(|c| {
        c.get("parts")
            .and_then(Value::as_array)
            .is_some_and(|parts| parts.iter().any(|p| p.get("functionResponse").is_some()))
    });
    Ok(RequestView {
        stream,
        // Gemini always reports usageMetadata.
        include_usage: true,
        cap: generation
            .and_then(|g| g.get("maxOutputTokens"))
            .and_then(Value::as_u64),
        tool: request
            .pointer("/tools/0/functionDeclarations/0/name")
            .and_then(Value::as_str)
            .filter(|_| !answers_a_tool)
            .map(str::to_string),
        prompt_tokens,
        show_thoughts: thinking
            .and_then(|t| t.get("includeThoughts"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        thinking: knobs::gemini(thinking),
        hide_reasoning: false,
        cache: crate::anthropic::CacheUse::default(),
        include_encrypted: false,
    })
}

/// Tokens of the text parts of a content (an inline or file image counts a fixed amount).
fn parts_tokens(content: &Value, counter: &TokenCounter) -> u64 {
    content
        .get("parts")
        .and_then(Value::as_array)
        .map_or(0, |parts| {
            parts
                .iter()
                .map(|p| {
                    if let Some(t) = p.get("text").and_then(Value::as_str) {
                        counter.count(t) as u64
                    } else if p.get("inlineData").is_some() || p.get("fileData").is_some() {
                        258 // Gemini's fixed count for a small image
                    } else {
                        p.get("functionResponse")
                            .or_else(|| p.get("functionCall"))
                            .map_or(0, |v| counter.count(&v.to_string()) as u64)
                    }
                })
                .sum()
        })
}

fn finish_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "MAX_TOKENS",
        "content_filter" => "SAFETY",
        // Gemini ends a function-calling turn with STOP.
        _ => "STOP",
    }
}

fn usage(job: &Job, output_tokens: u64) -> Value {
    let thoughts = job.script.reasoning.len() as u64;
    let candidates = output_tokens - thoughts;
    let mut u = json!({
        "promptTokenCount": job.prompt_tokens,
        "candidatesTokenCount": candidates,
        "totalTokenCount": job.prompt_tokens + output_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": job.prompt_tokens}]
    });
    if thoughts > 0 {
        u["thoughtsTokenCount"] = thoughts.into();
    }
    u
}

fn function_call_part(job: &Job) -> Option<Value> {
    let (name, _) = job.script.tool_call.as_ref()?;
    Some(json!({
        "functionCall": {"name": name, "args": job.tool_input()},
        "thoughtSignature": job.signature()
    }))
}

fn response(job: &Job, parts: Vec<Value>, end: Option<u64>) -> Value {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    let mut out = json!({"candidates": [], "modelVersion": job.model, "responseId": job.id});
    if let Some(output_tokens) = end {
        candidate["finishReason"] = finish_reason(job.script.finish_reason).into();
        out["usageMetadata"] = usage(job, output_tokens);
    }
    out["candidates"] = json!([candidate]);
    out
}

/// A whole `GenerateContentResponse`.
pub(super) fn message(job: &Job, output_tokens: u64) -> Value {
    let mut parts = Vec::new();
    if job.show_thoughts && job.shows_thinking() && !job.script.reasoning.is_empty() {
        parts.push(json!({"text": job.script.reasoning_text(), "thought": true}));
    }
    if !job.script.answer.is_empty() {
        parts.push(json!({ "text": job.script.answer_text() }));
    }
    parts.extend(function_call_part(job));
    response(job, parts, Some(output_tokens))
}

fn event(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\r\n\r\n"))
}

/// The streamed responses: one per token, the last with the finish reason and usage.
pub(super) fn frames(job: &Job, output_tokens: u64) -> Frames {
    let mut pieces: Vec<Bytes> = Vec::new();
    let show = job.show_thoughts && job.shows_thinking();
    if show {
        for word in &job.script.reasoning {
            pieces.push(event(&response(
                job,
                vec![json!({"text": word, "thought": true})],
                None,
            )));
        }
    }
    for word in &job.script.answer {
        pieces.push(event(&response(job, vec![json!({ "text": word })], None)));
    }
    let last: Vec<Value> = function_call_part(job).into_iter().collect();
    Frames {
        head: Bytes::new(),
        pieces,
        hidden: if show { 0 } else { job.script.reasoning.len() },
        tail: vec![event(&response(job, last, Some(output_tokens)))],
    }
}

/// An error in Google's shape: `{"error":{"code","message","status"}}`.
pub(super) fn error_response(status: StatusCode, message: &str) -> Response<Body> {
    let kind = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        402..=499 => "FAILED_PRECONDITION",
        _ => "INTERNAL",
    };
    let body = json!({"error": {"code": status.as_u16(), "message": message, "status": kind}});
    body::json_response(status, body.to_string())
}

pub(super) fn fault_response(status: u16) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error_response(status, &format!("simulated upstream fault: {status}"))
}
