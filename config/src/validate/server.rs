//! The `[server]` section.

use super::*;

pub(super) fn validate_server(raw: &RawConfig, c: &Checker<'_>) -> Result<Server, ConfigError> {
    let s = &raw.server;
    let key = |k: &str| KeyPath::new(["server", k]);
    let listen_text = s.listen.as_deref().unwrap_or("127.0.0.1:8080");
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        c.error(
            key("listen"),
            format!("`{listen_text}` is not an address; write e.g. \"127.0.0.1:8080\""),
        )
    })?;
    let max_body_bytes = s.max_body_bytes.unwrap_or(8 * 1024 * 1024);
    if max_body_bytes == 0 || max_body_bytes > 1 << 30 {
        return Err(c.error(key("max_body_bytes"), "must be between 1 and 1073741824"));
    }
    let max_connections = s.max_connections.unwrap_or(10_000);
    if max_connections == 0 {
        return Err(c.error(key("max_connections"), "must be at least 1"));
    }
    let log_format = match s.log_format.as_deref() {
        None => LogFormat::Human,
        Some(v) => match c.one_of(key("log_format"), v, &["human", "json"])? {
            "json" => LogFormat::Json,
            _ => LogFormat::Human,
        },
    };
    let reasoning_field = match s.reasoning_field.as_deref() {
        None => ReasoningField::ReasoningContent,
        Some(v) => match c.one_of(
            key("reasoning_field"),
            v,
            &["reasoning_content", "reasoning"],
        )? {
            "reasoning" => ReasoningField::Reasoning,
            _ => ReasoningField::ReasoningContent,
        },
    };
    Ok(Server {
        reasoning_field,
        allow_public_without_auth: s.allow_public_without_auth.unwrap_or(false),
        listen,
        max_body_bytes: max_body_bytes as usize,
        max_connections: max_connections as usize,
        request_timeout: c.timeout(
            key("request_timeout"),
            s.request_timeout.as_deref(),
            Duration::from_secs(600),
        )?,
        shutdown_grace: c.duration(
            key("shutdown_grace"),
            s.shutdown_grace.as_deref(),
            Duration::from_secs(30),
        )?,
        body_read_timeout: c.timeout(
            key("body_read_timeout"),
            s.body_read_timeout.as_deref(),
            Duration::from_secs(30),
        )?,
        idle_timeout: c.timeout(
            key("idle_timeout"),
            s.idle_timeout.as_deref(),
            Duration::from_secs(30),
        )?,
        threads: c.bounded(
            key("threads"),
            s.threads,
            std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
            1..=256,
        )?,
        max_upstream_calls: c.bounded(
            key("max_upstream_calls"),
            s.max_upstream_calls,
            1024,
            1..=1_000_000,
        )?,
        retry_budget: RetryBudget {
            ratio: c.fraction(key("retry_budget"), s.retry_budget, 0.2)?,
            min_per_second: c.bounded(
                key("min_retries_per_second"),
                s.min_retries_per_second,
                5,
                0..=1_000_000,
            )? as u32,
        },
        max_event_bytes: c.bounded(
            key("max_event_bytes"),
            s.max_event_bytes,
            4 << 20,
            1024..=1 << 30,
        )?,
        max_response_bytes: c.bounded(
            key("max_response_bytes"),
            s.max_response_bytes,
            64 << 20,
            1024..=1 << 32,
        )?,
        response_store_ttl: c.timeout(
            key("response_store_ttl"),
            s.response_store_ttl.as_deref(),
            Duration::from_secs(3600),
        )?,
        response_store_bytes: c.bounded(
            key("response_store_bytes"),
            s.response_store_bytes,
            64 << 20,
            0..=1 << 34,
        )?,
        log_format,
        log_level: s.log_level.clone().unwrap_or_else(|| "info".to_string()),
    })
}
