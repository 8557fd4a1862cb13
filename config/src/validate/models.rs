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

pub(super) fn encoding(c: &Checker<'_>, key: KeyPath, name: &str) -> Result<Encoding, ConfigError> {
    Ok(match c.one_of(key, name, &Encoding::NAMES)? {
        "cl100k_base" => Encoding::Cl100kBase,
        _ => Encoding::O200kBase,
    })
}
