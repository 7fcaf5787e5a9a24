//! Selective sync, as Argo CD's: `--only KIND/NAME,…` keeps some actions of a plan and leaves
//! the others pending. This module parses the selectors and narrows a plan to them, refusing a
//! selector that matches no action and a selection whose result would leave a reference
//! dangling. Pure: what the live rows refer to is given by the caller.
//!
//! The result is plan data (`plan::Partial`); what a partial apply records is the applier's,
//! how status reports it the store's (`PartialSync`).

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Kind, ResourceId};
use crate::plan::{Action, PendingAction, Plan};

/// Why a selection is refused. Every message says what to pass instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    #[error("`--only` names no resource: give KIND/NAME, e.g. `--only job/backend-service`")]
    Empty,
    #[error(
        "`{selector}` is not KIND/NAME: write e.g. `job/backend-service` (kinds: credential, \
         plugin, workerpool, job, webhook, environment)"
    )]
    Malformed { selector: String },
    #[error(
        "{} no action of the plan at {revision}; {}",
        describe_unmatched(unmatched),
        describe_actions(actions)
    )]
    NoMatch {
        unmatched: Vec<String>,
        revision: String,
        /// The plan's changes, as `~ job/backend-service`.
        actions: Vec<String>,
    },
    #[error(
        "applying only the selection would leave {}: add {} to `--only` (or run a plain sync)",
        describe_dangling(dangling),
        missing_list(dangling)
    )]
    Dangling { dangling: Vec<Dangling> },
}

/// A reference the selection would break.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dangling {
    /// The resource that refers (selected, or a live row the selection leaves as it is).
    pub from: ResourceId,
    pub to: ResourceId,
    /// What the plan does with `to` that the selection leaves out, or does to it.
    pub why: &'static str,
    /// The resource to add to `--only`.
    pub add: ResourceId,
}

fn describe_unmatched(unmatched: &[String]) -> String {
    let quoted: Vec<String> = unmatched.iter().map(|s| format!("`{s}`")).collect();
    match quoted.as_slice() {
        [one] => format!("`--only {}` matches", one.trim_matches('`')),
        _ => format!("{} match", quoted.join(", ")),
    }
}

fn describe_actions(actions: &[String]) -> String {
    if actions.is_empty() {
        "the plan changes nothing, so there is nothing to select".to_string()
    } else {
        format!("choose among the plan's actions: {}", actions.join(", "))
    }
}

fn describe_dangling(dangling: &[Dangling]) -> String {
    dangling
        .iter()
        .map(|d| format!("`{}` referring to `{}`, {}", d.from, d.to, d.why))
        .collect::<Vec<_>>()
        .join("; ")
}

