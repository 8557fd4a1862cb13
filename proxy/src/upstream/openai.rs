//! The OpenAI chat completions wire format, spoken by OpenAI and by every
//! `openai-compatible` server (vLLM, SGLang, llama.cpp, Ollama, OpenRouter, Muse Spark).
//!
//! Requests are the client's JSON with only the fields the proxy owns rewritten; responses
//! are read through borrowed views into canonical [`Event`]s without copying the text.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Map, Value};

use thinkgate_config::{Dialect, ReasoningField};

use crate::canonical::{ChatRequest, Delta, Event, Usage};
use crate::upstream::convert::str_field;

/// The upstream request body: the client's body with `model` set to the upstream's name and,
/// on streams, usage always requested (the proxy needs it to count; egress drops the usage
/// chunk again when the client did not ask for it). The dialect's quirks are met here:
/// OpenAI's reasoning models reject `max_tokens` (renamed `max_completion_tokens`); reasoning
/// a client sends back in the history (DeepSeek requires it on tool-call turns) travels under
/// the field name the upstream reads, whichever name the proxy gave it on the way out.
pub fn request_body(
    req: &ChatRequest,
    upstream_model: &str,
    dialect: Dialect,
) -> Map<String, Value> {
    let (mut head, messages) = request_parts(req, upstream_model, dialect);
    let mut messages = messages.map(Cow::into_owned);
    let order: Vec<String> = in_order(&req.body, &head).cloned().collect();
    order
        .into_iter()
        .filter_map(|k| {
            let v = match k.as_str() {
                "messages" => messages.take(),
                _ => head.remove(&k),
            };
            v.map(|v| (k, v))
        })
        .collect()
}

/// The keys of the edited body in the client's order; keys the proxy added come last.
fn in_order<'a>(
    original: &'a Map<String, Value>,
    head: &'a Map<String, Value>,
) -> impl Iterator<Item = &'a String> {
    let kept = original
        .keys()
        .filter(|k| *k == "messages" || head.contains_key(*k));
    kept.chain(head.keys().filter(|k| !original.contains_key(*k)))
}

/// The request body as the proxy edits it: every key but `messages` (a small map for the
/// knobs to edit), and the messages — borrowed from the client's body unless the dialect
/// renames a field in them. [`serialize`] writes the two back in the client's key order.
pub fn request_parts<'a>(
    req: &'a ChatRequest,
    upstream_model: &str,
    dialect: Dialect,
) -> (Map<String, Value>, Option<Cow<'a, Value>>) {
    let mut head: Map<String, Value> = req
        .body
        .iter()
        .filter(|(k, _)| *k != "messages")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    head.insert("model".into(), Value::String(upstream_model.to_string()));
    if dialect == Dialect::OpenAi {
        if let Some(max) = head.remove("max_tokens") {
            head.entry("max_completion_tokens").or_insert(max);
        }
    }
    let mut messages = req.body.get("messages").map(Cow::Borrowed);
    if let (Some(field), Some(list)) = (dialect.reasoning_field(), messages.as_mut()) {
        let (to, from) = field_names(field);
        let renames = list
            .as_array()
            .is_some_and(|l| l.iter().any(|m| m.get(from).is_some()));
        if let (true, Value::Array(list)) = (renames, list.to_mut()) {
            for m in list.iter_mut().filter_map(Value::as_object_mut) {
                if let Some(text) = m.remove(from) {
                    m.entry(to).or_insert(text);
                }
            }
        }
    }
    if req.stream {
        let options = head
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        if !options.is_object() {
            *options = Value::Object(Map::new());
        }
        if let Value::Object(o) = options {
            o.insert("include_usage".into(), Value::Bool(true));
        }
    }
    (head, messages)
}

/// Writes `head` and `messages` as one JSON object, keys in the order of `original` (the
/// client's body); keys the proxy added come last.
pub fn serialize(
    original: &Map<String, Value>,
    head: &Map<String, Value>,
    messages: Option<&Value>,
) -> Vec<u8> {
    struct Body<'a>(
        &'a Map<String, Value>,
        &'a Map<String, Value>,
        Option<&'a Value>,
    );
    impl serde::Serialize for Body<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let Body(original, head, messages) = *self;
            let mut map = s.serialize_map(None)?;
            for key in in_order(original, head) {
                let value = match key.as_str() {
                    "messages" => messages,
                    _ => head.get(key),
                };
                if let Some(v) = value {
                    map.serialize_entry(key, v)?;
                }
            }
            map.end()
        }
    }
    serde_json::to_vec(&Body(original, head, messages)).unwrap_or_default()
}

