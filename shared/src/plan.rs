//! Planning, pure: pair desired resources (Git) with live ones (PostgreSQL) and decide what to do.
//!
//! Pure: no IO, no clock. Ownership comes from the target's inventory, never from labels, so a
//! row this target did not create is never updated or deleted by it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::diagnostic::{self, Code, Diagnostic};
use crate::diff::{self, Change};
use crate::hash::SpecHash;
use crate::model::{DesiredResource, Kind, LiveState, ResourceId, Revision};

/// How far a target may go on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanPolicy {
    /// Delete resources that left Git (otherwise warn and keep them).
    pub prune: bool,
    /// Allow a plan whose desired set is empty to delete the whole inventory.
    pub allow_empty: bool,
    /// Deletes beyond this share of the inventory wait for approval.
    pub max_delete_percent: u32,
}

impl Default for PlanPolicy {
    fn default() -> Self {
        Self {
            prune: true,
            allow_empty: false,
            max_delete_percent: 25,
        }
    }
}

/// One thing the applier will do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Create {
        desired: DesiredResource,
    },
    Update {
        desired: DesiredResource,
        live_hash: SpecHash,
        /// The row was edited outside a sync; this update restores Git's version.
        drifted: bool,
        /// What changes inside the resource, redacted ([`describe_changes`] fills it in once
        /// the live rows are read; empty until then, and in plans stored before it existed).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        changes: Vec<Change>,
    },
    Delete {
        id: ResourceId,
        live_hash: SpecHash,
        /// What goes with the resource: its labels and top-level spec fields, redacted
        /// ([`describe_changes`] fills it in from the live row; empty until then, and in plans
        /// stored before it existed).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        changes: Vec<Change>,
    },
    /// In the inventory, gone from Git, kept because prune is off.
    PruneSkipped {
        id: ResourceId,
    },
}

impl Action {
    pub fn id(&self) -> &ResourceId {
        match self {
            Action::Create { desired } | Action::Update { desired, .. } => &desired.id,
            Action::Delete { id, .. } | Action::PruneSkipped { id } => id,
        }
    }

    /// `create`, `update`, `delete` or `warn`, as in plan output and JSON.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Create { .. } => "create",
            Action::Update { .. } => "update",
            Action::Delete { .. } => "delete",
            Action::PruneSkipped { .. } => "warn",
        }
    }

    /// Terraform-style marker.
    pub fn symbol(&self) -> char {
        match self {
            Action::Create { .. } => '+',
            Action::Update { .. } => '~',
            Action::Delete { .. } => '-',
            Action::PruneSkipped { .. } => '!',
        }
    }

    /// The file the desired resource comes from, for creates and updates.
    pub fn path(&self) -> Option<&str> {
        match self {
            Action::Create { desired } | Action::Update { desired, .. } => {
                Some(&desired.source.path)
            }
            Action::Delete { .. } | Action::PruneSkipped { .. } => None,
        }
    }

    /// What the action changes inside the resource, redacted: an update's field diff, a
    /// create's top-level fields, a delete's top-level fields as they go.
    pub fn changes(&self) -> std::borrow::Cow<'_, [Change]> {
        match self {
            Action::Update { changes, .. } | Action::Delete { changes, .. } => {
                std::borrow::Cow::Borrowed(changes)
            }
            Action::Create { desired } => std::borrow::Cow::Owned(diff::created(desired)),
            Action::PruneSkipped { .. } => std::borrow::Cow::Borrowed(&[]),
        }
    }

    /// [`changes`](Self::changes) as people read them, one or more lines each: a delete lists
    /// each field with the value that goes, as a create lists what it adds.
    pub fn change_lines(&self) -> Vec<diff::Line> {
        let render = match self {
            Action::Create { desired } => return diff::created_lines(desired),
            Action::Delete { .. } => diff::listed_removal,
            _ => diff::lines,
        };
        self.changes().iter().flat_map(render).collect()
    }

    pub fn old_hash(&self) -> Option<&SpecHash> {
        match self {
            Action::Update { live_hash, .. } | Action::Delete { live_hash, .. } => Some(live_hash),
            Action::Create { .. } | Action::PruneSkipped { .. } => None,
        }
    }

    pub fn new_hash(&self) -> Option<&SpecHash> {
        match self {
            Action::Create { desired } | Action::Update { desired, .. } => Some(&desired.hash),
            Action::Delete { .. } | Action::PruneSkipped { .. } => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.symbol(), self.id())?;
        match self {
            Action::Update { drifted: true, .. } => {
                f.write_str(" (drifted: restoring Git's version)")
            }
            Action::PruneSkipped { .. } => f.write_str(" (not in Git; kept because prune is off)"),
            _ => Ok(()),
        }
    }
}

