//! The `[state]` section: memory, or a Redis every replica shares.

use super::*;

pub(super) fn validate_state(
    raw: &RawState,
    c: &Checker<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<StateBackend, ConfigError> {
    let key = |k: &str| KeyPath::new(["state", k]);
    let backend = c.one_of(
        key("backend"),
        raw.backend.as_deref().unwrap_or("memory"),
        &["memory", "redis"],
    )?;
    if backend == "memory" {
        // Redis settings without Redis are a mistake worth naming.
        let set = [
            ("url", raw.url.is_some()),
            ("timeout", raw.timeout.is_some()),
            ("on_failure", raw.on_failure.is_some()),
            ("replicas", raw.replicas.is_some()),
            ("prefix", raw.prefix.is_some()),
        ];
        c.none_set(key, &set, "only applies with backend = \"redis\"")?;
        return Ok(StateBackend::Memory);
    }
    let Some(url) = &raw.url else {
        return Err(c.error(
            key("url"),
            "is required with backend = \"redis\"; write e.g. \"redis://127.0.0.1:6379\"",
        ));
    };
    let resolved = resolve_references(url, env).map_err(|why| c.error(key("url"), why))?;
    let scheme_ok = resolved.starts_with("redis://") || resolved.starts_with("rediss://");
    if !scheme_ok || resolved.contains(char::is_whitespace) {
        // The value is not echoed: it may hold a password.
        return Err(c.error(
            key("url"),
            "is not a redis:// or rediss:// URL (e.g. \"redis://127.0.0.1:6379/0\")",
        ));
    }
    let timeout = c.timeout(
        key("timeout"),
        raw.timeout.as_deref(),
        Duration::from_millis(10),
    )?;
    if timeout > Duration::from_secs(1) {
        return Err(c.error(
            key("timeout"),
            "must be at most 1s: every admission waits for it when Redis is slow",
        ));
    }
    let on_failure = match c.one_of(
        key("on_failure"),
        raw.on_failure.as_deref().unwrap_or("open"),
        &["open", "closed"],
    )? {
        "closed" => OnFailure::Closed,
        _ => OnFailure::Open,
    };
    let replicas = c.bounded(key("replicas"), raw.replicas, 1, 1..=10_000)? as u32;
    let prefix = raw
        .prefix
        .clone()
        .unwrap_or_else(|| "thinkgate".to_string());
    let prefix_ok = !prefix.is_empty()
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b));
    if !prefix_ok {
        return Err(c.error(key("prefix"), "must be letters, digits and - _ : . only"));
    }
    Ok(StateBackend::Redis(RedisState {
        url: Secret::new(resolved),
        timeout,
        on_failure,
        replicas,
        prefix,
    }))
}
