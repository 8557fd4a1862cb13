//! The `[modes]` section and each model's `thinking` table: reasoning modes and budgets.

use super::*;

pub(super) fn mode(c: &Checker<'_>, key: KeyPath, name: &str) -> Result<Mode, ConfigError> {
    let name = c.one_of(key, name, &Mode::NAMES)?;
    Ok(Mode::parse(name).unwrap_or(Mode::Thinking))
}

pub(super) fn validate_modes(raw: &RawConfig, c: &Checker<'_>) -> Result<Modes, ConfigError> {
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

pub(super) fn mode_policy(
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
    let adaptive = match raw.adaptive {
        Some(true) => {
            let max = raw.adaptive_max.unwrap_or(budget);
            let min = raw.adaptive_min.unwrap_or(64.min(max));
            if min == 0 || min > max {
                return Err(c.error(
                    key.child("adaptive_min"),
                    format!("must be at least 1 and at most adaptive_max ({max})"),
                ));
            }
            let percentile = c.bounded(
                key.child("adaptive_percentile"),
                raw.adaptive_percentile,
                90,
                50..=99,
            )? as u32;
            let period = c.timeout(
                key.child("adaptive_period"),
                raw.adaptive_period.as_deref(),
                std::time::Duration::from_secs(300),
            )?;
            Some(crate::modes::Adaptive {
                min,
                max,
                percentile,
                period,
            })
        }
        _ => {
            let stray = [
                ("adaptive_min", raw.adaptive_min.is_some()),
                ("adaptive_max", raw.adaptive_max.is_some()),
                ("adaptive_percentile", raw.adaptive_percentile.is_some()),
                ("adaptive_period", raw.adaptive_period.is_some()),
            ];
            if let Some((name, _)) = stray.iter().find(|(_, set)| *set) {
                return Err(c.error(key.child(*name), "only applies with adaptive = true"));
            }
            None
        }
    };
    Ok(ModePolicy {
        reasoning_budget: budget,
        answer_reserve: reserve,
        budget_hint: raw.budget_hint.unwrap_or(default.budget_hint),
        domain_budgets: raw.domains.clone(),
        adaptive,
    })
}

pub(super) fn model_thinking(
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
