//! Fuzzing every parser that reads bytes from outside: client request bodies (chat
//! completions, Messages, Responses), upstream streams (OpenAI, Anthropic, Gemini and
//! Responses SSE, and their whole bodies), answers kept by the response cache (and what
//! Redis hands back of them) and the config loader. Each property starts from
//! the committed corpus (`tests/fuzz/corpus/<target>/`) and mutates it — flipped and
//! inserted bytes, truncation, splices of JSON-ish tokens, arbitrary chunk boundaries — or
//! takes arbitrary input outright, and asserts the parser returns (a value or an error)
//! without panicking. Bounded: `PROPTEST_CASES` cases per property (256 by default, 4,096
//! under `CI=true`: about eight seconds), each microseconds; a failure prints the input,
//! which then belongs in the corpus.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use proptest::prelude::*;
use thinkgate_proxy::relay::Events;
use thinkgate_proxy::upstream::{Decoder, WireFormat};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!seeds.is_empty(), "the {target} corpus is empty");
    seeds
}

/// Pieces that steer mutations into the parsers' interesting corners.
const TOKENS: [&str; 24] = [
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "null",
    "true",
    "-1",
    "1e999",
    "18446744073709551616",
    "\"\\ud800\"",
    "\n\n",
    "\r\n",
    "data: ",
    "event: ",
    "[DONE]",
    "\"content\"",
    "\"type\"",
    "\"messages\"",
    "\"tool_calls\"",
    "\u{feff}",
    "\0",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, usize),
    Remove(usize, usize),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Flip(at, b)),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, t)| Mutation::Insert(at, t)),
        (any::<usize>(), 1usize..16).prop_map(|(at, n)| Mutation::Remove(at, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..64).prop_map(|(at, n)| Mutation::Duplicate(at, n)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Flip(at, b) => {
                if !bytes.is_empty() {
                    let i = at % bytes.len();
                    bytes[i] ^= b | 1;
                }
            }
            Mutation::Insert(at, t) => {
                let i = at % (bytes.len() + 1);
                bytes.splice(i..i, TOKENS[t].bytes());
            }
            Mutation::Remove(at, n) => {
                let i = at % len;
                let end = (i + n).min(bytes.len());
                if i < end {
                    bytes.drain(i..end);
                }
            }
            Mutation::Truncate(at) => bytes.truncate(at % len),
            Mutation::Duplicate(at, n) => {
                let i = at % len;
                let end = (i + n).min(bytes.len());
                if i < end {
                    let copy = bytes[i..end].to_vec();
                    bytes.splice(i..i, copy);
                }
            }
        }
    }
    bytes
}

