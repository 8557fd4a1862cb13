//! The pipeline's OpenAI event stream as Anthropic's: `message_start`, a `ping`, then per
//! content block `content_block_start` / `content_block_delta` (`thinking_delta`,
//! `signature_delta`, `text_delta`, `input_json_delta`) / `content_block_stop`, and at the
//! end `message_delta` (stop reason, usage) and `message_stop`. An error event from the
//! relay (an upstream that broke off, a budget follow-up that failed) becomes Anthropic's
//! `error` event, never a `message_stop` that would pass a cut answer off as complete.

use bytes::{BufMut, BytesMut};
use http::StatusCode;
use serde_json::{json, Value};

use super::response::{error_body, message_id, stop_reason, usage};
use crate::body::Body;
use crate::relay;
use crate::upstream::openai::Piece;

/// Translates the relay's OpenAI stream `inner` (its account rides inside and records when
/// this body is dropped).
pub fn events(inner: Body) -> Body {
    relay::reframe(inner, Translator::default())
}

impl relay::Reframe for Translator {
    fn event(&mut self, data: &str) -> BytesMut {
        self.on_event(data)
    }

    fn broken(&mut self, why: &str) -> BytesMut {
        self.fail(why)
    }

    fn done(&self) -> bool {
        self.done
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Open {
    Text,
    Thinking,
    /// A tool call, by its index in the OpenAI stream.
    Tool(u64),
}

#[derive(Default)]
struct Translator {
    started: bool,
    /// The block being streamed, and the index the next block gets.
    open: Option<Open>,
    next_index: usize,
    stop: Option<&'static str>,
    usage: Option<Value>,
    done: bool,
}

fn frame(out: &mut BytesMut, kind: &str, data: &Value) {
    out.put_slice(b"event: ");
    out.put_slice(kind.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(data.to_string().as_bytes());
    out.put_slice(b"\n\n");
}

impl Translator {
    fn on_event(&mut self, data: &str) -> BytesMut {
        let mut out = BytesMut::new();
        if self.done {
            return out;
        }
        let view = match relay::read(data) {
            relay::Read::Done => {
                self.finish(&mut out);
                return out;
            }
            relay::Read::Skip => return out,
            relay::Read::Failed { code, message } => {
                let openai = json!({"error": {"message": message, "code": code}});
                let (_, body) = error_body(StatusCode::BAD_GATEWAY, &openai);
                self.start(&mut out, "", None);
                frame(&mut out, "error", &body);
                self.done = true;
                return out;
            }
            relay::Read::Chunk(view) => view,
        };
        self.start(
            &mut out,
            view.id.as_deref().unwrap_or(""),
            view.model.as_deref(),
        );
        if view.usage().is_some() {
            self.usage = relay::usage_json(data);
        }
        view.pieces(|piece| match piece {
            Piece::Reasoning(text) => {
                self.open_block(&mut out, Open::Thinking);
                self.delta(
                    &mut out,
                    json!({"type": "thinking_delta", "thinking": text}),
                );
            }
            Piece::ThinkingBlocks(raw) => {
                let blocks: Vec<Value> = serde_json::from_str(raw.get()).unwrap_or_default();
                for block in &blocks {
                    self.signed_block(&mut out, block);
                }
            }
            Piece::Text(text) => {
                self.open_block(&mut out, Open::Text);
                self.delta(&mut out, json!({"type": "text_delta", "text": text}));
            }
            Piece::ToolCall {
                index,
                id,
                name,
                arguments,
            } => self.tool_call(&mut out, index, id, name, arguments),
            Piece::Finish(reason) => self.stop = Some(stop_reason(reason)),
        });
        out
    }

    /// `message_start` and a `ping`, once, from the first chunk's id and model.
    fn start(&mut self, out: &mut BytesMut, id: &str, model: Option<&str>) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({
            "id": message_id(id),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        frame(
            out,
            "message_start",
            &json!({"type": "message_start", "message": message}),
        );
        frame(out, "ping", &json!({"type": "ping"}));
    }

    /// Makes `kind` the open block, closing another and starting this one if needed.
    fn open_block(&mut self, out: &mut BytesMut, kind: Open) {
        if self.open == Some(kind) {
            return;
        }
        self.close(out);
        let block = match kind {
            Open::Text => json!({"type": "text", "text": ""}),
            Open::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            Open::Tool(_) => return,
        };
        self.begin(out, kind, block);
    }

    fn begin(&mut self, out: &mut BytesMut, kind: Open, block: Value) {
        let index = self.next_index;
        frame(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        self.open = Some(kind);
    }

    fn delta(&mut self, out: &mut BytesMut, delta: Value) {
        let index = self.next_index;
        frame(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }

    fn close(&mut self, out: &mut BytesMut) {
        if self.open.take().is_some() {
            let index = self.next_index;
            frame(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
            self.next_index += 1;
        }
    }

    /// A signed block from an Anthropic upstream (its text already streamed as reasoning):
    /// the signature closes the thinking block; a redacted block is a block of its own.
    fn signed_block(&mut self, out: &mut BytesMut, block: &Value) {
        match block.get("type").and_then(Value::as_str) {
            Some("thinking") => {
                if self.open != Some(Open::Thinking) {
                    self.open_block(out, Open::Thinking);
                    let text = block.get("thinking").cloned().unwrap_or_else(|| json!(""));
                    self.delta(out, json!({"type": "thinking_delta", "thinking": text}));
                }
                let signature = block.get("signature").cloned().unwrap_or_else(|| json!(""));
                self.delta(
                    out,
                    json!({"type": "signature_delta", "signature": signature}),
                );
                self.close(out);
            }
            Some(_) => {
                self.close(out);
                self.begin(out, Open::Thinking, block.clone());
                self.close(out);
            }
            None => {}
        }
    }

    fn tool_call(&mut self, out: &mut BytesMut, index: u64, id: &str, name: &str, args: &str) {
        if self.open != Some(Open::Tool(index)) {
            self.close(out);
            let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
            self.begin(out, Open::Tool(index), block);
        }
        if !args.is_empty() {
            self.delta(
                out,
                json!({"type": "input_json_delta", "partial_json": args}),
            );
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        self.start(out, "", None);
        self.close(out);
        let usage = usage(self.usage.as_ref().unwrap_or(&Value::Null));
        frame(
            out,
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": self.stop.unwrap_or("end_turn"), "stop_sequence": null},
                "usage": usage,
            }),
        );
        frame(out, "message_stop", &json!({"type": "message_stop"}));
        self.done = true;
    }

    fn fail(&mut self, why: &str) -> BytesMut {
        let mut out = BytesMut::new();
        self.start(&mut out, "", None);
        let body = json!({"type": "error", "error": {"type": "api_error", "message": why}});
        frame(&mut out, "error", &body);
        self.done = true;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(events: &[Value]) -> Vec<(String, Value)> {
        let mut t = Translator::default();
        let mut out = BytesMut::new();
        for e in events {
            out.extend_from_slice(&t.on_event(&e.to_string()));
        }
        out.extend_from_slice(&t.on_event("[DONE]"));
        String::from_utf8(out.to_vec())
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
    fn thinking_text_and_a_tool_call_stream_as_three_blocks() {
        let chunk = |delta: Value, finish: Value| json!({"id": "chatcmpl-1", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        let frames = run(&[
            chunk(
                json!({"role": "assistant", "reasoning_content": "Let me "}),
                Value::Null,
            ),
            chunk(json!({"reasoning_content": "think."}), Value::Null),
            chunk(
                json!({"thinking_blocks": [{"type": "thinking", "thinking": "Let me think.", "signature": "c2ln"}]}),
                Value::Null,
            ),
            chunk(json!({"content": "Calling."}), Value::Null),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_9", "type": "function", "function": {"name": "get", "arguments": ""}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
                json!("tool_calls"),
            ),
            json!({"id": "chatcmpl-1", "model": "m", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 7}}),
        ]);
        let kinds: Vec<&str> = frames.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        assert_eq!(frames[0].1["message"]["id"], "msg_1");
        assert_eq!(
            frames[5].1["delta"],
            json!({"type": "signature_delta", "signature": "c2ln"})
        );
        assert_eq!(frames[7].1["index"], 1);
        assert_eq!(frames[10].1["content_block"]["id"], "call_9");
        assert_eq!(frames[12].1["delta"]["partial_json"], "1}");
        assert_eq!(frames[14].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(frames[14].1["usage"]["input_tokens"], 9);
        assert_eq!(frames[14].1["usage"]["output_tokens"], 7);
    }

    #[test]
    fn an_error_event_ends_the_stream_without_message_stop() {
        let mut t = Translator::default();
        let out = t.on_event(r#"{"error":{"message":"provider `p` broke off the stream","type":"upstream_error","code":"upstream_stream_broken"}}"#);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.starts_with("event: message_start"), "{text}");
        assert!(
            text.contains(
                "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\""
            ),
            "{text}"
        );
        assert!(t.done && !text.contains("message_stop"));
    }
}
