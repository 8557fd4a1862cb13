//! An OpenAI Responses API request → the canonical [`ChatRequest`], so that it takes the
//! one request path. `instructions` become the first system message; `input` items become
//! chat messages (`function_call` items the assistant's tool calls, `function_call_output`
//! items `tool` messages); a stored conversation (`previous_response_id`) goes first;
//! `reasoning.effort` is `reasoning_effort` and `max_output_tokens` the output cap, both
//! feeding the mode and budget as on chat. What chat cannot carry (hosted tools such as
//! `web_search`, files, `background`) is a 400 naming the field.

use serde_json::{json, Map, Value};
use thinkgate_config::WireFormat;

use crate::canonical::{ChatRequest, NativeBody};
use crate::error::ApiError;

/// What the answer must echo and the store must keep, beside the chat request.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub chat: ChatRequest,
    /// The conversation a continuation replays: the stored history, then this request's
    /// turns, as chat messages (without the instructions, which it does not inherit).
    pub conversation: Vec<Value>,
    /// The stored conversation this one continues.
    pub previous_response_id: Option<String>,
    pub store: bool,
    /// The request's own fields the response object echoes (`instructions`, `tools`, ...).
    pub echo: Map<String, Value>,
    /// Tool namespaces, whose functions chat knows as `<namespace>__<name>`.
    pub namespaces: Vec<String>,
    /// Hosted tools left out (see [`HOSTED_DROPPED`]), for the response to say so.
    pub dropped_tools: Vec<String>,
}

/// Hosted tools that run on OpenAI's side. Agents send `web_search` on every request
/// (Codex does, even with `external_web_access = false`); refusing it would make them
/// unusable, and leaving it out changes nothing but that the model cannot search, which the
/// response says (`x-thinkgate-dropped-tools`). Other hosted tools act on the client's
/// files or machine and are refused.
pub const HOSTED_DROPPED: [&str; 3] = ["web_search", "web_search_preview", "image_generation"];

pub use crate::canonical::namespaced;

/// Whether `tool` is one of the [`HOSTED_DROPPED`] tools.
fn is_dropped(tool: &Value) -> bool {
    tool.get("type")
        .and_then(Value::as_str)
        .is_some_and(|kind| HOSTED_DROPPED.contains(&kind))
}

/// Top-level fields the chat path cannot express.
const INEXPRESSIBLE: [&str; 3] = ["conversation", "prompt", "background"];

/// Fields echoed in the response object as the client sent them.
const ECHOED: [&str; 11] = [
    "instructions",
    "max_output_tokens",
    "metadata",
    "parallel_tool_calls",
    "previous_response_id",
    "reasoning",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
];

fn field(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_request(message).with_param(param)
}

/// The body, parsed; `history` is the stored conversation `previous_response_id` names
/// (looked up by the caller, which knows the key). The body is kept for an upstream that
/// speaks the Responses API, minus the hosted tools left out for every upstream.
pub fn to_chat(mut body: Map<String, Value>, history: Vec<Value>) -> Result<Parsed, ApiError> {
    let stored = history.len();
    let mut parsed = translate(&body, history)?;
    if !parsed.dropped_tools.is_empty() {
        if let Some(Value::Array(tools)) = body.get_mut("tools") {
            tools.retain(|t| !is_dropped(t));
        }
    }
    let history = parsed.conversation[..stored].to_vec();
    parsed.chat.native = Some(NativeBody::new(WireFormat::Responses, body, history));
    Ok(parsed)
}

