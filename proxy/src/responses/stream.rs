//! The pipeline's OpenAI chat stream as Responses API events: `response.created` and
//! `response.in_progress`, then per output item `response.output_item.added`, its deltas
//! (`response.reasoning_summary_text.delta`, `response.output_text.delta`,
//! `response.function_call_arguments.delta`) and their `.done` events,
//! `response.output_item.done`; at the end `response.completed` (or `response.incomplete`)
//! with the whole object and usage. An error event from the relay becomes
//! `response.failed`. Every event carries its `sequence_number`.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use serde_json::{json, Value};

use super::response::{object, status, usage, Item, Meta, Output};
use super::store::Store;
use crate::body::Body;
use crate::relay;
use crate::upstream::openai::Piece;

/// Where a finished response's conversation is kept for `previous_response_id`.
pub struct Keep {
    pub store: Arc<Store>,
    pub owner: Option<String>,
    /// The stored history and this request's turns; the response's own turn is added.
    pub conversation: Vec<Value>,
}

impl Keep {
    pub fn put(self, id: &str, output: &Output) {
        let mut conversation = self.conversation;
        conversation.push(output.chat_turn());
        self.store
            .put(id.to_string(), self.owner.as_deref(), &conversation);
    }
}

/// Translates the relay's OpenAI stream `inner` (its account records when this is dropped).
/// The output is held for the final event, which repeats it whole: past `limit` bytes the
/// response fails (`response_too_large`) rather than grow without bound.
pub fn events(inner: Body, meta: Meta, keep: Option<Keep>, limit: usize) -> Body {
    let translator = Translator {
        meta,
        keep,
        limit,
        held: 0,
        output: Output::default(),
        open: None,
        open_call: None,
        seq: 0,
        model: Value::Null,
        usage: None,
        finish: None,
        started: false,
        done: false,
    };
    relay::reframe(inner, translator)
}

impl relay::Reframe for Translator {
    fn event(&mut self, data: &str) -> BytesMut {
        self.on_event(data)
    }

    fn broken(&mut self, why: &str) -> BytesMut {
        self.fail("upstream_stream_broken", why)
    }

    fn done(&self) -> bool {
        self.done
    }
}

struct Translator {
    meta: Meta,
    keep: Option<Keep>,
    /// Bytes of output held, and the most that may be.
    limit: usize,
    held: usize,
    output: Output,
    /// The item being streamed, by its index in the output.
    open: Option<usize>,
    /// The chat tool call index the open item is, when it is a call.
    open_call: Option<u64>,
    seq: u64,
    model: Value,
    usage: Option<Value>,
    finish: Option<String>,
    started: bool,
    done: bool,
}

impl Translator {
    fn emit(&mut self, out: &mut BytesMut, kind: &str, mut data: Value) {
        data["type"] = kind.into();
        data["sequence_number"] = self.seq.into();
        self.seq += 1;
        out.put_slice(b"event: ");
        out.put_slice(kind.as_bytes());
        out.put_slice(b"\ndata: ");
        out.put_slice(data.to_string().as_bytes());
        out.put_slice(b"\n\n");
    }

    fn on_event(&mut self, data: &str) -> BytesMut {
        let mut out = BytesMut::new();
        if self.done {
            return out;
        }
        let read = relay::read(data);
        match read {
            relay::Read::Done => {
                self.finish(&mut out);
                return out;
            }
            relay::Read::Skip => return out,
            relay::Read::Failed { .. } | relay::Read::Chunk(_) => {}
        }
        // Each chunk's bytes bound the text it adds to the held output.
        self.held += data.len();
        if self.held > self.limit {
            let why = format!(
                "the response grew past the limit of {} bytes (server.max_response_bytes)",
                self.limit
            );
            let model = match &read {
                relay::Read::Chunk(view) => view.model.as_deref(),
                _ => None,
            };
            self.start(&mut out, model);
            self.failed(&mut out, "response_too_large", &why);
            return out;
        }
        let view = match read {
            relay::Read::Chunk(view) => view,
            relay::Read::Failed { code, message } => {
                self.start(&mut out, None);
                self.failed(&mut out, &code, &message);
                return out;
            }
            relay::Read::Done | relay::Read::Skip => return out,
        };
        self.start(&mut out, view.model.as_deref());
        if view.usage().is_some() {
            self.usage = relay::usage_json(data);
        }
        view.pieces(|piece| match piece {
            Piece::Reasoning(text) => self.reasoning(&mut out, text),
            Piece::Text(text) => self.text(&mut out, text),
            Piece::ToolCall {
                index,
                id,
                name,
                arguments,
            } => self.call(&mut out, index, id, name, arguments),
            Piece::Finish(reason) => self.finish = Some(reason.to_string()),
            Piece::ThinkingBlocks(raw) => {
                let blocks: Vec<Value> = serde_json::from_str(raw.get()).unwrap_or_default();
                if let Some(encrypted) = super::response::encrypted_reasoning(&blocks) {
                    self.encrypted(&mut out, encrypted);
                }
            }
        });
        out
    }

