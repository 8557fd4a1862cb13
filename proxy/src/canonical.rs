//! The canonical types every stage shares: the request as the proxy understands it, and the
//! events a response is observed as.
//!
//! The proxy *observes* through these types; it forwards the client's and the upstream's
//! JSON as they were, so nothing a vendor adds is lost on the way.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};
use thinkgate_config::{Mode, WireFormat};

/// A chat completion request: the few typed fields the proxy reads, plus the body as sent.
///
/// The body is the one copy of the conversation: the typed [`Message`]s are read from it
/// when a stage needs them, borrowing its strings, so a large request is held once.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The `model` the client asked for (an id, `auto`, or `<id>:<mode>`).
    pub model: String,
    pub stream: bool,
    /// The client asked for the streamed usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    pub has_tools: bool,
    /// The whole JSON object the client sent, in its order; forwarded minus what the proxy owns.
    /// Its `messages` were checked at ingress to read as [`Message`]s.
    pub body: Map<String, Value>,
    /// The body as the client sent it, when it came through another API (`/v1/messages`,
    /// `/v1/responses`): an upstream speaking that API gets it as sent (only `model`,
    /// `stream` and the budget's knob set), so `cache_control`, betas, encrypted reasoning
    /// and every field chat cannot carry reach it. A system note (the budget hint, a
    /// contemplating agent's role) is written into it too; appending turns (a follow-up, the
    /// synthesis) drops it, and only `body` then holds the conversation.
    pub native: Option<NativeBody>,
}

/// A client's body in the API it came through.
#[derive(Debug, Clone)]
pub struct NativeBody {
    /// The API: `Anthropic` for `/v1/messages`, `Responses` for `/v1/responses`.
    pub format: WireFormat,
    pub body: Arc<Map<String, Value>>,
    /// The stored conversation a Responses body continues (`previous_response_id`), as chat
    /// messages, written in front of its `input`.
    pub history: Arc<Vec<Value>>,
}

impl NativeBody {
    pub fn new(format: WireFormat, body: Map<String, Value>, history: Vec<Value>) -> Self {
        NativeBody {
            format,
            body: Arc::new(body),
            history: Arc::new(history),
        }
    }

    /// Adds `note` to the system prompt in this API's words: Anthropic's `system` (a string
    /// appended to, or a new last block, so a cached prefix stays cached), the Responses
    /// API's `instructions`.
    fn add_system_note(&mut self, note: &str) {
        let field = match self.format {
            WireFormat::Anthropic => "system",
            _ => "instructions",
        };
        let body = Arc::make_mut(&mut self.body);
        match body.get_mut(field) {
            Some(Value::String(text)) if !text.is_empty() => {
                text.push_str("\n\n");
                text.push_str(note);
            }
            Some(Value::Array(blocks)) if self.format == WireFormat::Anthropic => {
                let mut block = Map::new();
                block.insert("type".into(), "text".into());
                block.insert("text".into(), note.into());
                blocks.push(Value::Object(block));
            }
            _ => drop(body.insert(field.into(), note.into())),
        }
    }

    /// The body, when the upstream speaks `format`.
    pub fn in_format(&self, format: WireFormat) -> Option<&Self> {
        (self.format == format).then_some(self)
    }
}

