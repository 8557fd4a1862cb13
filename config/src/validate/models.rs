//! The `[models.<id>]` sections: capabilities, context, prices, scores, encodings.

use super::*;

/// Model ids become `auto`-style names and `<id>:<mode>` aliases, so some are reserved.
pub(super) fn validate_model(
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
    let upstream_model = m.upstream_model.clone().unwrap_or_else(|| id.to_string());
    let deployments = deployments(&base, m, &upstream_model, providers, c)?;
    if m.context_window == 0 {
        return Err(c.error(base.child("context_window"), "must be at least 1"));
    }
    let mut model = Model {
        id: id.to_string(),
        provider: deployments[0].provider.clone(),
        upstream_model: deployments[0].upstream_model.clone(),
        balance: match m.balance.as_deref() {
            None => Balance::PeakEwma,
            Some(b) => {
                let name = c.one_of(base.child("balance"), b, &Balance::NAMES)?;
                Balance::parse(name).unwrap_or(Balance::PeakEwma)
            }
        },
        deployments,
        context_window: m.context_window,
        vision: false,
        embeddings: false,
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
        match c.one_of(key, cap, &["vision", "tools", "reasoning", "embeddings"])? {
            "vision" => model.vision = true,
            "tools" => model.tools = true,
            "embeddings" => model.embeddings = true,
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

/// `provider` (one deployment) or `deployments` (several), each on a configured provider.
fn deployments(
    base: &KeyPath,
    m: &RawModel,
    upstream_model: &str,
    providers: &BTreeMap<String, RawProvider>,
    c: &Checker<'_>,
) -> Result<Vec<Deployment>, ConfigError> {
    let known = |key: KeyPath, name: &str| {
        if providers.contains_key(name) {
            return Ok(());
        }
        let hint = closest(name, providers.keys().map(String::as_str))
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        Err(c.error(key, format!("`{name}` is not a configured provider{hint}")))
    };
    match (&m.provider, &m.deployments) {
        (Some(provider), None) => {
            known(base.child("provider"), provider)?;
            Ok(vec![Deployment {
                provider: provider.clone(),
                upstream_model: upstream_model.to_string(),
                weight: 1,
                requests_per_minute: None,
                tokens_per_minute: None,
            }])
        }
        (None, None) => Err(c.error(
            base.clone(),
            "needs `provider` (the provider serving it) or `deployments` (several)",
        )),
        (Some(_), Some(_)) => Err(c.error(
            base.child("deployments"),
            "is instead of `provider`: list every provider serving the model here",
        )),
        (None, Some(list)) if list.is_empty() => {
            Err(c.error(base.child("deployments"), "needs at least one deployment"))
        }
        (None, Some(list)) => {
            let mut out: Vec<Deployment> = Vec::with_capacity(list.len());
            for (i, d) in list.iter().enumerate() {
                let key = base.child("deployments").child(i.to_string());
                known(key.child("provider"), &d.provider)?;
                if out.iter().any(|o| o.provider == d.provider) {
                    return Err(c.error(
                        key.child("provider"),
                        format!("`{}` serves this model twice; one deployment per provider (make another provider for another account or region)", d.provider),
                    ));
                }
                let limit = |field: &str, v: Option<u32>| match v {
                    Some(0) => Err(c.error(
                        key.child(field),
                        "must be at least 1 (leave it out for no limit)",
                    )),
                    other => Ok(other),
                };
                out.push(Deployment {
                    provider: d.provider.clone(),
                    upstream_model: d
                        .upstream_model
                        .clone()
                        .unwrap_or_else(|| upstream_model.to_string()),
                    weight: c.bounded(key.child("weight"), d.weight, 1, 1..=1000)? as u32,
                    requests_per_minute: limit("requests_per_minute", d.requests_per_minute)?,
                    tokens_per_minute: limit("tokens_per_minute", d.tokens_per_minute)?,
                });
            }
            Ok(out)
        }
    }
}

pub(super) fn encoding(c: &Checker<'_>, key: KeyPath, name: &str) -> Result<Encoding, ConfigError> {
    Ok(match c.one_of(key, name, &Encoding::NAMES)? {
        "cl100k_base" => Encoding::Cl100kBase,
        _ => Encoding::O200kBase,
    })
}
