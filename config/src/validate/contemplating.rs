//! The `[contemplating]` section: agents, roles, quorum, deadline, synthesis.

use super::*;

pub(super) fn validate_contemplating(
    raw: &RawConfig,
    c: &Checker<'_>,
) -> Result<Contemplating, ConfigError> {
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