    fn start(&mut self, out: &mut BytesMut, model: Option<&str>) {
        if self.started {
            return;
        }
        self.started = true;
        self.model = model.map_or(Value::Null, Value::from);
        let response = object(
            &self.meta,
            &self.model,
            &self.output,
            "in_progress",
            None,
            None,
            None,
        );
        self.emit(
            out,
            "response.created",
            json!({"response": response.clone()}),
        );
        self.emit(out, "response.in_progress", json!({"response": response}));
    }

    /// Opens `item` (closing another), announcing it and its first part.
    fn open(&mut self, out: &mut BytesMut, item: Item) -> usize {
        self.close(out);
        let index = self.output.items.len();
        let added = item.to_json(false);
        let id = added["id"].clone();
        self.output.items.push(item);
        self.open = Some(index);
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        );
        match &self.output.items[index] {
            Item::Reasoning { .. } => self.emit(
                out,
                "response.reasoning_summary_part.added",
                json!({"item_id": id, "output_index": index, "summary_index": 0,
                       "part": {"type": "summary_text", "text": ""}}),
            ),
            Item::Message { .. } => self.emit(
                out,
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": []}}),
            ),
            Item::Call { .. } => {}
        }
        index
    }

    /// The open reasoning item, opened if another item (or none) is open.
    fn reasoning_item(&mut self, out: &mut BytesMut) -> usize {
        match self
            .open
            .filter(|&i| matches!(self.output.items[i], Item::Reasoning { .. }))
        {
            Some(i) => i,
            None => {
                let id = self.meta.item_id("rs", self.output.items.len());
                self.open(
                    out,
                    Item::Reasoning {
                        id,
                        text: String::new(),
                        encrypted: None,
                    },
                )
            }
        }
    }

    /// Encrypted reasoning closes the reasoning it belongs to (it comes with the upstream's
    /// finished item); it is shown in that item's `.done` event.
    fn encrypted(&mut self, out: &mut BytesMut, content: String) {
        let index = self.reasoning_item(out);
        if let Item::Reasoning { encrypted, .. } = &mut self.output.items[index] {
            *encrypted = Some(content);
        }
    }

    fn reasoning(&mut self, out: &mut BytesMut, delta: &str) {
        let index = self.reasoning_item(out);
        let Item::Reasoning { id, text, .. } = &mut self.output.items[index] else {
            return;
        };
        text.push_str(delta);
        let id = id.clone();
        self.emit(
            out,
            "response.reasoning_summary_text.delta",
            json!({"item_id": id, "output_index": index, "summary_index": 0, "delta": delta}),
        );
    }

    fn text(&mut self, out: &mut BytesMut, delta: &str) {
        let index = match self
            .open
            .filter(|&i| matches!(self.output.items[i], Item::Message { .. }))
        {
            Some(i) => i,
            None => {
                let id = self.meta.item_id("msg", self.output.items.len());
                self.open(
                    out,
                    Item::Message {
                        id,
                        text: String::new(),
                    },
                )
            }
        };
        let Item::Message { id, text } = &mut self.output.items[index] else {
            return;
        };
        text.push_str(delta);
        let id = id.clone();
        self.emit(
            out,
            "response.output_text.delta",
            json!({"item_id": id, "output_index": index, "content_index": 0, "delta": delta, "logprobs": []}),
        );
    }

    fn call(
        &mut self,
        out: &mut BytesMut,
        chat_index: u64,
        call_id: &str,
        name: &str,
        delta: &str,
    ) {
        let index = match (self.open, self.open_call) {
            (Some(i), Some(k)) if k == chat_index => i,
            _ => {
                let item = self.meta.call(self.output.items.len(), call_id, name, "");
                let i = self.open(out, item);
                self.open_call = Some(chat_index);
                i
            }
        };
        if delta.is_empty() {
            return;
        }
        let Item::Call { id, arguments, .. } = &mut self.output.items[index] else {
            return;
        };
        arguments.push_str(delta);
        let id = id.clone();
        self.emit(
            out,
            "response.function_call_arguments.delta",
            json!({"item_id": id, "output_index": index, "delta": delta}),
        );
    }

    /// Finishes the open item with its `.done` events.
    fn close(&mut self, out: &mut BytesMut) {
        self.open_call = None;
        let Some(index) = self.open.take() else {
            return;
        };
        let item = self.output.items[index].clone();
        match &item {
            Item::Reasoning { id, text, .. } => {
                let at = json!({"item_id": id, "output_index": index, "summary_index": 0});
                let mut done = at.clone();
                done["text"] = text.clone().into();
                self.emit(out, "response.reasoning_summary_text.done", done);
                let mut part = at;
                part["part"] = json!({"type": "summary_text", "text": text});
                self.emit(out, "response.reasoning_summary_part.done", part);
            }
            Item::Message { id, text } => {
                let at = json!({"item_id": id, "output_index": index, "content_index": 0});
                let mut done = at.clone();
                done["text"] = text.clone().into();
                done["logprobs"] = json!([]);
                self.emit(out, "response.output_text.done", done);
                let mut part = at;
                part["part"] = json!({"type": "output_text", "text": text, "annotations": []});
                self.emit(out, "response.content_part.done", part);
            }
            Item::Call { id, arguments, .. } => self.emit(
                out,
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": index, "arguments": arguments}),
            ),
        }
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": item.to_json(true)}),
        );
    }

    fn finish(&mut self, out: &mut BytesMut) {
        self.start(out, None);
        self.close(out);
        let (status, incomplete) = status(self.finish.as_deref());
        let usage = usage(self.usage.as_ref().unwrap_or(&Value::Null));
        let response = object(
            &self.meta,
            &self.model,
            &self.output,
            status,
            incomplete,
            Some(usage),
            None,
        );
        let kind = match status {
            "incomplete" => "response.incomplete",
            _ => "response.completed",
        };
        self.emit(out, kind, json!({"response": response}));
        if let Some(keep) = self.keep.take() {
            keep.put(&self.meta.id, &self.output);
        }
        self.done = true;
    }

    fn failed(&mut self, out: &mut BytesMut, code: &str, message: &str) {
        self.open = None;
        let error = json!({"code": code, "message": message});
        let response = object(
            &self.meta,
            &self.model,
            &self.output,
            "failed",
            None,
            None,
            Some(error),
        );
        self.emit(out, "response.failed", json!({"response": response}));
        self.done = true;
    }

    fn fail(&mut self, code: &str, message: &str) -> BytesMut {
        let mut out = BytesMut::new();
        self.start(&mut out, None);
        self.failed(&mut out, code, message);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn translator() -> Translator {
        Translator {
            meta: Meta::new(Map::new(), true, Vec::new()),
            keep: None,
            limit: 1 << 20,
            held: 0,
            output: Output::default(),
            open: None,
            open_call: None,
            seq: 0,
            model: Value::Null,
            usage: None,
            finish: None,
            started: false,
            done: false,
        }
    }

    fn frames(bytes: &[u8]) -> Vec<(String, Value)> {
        String::from_utf8(bytes.to_vec())
            .unwrap()
            .split("\n\n")
            .filter(|f| !f.is_empty())
            .map(|f| {
                let (head, data) = f.split_once('\n').unwrap();
                let data: Value =
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                (head.strip_prefix("event: ").unwrap().to_string(), data)
            })
            .collect()
    }

    #[test]
    fn reasoning_text_and_a_call_stream_as_three_items_in_sequence() {
        let mut t = translator();
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}).to_string()
        };
        let mut out = BytesMut::new();
        for data in [
            chunk(json!({"reasoning_content": "hm"}), Value::Null),
            chunk(json!({"content": "Hi"}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "get", "arguments": "{\"a\""}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}), json!("tool_calls")),
            json!({"id": "c", "model": "m", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4}}).to_string(),
            "[DONE]".to_string(),
        ] {
            out.extend_from_slice(&t.on_event(&data));
        }
        let f = frames(&out);
        let kinds: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kinds.first(), Some(&"response.created"));
        assert_eq!(kinds.last(), Some(&"response.completed"));
        for (i, (_, data)) in f.iter().enumerate() {
            assert_eq!(data["sequence_number"], i as u64);
        }
        let added: Vec<&Value> = f
            .iter()
            .filter(|(k, _)| k == "response.output_item.added")
            .map(|(_, d)| d)
            .collect();
        let done: Vec<&Value> = f
            .iter()
            .filter(|(k, _)| k == "response.output_item.done")
            .map(|(_, d)| d)
            .collect();
        assert_eq!(added.len(), 3);
        assert_eq!(done.len(), 3);
        for (a, d) in added.iter().zip(&done) {
            assert_eq!(a["item"]["id"], d["item"]["id"]);
            assert_eq!(a["output_index"], d["output_index"]);
        }
        let last = &f.last().unwrap().1["response"];
        assert_eq!(last["output"][2]["arguments"], "{\"a\":1}");
        assert_eq!(last["output"][1]["content"][0]["text"], "Hi");
        assert_eq!(last["usage"]["total_tokens"], 9);
        assert_eq!(last["output"][2]["id"], done[2]["item"]["id"]);
    }

    #[test]
    fn an_answer_past_the_limit_fails_instead_of_growing() {
        let mut t = translator();
        t.limit = 300;
        let chunk = json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": "x".repeat(100)}}]}).to_string();
        let mut out = BytesMut::new();
        for _ in 0..5 {
            out.extend_from_slice(&t.on_event(&chunk));
        }
        let f = frames(&out);
        assert_eq!(f.last().unwrap().0, "response.failed");
        assert_eq!(
            f.last().unwrap().1["response"]["error"]["code"],
            "response_too_large"
        );
        assert!(t.done && t.held <= 300 + chunk.len());
    }

    #[test]
    fn an_error_event_fails_the_response() {
        let mut t = translator();
        let out = t.on_event(r#"{"error":{"message":"broke","type":"upstream_error","code":"upstream_stream_broken"}}"#);
        let f = frames(&out);
        assert_eq!(f.last().unwrap().0, "response.failed");
        assert_eq!(
            f.last().unwrap().1["response"]["error"]["code"],
            "upstream_stream_broken"
        );
        assert!(t.done);
    }
}
