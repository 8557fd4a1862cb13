//! The `[cache]` section: the exact response cache, off unless `enabled = true`.

use super::*;

/// The longest an answer may be kept: a cached answer outlives the model that wrote it
/// (a version bump upstream does not reach it), so longer is more likely a mistake.
const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

pub(super) fn validate_cache(
    raw: &RawCache,
    c: &Checker<'_>,
    state: &StateBackend,
) -> Result<Option<CacheConfig>, ConfigError> {
    let key = |k: &str| KeyPath::new(["cache", k]);
    if !raw.enabled.unwrap_or(false) {
        let set = [
            ("ttl", raw.ttl.is_some()),
            ("max_bytes", raw.max_bytes.is_some()),
            ("max_entry_bytes", raw.max_entry_bytes.is_some()),
            ("scope", raw.scope.is_some()),
            ("backend", raw.backend.is_some()),
        ];
        // Settings of a cache that is off are a mistake worth naming.
        let why = "has no effect while the cache is off; add `enabled = true` to [cache]";
        c.none_set(key, &set, why)?;
        return Ok(None);
    }
    let ttl = c.timeout(key("ttl"), raw.ttl.as_deref(), Duration::from_secs(3600))?;
    if ttl > MAX_TTL {
        return Err(c.error(key("ttl"), "must be at most 30 days"));
    }
    let max_bytes = c.bounded(
        key("max_bytes"),
        raw.max_bytes,
        256 << 20,
        (64 << 10)..=(1 << 40),
    )? as u64;
    let max_entry_bytes = c.bounded(
        key("max_entry_bytes"),
        raw.max_entry_bytes,
        (1 << 20).min(max_bytes / 16),
        1024..=(64 << 20),
    )?;
    // The memory backend splits its cap over up to 16 shards; an entry must fit one.
    if max_entry_bytes as u64 > max_bytes / 16 {
        return Err(c.error(
            key("max_entry_bytes"),
            format!(
                "must be at most max_bytes / 16 ({}), so that every kept answer fits",
                max_bytes / 16
            ),
        ));
    }
    let scope = match c.one_of(
        key("scope"),
        raw.scope.as_deref().unwrap_or("key"),
        &["key", "shared"],
    )? {
        "shared" => CacheScope::Shared,
        _ => CacheScope::Key,
    };
    let redis = matches!(state, StateBackend::Redis(_));
    let default_backend = if redis { "redis" } else { "memory" };
    let backend =
        match c.one_of(
            key("backend"),
            raw.backend.as_deref().unwrap_or(default_backend),
            &["memory", "redis"],
        )? {
            "redis" if !redis => return Err(c.error(
                key("backend"),
                "is \"redis\", which needs [state] backend = \"redis\" (the cache uses its Redis)",
            )),
            "redis" => CacheBackend::Redis,
            _ => CacheBackend::Memory,
        };
    Ok(Some(CacheConfig {
        ttl,
        max_bytes,
        max_entry_bytes,
        scope,
        backend,
    }))
}
