//! What a pull request's author is shown, pure: the comment (or note) body, the commit status
//! or check-run verdict, and one annotation per validation problem at its file and line.
//!
//! Posting it is a forge client's job; this module only decides the words. Everything shown
//! comes from a plan whose field diffs are already redacted (`crate::diff`) and from
//! diagnostics, which never quote a secret, so nothing here can post one.

use serde::Serialize;

use crate::diagnostic::{Diagnostic, Severity};
use crate::plan::Plan;

/// GitHub refuses comments longer than 65,536 characters; GitLab's and Gitea's limits are
/// larger. The diff is cut well before, so the summary and the errors always fit.
const MAX_DIFF_CHARS: usize = 50_000;

/// The most annotations GitHub takes in one check-run request.
pub const MAX_ANNOTATIONS: usize = 50;

/// What was planned for one target at a pull request's head commit.
#[derive(Debug, Clone, Copy)]
pub struct Preview<'a> {
    pub target: &'a str,
    /// The head commit planned.
    pub commit: &'a str,
    /// `None` when the repository could not be planned (validation errors).
    pub plan: Option<&'a Plan>,
    pub diagnostics: &'a [Diagnostic],
}

/// The verdict of a status or check run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Plannable: merging it would apply this plan.
    Success,
    /// Validation or plan errors: merging it would fail to sync.
    Failure,
}

/// A validation problem at its place in the pull request's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Annotation {
    pub path: String,
    pub line: u32,
    /// `failure` or `warning`, as GitHub's check runs name them.
    pub level: &'static str,
    pub title: String,
    pub message: String,
}

impl Preview<'_> {
    pub fn verdict(&self) -> Verdict {
        let errors = self.diagnostics.iter().any(Diagnostic::is_error);
        if errors || self.plan.is_none_or(Plan::has_errors) {
            Verdict::Failure
        } else {
            Verdict::Success
        }
    }

    /// One line for a commit status (GitHub keeps 140 characters of it).
    pub fn description(&self) -> String {
        let errors = self.diagnostics.iter().filter(|d| d.is_error()).count();
        let text = match (self.verdict(), self.plan) {
            (Verdict::Failure, _) => format!(
                "{errors} error{}: merging would not sync",
                if errors == 1 { "" } else { "s" }
            ),
            (Verdict::Success, Some(plan)) => plan.summary().to_string(),
            (Verdict::Success, None) => "planned".to_string(),
        };
        text.chars().take(140).collect()
    }

    /// The status context or check-run name: one per target, so each target's preview is
    /// kept apart and a later push replaces it.
    pub fn context(&self) -> String {
        format!("ritmo-gitops/{}", self.target)
    }

    /// The hidden first line of the comment, by which a later push finds and edits it.
    pub fn marker(&self) -> String {
        marker(self.target)
    }

    /// The comment (GitHub) or note (GitLab, Gitea) body, in Markdown.
    pub fn comment(&self) -> String {
        let mut body = format!("{}\n", self.marker());
        let short = self.commit.get(..12).unwrap_or(self.commit);
        let verdict = match self.verdict() {
            Verdict::Success => "✅",
            Verdict::Failure => "❌",
        };
        body.push_str(&format!(
            "### {verdict} Ritmo GitOps plan for `{}` at `{short}`\n\n",
            self.target
        ));
        match self.plan {
            Some(plan) => {
                body.push_str(&format!("**{}**\n\n", plan.summary()));
                if let Some(reason) = &plan.approval_reason {
                    body.push_str(&format!("Needs approval after merge: {reason}.\n\n"));
                }
                if plan.actions.is_empty() {
                    body.push_str("No changes: the database already matches this commit.\n\n");
                } else {
                    body.push_str(&fenced("diff", &diff_text(plan)));
                }
            }
            None => body.push_str("**No plan**: fix the errors below first.\n\n"),
        }
        let shown: Vec<&Diagnostic> = self.diagnostics.iter().collect();
        let errors = shown.iter().filter(|d| d.is_error()).count();
        if !shown.is_empty() {
            body.push_str(&format!(
                "#### {errors} error{}, {} warning{}\n\n",
                if errors == 1 { "" } else { "s" },
                shown.len() - errors,
                if shown.len() - errors == 1 { "" } else { "s" },
            ));
            for diagnostic in shown {
                body.push_str(&format!("- {}\n", inline_code(&diagnostic.to_string())));
            }
            body.push('\n');
        }
        body.push_str(&format!(
            "<sub>A preview: nothing is applied until the pull request is merged. Reproduce with \
             `ritmo gitops plan --target {} --commit {}`.</sub>\n",
            self.target, self.commit
        ));
        body
    }

    /// Each diagnostic with a place in a file, as an annotation (at most [`MAX_ANNOTATIONS`]).
    pub fn annotations(&self) -> Vec<Annotation> {
        self.diagnostics
            .iter()
            .filter(|d| !d.path.is_empty())
            .take(MAX_ANNOTATIONS)
            .map(|d| Annotation {
                path: d.path.clone(),
                line: d.line.max(1),
                level: match d.severity {
                    Severity::Error => "failure",
                    Severity::Warning => "warning",
                },
                title: format!("{}[{}]", d.severity, d.code),
                message: d.message.clone(),
            })
            .collect()
    }
}

/// The hidden marker of `target`'s comment.
pub fn marker(target: &str) -> String {
    format!("<!-- ritmo-gitops-preview target={target} -->")
}

