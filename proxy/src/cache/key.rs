//! Whether a request may be answered from the cache, and its key (no IO).
//!
//! The key is a SHA-256 of everything that decides the answer: the API it came through,
//! whose it is (the client key's name, unless entries are shared), the resolved model —
//! or, for `auto`, the routing table's version, since the model that answers is the
//! table's pick —, what serves that model (each deployment's provider and upstream
//! model, its thinking knobs: a model pointed elsewhere misses), the mode and the budget, the whole request body but its `model` (the
//! messages, tools and every sampling parameter, so a field this proxy does not know
//! still tells two requests apart), the native body of a translated request, and the
//! Anthropic headers that change what a model does. A collision-resistant hash, because
//! with `scope = "shared"` one client's entry answers another's request.

use http::HeaderMap;
use serde_json::{Map, Value};

use crate::canonical::ChatRequest;
use crate::digest::Fields;
use crate::error::ApiError;
use crate::models::Route;
use crate::plan::Plan;

/// An entry's key.
pub type Key = [u8; 32];

/// The request header a client turns the cache on or off with.
pub const HEADER: &str = "x-thinkgate-cache";

/// What the cache may do for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Use {
    /// Answer from an entry (not with `cache-control: no-cache`).
    pub read: bool,
    /// Keep the answer (not with `no-store`).
    pub write: bool,
}

/// What the client said: `x-thinkgate-cache` and `cache-control`; and whether a repeat is
/// the right answer (`temperature = 0` or a `seed`, or the client opted in).
pub fn decide(headers: &HeaderMap, chat: &ChatRequest) -> Result<Option<Use>, ApiError> {
    let repeatable = is_deterministic(&chat.body)
        || chat
            .native
            .as_ref()
            .is_some_and(|n| is_deterministic(&n.body));
    decide_for(headers, repeatable)
}

/// What the client said, for a request whose answer repeats when `repeatable` (an
/// embedding always does).
pub fn decide_for(headers: &HeaderMap, repeatable: bool) -> Result<Option<Use>, ApiError> {
    let asked = match headers.get(HEADER).map(|v| v.to_str().unwrap_or("")) {
        None => None,
        Some(v) if v.eq_ignore_ascii_case("on") => Some(true),
        Some(v) if v.eq_ignore_ascii_case("off") => Some(false),
        Some(_) => {
            return Err(ApiError::invalid_request(format!(
                "header `{HEADER}` must be `on` (answer from the cache even when sampling is random) or `off` (never)"
            ))
            .with_param(HEADER))
        }
    };
    if asked == Some(false) {
        return Ok(None);
    }
    let mut use_ = Use {
        read: true,
        write: true,
    };
    for value in headers.get_all(http::header::CACHE_CONTROL) {
        for directive in value.to_str().unwrap_or("").split(',') {
            let directive = directive.trim();
            if directive.eq_ignore_ascii_case("no-store") {
                return Ok(None);
            }
            if directive.eq_ignore_ascii_case("no-cache") {
                use_.read = false;
            }
        }
    }
    Ok((repeatable || asked == Some(true)).then_some(use_))
}

/// Sampling that repeats: `temperature` 0, or a `seed`.
fn is_deterministic(body: &Map<String, Value>) -> bool {
    let zero = body
        .get("temperature")
        .and_then(Value::as_f64)
        .is_some_and(|t| t == 0.0);
    zero || body.get("seed").is_some_and(|s| !s.is_null())
}

/// Who the entry belongs to: a client key's name, or everyone.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    Key(&'a str),
    Everyone,
}

