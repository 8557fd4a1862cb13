//! An Anthropic Messages request → the canonical [`ChatRequest`] (an OpenAI chat body), so
//! that it takes the one request path: plan, key admission, attempts, budget guard.
//!
//! What the chat format cannot carry is a 400 naming the field (`mcp_servers`, a server
//! tool, a document block); what it carries differently is moved: the system prompt becomes
//! the first message, `tool_result` blocks become `tool` messages ahead of the user turn's
//! other blocks, `thinking` and `redacted_thinking` blocks travel as the assistant turn's
//! `thinking_blocks` (the form the Anthropic upstream adapter sends back byte for byte), a
//! `thinking.budget_tokens` is an ask (`reasoning.max_tokens`) that the mode and key clamp.

use serde_json::{json, Map, Value};
use thinkgate_config::WireFormat;

use crate::canonical::{ChatRequest, NativeBody};
use crate::error::ApiError;

/// Top-level fields the chat format cannot express.
const INEXPRESSIBLE: [&str; 2] = ["mcp_servers", "container"];

/// Translates a parsed Messages body. `count_only` is `/v1/messages/count_tokens`, which
/// needs no `max_tokens`. Other top-level fields — `context_management`, `service_tier`,
/// and `cache_control` on blocks — steer features on Anthropic's side that chat has no
/// counterpart for and that do not change what the answer may contain: they are left out,
/// not refused, since Claude Code sends them on every request.
pub fn to_chat(body: Map<String, Value>, count_only: bool) -> Result<ChatRequest, ApiError> {
    let chat = translate(&body, count_only)?;
    // Kept whole for an Anthropic upstream: moved, not copied (Claude Code's turns run to
    // tens of kilobytes).
    Ok(ChatRequest {
        native: Some(NativeBody::new(WireFormat::Anthropic, body, Vec::new())),
        ..chat
    })
}