impl ChatRequest {
    /// The conversation, typed, borrowing the body's strings.
    pub fn messages(&self) -> Vec<Message<'_>> {
        match self.body.get("messages") {
            Some(list) => Vec::<Message<'_>>::deserialize(list).unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// The same request, asked as a stream (the proxy streams from the upstream whenever it
    /// watches the reasoning, whatever the client asked for).
    pub fn streaming(&self) -> ChatRequest {
        let mut req = self.clone();
        req.stream = true;
        req.body.insert("stream".into(), Value::Bool(true));
        req
    }

    /// The same request with `messages` appended to the conversation (those that do not read
    /// as messages are left out).
    pub fn with_appended(&self, messages: Vec<Value>) -> ChatRequest {
        let mut req = self.clone();
        req.native = None;
        if let Some(Value::Array(list)) = req.body.get_mut("messages") {
            list.extend(
                messages
                    .into_iter()
                    .filter(|m| Message::deserialize(m).is_ok()),
            );
        }
        req
    }

    /// Adds `note` to the system prompt: appended to a leading text system message, or as a
    /// new first message; the native body, if any, gets it in its own API's words.
    pub fn add_system_note(&mut self, note: &str) {
        if let Some(native) = &mut self.native {
            native.add_system_note(note);
        }
        let Some(Value::Array(list)) = self.body.get_mut("messages") else {
            return;
        };
        if let Some(Value::Object(m)) = list.first_mut() {
            let is_system = m.get("role").and_then(Value::as_str) == Some("system");
            if let (true, Some(Value::String(text))) = (is_system, m.get_mut("content")) {
                text.push_str("\n\n");
                text.push_str(note);
                return;
            }
        }
        let mut m = Map::new();
        m.insert("role".into(), "system".into());
        m.insert("content".into(), note.into());
        list.insert(0, Value::Object(m));
    }
}

/// The chat name of a function in a namespace (the Responses API's tool groups, which Codex
/// sends): `<namespace>__<name>`.
pub fn namespaced(namespace: &str, name: &str) -> String {
    format!("{namespace}__{name}")
}

/// Reads an optional string borrowing it from the input when it has no escapes. serde's own
/// `Option<Cow<str>>` always copies (its `borrow` applies to a bare `Cow` only), which cost
/// an allocation per field per relayed chunk.
pub fn borrowed_text<'de: 'a, 'a, D>(d: D) -> Result<Option<Cow<'a, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Text<'a>(Cow<'a, str>);
    impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Cow<'de, str>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a string")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                    Ok(Cow::Borrowed(v))
                }
                fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                    Ok(Cow::Owned(v.to_owned()))
                }
                fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                    Ok(Cow::Owned(v))
                }
            }
            d.deserialize_str(Visit).map(Text)
        }
    }
    Ok(Option::<Text<'a>>::deserialize(d)?.map(|t| t.0))
}

/// One message of the conversation, borrowing the request body's strings.
#[derive(Debug, Clone, Deserialize)]
pub struct Message<'a> {
    /// Checked at ingress to be one of the known roles (absent reads as empty, refused there).
    #[serde(default, borrow)]
    pub role: Cow<'a, str>,
    #[serde(default, borrow)]
    pub content: Option<Content<'a>>,
    /// An assistant turn's tool calls.
    #[serde(default, borrow)]
    pub tool_calls: Option<Vec<ToolCallIn<'a>>>,
    /// A tool turn's answer to this call.
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    pub tool_call_id: Option<Cow<'a, str>>,
    /// An assistant turn's signed reasoning blocks, as the proxy handed them out (Anthropic
    /// requires them back unchanged in tool-use loops). Opaque to the proxy.
    #[serde(default)]
    pub thinking_blocks: Option<Vec<Value>>,
}

/// A tool call in the conversation history.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolCallIn<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow)]
    pub function: FunctionIn<'a>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FunctionIn<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// JSON text, as OpenAI sends it.
    #[serde(default, borrow)]
    pub arguments: Cow<'a, str>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Parts(#[serde(borrow)] Vec<Part<'a>>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct Part<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    pub text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub image_url: Option<ImageUrl<'a>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageUrl<'a> {
    /// An `https://` URL or a `data:<media type>;base64,<data>` URL.
    #[serde(borrow)]
    pub url: Cow<'a, str>,
}

impl Message<'_> {
    /// The message's text, parts joined; images and other parts contribute nothing.
    pub fn text(&self) -> Cow<'_, str> {
        match &self.content {
            None => Cow::Borrowed(""),
            Some(Content::Text(t)) => Cow::Borrowed(t),
            Some(Content::Parts(parts)) => Cow::Owned(
                parts
                    .iter()
                    .filter_map(|p| p.text.as_deref())
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        }
    }

    pub fn has_image(&self) -> bool {
        matches!(&self.content, Some(Content::Parts(parts)) if parts.iter().any(|p| p.kind == "image_url"))
    }
}