/// Counts of a plan, as printed and as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub unchanged: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Plan: {} to create, {} to update, {} to delete, {} unchanged.",
            self.create, self.update, self.delete, self.unchanged
        )
    }
}

/// What the target looked like when the plan was computed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanBase {
    /// The target's generation; the applier refuses the plan if it moved.
    pub generation: i64,
    /// The commit last applied to the target, if any.
    pub commit: Option<String>,
}

/// What a plan narrowed to some of its changes (`sync --only`, see `selection`) kept, and
/// what it left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partial {
    /// The resources asked for, in plan order.
    pub selected: Vec<ResourceId>,
    /// The plan's other changes, left for a later sync, in plan order.
    pub pending: Vec<PendingAction>,
}

impl Partial {
    /// How many changes the whole plan had.
    pub fn total(&self) -> usize {
        self.selected.len() + self.pending.len()
    }
}

/// A change a partial sync left out: `update job/backend-service`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAction {
    /// `create`, `update` or `delete`.
    pub action: String,
    pub resource: ResourceId,
}

impl fmt::Display for PendingAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.action, self.resource)
    }
}

/// A plan: everything needed to apply it, and to explain it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub target: String,
    pub revision: Revision,
    pub base: PlanBase,
    /// Creates and updates in reference order, then deletes in reverse, then prune warnings.
    pub actions: Vec<Action>,
    pub unchanged: usize,
    pub diagnostics: Vec<Diagnostic>,
    /// Why a person must approve this plan before it is applied, if they must.
    pub approval_reason: Option<String>,
    /// Set when the plan was narrowed to some of its changes (`sync --only`): applying it does
    /// not advance the target's last applied commit, so the next plan still sees the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<Partial>,
}

impl Plan {
    pub fn summary(&self) -> Summary {
        let mut summary = Summary {
            unchanged: self.unchanged,
            ..Summary::default()
        };
        for action in &self.actions {
            match action {
                Action::Create { .. } => summary.create += 1,
                Action::Update { .. } => summary.update += 1,
                Action::Delete { .. } => summary.delete += 1,
                Action::PruneSkipped { .. } => {}
            }
        }
        summary
    }

    /// A plan with errors must not be applied.
    pub fn has_errors(&self) -> bool {
        diagnostic::has_errors(&self.diagnostics)
    }

    /// Whether applying it would change the database.
    pub fn has_changes(&self) -> bool {
        self.actions
            .iter()
            .any(|action| !matches!(action, Action::PruneSkipped { .. }))
    }
}

/// The ids whose live documents [`describe_changes`] needs: those of the plan's updates and
/// deletes.
pub fn described_ids(plan: &Plan) -> Vec<&ResourceId> {
    plan.actions
        .iter()
        .filter_map(|action| match action {
            Action::Update { desired, .. } => Some(&desired.id),
            Action::Delete { id, .. } => Some(id),
            _ => None,
        })
        .collect()
}

/// Fills in each update's field diff, and each delete's list of what goes, from the live
/// documents (`{"labels", "spec"}`, see [`diff::document`]) read for [`described_ids`]. An
/// action whose row was not found keeps an empty list (the row went away between the plan and
/// this read; the apply will say so).
pub fn describe_changes(
    plan: &mut Plan,
    live: &std::collections::HashMap<ResourceId, serde_json::Value>,
) {
    for action in &mut plan.actions {
        match action {
            Action::Update {
                desired, changes, ..
            } => {
                if let Some(before) = live.get(&desired.id) {
                    *changes = diff::diff(before, &diff::desired_document(desired));
                }
            }
            Action::Delete { id, changes, .. } => {
                if let Some(before) = live.get(id) {
                    *changes = diff::removals(before);
                }
            }
            Action::Create { .. } | Action::PruneSkipped { .. } => {}
        }
    }
}

/// Computes the plan that makes `live` match `desired` for one target.
///
/// `desired` must already be validated: the planner trusts it is free of errors, and callers
/// never plan after a fetch or parse failure (so deletes can never come from a broken read).
pub fn plan(
    target: &str,
    revision: Revision,
    base: PlanBase,
    desired: Vec<DesiredResource>,
    live: &LiveState,
    policy: &PlanPolicy,
) -> Plan {
    plan_overlay(target, revision, base, desired, live, 0, policy)
}

