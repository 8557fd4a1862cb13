//! What the adapters that translate the OpenAI request into another vendor's format share:
//! refusing what the vendor cannot do with a precise 400, reading history tool-call
//! arguments, image URLs and stop lists, and small JSON accessors.

use serde_json::{Map, Value};

use crate::canonical::ToolCallIn;
use crate::error::ApiError;

/// The 400 for a request field the upstream has no equivalent for.
pub fn unsupported(param: &str, why: &str) -> ApiError {
    ApiError::invalid_request(format!("`{param}` cannot be used with this model: {why}"))
        .with_param(param)
        .with_code("unsupported_parameter")
}

/// Refuses each `(field, why)` the request sets to anything but null or `false`.
pub fn refuse_fields(body: &Map<String, Value>, fields: &[(&str, &str)]) -> Result<(), ApiError> {
    for (field, why) in fields {
        let set = body
            .get(*field)
            .is_some_and(|v| !v.is_null() && *v != Value::Bool(false));
        if set {
            return Err(unsupported(field, why));
        }
    }
    Ok(())
}

/// Refuses `n > 1`: the translating adapters return one choice.
pub fn refuse_choices(body: &Map<String, Value>, vendor: &str) -> Result<(), ApiError> {
    if body.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(unsupported(
            "n",
            &format!("{vendor} models are served one choice per request; `n` must be 1"),
        ));
    }
    Ok(())
}

/// The output cap the client set (`max_completion_tokens`, or the older `max_tokens`).
pub fn max_tokens(body: &Map<String, Value>) -> Option<u64> {
    ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
}

/// `stop` as a list (OpenAI takes a string or an array).
pub fn stop_list(body: &Map<String, Value>) -> Vec<Value> {
    match body.get("stop") {
        Some(Value::String(s)) => vec![s.clone().into()],
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    }
}

/// The request's tools, when it offers any.
pub fn tools(body: &Map<String, Value>) -> Option<&[Value]> {
    body.get("tools")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .filter(|t| !t.is_empty())
}

/// A client's body in the upstream's own API, as the client sent it, with only the model
/// (the configured upstream name) and `stream` (the proxy streams whenever it watches the
/// reasoning) set.
pub fn as_sent(
    native: &Map<String, Value>,
    upstream_model: &str,
    stream: bool,
) -> Map<String, Value> {
    let mut out = native.clone();
    out.insert("model".into(), upstream_model.into());
    match stream {
        true => drop(out.insert("stream".into(), true.into())),
        false => drop(out.remove("stream")),
    }
    out
}

/// A history tool call's arguments as a JSON value (`{}` when empty).
pub fn call_arguments(call: &ToolCallIn, message: usize, index: usize) -> Result<Value, ApiError> {
    if call.function.arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_str(&call.function.arguments).map_err(|e| {
        let param = format!("messages[{message}].tool_calls[{index}].function.arguments");
        ApiError::invalid_request(format!("`{param}` is not JSON: {e}")).with_param(param)
    })
}

/// A tool turn without the `tool_call_id` the vendor needs.
pub fn missing_call_id(message: usize) -> ApiError {
    ApiError::invalid_request(format!(
        "messages[{message}] is a tool result without `tool_call_id`"
    ))
    .with_param(format!("messages[{message}].tool_call_id"))
}

/// An image URL the vendor cannot take.
pub fn bad_image(message: usize, part: usize, why: &str) -> ApiError {
    let param = format!("messages[{message}].content[{part}].image_url.url");
    ApiError::invalid_request(format!("`{param}` {why}")).with_param(param)
}

/// A content part type the vendor cannot take.
pub fn bad_part(message: usize, part: usize, kind: &str, vendor: &str) -> ApiError {
    ApiError::invalid_request(format!(
        "content part type `{kind}` cannot be sent to {vendor} models"
    ))
    .with_param(format!("messages[{message}].content[{part}].type"))
}

/// An image given as image bytes: `data:<media type>;base64,<data>` → (media type, data).
pub fn data_url(url: &str) -> Option<(&str, &str)> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    Some((meta.strip_suffix(";base64")?, data))
}

pub fn is_http_url(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

/// A string field of a JSON object, or empty.
pub fn str_field(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}
