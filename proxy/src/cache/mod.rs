//! The exact response cache: an answer kept for the same request asked again, so the
//! cheapest tokens — the ones never generated — cost nothing.
//!
//! It sits in the one request path after the plan (the key holds the resolved model or
//! the routing table's version, the mode and the budget) and before the key's admission:
//! a hit is an attempt that never leaves the process, so it spends nothing against the
//! key's limits or quotas and calls no upstream. A request is looked up only where a
//! repeat is the right answer — `temperature = 0` or a `seed`, or the client's
//! `x-thinkgate-cache: on` — and `cache-control: no-cache` (ask upstream, keep the new
//! answer) and `no-store` (neither) are honoured ([`key::decide`]). Entries belong to the
//! client key that stored them unless `[cache] scope = "shared"`.
//!
//! Whole answers and streams are kept ([`record`]), a stream as its events, replayed at
//! once with the request's own id ([`entry`]). Every response says what happened in
//! `x-thinkgate-cache: hit | miss | bypass`; a hit's usage block is the original call's,
//! its `thinkgate.cache` object says it is a hit, and `thinkgate_cache_saved_*` count the
//! tokens and dollars it did not spend.
//!
//! Two backends: this process's memory, under `max_bytes` (`quick_cache`: S3-FIFO, whose
//! small admission queue keeps one-off answers from pushing out the ones asked again,
//! with a weight per entry so the byte cap holds at every insert); or the `[state]` Redis,
//! shared by every replica, each entry with the TTL as its expiry. A lookup waits for Redis
//! at most `[state] timeout` and is a miss when Redis does not answer.

pub mod entry;
pub mod key;
mod record;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use prometheus::{IntCounter, IntGauge};
use thinkgate_config::{CacheBackend, CacheConfig};
use thinkgate_metrics::Metrics;

use crate::auth::shared::SharedState;
use crate::body::Body;
use crate::canonical::Usage;
use crate::telemetry::{ModelMetrics, SharedTokens};
use entry::Meta;
pub use entry::{Entry, NotKept, Spent};
pub use key::{decide, decide_for, Key, Owner, Use, HEADER};
pub use record::Fill;

/// The clock entries expire by: the process's monotonic clock, which a test may move on
/// (`advance`) to see an entry expire without waiting for it.
#[derive(Debug)]
pub struct Clock {
    start: Instant,
    ahead_ms: AtomicU64,
}

impl Default for Clock {
    fn default() -> Clock {
        Clock {
            start: Instant::now(),
            ahead_ms: AtomicU64::new(0),
        }
    }
}

impl Clock {
    pub fn now(&self) -> Duration {
        self.start.elapsed() + Duration::from_millis(self.ahead_ms.load(Ordering::Relaxed))
    }

    /// Moves the clock on by `by`, as if that much time had passed.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.ahead_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

/// The bytes all answers being recorded hold together, under a cap.
#[derive(Debug)]
pub struct Recording {
    held: AtomicU64,
    cap: u64,
}

impl Recording {
    /// Takes `n` bytes of the cap, or says there is no room.
    fn reserve(&self, n: usize) -> bool {
        let n = n as u64;
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held + n <= self.cap).then_some(held + n)
            })
            .is_ok()
    }

    fn release(&self, n: usize) {
        self.held.fetch_sub(n as u64, Ordering::AcqRel);
    }

    /// What recordings hold now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }
}

/// A memory entry and when it expires.
#[derive(Clone)]
struct Kept {
    entry: Arc<Entry>,
    expires: Duration,
}

#[derive(Clone)]
struct ByWeight;

impl quick_cache::Weighter<Key, Kept> for ByWeight {
    fn weight(&self, _key: &Key, kept: &Kept) -> u64 {
        kept.entry.weight()
    }
}

enum Backend {
    Memory(quick_cache::sync::Cache<Key, Kept, ByWeight>),
    Redis(Arc<SharedState>),
}

/// The cache of one `[cache]` config (kept across reloads while the section and the
/// `[state]` it uses are unchanged).
pub struct ResponseCache {
    pub config: CacheConfig,
    backend: Backend,
    pub clock: Clock,
    /// What answers being recorded hold (at most `max_bytes`).
    pub recording: Recording,
    metrics: CacheMetrics,
}