/// [`plan`] of `desired` plus `untouched` more resources of the inventory that Git still has
/// unchanged and that the caller left out of both `desired` and `live.inventory`: the
/// incremental planner's resources of files that did not change. They count as unchanged and
/// in the inventory's size, and cost nothing, so an incremental plan stays O(changed files).
pub fn plan_overlay(
    target: &str,
    revision: Revision,
    base: PlanBase,
    desired: Vec<DesiredResource>,
    live: &LiveState,
    untouched: usize,
    policy: &PlanPolicy,
) -> Plan {
    let mut diagnostics = Vec::new();
    let mut upserts = Vec::new();
    let mut unchanged = untouched;

    // Resources move into their actions (a spec is never cloned); only the ids are kept for
    // the inventory walk below.
    let desired: BTreeMap<ResourceId, DesiredResource> = desired
        .into_iter()
        .map(|resource| (resource.id.clone(), resource))
        .collect();
    let desired_ids: BTreeSet<ResourceId> = desired.keys().cloned().collect();

    for (id, resource) in desired {
        let owned = live.inventory.contains_key(&id);
        match (live.resources.get(&id), owned) {
            (Some(_), false) => diagnostics.push(Diagnostic::new(
                Code::E501,
                &resource.source,
                format!(
                    "`{id}` already exists in the database and target `{target}` does not own it: \
                     rename it in Git or delete the existing row first"
                ),
            )),
            (None, _) => upserts.push(Action::Create { desired: resource }),
            (Some(row), true) if row.hash != resource.hash || row.drifted => {
                upserts.push(Action::Update {
                    desired: resource,
                    live_hash: row.hash.clone(),
                    drifted: row.drifted,
                    changes: Vec::new(),
                })
            }
            (Some(_), true) => unchanged += 1,
        }
    }

    let mut deletes = Vec::new();
    let mut kept = Vec::new();
    for (id, entry) in &live.inventory {
        if desired_ids.contains(id) {
            continue;
        }
        if policy.prune {
            let live_hash = live
                .resources
                .get(id)
                .map_or_else(|| entry.hash.clone(), |row| row.hash.clone());
            deletes.push(Action::Delete {
                id: id.clone(),
                live_hash,
                changes: Vec::new(),
            });
        } else {
            diagnostics.push(Diagnostic::global(
                Code::W100,
                format!("`{id}` is no longer in Git; kept because prune is off"),
            ));
            kept.push(Action::PruneSkipped { id: id.clone() });
        }
    }

    if desired_ids.is_empty() && untouched == 0 && !deletes.is_empty() && !policy.allow_empty {
        diagnostics.push(Diagnostic::global(
            Code::E500,
            format!(
                "the repository holds no resources for target `{target}`, so this plan would delete \
                 all {} it manages: check the repository path, or set `allow_empty: true` on the \
                 target if emptying it is intended",
                deletes.len()
            ),
        ));
    }

    let approval_reason = approval_reason(&deletes, live.inventory.len() + untouched, policy);
    if let Some(reason) = &approval_reason {
        diagnostics.push(Diagnostic::global(Code::W500, reason.clone()));
    }

    upserts.sort_by(|a, b| a.id().apply_order_key().cmp(&b.id().apply_order_key()));
    deletes.sort_by(|a, b| b.id().apply_order_key().cmp(&a.id().apply_order_key()));

    let mut actions = upserts;
    actions.extend(deletes);
    actions.extend(kept);
    diagnostic::sort(&mut diagnostics);

    Plan {
        target: target.to_string(),
        revision,
        base,
        actions,
        unchanged,
        diagnostics,
        approval_reason,
        partial: None,
    }
}

/// Kinds the plan deletes resources of and creates none of: the kinds it may leave empty (see
/// [`hold_unexplained_emptying`]), so that a caller asks its source about these only.
pub fn kinds_losing_resources(plan: &Plan) -> BTreeSet<Kind> {
    let created: BTreeSet<Kind> = plan
        .actions
        .iter()
        .filter(|action| matches!(action, Action::Create { .. }))
        .map(|action| action.id().kind)
        .collect();
    plan.actions
        .iter()
        .filter(|action| matches!(action, Action::Delete { .. }))
        .map(|action| action.id().kind)
        .filter(|kind| !created.contains(kind))
        .collect()
}

/// How many of `ids` are of each kind: the `managed` counts of
/// [`hold_unexplained_emptying`], over the target's whole inventory.
pub fn count_by_kind<'a>(ids: impl IntoIterator<Item = &'a ResourceId>) -> BTreeMap<Kind, usize> {
    let mut counts = BTreeMap::new();
    for id in ids {
        *counts.entry(id.kind).or_insert(0) += 1;
    }
    counts
}

