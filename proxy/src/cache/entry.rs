//! A stored answer: what the client got, as a template with two kinds of hole — the
//! response's id (every chunk of a stream carries it) and the `thinkgate.cache` object —
//! filled in on every replay, so a hit has the request's own id and says it is one while
//! every other byte (the content, the usage block) is the original's. Building, replaying
//! and the bytes kept in Redis; no IO.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Map, Value};

use crate::canonical::Usage;
use crate::relay::{self, sse};

/// What a hole stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Hole {
    /// The response id, as a JSON string.
    Id,
    /// The `thinkgate.cache` object.
    Cache,
}

/// The tokens the original call spent, saved by every hit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Spent {
    pub prompt: u64,
    pub output: u64,
    pub reasoning: u64,
}

impl From<Usage> for Spent {
    fn from(u: Usage) -> Spent {
        Spent {
            prompt: u.prompt_tokens,
            output: u.completion_tokens,
            reasoning: u.reasoning_tokens.unwrap_or(0),
        }
    }
}

/// What is known of an entry besides its bytes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub stream: bool,
    pub content_type: String,
    /// The answer's `x-thinkgate-*` headers (the model, the mode, the budget), replayed.
    pub headers: Vec<(String, String)>,
    /// The model that wrote the answer (empty when the response did not say).
    pub model: String,
    pub spent: Option<Spent>,
    /// When it was stored, in seconds since the Unix epoch.
    pub stored_at: u64,
    /// Each hole's offset in the body and kind, in order.
    holes: Vec<(u32, Hole)>,
}

/// One stored answer.
#[derive(Debug, Clone)]
pub struct Entry {
    pub meta: Meta,
    /// The template's bytes, holes left out.
    body: Bytes,
}

/// Why an answer is not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotKept {
    /// It failed, was cut short or is not a completion (an error event, no `[DONE]`).
    Incomplete,
    TooLarge,
}

impl NotKept {
    pub fn as_str(self) -> &'static str {
        match self {
            NotKept::Incomplete => "incomplete",
            NotKept::TooLarge => "too_large",
        }
    }
}

/// Stand-ins written where the holes go; a JSON string cannot hold a raw control byte, so
/// their escaped forms cannot occur anywhere else in serialized JSON.
const ID_MARK: &str = "\u{1}thinkgate:id\u{1}";
const CACHE_MARK: &str = "\u{1}thinkgate:cache\u{1}";
const ID_TOKEN: &[u8] = br#""\u0001thinkgate:id\u0001""#;
const CACHE_TOKEN: &[u8] = br#""\u0001thinkgate:cache\u0001""#;

impl Entry {
    /// The entry for a whole response body or a whole event stream, or why there is none.
    /// `usage` is the call's as the proxy counted it; the body's own block stands in when
    /// the proxy did not count (contemplating's request records no single call).
    pub fn build(body: Bytes, mut meta: Meta, usage: Option<Usage>) -> Result<Entry, NotKept> {
        let mut out = Vec::with_capacity(body.len() + 64);
        let mut seen_usage = None;
        if meta.stream {
            let events = sse::events_of(body).map_err(|_| NotKept::Incomplete)?;
            let last = events.iter().rposition(is_finish).or_else(|| {
                events
                    .iter()
                    .rposition(|e| e.data().trim_start().starts_with('{'))
            });
            let mut done = false;
            for (i, event) in events.iter().enumerate() {
                let data = event.data();
                if data.trim() == "[DONE]" {
                    done = true;
                    out.extend_from_slice(relay::DONE);
                    continue;
                }
                let Ok(Value::Object(mut chunk)) = serde_json::from_str::<Value>(data) else {
                    out.extend_from_slice(&relay::sse_frame(event.name(), data));
                    continue;
                };
                if chunk.contains_key("error") {
                    return Err(NotKept::Incomplete);
                }
                if let Some(u) = chunk
                    .get("usage")
                    .and_then(crate::upstream::openai::usage_from_json)
                {
                    seen_usage = Some(u);
                }
                mark(&mut chunk, Some(i) == last);
                out.extend_from_slice(&relay::sse_frame(
                    event.name(),
                    &Value::Object(chunk).to_string(),
                ));
            }
            if !done {
                return Err(NotKept::Incomplete);
            }
        } else {
            let Ok(Value::Object(mut whole)) = serde_json::from_slice::<Value>(&body) else {
                return Err(NotKept::Incomplete);
            };
            if whole.contains_key("error") || !whole.get("choices").is_some_and(Value::is_array) {
                return Err(NotKept::Incomplete);
            }
            seen_usage = whole
                .get("usage")
                .and_then(crate::upstream::openai::usage_from_json);
            mark(&mut whole, true);
            // Writing JSON to memory cannot fail.
            let _ = serde_json::to_writer(&mut out, &Value::Object(whole));
        }
        meta.spent = usage.or(seen_usage).map(Spent::from);
        let (body, holes) = cut_holes(&out);
        meta.holes = holes;
        Ok(Entry { meta, body })
    }

