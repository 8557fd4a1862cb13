//! Google's native Gemini API (`models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse`).
//!
//! Requests: system and developer turns become `systemInstruction`; user, assistant and tool
//! turns become `contents` of `user`/`model` role with `text`, `inlineData`/`fileData`,
//! `functionCall` and `functionResponse` parts; tools become `functionDeclarations` (their
//! JSON Schema as `parametersJsonSchema`), sampling fields `generationConfig`. Reasoning
//! models get `thinkingConfig.includeThoughts` so their thought summaries reach the client.
//!
//! Gemini 3 signs function calls (`thoughtSignature`) and rejects a history whose calls lost
//! their signature. OpenAI clients keep nothing but the tool call's id, so the signature
//! travels inside it (`<id>` + [`SIGNATURE_MARK`] + signature) and is put back on the way in.
//!
//! Responses: `candidates[0].content.parts` (thought parts are reasoning), `finishReason`,
//! `promptFeedback.blockReason` and `usageMetadata` (where `thoughtsTokenCount` is billed on
//! top of `candidatesTokenCount`) become canonical [`Delta`]s. A streamed response is a
//! sequence of such objects, one per SSE event, ending when the connection does.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::convert::{self, str_field, unsupported};
use crate::canonical::{ChatRequest, Content, Delta, Message, Usage};
use crate::error::ApiError;

/// Separates a Gemini function call's id from its thought signature in an OpenAI tool call id.
pub const SIGNATURE_MARK: &str = "~ts~";

const UNSUPPORTED: [(&str, &str); 3] = [
    (
        "logprobs",
        "log probabilities are not translated from Gemini models",
    ),
    (
        "top_logprobs",
        "log probabilities are not translated from Gemini models",
    ),
    ("audio", "audio output is not translated from Gemini models"),
];

/// The path under the provider's base URL for `model`.
pub fn path(model: &str, stream: bool) -> String {
    if stream {
        format!("models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("models/{model}:generateContent")
    }
}

/// Translates an OpenAI chat request into a `generateContent` request.
pub fn request_body(req: &ChatRequest, reasoning: bool) -> Result<Map<String, Value>, ApiError> {
    let body = &req.body;
    convert::refuse_choices(body, "Gemini")?;
    convert::refuse_fields(body, &UNSUPPORTED)?;

    let mut out = Map::new();
    let history = req.messages();
    out.insert("contents".into(), Value::Array(contents(&history)?));
    let system: Vec<Value> = history
        .iter()
        .filter(|m| m.role == "system" || m.role == "developer")
        .map(|m| m.text().into_owned())
        .filter(|t| !t.is_empty())
        .map(|t| json!({ "text": t }))
        .collect();
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    if let Some(tools) = convert::tools(body) {
        let declarations: Vec<Value> = tools.iter().filter_map(declaration).collect();
        out.insert(
            "tools".into(),
            json!([{ "functionDeclarations": declarations }]),
        );
        if let Some(config) = tool_config(body) {
            out.insert("toolConfig".into(), config);
        }
    }
    let config = generation_config(body, reasoning)?;
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    Ok(out)
}

fn generation_config(
    body: &Map<String, Value>,
    reasoning: bool,
) -> Result<Map<String, Value>, ApiError> {
    let mut config = Map::new();
    if let Some(max) = convert::max_tokens(body) {
        config.insert("maxOutputTokens".into(), max.into());
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = body.get(from).filter(|v| !v.is_null()) {
            config.insert(to.into(), v.clone());
        }
    }
    let stop = convert::stop_list(body);
    if !stop.is_empty() {
        config.insert("stopSequences".into(), Value::Array(stop));
    }
    if let Some(format) = body.get("response_format") {
        match format.get("type").and_then(Value::as_str) {
            Some("json_object") => {
                config.insert("responseMimeType".into(), "application/json".into());
            }
            Some("json_schema") => {
                config.insert("responseMimeType".into(), "application/json".into());
                if let Some(schema) = format.pointer("/json_schema/schema") {
                    config.insert("responseJsonSchema".into(), schema.clone());
                }
            }
            Some("text") | None => {}
            Some(other) => {
                return Err(unsupported(
                    "response_format",
                    &format!(
                        "Gemini models take `text`, `json_object` or `json_schema`, not `{other}`"
                    ),
                ))
            }
        }
    }
    if reasoning {
        config.insert("thinkingConfig".into(), json!({ "includeThoughts": true }));
    }
    Ok(config)
}

/// OpenAI's function tool → a Gemini function declaration.
fn declaration(t: &Value) -> Option<Value> {
    let f = t.get("function")?;
    let mut out = Map::new();
    out.insert("name".into(), f.get("name")?.clone());
    if let Some(d) = f.get("description") {
        out.insert("description".into(), d.clone());
    }
    if let Some(schema) = f.get("parameters") {
        out.insert("parametersJsonSchema".into(), schema.clone());
    }
    Some(Value::Object(out))
}

fn tool_config(body: &Map<String, Value>) -> Option<Value> {
    let config = match body.get("tool_choice")? {
        Value::String(s) if s == "none" => json!({"mode": "NONE"}),
        Value::String(s) if s == "required" => json!({"mode": "ANY"}),
        Value::Object(o) => {
            let name = o.get("function").and_then(|f| f.get("name"))?.clone();
            json!({"mode": "ANY", "allowedFunctionNames": [name]})
        }
        _ => json!({"mode": "AUTO"}),
    };
    Some(json!({ "functionCallingConfig": config }))
}

/// A tool call id as Gemini knows it, and the thought signature that travelled with it.
fn split_call_id(id: &str) -> (&str, Option<&str>) {
    match id.split_once(SIGNATURE_MARK) {
        Some((id, signature)) => (id, Some(signature)),
        None => (id, None),
    }
}

/// The conversation as `user`/`model` contents; consecutive turns of one side merge (all the
/// answers to one step's calls must travel in one content).
fn contents(history: &[Message]) -> Result<Vec<Value>, ApiError> {
    let mut out: Vec<(&str, Vec<Value>)> = Vec::new();
    for (i, m) in history.iter().enumerate() {
        let (role, parts) = match m.role.as_ref() {
            "system" | "developer" => continue,
            "user" => ("user", content_parts(m, i)?),
            "assistant" => {
                let mut parts = content_parts(m, i)?;
                for (j, call) in m.tool_calls.iter().flatten().enumerate() {
                    let args = convert::call_arguments(call, i, j)?;
                    let (id, signature) = split_call_id(&call.id);
                    let mut function = json!({"name": call.function.name, "args": args});
                    if !id.is_empty() && !id.starts_with(GENERATED_ID) {
                        function["id"] = id.into();
                    }
                    let mut part = json!({ "functionCall": function });
                    if let Some(signature) = signature {
                        part["thoughtSignature"] = signature.into();
                    }
                    parts.push(part);
                }
                ("model", parts)
            }
            "tool" | "function" => {
                let call_id = m
                    .tool_call_id
                    .as_deref()
                    .ok_or_else(|| convert::missing_call_id(i))?;
                let name = called_function(&history[..i], call_id).ok_or_else(|| {
                    ApiError::invalid_request(format!(
                        "messages[{i}].tool_call_id `{}` answers no earlier assistant tool call; \
                         Gemini needs the function's name",
                        split_call_id(call_id).0
                    ))
                    .with_param(format!("messages[{i}].tool_call_id"))
                })?;
                let text = m.text();
                // `response` must be an object: a JSON object result goes as is.
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(o)) => Value::Object(o),
                    _ => json!({ "result": text }),
                };
                let mut function = json!({"name": name, "response": response});
                let (id, _) = split_call_id(call_id);
                if !id.starts_with(GENERATED_ID) {
                    function["id"] = id.into();
                }
                ("user", vec![json!({ "functionResponse": function })])
            }
            _ => continue,
        };
        if parts.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(parts),
            _ => out.push((role, parts)),
        }
    }
    Ok(out
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect())
}