/// The key of `chat` as planned; see the module docs.
pub fn of(
    endpoint: &str,
    owner: Owner<'_>,
    headers: &HeaderMap,
    chat: &ChatRequest,
    plan: &Plan,
    table_version: &[u8; 16],
) -> Key {
    let mut h = KeyFields(Fields::default());
    h.field(b"thinkgate response cache v1");
    h.field(endpoint.as_bytes());
    h.owner(owner);
    match &plan.routed {
        Some(_) => {
            h.field(b"auto");
            h.field(table_version);
        }
        None => {
            h.field(plan.named.model.id.as_bytes());
            plan.named.serving(|f| h.field(f));
        }
    }
    match &plan.budget {
        Some(b) => {
            h.field(b.mode.as_str().as_bytes());
            h.field(&[u8::from(b.off), u8::from(b.hint), u8::from(b.exclude)]);
            h.field(&b.reasoning.to_le_bytes());
            h.field(&b.reserve.to_le_bytes());
        }
        None => h.field(b"no mode"),
    }
    h.object(&chat.body);
    if let Some(native) = &chat.native {
        h.field(format!("{:?}", native.format).as_bytes());
        h.object(&native.body);
        for message in native.history.iter() {
            h.value(message);
        }
    }
    for name in ["anthropic-version", "anthropic-beta"] {
        for value in headers.get_all(name) {
            h.field(name.as_bytes());
            h.field(value.as_bytes());
        }
    }
    h.0.finish()
}

/// The key of an embeddings request to `model`: the endpoint, the owner, the model and
/// the whole body but `model` (the input, `dimensions`, `encoding_format`).
pub fn of_embeddings(
    endpoint: &str,
    owner: Owner<'_>,
    model: &Route,
    body: &Map<String, Value>,
) -> Key {
    let mut h = KeyFields(Fields::default());
    h.field(b"thinkgate response cache v1");
    h.field(endpoint.as_bytes());
    h.owner(owner);
    h.field(model.model.id.as_bytes());
    model.serving(|f| h.field(f));
    h.object(body);
    h.0.finish()
}

/// What a key is written with: the project's length-prefixed fields, and the request's
/// parts on top.
struct KeyFields(Fields);

impl KeyFields {
    fn field(&mut self, bytes: &[u8]) {
        self.0.field(bytes);
    }

    fn owner(&mut self, owner: Owner<'_>) {
        match owner {
            Owner::Key(name) => {
                self.field(b"key");
                self.field(name.as_bytes());
            }
            Owner::Everyone => self.field(b"shared"),
        }
    }

    /// An object's members in their order, but `model` (the plan stands for it).
    fn object(&mut self, body: &Map<String, Value>) {
        for (name, value) in body {
            if name != "model" {
                self.field(name.as_bytes());
                self.value(value);
            }
        }
    }

