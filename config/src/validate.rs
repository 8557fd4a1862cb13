//! Raw → typed: every rule that a config must satisfy, each failure a [`ConfigError`]
//! naming file, line and key path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::error::{closest, ConfigError, KeyPath};
use crate::locate::SourceMap;
use crate::modes::{
    AgentModels, Contemplating, EffortAsk, Knob, Mode, ModePolicy, ModelThinking, Modes, Overrun,
};
use crate::raw::{
    RawConfig, RawDomain, RawDomainsFile, RawModePolicy, RawModel, RawModelThinking, RawPolicy,
    RawProvider, RawSimProfile,
};
use crate::{
    ApiKey, Auth, ClientKey, Config, Dialect, Domain, EfficientBy, Encoding, HeaderPattern,
    KeyLimits, LogFormat, MetricsConfig, Model, Policy, Provider, ProviderKind, ReasoningField,
    ReasoningStyle, Routing, Secret, Server, SimFaults, SimProfile, Simulator, WireFormat,
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

fn parse_raw(text: &str, checker: &Checker<'_>) -> Result<RawConfig, ConfigError> {
    let deserializer = toml::Deserializer::new(text);
    serde_path_to_error::deserialize::<_, RawConfig>(deserializer).map_err(|err| {
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
        let inner = err.into_inner();
        let mut message = inner.message().trim().to_string();
        if let Some((field, expected)) = unknown_field(&message) {
            if key.last().map(String::as_str) != Some(field.as_str()) {
                key.push(field.clone());
            }
            message = match closest(&field, expected.iter().map(String::as_str)) {
                Some(s) => format!("unknown key `{field}`; did you mean `{s}`?"),
                None => format!("unknown key `{field}`; valid keys: {}", list(&expected)),
            };
        }
        let line = match inner.span() {
            Some(span) if key.is_empty() => checker.map.line_of(span.start),
            _ => checker.map.line_of_key(&key),
        };
        let line = if line == 0 {
            inner.span().map_or(0, |s| checker.map.line_of(s.start))
        } else {
            line
        };
        ConfigError::Invalid {
            file: checker.file.to_path_buf(),
            line,
            key: KeyPath(key),
            message,
        }
    })
}

/// Splits serde's "unknown field `x`, expected one of `a`, `b`" into `x` and `[a, b]`.
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((field.to_string(), expected))
}

fn validate(
    raw: RawConfig,
    file: &Path,
    c: &Checker<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let server = validate_server(&raw, c)?;

    let mut providers = Vec::with_capacity(raw.providers.len());
    for (name, p) in &raw.providers {
        providers.push(validate_provider(name, p, c, env)?);
    }

    let default_encoding = match &raw.metrics.default_encoding {
        None => Encoding::O200kBase,
        Some(e) => encoding(c, KeyPath::new(["metrics", "default_encoding"]), e)?,
    };
    let mut models = Vec::with_capacity(raw.models.len());
    for (id, m) in &raw.models {
        models.push(validate_model(id, m, &raw.providers, default_encoding, c)?);
    }
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

    let simulator = validate_simulator(&raw, c)?;
    let modes = validate_modes(&raw, c)?;
    let (auth, keys) = validate_keys(&raw, c, env, &server)?;
    let domains = validate_domains(&raw, c)?;
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
    })
}

fn policy(
    c: &Checker<'_>,
    key: KeyPath,
    raw: &RawPolicy,
    models: &BTreeMap<String, RawModel>,
) -> Result<Policy, ConfigError> {
    match raw {
        RawPolicy::Named(name) => Ok(match c.one_of(key, name, &["best", "efficient"])? {
            "best" => Policy::Best,
            _ => Policy::Efficient,
        }),
        RawPolicy::Order(ids) => {
            if ids.is_empty() {
                return Err(c.error(key, "a fixed order names at least one model"));
            }
            for (i, id) in ids.iter().enumerate() {
                if !models.contains_key(id) {
                    let hint = closest(id, models.keys().map(String::as_str))
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    return Err(c.error(
                        key.child(i.to_string()),
                        format!("`{id}` is not a configured model{hint}"),
                    ));
                }
            }
            Ok(Policy::Order(ids.clone()))
        }
    }
}