/// The cache's series, resolved once (lookups of the endpoints that use it too: a hit
/// is cheap enough that a label lookup shows in its profile).
struct CacheMetrics {
    all: Arc<Metrics>,
    lookups: [(&'static str, [IntCounter; 3]); 4],
    stores: [IntCounter; 5],
    bytes: IntGauge,
    entries: IntGauge,
}

const STORE_OUTCOMES: [&str; 5] = [
    "stored",
    "too_large",
    "incomplete",
    "unavailable",
    "no_room",
];
const LOOKUP_RESULTS: [&str; 3] = ["hit", "miss", "bypass"];
/// Where `unavailable` is in [`STORE_OUTCOMES`]: counted later, from Redis's write task.
const UNAVAILABLE: usize = 3;

/// What the cache did for a request.
pub enum Looked {
    /// Not a request the cache answers (or the client said not to).
    Bypass,
    /// Answered from the cache.
    Hit(Arc<Entry>),
    /// Ask upstream; keep the answer when it is whole (with `write`).
    Miss { key: Key, write: bool },
}

impl ResponseCache {
    /// The cache for `config`; `shared` is the `[state]` Redis, which the Redis backend uses.
    pub fn new(
        config: &CacheConfig,
        shared: Option<&Arc<SharedState>>,
        metrics: &Arc<Metrics>,
    ) -> Result<ResponseCache, String> {
        let backend = match (config.backend, shared) {
            (CacheBackend::Redis, Some(shared)) => Backend::Redis(shared.clone()),
            (CacheBackend::Redis, None) => {
                return Err("[cache] backend = \"redis\" needs [state] backend = \"redis\"".into())
            }
            (CacheBackend::Memory, _) => {
                // Shards split the cap; each must hold four of the largest entries.
                let per_shard = (config.max_entry_bytes as u64).saturating_mul(4).max(1);
                let shards = (config.max_bytes / per_shard).clamp(1, 16);
                let shards = 1 << (63 - shards.leading_zeros());
                let options = quick_cache::OptionsBuilder::new()
                    .estimated_items_capacity((config.max_bytes / 4096).clamp(64, 1 << 20) as usize)
                    .weight_capacity(config.max_bytes)
                    .shards(shards as usize)
                    .build()
                    .map_err(|e| format!("[cache]: {e:?}"))?;
                Backend::Memory(quick_cache::sync::Cache::with_options(
                    options,
                    ByWeight,
                    Default::default(),
                    Default::default(),
                ))
            }
        };
        let m = metrics;
        Ok(ResponseCache {
            config: config.clone(),
            backend,
            clock: Clock::default(),
            recording: Recording {
                held: AtomicU64::new(0),
                cap: config.max_bytes,
            },
            metrics: CacheMetrics {
                all: m.clone(),
                lookups: ["chat_completions", "messages", "responses", "embeddings"].map(
                    |endpoint| {
                        let series = LOOKUP_RESULTS
                            .map(|r| m.cache_lookups.with_label_values(&[endpoint, r]));
                        (endpoint, series)
                    },
                ),
                stores: STORE_OUTCOMES.map(|o| m.cache_stores.with_label_values(&[o])),
                bytes: m.cache_bytes.clone(),
                entries: m.cache_entries.clone(),
            },
        })
    }

    /// Whether this cache can stand for `config` after a reload (same settings, same Redis).
    pub fn serves(&self, config: &CacheConfig, shared: Option<&Arc<SharedState>>) -> bool {
        let same_redis = match (&self.backend, shared) {
            (Backend::Redis(a), Some(b)) => Arc::ptr_eq(a, b),
            (Backend::Memory(_), _) => true,
            (Backend::Redis(_), None) => false,
        };
        &self.config == config && same_redis
    }

    /// What the cache does for a request: a bypass when the client or its sampling rules
    /// it out (`use_` from [`decide`] is `None`), else a lookup of the key `key` makes;
    /// counted under `endpoint` either way.
    pub async fn consult(
        &self,
        endpoint: &str,
        use_: Option<Use>,
        key: impl FnOnce() -> Key,
    ) -> Looked {
        match use_ {
            None => {
                self.counted(endpoint, 2);
                Looked::Bypass
            }
            Some(use_) => self.look(endpoint, key(), use_).await,
        }
    }

    /// Looks `key` up (when `use_.read`), counting what it found under `endpoint`.
    async fn look(&self, endpoint: &str, key: Key, use_: Use) -> Looked {
        let found = match use_.read {
            true => self.get(&key).await,
            false => None,
        };
        self.counted(endpoint, if found.is_some() { 0 } else { 1 });
        match found {
            Some(entry) => Looked::Hit(entry),
            None => Looked::Miss {
                key,
                write: use_.write,
            },
        }
    }

    /// Counts a lookup's result (an index into [`LOOKUP_RESULTS`]).
    fn counted(&self, endpoint: &str, result: usize) {
        match self.metrics.lookups.iter().find(|(e, _)| *e == endpoint) {
            Some((_, series)) => series[result].inc(),
            None => self
                .metrics
                .all
                .cache_lookups
                .with_label_values(&[endpoint, LOOKUP_RESULTS[result]])
                .inc(),
        }
    }

    async fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        match &self.backend {
            Backend::Memory(memory) => {
                let now = self.clock.now();
                let kept = memory.get(key)?;
                if kept.expires > now {
                    return Some(kept.entry);
                }
                // Only if it is still the expired one: a fresh answer may have just come in.
                memory.remove_if(key, |k: &Kept| k.expires <= now);
                self.gauge(memory);
                None
            }
            Backend::Redis(shared) => {
                let bytes = shared.get(&redis_key(shared, key)).await.ok()??;
                Entry::decode(bytes).map(Arc::new)
            }
        }
    }

    /// What the account needs to record a miss's answer into the cache: the slot the relay
    /// writes the call's token count into.
    pub fn fill(self: &Arc<Self>, key: Key) -> (Fill, Arc<SharedTokens>) {
        let tokens = Arc::new(SharedTokens::default());
        let fill = Fill {
            cache: self.clone(),
            key,
            tokens: tokens.clone(),
        };
        (fill, tokens)
    }

    /// Builds and keeps the entry of a whole answer (called as its last frame goes out).
    fn store(&self, key: Key, body: Bytes, mut meta: Meta, usage: Option<Usage>) {
        meta.stored_at = unix_now();
        let entry = match Entry::build(body, meta, usage) {
            Ok(entry) => entry,
            Err(why) => return self.not_kept(why),
        };
        match &self.backend {
            Backend::Memory(memory) => {
                let kept = Kept {
                    entry: Arc::new(entry),
                    expires: self.clock.now() + self.config.ttl,
                };
                memory.insert(key, kept);
                self.gauge(memory);
                self.count_store("stored");
            }
            Backend::Redis(shared) => {
                let lost = self.metrics.stores[UNAVAILABLE].clone();
                self.count_store("stored");
                shared.set_later(
                    redis_key(shared, &key),
                    entry.encode(),
                    self.config.ttl,
                    move || lost.inc(),
                );
            }
        }
    }

    fn not_kept(&self, why: NotKept) {
        self.count_store(why.as_str());
    }

    /// Counts an answer offered to the cache by its outcome (one of [`STORE_OUTCOMES`]).
    fn count_store(&self, outcome: &str) {
        if let Some(i) = STORE_OUTCOMES.iter().position(|o| *o == outcome) {
            self.metrics.stores[i].inc();
        }
    }

    fn gauge(&self, memory: &quick_cache::sync::Cache<Key, Kept, ByWeight>) {
        self.metrics
            .bytes
            .set(i64::try_from(memory.weight()).unwrap_or(i64::MAX));
        self.metrics
            .entries
            .set(i64::try_from(memory.len()).unwrap_or(i64::MAX));
    }
}

/// The response for a hit: the entry replayed with a response id of its own, its headers,
/// `x-thinkgate-cache: hit` and `age`; what it saved counted under the model that wrote it
/// (`model`, when the config still has it, prices the saving).
pub fn replay(
    entry: &Entry,
    scope: &str,
    model: Option<&ModelMetrics>,
    metrics: &Metrics,
) -> Response<Body> {
    let age = unix_now().saturating_sub(entry.meta.stored_at);
    let note = format!(
        r#"{{"status":"hit","age_seconds":{age},"stored_at":{},"scope":"{scope}"}}"#,
        entry.meta.stored_at
    );
    let id = crate::canonical::own_response_id();
    let body = entry.replay(&id, &note);
    let mut resp = Response::new(crate::body::full(body));
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&entry.meta.content_type) {
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    for (name, value) in &entry.meta.headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    headers.insert(HEADER, HeaderValue::from_static("hit"));
    headers.insert(http::header::AGE, HeaderValue::from(age));
    if let Some(spent) = entry.meta.spent {
        let usage = Usage {
            prompt_tokens: spent.prompt,
            completion_tokens: spent.output,
            reasoning_tokens: Some(spent.reasoning),
            ..Usage::default()
        };
        match model {
            Some(m) => m.saved(metrics, &usage),
            // The model is gone from the config: its tokens still count, unpriced.
            None => {
                for (kind, n) in [
                    ("prompt", spent.prompt),
                    ("output", spent.output),
                    ("reasoning", spent.reasoning),
                ] {
                    metrics
                        .cache_saved_tokens
                        .with_label_values(&[entry.meta.model.as_str(), kind])
                        .inc_by(n);
                }
            }
        }
    }
    resp
}

fn redis_key(shared: &SharedState, key: &Key) -> String {
    let mut hex = String::with_capacity(64);
    for b in key {
        hex.push_str(&format!("{b:02x}"));
    }
    shared.key(format_args!("cache:{hex}"))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{FutureExt, StreamExt};
    use thinkgate_config::CacheScope;
    use thinkgate_metrics::Buckets;

    fn memory(max_bytes: u64, max_entry_bytes: usize) -> (ResponseCache, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new(&Buckets::default()));
        let config = CacheConfig {
            ttl: Duration::from_secs(60),
            max_bytes,
            max_entry_bytes,
            scope: CacheScope::Key,
            backend: CacheBackend::Memory,
        };
        (
            ResponseCache::new(&config, None, &metrics).unwrap(),
            metrics,
        )
    }