/// The canonical chat request a Messages body asks for.
fn translate(body: &Map<String, Value>, count_only: bool) -> Result<ChatRequest, ApiError> {
    let mut out = Map::new();
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    if model.is_empty() {
        return Err(field(
            "model",
            "model: a model name is required (a configured id, `auto`, or a mapped name)",
        ));
    }
    out.insert("model".into(), model.into());
    match body.get("max_tokens") {
        Some(Value::Number(n)) if n.as_u64().is_some() => {
            out.insert("max_tokens".into(), Value::Number(n.clone()));
        }
        None if count_only => {}
        None => return Err(field("max_tokens", "max_tokens: Field required")),
        Some(_) => {
            return Err(field(
                "max_tokens",
                "max_tokens: must be a positive integer",
            ));
        }
    }
    for key in INEXPRESSIBLE {
        if body.get(key).is_some_and(|v| !v.is_null()) {
            return Err(field(
                key,
                format!("{key}: cannot be translated to the chat format this proxy routes through"),
            ));
        }
    }
    let mut messages = Vec::new();
    if let Some(system) = body.get("system") {
        let text = system_text(system)?;
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let turns = match body.get("messages") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => {
            return Err(field(
                "messages",
                "messages: at least one message is required",
            ))
        }
        Some(_) => return Err(field("messages", "messages: must be a list of messages")),
        None => return Err(field("messages", "messages: Field required")),
    };
    for (i, turn) in turns.iter().enumerate() {
        turn_messages(turn, i, &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(field("stream", "stream: must be a boolean")),
    };
    if stream {
        out.insert("stream".into(), true.into());
        // The final usage chunk is what `message_delta` reports.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    sampling(body, &mut out)?;
    if let Some(tools) = body.get("tools") {
        let tools = translate_tools(tools)?;
        if !tools.is_empty() {
            out.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(choice) = body.get("tool_choice") {
        tool_choice(choice, &mut out)?;
    }
    thinking(body, &mut out)?;
    let has_tools = out
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    Ok(ChatRequest {
        model: model.to_string(),
        stream,
        include_usage: stream,
        has_tools,
        body: out,
        native: None,
    })
}

/// A 400 in the shape of Anthropic's own (`messages.0.content.1.type: ...`), naming the field.
fn field(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_request(message).with_param(param)
}

fn system_text(system: &Value) -> Result<String, ApiError> {
    match system {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(blocks) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (i, b) in blocks.iter().enumerate() {
                match (block_type(b), b.get("text").and_then(Value::as_str)) {
                    ("text", Some(t)) => texts.push(t),
                    ("text", None) => {
                        return Err(field(
                            &format!("system.{i}.text"),
                            format!("system.{i}.text: Field required"),
                        ))
                    }
                    (other, _) => {
                        return Err(field(
                            &format!("system.{i}.type"),
                            format!("system.{i}.type: only text blocks are allowed in the system prompt, not `{other}`"),
                        ))
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        _ => Err(field(
            "system",
            "system: must be a string or a list of text blocks",
        )),
    }
}

fn block_type(block: &Value) -> &str {
    block.get("type").and_then(Value::as_str).unwrap_or("")
}

/// One Anthropic turn as chat messages: a user turn's tool results come first, as `tool`
/// messages (chat requires them right after the assistant's calls).
fn turn_messages(turn: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let role = turn.get("role").and_then(Value::as_str).unwrap_or("");
    if !["user", "assistant", "system"].contains(&role) {
        let shown = if role.is_empty() { "(missing)" } else { role };
        return Err(field(
            &format!("messages.{i}.role"),
            format!("messages.{i}.role: `{shown}` is not one of user, assistant, system"),
        ));
    }
    // A system turn inside the conversation (Claude Code sends them, under the
    // `mid-conversation-system` beta) is a chat system message where it stands.
    if role == "system" {
        let content = turn.get("content").unwrap_or(&Value::Null);
        let text = system_text(content).map_err(|_| {
            field(
                &format!("messages.{i}.content"),
                format!("messages.{i}.content: a system turn is a string or text blocks"),
            )
        })?;
        out.push(json!({"role": "system", "content": text}));
        return Ok(());
    }
    let blocks = match turn.get("content") {
        Some(Value::String(text)) => {
            out.push(json!({"role": role, "content": text}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(field(
                &format!("messages.{i}.content"),
                format!("messages.{i}.content: must be a string or a list of content blocks"),
            ))
        }
    };
    match role {
        "assistant" => out.push(assistant_turn(blocks, i)?),
        _ => user_turn(blocks, i, out)?,
    }
    Ok(())
}

fn assistant_turn(blocks: &[Value], i: usize) -> Result<Value, ApiError> {
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut thinking = Vec::new();
    let mut reasoning = String::new();
    for (j, b) in blocks.iter().enumerate() {
        let at = format!("messages.{i}.content.{j}");
        match block_type(b) {
            "text" => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            "tool_use" => {
                let id = required_str(b, "id", &at)?;
                let name = required_str(b, "name", &at)?;
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": input.to_string()},
                }));
            }
            // Signed blocks are kept whole: an Anthropic upstream needs them back unchanged.
            // An unsigned one (reasoning from another upstream, or thinking the budget cut,
            // which Anthropic never signed) would be refused there: only its text travels,
            // as the reasoning the history carries for upstreams that read it.
            "thinking" => {
                let signed = b
                    .get("signature")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty());
                if signed {
                    thinking.push(b.clone());
                }
                reasoning.push_str(b.get("thinking").and_then(Value::as_str).unwrap_or(""));
            }
            "redacted_thinking" => thinking.push(b.clone()),
            other => return Err(untranslatable(&at, other, "an assistant turn")),
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    message.insert(
        "content".into(),
        if text.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            text.into()
        },
    );
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    if !thinking.is_empty() {
        message.insert("thinking_blocks".into(), Value::Array(thinking));
    }
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), reasoning.into());
    }
    Ok(Value::Object(message))
}

fn user_turn(blocks: &[Value], i: usize, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let mut parts = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let at = format!("messages.{i}.content.{j}");
        match block_type(b) {
            "text" => parts.push(json!({
                "type": "text",
                "text": b.get("text").and_then(Value::as_str).unwrap_or(""),
            })),
            "image" => parts.push(image_part(b, &at)?),
            "tool_result" => out.push(tool_message(b, &at)?),
            other => return Err(untranslatable(&at, other, "a user turn")),
        }
    }
    match parts.as_slice() {
        [] => {}
        [only] if only["type"] == "text" => {
            out.push(json!({"role": "user", "content": only["text"]}));
        }
        _ => out.push(json!({"role": "user", "content": parts})),
    }
    Ok(())
}

fn required_str<'a>(block: &'a Value, key: &str, at: &str) -> Result<&'a str, ApiError> {
    block.get(key).and_then(Value::as_str).ok_or_else(|| {
        field(
            &format!("{at}.{key}"),
            format!("{at}.{key}: Field required"),
        )
    })
}

fn untranslatable(at: &str, kind: &str, place: &str) -> ApiError {
    let shown = if kind.is_empty() { "(missing)" } else { kind };
    field(
        &format!("{at}.type"),
        format!("{at}.type: a `{shown}` block in {place} cannot be translated to the chat format this proxy routes through"),
    )
}