fn validate_keys(
    raw: &RawConfig,
    c: &Checker<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    server: &Server,
) -> Result<(Auth, Vec<ClientKey>), ConfigError> {
    let auth = match raw.auth.as_deref() {
        Some(a) => match c.one_of(KeyPath::new(["auth"]), a, &["none", "keys"])? {
            "none" => Auth::None,
            _ => Auth::Keys,
        },
        None if raw.keys.is_empty() => {
            return Err(c.error(
                KeyPath::new(["keys"]),
                "no client API keys are configured: add [keys.<name>] tables, or write auth = \"none\" at the top to run without keys",
            ))
        }
        None => Auth::Keys,
    };
    if auth == Auth::Keys && raw.keys.is_empty() {
        return Err(c.error(
            KeyPath::new(["auth"]),
            "is \"keys\" but no [keys.<name>] are configured",
        ));
    }
    if auth == Auth::None && !server.listen.ip().is_loopback() && !server.allow_public_without_auth
    {
        return Err(c.error(
            KeyPath::new(["server", "listen"]),
            format!(
                "is {}{} but auth = \"none\": without keys the proxy listens on loopback only (set server.allow_public_without_auth = true to override)",
                server.listen,
                if raw.server.listen_from_flag { " (from --listen)" } else { "" }
            ),
        ));
    }
    let mut keys = Vec::new();
    for (name, k) in &raw.keys {
        let base = KeyPath::new(["keys", name.as_str()]);
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
        {
            return Err(c.error(
                base,
                "a key name is letters, digits, `_` and `-` (it becomes a metric label)",
            ));
        }
        let digest = match (&k.secret, &k.sha256) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(c.error(
                    base,
                    "needs exactly one of `secret` (an environment reference) or `sha256`",
                ))
            }
            (Some(text), None) => {
                let var = text
                    .strip_prefix("${")
                    .and_then(|r| r.strip_suffix('}'))
                    .filter(|v| {
                        !v.is_empty() && v.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                    });
                let Some(var) = var else {
                    return Err(c.error(
                        base.child("secret"),
                        "must be an environment reference such as \"${TEAM_KEY}\", or give the key's `sha256`; secrets are never written in the config file",
                    ));
                };
                // A key whose secret is not there would refuse every request with a 401
                // that looks like the client's fault: refuse the config instead.
                let Some(value) = env(var).filter(|v| !v.is_empty()) else {
                    return Err(c.error(
                        base.child("secret"),
                        format!("the environment variable {var} is not set (or is empty); set it, or remove this key"),
                    ));
                };
                use sha2::Digest;
                let d = sha2::Sha256::digest(value.as_bytes());
                let mut out = [0u8; 32];
                out.copy_from_slice(&d);
                out
            }
            (None, Some(hex)) => {
                // Checked as ASCII hex first: slicing by byte offsets must not split a character.
                let is_hex = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
                let bytes: Option<Vec<u8>> = is_hex
                    .then(|| {
                        (0..32)
                            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                            .collect()
                    })
                    .flatten();
                match bytes {
                    Some(b) => {
                        let mut out = [0u8; 32];
                        out.copy_from_slice(&b);
                        out
                    }
                    None => {
                        return Err(c.error(
                            base.child("sha256"),
                            "must be 64 hexadecimal characters (the SHA-256 of the key)",
                        ))
                    }
                }
            }
        };
        if let Some(models) = &k.models {
            for (i, m) in models.iter().enumerate() {
                let known = m == "auto" || raw.models.contains_key(m);
                if !known {
                    let hint = closest(m, raw.models.keys().map(String::as_str))
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    return Err(c.error(
                        base.child("models").child(i.to_string()),
                        format!("`{m}` is not a configured model or `auto`{hint}"),
                    ));
                }
            }
        }
        let modes = match &k.modes {
            None => None,
            Some(list) => Some(
                list.iter()
                    .enumerate()
                    .map(|(i, m)| mode(c, base.child("modes").child(i.to_string()), m))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let mode_keys = |map_key: &str, keys: Vec<&String>| -> Result<(), ConfigError> {
            for m in keys {
                if m != "all" && Mode::parse(m).is_none() {
                    return Err(c.error(
                        base.child(map_key).child(m.as_str()),
                        "is not a mode: instant, thinking, contemplating or all",
                    ));
                }
            }
            Ok(())
        };
        mode_keys("max_budget", k.max_budget.keys().collect())?;
        mode_keys(
            "reasoning_tokens_per_minute",
            k.reasoning_tokens_per_minute.keys().collect(),
        )?;
        mode_keys(
            "reasoning_tokens_per_day",
            k.reasoning_tokens_per_day.keys().collect(),
        )?;
        for (field, v) in [
            ("requests_per_second", k.requests_per_second),
            ("requests_per_minute", k.requests_per_minute),
            ("burst", k.burst),
            ("tokens_per_minute", k.tokens_per_minute),
        ] {
            if v == Some(0) {
                return Err(c.error(
                    base.child(field),
                    "must be at least 1 (leave it out for no limit)",
                ));
            }
        }
        keys.push(ClientKey {
            name: name.clone(),
            digest,
            models: k.models.clone(),
            modes,
            max_budget: k.max_budget.clone(),
            limits: KeyLimits {
                requests_per_second: k.requests_per_second,
                requests_per_minute: k.requests_per_minute,
                burst: k.burst,
                tokens_per_minute: k.tokens_per_minute,
                reasoning_tokens_per_minute: k.reasoning_tokens_per_minute.clone(),
                reasoning_tokens_per_day: k.reasoning_tokens_per_day.clone(),
                output_tokens_per_day: k.output_tokens_per_day,
            },
        });
    }
    Ok((auth, keys))
}

