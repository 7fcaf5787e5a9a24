//! How far long work is, for whoever shows it. The core reports stages through [`report`];
//! a front end that wants to show them (the CLI's progress bar) installs a [`Progress`] once
//! with [`set_reporter`], the way a logger is installed. Without one, reports go nowhere:
//! the Lambda functions and tests install none.

use std::sync::OnceLock;

/// A stage of a validate or sync, with the count it works through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading the repository (fetch, commit or working tree).
    Reading,
    /// Parsing this many resource files.
    Parsing { files: usize },
    /// Checking schema, references and secrets of this many files.
    Validating { files: usize },
    /// Comparing this many resources with the database.
    Planning { resources: usize },
    /// Writing this many changes in one transaction.
    Applying { changes: usize },
}

/// Receives the stages; called from any thread, so it must be cheap and never block.
pub trait Progress: Send + Sync {
    fn stage(&self, stage: Stage);
}

static REPORTER: OnceLock<Box<dyn Progress>> = OnceLock::new();

/// Installs the process's reporter; false if one was installed already (the first stays).
pub fn set_reporter(reporter: Box<dyn Progress>) -> bool {
    REPORTER.set(reporter).is_ok()
}

/// Reports `stage` to the installed reporter, if any.
pub fn report(stage: Stage) {
    if let Some(reporter) = REPORTER.get() {
        reporter.stage(stage);
    }
}
