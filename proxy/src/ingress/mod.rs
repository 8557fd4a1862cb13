//! Ingress: the client's HTTP request → the canonical [`ChatRequest`].
//!
//! Reads the body under the configured limit, parses it, and checks the fields the proxy
//! reads, so that every malformed request gets a 400 naming the problem and where it is.
//! The body as sent is kept whole for lossless forwarding.

use bytes::Bytes;
use http::{header, HeaderMap, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use serde_json::{Map, Value};

use std::borrow::Cow;

use crate::canonical::{ChatRequest, Message};
use crate::error::ApiError;

/// Reads a request body within `timeout`, refusing one over `limit` bytes with 413 (before
/// reading it when `Content-Length` already says so) and a slow one with 408.
pub async fn read_body<B>(
    headers: &HeaderMap,
    body: B,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
        .with_code("request_too_large")
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // Into one buffer sized from Content-Length: `collect().to_bytes()` would copy a body
    // that came in many frames once more.
    let capacity = declared.unwrap_or(0).min(limit as u64) as usize;
    let read = tokio::time::timeout(timeout, gather(Limited::new(body, limit), capacity));
    let Ok(read) = read.await else {
        return Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            format!(
                "the request body was not received within {} ms",
                timeout.as_millis()
            ),
        )
        .with_code("request_timeout"));
    };
    match read {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::invalid_request(format!(
            "the request body could not be read: {e}"
        ))),
    }
}

/// A body's data frames, appended into one buffer.
async fn gather<B>(body: B, capacity: usize) -> Result<Bytes, B::Error>
where
    B: hyper::body::Body,
{
    use bytes::Buf;
    let mut body = std::pin::pin!(body);
    let mut buf = bytes::BytesMut::with_capacity(capacity);
    while let Some(frame) = body.frame().await {
        if let Ok(mut data) = frame?.into_data() {
            while data.has_remaining() {
                let chunk = data.chunk();
                buf.extend_from_slice(chunk);
                let n = chunk.len();
                data.advance(n);
            }
        }
    }
    Ok(buf.freeze())
}

/// The fields of a chat request the proxy reads, borrowed from the parsed body (no string is
/// copied); everything else passes through untouched.
#[derive(Deserialize)]
struct View<'a> {
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    messages: Option<Vec<Message<'a>>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    tools: Option<Vec<serde::de::IgnoredAny>>,
    // Read only to type-check them; the upstream gets them as sent.
    #[serde(default)]
    #[allow(dead_code)]
    n: Option<u32>,
    #[serde(default)]
    #[allow(dead_code)]
    max_tokens: Option<u32>,
    #[serde(default)]
    #[allow(dead_code)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    #[allow(dead_code)]
    temperature: Option<f64>,
    #[serde(default)]
    #[allow(dead_code)]
    top_p: Option<f64>,
    #[serde(default)]
    #[allow(dead_code)]
    reasoning_effort: Option<String>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// A request body read under `[server]`'s bounds (`max_body_bytes`, `body_read_timeout`):
/// how every API's ingress begins.
pub async fn read_within<B>(
    headers: &HeaderMap,
    body: B,
    server: &thinkgate_config::Server,
) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    read_body(
        headers,
        body,
        server.max_body_bytes,
        server.body_read_timeout,
    )
    .await
}

/// [`read_within`], parsed as a JSON object.
pub async fn read_object<B>(
    headers: &HeaderMap,
    body: B,
    server: &thinkgate_config::Server,
) -> Result<Map<String, Value>, ApiError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    json_object(&read_within(headers, body, server).await?)
}

/// A body as a JSON object, or the 400 that says why it is not one.
pub fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::invalid_request(format!("the request body is not valid JSON: {e}"))
            .with_code("invalid_json")
    })?;
    match value {
        Value::Object(body) => Ok(body),
        _ => Err(ApiError::invalid_request(
            "the request body must be a JSON object",
        )),
    }
}

/// Parses an OpenAI chat completions body.
pub fn parse_chat(bytes: &[u8]) -> Result<ChatRequest, ApiError> {
    let value = Value::Object(json_object(bytes)?);
    let not_object = || ApiError::invalid_request("the request body must be a JSON object");
    let view: View<'_> = serde_path_to_error::deserialize(&value).map_err(field_error)?;
    let checked = check(view)?;
    let Value::Object(body) = value else {
        return Err(not_object());
    };
    Ok(ChatRequest {
        model: checked.model,
        stream: checked.stream,
        include_usage: checked.include_usage,
        has_tools: checked.has_tools,
        body,
        native: None,
    })
}

