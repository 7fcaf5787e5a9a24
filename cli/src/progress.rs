//! Progress of a validate or sync on a terminal: the stages `ritmo::progress` reports, as an
//! indicatif spinner on stderr. Only when a person watches: stderr is a terminal, the output
//! is text, and neither `NO_COLOR` nor `CI` is set; and only once the work has run for a
//! second (`RITMO_PROGRESS_AFTER_MS`), so quick commands print nothing extra.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ritmo::progress::{Progress, Stage};

use crate::args::Output;
use crate::render::count;

const DEFAULT_DELAY: Duration = Duration::from_secs(1);

struct Spinner(ProgressBar);

impl Progress for Spinner {
    fn stage(&self, stage: Stage) {
        self.0.set_message(describe(stage));
    }
}

fn describe(stage: Stage) -> String {
    match stage {
        Stage::Reading => "reading the repository".into(),
        Stage::Parsing { files } => format!("parsing {}", count(files, "file", "files")),
        Stage::Validating { files } => format!("validating {}", count(files, "file", "files")),
        Stage::Planning { resources } => {
            format!("planning {}", count(resources, "resource", "resources"))
        }
        Stage::Applying { changes } => format!("applying {}", count(changes, "change", "changes")),
    }
}

/// Whether progress may be drawn at all.
fn wanted(output: Output) -> bool {
    output == Output::Text
        && std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none()
        && std::env::var_os("CI").is_none()
}

/// The spinner while it runs: dropping it takes it off the screen, so the result (or an
/// error, whichever way the command leaves) prints on a clean line.
pub struct Shown(Option<ProgressBar>);

impl Drop for Shown {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// Starts reporting, hidden until the delay has passed; shows nothing when nobody watches.
pub fn start(output: Output) -> Shown {
    if !wanted(output) {
        return Shown(None);
    }
    let delay = std::env::var("RITMO_PROGRESS_AFTER_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(DEFAULT_DELAY, Duration::from_millis);
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    if !ritmo::progress::set_reporter(Box::new(Spinner(bar.clone()))) {
        return Shown(None);
    }
    let shown = bar.clone();
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        if !shown.is_finished() {
            shown.set_draw_target(ProgressDrawTarget::stderr());
            shown.enable_steady_tick(Duration::from_millis(120));
        }
    });
    Shown(Some(bar))
}