fn translate(body: &Map<String, Value>, history: Vec<Value>) -> Result<Parsed, ApiError> {
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    if model.is_empty() {
        return Err(field("model", "`model` is required"));
    }
    for key in INEXPRESSIBLE {
        let set = match body.get(key) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(_) => true,
        };
        if set {
            return Err(field(
                key,
                format!(
                    "`{key}` cannot be translated to the chat format this proxy routes through"
                ),
            ));
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), model.into());
    let turns = input_messages(body.get("input"))?;
    let mut messages = Vec::with_capacity(turns.len() + history.len() + 1);
    match body.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(_) => return Err(field("instructions", "`instructions` must be a string")),
    }
    let mut conversation = history;
    conversation.extend(turns);
    messages.extend(conversation.iter().cloned());
    if messages.is_empty() {
        return Err(field("input", "`input` is required"));
    }
    out.insert("messages".into(), Value::Array(messages));
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(field("stream", "`stream` must be a boolean")),
    };
    if stream {
        out.insert("stream".into(), true.into());
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    scalars(body, &mut out)?;
    let mut namespaces = Vec::new();
    let mut dropped_tools = Vec::new();
    if let Some(tools) = body.get("tools").filter(|t| !t.is_null()) {
        let tools = translate_tools(tools, &mut namespaces, &mut dropped_tools)?;
        if !tools.is_empty() {
            out.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(choice) = body.get("tool_choice").filter(|c| !c.is_null()) {
        out.insert("tool_choice".into(), tool_choice(choice)?);
    }
    if let Some(format) = body.get("text").and_then(|t| t.get("format")) {
        if let Some(rf) = response_format(format)? {
            out.insert("response_format".into(), rf);
        }
    }
    let has_tools = out.get("tools").is_some();
    let echo = ECHOED
        .iter()
        .filter_map(|k| body.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    Ok(Parsed {
        chat: ChatRequest {
            model: model.to_string(),
            stream,
            include_usage: stream,
            has_tools,
            body: out,
            native: None,
        },
        conversation,
        previous_response_id: body
            .get("previous_response_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        store: body.get("store").and_then(Value::as_bool).unwrap_or(true),
        echo,
        namespaces,
        dropped_tools,
    })
}

fn scalars(body: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), ApiError> {
    for key in ["temperature", "top_p"] {
        match body.get(key) {
            None | Some(Value::Null) => {}
            Some(v @ Value::Number(_)) => drop(out.insert(key.into(), v.clone())),
            Some(_) => return Err(field(key, format!("`{key}` must be a number"))),
        }
    }
    match body.get("max_output_tokens") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_u64().is_some() => drop(out.insert("max_tokens".into(), v.clone())),
        Some(_) => {
            return Err(field(
                "max_output_tokens",
                "`max_output_tokens` must be a positive integer",
            ))
        }
    }
    if let Some(p) = body.get("parallel_tool_calls").and_then(Value::as_bool) {
        out.insert("parallel_tool_calls".into(), p.into());
    }
    if let Some(u) = body.get("user").and_then(Value::as_str) {
        out.insert("user".into(), u.into());
    }
    if let Some(effort) = body
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .and_then(Value::as_str)
    {
        out.insert("reasoning_effort".into(), effort.into());
    }
    Ok(())
}

/// `input`: a string (one user turn) or a list of items.
fn input_messages(input: Option<&Value>) -> Result<Vec<Value>, ApiError> {
    let items = match input {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(vec![json!({"role": "user", "content": s})]),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(field(
                "input",
                "`input` must be a string or a list of input items",
            ))
        }
    };
    let mut out: Vec<Value> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("input[{i}]");
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        match kind {
            "message" => out.push(message_item(item, &at)?),
            "function_call" => {
                let name = required_str(item, "name", &at)?;
                let name = match item.get("namespace").and_then(Value::as_str) {
                    Some(ns) => namespaced(ns, name),
                    None => name.to_string(),
                };
                let call = json!({
                    "id": required_str(item, "call_id", &at)?,
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": item.get("arguments").and_then(Value::as_str).unwrap_or(""),
                    },
                });
                // Calls of one turn join the assistant message they follow.
                match out.last_mut() {
                    Some(last) if last["role"] == "assistant" => {
                        let calls = last
                            .as_object_mut()
                            .map(|m| m.entry("tool_calls").or_insert_with(|| json!([])));
                        if let Some(Value::Array(calls)) = calls {
                            calls.push(call);
                        }
                    }
                    _ => out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            "function_call_output" => {
                let output = match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    _ => return Err(field(&format!("{at}.output"), format!("`{at}.output` is required"))),
                };
                out.push(json!({
                    "role": "tool",
                    "tool_call_id": required_str(item, "call_id", &at)?,
                    "content": output,
                }));
            }
            // Reasoning the upstream gave before: chat has nowhere to send it back.
            "reasoning" => {}
            other => {
                return Err(field(
                    &format!("{at}.type"),
                    format!("`{at}.type` `{other}` cannot be translated to the chat format this proxy routes through"),
                ))
            }
        }
    }
    Ok(out)
}

fn required_str<'a>(item: &'a Value, key: &str, at: &str) -> Result<&'a str, ApiError> {
    item.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| field(&format!("{at}.{key}"), format!("`{at}.{key}` is required")))
}

