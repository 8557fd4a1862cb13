//! OpenAI's Responses API (`POST /responses`) as an upstream: the only API some OpenAI
//! models are served on, and one vLLM and others serve too.
//!
//! Requests: a client of `/v1/responses` has its body sent as it wrote it (only `model`,
//! `stream`, `store` and the budget's knob set, and a stored conversation written in
//! front of its `input`), so `include`, `reasoning.summary`, `text.verbosity`,
//! `prompt_cache_key` and the encrypted reasoning items Codex replays reach the upstream.
//! Any other client's chat request is translated: system, user, assistant and tool turns
//! become input items (`message`, `function_call`, `function_call_output`), tools become
//! flat function tools, `response_format` becomes `text.format`. What the Responses API has
//! no field for (`stop`, `n > 1`, `seed`, penalties, logprobs) is a 400 naming the field.
//! The proxy keeps the conversation itself, so the upstream is always asked not to store.
//!
//! Responses: a whole `response` object and the streamed typed events
//! (`response.created`, `response.output_item.added/done`, `response.output_text.delta`,
//! `response.reasoning_summary_text.delta`, `response.reasoning_text.delta`,
//! `response.function_call_arguments.delta`, `response.completed`, `response.incomplete`,
//! `response.failed`, `error`) become canonical [`Delta`]s. A reasoning item that carries
//! `encrypted_content` is handed out whole as a [`Delta::ReasoningBlock`], to go back
//! unchanged in the next turn.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::convert::{self, str_field};
use crate::canonical::{ChatRequest, Content, Delta, Message, Usage};
use crate::error::ApiError;

/// Chat request fields the Responses API has no equivalent for; sending them is a 400.
const UNSUPPORTED: [(&str, &str); 8] = [
    ("stop", "the Responses API has no stop sequences"),
    ("seed", "the Responses API takes no seed"),
    (
        "logprobs",
        "log probabilities are not translated to the Responses API",
    ),
    (
        "top_logprobs",
        "log probabilities are not translated to the Responses API",
    ),
    ("logit_bias", "the Responses API takes no logit bias"),
    (
        "presence_penalty",
        "the Responses API takes no presence penalty",
    ),
    (
        "frequency_penalty",
        "the Responses API takes no frequency penalty",
    ),
    ("audio", "the Responses API does not produce audio"),
];

/// Translates a chat request into a Responses request for `upstream_model`.
pub fn request_body(
    req: &ChatRequest,
    upstream_model: &str,
) -> Result<Map<String, Value>, ApiError> {
    let body = &req.body;
    convert::refuse_choices(body, "Responses API")?;
    convert::refuse_fields(body, &UNSUPPORTED)?;
    let mut out = Map::new();
    out.insert("model".into(), upstream_model.into());
    out.insert("input".into(), Value::Array(input_items(&req.messages())?));
    if let Some(max) = convert::max_tokens(body) {
        out.insert("max_output_tokens".into(), max.into());
    }
    for field in [
        "temperature",
        "top_p",
        "parallel_tool_calls",
        "user",
        "service_tier",
    ] {
        if let Some(v) = body.get(field).filter(|v| !v.is_null()) {
            out.insert(field.into(), v.clone());
        }
    }
    if let Some(effort) = body.get("reasoning_effort").filter(|v| v.is_string()) {
        out.insert("reasoning".into(), json!({ "effort": effort }));
    }
    if let Some(format) = body.get("response_format").and_then(text_format) {
        out.insert("text".into(), json!({ "format": format }));
    }
    if let Some(tools) = convert::tools(body) {
        out.insert(
            "tools".into(),
            Value::Array(tools.iter().filter_map(tool).collect()),
        );
        if let Some(choice) = body.get("tool_choice").and_then(tool_choice) {
            out.insert("tool_choice".into(), choice);
        }
    }
    out.insert("store".into(), false.into());
    if req.stream {
        out.insert("stream".into(), true.into());
    }
    Ok(out)
}