/// Makes `plan` wait for approval when it empties a kind for a reason other than the ordinary
/// removal of that kind's files.
///
/// The plan empties a kind when it deletes every resource of it that the target manages
/// (`managed`: counts over the whole inventory, see [`count_by_kind`]) and creates none. That
/// is an ordinary removal when the source listed nothing for the kind at the planned revision
/// (`listed`, see [`crate::manifest::kinds_listed`]): its directory is gone, which is what
/// deleting every file of it does in Git, or holds only files that are not resource files. When
/// the source still listed something there (resource files that now define nothing, or an
/// entry it refused to read such as a symlink in place of the directory), the resources did not
/// leave because their files were removed, and a person confirms before all of them go.
///
/// Both inputs are facts of the revision and the inventory, not of how the plan was computed,
/// so a full scan and an incremental plan hold the same plans.
pub fn hold_unexplained_emptying(
    plan: &mut Plan,
    managed: &BTreeMap<Kind, usize>,
    listed: &BTreeSet<Kind>,
) {
    let mut reasons = Vec::new();
    for kind in kinds_losing_resources(plan) {
        if !listed.contains(&kind) {
            continue;
        }
        let deleted: BTreeSet<&str> = plan
            .actions
            .iter()
            .filter(|action| matches!(action, Action::Delete { .. }) && action.id().kind == kind)
            .map(|action| action.id().name.as_str())
            .collect();
        if deleted.len() < managed.get(&kind).copied().unwrap_or(0) {
            continue;
        }
        let shown = 5;
        let mut names = deleted
            .iter()
            .take(shown)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        if deleted.len() > shown {
            names.push_str(&format!(" and {} more", deleted.len() - shown));
        }
        let dir = kind.directory();
        reasons.push(format!(
            "the plan deletes every {} the target manages ({}: {names}) although `{dir}` still \
             holds entries that define none of them (resource files left empty, or entries that \
             are not read, such as a symlink): check `{dir}`, and approve the plan only if \
             removing all of them is intended",
            kind.slug(),
            deleted.len(),
        ));
    }
    if reasons.is_empty() {
        return;
    }
    plan.diagnostics.extend(
        reasons
            .iter()
            .map(|reason| Diagnostic::global(Code::W500, reason.clone())),
    );
    diagnostic::sort(&mut plan.diagnostics);
    let reasons = reasons.join("; ");
    plan.approval_reason = Some(match plan.approval_reason.take() {
        Some(earlier) => format!("{earlier}; {reasons}"),
        None => reasons,
    });
}