fn message_item(item: &Value, at: &str) -> Result<Value, ApiError> {
    let role = item.get("role").and_then(Value::as_str).unwrap_or("");
    if !["user", "assistant", "system", "developer"].contains(&role) {
        let shown = if role.is_empty() { "(missing)" } else { role };
        return Err(field(
            &format!("{at}.role"),
            format!("`{at}.role` `{shown}` is not one of user, assistant, system, developer"),
        ));
    }
    let content = match item.get("content") {
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Array(parts)) => content_parts(parts, at, role)?,
        _ => {
            return Err(field(
                &format!("{at}.content"),
                format!("`{at}.content` must be a string or a list of content parts"),
            ))
        }
    };
    // `developer` is OpenAI's newer name for `system`; every chat server reads the older one.
    let role = if role == "developer" { "system" } else { role };
    Ok(json!({"role": role, "content": content}))
}

/// Content parts as chat parts; text-only content as one string (what every chat server
/// takes, and what assistant turns must be).
fn content_parts(parts: &[Value], at: &str, role: &str) -> Result<Value, ApiError> {
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        match p.get("type").and_then(Value::as_str).unwrap_or("") {
            "input_text" | "output_text" | "text" => out.push(json!({
                "type": "text",
                "text": p.get("text").and_then(Value::as_str).unwrap_or(""),
            })),
            "refusal" => out.push(json!({
                "type": "text",
                "text": p.get("refusal").and_then(Value::as_str).unwrap_or(""),
            })),
            "input_image" => match p.get("image_url").and_then(Value::as_str) {
                Some(url) => out.push(json!({"type": "image_url", "image_url": {"url": url}})),
                None => {
                    return Err(field(
                        &format!("{at}.image_url"),
                        format!("`{at}.image_url` is required (file ids cannot be translated)"),
                    ))
                }
            },
            other => {
                return Err(field(
                    &format!("{at}.type"),
                    format!("`{at}.type` `{other}` cannot be translated to the chat format this proxy routes through"),
                ))
            }
        }
    }
    let text_only = out.iter().all(|p| p["type"] == "text");
    if text_only && (role != "user" || out.len() <= 1) {
        let joined: Vec<&str> = out.iter().filter_map(|p| p["text"].as_str()).collect();
        return Ok(Value::String(joined.join("\n")));
    }
    Ok(Value::Array(out))
}

fn translate_tools(
    tools: &Value,
    namespaces: &mut Vec<String>,
    dropped: &mut Vec<String>,
) -> Result<Vec<Value>, ApiError> {
    let Value::Array(tools) = tools else {
        return Err(field("tools", "`tools` must be a list"));
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        let at = format!("tools[{i}]");
        match t.get("type").and_then(Value::as_str).unwrap_or("") {
            "function" => out.push(function_tool(t, &at, None)?),
            "namespace" => {
                let ns = required_str(t, "name", &at)?;
                let inner = t.get("tools").and_then(Value::as_array);
                for (j, f) in inner.into_iter().flatten().enumerate() {
                    let at = format!("{at}.tools[{j}]");
                    match f.get("type").and_then(Value::as_str).unwrap_or("") {
                        "function" => out.push(function_tool(f, &at, Some(ns))?),
                        other => return Err(untranslatable_tool(&at, other)),
                    }
                }
                namespaces.push(ns.to_string());
            }
            hosted if is_dropped(t) => dropped.push(hosted.to_string()),
            other => return Err(untranslatable_tool(&at, other)),
        }
    }
    Ok(out)
}

fn untranslatable_tool(at: &str, kind: &str) -> ApiError {
    field(
        &format!("{at}.type"),
        format!("`{at}.type` `{kind}` cannot be translated to the chat format this proxy routes through; function tools can"),
    )
}

fn function_tool(t: &Value, at: &str, namespace: Option<&str>) -> Result<Value, ApiError> {
    let name = required_str(t, "name", at)?;
    let mut function = Map::new();
    let name = namespace.map_or_else(|| name.to_string(), |ns| namespaced(ns, name));
    function.insert("name".into(), name.into());
    for key in ["description", "parameters", "strict"] {
        if let Some(v) = t.get(key).filter(|v| !v.is_null()) {
            function.insert(key.into(), v.clone());
        }
    }
    Ok(json!({"type": "function", "function": function}))
}

