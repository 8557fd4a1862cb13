//! The pipeline's answer (an OpenAI chat completion) as a Responses API `response` object:
//! its output items (`reasoning`, `message`, `function_call`), status and usage. The stream
//! translator builds the same [`Output`] event by event and renders the same object at the
//! end, so whole and streamed responses agree item for item.

use serde_json::{json, Map, Value};

/// Who the response is and what the request asked, for every rendering of it.
#[derive(Debug, Clone)]
pub struct Meta {
    /// `resp_…`.
    pub id: String,
    pub created_at: u64,
    /// The request's fields echoed back (`instructions`, `tools`, `reasoning`, ...).
    pub echo: Map<String, Value>,
    pub store: bool,
    /// The request's tool namespaces (chat names their functions `<namespace>__<name>`).
    pub namespaces: Vec<String>,
}

impl Meta {
    pub fn new(echo: Map<String, Value>, store: bool, namespaces: Vec<String>) -> Meta {
        let created_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Meta {
            id: format!("resp_{}", uuid::Uuid::new_v4().simple()),
            created_at,
            echo,
            store,
            namespaces,
        }
    }

    /// A function call item for the chat tool call `chat_name`, its namespace split off.
    pub fn call(&self, index: usize, call_id: &str, chat_name: &str, arguments: &str) -> Item {
        let split = self.namespaces.iter().find_map(|ns| {
            let name = chat_name.strip_prefix(ns.as_str())?.strip_prefix("__")?;
            Some((Some(ns.clone()), name.to_string()))
        });
        let (namespace, name) = split.unwrap_or((None, chat_name.to_string()));
        Item::Call {
            id: self.item_id("fc", index),
            call_id: call_id.to_string(),
            name,
            namespace,
            arguments: arguments.to_string(),
        }
    }

    /// An output item's id: its kind's prefix, the response's id and its position.
    pub fn item_id(&self, prefix: &str, index: usize) -> String {
        let base = self.id.strip_prefix("resp_").unwrap_or(&self.id);
        format!("{prefix}_{base}{index:02}")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Reasoning {
        id: String,
        text: String,
        /// The reasoning as an upstream speaking this API encrypted it, for the client to
        /// send back in a later turn (when it asked for it with `include`).
        encrypted: Option<String>,
    },
    Message {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        namespace: Option<String>,
        arguments: String,
    },
}

impl Item {
    /// The item as the API shows it, finished (`completed`) or still streaming.
    pub fn to_json(&self, done: bool) -> Value {
        let status = if done { "completed" } else { "in_progress" };
        match self {
            Item::Reasoning {
                id,
                text,
                encrypted,
            } => {
                let summary = match (done, text.is_empty()) {
                    (true, false) => json!([{"type": "summary_text", "text": text}]),
                    _ => json!([]),
                };
                let mut item = json!({"type": "reasoning", "id": id, "summary": summary});
                if let (true, Some(e)) = (done, encrypted) {
                    item["encrypted_content"] = e.clone().into();
                }
                item
            }
            Item::Message { id, text } => {
                let content = match done {
                    true => json!([{"type": "output_text", "text": text, "annotations": []}]),
                    false => json!([]),
                };
                json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
            }
            Item::Call {
                id,
                call_id,
                name,
                namespace,
                arguments,
            } => {
                let mut item = json!({
                    "type": "function_call", "id": id, "call_id": call_id, "name": name,
                    "arguments": if done { arguments.as_str() } else { "" }, "status": status,
                });
                if let Some(ns) = namespace {
                    item["namespace"] = ns.clone().into();
                }
                item
            }
        }
    }
}

/// The output so far.
#[derive(Debug, Default, Clone)]
pub struct Output {
    pub items: Vec<Item>,
}

impl Output {
    /// The assistant turn a continued conversation replays, as a chat message.
    pub fn chat_turn(&self) -> Value {
        let text: String = self
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Message { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        let calls: Vec<Value> = self
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Call {
                    call_id,
                    name,
                    namespace,
                    arguments,
                    ..
                } => {
                    let name = match namespace {
                        Some(ns) => super::request::namespaced(ns, name),
                        None => name.clone(),
                    };
                    Some(json!({
                        "id": call_id, "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }))
                }
                _ => None,
            })
            .collect();
        // Encrypted reasoning goes back to the upstream that made it, as chat's reasoning
        // blocks do.
        let blocks: Vec<Value> = self
            .items
            .iter()
            .filter(|i| {
                matches!(
                    i,
                    Item::Reasoning {
                        encrypted: Some(_),
                        ..
                    }
                )
            })
            .map(|i| i.to_json(true))
            .collect();
        let mut turn = Map::new();
        turn.insert("role".into(), "assistant".into());
        if !blocks.is_empty() {
            turn.insert("thinking_blocks".into(), Value::Array(blocks));
        }
        let content = if text.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            text.into()
        };
        turn.insert("content".into(), content);
        if !calls.is_empty() {
            turn.insert("tool_calls".into(), Value::Array(calls));
        }
        Value::Object(turn)
    }
}

/// Responses usage from chat usage.
pub fn usage(chat: &Value) -> Value {
    let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let (input, output) = (n(chat, "prompt_tokens"), n(chat, "completion_tokens"));
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": n(&chat["prompt_tokens_details"], "cached_tokens")},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": n(&chat["completion_tokens_details"], "reasoning_tokens")},
        "total_tokens": input + output,
    })
}

