//! Raw → typed: every rule that a config must satisfy, each failure a [`ConfigError`]
//! naming file, line and key path.

mod cache;
mod contemplating;
mod keys;
mod models;
mod modes;
mod providers;
mod routing;
mod server;
mod simulator;
mod state;
mod telemetry;
#[cfg(test)]
mod tests;

use cache::*;
use contemplating::*;
use keys::*;
use models::*;
use modes::*;
use providers::*;
use routing::*;
use server::*;
use simulator::*;
use state::*;
use telemetry::*;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_value::DeserializerError;

use crate::error::{closest, ConfigError, KeyPath};
use crate::locate::SourceMap;
use crate::modes::{
    AgentModels, Contemplating, EffortAsk, Knob, Mode, ModePolicy, ModelThinking, Modes, Overrun,
};
use crate::raw::{
    RawBreaker, RawCache, RawConfig, RawDomain, RawDomainsFile, RawModePolicy, RawModel,
    RawModelThinking, RawPolicy, RawProvider, RawRetry, RawSimProfile, RawState, RawTelemetry,
};
use crate::{
    ApiKey, Auth, Balance, BreakerPolicy, CacheBackend, CacheConfig, CacheScope, ClientKey, Config,
    Deployment, Dialect, Domain, EfficientBy, Encoding, HeaderPattern, HedgeAfter, KeyLimits,
    LogFormat, MetricsConfig, Model, ModelNames, OnFailure, Policy, Provider, ProviderKind,
    ReasoningField, ReasoningStyle, RedisState, RetryBudget, RetryPolicy, Routing, Secret, Server,
    SimFaults, SimProfile, Simulator, StateBackend, Telemetry, WireFormat,
};

/// Collects the context every error needs: the file and the source map.
struct Checker<'a> {
    file: &'a Path,
    map: SourceMap<'a>,
}

impl Checker<'_> {
    fn error(&self, key: KeyPath, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            line: self.map.line_of_key(&key.0),
            key,
            message: message.into(),
        }
    }

    /// A duration of at most [`MAX_DURATION`] (longer ones overflow clocks and mean a typo).
    fn duration(
        &self,
        key: KeyPath,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(text) = value else {
            return Ok(default);
        };
        let d = humantime::parse_duration(text).map_err(|e| {
            self.error(
                key.clone(),
                format!("`{text}` is not a duration ({e}); write e.g. \"30s\" or \"250ms\""),
            )
        })?;
        if d > MAX_DURATION {
            return Err(self.error(
                key,
                format!("`{text}` is longer than the most allowed, 365 days"),
            ));
        }
        Ok(d)
    }

    /// A whole number within `range`, `default` when unset.
    fn bounded(
        &self,
        key: KeyPath,
        value: Option<u64>,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<usize, ConfigError> {
        let v = value.unwrap_or(default);
        if !range.contains(&v) {
            return Err(self.error(
                key,
                format!("must be between {} and {}", range.start(), range.end()),
            ));
        }
        Ok(v as usize)
    }

    /// A share between 0 and 1, `default` when unset.
    fn fraction(&self, key: KeyPath, value: Option<f64>, default: f64) -> Result<f64, ConfigError> {
        let v = value.unwrap_or(default);
        if !(0.0..=1.0).contains(&v) {
            return Err(self.error(
                key,
                format!("`{v}` is not a share between 0 and 1 (e.g. 0.2)"),
            ));
        }
        Ok(v)
    }

    /// An `http://` or `https://` URL, without its trailing slashes.
    fn http_url(&self, key: KeyPath, url: &str) -> Result<String, ConfigError> {
        let trimmed = url.trim_end_matches('/');
        let rest = trimmed
            .strip_prefix("https://")
            .or_else(|| trimmed.strip_prefix("http://"));
        // Just enough checking to reject garbage: a host of URL characters, no spaces.
        let host = rest.map(|r| r.split('/').next().unwrap_or(""));
        let valid = host.is_some_and(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
        }) && !trimmed.contains(char::is_whitespace);
        if !valid {
            return Err(self.error(key, format!("`{url}` is not an http:// or https:// URL")));
        }
        Ok(trimmed.to_string())
    }

    /// A timeout or deadline: a duration that is not zero (zero would fail every request).
    fn timeout(
        &self,
        key: KeyPath,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = self.duration(key.clone(), value, default)?;
        if d.is_zero() {
            return Err(self.error(key, "must be longer than zero"));
        }
        Ok(d)
    }

    /// Refuses the first of `set` (a key and whether the file sets it) that is set, with
    /// `why` it has no effect there.
    fn none_set(
        &self,
        key: impl Fn(&str) -> KeyPath,
        set: &[(&str, bool)],
        why: &str,
    ) -> Result<(), ConfigError> {
        match set.iter().find(|(_, set)| *set) {
            Some((name, _)) => Err(self.error(key(name), why)),
            None => Ok(()),
        }
    }

    fn one_of<'v>(
        &self,
        key: KeyPath,
        value: &str,
        valid: &[&'v str],
    ) -> Result<&'v str, ConfigError> {
        if let Some(v) = valid.iter().find(|v| **v == value) {
            return Ok(v);
        }
        let hint = match closest(value, valid.iter().copied()) {
            Some(s) => format!("; did you mean `{s}`?"),
            None => String::new(),
        };
        Err(self.error(
            key,
            format!("`{value}` is not one of {}{hint}", list(valid.iter())),
        ))
    }
}

