//! Stored Responses API conversations, so a client can continue one by
//! `previous_response_id` without sending it again. In memory, bounded twice: each entry
//! lives `server.response_store_ttl`, and all of them together hold at most
//! `server.response_store_bytes` of serialized JSON (the oldest go first). An entry belongs
//! to the client key that made it; another key cannot read it, and is told only that the id
//! is unknown. Kept across config reloads.
//!
//! With `[state] backend = "redis"` every entry is also written to Redis (with the same
//! TTL), so a continuation that reaches another replica finds it; the memory copy is then a
//! cache of this replica's own entries, which also serves while Redis does not answer.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::auth::shared::SharedState;

pub struct Store {
    inner: Mutex<Inner>,
    /// Redis, shared by every replica, when `[state]` says so.
    shared: arc_swap::ArcSwapOption<SharedState>,
}

/// What a shared entry holds: its owner and the conversation (written borrowed, read owned).
#[derive(serde::Serialize, serde::Deserialize)]
struct SharedEntry<'a> {
    #[serde(borrow)]
    owner: Option<std::borrow::Cow<'a, str>>,
    messages: std::borrow::Cow<'a, [Value]>,
}

struct Inner {
    ttl: Duration,
    max_bytes: usize,
    entries: HashMap<String, Entry>,
    /// Ids in the order they were stored, which (one TTL for all) is the order they expire.
    order: VecDeque<String>,
    bytes: usize,
}

struct Entry {
    owner: Option<String>,
    /// The conversation as chat messages, serialized: a third of a parsed tree's memory.
    messages: Bytes,
    expires: Instant,
}

impl Store {
    pub fn new(ttl: Duration, max_bytes: usize) -> Store {
        Store {
            inner: Mutex::new(Inner {
                ttl,
                max_bytes,
                entries: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            }),
            shared: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// Shares the entries through `shared` (or stops sharing them), from a config load.
    pub fn share(&self, shared: Option<Arc<SharedState>>) {
        self.shared.store(shared);
    }

    fn shared_key(shared: &SharedState, id: &str) -> String {
        shared.key(format_args!("response:{id}"))
    }

    /// New limits from a reloaded config; entries over them go now.
    pub fn configure(&self, ttl: Duration, max_bytes: usize) {
        let mut inner = self.lock();
        inner.ttl = ttl;
        inner.max_bytes = max_bytes;
        inner.evict(Instant::now(), 0);
    }

    /// Keeps `messages` (the whole conversation so far, the response's own turn included)
    /// under `id` for `owner`. One bigger than the whole store is not kept.
    pub fn put(&self, id: String, owner: Option<&str>, messages: &[Value]) {
        let Ok(serialized) = serde_json::to_vec(messages) else {
            return;
        };
        let now = Instant::now();
        if let Some(shared) = self.shared.load_full() {
            let entry = SharedEntry {
                owner: owner.map(std::borrow::Cow::Borrowed),
                messages: std::borrow::Cow::Borrowed(messages),
            };
            let (ttl, max_bytes) = {
                let inner = self.lock();
                (inner.ttl, inner.max_bytes)
            };
            let fits = serialized.len() + id.len() <= max_bytes;
            if let (true, Ok(bytes)) = (fits, serde_json::to_vec(&entry)) {
                shared.set_later(Self::shared_key(&shared, &id), bytes, ttl, || {});
            }
        }
        let mut inner = self.lock();
        let size = serialized.len() + id.len();
        if size > inner.max_bytes {
            return;
        }
        inner.evict(now, size);
        let expires = now + inner.ttl;
        inner.bytes += size;
        inner.order.push_back(id.clone());
        inner.entries.insert(
            id,
            Entry {
                owner: owner.map(str::to_string),
                messages: Bytes::from(serialized),
                expires,
            },
        );
    }

    /// The conversation stored under `id` by this replica or (with Redis) any other, if it
    /// exists, has not expired and is `owner`'s.
    pub async fn get(&self, id: &str, owner: Option<&str>) -> Option<Vec<Value>> {
        if let Some(found) = self.get_local(id, owner) {
            return Some(found);
        }
        let shared = self.shared.load_full()?;
        let bytes = shared.get(&Self::shared_key(&shared, id)).await.ok()??;
        let entry: SharedEntry = serde_json::from_slice(&bytes).ok()?;
        (entry.owner.as_deref() == owner).then(|| entry.messages.into_owned())
    }

    /// The conversation this replica stored under `id`.
    fn get_local(&self, id: &str, owner: Option<&str>) -> Option<Vec<Value>> {
        let messages = {
            let inner = self.lock();
            let entry = inner.entries.get(id)?;
            if entry.expires <= Instant::now() || entry.owner.as_deref() != owner {
                return None;
            }
            entry.messages.clone()
        };
        serde_json::from_slice(&messages).ok()
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way that
        // matters more than losing the store: carry on with what is there.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// Drops expired entries, then the oldest until `incoming` more bytes fit.
    fn evict(&mut self, now: Instant, incoming: usize) {
        while let Some(id) = self.order.front() {
            let expired = self.entries.get(id).is_none_or(|e| e.expires <= now);
            if !expired && self.bytes + incoming <= self.max_bytes {
                break;
            }
            if let Some(id) = self.order.pop_front() {
                if let Some(e) = self.entries.remove(&id) {
                    self.bytes -= e.messages.len() + id.len();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entries_belong_to_their_key_and_expire() {
        let store = Store::new(Duration::from_millis(30), 1 << 20);
        store.put(
            "resp_1".into(),
            Some("team-a"),
            &[json!({"role": "user", "content": "hi"})],
        );
        assert_eq!(
            store.get_local("resp_1", Some("team-a")).unwrap()[0]["content"],
            "hi"
        );
        assert!(store.get_local("resp_1", Some("team-b")).is_none());
        assert!(store.get_local("resp_1", None).is_none());
        assert!(store.get_local("resp_2", Some("team-a")).is_none());
        std::thread::sleep(Duration::from_millis(40));
        assert!(store.get_local("resp_1", Some("team-a")).is_none());
    }

    #[test]
    fn the_byte_bound_holds_oldest_first() {
        let turn = json!({"role": "user", "content": "x".repeat(100)});
        let one = serde_json::to_vec(std::slice::from_ref(&turn))
            .unwrap()
            .len()
            + "resp_0".len();
        let store = Store::new(Duration::from_secs(60), one * 3);
        for i in 0..10 {
            store.put(format!("resp_{i}"), None, std::slice::from_ref(&turn));
        }
        assert_eq!(store.len(), 3);
        assert!(store.get_local("resp_6", None).is_none());
        assert!(
            store.get_local("resp_7", None).is_some() && store.get_local("resp_9", None).is_some()
        );
        assert!(store.lock().bytes <= one * 3);
        // Larger than the whole store: not kept, and nothing else is evicted for it.
        store.put("big".into(), None, &[json!("y".repeat(one * 4))]);
        assert_eq!(store.len(), 3);
        store.configure(Duration::from_secs(60), one);
        assert_eq!(store.len(), 1);
    }
}