/// The status for a chat `finish_reason`, and why it is incomplete when it is.
pub fn status(finish: Option<&str>) -> (&'static str, Option<&'static str>) {
    match finish {
        Some("length") => ("incomplete", Some("max_output_tokens")),
        Some("content_filter") => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

/// The `response` object.
pub fn object(
    meta: &Meta,
    model: &Value,
    output: &Output,
    status: &str,
    incomplete: Option<&str>,
    usage: Option<Value>,
    error: Option<Value>,
) -> Value {
    let done = status != "in_progress";
    let mut o = meta.echo.clone();
    o.insert("id".into(), meta.id.clone().into());
    o.insert("object".into(), "response".into());
    o.insert("created_at".into(), meta.created_at.into());
    o.insert("status".into(), status.into());
    o.insert("model".into(), model.clone());
    o.insert(
        "output".into(),
        Value::Array(output.items.iter().map(|i| i.to_json(done)).collect()),
    );
    o.insert("usage".into(), usage.unwrap_or(Value::Null));
    o.insert("error".into(), error.unwrap_or(Value::Null));
    o.insert(
        "incomplete_details".into(),
        incomplete.map_or(Value::Null, |r| json!({"reason": r})),
    );
    o.insert("store".into(), meta.store.into());
    for (key, default) in [
        ("tools", json!([])),
        ("tool_choice", json!("auto")),
        ("parallel_tool_calls", json!(true)),
        ("text", json!({"format": {"type": "text"}})),
        ("truncation", json!("disabled")),
        ("metadata", json!({})),
    ] {
        o.entry(key).or_insert(default);
    }
    Value::Object(o)
}

/// The encrypted content of a Responses reasoning item among reasoning blocks (the others
/// are Anthropic's signed thinking, which this API has no place for).
pub fn encrypted_reasoning(blocks: &[Value]) -> Option<String> {
    blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("reasoning"))
        .find_map(|b| b.get("encrypted_content").and_then(Value::as_str))
        .map(str::to_string)
}

/// A whole chat completion as its output.
pub fn output_of(meta: &Meta, completion: &Value) -> Output {
    let m = &completion["choices"][0]["message"];
    let mut out = Output::default();
    let reasoning = m
        .get("reasoning_content")
        .or_else(|| m.get("reasoning"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let encrypted = m
        .get("thinking_blocks")
        .and_then(Value::as_array)
        .and_then(|blocks| encrypted_reasoning(blocks));
    if !reasoning.is_empty() || encrypted.is_some() {
        let id = meta.item_id("rs", out.items.len());
        out.items.push(Item::Reasoning {
            id,
            text: reasoning.to_string(),
            encrypted,
        });
    }
    if let Some(text) = m
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        let id = meta.item_id("msg", out.items.len());
        out.items.push(Item::Message {
            id,
            text: text.to_string(),
        });
    }
    for call in m
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let f = &call["function"];
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let item = meta.call(
            out.items.len(),
            &text(call, "id"),
            &text(f, "name"),
            &text(f, "arguments"),
        );
        out.items.push(item);
    }
    out
}

/// A whole chat completion as a `response` object, with its output for the store.
pub fn whole(meta: &Meta, completion: &Value) -> (Value, Output) {
    let output = output_of(meta, completion);
    let finish = completion["choices"][0]["finish_reason"].as_str();
    let (status, incomplete) = status(finish);
    let mut o = object(
        meta,
        &completion["model"],
        &output,
        status,
        incomplete,
        Some(usage(&completion["usage"])),
        None,
    );
    if let Some(t) = completion.get("thinkgate") {
        o["thinkgate"] = t.clone();
    }
    (o, output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completion_becomes_reasoning_message_and_calls() {
        let meta = Meta::new(Map::new(), true, Vec::new());
        let completion = json!({"model": "m", "choices": [{"finish_reason": "tool_calls", "message": {
            "content": "Checking.", "reasoning_content": "think",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{}"}}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 7, "completion_tokens_details": {"reasoning_tokens": 3}}});
        let (o, output) = whole(&meta, &completion);
        assert_eq!(o["object"], "response");
        assert!(o["id"].as_str().unwrap().starts_with("resp_"));
        assert_eq!(o["status"], "completed");
        let kinds: Vec<&str> = o["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["reasoning", "message", "function_call"]);
        assert_eq!(o["output"][0]["summary"][0]["text"], "think");
        assert_eq!(o["output"][1]["content"][0]["text"], "Checking.");
        assert_eq!(o["output"][2]["call_id"], "call_1");
        assert_eq!(o["usage"]["output_tokens_details"]["reasoning_tokens"], 3);
        assert_eq!(o["usage"]["total_tokens"], 17);
        let turn = output.chat_turn();
        assert_eq!(turn["content"], "Checking.");
        assert_eq!(turn["tool_calls"][0]["id"], "call_1");
    }

    #[test]
    fn a_cut_answer_is_incomplete() {
        let meta = Meta::new(Map::new(), false, Vec::new());
        let completion = json!({"model": "m", "choices": [{"finish_reason": "length", "message": {"content": "a"}}], "usage": {}});
        let (o, _) = whole(&meta, &completion);
        assert_eq!(o["status"], "incomplete");
        assert_eq!(o["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(o["store"], false);
    }
}
