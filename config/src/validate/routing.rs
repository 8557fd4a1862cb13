//! The `[routing]` and `[domains]` sections: how `auto` ranks models per domain.

use super::*;

pub(super) fn policy(
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

pub(super) fn validate_routing(raw: &RawConfig, c: &Checker<'_>) -> Result<Routing, ConfigError> {
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
        model_names: model_names(c, base.child("model_names"), &r.model_names, &raw.models)?,
    })
}

/// `[routing.model_names]`: each name is exact or ends in one `*`; each target is `auto` or
/// a configured model, optionally with a `:mode` suffix.
fn model_names(
    c: &Checker<'_>,
    key: KeyPath,
    raw: &BTreeMap<String, String>,
    models: &BTreeMap<String, RawModel>,
) -> Result<ModelNames, ConfigError> {
    for (name, target) in raw {
        let at = key.child(name.as_str());
        let stars = name.matches('*').count();
        if name.is_empty() || stars > 1 || (stars == 1 && !name.ends_with('*')) {
            return Err(c.error(
                at,
                "a model name is exact or ends in one `*` (`claude-*` matches every name that starts with `claude-`)",
            ));
        }
        let (base, suffix) = match target.rsplit_once(':') {
            Some((base, suffix)) => (base, Some(suffix)),
            None => (target.as_str(), None),
        };
        if let Some(suffix) = suffix {
            if Mode::parse(suffix).is_none() {
                return Err(c.error(
                    at,
                    format!("`{suffix}` is not a reasoning mode; use instant, thinking or contemplating"),
                ));
            }
        }
        if base != "auto" && !models.contains_key(base) {
            let hint = closest(base, models.keys().map(String::as_str))
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            return Err(c.error(
                at,
                format!("`{base}` is neither `auto` nor a configured model{hint}"),
            ));
        }
    }
    Ok(ModelNames::new(
        raw.iter().map(|(k, v)| (k.clone(), v.clone())),
    ))
}

/// The built-in domains (unless turned off) with the file's merged in: examples and
/// keywords added to a built-in domain of the same name, new domains added whole.
pub(super) fn validate_domains(
    raw: &RawConfig,
    c: &Checker<'_>,
) -> Result<Vec<Domain>, ConfigError> {
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