    fn answer(n: usize, pad: usize) -> Bytes {
        let content = format!("answer {n} {}", "x".repeat(pad));
        Bytes::from(
            serde_json::json!({"id": format!("c-{n}"), "choices": [{"index": 0, "message": {"content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
            .to_string(),
        )
    }

    fn read(cache: &ResponseCache, n: usize) -> bool {
        let both = Use {
            read: true,
            write: true,
        };
        let key = [n as u8; 32];
        matches!(
            cache
                .look("chat_completions", key, both)
                .now_or_never()
                .unwrap(),
            Looked::Hit(_)
        )
    }

    fn put(cache: &ResponseCache, n: usize, pad: usize) {
        let meta = Meta::new(false, "application/json".into(), Vec::new());
        cache.store([n as u8; 32], answer(n, pad), meta, None);
    }

    #[test]
    fn an_entry_expires_after_the_ttl_on_the_cache_clock() {
        let (cache, metrics) = memory(1 << 20, 4096);
        put(&cache, 1, 10);
        assert!(read(&cache, 1));
        cache.clock.advance(Duration::from_secs(59));
        assert!(read(&cache, 1), "still within the TTL");
        cache.clock.advance(Duration::from_secs(2));
        assert!(!read(&cache, 1), "expired");
        assert_eq!(
            metrics.cache_entries.get(),
            0,
            "an expired entry is dropped when found"
        );
        let lookups = |r: &str| {
            metrics
                .cache_lookups
                .with_label_values(&["chat_completions", r])
                .get()
        };
        assert_eq!((lookups("hit"), lookups("miss")), (2, 1));
    }

    #[test]
    fn answers_being_recorded_hold_at_most_max_bytes_together() {
        use http_body_util::BodyExt;
        let (cache, metrics) = memory(64 << 10, 4096);
        let cache = Arc::new(cache);
        let mut bodies = Vec::new();
        for n in 0..17u8 {
            // One frame of 4,000 bytes, then a stream that has not ended.
            let frame = futures_util::stream::iter([Ok(Bytes::from(vec![b'x'; 4000]))]);
            let body = crate::body::stream(frame.chain(futures_util::stream::pending()));
            let resp = http::Response::builder()
                .header("content-type", "text/event-stream")
                .body(body)
                .unwrap();
            let (fill, _) = cache.fill([n; 32]);
            let mut body = fill.record(resp).into_body();
            assert!(
                body.frame().now_or_never().is_some(),
                "the frame is handed on"
            );
            bodies.push(body);
        }
        assert_eq!(cache.recording.held(), 16 * 4000, "16 fit in 64 KiB");
        let no_room = metrics.cache_stores.with_label_values(&["no_room"]).get();
        assert_eq!(no_room, 1, "the 17th is not recorded");
        drop(bodies);
        assert_eq!(
            cache.recording.held(),
            0,
            "clients gone: every reservation is back"
        );
    }

    #[test]
    fn the_byte_cap_holds_at_every_insert() {
        let cap = 64 << 10;
        let (cache, metrics) = memory(cap, 4096);
        for n in 0..200 {
            put(&cache, n, 2000);
            assert!(metrics.cache_bytes.get() as u64 <= cap, "after {n}");
        }
        assert!(
            !read(&cache, 0),
            "the first of 200 entries of 2 KB is gone from 64 KiB"
        );
        assert!(read(&cache, 199), "the last is kept");
        let held = metrics.cache_entries.get();
        assert!(
            (10..=32).contains(&held),
            "{held} entries of 2 KB in 64 KiB"
        );
    }
}