fn list<I, S>(items: I) -> String
where
    I: IntoIterator<Item = S>,
    S: std::fmt::Display,
{
    items
        .into_iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn parse_and_validate(
    text: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    listen: Option<std::net::SocketAddr>,
) -> Result<Config, ConfigError> {
    let checker = Checker {
        file,
        map: SourceMap::new(text),
    };
    let mut raw = parse_raw(text, &checker)?;
    if let Some(addr) = listen {
        // The flag replaces the key before validation, so every rule about the address
        // (loopback only without keys) holds for it too.
        raw.server.listen = Some(addr.to_string());
        raw.server.listen_from_flag = true;
    }
    validate(raw, file, &checker, env)
}

/// TOML text → the raw structs. The text is parsed into a value tree first (syntax errors
/// carry toml's span), then the structs are read from it through `serde-value`, whose errors
/// are structured (an unknown key comes with the valid ones), so no message text is parsed.
fn parse_raw(text: &str, checker: &Checker<'_>) -> Result<RawConfig, ConfigError> {
    let error = |key: Vec<String>, line: usize, message: String| ConfigError::Invalid {
        file: checker.file.to_path_buf(),
        line,
        key: KeyPath(key),
        message,
    };
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map_or(0, |s| checker.map.line_of(s.start));
        error(Vec::new(), line, e.message().trim().to_string())
    })?;
    let tree = serde_value::to_value(table)
        .map_err(|e| error(Vec::new(), 0, format!("cannot read the config: {e}")))?;
    serde_path_to_error::deserialize::<_, RawConfig>(tree).map_err(|err| {
        let mut key: Vec<String> = err
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let message = match err.into_inner() {
            DeserializerError::UnknownField(field, expected) => {
                let message = match closest(&field, expected.iter().copied()) {
                    Some(s) => format!("unknown key `{field}`; did you mean `{s}`?"),
                    None => format!("unknown key `{field}`; valid keys: {}", list(expected)),
                };
                if key.last() != Some(&field) {
                    key.push(field);
                }
                message
            }
            DeserializerError::UnknownVariant(value, expected) => {
                format!("`{value}` is not one of {}", list(expected))
            }
            DeserializerError::MissingField(field) => {
                key.push(field.to_string());
                "is required".to_string()
            }
            DeserializerError::InvalidType(found, expected)
            | DeserializerError::InvalidValue(found, expected) => {
                format!(
                    "must be {}, not {}",
                    expected_in_words(&expected),
                    found_in_words(&found.to_unexpected())
                )
            }
            DeserializerError::InvalidLength(n, expected) => {
                format!("{n} items, expected {expected}")
            }
            DeserializerError::DuplicateField(field) => format!("`{field}` is given twice"),
            DeserializerError::Custom(message) => message,
        };
        error(key.clone(), checker.map.line_of_key(&key), message)
    })
}

/// What serde expected, in the words of someone writing TOML ("a whole number", not "u64").
fn expected_in_words(expected: &str) -> String {
    let words = match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number of 0 or more",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a string" | "a borrowed string" | "a character" => "text in quotes",
        "a sequence" => "a list, such as [\"a\", \"b\"]",
        "a map" => "a table",
        other if other.starts_with("struct ") => "a table",
        other => return other.to_string(),
    };
    words.to_string()
}

/// What was found instead, in the same words.
fn found_in_words(found: &serde::de::Unexpected<'_>) -> String {
    use serde::de::Unexpected;
    match found {
        Unexpected::Bool(b) => format!("{b}"),
        Unexpected::Unsigned(n) => format!("the number {n}"),
        Unexpected::Signed(n) => format!("the number {n}"),
        Unexpected::Float(f) => format!("the number {f}"),
        Unexpected::Char(c) => format!("the text \"{c}\""),
        Unexpected::Str(t) => format!("the text \"{t}\""),
        Unexpected::Seq => "a list".to_string(),
        Unexpected::Map => "a table".to_string(),
        other => other.to_string(),
    }
}

