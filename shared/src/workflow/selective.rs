//! The plan step's side of selective sync (`sync --only`, the API's `only`): a plan narrowed
//! to the selected changes, checked against what the live rows left out still refer to.
//! Choosing and refusing is `selection`'s; this module only reads those rows.

use std::collections::BTreeMap;

use crate::Result;
use crate::plan::{Action, Plan};
use crate::selection;
use crate::services::Services;

/// `plan` narrowed to `only` (see [`selection::narrow`]); `Error::Selection` when a selector
/// is malformed, matches no change, or would leave a reference dangling.
pub(super) async fn narrow(services: &Services, plan: Plan, only: &[String]) -> Result<Plan> {
    let selected = selection::parse_selectors(only)?;
    // Only an update or delete left out keeps a live row that may refer to what a selected
    // delete removes; creates have no row yet, unchanged rows match Git, which refers to
    // nothing the plan deletes.
    let left_out: Vec<_> = plan
        .actions
        .iter()
        .filter(|action| matches!(action, Action::Update { .. } | Action::Delete { .. }))
        .map(Action::id)
        .filter(|id| !selected.contains(id))
        .collect();
    let deletes_selected = plan
        .actions
        .iter()
        .any(|action| matches!(action, Action::Delete { .. }) && selected.contains(action.id()));
    let live_references = if deletes_selected && !left_out.is_empty() {
        let documents = services.database().await?.live_documents(&left_out).await?;
        documents
            .into_iter()
            .map(|(id, document)| {
                let references = document
                    .get("spec")
                    .map(|spec| crate::manifest::spec_references(id.kind, spec))
                    .unwrap_or_default();
                (id, references)
            })
            .collect()
    } else {
        BTreeMap::new()
    };
    Ok(selection::narrow(plan, &selected, &live_references)?)
}