fn missing_list(dangling: &[Dangling]) -> String {
    let missing: BTreeSet<String> = dangling.iter().map(|d| d.add.to_string()).collect();
    missing
        .into_iter()
        .map(|id| format!("`{id}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses `--only` values: each a `KIND/NAME` or a comma-separated list of them. Duplicates
/// collapse; order is kept.
pub fn parse_selectors<S: AsRef<str>>(values: &[S]) -> Result<Vec<ResourceId>, SelectionError> {
    let mut ids: Vec<ResourceId> = Vec::new();
    for value in values {
        for selector in value.as_ref().split(',') {
            let selector = selector.trim();
            if selector.is_empty() {
                continue;
            }
            let malformed = || SelectionError::Malformed {
                selector: selector.to_string(),
            };
            let (kind, name) = selector.split_once('/').ok_or_else(malformed)?;
            let kind: Kind = kind.trim().parse().map_err(|_| malformed())?;
            let name = name.trim();
            if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
                return Err(malformed());
            }
            let id = ResourceId::new(kind, name);
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    if ids.is_empty() {
        return Err(SelectionError::Empty);
    }
    Ok(ids)
}

/// `plan` narrowed to the changes of `selected`, the others recorded as pending in
/// [`Plan::partial`]. A selection of every change gives the plan back whole (a plain sync).
///
/// `live_references` holds, for the plan's updates and deletes the selection leaves out, what
/// their live rows refer to: a selected delete must not pull a resource from under them.
pub fn narrow(
    mut plan: Plan,
    selected: &[ResourceId],
    live_references: &BTreeMap<ResourceId, Vec<ResourceId>>,
) -> Result<Plan, SelectionError> {
    let changes: Vec<&Action> = plan
        .actions
        .iter()
        .filter(|action| !matches!(action, Action::PruneSkipped { .. }))
        .collect();
    let unmatched: Vec<String> = selected
        .iter()
        .filter(|id| !changes.iter().any(|action| action.id() == *id))
        .map(ToString::to_string)
        .collect();
    if !unmatched.is_empty() {
        return Err(SelectionError::NoMatch {
            unmatched,
            revision: plan.revision.to_string(),
            actions: changes
                .iter()
                .map(|action| format!("{} {}", symbol(action), action.id()))
                .collect(),
        });
    }
    let chosen: BTreeSet<&ResourceId> = selected.iter().collect();
    let dangling = dangling(&changes, &chosen, live_references);
    if !dangling.is_empty() {
        return Err(SelectionError::Dangling { dangling });
    }
    if changes.len() == chosen.len() {
        return Ok(plan);
    }
    let mut partial = crate::plan::Partial::default();
    let mut kept = Vec::with_capacity(chosen.len());
    for action in std::mem::take(&mut plan.actions) {
        match action {
            Action::PruneSkipped { .. } => {}
            action if chosen.contains(action.id()) => {
                partial.selected.push(action.id().clone());
                kept.push(action);
            }
            action => partial.pending.push(PendingAction {
                action: action.verb().to_string(),
                resource: action.id().clone(),
            }),
        }
    }
    plan.actions = kept;
    plan.partial = Some(partial);
    Ok(plan)
}

fn symbol(action: &Action) -> &'static str {
    match action {
        Action::Create { .. } => "+",
        Action::Update { .. } => "~",
        Action::Delete { .. } => "-",
        Action::PruneSkipped { .. } => "!",
    }
}

/// The references the selection would break: a selected create or update naming a resource
/// the plan creates but the selection leaves out, and a selected delete of a resource that a
/// left-out update or delete still has its live row refer to.
fn dangling(
    changes: &[&Action],
    chosen: &BTreeSet<&ResourceId>,
    live_references: &BTreeMap<ResourceId, Vec<ResourceId>>,
) -> Vec<Dangling> {
    let left_out_creates: BTreeSet<&ResourceId> = changes
        .iter()
        .filter(|action| matches!(action, Action::Create { .. }) && !chosen.contains(action.id()))
        .map(|action| action.id())
        .collect();
    let selected_deletes: BTreeSet<&ResourceId> = changes
        .iter()
        .filter(|action| matches!(action, Action::Delete { .. }) && chosen.contains(action.id()))
        .map(|action| action.id())
        .collect();
    let mut found = Vec::new();
    for action in changes.iter().filter(|action| chosen.contains(action.id())) {
        let (Action::Create { desired } | Action::Update { desired, .. }) = action else {
            continue;
        };
        let references =
            crate::manifest::spec_references(desired.id.kind, &desired.spec.to_value());
        for to in references
            .into_iter()
            .filter(|to| left_out_creates.contains(to))
        {
            found.push(Dangling {
                from: desired.id.clone(),
                add: to.clone(),
                to,
                why: "which the plan creates",
            });
        }
    }
    for action in changes
        .iter()
        .filter(|action| !chosen.contains(action.id()))
    {
        let from = action.id();
        for to in live_references.get(from).into_iter().flatten() {
            if selected_deletes.contains(to) {
                found.push(Dangling {
                    from: from.clone(),
                    to: to.clone(),
                    why: "which the selection deletes while the row still refers to it",
                    add: from.clone(),
                });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::hash::{Spec, SpecHash, content_hash};
    use crate::model::{DesiredResource, Revision, SourceLocation};
    use crate::plan::PlanBase;

    fn desired(kind: Kind, name: &str, spec: serde_json::Value) -> DesiredResource {
        let spec = Spec::from_value(&spec);
        DesiredResource {
            id: ResourceId::new(kind, name),
            labels: Default::default(),
            hash: content_hash(&Default::default(), &spec),
            spec,
            source: SourceLocation::new(format!("{}/{name}.yaml", kind.directory()), 1, 1),
        }
    }

    fn plan(actions: Vec<Action>) -> Plan {
        Plan {
            target: "default".into(),
            revision: Revision::Commit {
                branch: "main".into(),
                commit: "c0ffee".into(),
            },
            base: PlanBase::default(),
            actions,
            unchanged: 3,
            diagnostics: Vec::new(),
            approval_reason: None,
            partial: None,
        }
    }

    fn job(name: &str, credential: &str) -> DesiredResource {
        desired(
            Kind::Job,
            name,
            json!({"scm": {"type": "git", "url": "https://example.com/r.git", "credentials": credential}}),
        )
    }

    fn credential(name: &str) -> DesiredResource {
        desired(
            Kind::Credential,
            name,
            json!({"type": "token", "encrypted_value": "AES256:x"}),
        )
    }

    fn id(kind: Kind, name: &str) -> ResourceId {
        ResourceId::new(kind, name)
    }

    #[test]
    fn selectors_come_repeated_or_comma_separated_and_collapse_duplicates() {
        let ids = parse_selectors(&["job/a, plugin/b", "job/a", "Credential/c"]).unwrap();

        assert_eq!(
            ids,
            vec![
                id(Kind::Job, "a"),
                id(Kind::Plugin, "b"),
                id(Kind::Credential, "c")
            ]
        );
    }

    #[test]
    fn malformed_and_empty_selectors_say_what_to_write() {
        for bad in ["job", "nokind/a", "job/", "job/a/b"] {
            let error = parse_selectors(&[bad]).unwrap_err();
            assert!(
                matches!(error, SelectionError::Malformed { .. }),
                "{bad}: {error}"
            );
            assert!(error.to_string().contains("KIND/NAME"), "{error}");
        }
        assert_eq!(
            parse_selectors(&[" , "]).unwrap_err(),
            SelectionError::Empty
        );
    }

    #[test]
    fn narrowing_keeps_the_selected_changes_and_lists_the_rest_as_pending() {
        let whole = plan(vec![
            Action::Create {
                desired: credential("c"),
            },
            Action::Create {
                desired: job("a", "old"),
            },
            Action::Delete {
                id: id(Kind::Webhook, "w"),
                live_hash: SpecHash::from_hex("1"),
                changes: Vec::new(),
            },
            Action::PruneSkipped {
                id: id(Kind::Plugin, "kept"),
            },
        ]);

        let narrowed = narrow(
            whole,
            &[id(Kind::Webhook, "w"), id(Kind::Credential, "c")],
            &BTreeMap::new(),
        )
        .unwrap();

        let ids: Vec<String> = narrowed
            .actions
            .iter()
            .map(|a| a.id().to_string())
            .collect();
        assert_eq!(ids, ["credential/c", "webhook/w"]);
        let partial = narrowed.partial.unwrap();
        assert_eq!(partial.total(), 3);
        assert_eq!(partial.pending.len(), 1);
        assert_eq!(partial.pending[0].to_string(), "create job/a");
        assert_eq!(narrowed.unchanged, 3);
    }

    #[test]
    fn selecting_every_change_is_a_plain_sync() {
        let whole = plan(vec![Action::Create {
            desired: credential("c"),
        }]);

        let narrowed = narrow(
            whole.clone(),
            &[id(Kind::Credential, "c")],
            &BTreeMap::new(),
        )
        .unwrap();

        assert_eq!(narrowed, whole);
    }

    #[test]
    fn a_selector_matching_no_change_lists_the_plans_actions() {
        let whole = plan(vec![Action::Create {
            desired: credential("c"),
        }]);

        let error = narrow(whole, &[id(Kind::Job, "nope")], &BTreeMap::new()).unwrap_err();

        let text = error.to_string();
        assert!(
            text.contains("`--only job/nope` matches no action"),
            "{text}"
        );
        assert!(text.contains("+ credential/c"), "{text}");
    }

    #[test]
    fn a_selected_job_needing_a_credential_the_plan_creates_names_the_credential_to_add() {
        let whole = plan(vec![
            Action::Create {
                desired: credential("c"),
            },
            Action::Create {
                desired: job("a", "c"),
            },
        ]);

        let error = narrow(whole, &[id(Kind::Job, "a")], &BTreeMap::new()).unwrap_err();

        let text = error.to_string();
        assert!(
            text.contains("`job/a` referring to `credential/c`"),
            "{text}"
        );
        assert!(text.contains("add `credential/c` to `--only`"), "{text}");
    }

    #[test]
    fn a_selected_delete_still_referred_to_by_a_left_out_update_names_the_update_to_add() {
        let whole = plan(vec![
            Action::Update {
                desired: job("a", "new"),
                live_hash: SpecHash::from_hex("1"),
                drifted: false,
                changes: Vec::new(),
            },
            Action::Delete {
                id: id(Kind::Credential, "old"),
                live_hash: SpecHash::from_hex("2"),
                changes: Vec::new(),
            },
        ]);
        let live = BTreeMap::from([(id(Kind::Job, "a"), vec![id(Kind::Credential, "old")])]);

        let error = narrow(whole, &[id(Kind::Credential, "old")], &live).unwrap_err();

        assert!(
            error.to_string().contains("add `job/a` to `--only`"),
            "{error}"
        );
    }

    #[test]
    fn spec_references_follow_the_schema_and_credential_keys_of_step_configs() {
        let spec = json!({
            "scm": {"type": "git", "url": "u", "credentials": "git-cred"},
            "pipeline": {"stages": [{"name": "s", "steps": [
                {"plugin": "docker", "config": {"registry_credential": "reg", "other": "x"}}
            ]}]},
            "worker": {"pool": "big"}
        });

        let refs = crate::manifest::spec_references(Kind::Job, &spec);

        assert_eq!(
            refs,
            vec![
                id(Kind::Credential, "git-cred"),
                id(Kind::Credential, "reg"),
                id(Kind::Plugin, "docker"),
                id(Kind::WorkerPool, "big"),
            ]
        );
    }
}
