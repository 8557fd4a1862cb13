//! Who contemplates: for a contemplating request, the agents (role, model, reasoning share)
//! and the synthesis model with its share, from the config and the models that fit. Pure;
//! the contemplating handler runs it and `route --explain` prints it.

use std::collections::HashMap;
use std::sync::Arc;

use thinkgate_config::{AgentModels, Contemplating};

use crate::canonical::Budget;
use crate::models::Route;

/// The agents and the synthesis of one contemplating request.
#[derive(Debug, Clone)]
pub struct Cast {
    /// (role prompt, model, its budget: `None` for a model without reasoning).
    pub agents: Vec<(String, Arc<Route>, Option<Budget>)>,
    pub synthesis: Arc<Route>,
    pub synthesis_budget: Option<Budget>,
}

/// Splits the request's one reasoning budget: the synthesis' share, the rest evenly among
/// the domain's number of agents. `None` when no model fits.
pub fn cast(
    cfg: &Contemplating,
    domain: Option<&str>,
    order: &[Arc<Route>],
    budget: &Budget,
    routes: &HashMap<String, Arc<Route>>,
) -> Option<Cast> {
    let n = cfg.agents_for(domain).max(1);
    let first = order.first()?.clone();
    let total = budget.reasoning;
    let synthesis_share = (total as f64 * cfg.synthesis_share) as u64;
    let per_agent = ((total - synthesis_share.min(total)) / n as u64).max(1);
    let with = |route: &Route, reasoning: u64| {
        route.model.reasoning.then(|| Budget {
            reasoning,
            ..budget.clone()
        })
    };
    let agents = (0..n)
        .map(|i| {
            let route = match cfg.models {
                AgentModels::Same => first.clone(),
                AgentModels::Top => order[i % order.len()].clone(),
            };
            let role = cfg.roles[i % cfg.roles.len().max(1)].clone();
            let budget = with(&route, per_agent);
            (role, route, budget)
        })
        .collect();
    let synthesis = cfg
        .synthesis_model
        .as_deref()
        .and_then(|id| routes.get(id).cloned())
        .unwrap_or(first);
    let synthesis_budget = with(&synthesis, synthesis_share.max(1));
    Some(Cast {
        agents,
        synthesis_budget,
        synthesis,
    })
}