/// A response or stream chunk, read for what the proxy observes.
#[derive(Deserialize, Debug)]
pub struct ChunkView<'a> {
    #[serde(default, borrow, deserialize_with = "crate::canonical::borrowed_text")]
    pub id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub created: Option<u64>,
    #[serde(default, borrow, deserialize_with = "crate::canonical::borrowed_text")]
    pub model: Option<Cow<'a, str>>,
    /// Inline: a chunk has one choice, and reading it allocates nothing.
    #[serde(default, borrow)]
    pub choices: smallvec::SmallVec<[ChoiceView<'a>; 1]>,
    /// Read through [`ChunkView::usage`]; kept whole so that a repair can rewrite its bytes.
    #[serde(default, borrow, rename = "usage")]
    pub usage_block: UsageBlock<'a>,
    #[serde(default)]
    pub error: Option<serde::de::IgnoredAny>,
}

/// A chunk's usage key as read: its figures (none when absent or `null`), and its value's
/// own bytes in the chunk (`null` included), so that a repair rewrites just them
/// ([`with_usage`]) without reading the chunk a second time, and never adds a second
/// `usage` key beside a `null` one.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsageBlock<'a> {
    pub view: Option<UsageView>,
    pub raw: Option<&'a serde_json::value::RawValue>,
}

impl<'de: 'a, 'a> Deserialize<'de> for UsageBlock<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&'a serde_json::value::RawValue>::deserialize(d)?;
        let view = serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?;
        Ok(UsageBlock {
            view,
            raw: Some(raw),
        })
    }
}

#[derive(Deserialize, Debug)]
pub struct ChoiceView<'a> {
    #[serde(default, borrow)]
    pub delta: Option<MessageView<'a>>,
    #[serde(default, borrow)]
    pub message: Option<MessageView<'a>>,
    #[serde(default, borrow, deserialize_with = "crate::canonical::borrowed_text")]
    pub finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Debug)]
pub struct MessageView<'a> {
    #[serde(default, borrow, deserialize_with = "crate::canonical::borrowed_text")]
    pub content: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "crate::canonical::borrowed_text")]
    pub reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "crate::canonical::borrowed_text")]
    pub reasoning: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub tool_calls: Option<Vec<ToolCallView<'a>>>,
    /// Signed thinking blocks an Anthropic upstream's answer carried, unparsed (only the
    /// other APIs' renderers read them).
    #[serde(default, borrow)]
    pub thinking_blocks: Option<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize, Debug)]
pub struct ToolCallView<'a> {
    /// Which call of the turn a streamed piece belongs to.
    #[serde(default)]
    pub index: Option<u64>,
    #[serde(default, borrow, deserialize_with = "crate::canonical::borrowed_text")]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub function: Option<FunctionView<'a>>,
}

/// What a chunk (or a whole completion) says, first choice only, in wire order: what the
/// other APIs' renderers rebuild their own events from.
#[derive(Debug, Clone, Copy)]
pub enum Piece<'v> {
    Reasoning(&'v str),
    /// The `thinking_blocks` list, as the upstream signed it.
    ThinkingBlocks(&'v serde_json::value::RawValue),
    Text(&'v str),
    ToolCall {
        index: u64,
        id: &'v str,
        name: &'v str,
        arguments: &'v str,
    },
    Finish(&'v str),
}

#[derive(Deserialize, Debug)]
pub struct FunctionView<'a> {
    #[serde(default, borrow, deserialize_with = "crate::canonical::borrowed_text")]
    pub name: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "crate::canonical::borrowed_text")]
    pub arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Debug, Clone, Copy)]
pub struct UsageView {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: Option<u64>,
    #[serde(default)]
    pub completion_tokens_details: Option<CompletionDetails>,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetails>,
    /// Cache writes, as LiteLLM-style servers in front of Anthropic report them.
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
}

