//! The `[telemetry]` section: the OTLP collector, its headers (secrets by `${VAR}`), the
//! sampling ratio and the export bounds.

use super::*;

pub(super) fn validate_telemetry(
    raw: &RawTelemetry,
    c: &Checker<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Telemetry, ConfigError> {
    let key = |k: &str| KeyPath::new(["telemetry", k]);
    let default = Telemetry::default();
    let endpoint = match &raw.endpoint {
        None => None,
        Some(url) => Some(c.http_url(key("endpoint"), url)?),
    };
    let mut headers = Vec::with_capacity(raw.headers.len());
    for (name, value) in &raw.headers {
        let path = key("headers").child(name.as_str());
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        if !valid_name {
            return Err(c.error(path, "is not an HTTP header name"));
        }
        let resolved = resolve_references(value, env).map_err(|why| c.error(path, why))?;
        headers.push((name.to_ascii_lowercase(), Secret::new(resolved)));
    }
    let service_name = raw
        .service_name
        .clone()
        .unwrap_or(default.service_name.clone());
    if service_name.trim().is_empty() {
        return Err(c.error(key("service_name"), "must not be empty"));
    }
    let metrics_interval = c.timeout(
        key("metrics_interval"),
        raw.metrics_interval.as_deref(),
        default.metrics_interval,
    )?;
    if metrics_interval < Duration::from_secs(1) {
        return Err(c.error(key("metrics_interval"), "must be at least 1s"));
    }
    Ok(Telemetry {
        endpoint,
        headers,
        sample_ratio: c.fraction(key("sample_ratio"), raw.sample_ratio, default.sample_ratio)?,
        service_name,
        capture_content: raw.capture_content.unwrap_or(default.capture_content),
        metrics: raw.metrics.unwrap_or(default.metrics),
        metrics_interval,
        queue_spans: c.bounded(
            key("queue_spans"),
            raw.queue_spans,
            default.queue_spans as u64,
            16..=1_000_000,
        )?,
        export_timeout: c.timeout(
            key("export_timeout"),
            raw.export_timeout.as_deref(),
            default.export_timeout,
        )?,
    })
}

/// `value` with every `${VAR}` replaced by the variable's value. An unset variable is an
/// error naming it; the value itself is never echoed (it may hold a secret).
pub(super) fn resolve_references(
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("has a `${` without its closing `}`".to_string());
        };
        let var = &after[..end];
        if var.is_empty() || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!(
                "`${{{var}}}` is not an environment variable reference"
            ));
        }
        match env(var).filter(|v| !v.is_empty()) {
            Some(v) => out.push_str(&v),
            None => return Err(format!("refers to `${{{var}}}`, which is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if out.bytes().any(|b| b.is_ascii_control()) {
        return Err("must not hold control characters".to_string());
    }
    Ok(out)
}
