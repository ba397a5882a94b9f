//! The strategies' planners, which the registry holds ([`crate::registry::StrategyDef`]):
//! each plans the `select:` options only its strategy takes. The options every strategy
//! takes (`strategy`, `budget`, `per_user`), and the refusal of an option the strategy does
//! not take, are planned once for all in `nodes.rs`.

use crate::plan::{DiversityPlan, DiversitySpace};
use crate::registry::defaults;
use crate::spec::path::YamlPath;
use crate::spec::schema::SelectSpec;

use super::Resolver;

/// Plans a strategy's own options: the k-center batch options of a strategy that picks a
/// diverse batch, `None` for one that takes the top of its key.
pub(crate) type StrategyPlanner = fn(&mut Resolver, &StrategyInput<'_>) -> Option<DiversityPlan>;

/// What a strategy's planner reads: the select node's options and what is resolved of them.
pub(crate) struct StrategyInput<'a> {
    /// The strategy's name.
    pub strategy: &'static str,
    /// The options as written under `select:`.
    pub options: &'a SelectSpec,
    /// Where they are: `nodes.<id>.select`.
    pub path: &'a YamlPath,
    /// Whether the budget is per user.
    pub per_user: bool,
    /// Whether the pipeline embeds item text (an `embed` node).
    pub embeds: bool,
}

/// A strategy that selects the top `budget` of its key: nothing of its own.
pub(crate) fn plan_top_of_key(_: &mut Resolver, _: &StrategyInput<'_>) -> Option<DiversityPlan> {
    None
}

/// `coreset`, `uncertainty_diversity`: greedy k-center over the `candidates` its key ranks
/// first, with distances in `space`. One batch covers the whole pool, so there is no
/// per-user budget.
pub(crate) fn plan_k_center(
    resolver: &mut Resolver,
    input: &StrategyInput<'_>,
) -> Option<DiversityPlan> {
    let SelectSpec {
        budget,
        space,
        candidates,
        ..
    } = input.options;
    let path = input.path;
    let default_space = if input.embeds {
        DiversitySpace::Text
    } else {
        DiversitySpace::Factors
    };
    let space = resolver.value("space", *space, default_space);
    if space == DiversitySpace::Text && !input.embeds {
        resolver.error(
            path.key("space"),
            "`space: text` measures distances between item text vectors, but the pipeline embeds no text",
            "add an embed node (e.g. `item_text: {embed: {}, input: items}`), or use `space: factors`",
        );
    }
    let candidates = resolver.value(
        "candidates",
        *candidates,
        (*budget as usize).saturating_mul(defaults::CANDIDATES_PER_BUDGET),
    );
    if candidates < *budget as usize {
        resolver.error(
            path.key("candidates"),
            format!("{candidates} candidates cannot fill a budget of {budget}"),
            format!(
                "set `candidates` to at least the budget (default {} x budget)",
                defaults::CANDIDATES_PER_BUDGET
            ),
        );
    }
    if input.per_user {
        resolver.error(
            path.key("per_user"),
            format!(
                "`{}` spreads one batch over the whole pool; it has no per-user budget",
                input.strategy
            ),
            "remove `per_user`",
        );
    }
    Some(DiversityPlan { space, candidates })
}
