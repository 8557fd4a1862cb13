//! The simulator speaking OpenAI's Responses API (`POST /v1/responses`): request checks as
//! the real API makes them (unknown parameters, `reasoning.effort` values, stored state it
//! does not have), whole `response` objects with `reasoning`, `message` and `function_call`
//! items, and the typed event stream.
//!
//! Reasoning shows as OpenAI shows it: hidden, with a summary only when
//! `reasoning.summary` asks for one, and `encrypted_content` only when `include` asks for
//! `reasoning.encrypted_content`; that content must come back unchanged to be accepted.
//! Under a dialect other than `openai` (vLLM and others serve this API too) the reasoning
//! text itself is shown.

use bytes::Bytes;
use serde_json::{json, Value};
use thinkgate_config::{Dialect, ReasoningStyle};
use thinkgate_metrics::TokenCounter;

use super::{knobs, Frames, Job, RequestView};
use thinkgate_wire::ApiError;

/// The request parameters the real API knows; any other is a 400.
const KNOWN: [&str; 26] = [
    "background",
    "conversation",
    "include",
    "input",
    "instructions",
    "max_output_tokens",
    "max_tool_calls",
    "metadata",
    "model",
    "parallel_tool_calls",
    "previous_response_id",
    "prompt",
    "prompt_cache_key",
    "reasoning",
    "safety_identifier",
    "service_tier",
    "store",
    "stream",
    "stream_options",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "truncation",
];

/// What encrypted reasoning the simulator hands out starts with.
const ENCRYPTED_PREFIX: &str = "enc_sim_";

fn param_error(param: &str, message: String) -> ApiError {
    ApiError::invalid_request(message).with_param(param)
}

/// Checks and reads a Responses request the way the real API does.
pub(super) fn parse(
    request: &Value,
    dialect: Dialect,
    counter: &TokenCounter,
) -> Result<RequestView, ApiError> {
    let Some(body) = request.as_object() else {
        return Err(ApiError::invalid_request("the body must be a JSON object"));
    };
    if let Some(unknown) = body
        .keys()
        .find(|k| !KNOWN.contains(&k.as_str()) && *k != "user")
    {
        return Err(
            param_error(unknown, format!("Unknown parameter: '{unknown}'."))
                .with_code("unknown_parameter"),
        );
    }
    if let Some(id) = body.get("previous_response_id").and_then(Value::as_str) {
        // The simulator stores nothing: a proxy that keeps the conversation must send it.
        return Err(param_error(
            "previous_response_id",
            format!("Previous response with id '{id}' not found."),
        )
        .with_code("previous_response_not_found"));
    }
    let items: Vec<Value> = match body.get("input") {
        Some(Value::String(s)) => vec![json!({"role": "user", "content": s})],
        Some(Value::Array(items)) => items.clone(),
        _ => {
            return Err(param_error(
                "input",
                "Missing required parameter: 'input'.".into(),
            ))
        }
    };
    let mut prompt_tokens = 3;
    if let Some(s) = body.get("instructions").and_then(Value::as_str) {
        prompt_tokens += 3 + counter.count(s) as u64;
    }
    let mut answers_a_tool = false;
    for (i, item) in items.iter().enumerate() {
        prompt_tokens += 3;
        match item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message")
        {
            "message" => prompt_tokens += content_tokens(item.get("content"), counter),
            "function_call" => {
                prompt_tokens += counter.count(text(item, "arguments")) as u64;
            }
            "function_call_output" => {
                answers_a_tool = true;
                prompt_tokens += counter.count(text(item, "output")) as u64;
            }
            "reasoning" => {
                if let Some(content) = item.get("encrypted_content") {
                    let genuine = content
                        .as_str()
                        .is_some_and(|c| c.starts_with(ENCRYPTED_PREFIX));
                    if !genuine {
                        return Err(param_error(
                            &format!("input[{i}].encrypted_content"),
                            format!(
                                "The encrypted content for item input[{i}] could not be verified."
                            ),
                        )
                        .with_code("invalid_encrypted_content"));
                    }
                }
            }
            other => {
                return Err(param_error(
                    &format!("input[{i}].type"),
                    format!("Invalid value: '{other}'."),
                ))
            }
        }
    }
    let effort = body.get("reasoning").and_then(|r| r.get("effort"));
    let thinking = match effort {
        None | Some(Value::Null) => knobs::Thinking::Natural,
        Some(level) => knobs::strict_effort(level, "reasoning.effort")?,
    };
    let include_encrypted = body
        .get("include")
        .and_then(Value::as_array)
        .is_some_and(|l| l.iter().any(|v| v == "reasoning.encrypted_content"));
    Ok(RequestView {
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        // The final event always carries the usage.
        include_usage: true,
        cap: body.get("max_output_tokens").and_then(Value::as_u64),
        tool: body
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|t| t.get("type").and_then(Value::as_str) == Some("function"))
            .and_then(|t| t.get("name"))
            .and_then(Value::as_str)
            .filter(|_| !answers_a_tool)
            .map(str::to_string),
        prompt_tokens,
        show_thoughts: dialect != Dialect::OpenAi
            || body
                .get("reasoning")
                .and_then(|r| r.get("summary"))
                .is_some_and(|s| !s.is_null()),
        thinking,
        hide_reasoning: false,
        cache: Default::default(),
        include_encrypted,
    })
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn content_tokens(content: Option<&Value>, counter: &TokenCounter) -> u64 {
    match content {
        Some(Value::String(s)) => counter.count(s) as u64,
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("input_image") => 85,
                _ => counter.count(text(p, "text")) as u64,
            })
            .sum(),
        _ => 0,
    }
}