fn approval_reason(
    deletes: &[Action],
    inventory_size: usize,
    policy: &PlanPolicy,
) -> Option<String> {
    let credentials: Vec<String> = deletes
        .iter()
        .filter(|action| action.id().kind == Kind::Credential)
        .map(|action| action.id().to_string())
        .collect();
    if !credentials.is_empty() {
        return Some(format!(
            "the plan deletes credentials ({}), which always needs approval",
            credentials.join(", ")
        ));
    }
    let allowed = (inventory_size * policy.max_delete_percent as usize)
        .div_ceil(100)
        .max(1);
    (deletes.len() > allowed).then(|| {
        format!(
            "the plan deletes {} of {} managed resources, more than the {}% threshold ({allowed}) allows \
             without approval",
            deletes.len(),
            inventory_size,
            policy.max_delete_percent
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::hash::{Spec, content_hash};
    use crate::model::{InventoryEntry, LiveResource, SourceLocation};

    fn desired(kind: Kind, name: &str, spec: serde_json::Value) -> DesiredResource {
        let spec = Spec::from_value(&spec);
        DesiredResource {
            id: ResourceId::new(kind, name),
            labels: BTreeMap::new(),
            hash: content_hash(&BTreeMap::new(), &spec),
            spec,
            source: SourceLocation::new(format!("{}/{name}.yaml", kind.directory()), 1, 1),
        }
    }

    /// Live state as if `resources` had been applied by this target.
    fn owned(resources: &[DesiredResource]) -> LiveState {
        let mut live = LiveState::default();
        for resource in resources {
            live.resources.insert(
                resource.id.clone(),
                LiveResource {
                    id: resource.id.clone(),
                    hash: resource.hash.clone(),
                    drifted: false,
                },
            );
            live.inventory.insert(
                resource.id.clone(),
                InventoryEntry {
                    id: resource.id.clone(),
                    hash: resource.hash.clone(),
                    commit: "c0".into(),
                },
            );
        }
        live
    }

    fn run(desired: Vec<DesiredResource>, live: &LiveState, policy: &PlanPolicy) -> Plan {
        plan(
            "default",
            Revision::Worktree,
            PlanBase::default(),
            desired,
            live,
            policy,
        )
    }

    fn lines(plan: &Plan) -> Vec<String> {
        plan.actions.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn absent_resources_are_created_in_reference_order() {
        let wanted = vec![
            desired(Kind::Webhook, "hook", json!({})),
            desired(Kind::Job, "build", json!({})),
            desired(Kind::Credential, "token", json!({})),
        ];

        let plan = run(wanted, &LiveState::default(), &PlanPolicy::default());

        assert_eq!(
            lines(&plan),
            ["+ credential/token", "+ job/build", "+ webhook/hook"]
        );
        assert_eq!(plan.summary().create, 3);
        assert!(!plan.has_errors());
    }

    #[test]
    fn a_changed_spec_is_an_update_and_an_identical_one_is_unchanged() {
        let before = vec![
            desired(Kind::Job, "a", json!({"timeout": 1})),
            desired(Kind::Job, "b", json!({"timeout": 1})),
        ];
        let live = owned(&before);
        let after = vec![
            desired(Kind::Job, "a", json!({"timeout": 2})),
            desired(Kind::Job, "b", json!({"timeout": 1})),
        ];

        let plan = run(after, &live, &PlanPolicy::default());

        assert_eq!(lines(&plan), ["~ job/a"]);
        assert_eq!(
            plan.summary(),
            Summary {
                create: 0,
                update: 1,
                delete: 0,
                unchanged: 1
            }
        );
    }

    #[test]
    fn a_drifted_row_is_updated_even_when_its_hash_matches() {
        let resources = vec![desired(Kind::Job, "a", json!({}))];
        let mut live = owned(&resources);
        if let Some(row) = live.resources.values_mut().next() {
            row.drifted = true;
        }

        let plan = run(resources, &live, &PlanPolicy::default());

        assert!(matches!(
            plan.actions[..],
            [Action::Update { drifted: true, .. }]
        ));
    }

    #[test]
    fn resources_gone_from_git_are_deleted_in_reverse_reference_order() {
        let before = vec![
            desired(Kind::Credential, "c", json!({})),
            desired(Kind::Job, "j", json!({})),
            desired(Kind::Webhook, "w", json!({})),
            desired(Kind::Job, "keep", json!({})),
        ];
        let live = owned(&before);
        let policy = PlanPolicy {
            max_delete_percent: 100,
            ..PlanPolicy::default()
        };

        let plan = run(vec![before[3].clone()], &live, &policy);

        assert_eq!(lines(&plan), ["- webhook/w", "- job/j", "- credential/c"]);
    }

    #[test]
    fn with_prune_off_resources_gone_from_git_are_warned_about_and_kept() {
        let before = vec![
            desired(Kind::Job, "a", json!({})),
            desired(Kind::Job, "b", json!({})),
        ];
        let live = owned(&before);
        let policy = PlanPolicy {
            prune: false,
            ..PlanPolicy::default()
        };

        let plan = run(vec![before[0].clone()], &live, &policy);

        assert_eq!(plan.actions.len(), 1);
        assert_eq!(plan.actions[0].verb(), "warn");
        assert_eq!(plan.summary().delete, 0);
        assert!(!plan.has_changes());
        assert!(plan.diagnostics.iter().any(|d| d.code == Code::W100));
    }

    #[test]
    fn rows_outside_the_inventory_are_never_deleted() {
        let mut live = LiveState::default();
        let foreign = desired(Kind::Job, "foreign", json!({}));
        live.resources.insert(
            foreign.id.clone(),
            LiveResource {
                id: foreign.id.clone(),
                hash: foreign.hash.clone(),
                drifted: false,
            },
        );

        let plan = run(
            vec![desired(Kind::Job, "mine", json!({}))],
            &live,
            &PlanPolicy::default(),
        );

        assert_eq!(lines(&plan), ["+ job/mine"]);
    }

    #[test]
    fn a_git_resource_colliding_with_a_row_this_target_does_not_own_is_an_error() {
        let mut live = LiveState::default();
        let foreign = desired(Kind::Job, "shared", json!({"x": 1}));
        live.resources.insert(
            foreign.id.clone(),
            LiveResource {
                id: foreign.id.clone(),
                hash: foreign.hash.clone(),
                drifted: false,
            },
        );

        let plan = run(
            vec![desired(Kind::Job, "shared", json!({"x": 2}))],
            &live,
            &PlanPolicy::default(),
        );

        assert!(plan.has_errors());
        assert_eq!(plan.diagnostics[0].code, Code::E501);
        assert_eq!(plan.diagnostics[0].path, "jobs/shared.yaml");
        assert!(plan.actions.is_empty());
    }

    #[test]
    fn an_empty_desired_set_may_not_delete_everything_unless_allowed() {
        let live = owned(&[desired(Kind::Job, "a", json!({}))]);

        let refused = run(Vec::new(), &live, &PlanPolicy::default());
        let allowed = run(
            Vec::new(),
            &live,
            &PlanPolicy {
                allow_empty: true,
                ..PlanPolicy::default()
            },
        );

        assert!(refused.diagnostics.iter().any(|d| d.code == Code::E500));
        assert!(refused.has_errors());
        assert!(!allowed.has_errors());
        assert_eq!(lines(&allowed), ["- job/a"]);
    }

    #[test]
    fn deletes_past_the_threshold_wait_for_approval() {
        let before: Vec<DesiredResource> = (0..8)
            .map(|i| desired(Kind::Job, &format!("j{i}"), json!({})))
            .collect();
        let live = owned(&before);

        let two_deleted = run(before[2..].to_vec(), &live, &PlanPolicy::default());
        let three_deleted = run(before[3..].to_vec(), &live, &PlanPolicy::default());

        assert_eq!(two_deleted.approval_reason, None);
        assert!(three_deleted.approval_reason.is_some());
        assert!(!three_deleted.has_errors());
    }

    #[test]
    fn any_credential_delete_waits_for_approval() {
        let before: Vec<DesiredResource> = (0..10)
            .map(|i| desired(Kind::Job, &format!("j{i}"), json!({})))
            .chain([desired(Kind::Credential, "old", json!({}))])
            .collect();
        let live = owned(&before);

        let plan = run(before[..10].to_vec(), &live, &PlanPolicy::default());

        let reason = plan.approval_reason.unwrap_or_default();
        assert!(reason.contains("credential/old"), "{reason}");
    }

    #[test]
    fn a_row_deleted_out_of_band_is_recreated() {
        let resources = vec![desired(Kind::Job, "a", json!({}))];
        let mut live = owned(&resources);
        live.resources.clear();

        let plan = run(resources, &live, &PlanPolicy::default());

        assert_eq!(lines(&plan), ["+ job/a"]);
    }

    #[test]
    fn the_same_inputs_give_the_same_plan() {
        let wanted: Vec<DesiredResource> = (0..50)
            .rev()
            .map(|i| desired(Kind::ALL[i % 6], &format!("r{i}"), json!({"i": i})))
            .collect();
        let mut reversed = wanted.clone();
        reversed.reverse();

        let a = run(wanted, &LiveState::default(), &PlanPolicy::default());
        let b = run(reversed, &LiveState::default(), &PlanPolicy::default());

        assert_eq!(a, b);
    }

    #[test]
    fn untouched_resources_left_out_count_as_the_full_plan_counts_them() {
        let before: Vec<DesiredResource> = (0..8)
            .map(|i| desired(Kind::Job, &format!("j{i}"), json!({})))
            .collect();
        let live = owned(&before);
        let mut after = before[3..].to_vec();
        after[0] = desired(Kind::Job, "j3", json!({"timeout": 2}));
        let seen: Vec<ResourceId> = before[..4].iter().map(|d| d.id.clone()).collect();
        let mut slice = live.clone();
        slice.inventory.retain(|id, _| seen.contains(id));
        slice.resources.retain(|id, _| seen.contains(id));

        let full = run(after.clone(), &live, &PlanPolicy::default());
        let overlay = plan_overlay(
            "default",
            Revision::Worktree,
            PlanBase::default(),
            after[..1].to_vec(),
            &slice,
            4,
            &PlanPolicy::default(),
        );

        assert_eq!(overlay, full);
        assert_eq!(
            lines(&full),
            ["~ job/j3", "- job/j2", "- job/j1", "- job/j0"]
        );
        assert!(full.approval_reason.is_some());
    }

    #[test]
    fn deleting_every_changed_resource_is_not_emptying_the_target_when_others_are_untouched() {
        let gone = vec![desired(Kind::Job, "a", json!({}))];

        let plan = plan_overlay(
            "default",
            Revision::Worktree,
            PlanBase::default(),
            Vec::new(),
            &owned(&gone),
            3,
            &PlanPolicy::default(),
        );

        assert!(!plan.has_errors(), "{:?}", plan.diagnostics);
        assert_eq!(lines(&plan), ["- job/a"]);
        assert_eq!(plan.unchanged, 3);
    }

    /// Eight jobs and two webhooks, applied.
    fn jobs_and_webhooks() -> Vec<DesiredResource> {
        (0..8)
            .map(|i| desired(Kind::Job, &format!("j{i}"), json!({})))
            .chain((0..2).map(|i| desired(Kind::Webhook, &format!("w{i}"), json!({}))))
            .collect()
    }

    fn held(plan: Plan, before: &[DesiredResource], listed: &[Kind]) -> Plan {
        let mut plan = plan;
        let managed = count_by_kind(before.iter().map(|d| &d.id));
        hold_unexplained_emptying(&mut plan, &managed, &listed.iter().copied().collect());
        plan
    }

    // Issue 22, finding 1: `webhooks` replaced by a symlink deleted every webhook (2 of 10
    // resources, under the 25% threshold) with no approval.
    #[test]
    fn emptying_a_kind_whose_directory_still_lists_entries_waits_for_approval() {
        let before = jobs_and_webhooks();
        let live = owned(&before);

        let plan = held(
            run(before[..8].to_vec(), &live, &PlanPolicy::default()),
            &before,
            &[Kind::Job, Kind::Webhook],
        );

        let reason = plan.approval_reason.clone().unwrap_or_default();
        assert!(
            reason.starts_with("the plan deletes every webhook the target manages (2: w0, w1)"),
            "{reason}"
        );
        assert!(
            reason.contains("`webhooks` still holds entries"),
            "{reason}"
        );
        assert!(
            plan.diagnostics
                .iter()
                .any(|d| d.code == Code::W500 && d.message == reason)
        );
        assert!(!plan.has_errors());
    }

    #[test]
    fn emptying_a_kind_whose_directory_is_gone_is_an_ordinary_removal() {
        let before = jobs_and_webhooks();
        let live = owned(&before);

        let plan = held(
            run(before[..8].to_vec(), &live, &PlanPolicy::default()),
            &before,
            &[Kind::Job],
        );

        assert_eq!(plan.approval_reason, None);
        assert_eq!(lines(&plan), ["- webhook/w1", "- webhook/w0"]);
    }

    #[test]
    fn deleting_some_of_a_kind_or_renaming_all_of_it_does_not_empty_it() {
        let before = jobs_and_webhooks();
        let live = owned(&before);
        let mut renamed = before[..8].to_vec();
        renamed.push(desired(Kind::Webhook, "w-new", json!({})));
        let listed = [Kind::Job, Kind::Webhook];

        let one_left = held(
            run(before[..9].to_vec(), &live, &PlanPolicy::default()),
            &before,
            &listed,
        );
        let rename = held(
            run(renamed, &live, &PlanPolicy::default()),
            &before,
            &listed,
        );

        assert_eq!(one_left.approval_reason, None);
        assert_eq!(rename.approval_reason, None);
        assert_eq!(
            kinds_losing_resources(&one_left),
            BTreeSet::from([Kind::Webhook])
        );
        assert!(kinds_losing_resources(&rename).is_empty());
    }

    #[test]
    fn with_prune_off_nothing_is_emptied() {
        let before = jobs_and_webhooks();
        let live = owned(&before);
        let policy = PlanPolicy {
            prune: false,
            ..PlanPolicy::default()
        };

        let plan = held(
            run(before[..8].to_vec(), &live, &policy),
            &before,
            &[Kind::Webhook],
        );

        assert_eq!(plan.approval_reason, None);
    }

    #[test]
    fn an_emptied_kind_adds_its_reason_to_the_threshold_one() {
        let before = jobs_and_webhooks();
        let live = owned(&before);

        let plan = held(
            run(before[5..8].to_vec(), &live, &PlanPolicy::default()),
            &before,
            &[Kind::Job, Kind::Webhook],
        );

        let reason = plan.approval_reason.unwrap_or_default();
        assert!(reason.starts_with("the plan deletes 7 of 10"), "{reason}");
        assert!(
            reason.contains("; the plan deletes every webhook"),
            "{reason}"
        );
        let held_for: Vec<&Diagnostic> = plan
            .diagnostics
            .iter()
            .filter(|d| d.code == Code::W500)
            .collect();
        assert_eq!(held_for.len(), 2);
    }

    #[test]
    fn an_incremental_plan_is_held_exactly_as_the_full_plan() {
        let before = jobs_and_webhooks();
        let live = owned(&before);
        let mut webhooks_only = live.clone();
        webhooks_only
            .inventory
            .retain(|id, _| id.kind == Kind::Webhook);
        webhooks_only
            .resources
            .retain(|id, _| id.kind == Kind::Webhook);
        let listed = [Kind::Job, Kind::Webhook];

        let full = held(
            run(before[..8].to_vec(), &live, &PlanPolicy::default()),
            &before,
            &listed,
        );
        let overlay = held(
            plan_overlay(
                "default",
                Revision::Worktree,
                PlanBase::default(),
                Vec::new(),
                &webhooks_only,
                8,
                &PlanPolicy::default(),
            ),
            &before,
            &listed,
        );

        assert_eq!(overlay, full);
        assert!(full.approval_reason.is_some());
    }

    #[test]
    fn the_summary_reads_like_terraform() {
        let summary = Summary {
            create: 3,
            update: 1,
            delete: 0,
            unchanged: 42,
        };

        assert_eq!(
            summary.to_string(),
            "Plan: 3 to create, 1 to update, 0 to delete, 42 unchanged."
        );
    }

    /// The text of an action's change lines.
    fn listed(action: &Action) -> Vec<String> {
        action
            .change_lines()
            .into_iter()
            .map(|line| line.text)
            .collect()
    }

    #[test]
    fn a_create_lists_its_labels_and_fields_with_secrets_redacted() {
        let blob = "AES256:b2xkLWNpcGhlcnRleHQtYmxvYi1vZi1lbm91Z2gtYnl0ZXM=";
        let kms = "KMS:AQICAHh4bmV3LWttcy1ibG9i";
        let token = "ghp_Zq8xW3vN7kP2mR5tY9bC4dF6gH1jL0aS3eU7";
        let mut new = desired(
            Kind::Credential,
            "deploy-token",
            json!({
                "type": "token",
                "encrypted_value": blob,
                "note": format!("rotate {token} monthly"),
                "Client-Secret": "hunter2",
                "extra": {"nested": [{"encrypted_value": kms}], "a/b": "plain"},
                "scopes": ["repo", "workflow"],
            }),
        );
        new.labels = [("team".to_string(), "ci".to_string())].into();
        let plan = run(vec![new], &LiveState::default(), &PlanPolicy::default());

        let [action @ Action::Create { .. }] = plan.actions.as_slice() else {
            panic!("{:?}", plan.actions);
        };
        assert_eq!(
            listed(action),
            [
                "+ labels.team: \"ci\"",
                "+ spec.Client-Secret: (sensitive)",
                "+ spec.encrypted_value: (encrypted)",
                "+ spec.extra: {a/b: plain, nested: [{encrypted_value: (encrypted)}]}",
                "+ spec.note: (sensitive)",
                "+ spec.scopes: [repo, workflow]",
                "+ spec.type: \"token\"",
            ]
        );
        let listed = serde_json::to_string(&action.changes()).unwrap();
        for secret in [blob, kms, token, "hunter2"] {
            assert!(!listed.contains(secret), "{secret} in {listed}");
        }
        assert!(listed.contains(r#""path":"/labels/team""#), "{listed}");
        assert!(listed.contains(r#""path":"/spec/extra""#), "{listed}");
    }

    #[test]
    fn a_delete_lists_the_fields_that_go_with_secrets_redacted() {
        let gone = desired(Kind::Credential, "old-token", json!({}));
        let live = owned(std::slice::from_ref(&gone));
        let blob = "AES256:b2xkLWNpcGhlcnRleHQtYmxvYi1vZi1lbm91Z2gtYnl0ZXM=";
        let token = "ghp_Zq8xW3vN7kP2mR5tY9bC4dF6gH1jL0aS3eU7";
        let row = json!({
            "labels": {"team": "ci"},
            "spec": {
                "type": "token",
                "description": "Old deploy token",
                "encrypted_value": blob,
                "note": token,
                "scopes": ["repo", "workflow"],
            },
        });
        let mut plan = run(
            Vec::new(),
            &live,
            &PlanPolicy {
                allow_empty: true,
                ..PlanPolicy::default()
            },
        );

        describe_changes(&mut plan, &[(gone.id.clone(), row)].into());

        let [action @ Action::Delete { .. }] = plan.actions.as_slice() else {
            panic!("{:?}", plan.actions);
        };
        assert_eq!(
            listed(action),
            [
                "- labels.team: \"ci\"",
                "- spec.description: \"Old deploy token\"",
                "- spec.encrypted_value: (encrypted)",
                "- spec.note: (sensitive)",
                "- spec.scopes: [repo, workflow]",
                "- spec.type: \"token\"",
            ]
        );
        let stored = serde_json::to_string(&plan).unwrap();
        assert!(
            !stored.contains(blob) && !stored.contains(token),
            "{stored}"
        );
        assert!(
            stored.contains(
                r#""op":"remove","path":"/spec/description","before":"Old deploy token""#
            ),
            "{stored}"
        );
        let read: Plan = serde_json::from_str(&stored).unwrap();
        assert_eq!(read, plan);
        assert_eq!(described_ids(&plan), [&gone.id]);
    }
}
