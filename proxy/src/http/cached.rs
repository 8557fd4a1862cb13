//! What every handler that uses the response cache does with what it found: a hit answered
//! and accounted (charged to nobody), a miss recorded as its answer goes out, and the
//! `x-thinkgate-cache` header either way. Chat (every front end) and embeddings call it.

use std::sync::Arc;

use http::{HeaderValue, Response};
use thinkgate_config::CacheScope;

use crate::auth::KeyState;
use crate::body::Body;
use crate::cache::{self, Fill, Looked, Owner, ResponseCache};
use crate::state::Runtime;
use crate::telemetry::Account;

/// The answer to a request the cache did not answer: recorded when `fill` says so, and
/// saying what the cache did (`miss`, `bypass`).
pub(super) fn recorded(
    resp: Response<Body>,
    fill: Option<Fill>,
    status: Option<&'static str>,
) -> Response<Body> {
    let mut resp = match fill {
        Some(fill) => fill.record(resp),
        None => resp,
    };
    if let Some(status) = status {
        resp.headers_mut()
            .insert(cache::HEADER, HeaderValue::from_static(status));
    }
    resp
}

/// Whose entries a request reads: its key's, or everyone's (`scope = "shared"`, or no keys).
pub(super) fn owner<'k>(cache: &ResponseCache, key: Option<&'k KeyState>) -> Owner<'k> {
    match (cache.config.scope, key) {
        (CacheScope::Key, Some(k)) => Owner::Key(&k.key.name),
        _ => Owner::Everyone,
    }
}

/// What a handler does with what the cache found: a hit is the response (the account ends
/// with it); otherwise the account says what happened and goes on, and a miss to keep gets
/// its fill (whose token slot the account writes).
pub(super) fn after_lookup(
    runtime: &Runtime,
    cache: &Arc<ResponseCache>,
    looked: Looked,
    mut account: Account,
) -> Result<(Option<Fill>, Account), Box<Response<Body>>> {
    match looked {
        Looked::Bypass => {
            account.cache = Some("bypass");
            Ok((None, account))
        }
        Looked::Hit(entry) => Err(Box::new(hit(runtime, cache, &entry, account))),
        Looked::Miss { key, write } => {
            account.cache = Some("miss");
            if !write {
                return Ok((None, account));
            }
            let (fill, tokens) = cache.fill(key);
            account.shared_tokens = Some(tokens);
            Ok((Some(fill), account))
        }
    }
}

/// A hit: the stored answer, charged to nobody (the account records the request, with no
/// tokens: none were spent).
fn hit(
    runtime: &Runtime,
    cache: &ResponseCache,
    entry: &cache::Entry,
    mut account: Account,
) -> Response<Body> {
    let route = runtime.route(&entry.meta.model);
    if let Some(r) = route {
        account.model = Some(r.metrics.clone());
    }
    account.cache = Some("hit");
    account.status = 200;
    let model = route.map(|r| &*r.metrics);
    cache::replay(entry, cache.config.scope.as_str(), model, &runtime.metrics)
}
