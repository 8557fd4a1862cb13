//! The `[providers.<name>]` sections: kinds, URLs, secrets, timeouts, headers.

use super::*;

pub(super) fn validate_provider(
    name: &str,
    p: &RawProvider,
    c: &Checker<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Provider, ConfigError> {
    let base = KeyPath::new(["providers", name]);
    let kind = match c.one_of(base.child("kind"), &p.kind, &ProviderKind::NAMES)? {
        "openai" => ProviderKind::OpenAi,
        "openai-compatible" => ProviderKind::OpenAiCompatible,
        "anthropic" => ProviderKind::Anthropic,
        "gemini" => ProviderKind::Gemini,
        _ => ProviderKind::Simulator,
    };

    let base_url = match (&p.base_url, kind) {
        (Some(url), _) => c.http_url(base.child("base_url"), url)?,
        (None, ProviderKind::Simulator) => String::new(),
        (None, ProviderKind::OpenAi) => "https://api.openai.com/v1".to_string(),
        (None, ProviderKind::Anthropic) => "https://api.anthropic.com/v1".to_string(),
        (None, ProviderKind::Gemini) => {
            "https://generativelanguage.googleapis.com/v1beta".to_string()
        }
        (None, ProviderKind::OpenAiCompatible) => {
            return Err(c.error(
                base.child("base_url"),
                "is required for kind `openai-compatible`",
            ))
        }
    };

    let api_key = match &p.api_key {
        None => ApiKey::None,
        Some(text) => {
            let var = text
                .strip_prefix("${")
                .and_then(|r| r.strip_suffix('}'))
                .filter(|v| {
                    !v.is_empty() && v.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                });
            match var {
                Some(var) => ApiKey::FromEnv {
                    var: var.to_string(),
                    value: env(var).filter(|v| !v.is_empty()).map(Secret::new),
                },
                // The literal is not echoed: it may be a real key pasted by mistake.
                None => {
                    return Err(c.error(
                        base.child("api_key"),
                        "must be an environment reference such as \"${OPENAI_API_KEY}\"; \
                         secrets are never written in the config file",
                    ))
                }
            }
        }
    };

    let http2_connections = p.http2_connections.unwrap_or(4);
    if !(1..=64).contains(&http2_connections) {
        return Err(c.error(base.child("http2_connections"), "must be between 1 and 64"));
    }

    let format = match (kind, p.format.as_deref()) {
        (ProviderKind::Anthropic, None) => WireFormat::Anthropic,
        (ProviderKind::Gemini, None) => WireFormat::Gemini,
        (_, None) => WireFormat::OpenAi,
        (ProviderKind::Simulator, Some(f)) => {
            match c.one_of(base.child("format"), f, &WireFormat::NAMES)? {
                "anthropic" => WireFormat::Anthropic,
                "gemini" => WireFormat::Gemini,
                "responses" => WireFormat::Responses,
                _ => WireFormat::OpenAi,
            }
        }
        (ProviderKind::OpenAi | ProviderKind::OpenAiCompatible, Some(f)) => {
            match c.one_of(base.child("format"), f, &WireFormat::OPENAI_NAMES)? {
                "responses" => WireFormat::Responses,
                _ => WireFormat::OpenAi,
            }
        }
        (_, Some(_)) => {
            return Err(c.error(
                base.child("format"),
                "is only for `openai`, `openai-compatible` and `simulator` providers; the kind sets the format of the others",
            ))
        }
    };
    let dialect = match (kind, format, p.dialect.as_deref()) {
        (ProviderKind::OpenAi, _, None) => Dialect::OpenAi,
        (_, _, None) => Dialect::Generic,
        (
            ProviderKind::OpenAiCompatible | ProviderKind::Simulator,
            WireFormat::OpenAi | WireFormat::Responses,
            Some(d),
        ) => {
            let name = c.one_of(base.child("dialect"), d, &Dialect::NAMES)?;
            Dialect::parse(name).unwrap_or(Dialect::Generic)
        }
        (_, _, Some(_)) => return Err(c.error(
            base.child("dialect"),
            "is only for `openai-compatible` providers (and simulators speaking an OpenAI format)",
        )),
    };
    let default_max_tokens = p.default_max_tokens.unwrap_or(4096);
    if !(1..=1_000_000).contains(&default_max_tokens) {
        return Err(c.error(
            base.child("default_max_tokens"),
            "must be between 1 and 1000000",
        ));
    }
    let mut forward_headers = Vec::new();
    let patterns: Vec<String> = if p.forward_headers.is_empty() && kind == ProviderKind::Simulator {
        vec!["x-sim-*".to_string()]
    } else {
        p.forward_headers.clone()
    };
    for (i, h) in patterns.iter().enumerate() {
        let lower = h.to_ascii_lowercase();
        let (name_part, pattern) = match lower.strip_suffix('*') {
            Some(prefix) => (
                prefix.to_string(),
                HeaderPattern::Prefix(prefix.to_string()),
            ),
            None => (lower.clone(), HeaderPattern::Exact(lower.clone())),
        };
        let token = !name_part.is_empty()
            && name_part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !token || matches!(name_part.as_str(), "authorization" | "x-api-key" | "host") {
            return Err(c.error(
                base.child("forward_headers").child(i.to_string()),
                format!("`{h}` is not a header name that may be forwarded"),
            ));
        }
        forward_headers.push(pattern);
    }

    let response_timeout = c.timeout(
        base.child("response_timeout"),
        p.response_timeout.as_deref(),
        Duration::from_secs(120),
    )?;
    let retry = validate_retry(&base, p.retry.as_ref(), response_timeout, c)?;
    let breaker = validate_breaker(&base, p.breaker.as_ref(), c)?;

    Ok(Provider {
        name: name.to_string(),
        retry,
        breaker,
        kind,
        base_url,
        api_key,
        connect_timeout: c.timeout(
            base.child("connect_timeout"),
            p.connect_timeout.as_deref(),
            Duration::from_secs(5),
        )?,
        response_timeout,
        stream_idle_timeout: c.timeout(
            base.child("stream_idle_timeout"),
            p.stream_idle_timeout.as_deref(),
            Duration::from_secs(120),
        )?,
        http2_connections: http2_connections as usize,
        max_concurrent_calls: match p.max_concurrent_calls {
            None => None,
            Some(n) => Some(c.bounded(
                base.child("max_concurrent_calls"),
                Some(n),
                1,
                1..=1_000_000,
            )?),
        },
        forward_headers,
        default_max_tokens,
        dialect,
        format,
    })
}

/// The retry policy; without a `[retry]` table, one retry after up to 100 ms.
fn validate_retry(
    provider: &KeyPath,
    raw: Option<&RawRetry>,
    response_timeout: Duration,
    c: &Checker<'_>,
) -> Result<RetryPolicy, ConfigError> {
    let default = RawRetry::default();
    let r = raw.unwrap_or(&default);
    let key = |k: &str| provider.child("retry").child(k);
    let attempts = c.bounded(key("attempts"), r.attempts, 2, 1..=10)? as u32;
    let on_status = match &r.on_status {
        None => vec![429, 500, 502, 503, 504],
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for (i, &status) in list.iter().enumerate() {
                // A client error other than 429 says the request is at fault: a retry
                // repeats it.
                if !(status == 408 || status == 429 || (500..=599).contains(&status)) {
                    return Err(c.error(
                        key("on_status").child(i.to_string()),
                        format!(
                            "{status} is not a status worth retrying; use 408, 429 or 500 to 599"
                        ),
                    ));
                }
                out.push(status as u16);
            }
            out
        }
    };
    let per_try_timeout = c.timeout(
        key("per_try_timeout"),
        r.per_try_timeout.as_deref(),
        response_timeout,
    )?;
    if per_try_timeout > response_timeout {
        return Err(c.error(
            key("per_try_timeout"),
            format!(
                "is longer than the provider's response_timeout ({}), which bounds every try together",
                humantime::format_duration(response_timeout)
            ),
        ));
    }
    let backoff = c.timeout(
        key("backoff"),
        r.backoff.as_deref(),
        Duration::from_millis(100),
    )?;
    let max_backoff = c.timeout(
        key("max_backoff"),
        r.max_backoff.as_deref(),
        Duration::from_secs(2),
    )?;
    if max_backoff < backoff {
        return Err(c.error(key("max_backoff"), "is shorter than backoff"));
    }
    let max_retry_after = c.duration(
        key("max_retry_after"),
        r.max_retry_after.as_deref(),
        Duration::from_secs(5),
    )?;
    let hedge_after = match r.hedge_after.as_deref() {
        None => None,
        Some("p95") => Some(HedgeAfter::P95),
        Some(text) => {
            let after = c
                .timeout(key("hedge_after"), Some(text), Duration::ZERO)
                .map_err(|_| {
                    c.error(
                        key("hedge_after"),
                        format!("`{text}` is neither \"p95\" nor a duration such as \"800ms\""),
                    )
                })?;
            Some(HedgeAfter::Fixed(after))
        }
    };
    Ok(RetryPolicy {
        hedge_after,
        attempts,
        on_status,
        per_try_timeout,
        backoff,
        max_backoff,
        max_retry_after,
    })
}