#[derive(Deserialize, Debug, Clone, Copy)]
pub struct CompletionDetails {
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

#[derive(Deserialize, Debug, Clone, Copy)]
pub struct PromptDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

impl UsageView {
    /// Whether the reported figures break an invariant clients rely on: reasoning tokens
    /// present and within completion tokens, total = prompt + completion.
    pub fn needs_repair(&self) -> bool {
        let reasoning = self
            .completion_tokens_details
            .and_then(|d| d.reasoning_tokens);
        reasoning.is_none_or(|r| r > self.completion_tokens)
            || self.total_tokens != Some(self.prompt_tokens + self.completion_tokens)
    }
}

/// Writes `usage` into a response or chunk object, keeping every other usage field
/// (`prompt_tokens_details` and the like) as the upstream sent it; cached tokens are added
/// only where the object has no prompt details of its own.
pub fn patch_usage(object: &mut Map<String, Value>, usage: &Usage) {
    let entry = object.entry("usage").or_insert(Value::Null);
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    if let Value::Object(u) = entry {
        u.insert("prompt_tokens".into(), usage.prompt_tokens.into());
        u.insert("completion_tokens".into(), usage.completion_tokens.into());
        u.insert(
            "total_tokens".into(),
            (usage.prompt_tokens + usage.completion_tokens).into(),
        );
        let details = u.entry("completion_tokens_details").or_insert(Value::Null);
        if !details.is_object() {
            *details = Value::Object(Map::new());
        }
        if let Value::Object(d) = details {
            d.insert(
                "reasoning_tokens".into(),
                usage.reasoning_tokens.unwrap_or(0).into(),
            );
        }
        // Not in OpenAI's schema; the name LiteLLM's clients read for Anthropic's cache writes.
        if let Some(written) = usage.cache_creation_tokens.filter(|n| *n > 0) {
            u.insert("cache_creation_input_tokens".into(), written.into());
        }
        if let Some(cached) = usage.cached_tokens {
            u.entry("prompt_tokens_details")
                .or_insert_with(|| serde_json::json!({ "cached_tokens": cached }));
        }
    }
}

/// `data` (a JSON object, read as a [`ChunkView`] whose usage block is `block`) with its
/// usage block patched as [`patch_usage`] does, editing only the block's bytes: the rest of
/// the response, however long its text, is neither read again nor re-serialized. `None`
/// when `data` is not a JSON object or `block` is not inside it.
pub fn with_usage(
    data: &str,
    block: Option<&serde_json::value::RawValue>,
    usage: &Usage,
) -> Option<String> {
    let trimmed = data.trim_end();
    if !data.trim_start().starts_with('{') || !trimmed.ends_with('}') {
        return None;
    }
    let (start, end, old) = match block {
        Some(raw) => {
            let start = (raw.get().as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
            let end = start + raw.get().len();
            if end > data.len() {
                return None;
            }
            let old = serde_json::from_str(raw.get()).ok()?;
            (start, end, Some(old))
        }
        // No usage key: the block goes in before the closing brace.
        None => (trimmed.len() - 1, trimmed.len() - 1, None),
    };
    let mut holder = Map::new();
    if let Some(old) = old {
        holder.insert("usage".into(), old);
    }
    patch_usage(&mut holder, usage);
    let patched = holder.get("usage")?.to_string();
    let mut out = String::with_capacity(data.len() + patched.len() + 12);
    out.push_str(data.get(..start)?);
    if block.is_none() {
        let empty = data[..start].trim_end().ends_with('{');
        out.push_str(if empty { "\"usage\":" } else { ",\"usage\":" });
    }
    out.push_str(&patched);
    out.push_str(data.get(end..)?);
    Some(out)
}

/// A `usage` object already parsed as JSON, when it is one.
pub fn usage_from_json(v: &Value) -> Option<Usage> {
    v.is_object()
        .then(|| UsageView::deserialize(v).ok().map(Usage::from))
        .flatten()
}

impl From<UsageView> for Usage {
    fn from(u: UsageView) -> Usage {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            reasoning_tokens: u.completion_tokens_details.and_then(|d| d.reasoning_tokens),
            cached_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens),
            cache_creation_tokens: u.cache_creation_input_tokens,
        }
    }
}

impl<'a> ChunkView<'a> {
    pub fn parse(data: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(data)
    }

    /// The chunk's usage figures; none when its `usage` is absent or `null`.
    pub fn usage(&self) -> Option<UsageView> {
        self.usage_block.view
    }

    /// Whether reasoning arrived under the other field name than `field` (vLLM's `reasoning`
    /// for a client that reads `reasoning_content`, say).
    pub fn reasoning_misnamed(&self, field: ReasoningField) -> bool {
        self.choices.iter().any(|c| {
            c.delta.as_ref().or(c.message.as_ref()).is_some_and(|m| {
                let other = match field {
                    ReasoningField::ReasoningContent => &m.reasoning,
                    ReasoningField::Reasoning => &m.reasoning_content,
                };
                other.is_some()
            })
        })
    }