    /// The response body for one hit: `id` as the response's id, `cache` (a JSON object)
    /// as `thinkgate.cache`.
    pub fn replay(&self, id: &str, cache: &str) -> Bytes {
        let id = Value::String(id.to_string()).to_string();
        let holes = &self.meta.holes;
        let mut out = BytesMut::with_capacity(self.body.len() + holes.len() * id.len() + 128);
        let mut from = 0;
        for &(at, hole) in holes {
            let at = at as usize;
            out.put_slice(&self.body[from..at]);
            out.put_slice(match hole {
                Hole::Id => id.as_bytes(),
                Hole::Cache => cache.as_bytes(),
            });
            from = at;
        }
        out.put_slice(&self.body[from..]);
        out.freeze()
    }

    /// The bytes kept in Redis: the meta's length, the meta as JSON, the body.
    pub fn encode(&self) -> Vec<u8> {
        let meta = serde_json::to_vec(&self.meta).unwrap_or_default();
        let mut out = Vec::with_capacity(4 + meta.len() + self.body.len());
        out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&self.body);
        out
    }

    /// An entry from [`Entry::encode`]'s bytes; `None` when they are not one (another
    /// version wrote them, or they were cut), which is a miss.
    pub fn decode(bytes: Vec<u8>) -> Option<Entry> {
        let bytes = Bytes::from(bytes);
        let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let meta: Meta = serde_json::from_slice(bytes.get(4..4usize.checked_add(len)?)?).ok()?;
        let body = bytes.slice(4 + len..);
        let ordered = meta.holes.windows(2).all(|w| w[0].0 <= w[1].0);
        let within = meta.holes.last().is_none_or(|h| h.0 as usize <= body.len());
        (ordered && within).then_some(Entry { meta, body })
    }

    /// What the entry holds in memory, roughly: its bytes and its meta.
    pub fn weight(&self) -> u64 {
        let headers: usize = self
            .meta
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        (self.body.len() + headers + self.meta.holes.len() * 8 + 256) as u64
    }

    /// The size that `max_entry_bytes` bounds.
    pub fn len(&self) -> usize {
        self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }
}

impl Meta {
    pub fn new(stream: bool, content_type: String, headers: Vec<(String, String)>) -> Meta {
        Meta {
            stream,
            content_type,
            headers,
            model: String::new(),
            spent: None,
            stored_at: 0,
            holes: Vec::new(),
        }
    }
}

/// A chunk that ends a choice.
fn is_finish(event: &sse::SseEvent) -> bool {
    let Ok(Value::Object(chunk)) = serde_json::from_str::<Value>(event.data()) else {
        return false;
    };
    let choices = chunk.get("choices").and_then(Value::as_array);
    choices.is_some_and(|c| {
        c.iter()
            .any(|c| c.get("finish_reason").is_some_and(|f| !f.is_null()))
    })
}

/// Puts the id mark where the id is, and the cache mark into `thinkgate` when `cache`.
fn mark(object: &mut Map<String, Value>, cache: bool) {
    if let Some(id) = object.get_mut("id").filter(|id| id.is_string()) {
        *id = Value::String(ID_MARK.into());
    }
    if !cache {
        return;
    }
    let ours = object
        .entry("thinkgate")
        .or_insert_with(|| Value::Object(Map::new()));
    // One that is not an object is not ours to rewrite: the answer keeps it, and says
    // nothing of the cache.
    if let Value::Object(ours) = ours {
        ours.insert("cache".into(), Value::String(CACHE_MARK.into()));
    }
}