/// A Responses body from a Responses client, as it sent it, with the stored conversation
/// it continues (`history`, as chat messages) written in front of its own `input`.
pub fn native_body(
    native: &Map<String, Value>,
    history: &[Value],
    upstream_model: &str,
    stream: bool,
) -> Result<Map<String, Value>, ApiError> {
    let mut out = convert::as_sent(native, upstream_model, stream);
    out.remove("previous_response_id");
    if !history.is_empty() {
        let history: Vec<Message> = history
            .iter()
            .filter_map(|m| Message::deserialize(m).ok())
            .collect();
        let mut input = input_items(&history)?;
        match out.remove("input") {
            Some(Value::Array(items)) => input.extend(items),
            Some(Value::String(text)) => input.push(json!({"role": "user", "content": text})),
            _ => {}
        }
        out.insert("input".into(), Value::Array(input));
    }
    out.insert("store".into(), false.into());
    Ok(out)
}

/// The conversation as Responses input items, in order.
fn input_items(history: &[Message]) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::with_capacity(history.len());
    for (i, m) in history.iter().enumerate() {
        match m.role.as_ref() {
            role @ ("system" | "developer" | "user") => {
                out.push(json!({"role": role, "content": input_content(m, i)?}))
            }
            "assistant" => {
                // Encrypted reasoning a Responses upstream handed out goes back first.
                out.extend(
                    m.thinking_blocks
                        .iter()
                        .flatten()
                        .filter(|b| b.get("type").and_then(Value::as_str) == Some("reasoning"))
                        .cloned(),
                );
                let text = m.text();
                if !text.is_empty() {
                    out.push(json!({"role": "assistant", "content": text}));
                }
                for call in m.tool_calls.iter().flatten() {
                    out.push(json!({
                        "type": "function_call",
                        "call_id": call.id,
                        "name": call.function.name,
                        "arguments": call.function.arguments,
                    }));
                }
            }
            "tool" | "function" => {
                let id = m
                    .tool_call_id
                    .clone()
                    .ok_or_else(|| convert::missing_call_id(i))?;
                out.push(
                    json!({"type": "function_call_output", "call_id": id, "output": m.text()}),
                );
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A user or system turn's content: a string, or `input_text` and `input_image` parts.
fn input_content(m: &Message, i: usize) -> Result<Value, ApiError> {
    let parts = match &m.content {
        None => return Ok(Value::String(String::new())),
        Some(Content::Text(t)) => return Ok(Value::String(t.to_string())),
        Some(Content::Parts(parts)) => parts,
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        match (p.kind.as_ref(), &p.text, &p.image_url) {
            ("text", Some(t), _) => out.push(json!({"type": "input_text", "text": t})),
            ("image_url", _, Some(image)) => {
                if convert::data_url(&image.url).is_none() && !convert::is_http_url(&image.url) {
                    return Err(convert::bad_image(
                        i,
                        j,
                        "must be an http(s) URL or a base64 data URL",
                    ));
                }
                out.push(json!({"type": "input_image", "image_url": image.url}));
            }
            (other, _, _) => return Err(convert::bad_part(i, j, other, "Responses API")),
        }
    }
    Ok(Value::Array(out))
}

/// Chat's function tool → the Responses API's flat function tool.
fn tool(t: &Value) -> Option<Value> {
    let f = t.get("function")?;
    let mut out = Map::new();
    out.insert("type".into(), "function".into());
    out.insert("name".into(), f.get("name")?.clone());
    for key in ["description", "parameters", "strict"] {
        if let Some(v) = f.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    Some(Value::Object(out))
}

fn tool_choice(choice: &Value) -> Option<Value> {
    match choice {
        Value::String(_) => Some(choice.clone()),
        Value::Object(o) => {
            let name = o.get("function").and_then(|f| f.get("name"))?;
            Some(json!({"type": "function", "name": name}))
        }
        _ => None,
    }
}

/// Chat's `response_format` → `text.format`.
fn text_format(format: &Value) -> Option<Value> {
    match format.get("type").and_then(Value::as_str)? {
        "json_object" => Some(json!({"type": "json_object"})),
        "json_schema" => {
            let mut out = Map::new();
            out.insert("type".into(), "json_schema".into());
            if let Some(Value::Object(schema)) = format.get("json_schema") {
                for key in ["name", "schema", "strict", "description"] {
                    if let Some(v) = schema.get(key) {
                        out.insert(key.into(), v.clone());
                    }
                }
            }
            Some(Value::Object(out))
        }
        _ => None,
    }
}

/// The usage of a `response` object: input tokens include cached ones, output tokens
/// include reasoning ones, as in chat completions.
fn usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    let n = |p: &str| u.pointer(p).and_then(Value::as_u64);
    Some(Usage {
        prompt_tokens: n("/input_tokens").unwrap_or(0),
        completion_tokens: n("/output_tokens").unwrap_or(0),
        reasoning_tokens: n("/output_tokens_details/reasoning_tokens"),
        cached_tokens: n("/input_tokens_details/cached_tokens"),
        cache_creation_tokens: None,
    })
}

/// Why a `response` ended, as a chat `finish_reason`.
fn finish_reason(response: &Value, called: bool) -> &'static str {
    match response.get("status").and_then(Value::as_str) {
        Some("incomplete") => {
            match response
                .pointer("/incomplete_details/reason")
                .and_then(Value::as_str)
            {
                Some("content_filter") => "content_filter",
                _ => "length",
            }
        }
        _ if called => "tool_calls",
        _ => "stop",
    }
}

/// A failed response's error, or a stream's `error` event.
fn error(v: &Value) -> Delta {
    let e = v.get("error").filter(|e| e.is_object()).unwrap_or(v);
    Delta::Error {
        kind: e
            .get("code")
            .or(e.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("server_error")
            .to_string(),
        message: e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("upstream error")
            .to_string(),
    }
}

/// The text of a reasoning item: its summary parts, else its raw reasoning text (open-model
/// servers show the reasoning itself).
fn reasoning_text(item: &Value) -> String {
    let parts = |key: &str| -> Vec<&str> {
        item.get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect()
    };
    let summary = parts("summary");
    if summary.is_empty() {
        parts("content").join("")
    } else {
        summary.join("\n\n")
    }
}

/// A function call's name as chat knows it: a function in a namespace (Codex's tool
/// groups) is `<namespace>__<name>`, as the Responses front end names it.
fn call_name(item: &Value) -> String {
    let name = str_field(item, "name");
    match item.get("namespace").and_then(Value::as_str) {
        Some(ns) => crate::canonical::namespaced(ns, &name),
        None => name,
    }
}

/// A whole `response` object as deltas, in output order.
pub fn decode_response(bytes: &[u8]) -> Result<Vec<Delta>, String> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not a Responses response: {e}"))?;
    if v.get("object").and_then(Value::as_str) != Some("response") {
        return Err("not a Responses response: its `object` is not `response`".into());
    }
    let mut out = vec![Delta::Start {
        id: str_field(&v, "id"),
        model: str_field(&v, "model"),
    }];
    if v.get("status").and_then(Value::as_str) == Some("failed") {
        out.push(error(v.get("error").unwrap_or(&Value::Null)));
        return Ok(out);
    }
    let output = v
        .get("output")
        .and_then(Value::as_array)
        .ok_or("not a Responses response: it has no `output` list")?;
    let mut calls = 0;
    for item in output {
        match item.get("type").and_then(Value::as_str) {
            Some("reasoning") => {
                let text = reasoning_text(item);
                if !text.is_empty() {
                    out.push(Delta::Reasoning(text));
                }
                if item.get("encrypted_content").is_some_and(Value::is_string) {
                    out.push(Delta::ReasoningBlock(item.clone()));
                }
            }
            Some("message") => {
                for part in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    match part.get("type").and_then(Value::as_str) {
                        Some("output_text") => out.push(Delta::Content(str_field(part, "text"))),
                        Some("refusal") => out.push(Delta::Content(str_field(part, "refusal"))),
                        _ => {}
                    }
                }
            }
            Some("function_call") => {
                out.push(Delta::ToolCallStart {
                    index: calls,
                    id: str_field(item, "call_id"),
                    name: call_name(item),
                });
                out.push(Delta::ToolCallArguments {
                    index: calls,
                    arguments: str_field(item, "arguments"),
                });
                calls += 1;
            }
            // Hosted tools' items and items added later are not shown.
            _ => {}
        }
    }
    if let Some(u) = usage(&v) {
        out.push(Delta::Usage(u));
    }
    out.push(Delta::Finish(finish_reason(&v, calls > 0).to_string()));
    Ok(out)
}

/// Turns the Responses event stream into deltas; keeps the state the events refer back to.
#[derive(Default)]
pub struct StreamDecoder {
    /// Output index of a function call item → its index among the response's calls.
    calls: HashMap<u64, usize>,
    /// Output index of a reasoning item → the summary part last shown of it.
    summary_part: HashMap<u64, u64>,
    /// A terminal event (`response.completed`, `.incomplete`, `.failed`) was seen.
    pub done: bool,
}

impl StreamDecoder {
    /// The deltas of one SSE event (`name` is the `event:` line, `data` its JSON).
    pub fn event(&mut self, name: &str, data: &str) -> Result<Vec<Delta>, String> {
        let v: Value =
            serde_json::from_str(data).map_err(|e| format!("unreadable `{name}` event: {e}"))?;
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(name);
        let index = v.get("output_index").and_then(Value::as_u64).unwrap_or(0);
        let text = |key: &str| str_field(&v, key);
        let mut out = Vec::new();
        match kind {
            "response.created" => {
                let r = v.get("response").unwrap_or(&Value::Null);
                out.push(Delta::Start {
                    id: str_field(r, "id"),
                    model: str_field(r, "model"),
                });
            }
            "response.output_item.added" => {
                let item = v.get("item").unwrap_or(&Value::Null);
                if item.get("type").and_then(Value::as_str) == Some("function_call") {
                    let call = self.calls.len();
                    self.calls.insert(index, call);
                    out.push(Delta::ToolCallStart {
                        index: call,
                        id: str_field(item, "call_id"),
                        name: call_name(item),
                    });
                }
            }
            "response.output_item.done" => {
                let item = v.get("item").unwrap_or(&Value::Null);
                let is_reasoning = item.get("type").and_then(Value::as_str) == Some("reasoning");
                if is_reasoning && item.get("encrypted_content").is_some_and(Value::is_string) {
                    out.push(Delta::ReasoningBlock(item.clone()));
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                out.push(Delta::Content(text("delta")))
            }
            "response.reasoning_summary_text.delta" => {
                // Summary parts are set apart by a blank line, as the whole response's are.
                let part = v.get("summary_index").and_then(Value::as_u64).unwrap_or(0);
                if self
                    .summary_part
                    .insert(index, part)
                    .is_some_and(|p| p != part)
                {
                    out.push(Delta::Reasoning("\n\n".into()));
                }
                out.push(Delta::Reasoning(text("delta")))
            }
            "response.reasoning_text.delta" => out.push(Delta::Reasoning(text("delta"))),
            "response.function_call_arguments.delta" => {
                if let Some(call) = self.calls.get(&index) {
                    out.push(Delta::ToolCallArguments {
                        index: *call,
                        arguments: text("delta"),
                    });
                }
            }
            "response.completed" | "response.incomplete" => {
                self.done = true;
                let r = v.get("response").unwrap_or(&Value::Null);
                if let Some(u) = usage(r) {
                    out.push(Delta::Usage(u));
                }
                out.push(Delta::Finish(
                    finish_reason(r, !self.calls.is_empty()).to_string(),
                ));
            }
            "response.failed" => {
                self.done = true;
                let r = v.get("response").unwrap_or(&Value::Null);
                out.push(error(r.get("error").unwrap_or(&Value::Null)));
            }
            "error" => out.push(error(&v)),
            // Part and item bookkeeping, `.done` events repeating the deltas, events added
            // later.
            _ => {}
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> ChatRequest {
        crate::ingress::parse_chat(body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn a_chat_request_becomes_input_items_and_flat_tools() {
        let req = chat(
            json!({"model": "m", "max_completion_tokens": 50, "reasoning_effort": "low",
            "response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": {"type": "object"}}},
            "tools": [{"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "get"}},
            "messages": [
                {"role": "system", "content": "rules"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get", "arguments": "{}"}}],
                 "thinking_blocks": [{"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "enc"},
                                     {"type": "thinking", "thinking": "x", "signature": "s"}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}
            ]}),
        );
        let out = Value::Object(request_body(&req, "gpt-5").unwrap());
        let kinds: Vec<&str> = out["input"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["type"].as_str().or(i["role"].as_str()).unwrap())
            .collect();
        // Only the Responses API's own reasoning goes back; Anthropic's signed block does not.
        assert_eq!(
            kinds,
            [
                "system",
                "user",
                "reasoning",
                "function_call",
                "function_call_output"
            ]
        );
        assert_eq!(out["max_output_tokens"], 50);
        assert_eq!(out["reasoning"]["effort"], "low");
        assert_eq!(out["text"]["format"]["name"], "o");
        assert_eq!(
            out["tools"][0],
            json!({"type": "function", "name": "get", "parameters": {"type": "object"}})
        );
        assert_eq!(
            out["tool_choice"],
            json!({"type": "function", "name": "get"})
        );
        assert_eq!(out["store"], false);
        // Content the Responses API cannot take is refused by its place in the request.
        for (part, param) in [
            (
                json!({"type": "image_url", "image_url": {"url": "ftp://host/cat.png"}}),
                "messages[0].content[1].image_url.url",
            ),
            (
                json!({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}),
                "messages[0].content[1].type",
            ),
        ] {
            let body = json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}]});
            let err = request_body(&chat(body), "gpt-5").unwrap_err();
            assert_eq!(err.param.as_deref(), Some(param), "{}", err.message);
        }
        for (field, value) in [("stop", json!("x")), ("seed", json!(1)), ("n", json!(2))] {
            let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            body[field] = value;
            let err = request_body(&chat(body), "gpt-5").unwrap_err();
            assert_eq!(err.param.as_deref(), Some(field));
        }
    }

    #[test]
    fn a_native_body_gets_the_stored_conversation_in_front() {
        let Value::Object(native) = json!({"model": "gpt", "previous_response_id": "resp_1",
            "input": [{"type": "reasoning", "id": "rs_9", "summary": [], "encrypted_content": "e"},
                      {"role": "user", "content": "next"}], "include": ["reasoning.encrypted_content"]})
        else {
            unreachable!()
        };
        let history = vec![
            json!({"role": "user", "content": "first"}),
            json!({"role": "assistant", "content": "answer"}),
        ];
        let out = Value::Object(native_body(&native, &history, "gpt-5", true).unwrap());
        assert!(out.get("previous_response_id").is_none());
        assert_eq!(out["input"].as_array().unwrap().len(), 4);
        assert_eq!(out["input"][2]["encrypted_content"], "e");
        assert_eq!(out["include"][0], "reasoning.encrypted_content");
        assert_eq!(
            (&out["stream"], &out["store"]),
            (&json!(true), &json!(false))
        );
    }

    #[test]
    fn a_whole_response_becomes_deltas_in_output_order() {
        let body = json!({"object": "response", "id": "resp_1", "model": "gpt-5", "status": "completed",
            "output": [
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "a"}, {"type": "summary_text", "text": "b"}], "encrypted_content": "enc"},
                {"type": "message", "content": [{"type": "output_text", "text": "hi"}]},
                {"type": "function_call", "call_id": "c1", "namespace": "agents", "name": "spawn", "arguments": "{}"},
                {"type": "web_search_call", "id": "ws_1"}
            ],
            "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 5}}});
        let d = decode_response(body.to_string().as_bytes()).unwrap();
        assert_eq!(d[1], Delta::Reasoning("a\n\nb".into()));
        assert!(matches!(&d[2], Delta::ReasoningBlock(b) if b["encrypted_content"] == "enc"));
        assert_eq!(d[3], Delta::Content("hi".into()));
        assert!(matches!(&d[4], Delta::ToolCallStart { name, .. } if name == "agents__spawn"));
        let usage = d
            .iter()
            .find_map(|x| match x {
                Delta::Usage(u) => Some(*u),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.reasoning_tokens,
                usage.cached_tokens
            ),
            (10, 7, Some(5), Some(4))
        );
        assert_eq!(d.last(), Some(&Delta::Finish("tool_calls".into())));

        let cut = json!({"object": "response", "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}, "output": []});
        let d = decode_response(cut.to_string().as_bytes()).unwrap();
        assert_eq!(d.last(), Some(&Delta::Finish("length".into())));
        let failed = json!({"object": "response", "status": "failed", "error": {"code": "server_error", "message": "boom"}, "output": []});
        let d = decode_response(failed.to_string().as_bytes()).unwrap();
        assert!(matches!(d.last(), Some(Delta::Error { message, .. }) if message == "boom"));
        assert!(decode_response(br#"{"object":"chat.completion"}"#).is_err());
    }

    #[test]
    fn the_event_stream_becomes_deltas_and_ends_at_its_terminal_event() {
        let mut d = StreamDecoder::default();
        let mut all = Vec::new();
        for (name, data) in [
            (
                "response.created",
                json!({"response": {"id": "resp_1", "model": "gpt-5"}}),
            ),
            (
                "response.reasoning_summary_text.delta",
                json!({"output_index": 0, "summary_index": 0, "delta": "a"}),
            ),
            (
                "response.reasoning_summary_text.delta",
                json!({"output_index": 0, "summary_index": 1, "delta": "b"}),
            ),
            (
                "response.output_item.done",
                json!({"output_index": 0, "item": {"type": "reasoning", "encrypted_content": "enc"}}),
            ),
            (
                "response.output_text.delta",
                json!({"output_index": 1, "delta": "hi"}),
            ),
            (
                "response.output_item.added",
                json!({"output_index": 2, "item": {"type": "function_call", "call_id": "c1", "name": "get"}}),
            ),
            (
                "response.function_call_arguments.delta",
                json!({"output_index": 2, "delta": "{}"}),
            ),
            (
                "response.completed",
                json!({"response": {"status": "completed", "usage": {"input_tokens": 3, "output_tokens": 4}}}),
            ),
        ] {
            assert!(!d.done);
            all.extend(d.event(name, &data.to_string()).unwrap());
        }
        assert!(d.done);
        let reasoning: String = all
            .iter()
            .filter_map(|x| match x {
                Delta::Reasoning(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(reasoning, "a\n\nb");
        assert!(all.iter().any(|x| matches!(x, Delta::ReasoningBlock(_))));
        assert!(all.contains(&Delta::ToolCallArguments {
            index: 0,
            arguments: "{}".into()
        }));
        assert_eq!(all.last(), Some(&Delta::Finish("tool_calls".into())));

        let mut d = StreamDecoder::default();
        let failed =
            json!({"response": {"error": {"code": "rate_limit_exceeded", "message": "slow down"}}});
        let out = d.event("response.failed", &failed.to_string()).unwrap();
        assert!(d.done);
        assert!(matches!(&out[0], Delta::Error { kind, .. } if kind == "rate_limit_exceeded"));
    }
}
