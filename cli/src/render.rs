//! How results look: Terraform-style text on a terminal (coloured only there), JSON with `-o json`.

use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

// annotate-snippets renders rustc's own diagnostics: the layout Rust users read daily, no
// runtime of its own (unlike miette's fancy handler), and plain text that snapshots well.
use annotate_snippets::{AnnotationKind, Group, Level, Origin, Renderer, Snippet};
use ritmo::diagnostic::{Diagnostic, Severity};
use ritmo::manifest::{FileContent, SourceFile};
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

/// The text of the files diagnostics point into, for their snippets.
#[derive(Debug, Default)]
pub struct Sources {
    texts: HashMap<String, String>,
}

impl Sources {
    pub fn from_files(files: &[SourceFile]) -> Self {
        let texts = files
            .iter()
            .filter_map(|file| match &file.content {
                FileContent::Bytes(bytes) => std::str::from_utf8(bytes)
                    .ok()
                    .map(|text| (file.path.clone(), text.to_string())),
                _ => None,
            })
            .collect();
        Self { texts }
    }

    pub fn get(&self, path: &str) -> Option<&str> {
        self.texts.get(path).map(String::as_str)
    }
}

/// Every diagnostic the way rustc prints its own: header, `--> path:line:column`, the line
/// with a caret under the token, and a `help:` line. Without the file's text (a diagnostic
/// from the planner, a symlink) the snippet is left out.
pub fn diagnostics_text(
    out: &mut impl Write,
    style: Style,
    diagnostics: &[Diagnostic],
    sources: &Sources,
) -> std::io::Result<()> {
    let renderer = if style.colour {
        Renderer::styled()
    } else {
        Renderer::plain()
    };
    // A line one diagnostic calls a secret is never shown, whichever diagnostic shows it.
    let secret_lines: HashSet<(&str, u32)> = diagnostics
        .iter()
        .filter(|d| d.code.points_at_secret())
        .map(|d| (d.path.as_str(), d.line))
        .collect();
    for diagnostic in diagnostics {
        let rendered = render_one(&renderer, diagnostic, sources, &secret_lines);
        writeln!(out, "{rendered}\n")?;
    }
    Ok(())
}

fn render_one(
    renderer: &Renderer,
    diagnostic: &Diagnostic,
    sources: &Sources,
    secret_lines: &HashSet<(&str, u32)>,
) -> String {
    let level = match diagnostic.severity {
        Severity::Error => Level::ERROR,
        Severity::Warning => Level::WARNING,
    };
    let help = diagnostic.help();
    let title = level
        .primary_title(diagnostic.message.as_str())
        .id(diagnostic.code.as_str());
    let line_text = (diagnostic.line > 0)
        .then(|| sources.get(&diagnostic.path))
        .flatten()
        .and_then(|text| text.lines().nth(diagnostic.line as usize - 1));
    let group = match line_text {
        _ if diagnostic.path.is_empty() => Group::with_title(title),
        Some(line_text) => {
            let secret = secret_lines.contains(&(diagnostic.path.as_str(), diagnostic.line))
                || ritmo::validate::detect_secret(line_text).is_some();
            let shown = if secret {
                redact(line_text, diagnostic.column as usize)
            } else {
                line_text.to_string()
            };
            let column = diagnostic.column.max(1) as usize;
            let length = if !secret
                && diagnostic.end_line == diagnostic.line
                && diagnostic.end_column > diagnostic.column
            {
                (diagnostic.end_column - diagnostic.column) as usize
            } else {
                ritmo::diagnostic::token_length(&shown, column).max(1)
            };
            let span = char_span(&shown, column, length);
            Group::with_title(title).element(
                Snippet::source(shown)
                    .line_start(diagnostic.line as usize)
                    .path(diagnostic.path.as_str())
                    .annotation(AnnotationKind::Primary.span(span)),
            )
        }
        None => Group::with_title(title).element(
            Origin::path(diagnostic.path.as_str())
                .line(diagnostic.line.max(1) as usize)
                .char_column(diagnostic.column.max(1) as usize),
        ),
    };
    renderer.render(&[group.element(Level::HELP.message(help.as_str()))])
}