fn tool_choice(choice: &Value) -> Result<Value, ApiError> {
    match choice {
        Value::String(s) if ["auto", "none", "required"].contains(&s.as_str()) => {
            Ok(choice.clone())
        }
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = required_str(choice, "name", "tool_choice")?;
            Ok(json!({"type": "function", "function": {"name": name}}))
        }
        _ => Err(field(
            "tool_choice",
            "`tool_choice` must be auto, none, required or a function",
        )),
    }
}

fn response_format(format: &Value) -> Result<Option<Value>, ApiError> {
    match format.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            for key in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(key) {
                    schema.insert(key.into(), v.clone());
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        Some(other) => Err(field(
            "text.format.type",
            format!("`text.format.type` `{other}` is not one of text, json_object, json_schema"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value, history: Vec<Value>) -> Result<Parsed, ApiError> {
        let Value::Object(body) = v else { panic!() };
        to_chat(body, history)
    }

    #[test]
    fn items_become_chat_turns_after_the_instructions_and_history() {
        let p = parse(
            json!({
                "model": "m", "instructions": "Be brief.", "stream": true, "max_output_tokens": 500,
                "reasoning": {"effort": "low", "summary": "auto"},
                "tools": [{"type": "function", "name": "get", "parameters": {"type": "object"}, "strict": true}],
                "tool_choice": {"type": "function", "name": "get"},
                "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}}},
                "input": [
                    {"type": "function_call", "call_id": "call_1", "name": "get", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "call_1", "output": "42"},
                    {"type": "reasoning", "id": "rs_1", "summary": []},
                    {"role": "user", "content": [{"type": "input_text", "text": "and?"}]}
                ]
            }),
            vec![json!({"role": "user", "content": "first"})],
        )
        .unwrap();
        let b = Value::Object(p.chat.body.clone());
        let roles: Vec<&str> = b["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
        assert_eq!(b["messages"][2]["tool_calls"][0]["id"], "call_1");
        assert_eq!(b["messages"][4]["content"], "and?");
        assert_eq!(b["max_tokens"], 500);
        assert_eq!(b["reasoning_effort"], "low");
        assert_eq!(b["tools"][0]["function"]["strict"], true);
        assert_eq!(b["tool_choice"]["function"]["name"], "get");
        assert_eq!(b["response_format"]["json_schema"]["name"], "out");
        assert_eq!(b["stream_options"]["include_usage"], true);
        // A continuation replays the history and these turns, not the instructions.
        assert_eq!(p.conversation.len(), 1 + 3);
        assert!(p.store && p.chat.has_tools);
    }

    #[test]
    fn namespaces_flatten_and_web_search_is_left_out() {
        let p = parse(
            json!({"model": "m", "input": [
                {"role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
                {"type": "function_call", "call_id": "c", "namespace": "agents", "name": "spawn", "arguments": "{}"}
            ], "tools": [
                {"type": "namespace", "name": "agents", "description": "Sub-agents.",
                 "tools": [{"type": "function", "name": "spawn", "parameters": {"type": "object"}}]},
                {"type": "web_search", "external_web_access": false}
            ]}),
            Vec::new(),
        )
        .unwrap();
        let b = Value::Object(p.chat.body);
        assert_eq!(b["tools"][0]["function"]["name"], "agents__spawn");
        assert_eq!(b["tools"].as_array().unwrap().len(), 1);
        assert_eq!(b["messages"][0]["role"], "system");
        assert_eq!(
            b["messages"][1]["tool_calls"][0]["function"]["name"],
            "agents__spawn"
        );
        assert_eq!(p.namespaces, ["agents"]);
        assert_eq!(p.dropped_tools, ["web_search"]);
    }

    #[test]
    fn what_chat_cannot_carry_is_refused_by_field() {
        for (body, param) in [
            (json!({"input": "x"}), "model"),
            (json!({"model": "m"}), "input"),
            (
                json!({"model": "m", "input": "x", "background": true}),
                "background",
            ),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "file_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"model": "m", "input": [{"type": "computer_call"}]}),
                "input[0].type",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}),
                "input[0].content[0].type",
            ),
        ] {
            let err = parse(body.clone(), Vec::new()).unwrap_err();
            assert_eq!(err.param.as_deref(), Some(param), "{body}: {}", err.message);
        }
    }
}
