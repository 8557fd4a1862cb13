//! The `[simulator]` section: the built-in upstream's models and faults.

use super::*;

pub(super) fn validate_simulator(
    raw: &RawConfig,
    c: &Checker<'_>,
) -> Result<Simulator, ConfigError> {
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
pub(super) fn sim_profile(
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