/// The byte range of `length` characters from `column` (1-based, in characters) of `line`;
/// past its end, the line's end (where a missing token belongs).
fn char_span(line: &str, column: usize, length: usize) -> std::ops::Range<usize> {
    let byte_at = |chars: usize| {
        line.char_indices()
            .nth(chars)
            .map_or(line.len(), |(byte, _)| byte)
    };
    let start = byte_at(column - 1);
    let end = byte_at(column - 1 + length).max(start);
    start..end
}

/// `line` with its value replaced: from the value after `key: `, or from `column` when the
/// line is no mapping entry.
fn redact(line: &str, column: usize) -> String {
    let indent = line.len() - line.trim_start().len();
    let value_start = line[indent..]
        .find(": ")
        .map(|at| indent + at + 2)
        .or_else(|| {
            line.char_indices()
                .nth(column.saturating_sub(1))
                .map(|(b, _)| b)
        })
        .unwrap_or(indent);
    format!("{}<redacted>", &line[..value_start])
}

/// `1 error`, `2 errors`: every count the CLI prints goes through here.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// An error in the output format asked for: `error: …` on stderr as text; with `-o json`, a
/// JSON object `{"error": …}` on stdout, where a script reads everything else.
pub fn error(output: crate::args::Output, message: &str) {
    match output {
        crate::args::Output::Json => {
            // A closed stdout leaves nowhere to report to.
            let _ = json_line(&mut std::io::stdout().lock(), &json!({ "error": message }));
        }
        crate::args::Output::Text => eprintln!("error: {message}"),
    }
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

/// A plan's listing, rendered on a thread of its own while the sync goes on: the apply mostly
/// waits on the database, and listing 10,000 creates' fields takes about a tenth of a full
/// sync (docs/benchmarks.md).
#[derive(Default)]
pub struct PlanListing(Mutex<Option<Rendering>>);

struct Rendering {
    plan: Arc<Plan>,
    text: JoinHandle<Vec<u8>>,
}

impl PlanListing {
    /// Starts rendering `plan` in the background.
    pub fn start(&self, style: Style, plan: &Arc<Plan>) {
        let rendering = Arc::clone(plan);
        let handle = std::thread::spawn(move || {
            let mut text = Vec::new();
            // Writing into memory cannot fail.
            let _ = plan_text(&mut text, style, &rendering);
            text
        });
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(Rendering {
                plan: Arc::clone(plan),
                text: handle,
            });
        }
    }

    /// Writes `plan`'s listing: the one rendered in the background when it was this plan
    /// (a replan after a stale apply was not), else rendered now.
    pub fn write(
        &self,
        out: &mut impl Write,
        style: Style,
        plan: &Arc<Plan>,
    ) -> std::io::Result<()> {
        let started = self.0.lock().ok().and_then(|mut slot| slot.take());
        if let Some(rendering) = started
            && Arc::ptr_eq(&rendering.plan, plan)
            && let Ok(text) = rendering.text.join()
        {
            return out.write_all(&text);
        }
        plan_text(out, style, plan)
    }
}

/// The field diff of one action, indented under its line.
pub fn changes_text(out: &mut impl Write, style: Style, action: &Action) -> std::io::Result<()> {
    for line in action.change_lines() {
        let colour = match line.marker {
            '+' => "32",
            '-' => "31",
            '~' => "33",
            '>' => "36",
            _ => "0",
        };
        writeln!(out, "      {}", style.paint(colour, &line.text))?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

    use super::*;
    use ritmo::plan::PlanBase;

    const PLAIN: Style = Style {
        colour: false,
        diff: true,
    };

    fn plan_of(target: &str) -> Arc<Plan> {
        let nothing = ritmo::model::LiveState::default();
        let policy = ritmo::plan::PlanPolicy::default();
        let revision = Revision::Worktree;
        Arc::new(ritmo::plan::plan(
            target,
            revision,
            PlanBase::default(),
            Vec::new(),
            &nothing,
            &policy,
        ))
    }

    fn written(listing: &PlanListing, plan: &Arc<Plan>) -> String {
        let mut out = Vec::new();
        listing.write(&mut out, PLAIN, plan).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_listing_started_for_one_plan_is_not_written_for_another() {
        let (first, replanned) = (plan_of("first"), plan_of("replanned"));
        let listing = PlanListing::default();

        listing.start(PLAIN, &first);

        assert!(written(&listing, &replanned).starts_with("Target replanned at worktree"));
        listing.start(PLAIN, &first);
        assert!(written(&listing, &first).starts_with("Target first at worktree"));
    }
}