/// `checked`'s value, or `None` with its error kept in `errors`.
fn keep<T>(errors: &mut Vec<ConfigError>, checked: Result<T, ConfigError>) -> Option<T> {
    checked.map_err(|e| errors.push(e)).ok()
}

fn validate(
    raw: RawConfig,
    file: &Path,
    c: &Checker<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    // Sections that do not depend on each other are all checked, so one run names every
    // error among them.
    let mut errors = Vec::new();
    let server = keep(&mut errors, validate_server(&raw, c));
    let mut providers = Vec::with_capacity(raw.providers.len());
    for (name, p) in &raw.providers {
        providers.extend(keep(&mut errors, validate_provider(name, p, c, env)));
    }
    let default_encoding = match &raw.metrics.default_encoding {
        None => Some(Encoding::O200kBase),
        Some(e) => keep(
            &mut errors,
            encoding(c, KeyPath::new(["metrics", "default_encoding"]), e),
        ),
    }
    .unwrap_or(Encoding::O200kBase);
    let mut models = Vec::with_capacity(raw.models.len());
    for (id, m) in &raw.models {
        let model = validate_model(id, m, &raw.providers, default_encoding, c);
        models.extend(keep(&mut errors, model));
    }
    let simulator = keep(&mut errors, validate_simulator(&raw, c));
    let modes = keep(&mut errors, validate_modes(&raw, c));
    let domains = keep(&mut errors, validate_domains(&raw, c));
    let telemetry = keep(&mut errors, validate_telemetry(&raw.telemetry, c, env));
    let state = keep(&mut errors, validate_state(&raw.state, c, env));
    let cache = match &state {
        Some(state) => keep(&mut errors, validate_cache(&raw.cache, c, state)),
        None => None,
    };
    let keys = match &server {
        Some(server) => keep(&mut errors, validate_keys(&raw, c, env, server)),
        None => None,
    };
    if let Some(all) = ConfigError::all(errors) {
        return Err(all);
    }
    let (
        Some(server),
        Some(simulator),
        Some(modes),
        Some(domains),
        Some((auth, keys)),
        Some(telemetry),
        Some(state),
        Some(cache),
    ) = (
        server, simulator, modes, domains, keys, telemetry, state, cache,
    )
    else {
        return Err(c.error(
            KeyPath::new(Vec::<String>::new()),
            "the config could not be read",
        ));
    };
    if models.is_empty() {
        return Err(c.error(
            KeyPath::new(["models"]),
            "no models are configured; add at least one [models.\"<id>\"] table",
        ));
    }

    let default_key = KeyPath::new(["routing", "default_model"]);
    let default_model = match &raw.routing.default_model {
        Some(id) if raw.models.contains_key(id) => id.clone(),
        Some(id) => {
            let hint = closest(id, raw.models.keys().map(String::as_str))
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            return Err(c.error(
                default_key,
                format!("`{id}` is not a configured model{hint}"),
            ));
        }
        None => return Err(c.error(default_key, "is required: the model `auto` resolves to")),
    };

    let threshold = raw.routing.confidence_threshold.unwrap_or(0.28);
    if !(0.0..=1.0).contains(&threshold) {
        return Err(c.error(
            KeyPath::new(["routing", "confidence_threshold"]),
            "must be between 0 and 1",
        ));
    }
    let buckets = |key: &str, v: &Option<Vec<f64>>| -> Result<Option<Vec<f64>>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        let increasing = v.windows(2).all(|w| w[0] < w[1]);
        if v.is_empty() || !increasing || v.iter().any(|b| !b.is_finite()) {
            return Err(c.error(
                KeyPath::new(["metrics", key]),
                "must be a non-empty list of finite numbers in increasing order",
            ));
        }
        Ok(Some(v.clone()))
    };
    let metrics = MetricsConfig {
        latency_buckets: buckets("latency_buckets", &raw.metrics.latency_buckets)?,
        ttft_buckets: buckets("ttft_buckets", &raw.metrics.ttft_buckets)?,
        reasoning_token_buckets: buckets(
            "reasoning_token_buckets",
            &raw.metrics.reasoning_token_buckets,
        )?,
    };

    if models.iter().any(|m| m.id == default_model && m.embeddings) {
        return Err(c.error(
            KeyPath::new(["routing", "default_model"]),
            format!("`{default_model}` is an embeddings model; `auto` needs a chat model"),
        ));
    }
    Ok(Config {
        source: file.to_path_buf(),
        server,
        default_model,
        providers,
        models,
        simulator,
        metrics,
        modes,
        routing: validate_routing(&raw, c)?,
        contemplating: validate_contemplating(&raw, c)?,
        auth,
        keys,
        domains,
        confidence_threshold: threshold as f32,
        telemetry,
        state,
        cache,
    })
}

/// The longest duration a config may set.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
