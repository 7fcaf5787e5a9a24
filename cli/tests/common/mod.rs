//! What the CLI tests that drive the built `ritmo` against one database share.
// Each test file is its own crate and uses only some of these.
#![allow(dead_code, clippy::expect_used)]

use std::process::{Command, Output, Stdio};

/// The example repository's master key (README: never use it for real).
pub const EXAMPLE_KEY: &str = "ritmo-example-master-key-32bytes";

/// `ritmo ARGS` against `database_url`, with no bootstrap file or configured repository from
/// the caller's environment, and no colour.
pub fn ritmo(args: &[&str], database_url: &str) -> Output {
    command(args, database_url).output().expect("ritmo runs")
}

/// The command [`ritmo`] runs, for a test that adds to its environment before running it.
pub fn command(args: &[&str], database_url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ritmo"));
    command
        .args(args)
        .env_remove("RITMO_GITOPS_REPO_URL")
        .env("DATABASE_URL", database_url)
        .env("RITMO_GITOPS_BOOTSTRAP", "")
        .env("RITMO_MASTER_ENCRYPTION_KEY", EXAMPLE_KEY)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