    /// A JSON value, written straight into the hash: a value's text ends where it ends, so
    /// it needs no length in front.
    fn value(&mut self, value: &Value) {
        use std::io::Write;
        // Writing into a hash cannot fail.
        let _ = self.0.write_all(b"=");
        let _ = serde_json::to_writer(&mut self.0, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(body: Value) -> ChatRequest {
        crate::ingress::parse_chat(body.to_string().as_bytes()).unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_repeatable_sampling_or_an_opt_in_uses_the_cache() {
        let msgs = json!([{"role": "user", "content": "hi"}]);
        let both = Some(Use {
            read: true,
            write: true,
        });
        let at = |t: Value| chat(json!({"model": "m", "messages": msgs, "temperature": t}));
        assert_eq!(decide(&headers(&[]), &at(json!(0))).unwrap(), both);
        assert_eq!(decide(&headers(&[]), &at(json!(0.0))).unwrap(), both);
        assert_eq!(decide(&headers(&[]), &at(json!(0.7))).unwrap(), None);
        let seeded = chat(json!({"model": "m", "messages": msgs, "seed": 7}));
        assert_eq!(decide(&headers(&[]), &seeded).unwrap(), both);
        let plain = chat(json!({"model": "m", "messages": msgs}));
        assert_eq!(decide(&headers(&[]), &plain).unwrap(), None);
        assert_eq!(decide(&headers(&[(HEADER, "on")]), &plain).unwrap(), both);
        assert_eq!(
            decide(&headers(&[(HEADER, "OFF")]), &at(json!(0))).unwrap(),
            None
        );
        let err = decide(&headers(&[(HEADER, "yes")]), &plain).unwrap_err();
        assert!(err.message.contains("x-thinkgate-cache"), "{}", err.message);
    }

    #[test]
    fn cache_control_is_honoured() {
        let c = chat(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}),
        );
        let no_cache = decide(&headers(&[("cache-control", "max-age=0, no-cache")]), &c);
        assert_eq!(
            no_cache.unwrap(),
            Some(Use {
                read: false,
                write: true
            })
        );
        let no_store = decide(&headers(&[("cache-control", "No-Store")]), &c);
        assert_eq!(no_store.unwrap(), None);
    }

    #[test]
    fn the_key_tells_apart_what_decides_the_answer_and_nothing_else() {
        let text = "auth = \"none\"\n[routing]\ndefault_model = \"m\"\n[providers.p]\nkind = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:9/v1\"\n[models.m]\nprovider = \"p\"\ncontext_window = 1000\ncapabilities = [\"reasoning\"]\nscores = { general = 50.0 }\n";
        let config =
            thinkgate_config::Config::parse(text, std::path::Path::new("t.toml"), &|_| None)
                .unwrap();
        let runtime = crate::state::Runtime::build(config, None).unwrap();
        let key_of = |body: Value, owner: Owner<'_>, endpoint: &str| {
            let c = chat(body);
            let h = headers(&[]);
            let caller = crate::plan::Caller {
                headers: &h,
                key: None,
            };
            let plan = futures_util::FutureExt::now_or_never(crate::plan::plan(
                &runtime.tables(),
                &c,
                &caller,
            ))
            .unwrap()
            .unwrap();
            of(endpoint, owner, &h, &c, &plan, &runtime.table.version)
        };
        let base = json!({"model": "auto", "messages": [{"role": "user", "content": "what is 2+2"}], "temperature": 0});
        let k = key_of(base.clone(), Owner::Key("a"), "chat_completions");
        assert_eq!(k, key_of(base.clone(), Owner::Key("a"), "chat_completions"));
        assert_ne!(k, key_of(base.clone(), Owner::Key("b"), "chat_completions"));
        assert_ne!(k, key_of(base.clone(), Owner::Everyone, "chat_completions"));
        assert_ne!(k, key_of(base.clone(), Owner::Key("a"), "messages"));
        for (field, value) in [
            ("temperature", json!(0.0001)),
            ("max_tokens", json!(5)),
            ("seed", json!(1)),
            ("stream", json!(true)),
            (
                "tools",
                json!([{"type": "function", "function": {"name": "f"}}]),
            ),
            ("response_format", json!({"type": "json_object"})),
            ("some_future_field", json!(1)),
        ] {
            let mut other = base.clone();
            other[field] = value;
            assert_ne!(
                k,
                key_of(other, Owner::Key("a"), "chat_completions"),
                "{field}"
            );
        }
        let mut thinking = base.clone();
        thinking["model"] = json!("auto:thinking");
        assert_ne!(k, key_of(thinking, Owner::Key("a"), "chat_completions"));
    }

    #[test]
    fn a_model_pointed_at_another_upstream_model_misses() {
        let key_with = |upstream: &str| {
            let text = format!("auth = \"none\"\n[routing]\ndefault_model = \"m\"\n[providers.p]\nkind = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:9/v1\"\n[models.m]\nprovider = \"p\"\nupstream_model = \"{upstream}\"\ncontext_window = 1000\nscores = {{ general = 50.0 }}\n");
            let config =
                thinkgate_config::Config::parse(&text, std::path::Path::new("t.toml"), &|_| None)
                    .unwrap();
            let runtime = crate::state::Runtime::build(config, None).unwrap();
            let h = headers(&[]);
            let caller = crate::plan::Caller {
                headers: &h,
                key: None,
            };
            [("m", false), ("auto", true)].map(|(model, routed)| {
                let c = chat(json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "temperature": 0}));
                let plan = futures_util::FutureExt::now_or_never(crate::plan::plan(&runtime.tables(), &c, &caller)).unwrap().unwrap();
                assert_eq!(plan.routed.is_some(), routed);
                of("chat_completions", Owner::Everyone, &h, &c, &plan, &runtime.table.version)
            })
        };
        let (before, after) = (key_with("vendor-model-1"), key_with("vendor-model-2"));
        assert_ne!(before[0], after[0], "a named model");
        assert_ne!(before[1], after[1], "auto, through the table's version");
        assert_eq!(before, key_with("vendor-model-1"));
    }
}