/// The name of the function an earlier assistant turn called with `call_id`.
fn called_function<'a>(earlier: &'a [Message], call_id: &str) -> Option<&'a str> {
    earlier.iter().rev().find_map(|m| {
        m.tool_calls
            .iter()
            .flatten()
            .find(|c| c.id == call_id)
            .map(|c| c.function.name.as_ref())
    })
}

fn content_parts(m: &Message, i: usize) -> Result<Vec<Value>, ApiError> {
    let mut parts = Vec::new();
    match &m.content {
        None => {}
        Some(Content::Text(t)) if t.is_empty() => {}
        Some(Content::Text(t)) => parts.push(json!({ "text": t })),
        Some(Content::Parts(list)) => {
            for (j, p) in list.iter().enumerate() {
                match (p.kind.as_ref(), &p.text, &p.image_url) {
                    ("text", Some(t), _) => parts.push(json!({ "text": t })),
                    ("image_url", _, Some(image)) => parts.push(image_part(&image.url, i, j)?),
                    (other, _, _) => return Err(convert::bad_part(i, j, other, "Gemini")),
                }
            }
        }
    }
    Ok(parts)
}

/// Image bytes go inline; a URL goes as `fileData`, whose `mimeType` Gemini requires, so the
/// URL must end in a known image extension.
fn image_part(url: &str, i: usize, j: usize) -> Result<Value, ApiError> {
    if let Some((mime, data)) = convert::data_url(url) {
        return Ok(json!({"inlineData": {"mimeType": mime, "data": data}}));
    }
    if !convert::is_http_url(url) {
        return Err(convert::bad_image(
            i,
            j,
            "must be an http(s) URL or a base64 data URL",
        ));
    }
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    let mime = match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        _ => {
            return Err(convert::bad_image(
                i,
                j,
                "has no image file extension (png, jpg, webp, gif, heic); Gemini needs the \
                 image's type, so send it as a base64 data URL",
            ))
        }
    };
    Ok(json!({"fileData": {"mimeType": mime, "fileUri": url}}))
}

/// Prefix of the tool call ids the proxy makes up for calls Gemini sent without one.
const GENERATED_ID: &str = "call_gm";