fn image_part(block: &Value, at: &str) -> Result<Value, ApiError> {
    let source = block.get("source");
    let kind = source
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let url = match kind {
        "base64" => {
            let media = source
                .and_then(|s| s.get("media_type"))
                .and_then(Value::as_str);
            let data = source.and_then(|s| s.get("data")).and_then(Value::as_str);
            match (media, data) {
                (Some(m), Some(d)) => format!("data:{m};base64,{d}"),
                _ => {
                    return Err(field(
                        &format!("{at}.source"),
                        format!("{at}.source: a base64 image needs media_type and data"),
                    ))
                }
            }
        }
        "url" => required_str(
            source.unwrap_or(&Value::Null),
            "url",
            &format!("{at}.source"),
        )?
        .to_string(),
        other => {
            return Err(field(
                &format!("{at}.source.type"),
                format!(
                    "{at}.source.type: `{other}` images cannot be translated (use base64 or url)"
                ),
            ))
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A `tool_result` block as a chat `tool` message (text only: chat tool messages hold no
/// images). An error result is marked in its text, the one place chat can say so.
fn tool_message(block: &Value, at: &str) -> Result<Value, ApiError> {
    let id = required_str(block, "tool_use_id", at)?;
    let mut text = String::new();
    match block.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => text.push_str(s),
        Some(Value::Array(parts)) => {
            for (k, p) in parts.iter().enumerate() {
                match block_type(p) {
                    "text" => {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(p.get("text").and_then(Value::as_str).unwrap_or(""));
                    }
                    other => {
                        return Err(untranslatable(
                            &format!("{at}.content.{k}"),
                            other,
                            "a tool result",
                        ))
                    }
                }
            }
        }
        Some(_) => {
            return Err(field(
                &format!("{at}.content"),
                format!("{at}.content: must be a string or a list of text blocks"),
            ))
        }
    }
    if block.get("is_error").and_then(Value::as_bool) == Some(true) {
        text.insert_str(0, "Error: ");
    }
    Ok(json!({"role": "tool", "tool_call_id": id, "content": text}))
}

fn sampling(body: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), ApiError> {
    for key in ["temperature", "top_p"] {
        match body.get(key) {
            None | Some(Value::Null) => {}
            Some(v @ Value::Number(_)) => drop(out.insert(key.into(), v.clone())),
            Some(_) => return Err(field(key, format!("{key}: must be a number"))),
        }
    }
    match body.get("top_k") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_u64().is_some() => drop(out.insert("top_k".into(), v.clone())),
        Some(_) => return Err(field("top_k", "top_k: must be a positive integer")),
    }
    match body.get("stop_sequences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) if list.iter().all(Value::is_string) => {
            if !list.is_empty() {
                out.insert("stop".into(), Value::Array(list.clone()));
            }
        }
        Some(_) => {
            return Err(field(
                "stop_sequences",
                "stop_sequences: must be a list of strings",
            ))
        }
    }
    if let Some(user) = body
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        out.insert("user".into(), user.into());
    }
    Ok(())
}