/// How the job shows its reasoning: as a summary (OpenAI, when asked), as the reasoning
/// text itself (other servers), or not at all.
#[derive(Clone, Copy, PartialEq)]
enum Shown {
    Summary,
    Text,
    Hidden,
}

fn shown(job: &Job) -> Shown {
    match (job.script.style, job.show_thoughts) {
        (ReasoningStyle::None, _) | (_, false) => Shown::Hidden,
        (ReasoningStyle::Hidden, true) => Shown::Summary,
        (_, true) => Shown::Text,
    }
}

fn usage(job: &Job, output_tokens: u64) -> Value {
    let reasoning = job.script.reasoning.len() as u64;
    json!({
        "input_tokens": job.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": job.prompt_tokens + output_tokens
    })
}

fn status(job: &Job) -> (&'static str, Value) {
    match job.script.finish_reason {
        "length" => ("incomplete", json!({"reason": "max_output_tokens"})),
        "content_filter" => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

fn reasoning_item(job: &Job, done: bool) -> Value {
    let text = job.script.reasoning_text();
    let mut item =
        json!({"type": "reasoning", "id": format!("rs_{}", job.id_suffix()), "summary": []});
    if done {
        match shown(job) {
            Shown::Summary => item["summary"] = json!([{"type": "summary_text", "text": text}]),
            Shown::Text => item["content"] = json!([{"type": "reasoning_text", "text": text}]),
            Shown::Hidden => {}
        }
        if job.include_encrypted {
            item["encrypted_content"] = format!("{ENCRYPTED_PREFIX}{}", job.id_suffix()).into();
        }
    }
    item
}

fn message_item(job: &Job, done: bool) -> Value {
    let content = match done {
        true => {
            json!([{"type": "output_text", "text": job.script.answer_text(), "annotations": []}])
        }
        false => json!([]),
    };
    json!({"type": "message", "id": format!("msg_{}", job.id_suffix()), "status": if done {"completed"} else {"in_progress"}, "role": "assistant", "content": content})
}

fn call_item(job: &Job, name: &str, done: bool) -> Value {
    let arguments = match done {
        true => job.script.tool_arguments().unwrap_or_default(),
        false => String::new(),
    };
    json!({"type": "function_call", "id": format!("fc_{}", job.id_suffix()), "call_id": job.tool_call_id(), "name": name, "arguments": arguments, "status": if done {"completed"} else {"in_progress"}})
}

/// The response object: `output` and `usage` once it is done.
fn object(job: &Job, output: Vec<Value>, usage: Option<Value>, done: bool) -> Value {
    let (status, incomplete) = match done {
        true => status(job),
        false => ("in_progress", Value::Null),
    };
    json!({
        "id": job.id, "object": "response", "created_at": job.created, "status": status,
        "error": null, "incomplete_details": incomplete, "model": job.model, "output": output,
        "usage": usage.unwrap_or(Value::Null)
    })
}

/// The items of a finished response, in order.
fn output(job: &Job) -> Vec<Value> {
    let mut out = Vec::new();
    if !job.script.reasoning.is_empty() {
        out.push(reasoning_item(job, true));
    }
    if !job.script.answer.is_empty() {
        out.push(message_item(job, true));
    }
    if let Some((name, _)) = &job.script.tool_call {
        out.push(call_item(job, name, true));
    }
    out
}

/// A whole `response` object.
pub(super) fn message(job: &Job, output_tokens: u64) -> Value {
    object(job, output(job), Some(usage(job, output_tokens)), true)
}

/// Numbers the events of one stream, as the real API does.
struct Events {
    sequence: u64,
}

impl Events {
    fn event(&mut self, name: &str, mut data: Value) -> String {
        data["type"] = name.into();
        data["sequence_number"] = self.sequence.into();
        self.sequence += 1;
        format!("event: {name}\ndata: {data}\n\n")
    }
}

/// The streamed event sequence, one paced piece per token.
pub(super) fn frames(job: &Job, output_tokens: u64) -> Frames {
    let mut ev = Events { sequence: 0 };
    let head = ev.event(
        "response.created",
        json!({"response": object(job, vec![], None, false)}),
    ) + &ev.event(
        "response.in_progress",
        json!({"response": object(job, vec![], None, false)}),
    );
    let mut pieces: Vec<String> = Vec::new();
    // Events due before the next piece (a closed item, the next one opened).
    let mut pending = String::new();
    let mut index = 0;
    let mut hidden = 0;
    if !job.script.reasoning.is_empty() {
        let id = format!("rs_{}", job.id_suffix());
        pending += &ev.event(
            "response.output_item.added",
            json!({"output_index": index, "item": reasoning_item(job, false)}),
        );
        let (delta_event, at) = match shown(job) {
            Shown::Summary => (
                Some("response.reasoning_summary_text.delta"),
                json!({"item_id": id, "output_index": index, "summary_index": 0}),
            ),
            Shown::Text => (
                Some("response.reasoning_text.delta"),
                json!({"item_id": id, "output_index": index, "content_index": 0}),
            ),
            Shown::Hidden => (None, Value::Null),
        };
        match delta_event {
            Some(name) => {
                if name == "response.reasoning_summary_text.delta" {
                    let mut part = at.clone();
                    part["part"] = json!({"type": "summary_text", "text": ""});
                    pending += &ev.event("response.reasoning_summary_part.added", part);
                }
                for word in &job.script.reasoning {
                    let mut data = at.clone();
                    data["delta"] = (*word).into();
                    let mut piece = std::mem::take(&mut pending);
                    piece += &ev.event(name, data);
                    pieces.push(piece);
                }
                let mut done = at.clone();
                done["text"] = job.script.reasoning_text().into();
                let done_name = name.replace(".delta", ".done");
                pending += &ev.event(&done_name, done);
            }
            None => hidden = job.script.reasoning.len(),
        }
        pending += &ev.event(
            "response.output_item.done",
            json!({"output_index": index, "item": reasoning_item(job, true)}),
        );
        index += 1;
    }
    if !job.script.answer.is_empty() {
        let id = format!("msg_{}", job.id_suffix());
        let at = json!({"item_id": id, "output_index": index, "content_index": 0});
        pending += &ev.event(
            "response.output_item.added",
            json!({"output_index": index, "item": message_item(job, false)}),
        );
        let mut part = at.clone();
        part["part"] = json!({"type": "output_text", "text": "", "annotations": []});
        pending += &ev.event("response.content_part.added", part);
        for word in &job.script.answer {
            let mut data = at.clone();
            data["delta"] = (*word).into();
            data["logprobs"] = json!([]);
            let mut piece = std::mem::take(&mut pending);
            piece += &ev.event("response.output_text.delta", data);
            pieces.push(piece);
        }
        let mut done = at.clone();
        done["text"] = job.script.answer_text().into();
        done["logprobs"] = json!([]);
        pending += &ev.event("response.output_text.done", done);
        let mut part = at;
        part["part"] =
            json!({"type": "output_text", "text": job.script.answer_text(), "annotations": []});
        pending += &ev.event("response.content_part.done", part);
        pending += &ev.event(
            "response.output_item.done",
            json!({"output_index": index, "item": message_item(job, true)}),
        );
        index += 1;
    }
    if let Some((name, args)) = &job.script.tool_call {
        let id = format!("fc_{}", job.id_suffix());
        let mut piece = std::mem::take(&mut pending);
        piece += &ev.event(
            "response.output_item.added",
            json!({"output_index": index, "item": call_item(job, name, false)}),
        );
        pieces.push(piece);
        for part in args {
            pieces.push(ev.event(
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": index, "delta": part}),
            ));
        }
        pending += &ev.event(
            "response.function_call_arguments.done",
            json!({"item_id": id, "output_index": index, "arguments": job.script.tool_arguments().unwrap_or_default()}),
        );
        pending += &ev.event(
            "response.output_item.done",
            json!({"output_index": index, "item": call_item(job, name, true)}),
        );
    }
    let (status, _) = status(job);
    let last = if status == "completed" {
        "response.completed"
    } else {
        "response.incomplete"
    };
    pending += &ev.event(
        last,
        json!({"response": object(job, output(job), Some(usage(job, output_tokens)), true)}),
    );
    Frames {
        head: Bytes::from(head),
        pieces: pieces.into_iter().map(Bytes::from).collect(),
        hidden,
        tail: vec![Bytes::from(pending)],
    }
}