    /// The first choice's [`Piece`]s, in wire order, from its delta or (whole) message.
    pub fn pieces(&self, mut f: impl FnMut(Piece<'_>)) {
        let Some(choice) = self.choices.first() else {
            return;
        };
        if let Some(m) = choice.delta.as_ref().or(choice.message.as_ref()) {
            if let Some(text) = m.reasoning_content.as_deref().or(m.reasoning.as_deref()) {
                if !text.is_empty() {
                    f(Piece::Reasoning(text));
                }
            }
            if let Some(blocks) = m.thinking_blocks {
                f(Piece::ThinkingBlocks(blocks));
            }
            if let Some(text) = m.content.as_deref().filter(|t| !t.is_empty()) {
                f(Piece::Text(text));
            }
            for (i, call) in m.tool_calls.iter().flatten().enumerate() {
                let function = call.function.as_ref();
                f(Piece::ToolCall {
                    index: call.index.unwrap_or(i as u64),
                    id: call.id.as_deref().unwrap_or(""),
                    name: function.and_then(|f| f.name.as_deref()).unwrap_or(""),
                    arguments: function.and_then(|f| f.arguments.as_deref()).unwrap_or(""),
                });
            }
        }
        if let Some(reason) = &choice.finish_reason {
            f(Piece::Finish(reason));
        }
    }

    /// The chunk (or whole response) as canonical events, in wire order.
    pub fn for_each_event(&self, mut f: impl FnMut(Event<'_>)) {
        for choice in &self.choices {
            if let Some(m) = choice.delta.as_ref().or(choice.message.as_ref()) {
                // Servers moving between the names send both with the same text: count once.
                if let Some(text) = m.reasoning_content.as_ref().or(m.reasoning.as_ref()) {
                    if !text.is_empty() {
                        f(Event::Reasoning(Cow::Borrowed(text)));
                    }
                }
                if let Some(text) = &m.content {
                    if !text.is_empty() {
                        f(Event::Content(Cow::Borrowed(text)));
                    }
                }
                for call in m.tool_calls.iter().flatten() {
                    let f_view = call.function.as_ref();
                    let name = f_view.and_then(|f| f.name.as_deref()).unwrap_or("");
                    let args = f_view.and_then(|f| f.arguments.as_deref()).unwrap_or("");
                    f(Event::ToolCall(Cow::Owned(format!("{name}{args}"))));
                }
            }
            if let Some(reason) = &choice.finish_reason {
                f(Event::Finish(Cow::Borrowed(reason)));
            }
        }
        if let Some(u) = self.usage() {
            f(Event::Usage(u.into()));
        }
    }
}

/// Reads an OpenAI-format stream as canonical deltas, for the responses the proxy rebuilds
/// (those under a budget it enforces); relayed responses never come through here.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    started: bool,
    /// The stream's `[DONE]` arrived.
    pub done: bool,
}

impl StreamDecoder {
    /// One SSE event's data.
    pub fn event(&mut self, data: &str) -> Result<Vec<Delta>, String> {
        if data == "[DONE]" {
            self.done = true;
            return Ok(Vec::new());
        }
        let chunk: Value =
            serde_json::from_str(data).map_err(|e| format!("unreadable chunk: {e}"))?;
        let mut out = Vec::new();
        if let Some(error) = chunk.get("error").filter(|e| e.is_object()) {
            out.push(Delta::Error {
                kind: str_field(error, "type"),
                message: str_field(error, "message"),
            });
            return Ok(out);
        }
        if !self.started {
            self.started = true;
            out.push(Delta::Start {
                id: str_field(&chunk, "id"),
                model: str_field(&chunk, "model"),
            });
        }
        let choice = chunk.pointer("/choices/0");
        if let Some(delta) = choice.and_then(|c| c.get("delta").or(c.get("message"))) {
            let text = |k: &str| {
                delta
                    .get(k)
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
            };
            // Servers moving between the names send both with the same text: read one.
            if let Some(t) = text("reasoning_content").or(text("reasoning")) {
                out.push(Delta::Reasoning(t.to_string()));
            }
            if let Some(t) = text("content") {
                out.push(Delta::Content(t.to_string()));
            }
            for (n, call) in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let index = call
                    .get("index")
                    .and_then(Value::as_u64)
                    .map_or(n, |i| i as usize);
                let function = call.get("function");
                let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
                if let Some(name) = name {
                    let id = call.get("id").and_then(Value::as_str).unwrap_or("");
                    out.push(Delta::ToolCallStart {
                        index,
                        id: id.to_string(),
                        name: name.to_string(),
                    });
                }
                let args = function
                    .and_then(|f| f.get("arguments"))
                    .and_then(Value::as_str);
                if let Some(arguments) = args.filter(|a| !a.is_empty()) {
                    out.push(Delta::ToolCallArguments {
                        index,
                        arguments: arguments.to_string(),
                    });
                }
            }
        }
        if let Some(reason) = choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
        {
            out.push(Delta::Finish(reason.to_string()));
        }
        if let Some(usage) = chunk.get("usage").and_then(usage_from_json) {
            out.push(Delta::Usage(usage));
        }
        Ok(out)
    }
}