/// Gemini's `finishReason` as an OpenAI `finish_reason`.
pub fn finish_reason(reason: &str, called_tools: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter",
        _ if called_tools => "tool_calls",
        // STOP, OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL and reasons added later.
        _ => "stop",
    }
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct UsageWire {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    tool_use_prompt_token_count: u64,
    #[serde(default)]
    cached_content_token_count: Option<u64>,
}

impl From<UsageWire> for Usage {
    /// OpenAI's completion tokens include reasoning; Gemini reports thoughts apart.
    fn from(u: UsageWire) -> Usage {
        Usage {
            prompt_tokens: u.prompt_token_count + u.tool_use_prompt_token_count,
            completion_tokens: u.candidates_token_count + u.thoughts_token_count,
            reasoning_tokens: Some(u.thoughts_token_count),
            cached_tokens: u.cached_content_token_count,
            cache_creation_tokens: None,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ResponseWire {
    #[serde(default)]
    candidates: Vec<CandidateWire>,
    #[serde(default)]
    prompt_feedback: Option<Value>,
    #[serde(default)]
    usage_metadata: Option<UsageWire>,
    #[serde(default)]
    model_version: String,
    #[serde(default)]
    response_id: String,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct CandidateWire {
    #[serde(default)]
    content: Option<ContentWire>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct ContentWire {
    #[serde(default)]
    parts: Vec<Value>,
}

/// Decodes whole responses and stream events alike: a stream is a sequence of responses.
#[derive(Default)]
pub struct Decoder {
    started: bool,
    calls: usize,
}

impl Decoder {
    /// The deltas of one response object (a whole response or one streamed event).
    pub fn response(&mut self, bytes: &[u8]) -> Result<Vec<Delta>, String> {
        let r: ResponseWire = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a Gemini GenerateContentResponse: {e}"))?;
        let mut out = Vec::new();
        if let Some(e) = r.error {
            let (kind, message) = error_fields(&e);
            out.push(Delta::Error {
                kind: kind.to_string(),
                message,
            });
            return Ok(out);
        }
        if !self.started {
            self.started = true;
            out.push(Delta::Start {
                id: r.response_id,
                model: r.model_version,
            });
        }
        let mut finish = None;
        if let Some(c) = r.candidates.into_iter().next() {
            for part in c.content.map(|c| c.parts).unwrap_or_default() {
                self.part(&part, &mut out);
            }
            finish = c.finish_reason;
        } else if r
            .prompt_feedback
            .as_ref()
            .and_then(|f| f.get("blockReason"))
            .is_some()
        {
            // The prompt itself was blocked: no candidate at all.
            finish = Some("SAFETY".to_string());
        }
        if let Some(u) = r.usage_metadata {
            out.push(Delta::Usage(u.into()));
        }
        if let Some(reason) = finish {
            out.push(Delta::Finish(
                finish_reason(&reason, self.calls > 0).to_string(),
            ));
        }
        Ok(out)
    }

    fn part(&mut self, part: &Value, out: &mut Vec<Delta>) {
        if let Some(call) = part.get("functionCall") {
            let index = self.calls;
            self.calls += 1;
            let mut id = match call.get("id").and_then(Value::as_str) {
                Some(id) if !id.is_empty() => id.to_string(),
                _ => format!("{GENERATED_ID}{index}"),
            };
            if let Some(signature) = part.get("thoughtSignature").and_then(Value::as_str) {
                id = format!("{id}{SIGNATURE_MARK}{signature}");
            }
            out.push(Delta::ToolCallStart {
                index,
                id,
                name: str_field(call, "name"),
            });
            let args = call.get("args").cloned().unwrap_or_else(|| json!({}));
            out.push(Delta::ToolCallArguments {
                index,
                arguments: args.to_string(),
            });
        } else if let Some(text) = part.get("text").and_then(Value::as_str) {
            if text.is_empty() {
                return;
            }
            let thought = part.get("thought").and_then(Value::as_bool) == Some(true);
            out.push(if thought {
                Delta::Reasoning(text.to_string())
            } else {
                Delta::Content(text.to_string())
            });
        }
        // inlineData, executableCode and parts added later carry nothing the OpenAI
        // format has a place for.
    }
}

/// A Google error's `status` as an OpenAI error type (a bounded set), and its message.
fn error_fields(e: &Value) -> (&'static str, String) {
    let kind = match e.get("status").and_then(Value::as_str).unwrap_or("") {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => "invalid_request_error",
        "UNAUTHENTICATED" => "authentication_error",
        "PERMISSION_DENIED" => "permission_error",
        "NOT_FOUND" => "not_found_error",
        "RESOURCE_EXHAUSTED" => "rate_limit_error",
        "UNAVAILABLE" => "overloaded_error",
        "DEADLINE_EXCEEDED" => "timeout_error",
        _ => "api_error",
    };
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("upstream error")
        .to_string();
    (kind, message)
}

/// Google's error body `{"error":{"code","message","status"}}`: its type and message.
pub fn error_body(bytes: &[u8]) -> Option<(&'static str, String)> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let e = v.get("error")?;
    e.get("message")?;
    Some(error_fields(e))
}
