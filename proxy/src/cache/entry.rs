//! A stored answer: what the client got, as a template with two kinds of hole — the
//! response's id (every chunk of a stream carries it) and the `thinkgate.cache` object —
//! filled in on every replay, so a hit has the request's own id and says it is one while
//! every other byte (the content, the usage block) is the original's. Building, replaying
//! and the bytes kept in Redis; no IO.

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::canonical::Usage;
use crate::relay::sse;

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
    /// The answers being recorded already held `max_bytes` together.
    NoRoom,
}

impl NotKept {
    pub fn as_str(self) -> &'static str {
        match self {
            NotKept::Incomplete => "incomplete",
            NotKept::TooLarge => "too_large",
            NotKept::NoRoom => "no_room",
        }
    }
}

impl Entry {
    /// The entry for a whole response body or a whole event stream, or why there is none.
    /// `usage` is the call's as the proxy counted it; the body's own block stands in when
    /// the proxy did not count (contemplating's request records no single call). The bytes
    /// are the answer's own: nothing is parsed into a tree or written again, the holes are
    /// found by a borrowing read (a stream is framed anew, one `data:` line per event).
    pub fn build(body: Bytes, mut meta: Meta, usage: Option<Usage>) -> Result<Entry, NotKept> {
        let mut t = Template {
            out: Vec::with_capacity(body.len() + 64),
            holes: Vec::new(),
        };
        let seen_usage = match meta.stream {
            true => stream(body, &mut t)?,
            false => {
                // The borrowing read skips what it does not look at, UTF-8 checks included.
                std::str::from_utf8(&body).map_err(|_| NotKept::Incomplete)?;
                let view = View::of(&body)?;
                // A completion's choices, or an embeddings list's data.
                if view.choices.is_none() && view.data.is_none() {
                    return Err(NotKept::Incomplete);
                }
                t.object(&body, &view, true);
                view.usage()
            }
        };
        meta.spent = usage.or(seen_usage).map(Spent::from);
        meta.holes = t.holes;
        Ok(Entry {
            meta,
            body: Bytes::from(t.out),
        })
    }

    /// The response body for one hit: `id` as the response's id, `cache` (a JSON object)
    /// as `thinkgate.cache`.
    pub fn replay(&self, id: &str, cache: &str) -> Bytes {
        let plain = id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let id = match plain {
            true => format!("\"{id}\""),
            false => Value::String(id.to_string()).to_string(),
        };
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

/// What the cache reads of one JSON object (a whole answer, or one chunk of a stream),
/// borrowed from its bytes: where its `id` and `thinkgate` values are, and whether it is an
/// answer at all.
#[derive(serde::Deserialize)]
struct View<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    choices: Option<Vec<ChoiceView>>,
    #[serde(default)]
    data: Option<IgnoredAny>,
    #[serde(default)]
    error: Option<IgnoredAny>,
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
    #[serde(borrow, default)]
    thinkgate: Option<&'a RawValue>,
}

#[derive(serde::Deserialize)]
struct ChoiceView {
    #[serde(default)]
    finish_reason: Option<IgnoredAny>,
}

impl<'a> View<'a> {
    /// The view of an object; an error object (or something else) is no answer to keep.
    fn of(data: &'a [u8]) -> Result<View<'a>, NotKept> {
        let view: View<'a> = serde_json::from_slice(data).map_err(|_| NotKept::Incomplete)?;
        match view.error {
            Some(_) => Err(NotKept::Incomplete),
            None => Ok(view),
        }
    }

    fn finishes(&self) -> bool {
        self.choices
            .iter()
            .flatten()
            .any(|c| c.finish_reason.is_some())
    }

    fn usage(&self) -> Option<Usage> {
        let v: Value = serde_json::from_str(self.usage?.get()).ok()?;
        crate::upstream::openai::usage_from_json(&v)
    }
}

/// One hole put into an object's bytes: where, how many bytes it replaces there, and the
/// bytes written before and after it.
type Edit = (usize, usize, &'static [u8], Hole, &'static [u8]);

/// The template being written: bytes, and the holes in them.
struct Template {
    out: Vec<u8>,
    holes: Vec<(u32, Hole)>,
}

impl Template {
    fn hole(&mut self, hole: Hole) {
        self.holes.push((self.out.len() as u32, hole));
    }