fn validate_contemplating(raw: &RawConfig, c: &Checker<'_>) -> Result<Contemplating, ConfigError> {
    let r = &raw.contemplating;
    let base = KeyPath::new(["contemplating"]);
    let mut out = Contemplating::default();
    let count = |key: KeyPath, n: u64| -> Result<usize, ConfigError> {
        if (1..=16).contains(&n) {
            Ok(n as usize)
        } else {
            Err(c.error(key, "must be between 1 and 16 agents"))
        }
    };
    if let Some(n) = r.agents {
        out.agents = count(base.child("agents"), n)?;
    }
    for (domain, n) in &r.domains {
        out.domain_agents.insert(
            domain.clone(),
            count(base.child("domains").child(domain.as_str()), *n)?,
        );
    }
    if let Some(m) = &r.models {
        out.models = match c.one_of(base.child("models"), m, &["same", "top"])? {
            "top" => AgentModels::Top,
            _ => AgentModels::Same,
        };
    }
    if let Some(roles) = &r.roles {
        if roles.is_empty() || roles.iter().any(|r| r.trim().is_empty()) {
            return Err(c.error(
                base.child("roles"),
                "must list at least one non-empty role prompt",
            ));
        }
        out.roles = roles.clone();
    }
    if let Some(m) = &r.synthesis_model {
        if !raw.models.contains_key(m) {
            let hint = closest(m, raw.models.keys().map(String::as_str))
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            return Err(c.error(
                base.child("synthesis_model"),
                format!("`{m}` is not a configured model{hint}"),
            ));
        }
        out.synthesis_model = Some(m.clone());
    }
    if let Some(share) = r.synthesis_share {
        if !(0.0..1.0).contains(&share) {
            return Err(c.error(
                base.child("synthesis_share"),
                "must be at least 0 and below 1",
            ));
        }
        out.synthesis_share = share;
    }
    out.early_agreement = r.early_agreement.unwrap_or(out.early_agreement);
    out.deadline = c.timeout(base.child("deadline"), r.deadline.as_deref(), out.deadline)?;
    if let Some(q) = r.quorum {
        if q == 0 || q as usize > out.agents {
            return Err(c.error(
                base.child("quorum"),
                format!(
                    "must be between 1 and the number of agents ({})",
                    out.agents
                ),
            ));
        }
        out.quorum = q as usize;
    }
    Ok(out)
}

fn validate_routing(raw: &RawConfig, c: &Checker<'_>) -> Result<Routing, ConfigError> {
    let r = &raw.routing;
    let base = KeyPath::new(["routing"]);
    let default = match &r.policy {
        Some(p) => policy(c, base.child("policy"), p, &raw.models)?,
        None => Policy::Best,
    };
    let mut policies = BTreeMap::new();
    for (domain, p) in &r.policies {
        policies.insert(
            domain.clone(),
            policy(
                c,
                base.child("policies").child(domain.as_str()),
                p,
                &raw.models,
            )?,
        );
    }
    let margin = r.efficient_margin.unwrap_or(3.0);
    if !margin.is_finite() || margin < 0.0 {
        return Err(c.error(
            base.child("efficient_margin"),
            "must be 0 or more score points",
        ));
    }
    let by = match &r.efficient_by {
        None => EfficientBy::Tokens,
        Some(b) => match c.one_of(base.child("efficient_by"), b, &["tokens", "cost"])? {
            "cost" => EfficientBy::Cost,
            _ => EfficientBy::Tokens,
        },
    };
    Ok(Routing {
        policy: default,
        policies,
        efficient_margin: margin,
        efficient_by: by,
    })
}

/// The built-in domains (unless turned off) with the file's merged in: examples and
/// keywords added to a built-in domain of the same name, new domains added whole.
fn validate_domains(raw: &RawConfig, c: &Checker<'_>) -> Result<Vec<Domain>, ConfigError> {
    let mut merged: BTreeMap<String, RawDomain> = BTreeMap::new();
    if raw.routing.builtin_domains.unwrap_or(true) {
        let builtin: RawDomainsFile = toml::from_str(crate::BUILTIN_DOMAINS).map_err(|e| {
            c.error(
                KeyPath::new(["domains"]),
                format!("the built-in domains do not parse: {e}"),
            )
        })?;
        merged = builtin.domains;
    }
    for (name, d) in &raw.domains {
        let key = KeyPath::new(["domains", name.as_str()]);
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_' || ch == '-')
        {
            return Err(c.error(key, "a domain name is lowercase letters, digits, `_` and `-` (it becomes a metric label)"));
        }
        let entry = merged.entry(name.clone()).or_default();
        if d.description.is_some() {
            entry.description = d.description.clone();
        }
        entry.examples.extend(d.examples.iter().cloned());
        entry.keywords.extend(d.keywords.iter().cloned());
    }
    for (name, d) in &merged {
        if d.examples.is_empty() && d.keywords.is_empty() {
            return Err(c.error(
                KeyPath::new(["domains", name.as_str(), "examples"]),
                "a domain needs examples (or keywords) to be learned from",
            ));
        }
    }
    if !merged.contains_key("general") {
        return Err(c.error(
            KeyPath::new(["domains"]),
            "a `general` domain is required: unsure requests go there",
        ));
    }
    Ok(merged
        .into_iter()
        .map(|(name, d)| Domain {
            name,
            description: d.description.unwrap_or_default(),
            examples: d.examples,
            keywords: d.keywords,
        })
        .collect())
}

fn mode(c: &Checker<'_>, key: KeyPath, name: &str) -> Result<Mode, ConfigError> {
    let name = c.one_of(key, name, &Mode::NAMES)?;
    Ok(Mode::parse(name).unwrap_or(Mode::Thinking))
}