/// A corpus entry after up to eight mutations, or arbitrary bytes.
fn input(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = corpus(target);
    prop_oneof![
        4 => (prop::sample::select(seeds), prop::collection::vec(mutation(), 0..8))
            .prop_map(|(seed, ms)| mutate(seed, &ms)),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

/// Reads a stream cut into chunks at `cuts` through the SSE framer and `format`'s decoder.
fn decode_stream(bytes: &[u8], cuts: &[usize], format: WireFormat) {
    let mut at = 0;
    let mut chunks = Vec::new();
    for cut in cuts {
        let end = (at + cut % 97 + 1).min(bytes.len());
        if at < end {
            chunks.push(Ok(Bytes::copy_from_slice(&bytes[at..end])));
        }
        at = end;
    }
    if at < bytes.len() {
        chunks.push(Ok(Bytes::copy_from_slice(&bytes[at..])));
    }
    let body = futures_util::stream::iter(chunks).boxed();
    let mut events = Events::new(body, 4096);
    let mut decoder = Decoder::canonical(format);
    // Every chunk is ready, so each poll completes at once.
    while let Some(Some(event)) = events.next().now_or_never() {
        match event {
            Ok(e) => {
                let _ = decoder.event(e.name(), e.data());
            }
            Err(_) => break,
        }
    }
    let _ = decoder.done();
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(if std::env::var_os("CI").is_some() {
                4096
            } else {
                256
            }),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn chat_bodies_never_panic(body in input("chat")) {
        let _ = thinkgate_proxy::ingress::parse_chat(&body);
    }

    #[test]
    fn messages_bodies_never_panic(body in input("messages")) {
        if let Ok(object) = thinkgate_proxy::ingress::json_object(&body) {
            let _ = thinkgate_proxy::messages::request::to_chat(object.clone(), false);
            let _ = thinkgate_proxy::messages::request::to_chat(object, true);
        }
    }

    #[test]
    fn responses_bodies_never_panic(body in input("responses")) {
        if let Ok(object) = thinkgate_proxy::ingress::json_object(&body) {
            let _ = thinkgate_proxy::responses::request::to_chat(object, Vec::new());
        }
    }

    #[test]
    fn openai_streams_never_panic(s in input("sse-openai"), cuts in prop::collection::vec(any::<usize>(), 0..32)) {
        decode_stream(&s, &cuts, WireFormat::OpenAi);
        if let Ok(text) = std::str::from_utf8(&s) {
            for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
                let _ = thinkgate_proxy::upstream::openai::ChunkView::parse(line);
            }
        }
    }

    #[test]
    fn anthropic_streams_never_panic(s in input("sse-anthropic"), cuts in prop::collection::vec(any::<usize>(), 0..32)) {
        decode_stream(&s, &cuts, WireFormat::Anthropic);
        let _ = Decoder::canonical(WireFormat::Anthropic).whole(&s);
    }

    #[test]
    fn gemini_streams_never_panic(s in input("sse-gemini"), cuts in prop::collection::vec(any::<usize>(), 0..32)) {
        decode_stream(&s, &cuts, WireFormat::Gemini);
        let _ = Decoder::canonical(WireFormat::Gemini).whole(&s);
    }

    #[test]
    fn responses_streams_never_panic(s in input("sse-responses"), cuts in prop::collection::vec(any::<usize>(), 0..32)) {
        decode_stream(&s, &cuts, WireFormat::Responses);
        let _ = Decoder::canonical(WireFormat::Responses).whole(&s);
    }

    #[test]
    fn cached_answers_replay_as_valid_json_and_never_panic(
        whole in input("answer"),
        stream in input("sse-openai"),
        stored in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        use thinkgate_proxy::cache::{entry::Meta, Entry};
        let meta = |stream: bool| Meta::new(stream, "application/json".into(), Vec::new());
        let note = r#"{"status":"hit"}"#;
        // A replay is JSON wherever the answer was (a number out of f64's range, say, is
        // the upstream's and is kept as it sent it).
        let was_json = serde_json::from_slice::<serde_json::Value>(&whole).is_ok();
        if let (Ok(entry), true) = (Entry::build(Bytes::from(whole.clone()), meta(false), None), was_json) {
            let out = entry.replay("chatcmpl-tg1", note);
            let v: serde_json::Value = serde_json::from_slice(&out)
                .unwrap_or_else(|e| panic!("replay is not JSON ({e}): {}", String::from_utf8_lossy(&out)));
            if v.get("thinkgate").is_some_and(serde_json::Value::is_object) {
                prop_assert_eq!(&v["thinkgate"]["cache"]["status"], "hit");
            }
            let again = Entry::decode(entry.encode()).expect("an encoded entry decodes");
            prop_assert_eq!(again.replay("x", "{}"), entry.replay("x", "{}"));
        }
        let all_json = std::str::from_utf8(&stream).is_ok_and(|t| {
            t.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .filter(|d| d.starts_with('{'))
                .all(|d| serde_json::from_str::<serde_json::Value>(d).is_ok())
        });
        if let (Ok(entry), true) = (Entry::build(Bytes::from(stream), meta(true), None), all_json) {
            let out = entry.replay("chatcmpl-tg1", note);
            let text = std::str::from_utf8(&out).expect("a replayed stream is UTF-8");
            for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
                if data.starts_with('{') {
                    prop_assert!(serde_json::from_str::<serde_json::Value>(data).is_ok(), "{}", data);
                }
            }
        }
        // Whatever Redis hands back decodes to an entry that replays, or to nothing.
        let mut bytes = stored;
        bytes.extend_from_slice(&whole);
        if let Some(entry) = Entry::decode(bytes) {
            let _ = entry.replay("x", note);
        }
    }

    #[test]
    fn config_files_never_panic(text in config_input()) {
        let _ = thinkgate_config::Config::parse(&text, Path::new("fuzz.toml"), &|_| None);
    }
}

/// The shipped configs, mutated as text (TOML's own tokens spliced in), or arbitrary text.
fn config_input() -> impl Strategy<Value = String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let seeds: Vec<String> = ["config/thinkgate.toml", "config/demo.toml"]
        .iter()
        .map(|p| std::fs::read_to_string(root.join(p)).unwrap())
        .collect();
    const TOML: [&str; 12] = [
        "[", "]", "=", "\"", "\n", "[[", "{", "}", "0", "-1", "\"${X}\"", "1e400",
    ];
    let edit = (any::<usize>(), 0..TOML.len(), 0usize..24);
    prop_oneof![
        4 => (prop::sample::select(seeds), prop::collection::vec(edit, 0..6)).prop_map(|(seed, edits)| {
            let mut text = seed.into_bytes();
            for (at, t, cut) in edits {
                let i = at % (text.len() + 1);
                let end = (i + cut).min(text.len());
                text.splice(i..end, TOML[t].bytes());
            }
            String::from_utf8_lossy(&text).into_owned()
        }),
        1 => ".{0,400}",
    ]
}