    /// `data` (one JSON object, `view` of it) with its id as a hole, and with `note` a
    /// `cache` member in its `thinkgate` object (made when there is none; an existing
    /// `thinkgate` that is not an object is not ours to rewrite, and gets none).
    fn object(&mut self, data: &[u8], view: &View<'_>, note: bool) {
        let at = |raw: &RawValue| raw.get().as_ptr() as usize - data.as_ptr() as usize;
        let mut edits: Vec<Edit> = Vec::with_capacity(2);
        if let Some(id) = view.id.filter(|id| id.get().starts_with('"')) {
            edits.push((at(id), id.get().len(), b"", Hole::Id, b""));
        }
        if note {
            match view.thinkgate {
                Some(ours) if ours.get().starts_with('{') => {
                    let empty = ours.get()[1..].trim_start().starts_with('}');
                    let after: &[u8] = if empty { b"" } else { b"," };
                    edits.push((at(ours) + 1, 0, b"\"cache\":", Hole::Cache, after));
                }
                Some(_) => {}
                None => {
                    let end = data.iter().rposition(|b| !b.is_ascii_whitespace());
                    let open = data.iter().position(|b| !b.is_ascii_whitespace());
                    if let (Some(end), Some(open)) = (end, open) {
                        let empty = data[open + 1..end].iter().all(u8::is_ascii_whitespace);
                        let before: &[u8] = if empty {
                            b"\"thinkgate\":{\"cache\":"
                        } else {
                            b",\"thinkgate\":{\"cache\":"
                        };
                        edits.push((end, 0, before, Hole::Cache, b"}"));
                    }
                }
            }
        }
        edits.sort_by_key(|e| e.0);
        let mut from = 0;
        for (at, skip, before, hole, after) in edits {
            self.out.extend_from_slice(&data[from..at]);
            self.out.extend_from_slice(before);
            self.hole(hole);
            self.out.extend_from_slice(after);
            from = at + skip;
        }
        self.out.extend_from_slice(&data[from..]);
    }
}

/// A whole event stream into `t`: every event framed anew, the last chunk that finishes a
/// choice (else the last chunk) carrying the note; the usage its chunks reported.
fn stream(body: Bytes, t: &mut Template) -> Result<Option<Usage>, NotKept> {
    let events = sse::events_of(body).map_err(|_| NotKept::Incomplete)?;
    // A chunk written over several `data:` lines is written again on one.
    let datas: Vec<std::borrow::Cow<'_, str>> = events
        .iter()
        .map(|e| match e.data().contains('\n') {
            false => std::borrow::Cow::Borrowed(e.data()),
            true => serde_json::from_str::<Value>(e.data())
                .map_or(std::borrow::Cow::Borrowed(e.data()), |v| {
                    v.to_string().into()
                }),
        })
        .collect();
    let mut views = Vec::with_capacity(events.len());
    let mut done = false;
    for data in &datas {
        if data.trim() == "[DONE]" {
            done = true;
            views.push(None);
        } else if data.trim_start().starts_with('{') {
            views.push(Some(View::of(data.as_bytes())?));
        } else {
            views.push(None);
        }
    }
    if !done {
        return Err(NotKept::Incomplete);
    }
    let note = views
        .iter()
        .rposition(|v| v.as_ref().is_some_and(View::finishes))
        .or_else(|| views.iter().rposition(Option::is_some));
    let mut usage = None;
    for (i, (event, view)) in events.iter().zip(&views).enumerate() {
        let name = event.name();
        if !name.is_empty() && name != "message" {
            t.out.extend_from_slice(b"event: ");
            t.out.extend_from_slice(name.as_bytes());
            t.out.push(b'\n');
        }
        t.out.extend_from_slice(b"data: ");
        match view {
            Some(view) => {
                usage = view.usage().or(usage);
                t.object(datas[i].as_bytes(), view, Some(i) == note);
            }
            None => t.out.extend_from_slice(datas[i].as_bytes()),
        }
        t.out.extend_from_slice(b"\n\n");
    }
    Ok(usage)
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
    fn the_note_joins_a_thinkgate_object_the_answer_has_and_every_other_byte_is_kept() {
        let note = r#"{"status":"hit"}"#;
        for (thinkgate, expect) in [
            (
                r#"{"budget": {"limit": 5}}"#,
                json!({"cache": {"status": "hit"}, "budget": {"limit": 5}}),
            ),
            ("{ }", json!({"cache": {"status": "hit"}})),
            ("\"not ours\"", json!("not ours")),
        ] {
            let text = format!(
                r#"{{ "id" : "c-1", "choices": [{{"index": 0, "message": {{"content": "x"}}}}], "thinkgate": {thinkgate} }}"#
            );
            let entry = Entry::build(Bytes::from(text.clone()), meta(false), None).unwrap();
            let out = entry.replay("c-2", note);
            let v: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["thinkgate"], expect, "{text}");
            assert_eq!(v["id"], "c-2");
            let kept = String::from_utf8(out.to_vec()).unwrap();
            assert!(
                kept.starts_with(r#"{ "id" : "c-2", "choices": [{"index": 0,"#),
                "{kept}"
            );
        }
        // A chunk written over two data lines is kept on one.
        let text = "data: {\"id\": \"c-1\",\ndata: \"choices\": [{\"index\": 0, \"delta\": {}, \"finish_reason\": \"stop\"}]}\n\ndata: [DONE]\n\n";
        let entry = Entry::build(Bytes::from(text), meta(true), None).unwrap();
        let out = String::from_utf8(entry.replay("c-2", note).to_vec()).unwrap();
        let first = out.lines().next().unwrap().strip_prefix("data: ").unwrap();
        let chunk: Value = serde_json::from_str(first).unwrap();
        assert_eq!(
            (chunk["id"].as_str(), &chunk["thinkgate"]["cache"]["status"]),
            (Some("c-2"), &json!("hit"))
        );
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
