//! What the CLI tests that drive the built `ritmo` against one database share.
// Each test file is its own crate and uses only some of these.
#![allow(dead_code, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

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

pub fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "stdout is not JSON ({error}):\n{}\nstderr:\n{}",
            stdout(output),
            stderr(output)
        )
    })
}

pub fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

/// A config repository on `main`, written file by file and committed, with a fetch cache of
/// its own.
pub struct ConfigRepo {
    dir: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl ConfigRepo {
    pub fn new() -> ConfigRepo {
        let dir = tempfile::tempdir().expect("a temporary directory");
        git(dir.path(), &["init", "-q", "-b", "main"]);
        ConfigRepo {
            dir,
            cache: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    pub fn path(&self) -> &str {
        self.dir.path().to_str().expect("a UTF-8 temporary path")
    }

    /// The fetch cache `ritmo` is given.
    pub fn cache(&self) -> &Path {
        self.cache.path()
    }

    pub fn write(&self, file: &str, text: &str) {
        let path = self.dir.path().join(file);
        std::fs::create_dir_all(path.parent().expect("a file in a directory"))
            .expect("create the directory");
        std::fs::write(path, text).expect("write the file");
    }

    pub fn remove(&self, file: &str) {
        std::fs::remove_file(self.dir.path().join(file)).expect("remove the file");
    }

    /// Commits everything; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        git(self.dir.path(), &["add", "-A"]);
        git(self.dir.path(), &["commit", "-qm", message]);
        let out = Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(self.dir.path())
            .output()
            .expect("git runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A bootstrap file naming this repository as target `default`, with `extra` appended
    /// after `sync.interval` (indent it for `sync:` or `gitops:`).
    pub fn bootstrap(&self, extra: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("a temporary file");
        std::fs::write(
            file.path(),
            format!(
                "gitops:\n  repository:\n    url: {}\n    branch: main\n    path: /\n  sync:\n    \
                 interval: 60\n{extra}",
                self.path()
            ),
        )
        .expect("write the bootstrap file");
        file
    }

    /// [`ritmo`] as user `jane`, with this repository's fetch cache.
    pub fn ritmo(&self, args: &[&str], db: &ritmo_tests::db::TestDb) -> Output {
        command(args, &db.url)
            .env("RITMO_GITOPS_CACHE_DIR", self.cache.path())
            .env("USER", "jane")
            .output()
            .expect("ritmo runs")
    }
}

pub fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@ritmo.invalid")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@ritmo.invalid")
        .stdout(Stdio::null())
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?} failed");
}