fn translate_tools(tools: &Value) -> Result<Vec<Value>, ApiError> {
    let Value::Array(tools) = tools else {
        return Err(field("tools", "tools: must be a list of tools"));
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        let at = format!("tools.{i}");
        match t.get("type").and_then(Value::as_str) {
            None | Some("custom") => {}
            Some(server_tool) => {
                return Err(field(
                    &format!("{at}.type"),
                    format!("{at}.type: the server tool `{server_tool}` runs only on Anthropic's side and cannot be translated"),
                ))
            }
        }
        let name = required_str(t, "name", &at)?;
        let schema = match t.get("input_schema") {
            Some(s @ Value::Object(_)) => s.clone(),
            _ => {
                return Err(field(
                    &format!("{at}.input_schema"),
                    format!("{at}.input_schema: Field required (a JSON schema object)"),
                ))
            }
        };
        let mut function = Map::new();
        function.insert("name".into(), name.into());
        if let Some(d) = t.get("description").and_then(Value::as_str) {
            function.insert("description".into(), d.into());
        }
        function.insert("parameters".into(), schema);
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(out)
}

fn tool_choice(choice: &Value, out: &mut Map<String, Value>) -> Result<(), ApiError> {
    let kind = choice.get("type").and_then(Value::as_str).unwrap_or("");
    let translated = match kind {
        "auto" => json!("auto"),
        "any" => json!("required"),
        "none" => json!("none"),
        "tool" => {
            let name = required_str(choice, "name", "tool_choice")?;
            json!({"type": "function", "function": {"name": name}})
        }
        other => {
            return Err(field(
                "tool_choice.type",
                format!("tool_choice.type: `{other}` is not one of auto, any, tool, none"),
            ))
        }
    };
    out.insert("tool_choice".into(), translated);
    if choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        == Some(true)
    {
        out.insert("parallel_tool_calls".into(), false.into());
    }
    Ok(())
}

/// `thinking` and `output_config.effort` as the asks the budget resolution reads: an
/// enabled budget is `reasoning.max_tokens`, disabled is `reasoning.enabled = false`,
/// adaptive leaves the mode's own budget; an effort is `reasoning_effort`.
fn thinking(body: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), ApiError> {
    if let Some(t) = body.get("thinking").filter(|t| !t.is_null()) {
        match t.get("type").and_then(Value::as_str).unwrap_or("") {
            "enabled" => match t.get("budget_tokens").and_then(Value::as_u64) {
                Some(n) => drop(out.insert("reasoning".into(), json!({"max_tokens": n}))),
                None => {
                    return Err(field(
                        "thinking.budget_tokens",
                        "thinking.budget_tokens: Field required (a positive integer)",
                    ))
                }
            },
            "disabled" => drop(out.insert("reasoning".into(), json!({"enabled": false}))),
            "adaptive" => {}
            other => {
                return Err(field(
                    "thinking.type",
                    format!("thinking.type: `{other}` is not one of enabled, disabled, adaptive"),
                ))
            }
        }
    }
    if let Some(effort) = body
        .get("output_config")
        .and_then(|c| c.get("effort"))
        .and_then(Value::as_str)
    {
        out.insert("reasoning_effort".into(), effort.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(v: Value) -> Result<ChatRequest, ApiError> {
        let Value::Object(body) = v else { panic!() };
        to_chat(body, false)
    }

    #[test]
    fn a_tool_loop_with_thinking_translates_turn_by_turn() {
        let req = translate(json!({
            "model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": true,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "thinking": {"type": "enabled", "budget_tokens": 500},
            "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "system", "content": [{"type": "text", "text": "Tools are available."}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Use the tool.", "signature": "sig=="},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                    {"type": "text", "text": "And tomorrow?"}
                ]}
            ]
        }))
        .unwrap();
        assert!(req.stream && req.include_usage && req.has_tools);
        let b = Value::Object(req.body);
        assert_eq!(
            b["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(
            b["messages"][2],
            json!({"role": "system", "content": "Tools are available."})
        );
        let assistant = &b["messages"][3];
        assert_eq!(assistant["content"], Value::Null);
        assert_eq!(
            assistant["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(assistant["thinking_blocks"][0]["signature"], "sig==");
        assert_eq!(assistant["reasoning_content"], "Use the tool.");
        assert_eq!(
            b["messages"][4],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "18C"})
        );
        assert_eq!(
            b["messages"][5],
            json!({"role": "user", "content": "And tomorrow?"})
        );
        assert_eq!(b["reasoning"], json!({"max_tokens": 500}));
        assert_eq!(b["tool_choice"], "required");
        assert_eq!(b["parallel_tool_calls"], false);
        assert_eq!(
            b["tools"][0]["function"]["parameters"],
            json!({"type": "object"})
        );
        assert_eq!(b["stream_options"]["include_usage"], true);
    }

    #[test]
    fn unsigned_thinking_travels_as_reasoning_only() {
        let req = translate(json!({
            "model": "m", "max_tokens": 10,
            "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "cut short", "signature": ""},
                {"type": "text", "text": "ok"}
            ]}, {"role": "user", "content": "y"}]
        }))
        .unwrap();
        let b = Value::Object(req.body);
        assert_eq!(b["messages"][1]["reasoning_content"], "cut short");
        assert!(b["messages"][1].get("thinking_blocks").is_none(), "{b}");
    }

    #[test]
    fn images_become_data_urls_and_errors_are_marked() {
        let req = translate(json!({
            "model": "m", "max_tokens": 10,
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                {"type": "tool_result", "tool_use_id": "t", "content": "boom", "is_error": true},
                {"type": "text", "text": "what is this?"}
            ]}]
        }))
        .unwrap();
        let b = Value::Object(req.body);
        assert_eq!(b["messages"][0]["content"], "Error: boom");
        assert_eq!(
            b["messages"][1]["content"][0]["image_url"]["url"],
            "data:image/png;base64,AAAA"
        );
    }

    #[test]
    fn what_chat_cannot_carry_is_refused_by_field() {
        for (body, param) in [
            (
                json!({"max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}),
                "model",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
                "max_tokens",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": []}),
                "messages",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "tool", "content": "x"}]}),
                "messages.0.role",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}),
                "messages.0.content.0.type",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
                       "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
                "tools.0.type",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
                       "mcp_servers": [{"url": "https://example.invalid"}]}),
                "mcp_servers",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
                       "thinking": {"type": "enabled"}}),
                "thinking.budget_tokens",
            ),
        ] {
            let err = translate(body.clone()).unwrap_err();
            assert_eq!(err.param.as_deref(), Some(param), "{body}: {}", err.message);
            assert!(err.message.starts_with(param), "{}", err.message);
        }
    }

    #[test]
    fn count_tokens_needs_no_max_tokens() {
        let Value::Object(body) =
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})
        else {
            panic!()
        };
        assert!(to_chat(body, true).is_ok());
    }
}