fn validate_modes(raw: &RawConfig, c: &Checker<'_>) -> Result<Modes, ConfigError> {
    let r = &raw.modes;
    let base = KeyPath::new(["modes"]);
    let mut modes = Modes::default();
    if let Some(d) = &r.default {
        modes.default = Some(mode(c, base.child("default"), d)?);
    }
    for (domain, m) in &r.domain_defaults {
        let key = base.child("domain_defaults").child(domain.as_str());
        modes
            .domain_defaults
            .insert(domain.clone(), mode(c, key, m)?);
    }
    for (m, raw_policy) in [
        (Mode::Instant, &r.instant),
        (Mode::Thinking, &r.thinking),
        (Mode::Contemplating, &r.contemplating),
    ] {
        if let Some(p) = raw_policy {
            let key = base.child(m.as_str());
            modes.policies[m as usize] = mode_policy(c, &key, m, p, &modes.policies[m as usize])?;
        }
    }
    if let Some(efforts) = &r.efforts {
        modes.efforts.clear();
        for (level, ask) in efforts {
            let key = base.child("efforts").child(level.as_str());
            modes.efforts.insert(
                level.clone(),
                EffortAsk {
                    mode: mode(c, key.child("mode"), &ask.mode)?,
                    reasoning_budget: ask.reasoning_budget,
                },
            );
        }
    }
    if let Some(levels) = &r.upstream_efforts {
        if levels.is_empty() {
            return Err(c.error(
                base.child("upstream_efforts"),
                "must name at least one effort level and the budget it starts at",
            ));
        }
        let mut table: Vec<(String, u64)> = levels.iter().map(|(k, v)| (k.clone(), *v)).collect();
        table.sort_by_key(|(_, budget)| *budget);
        modes.upstream_efforts = table;
    }
    if let Some(hint) = &r.hint {
        if !hint.contains("{budget}") {
            return Err(c.error(
                base.child("hint"),
                "must contain `{budget}`, where the budget's number goes",
            ));
        }
        modes.hint = hint.clone();
    }
    Ok(modes)
}

fn mode_policy(
    c: &Checker<'_>,
    key: &KeyPath,
    mode: Mode,
    raw: &RawModePolicy,
    default: &ModePolicy,
) -> Result<ModePolicy, ConfigError> {
    let budget = raw.reasoning_budget.unwrap_or(default.reasoning_budget);
    if budget == 0 && mode != Mode::Instant {
        return Err(c.error(
            key.child("reasoning_budget"),
            format!(
                "must be at least 1 in {} mode; use instant mode for no thinking",
                mode.as_str()
            ),
        ));
    }
    let reserve = raw.answer_reserve.unwrap_or(default.answer_reserve);
    if reserve == 0 {
        return Err(c.error(
            key.child("answer_reserve"),
            "must be at least 1: the answer needs tokens of its own",
        ));
    }
    Ok(ModePolicy {
        reasoning_budget: budget,
        answer_reserve: reserve,
        budget_hint: raw.budget_hint.unwrap_or(default.budget_hint),
        domain_budgets: raw.domains.clone(),
    })
}

fn model_thinking(
    c: &Checker<'_>,
    key: KeyPath,
    raw: &RawModelThinking,
) -> Result<ModelThinking, ConfigError> {
    let mut t = ModelThinking::default();
    if let Some(k) = &raw.knob {
        t.knob = match c.one_of(key.child("knob"), k, &Knob::NAMES)? {
            "budget" => Knob::Budget,
            "effort" => Knob::Effort,
            "none" => Knob::None,
            _ => Knob::Auto,
        };
    }
    t.min_budget = raw.min_budget.unwrap_or(0);
    t.max_budget = raw.max_budget;
    if let Some(max) = t.max_budget {
        if max < t.min_budget || max == 0 {
            return Err(c.error(
                key.child("max_budget"),
                format!(
                    "must be at least 1 and at least min_budget ({})",
                    t.min_budget
                ),
            ));
        }
    }
    t.can_disable = raw.can_disable.unwrap_or(true);
    if let Some(efforts) = &raw.efforts {
        if efforts.is_empty() {
            return Err(c.error(key.child("efforts"), "must list at least one level"));
        }
        t.efforts = Some(efforts.clone());
    }
    if let Some(o) = &raw.overrun {
        t.overrun = Some(match c.one_of(key.child("overrun"), o, &Overrun::NAMES)? {
            "force" => Overrun::Force,
            "cut" => Overrun::Cut,
            _ => Overrun::Length,
        });
    }
    for (field, value, slot) in [
        ("stop_phrase", &raw.stop_phrase, &mut t.stop_phrase),
        ("think_start", &raw.think_start, &mut t.think_start),
        ("think_end", &raw.think_end, &mut t.think_end),
    ] {
        if let Some(v) = value {
            if field == "think_end" && v.trim().is_empty() {
                return Err(c.error(key.child(field), "cannot be empty: it closes the thought"));
            }
            *slot = v.clone();
        }
    }
    Ok(t)
}