/// The breaker policy; without a `[breaker]` table, 5 failures in a row or half of at least
/// 20 calls in 30 s open it for 15 s.
fn validate_breaker(
    provider: &KeyPath,
    raw: Option<&RawBreaker>,
    c: &Checker<'_>,
) -> Result<BreakerPolicy, ConfigError> {
    let default = RawBreaker::default();
    let b = raw.unwrap_or(&default);
    let key = |k: &str| provider.child("breaker").child(k);
    let failure_rate = c.fraction(key("failure_rate"), b.failure_rate, 0.5)?;
    if failure_rate == 0.0 {
        return Err(c.error(
            key("failure_rate"),
            "must be more than 0 (at 0 every call would open it)",
        ));
    }
    Ok(BreakerPolicy {
        consecutive_failures: c.bounded(
            key("consecutive_failures"),
            b.consecutive_failures,
            5,
            1..=10_000,
        )? as u32,
        failure_rate,
        window: c.timeout(key("window"), b.window.as_deref(), Duration::from_secs(30))?,
        min_calls: c.bounded(key("min_calls"), b.min_calls, 20, 1..=1_000_000)? as u32,
        open_for: c.timeout(
            key("open_for"),
            b.open_for.as_deref(),
            Duration::from_secs(15),
        )?,
        half_open_probes: c.bounded(key("half_open_probes"), b.half_open_probes, 1, 1..=1000)?
            as u32,
    })
}