/// Moves reasoning text to the `field` the client reads, in every choice of a response or
/// chunk object; where both names are present, the other one is dropped.
pub fn rename_reasoning(object: &mut Map<String, Value>, field: ReasoningField) {
    let (to, from) = field_names(field);
    let Some(Value::Array(choices)) = object.get_mut("choices") else {
        return;
    };
    for choice in choices.iter_mut().filter_map(Value::as_object_mut) {
        for key in ["delta", "message"] {
            if let Some(Value::Object(m)) = choice.get_mut(key) {
                if let Some(text) = m.remove(from) {
                    m.entry(to).or_insert(text);
                }
            }
        }
    }
}

/// `field`'s name and the other one's.
fn field_names(field: ReasoningField) -> (&'static str, &'static str) {
    match field {
        ReasoningField::ReasoningContent => ("reasoning_content", "reasoning"),
        ReasoningField::Reasoning => ("reasoning", "reasoning_content"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::parse_chat;

    /// What `with_usage` must produce: the same object `patch_usage` makes of the parsed tree.
    fn patched_tree(data: &str, usage: &Usage) -> Value {
        let Value::Object(mut object) = serde_json::from_str(data).unwrap() else {
            panic!("not an object: {data}");
        };
        patch_usage(&mut object, usage);
        Value::Object(object)
    }

    #[test]
    fn usage_is_patched_in_place_as_the_tree_edit_does() {
        let usage = Usage {
            prompt_tokens: 12,
            completion_tokens: 9,
            reasoning_tokens: Some(4),
            cached_tokens: Some(3),
            cache_creation_tokens: Some(2),
        };
        let cases = [
            r#"{"id":"x","choices":[{"message":{"content":"usage: {}"}}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}"#,
            r#"{"id":"x","usage":{"prompt_tokens":1,"prompt_tokens_details":{"cached_tokens":7},"extra":[1,{"a":2}]},"tail":true}"#,
            r#"{"id":"x","usage":null,"choices":[]}"#,
            r#"{"id":"x","choices":[]}"#,
            "{}",
            " { \n } ",
        ];
        for data in cases {
            let block = ChunkView::parse(data).unwrap().usage_block.raw;
            let spliced = with_usage(data, block, &usage).unwrap();
            let parsed: Value = serde_json::from_str(&spliced).unwrap();
            assert_eq!(parsed, patched_tree(data, &usage), "{data} -> {spliced}");
            // Only the usage block changed: what precedes it is byte for byte the same.
            let cut = data.find("\"usage\"").unwrap_or(0);
            assert_eq!(&spliced[..cut], &data[..cut]);
            // A `null` usage is replaced, never joined by a second key.
            assert_eq!(spliced.matches("\"usage\"").count(), 1, "{spliced}");
        }
        assert_eq!(with_usage("[1,2]", None, &usage), None);
        assert_eq!(with_usage("\"usage\"", None, &usage), None);
        // A block from another text is refused, not spliced at a made-up offset.
        let other = ChunkView::parse(cases[0]).unwrap().usage_block.raw;
        assert_eq!(with_usage("{}", other, &usage), None);
        // A usage that is not an object fails the chunk's own read, so it never gets here.
        assert!(ChunkView::parse(r#"{"id":"x","usage":5}"#).is_err());
    }

    #[test]
    fn chunk_text_is_borrowed_unless_escaped() {
        let data = r#"{"id":"c1","choices":[{"delta":{"content":"plain"},"finish_reason":null}]}"#;
        let view = ChunkView::parse(data).unwrap();
        assert!(matches!(view.id, Some(Cow::Borrowed("c1"))));
        let delta = view.choices[0].delta.as_ref().unwrap();
        assert!(matches!(delta.content, Some(Cow::Borrowed("plain"))));
        let escaped = r#"{"choices":[{"delta":{"content":"a\nb"}}]}"#;
        let view = ChunkView::parse(escaped).unwrap();
        let delta = view.choices[0].delta.as_ref().unwrap();
        assert!(matches!(&delta.content, Some(Cow::Owned(s)) if s == "a\nb"));
    }

    #[test]
    fn request_body_rewrites_only_what_the_proxy_owns() {
        let req = parse_chat(
            br#"{"model":"alias","messages":[{"role":"user","content":"x"}],"logprobs":true,
                "stream":true,"stream_options":{"other":1},"zz_future":[1,2]}"#,
        )
        .unwrap();
        let out: Value = Value::Object(request_body(&req, "up-model", Dialect::Generic));
        // The bytes sent are the same object, written without copying the messages.
        let (head, messages) = request_parts(&req, "up-model", Dialect::Generic);
        assert!(matches!(messages, Some(Cow::Borrowed(_))));
        let sent = serialize(&req.body, &head, messages.as_deref());
        assert_eq!(sent, serde_json::to_vec(&out).unwrap());
        assert_eq!(out["model"], "up-model");
        assert_eq!(out["stream_options"]["include_usage"], true);
        assert_eq!(out["stream_options"]["other"], 1);
        assert_eq!(out["logprobs"], true);
        assert_eq!(out["zz_future"], serde_json::json!([1, 2]));
        let keys: Vec<_> = out.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "model",
                "messages",
                "logprobs",
                "stream",
                "stream_options",
                "zz_future"
            ]
        );
    }

    #[test]
    fn chunk_events_cover_reasoning_content_finish_and_usage() {
        let data = r#"{"choices":[{"index":0,"delta":{"reasoning_content":"hm","content":"Hi \"x\""},"finish_reason":"stop"}],
                      "usage":{"prompt_tokens":3,"completion_tokens":5,"completion_tokens_details":{"reasoning_tokens":2}}}"#;
        let view = ChunkView::parse(data).unwrap();
        let mut events = Vec::new();
        view.for_each_event(|e| events.push(format!("{e:?}")));
        assert_eq!(events.len(), 4, "{events:?}");
        assert!(events[1].contains("Hi \\\"x\\\""));
        assert!(events[3].contains("reasoning_tokens: Some(2)"));
    }

    #[test]
    fn dialect_quirks_rename_what_the_upstream_reads() {
        let req = parse_chat(
            br#"{"model":"m","max_tokens":9,"messages":[{"role":"user","content":"x"},
                {"role":"assistant","content":"y","reasoning":"because"}]}"#,
        )
        .unwrap();
        let openai: Value = Value::Object(request_body(&req, "o", Dialect::OpenAi));
        assert_eq!(openai["max_completion_tokens"], 9);
        assert!(openai.get("max_tokens").is_none());
        let deepseek: Value = Value::Object(request_body(&req, "d", Dialect::Deepseek));
        assert_eq!(deepseek["messages"][1]["reasoning_content"], "because");
        assert!(deepseek["messages"][1].get("reasoning").is_none());
        assert_eq!(deepseek["max_tokens"], 9);
        let generic: Value = Value::Object(request_body(&req, "g", Dialect::Generic));
        assert_eq!(generic["messages"][1]["reasoning"], "because");
    }

    #[test]
    fn reasoning_is_counted_once_and_moved_to_the_clients_field() {
        let data =
            r#"{"choices":[{"index":0,"delta":{"reasoning":"hm","reasoning_content":"hm"}}]}"#;
        let view = ChunkView::parse(data).unwrap();
        let mut n = 0;
        view.for_each_event(|_| n += 1);
        assert_eq!(
            n, 1,
            "the same text under both names is one piece of reasoning"
        );
        assert!(view.reasoning_misnamed(ReasoningField::ReasoningContent));
        let mut v: Map<String, Value> =
            serde_json::from_str(r#"{"choices":[{"delta":{"reasoning":"hm"}}]}"#).unwrap();
        rename_reasoning(&mut v, ReasoningField::ReasoningContent);
        assert_eq!(
            Value::Object(v).to_string(),
            r#"{"choices":[{"delta":{"reasoning_content":"hm"}}]}"#
        );
    }
}