/// What happened in a response, whatever wire format it came in.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<'a> {
    Reasoning(Cow<'a, str>),
    Content(Cow<'a, str>),
    /// A tool call, or a streamed piece of one: its name and argument text seen here.
    ToolCall(Cow<'a, str>),
    Usage(Usage),
    Finish(Cow<'a, str>),
}

/// Token usage as the upstream reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// `completion_tokens_details.reasoning_tokens`; part of `completion_tokens`.
    pub reasoning_tokens: Option<u64>,
    /// `prompt_tokens_details.cached_tokens`: prompt tokens read from the upstream's cache
    /// (Anthropic's `cache_read_input_tokens`); part of `prompt_tokens`.
    pub cached_tokens: Option<u64>,
    /// Prompt tokens written to the upstream's cache (Anthropic's
    /// `cache_creation_input_tokens`, billed above plain input); part of `prompt_tokens`.
    pub cache_creation_tokens: Option<u64>,
}

impl Usage {
    /// Adds another call's tokens to these (a follow-up, an agent); the cached-token figure
    /// stays this call's.
    pub fn add_call(&mut self, other: &Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.reasoning_tokens =
            Some(self.reasoning_tokens.unwrap_or(0) + other.reasoning_tokens.unwrap_or(0));
    }
}

/// One piece of a response in the canonical form that translating providers produce and
/// egress renders as OpenAI JSON or chunks.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// The response's id and model, once known.
    Start {
        id: String,
        model: String,
    },
    Reasoning(String),
    /// A signed or redacted reasoning block the client must send back as is (Anthropic's
    /// `thinking` with its signature, `redacted_thinking`); its text also came as `Reasoning`.
    ReasoningBlock(Value),
    Content(String),
    /// A tool call begins: its position among the response's calls, id and name.
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// More argument JSON text for the tool call at `index`.
    ToolCallArguments {
        index: usize,
        arguments: String,
    },
    /// Why the response ended, as an OpenAI `finish_reason`.
    Finish(String),
    /// Usage so far (later figures replace earlier ones).
    Usage(Usage),
    /// The upstream reported an error inside the response.
    Error {
        kind: String,
        message: String,
    },
}

impl Delta {
    /// About how many bytes the delta holds, for bounding what a response collects.
    pub fn size(&self) -> usize {
        match self {
            Delta::Start { id, model } => id.len() + model.len(),
            Delta::Reasoning(t) | Delta::Content(t) | Delta::Finish(t) => t.len(),
            Delta::ReasoningBlock(v) => v.to_string().len(),
            Delta::ToolCallStart { id, name, .. } => id.len() + name.len(),
            Delta::ToolCallArguments { arguments, .. } => arguments.len(),
            Delta::Usage(_) => 0,
            Delta::Error { kind, message } => kind.len() + message.len(),
        }
    }
}

impl Delta {
    /// The observation this delta is, for counting.
    pub fn event(&self) -> Option<Event<'_>> {
        Some(match self {
            Delta::Reasoning(t) => Event::Reasoning(Cow::Borrowed(t)),
            Delta::Content(t) => Event::Content(Cow::Borrowed(t)),
            Delta::ToolCallStart { name, .. } => Event::ToolCall(Cow::Borrowed(name)),
            Delta::ToolCallArguments { arguments, .. } => Event::ToolCall(Cow::Borrowed(arguments)),
            Delta::Finish(r) => Event::Finish(Cow::Borrowed(r)),
            Delta::Usage(u) => Event::Usage(*u),
            Delta::Start { .. } | Delta::ReasoningBlock(_) | Delta::Error { .. } => return None,
        })
    }
}