/// What the checks found, owning only small values.
struct Checked {
    model: String,
    stream: bool,
    include_usage: bool,
    has_tools: bool,
}

fn check(view: View<'_>) -> Result<Checked, ApiError> {
    let required =
        |field: &str| ApiError::invalid_request(format!("`{field}` is required")).with_param(field);
    let messages = view.messages.ok_or_else(|| required("messages"))?;
    if messages.is_empty() {
        return Err(
            ApiError::invalid_request("`messages` must contain at least one message")
                .with_param("messages"),
        );
    }
    for (i, m) in messages.iter().enumerate() {
        if !ROLES.contains(&m.role.as_ref()) {
            let shown = if m.role.is_empty() {
                "(missing)"
            } else {
                m.role.as_ref()
            };
            return Err(ApiError::invalid_request(format!(
                "messages[{i}].role `{shown}` is not one of {}",
                ROLES.join(", ")
            ))
            .with_param(format!("messages[{i}].role")));
        }
    }
    let model = view.model.ok_or_else(|| required("model"))?;
    if model.is_empty() {
        return Err(ApiError::invalid_request("`model` must not be empty").with_param("model"));
    }
    let stream = view.stream.unwrap_or(false);
    Ok(Checked {
        model: model.into_owned(),
        stream,
        include_usage: stream
            && view
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        has_tools: view.tools.is_some_and(|t| !t.is_empty()),
    })
}

/// Turns a typed-view failure into a 400 that names the field by its path (required fields
/// are optional in the view and checked after, so serde's message is never parsed).
fn field_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let param = err.path().to_string();
    let detail = err.into_inner();
    ApiError::invalid_request(format!("invalid field `{param}`: {detail}")).with_param(param)
}

#[cfg(test)]
mod tests {
    use super::*;
    const SECOND: std::time::Duration = std::time::Duration::from_secs(1);

    #[test]
    fn parses_a_plain_request_and_keeps_unknown_fields() {
        let req = parse_chat(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,
                "stream_options":{"include_usage":true},"future_field":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(req.model, "m");
        assert!(req.stream && req.include_usage);
        assert_eq!(req.body["future_field"]["x"], 1);
        assert_eq!(req.messages()[0].text(), "hi");
    }

    #[test]
    fn malformed_json_names_the_position() {
        let err = parse_chat(b"{\"model\": \"m\",\n \"messages\": [}").unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.message.contains("line 2 column"), "{}", err.message);
    }

    #[test]
    fn wrong_type_names_the_field() {
        let err = parse_chat(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
        )
        .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("stream"));
        let err =
            parse_chat(br#"{"model":"m","messages":[{"role":"user","content":5}]}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages[0].content"));
        let err = parse_chat(br#"{"messages":[{"role":"user","content":"x"}]}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("model"));
        let err = parse_chat(br#"{"model":"m","messages":[{"content":"x"}]}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages[0].role"));
    }

    #[tokio::test]
    async fn body_limit_holds_without_content_length() {
        use bytes::Bytes;
        let chunks = (0..10).map(|_| {
            Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from(vec![b'x'; 100])))
        });
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
        let err = read_body(&HeaderMap::new(), body, 512, SECOND)
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        let chunks = (0..3).map(|_| {
            Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from(vec![b'x'; 100])))
        });
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
        assert_eq!(
            read_body(&HeaderMap::new(), body, 512, SECOND)
                .await
                .unwrap()
                .len(),
            300
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, "100000".parse().unwrap());
        let err = read_body(&headers, http_body_util::Empty::<Bytes>::new(), 512, SECOND)
            .await
            .unwrap_err();
        assert_eq!(err.code, Some("request_too_large"));
    }

    #[test]
    fn rejects_empty_messages_unknown_roles_and_non_objects() {
        assert_eq!(
            parse_chat(br#"{"model":"m","messages":[]}"#)
                .unwrap_err()
                .param
                .as_deref(),
            Some("messages")
        );
        assert_eq!(
            parse_chat(br#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#)
                .unwrap_err()
                .param
                .as_deref(),
            Some("messages[0].role")
        );
        assert!(parse_chat(b"[1,2]").is_err());
    }
}