/// The bytes without the marks, and where each was.
fn cut_holes(marked: &[u8]) -> (Bytes, Vec<(u32, Hole)>) {
    let mut body = BytesMut::with_capacity(marked.len());
    let mut holes = Vec::new();
    let mut rest = marked;
    let finders = [
        (memchr::memmem::Finder::new(ID_TOKEN), Hole::Id),
        (memchr::memmem::Finder::new(CACHE_TOKEN), Hole::Cache),
    ];
    loop {
        let next = finders
            .iter()
            .filter_map(|(f, hole)| f.find(rest).map(|at| (at, *hole, f.needle().len())))
            .min_by_key(|(at, ..)| *at);
        let Some((at, hole, len)) = next else { break };
        body.put_slice(&rest[..at]);
        holes.push((body.len() as u32, hole));
        rest = &rest[at + len..];
    }
    body.put_slice(rest);
    (body.freeze(), holes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(stream: bool) -> Meta {
        Meta::new(stream, "application/json".into(), Vec::new())
    }

    #[test]
    fn a_whole_answer_replays_with_its_own_id_and_the_original_usage() {
        let body = json!({"id": "chatcmpl-up1", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "say \"chatcmpl-up1\""}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "completion_tokens_details": {"reasoning_tokens": 2}}});
        let entry = Entry::build(Bytes::from(body.to_string()), meta(false), None).unwrap();
        assert_eq!(
            entry.meta.spent,
            Some(Spent {
                prompt: 9,
                output: 4,
                reasoning: 2
            })
        );
        let out: Value =
            serde_json::from_slice(&entry.replay("chatcmpl-new", r#"{"status":"hit"}"#)).unwrap();
        assert_eq!(out["id"], "chatcmpl-new");
        assert_eq!(out["thinkgate"]["cache"]["status"], "hit");
        assert_eq!(out["usage"], body["usage"]);
        assert_eq!(out["choices"], body["choices"]);
        let again = Entry::decode(entry.encode()).unwrap();
        assert_eq!(again.replay("x", "{}"), entry.replay("x", "{}"));
    }

    #[test]
    fn a_stream_replays_every_event_with_the_note_on_its_finishing_chunk() {
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\r\n\r\n",
                json!({"id": "c-1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        let text = format!(
            ": keep-alive\n\n{}{}{}data: [DONE]\n\n",
            chunk(json!({"role": "assistant", "content": "Hel"}), Value::Null),
            chunk(json!({"content": "lo"}), Value::Null),
            chunk(json!({}), json!("stop")),
        );
        let entry = Entry::build(Bytes::from(text), meta(true), None).unwrap();
        let out = entry.replay("c-2", r#"{"status":"hit"}"#);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        let chunks: Vec<Value> = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| c["id"] == "c-2"));
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "Hello");
        assert!(chunks[..2].iter().all(|c| c.get("thinkgate").is_none()));
        assert_eq!(chunks[2]["thinkgate"]["cache"]["status"], "hit");
    }

    #[test]
    fn failed_or_unfinished_answers_are_not_kept() {
        let cut =
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n";
        assert_eq!(
            Entry::build(Bytes::from(cut), meta(true), None).unwrap_err(),
            NotKept::Incomplete
        );
        let failed = format!("{cut}data: {{\"error\":{{\"message\":\"x\"}}}}\n\ndata: [DONE]\n\n");
        assert!(Entry::build(Bytes::from(failed), meta(true), None).is_err());
        let error = json!({"error": {"message": "x"}}).to_string();
        assert!(Entry::build(Bytes::from(error), meta(false), None).is_err());
        assert!(Entry::build(Bytes::from_static(b"not json"), meta(false), None).is_err());
        assert!(Entry::decode(vec![1, 2]).is_none());
        assert!(Entry::decode(vec![200, 0, 0, 0, b'{']).is_none());
    }
}