/// The plan as the CLI shows it, in `diff` syntax so forges colour adds and removes.
fn diff_text(plan: &Plan) -> String {
    let mut text = String::new();
    for action in &plan.actions {
        let line = match action.path() {
            Some(path) => format!("{action}  ({path})\n"),
            None => format!("{action}\n"),
        };
        text.push_str(&line);
        for line in action.change_lines() {
            text.push_str(&format!("    {}\n", line.text));
        }
        if text.len() > MAX_DIFF_CHARS {
            text.push_str("… (cut here: the rest is in `ritmo gitops plan --commit`)\n");
            break;
        }
    }
    text
}

/// `text` in a fenced code block whose fence is longer than any run of backticks inside, so
/// no value from the repository can close it and write Markdown of its own.
fn fenced(language: &str, text: &str) -> String {
    let fence = "`".repeat(longest_backtick_run(text).max(2) + 1);
    format!("{fence}{language}\n{text}{fence}\n\n")
}

fn inline_code(text: &str) -> String {
    let fence = "`".repeat(longest_backtick_run(text) + 1);
    format!("{fence} {text} {fence}")
}

fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::diagnostic::Code;
    use crate::diff;
    use crate::diff::{Change, Op};
    use crate::hash::{Spec, SpecHash};
    use crate::model::{DesiredResource, Kind, ResourceId, Revision, SourceLocation};
    use crate::plan::{Action, PlanBase};

    fn update(description_after: &str) -> Plan {
        let spec = Spec::from_value(&json!({"description": description_after}));
        Plan {
            target: "default".into(),
            revision: Revision::Commit {
                branch: "main".into(),
                commit: "ec26c3e57ca3a959ca5aad62de7213c562f8c821".into(),
            },
            base: PlanBase::default(),
            actions: vec![Action::Update {
                desired: DesiredResource {
                    id: ResourceId::new(Kind::Job, "backend-service"),
                    labels: BTreeMap::new(),
                    hash: SpecHash::from_hex("00"),
                    spec,
                    source: SourceLocation::new("jobs/backend-service.yaml", 1, 1),
                },
                live_hash: SpecHash::from_hex("11"),
                drifted: false,
                changes: vec![
                    Change {
                        op: Op::Replace,
                        path: "/spec/description".into(),
                        before: Some(json!("Backend microservice")),
                        after: Some(json!(description_after)),
                    },
                    Change {
                        op: Op::Replace,
                        path: "/spec/encrypted_value".into(),
                        before: Some(json!(diff::ENCRYPTED)),
                        after: Some(json!(diff::ENCRYPTED)),
                    },
                ],
            }],
            unchanged: 3,
            diagnostics: Vec::new(),
            approval_reason: None,
            partial: None,
        }
    }

    #[test]
    fn a_plannable_commit_succeeds_with_its_summary_and_field_diff() {
        let plan = update("Backend service");
        let preview = Preview {
            target: "default",
            commit: "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
            plan: Some(&plan),
            diagnostics: &[],
        };

        let comment = preview.comment();

        assert_eq!(preview.verdict(), Verdict::Success);
        assert!(comment.starts_with("<!-- ritmo-gitops-preview target=default -->\n"));
        assert!(comment.contains("at `ec26c3e57ca3`"), "{comment}");
        assert!(comment.contains("**Plan: 0 to create, 1 to update, 0 to delete, 3 unchanged.**"));
        assert!(comment.contains("```diff\n~ job/backend-service  (jobs/backend-service.yaml)\n"));
        assert!(
            comment.contains(
                "    ~ spec.description: \"Backend microservice\" → \"Backend service\"\n"
            )
        );
        assert!(comment.contains("    ~ spec.encrypted_value: (changed, encrypted)\n"));
        assert_eq!(
            preview.description(),
            "Plan: 0 to create, 1 to update, 0 to delete, 3 unchanged."
        );
        assert_eq!(preview.context(), "ritmo-gitops/default");
    }

    #[test]
    fn errors_fail_the_check_and_become_annotations_at_their_line() {
        let at = SourceLocation::new("jobs/broken.yaml", 7, 3);
        let diagnostics = [Diagnostic::new(
            Code::E300,
            &at,
            "`credentials` names `nope`, which does not exist",
        )];
        let preview = Preview {
            target: "default",
            commit: "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
            plan: None,
            diagnostics: &diagnostics,
        };

        let annotations = preview.annotations();
        let comment = preview.comment();

        assert_eq!(preview.verdict(), Verdict::Failure);
        assert_eq!(preview.description(), "1 error: merging would not sync");
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations[0].path, "jobs/broken.yaml");
        assert_eq!(annotations[0].line, 7);
        assert_eq!(annotations[0].level, "failure");
        assert!(comment.contains("**No plan**"), "{comment}");
        assert!(
            comment.contains("jobs/broken.yaml:7:3: error[E300]"),
            "{comment}"
        );
    }

    #[test]
    fn a_value_holding_backticks_cannot_break_out_of_the_diff_block() {
        let plan = update("```\n# injected heading\n```");
        let preview = Preview {
            target: "default",
            commit: "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
            plan: Some(&plan),
            diagnostics: &[],
        };

        let comment = preview.comment();

        assert!(comment.contains("````diff\n"), "{comment}");
        assert!(!comment.contains("\n# injected heading"), "{comment}");
    }
}
