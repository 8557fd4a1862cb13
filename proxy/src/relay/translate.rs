//! Canonical [`Delta`]s → OpenAI chat completion JSON and chunks, for upstreams that speak
//! another format. The output is what an OpenAI server would send for the same answer.

use serde_json::{json, Map, Value};
use thinkgate_config::ReasoningField;

use crate::canonical::{Delta, Usage};
use crate::upstream::openai::patch_usage;

/// Renders one response's deltas; remembers the id and model for every chunk.
pub struct Renderer {
    pub id: String,
    pub model: String,
    pub created: u64,
    reasoning_field: ReasoningField,
}

impl Renderer {
    pub fn new(model: &str, reasoning_field: ReasoningField) -> Self {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Renderer {
            id: String::new(),
            model: model.to_string(),
            created,
            reasoning_field,
        }
    }

    fn start(&mut self, id: &str, model: &str) {
        if !id.is_empty() {
            self.id = id.to_string();
        }
        if !model.is_empty() {
            self.model = model.to_string();
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        })
        .to_string()
    }

    /// The chunk (as SSE `data`) a delta becomes, if any.
    pub fn chunk_for(&mut self, delta: &Delta) -> Option<String> {
        Some(match delta {
            Delta::Start { id, model } => {
                self.start(id, model);
                self.chunk(json!({"role": "assistant", "content": ""}), None)
            }
            Delta::Reasoning(t) => self.chunk(json!({ self.reasoning_field.as_str(): t }), None),
            Delta::ReasoningBlock(block) => self.chunk(json!({ "thinking_blocks": [block] }), None),
            Delta::Content(t) => self.chunk(json!({ "content": t }), None),
            Delta::ToolCallStart { index, id, name } => self.chunk(
                json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
                None,
            ),
            Delta::ToolCallArguments { index, arguments } => self.chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}),
                None,
            ),
            Delta::Finish(reason) => self.chunk(json!({}), Some(reason)),
            Delta::Usage(_) | Delta::Error { .. } => return None,
        })
    }

    /// The chunk that ends the choice, with `extra` as the chunk's `thinkgate` field.
    pub fn finish_chunk(&self, reason: &str, extra: Value) -> String {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": reason}],
            "thinkgate": extra,
        })
        .to_string()
    }

    /// The usage chunk OpenAI sends last when asked (`stream_options.include_usage`).
    pub fn usage_chunk(&self, usage: &Usage) -> String {
        let mut chunk = Map::new();
        chunk.insert("id".into(), self.id.clone().into());
        chunk.insert("object".into(), "chat.completion.chunk".into());
        chunk.insert("created".into(), self.created.into());
        chunk.insert("model".into(), self.model.clone().into());
        chunk.insert("choices".into(), Value::Array(Vec::new()));
        patch_usage(&mut chunk, usage);
        Value::Object(chunk).to_string()
    }

    /// A whole response from all its deltas, with `usage` as the client gets it.
    pub fn completion(&mut self, deltas: &[Delta], usage: &Usage) -> Value {
        let (mut content, mut reasoning, mut finish) =
            (String::new(), String::new(), "stop".to_string());
        let mut calls: Vec<(String, String, String)> = Vec::new();
        let mut blocks = Vec::new();
        for d in deltas {
            match d {
                Delta::Start { id, model } => self.start(id, model),
                Delta::Reasoning(t) => reasoning.push_str(t),
                Delta::ReasoningBlock(b) => blocks.push(b.clone()),
                Delta::Content(t) => content.push_str(t),
                Delta::ToolCallStart { id, name, .. } => {
                    calls.push((id.clone(), name.clone(), String::new()))
                }
                Delta::ToolCallArguments { index, arguments } => {
                    if let Some(call) = calls.get_mut(*index) {
                        call.2.push_str(arguments);
                    }
                }
                Delta::Finish(r) => finish = r.clone(),
                Delta::Usage(_) | Delta::Error { .. } => {}
            }
        }
        let mut message = Map::new();
        message.insert("role".into(), "assistant".into());
        message.insert(
            "content".into(),
            if content.is_empty() && !calls.is_empty() {
                Value::Null
            } else {
                content.into()
            },
        );
        if !reasoning.is_empty() {
            message.insert(self.reasoning_field.as_str().into(), reasoning.into());
        }
        if !blocks.is_empty() {
            message.insert("thinking_blocks".into(), Value::Array(blocks));
        }
        if !calls.is_empty() {
            let calls: Vec<Value> = calls
                .into_iter()
                .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
                .collect();
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        message.insert("refusal".into(), Value::Null);
        let mut out = Map::new();
        out.insert("id".into(), self.id.clone().into());
        out.insert("object".into(), "chat.completion".into());
        out.insert("created".into(), self.created.into());
        out.insert("model".into(), self.model.clone().into());
        out.insert(
            "choices".into(),
            json!([{"index": 0, "message": Value::Object(message), "logprobs": null, "finish_reason": finish}]),
        );
        patch_usage(&mut out, usage);
        Value::Object(out)
    }
}
