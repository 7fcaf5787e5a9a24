//! How results look: Terraform-style text on a terminal (coloured only there), JSON with `-o json`.

use std::io::{IsTerminal, Write};

use ritmo::diagnostic::{Diagnostic, Severity};
use ritmo::diff;
use ritmo::model::Revision;
use ritmo::plan::{Action, Plan, Summary};
use serde::Serialize;
use serde_json::{Value, json};

/// Colours for stdout, off when it is not a terminal or `NO_COLOR` is set.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    colour: bool,
    /// Field diffs under each resource (`--no-diff`: the one-line form).
    diff: bool,
}

impl Style {
    pub fn detect() -> Self {
        Self {
            colour: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            diff: true,
        }
    }

    /// This style without field diffs when `no_diff`.
    pub fn with_diff(self, diff: bool) -> Self {
        Self { diff, ..self }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

pub fn diagnostics_text(
    out: &mut impl Write,
    style: Style,
    diagnostics: &[Diagnostic],
) -> std::io::Result<()> {
    for diagnostic in diagnostics {
        let line = diagnostic.to_string();
        let painted = match diagnostic.severity {
            Severity::Error => style.paint("31", &line),
            Severity::Warning => style.paint("33", &line),
        };
        writeln!(out, "{painted}")?;
    }
    Ok(())
}

pub fn diagnostic_counts(diagnostics: &[Diagnostic]) -> (usize, usize) {
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    (errors, diagnostics.len() - errors)
}

pub fn plan_text(out: &mut impl Write, style: Style, plan: &Plan) -> std::io::Result<()> {
    let base = plan.base.commit.as_deref().unwrap_or("nothing applied yet");
    writeln!(
        out,
        "Target {} at {} (last applied: {base})",
        plan.target, plan.revision
    )?;
    if plan.actions.is_empty() {
        writeln!(out, "No changes. The database matches the repository.")?;
    }
    for action in &plan.actions {
        let colour = match action {
            Action::Create { .. } => "32",
            Action::Update { .. } => "33",
            Action::Delete { .. } => "31",
            Action::PruneSkipped { .. } => "35",
        };
        let path = action
            .path()
            .map(|p| format!("  ({p})"))
            .unwrap_or_default();
        writeln!(out, "  {}{path}", style.paint(colour, &action.to_string()))?;
        if style.diff {
            changes_text(out, style, action)?;
        }
    }
    writeln!(out, "{}", plan.summary())?;
    if let Some(reason) = &plan.approval_reason {
        writeln!(
            out,
            "{}",
            style.paint("33", &format!("Needs approval: {reason}."))
        )?;
    }
    Ok(())
}

/// The field diff of one action, indented under its line.
pub fn changes_text(out: &mut impl Write, style: Style, action: &Action) -> std::io::Result<()> {
    for change in action.changes().iter() {
        for line in diff::lines(change) {
            let colour = match line.marker {
                '+' => "32",
                '-' => "31",
                '~' => "33",
                '>' => "36",
                _ => "0",
            };
            writeln!(out, "      {}", style.paint(colour, &line.text))?;
        }
    }
    Ok(())
}

/// `ritmo gitops diff`: each changed resource and its field diff, nothing else.
pub fn diff_text(out: &mut impl Write, style: Style, plan: &Plan) -> std::io::Result<()> {
    for action in &plan.actions {
        let path = action
            .path()
            .map(|p| format!("  ({p})"))
            .unwrap_or_default();
        writeln!(out, "{}{path}", style.paint("1", &action.to_string()))?;
        changes_text(out, style, action)?;
    }
    Ok(())
}

/// The JSON shape of `plan` and `sync` output.
pub fn plan_json(
    revision: Option<&Revision>,
    plan: Option<&Plan>,
    diagnostics: &[Diagnostic],
    extra: Value,
) -> Value {
    let summary = plan.map(Plan::summary).unwrap_or_default();
    let actions: Vec<Value> = plan
        .map(|plan| plan.actions.iter().map(action_json).collect())
        .unwrap_or_default();
    let mut value = json!({
        "revision": revision.map(ToString::to_string),
        "commit": revision.and_then(Revision::commit),
        "summary": summary_json(summary),
        "actions": actions,
        "diagnostics": diagnostics,
        "approval_reason": plan.and_then(|p| p.approval_reason.clone()),
    });
    if let (Value::Object(map), Value::Object(more)) = (&mut value, extra) {
        map.extend(more);
    }
    value
}

fn summary_json(summary: Summary) -> Value {
    json!({
        "create": summary.create,
        "update": summary.update,
        "delete": summary.delete,
        "unchanged": summary.unchanged,
    })
}

fn action_json(action: &Action) -> Value {
    json!({
        "action": action.verb(),
        "kind": action.id().kind.as_str(),
        "name": action.id().name,
        "path": action.path(),
        "changes": action.changes(),
    })
}

pub fn json_line(out: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    writeln!(out, "{text}")
}