fn validate_server(raw: &RawConfig, c: &Checker<'_>) -> Result<Server, ConfigError> {
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
        max_upstream_calls: c.bounded(
            key("max_upstream_calls"),
            s.max_upstream_calls,
            1024,
            1..=1_000_000,
        )?,
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
        log_format,
        log_level: s.log_level.clone().unwrap_or_else(|| "info".to_string()),
    })
}

/// The longest duration a config may set.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

fn validate_provider(
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
        (Some(url), _) => {
            let trimmed = url.trim_end_matches('/');
            let valid = (trimmed.starts_with("http://") || trimmed.starts_with("https://"))
                && trimmed.parse::<http_uri_check::Uri>().is_ok();
            if !valid {
                return Err(c.error(
                    base.child("base_url"),
                    format!("`{url}` is not an http:// or https:// URL"),
                ));
            }
            trimmed.to_string()
        }
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
                _ => WireFormat::OpenAi,
            }
        }
        (_, Some(_)) => {
            return Err(c.error(
                base.child("format"),
                "is only for `simulator` providers; the kind sets the format of the others",
            ))
        }
    };
    let dialect = match (kind, format, p.dialect.as_deref()) {
        (ProviderKind::OpenAi, _, None) => Dialect::OpenAi,
        (_, _, None) => Dialect::Generic,
        (ProviderKind::OpenAiCompatible | ProviderKind::Simulator, WireFormat::OpenAi, Some(d)) => {
            let name = c.one_of(base.child("dialect"), d, &Dialect::NAMES)?;
            Dialect::parse(name).unwrap_or(Dialect::Generic)
        }
        (_, _, Some(_)) => return Err(c.error(
            base.child("dialect"),
            "is only for `openai-compatible` providers (and simulators speaking the OpenAI format)",
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

    Ok(Provider {
        name: name.to_string(),
        kind,
        base_url,
        api_key,
        connect_timeout: c.timeout(
            base.child("connect_timeout"),
            p.connect_timeout.as_deref(),
            Duration::from_secs(5),
        )?,
        response_timeout: c.timeout(
            base.child("response_timeout"),
            p.response_timeout.as_deref(),
            Duration::from_secs(120),
        )?,
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

/// Model ids become `auto`-style names and `<id>:<mode>` aliases, so some are reserved.
fn validate_model(
    id: &str,
    m: &RawModel,
    providers: &BTreeMap<String, RawProvider>,
    default_encoding: Encoding,
    c: &Checker<'_>,
) -> Result<Model, ConfigError> {
    let base = KeyPath::new(["models", id]);
    if id.is_empty() || id == "auto" || id.contains(':') || id.contains(char::is_whitespace) {
        return Err(c.error(
            base,
            format!("`{id}` cannot be a model id: `auto`, empty ids, `:` and spaces are reserved"),
        ));
    }
    if !providers.contains_key(&m.provider) {
        let hint = closest(&m.provider, providers.keys().map(String::as_str))
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return Err(c.error(
            base.child("provider"),
            format!("`{}` is not a configured provider{hint}", m.provider),
        ));
    }
    if m.context_window == 0 {
        return Err(c.error(base.child("context_window"), "must be at least 1"));
    }
    let mut model = Model {
        id: id.to_string(),
        provider: m.provider.clone(),
        upstream_model: m.upstream_model.clone().unwrap_or_else(|| id.to_string()),
        context_window: m.context_window,
        vision: false,
        tools: false,
        reasoning: false,
        price_input_per_mtok: 0.0,
        price_output_per_mtok: 0.0,
        encoding: default_encoding,
        thinking: ModelThinking::default(),
        scores: BTreeMap::new(),
        output_tokens_mtok: None,
        requests_per_second: match m.requests_per_second {
            Some(0) => {
                return Err(c.error(
                    base.child("requests_per_second"),
                    "must be at least 1 (leave it out for no limit)",
                ))
            }
            other => other,
        },
    };
    for (domain, score) in &m.scores {
        if !score.is_finite() || *score <= 0.0 {
            return Err(c.error(
                base.child("scores").child(domain.as_str()),
                "must be a positive published score (leave a domain out rather than write 0)",
            ));
        }
        model.scores.insert(domain.clone(), *score);
    }
    if !model.scores.is_empty() && !model.scores.contains_key("general") {
        return Err(c.error(
            base.child("scores"),
            "needs a `general` score: domains without their own score fall back to it",
        ));
    }
    if let Some(t) = m.output_tokens_mtok {
        if !t.is_finite() || t <= 0.0 {
            return Err(c.error(
                base.child("output_tokens_mtok"),
                "must be a positive number",
            ));
        }
        model.output_tokens_mtok = Some(t);
    }
    if let Some(t) = &m.thinking {
        model.thinking = model_thinking(c, base.child("thinking"), t)?;
    }
    for (i, cap) in m.capabilities.iter().enumerate() {
        let key = base.child("capabilities").child(i.to_string());
        match c.one_of(key, cap, &["vision", "tools", "reasoning"])? {
            "vision" => model.vision = true,
            "tools" => model.tools = true,
            _ => model.reasoning = true,
        }
    }
    for (field, value, slot) in [
        (
            "price_input_per_mtok",
            m.price_input_per_mtok,
            &mut model.price_input_per_mtok,
        ),
        (
            "price_output_per_mtok",
            m.price_output_per_mtok,
            &mut model.price_output_per_mtok,
        ),
    ] {
        if let Some(v) = value {
            if !v.is_finite() || v < 0.0 {
                return Err(c.error(base.child(field), "must be a price of 0 or more"));
            }
            *slot = v;
        }
    }
    if let Some(enc) = &m.encoding {
        model.encoding = encoding(c, base.child("encoding"), enc)?;
    }
    Ok(model)
}

fn encoding(c: &Checker<'_>, key: KeyPath, name: &str) -> Result<Encoding, ConfigError> {
    Ok(match c.one_of(key, name, &Encoding::NAMES)? {
        "cl100k_base" => Encoding::Cl100kBase,
        _ => Encoding::O200kBase,
    })
}

fn validate_simulator(raw: &RawConfig, c: &Checker<'_>) -> Result<Simulator, ConfigError> {
    let base = KeyPath::new(["simulator"]);
    let default = sim_profile(
        &raw.simulator.default,
        &SimProfile::default(),
        base.child("default"),
        c,
    )?;
    let mut models = BTreeMap::new();
    for (name, p) in &raw.simulator.models {
        let profile = sim_profile(p, &default, base.child("models").child(name.as_str()), c)?;
        models.insert(name.clone(), profile);
    }
    Ok(Simulator {
        seed: raw.simulator.seed.unwrap_or(0),
        default,
        models,
    })
}

/// A profile inherits every key it does not set from `inherit` (the `[simulator.default]`).
fn sim_profile(
    p: &RawSimProfile,
    inherit: &SimProfile,
    base: KeyPath,
    c: &Checker<'_>,
) -> Result<SimProfile, ConfigError> {
    let reasoning = match &p.reasoning {
        None => inherit.reasoning,
        Some(s) => {
            let name = c.one_of(base.child("reasoning"), s, &ReasoningStyle::NAMES)?;
            ReasoningStyle::parse(name).unwrap_or(inherit.reasoning)
        }
    };
    let small = |key: &str, v: Option<u64>, default: u32| -> Result<u32, ConfigError> {
        match v {
            None => Ok(default),
            Some(n) if n <= 1_000_000 => Ok(n as u32),
            Some(_) => Err(c.error(base.child(key), "must be at most 1000000")),
        }
    };
    let tokens_per_second = p.tokens_per_second.unwrap_or(inherit.tokens_per_second);
    if !tokens_per_second.is_finite() || tokens_per_second < 0.0 {
        return Err(c.error(
            base.child("tokens_per_second"),
            "must be 0 (unlimited) or more",
        ));
    }
    let status = match p.fault_status {
        None => inherit.faults.status,
        Some(s) if (400..=599).contains(&s) => Some(s as u16),
        Some(_) => {
            return Err(c.error(
                base.child("fault_status"),
                "must be an HTTP error status (400-599)",
            ))
        }
    };
    Ok(SimProfile {
        reasoning,
        reasoning_tokens: small(
            "reasoning_tokens",
            p.reasoning_tokens,
            inherit.reasoning_tokens,
        )?,
        answer_tokens: small("answer_tokens", p.answer_tokens, inherit.answer_tokens)?,
        tokens_per_second,
        time_to_first_token: c.duration(
            base.child("time_to_first_token"),
            p.time_to_first_token.as_deref(),
            inherit.time_to_first_token,
        )?,
        faults: SimFaults {
            status,
            reset_after: match p.fault_reset_after {
                None => inherit.faults.reset_after,
                v => Some(small("fault_reset_after", v, 0)?),
            },
            stall_after: match p.fault_stall_after {
                None => inherit.faults.stall_after,
                v => Some(small("fault_stall_after", v, 0)?),
            },
        },
    })
}

/// Just enough URI checking to reject garbage without pulling in `http` here.
mod http_uri_check {
    pub struct Uri;

    impl std::str::FromStr for Uri {
        type Err = ();

        fn from_str(s: &str) -> Result<Self, ()> {
            let rest = s
                .strip_prefix("https://")
                .or_else(|| s.strip_prefix("http://"))
                .ok_or(())?;
            let host = rest.split('/').next().unwrap_or("");
            let ok = !host.is_empty()
                && !s.contains(char::is_whitespace)
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
            if ok {
                Ok(Uri)
            } else {
                Err(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("t.toml"), &|v| {
            (v == "SET_KEY").then(|| "sk-secret-value".to_string())
        })
    }

    const MINIMAL: &str = r#"auth = "none"
[routing]
default_model = "m"

[providers.sim]
kind = "simulator"

[models.m]
provider = "sim"
context_window = 1000
"#;

    #[test]
    fn minimal_config_is_valid() {
        let cfg = parse(MINIMAL).expect("valid");
        assert_eq!(cfg.default_model, "m");
        assert_eq!(cfg.models[0].upstream_model, "m");
        assert_eq!(
            cfg.providers[0].forward_headers,
            vec![HeaderPattern::Prefix("x-sim-".into())]
        );
    }

    #[test]
    fn unknown_key_names_line_key_and_suggestion() {
        let text =
            format!("{MINIMAL}\n[server]\nlisten = \"127.0.0.1:1\"\nlog_fromat = \"json\"\n");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key().unwrap().to_string(), "server.log_fromat");
        assert!(err.message().contains("did you mean `log_format`"), "{err}");
        assert_eq!(
            err.line(),
            text.lines()
                .position(|l| l.starts_with("log_fromat"))
                .unwrap()
                + 1
        );
        assert!(err.to_string().starts_with("t.toml:"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let text = MINIMAL.replace("context_window = 1000", "context_window = \"big\"");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key().unwrap().to_string(), "models.m.context_window");
        assert_eq!(err.line(), 10);
    }

    #[test]
    fn syntax_error_has_a_line() {
        let err = parse("[server\nlisten = 1").unwrap_err();
        assert_eq!(err.line(), 1, "{err}");
    }

    #[test]
    fn unknown_provider_reference_is_suggested() {
        let err = parse(&MINIMAL.replace("provider = \"sim\"", "provider = \"simm\"")).unwrap_err();
        assert!(err.message().contains("did you mean `sim`"), "{err}");
        assert_eq!(err.key().unwrap().to_string(), "models.m.provider");
        assert_eq!(err.line(), 9);
    }

    #[test]
    fn secrets_resolve_from_env_and_never_print() {
        let text = format!(
            "{MINIMAL}\n[providers.a]\nkind = \"openai\"\napi_key = \"${{SET_KEY}}\"\n\
             [providers.b]\nkind = \"openai\"\napi_key = \"${{UNSET_KEY}}\"\n"
        );
        let cfg = parse(&text).expect("valid");
        let a = cfg.provider("a").unwrap();
        assert!(a.usable());
        assert!(!cfg.provider("b").unwrap().usable());
        assert!(!format!("{cfg:?}").contains("sk-secret-value"));
    }

    #[test]
    fn literal_secret_is_rejected_without_echo() {
        let text =
            format!("{MINIMAL}\n[providers.a]\nkind = \"openai\"\napi_key = \"sk-live-123\"\n");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key().unwrap().to_string(), "providers.a.api_key");
        assert!(!err.to_string().contains("sk-live-123"));
    }

    #[test]
    fn bad_enum_value_lists_choices() {
        let text = MINIMAL.replace("kind = \"simulator\"", "kind = \"openia\"");
        let err = parse(&text).unwrap_err();
        assert!(err.message().contains("did you mean `openai`"), "{err}");
        assert_eq!(err.line(), 6);
    }

    #[test]
    fn modes_validate_with_file_line_and_key() {
        let ok = format!(
            "{MINIMAL}\n[models.m.thinking]\nknob = \"effort\"\nefforts = [\"low\", \"high\"]\noverrun = \"force\"\n\n[modes]\ndefault = \"thinking\"\n[modes.domain_defaults]\nhealth = \"instant\"\n[modes.thinking]\nreasoning_budget = 2048\n[modes.thinking.domains]\nmath = 1024\n[modes.efforts]\nturbo = {{ mode = \"contemplating\", reasoning_budget = 9000 }}\n"
        );
        let cfg = parse(&ok).expect("valid");
        assert_eq!(cfg.modes.default, Some(Mode::Thinking));
        assert_eq!(cfg.modes.policy(Mode::Thinking).reasoning_budget, 2048);
        assert_eq!(
            cfg.modes.policy(Mode::Thinking).domain_budgets["math"],
            1024
        );
        assert_eq!(
            cfg.modes.efforts.len(),
            1,
            "a table given replaces the built-in one"
        );
        assert_eq!(cfg.models[0].thinking.overrun, Some(Overrun::Force));

        let bad = |text: String, key: &str, says: &str, line: usize| {
            let err = parse(&text).unwrap_err();
            assert_eq!(
                err.key().map(|k| k.to_string()).as_deref(),
                Some(key),
                "{err}"
            );
            assert!(err.message().contains(says), "{err}");
            assert_eq!(err.line(), line, "{err}");
        };
        bad(
            format!("{MINIMAL}[modes]\ndefault = \"thinkin\"\n"),
            "modes.default",
            "did you mean `thinking`",
            12,
        );
        bad(
            format!("{MINIMAL}[modes.thinking]\nreasoning_budget = 0\n"),
            "modes.thinking.reasoning_budget",
            "use instant mode",
            12,
        );
        bad(
            format!("{MINIMAL}[modes.instant]\nanswer_reserve = 0\n"),
            "modes.instant.answer_reserve",
            "at least 1",
            12,
        );
        bad(
            format!("{MINIMAL}[modes]\nhint = \"be brief\"\n"),
            "modes.hint",
            "{budget}",
            12,
        );
        bad(
            format!("{MINIMAL}[modes.efforts]\nlow = {{ mode = \"fast\" }}\n"),
            "modes.efforts.low.mode",
            "is not one of",
            12,
        );
        bad(
            format!("{MINIMAL}\n[models.m.thinking]\noverrun = \"truncate\"\n"),
            "models.m.thinking.overrun",
            "`force`, `cut`, `length`",
            13,
        );
        bad(
            format!("{MINIMAL}\n[models.m.thinking]\nmin_budget = 128\nmax_budget = 64\n"),
            "models.m.thinking.max_budget",
            "at least min_budget",
            14,
        );
    }

    #[test]
    fn contemplating_and_routing_errors_name_the_key() {
        let bad = |extra: &str, key: &str, says: &str| {
            let err = parse(&format!("{MINIMAL}{extra}")).unwrap_err();
            assert_eq!(
                err.key().map(|k| k.to_string()).as_deref(),
                Some(key),
                "{err}"
            );
            assert!(err.message().contains(says), "{err}");
        };
        bad(
            "[contemplating]\nagents = 0\n",
            "contemplating.agents",
            "between 1 and 16",
        );
        bad(
            "[contemplating]\nagents = 2\nquorum = 3\n",
            "contemplating.quorum",
            "number of agents (2)",
        );
        bad(
            "[contemplating]\nsynthesis_model = \"mm\"\n",
            "contemplating.synthesis_model",
            "did you mean `m`",
        );
        bad(
            "[contemplating]\nsynthesis_share = 1.0\n",
            "contemplating.synthesis_share",
            "below 1",
        );
        bad(
            "[contemplating]\nmodels = \"all\"\n",
            "contemplating.models",
            "`same`, `top`",
        );
        bad(
            "[routing.policies]\nmath = [\"nope\"]\n",
            "routing.policies.math.0",
            "not a configured model",
        );
        bad(
            "[routing.policies]\nmath = \"cheapest\"\n",
            "routing.policies.math",
            "`best`, `efficient`",
        );
        bad(
            "\n[models.m.scores]\nmath = 40\n",
            "models.m.scores",
            "needs a `general` score",
        );
        bad(
            "[domains.Legal]\nexamples = [\"x\"]\n",
            "domains.Legal",
            "lowercase",
        );
        bad(
            "[domains.legal]\ndescription = \"law\"\n",
            "domains.legal.examples",
            "needs examples",
        );
        let digest = "ab".repeat(32);
        bad(
            &format!("[keys.k]\nsha256 = \"{}\"\n", &digest[..62]),
            "keys.k.sha256",
            "64 hexadecimal",
        );
        // Multi-byte characters at 64 bytes long: refused, not a panic.
        bad(
            &format!(
                "[keys.k]\nsha256 = \"{}é{}\"\n",
                &digest[..31],
                &digest[..31]
            ),
            "keys.k.sha256",
            "64 hexadecimal",
        );
        bad(
            "[keys.k]\nsecret = \"tg-literal\"\n",
            "keys.k.secret",
            "environment reference",
        );
        bad(
            &format!("[keys.k]\nsecret = \"${{K}}\"\nsha256 = \"{digest}\"\n"),
            "keys.k",
            "exactly one",
        );
        assert!(parse(&format!("{MINIMAL}[keys.k]\nsha256 = \"{digest}\"\n")).is_ok());
        let ok = parse(&format!("{MINIMAL}[contemplating]\nagents = 4\nquorum = 3\ndeadline = \"30s\"\n[contemplating.domains]\nmath = 6\n")).unwrap();
        assert_eq!(ok.contemplating.agents_for(Some("math")), 6);
        assert_eq!(ok.contemplating.agents_for(Some("health")), 4);
        assert_eq!(ok.contemplating.deadline, Duration::from_secs(30));
    }

    #[test]
    fn reserved_model_ids_and_missing_default() {
        let err = parse(&MINIMAL.replace("[models.m]", "[models.\"a:b\"]")).unwrap_err();
        assert!(err.message().contains("reserved"), "{err}");
        let err =
            parse(&MINIMAL.replace("default_model = \"m\"", "default_model = \"n\"")).unwrap_err();
        assert_eq!(err.key().unwrap().to_string(), "routing.default_model");
    }

    #[test]
    fn simulator_profiles_inherit_the_default() {
        let text = format!(
            "{MINIMAL}\n[simulator.default]\nreasoning_tokens = 7\n[simulator.models.x]\nreasoning = \"hidden\"\n"
        );
        let cfg = parse(&text).expect("valid");
        let p = cfg.simulator.profile("x");
        assert_eq!(p.reasoning, ReasoningStyle::Hidden);
        assert_eq!(p.reasoning_tokens, 7);
        assert_eq!(cfg.simulator.profile("other").reasoning_tokens, 7);
    }

    #[test]
    fn histogram_buckets_must_increase() {
        let err = parse(&format!(
            "{MINIMAL}\n[metrics]\nttft_buckets = [1.0, 0.5]\n"
        ))
        .unwrap_err();
        assert_eq!(err.key().unwrap().to_string(), "metrics.ttft_buckets");
        let cfg = parse(&format!(
            "{MINIMAL}\n[metrics]\nttft_buckets = [0.5, 1.0]\n"
        ))
        .unwrap();
        assert_eq!(cfg.metrics.ttft_buckets, Some(vec![0.5, 1.0]));
    }

    #[test]
    fn bad_duration_is_explained() {
        let text = format!("{MINIMAL}\n[server]\nshutdown_grace = \"soon\"\n");
        let err = parse(&text).unwrap_err();
        assert!(err.message().contains("not a duration"), "{err}");
    }
}