/// Where the mode came from, for logs and `route --explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeSource {
    Suffix,
    Header,
    ReasoningObject,
    ReasoningEffort,
    DomainDefault,
    Default,
}

impl ModeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ModeSource::Suffix => "model suffix",
            ModeSource::Header => "x-thinkgate-mode header",
            ModeSource::ReasoningObject => "reasoning object",
            ModeSource::ReasoningEffort => "reasoning_effort",
            ModeSource::DomainDefault => "domain default",
            ModeSource::Default => "config default",
        }
    }
}

/// The reasoning policy one request runs under.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub mode: Mode,
    pub source: ModeSource,
    /// Thinking is to be turned off wherever the model allows (instant mode, or a client
    /// that asked for no reasoning). `reasoning` is then the backstop for models that think
    /// anyway.
    pub off: bool,
    /// Reasoning tokens allowed.
    pub reasoning: u64,
    /// Output tokens kept for the answer.
    pub reserve: u64,
    /// Tell the model its budget in the prompt.
    pub hint: bool,
    /// The budget the client asked for, when it asked for more than the policy allows.
    pub clamped_from: Option<u64>,
    /// The client asked for the reasoning text to be left out of the response.
    pub exclude: bool,
    /// Something the client should know (an effort level the table does not know).
    pub notice: Option<String>,
    /// The budget was learned from traffic (an adaptive mode), not read from the config.
    pub learned: bool,
}

impl Budget {
    /// The output cap to send upstream: the thinking plus the answer's reserve.
    pub fn output_cap(&self) -> u64 {
        if self.off {
            self.reserve
        } else {
            self.reasoning + self.reserve
        }
    }

    /// The budget as the response headers report it: 0 when thinking is off.
    pub fn reported(&self) -> u64 {
        if self.off {
            0
        } else {
            self.reasoning
        }
    }
}

/// A response id of the proxy's own (a contemplating answer, a cache hit): `chatcmpl-tg`
/// and a uuid's hex digits, encoded without `fmt` (a hit is cheap enough that it shows).
pub fn own_response_id() -> String {
    const PREFIX: &str = "chatcmpl-tg";
    let mut id = [0u8; PREFIX.len() + uuid::fmt::Simple::LENGTH];
    id[..PREFIX.len()].copy_from_slice(PREFIX.as_bytes());
    uuid::Uuid::new_v4()
        .simple()
        .encode_lower(&mut id[PREFIX.len()..]);
    String::from_utf8_lossy(&id).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn native(format: WireFormat, body: Value) -> ChatRequest {
        let mut req = crate::ingress::parse_chat(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        let Value::Object(body) = body else {
            unreachable!()
        };
        req.native = Some(NativeBody::new(format, body, Vec::new()));
        req
    }

    #[test]
    fn a_system_note_reaches_the_native_body_in_its_own_words() {
        // Anthropic system blocks: a new last block, so the cached prefix stays as it was.
        let cached =
            json!({"type": "text", "text": "long rules", "cache_control": {"type": "ephemeral"}});
        let mut req = native(WireFormat::Anthropic, json!({"system": [cached.clone()]}));
        req.add_system_note("note");
        let body = &req.native.as_ref().unwrap().body;
        assert_eq!(
            body["system"],
            json!([cached, {"type": "text", "text": "note"}])
        );
        assert_eq!(
            req.body["messages"][0]["content"], "note",
            "chat's copy too"
        );

        let mut req = native(WireFormat::Responses, json!({"instructions": "Be brief."}));
        req.add_system_note("note");
        let body = &req.native.as_ref().unwrap().body;
        assert_eq!(body["instructions"], "Be brief.\n\nnote");
        let mut req = native(WireFormat::Responses, json!({"input": "hi"}));
        req.add_system_note("note");
        assert_eq!(req.native.as_ref().unwrap().body["instructions"], "note");
        // Appending turns leaves the native body behind: only chat's copy has them.
        assert!(req
            .with_appended(vec![json!({"role": "user", "content": "x"})])
            .native
            .is_none());
    }
}
