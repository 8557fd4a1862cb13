//! The `[keys.<name>]` sections: client keys, what they may use, and their limits.

use super::*;

pub(super) fn validate_keys(
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
