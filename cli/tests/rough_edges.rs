//! Issue 25: diagnostics that read like rustc's, progress on a terminal, and the rough edges a
//! newcomer hit. Each test runs the built `ritmo` as a person would, and fails if its edge
//! comes back.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;

use common::{assert_exit, git, json, stderr, stdout};
use ritmo_tests::db::TestDb;
use ritmo_tests::git_http::ServedRepo;

const EXAMPLE_KEY: &str = "ritmo-example-master-key-32bytes";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example_dir() -> PathBuf {
    workspace_root().join("examples/ritmo-config")
}

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ritmo"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("RITMO_GITOPS_REPO_URL")
        .env_remove("AWS_ENDPOINT_URL")
        .env("RITMO_GITOPS_BOOTSTRAP", "")
        .env("RITMO_MASTER_ENCRYPTION_KEY", EXAMPLE_KEY)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

fn ritmo(args: &[&str]) -> Output {
    command(args).output().expect("ritmo runs")
}

fn ritmo_db(args: &[&str], db: &TestDb) -> Output {
    command(args)
        .env("DATABASE_URL", &db.url)
        .output()
        .expect("ritmo runs")
}

fn repo_from(fixture: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ritmo_tests::copy_dir(fixture, dir.path());
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-qm", "config"]);
    dir
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

// --- diagnostics ---

/// Every case of tests/fixtures/diagnostics, validated and rendered as a person sees it.
#[test]
fn broken_files_render_like_rustc_with_line_caret_and_help() {
    let cases = workspace_root().join("tests/fixtures/diagnostics");
    let mut names: Vec<String> = std::fs::read_dir(&cases)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 12, "{names:?}");

    for name in &names {
        let output = ritmo(&[
            "gitops",
            "validate",
            "--repo-path",
            path_str(&cases.join(name)),
        ]);

        assert_exit(&output, 1);
        insta::assert_snapshot!(name.as_str(), stdout(&output));
    }
}

#[test]
fn secrets_are_never_repeated_in_a_snippet() {
    let cases = workspace_root().join("tests/fixtures/diagnostics");
    for (case, secret) in [
        ("plaintext-secret", "correct horse battery staple"),
        ("leaked-token", "ghp_a8Kd93JfQ2mZx7Lp0WcR5tYb1NvE6hUg4sDq"),
    ] {
        let path = cases.join(case);
        let text = ritmo(&["gitops", "validate", "--repo-path", path_str(&path)]);
        let json_out = ritmo(&[
            "gitops",
            "validate",
            "--repo-path",
            path_str(&path),
            "-o",
            "json",
        ]);

        for output in [&text, &json_out] {
            assert!(!stdout(output).contains(secret), "{}", stdout(output));
            assert!(!stderr(output).contains(secret), "{}", stderr(output));
        }
        assert!(stdout(&text).contains("<redacted>"), "{}", stdout(&text));
    }
}

#[test]
fn json_diagnostics_keep_their_fields_and_add_the_span_end() {
    let path = workspace_root().join("tests/fixtures/diagnostics/unknown-field");

    let output = ritmo(&[
        "gitops",
        "validate",
        "--repo-path",
        path_str(&path),
        "-o",
        "json",
    ]);

    assert_exit(&output, 1);
    assert_eq!(
        json(&output)["diagnostics"][0],
        serde_json::json!({
            "severity": "error", "code": "E204", "path": "jobs/build.yaml",
            "line": 7, "column": 3, "end_line": 7, "end_column": 9,
            "message": "unknown field `spec.timout` (did you mean `timeout`?)",
        })
    );
}

#[tokio::test]
async fn sync_shows_the_same_snippets_for_the_commit_it_read() {
    let db = TestDb::new().await;
    let repo = repo_from(&workspace_root().join("tests/fixtures/diagnostics/unknown-field"));

    let text = ritmo_db(
        &["gitops", "sync", "--repo-path", path_str(repo.path())],
        &db,
    );
    let as_json = ritmo_db(
        &[
            "gitops",
            "sync",
            "--repo-path",
            path_str(repo.path()),
            "-o",
            "json",
        ],
        &db,
    );

    assert_exit(&text, 1);
    assert!(
        stdout(&text).contains("7 |   timout: 30\n  |   ^^^^^^\n"),
        "{}",
        stdout(&text)
    );
    assert_eq!(json(&as_json)["diagnostics"][0]["end_column"], 9);
}

/// A remote repository's files are read again from the cache its fetch filled, at the commit
/// the plan read: the snippet is there although nothing of the repository is on local disk.
#[tokio::test]
async fn a_sync_over_http_shows_snippets_from_the_commit_it_fetched() {
    let db = TestDb::new().await;
    let served = ServedRepo::new();
    let fixture = workspace_root().join("tests/fixtures/diagnostics/unknown-field/jobs/build.yaml");
    served
        .repo
        .write("jobs/build.yaml", std::fs::read(fixture).unwrap());
    served.push("a job with a misspelt field");
    let cache = tempfile::tempdir().unwrap();

    let output = command(&["gitops", "sync", "--repo", &served.url()])
        .env("DATABASE_URL", &db.url)
        .env("RITMO_GITOPS_CACHE_DIR", cache.path())
        .output()
        .unwrap();

    assert_exit(&output, 1);
    assert!(
        stdout(&output).contains("7 |   timout: 30\n  |   ^^^^^^\n"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn an_unclosed_bracket_is_reported_on_the_line_it_opens() {
    let path = workspace_root().join("tests/fixtures/diagnostics/unclosed-bracket");

    let output = ritmo(&[
        "gitops",
        "validate",
        "--repo-path",
        path_str(&path),
        "-o",
        "json",
    ]);

    let diagnostic = &json(&output)["diagnostics"][0];
    assert_eq!(
        (&diagnostic["line"], &diagnostic["column"]),
        (&6.into(), &13.into())
    );
}

// --- progress ---

/// `script` gives the command a terminal; the delay is set to 0 so the test does not depend
/// on how long the work takes.
fn on_a_terminal(args: &str, extra_env: &[(&str, &str)]) -> String {
    let mut command = Command::new("script");
    command
        .args([
            "-qec",
            &format!("{} {args}", env!("CARGO_BIN_EXE_ritmo")),
            "/dev/null",
        ])
        .env_remove("CI")
        .env_remove("NO_COLOR")
        .env("RITMO_GITOPS_BOOTSTRAP", "")
        .env("RITMO_MASTER_ENCRYPTION_KEY", EXAMPLE_KEY)
        .env("RITMO_PROGRESS_AFTER_MS", "0")
        .stdin(Stdio::null());
    for (name, value) in extra_env {
        command.env(name, value);
    }
    let output = command.output().expect("script runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn validate_on_a_terminal_shows_stages_and_a_file_count_and_nowhere_else() {
    let repo = path_str(&example_dir()).to_string();
    let args = format!("gitops validate --repo-path {repo} --worktree");

    let terminal = on_a_terminal(&args, &[]);
    let ci = on_a_terminal(&args, &[("CI", "true")]);
    let no_color = on_a_terminal(&args, &[("NO_COLOR", "1")]);
    let json_out = on_a_terminal(&format!("{args} -o json"), &[]);
    let piped = command(&["gitops", "validate", "--repo-path", &repo, "--worktree"])
        .env_remove("NO_COLOR")
        .env_remove("CI")
        .env("RITMO_PROGRESS_AFTER_MS", "0")
        .output()
        .unwrap();

    assert!(terminal.contains("parsing "), "{terminal}");
    assert!(terminal.contains(" files"), "{terminal}");
    for quiet in [&ci, &no_color, &json_out, &stderr(&piped)] {
        assert!(!quiet.contains("parsing "), "{quiet}");
    }
}

#[tokio::test]
async fn sync_on_a_terminal_shows_its_stages() {
    let db = TestDb::new().await;
    let repo = repo_from(&example_dir());

    let terminal = on_a_terminal(
        &format!("gitops sync --repo-path {}", path_str(repo.path())),
        &[("DATABASE_URL", &db.url)],
    );

    assert!(terminal.contains("planning "), "{terminal}");
    assert!(terminal.contains("applying "), "{terminal}");
}

// --- the rough edges ---

#[test]
fn validate_without_resource_files_is_an_error_naming_the_directories() {
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("README.md"), "not a config repo").unwrap();

    let text = ritmo(&["gitops", "validate", "--repo-path", path_str(empty.path())]);
    let as_json = ritmo(&[
        "gitops",
        "validate",
        "--repo-path",
        path_str(empty.path()),
        "-o",
        "json",
    ]);

    assert_exit(&text, 2);
    for directory in ["jobs/", "credentials/", "plugins/", "webhooks/", "workers/"] {
        assert!(stderr(&text).contains(directory), "{}", stderr(&text));
    }
    assert_exit(&as_json, 2);
    assert!(
        json(&as_json)["error"]
            .as_str()
            .unwrap()
            .contains("no resource files")
    );
}

#[test]
fn validate_of_a_commit_counts_the_uncommitted_files_it_did_not_check() {
    let repo = repo_from(&example_dir());
    let jobs = repo.path().join("jobs");
    let first = std::fs::read_dir(&jobs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&first).unwrap();
    std::fs::write(&first, format!("{text}\n# edited\n")).unwrap();
    std::fs::write(jobs.join("new.yaml"), "kind: Job\n").unwrap();
    std::fs::write(
        repo.path().join("notes.txt"),
        "outside the config directories",
    )
    .unwrap();

    let output = ritmo(&["gitops", "validate", "--repo-path", path_str(repo.path())]);
    let as_json = ritmo(&[
        "gitops",
        "validate",
        "--repo-path",
        path_str(repo.path()),
        "-o",
        "json",
    ]);
    let worktree = ritmo(&[
        "gitops",
        "validate",
        "--repo-path",
        path_str(repo.path()),
        "--worktree",
    ]);

    assert!(
        stdout(&output).contains("2 files under the config directories have uncommitted changes"),
        "{}",
        stdout(&output)
    );
    assert!(
        stdout(&output).contains("--worktree"),
        "{}",
        stdout(&output)
    );
    assert_eq!(json(&as_json)["uncommitted_files"], 2);
    assert!(
        !stdout(&worktree).contains("uncommitted"),
        "{}",
        stdout(&worktree)
    );
}

#[test]
fn a_malformed_sync_id_is_a_usage_error() {
    let text = ritmo(&["gitops", "approve", "nonsense"]);
    let as_json = ritmo(&["gitops", "approve", "nonsense", "-o", "json"]);

    assert_exit(&text, 2);
    assert!(
        stderr(&text).contains("`nonsense` is not a sync run id"),
        "{}",
        stderr(&text)
    );
    assert_exit(&as_json, 2);
    assert!(
        json(&as_json)["error"]
            .as_str()
            .unwrap()
            .contains("nonsense")
    );
}

#[tokio::test]
async fn getting_a_resource_that_does_not_exist_exits_1_with_a_json_error_under_o_json() {
    let db = TestDb::new().await;

    let text = ritmo_db(&["get", "job", "nope"], &db);
    let as_json = ritmo_db(&["get", "job", "nope", "-o", "json"], &db);

    assert_exit(&text, 1);
    assert!(
        stderr(&text).contains("no job named `nope`"),
        "{}",
        stderr(&text)
    );
    assert_exit(&as_json, 1);
    assert_eq!(json(&as_json)["error"], "no job named `nope`");
}

#[test]
fn errors_are_json_under_o_json() {
    let output = ritmo(&["gitops", "validate", "-o", "json"]);

    assert_exit(&output, 2);
    assert!(
        json(&output)["error"]
            .as_str()
            .unwrap()
            .contains("no repository to read")
    );
    assert_eq!(stderr(&output), "");
}

#[test]
fn argument_errors_are_json_under_o_json_too() {
    let missing = ritmo(&["gitops", "approve", "-o", "json"]);
    let unknown = ritmo(&["gitops", "validate", "--no-such-flag", "--output=json"]);
    let text = ritmo(&["gitops", "approve"]);

    for output in [&missing, &unknown] {
        assert_exit(output, 2);
        assert!(json(output)["error"].is_string(), "{}", stdout(output));
    }
    assert_exit(&text, 2);
    assert!(stderr(&text).starts_with("error:"), "{}", stderr(&text));
}

#[test]
fn a_closed_pipe_ends_quietly_with_0() {
    let (reader, writer) = std::io::pipe().unwrap();
    // The reader is gone before ritmo writes: every write to stdout fails with EPIPE, as
    // after `| head -1` has read its line.
    drop(reader);

    let output = command(&[
        "gitops",
        "validate",
        "--repo-path",
        path_str(&example_dir()),
        "-o",
        "json",
    ])
    .stdout(writer)
    .stderr(Stdio::piped())
    .output()
    .unwrap();

    assert_eq!(stderr(&output), "");
    assert_eq!(output.status.code(), Some(0));
}

#[tokio::test]
async fn a_closed_pipe_after_get_jobs_ends_quietly_with_0() {
    let db = TestDb::new().await;
    let synced = ritmo_db(
        &["gitops", "sync", "--repo-path", path_str(&example_dir())],
        &db,
    );
    assert_exit(&synced, 0);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);

    let output = command(&["get", "jobs", "-o", "json"])
        .env("DATABASE_URL", &db.url)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();

    assert_eq!(stderr(&output), "");
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn decrypt_credential_help_describes_decrypting() {
    let help = stdout(&ritmo(&["decrypt-credential", "--help"]));

    assert!(help.contains("Decrypt"), "{help}");
    assert!(!help.to_lowercase().contains("encrypt with"), "{help}");
    assert!(!help.contains("kms-key-id"), "{help}");
    assert!(!help.contains("binds the ciphertext"), "{help}");
}

#[test]
fn counts_are_plural_only_when_they_should_be() {
    let one = workspace_root().join("tests/fixtures/diagnostics/unknown-field");

    let output = stdout(&ritmo(&[
        "gitops",
        "validate",
        "--repo-path",
        path_str(&one),
    ]));

    assert!(
        output.contains("0 resources in 1 file, 1 error, 0 warnings"),
        "{output}"
    );
}

/// The lines of a help text's own blocks (`Examples:` and the like), not clap's (`Options:`).
fn example_lines(help: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut in_block = false;
    for line in help.lines() {
        if line.trim().is_empty() {
            in_block = false;
        } else if in_block {
            lines.push(line);
        } else if !line.starts_with(' ')
            && line.ends_with(':')
            && !["Options:", "Commands:", "Arguments:"].contains(&line)
            && !line.starts_with("Repository authentication")
        {
            in_block = true;
        }
    }
    lines
}

/// Every subcommand's help at 80 columns holds each example line whole, as it reads when
/// nothing wraps: clap wraps a line too long for the terminal, commands included.
#[test]
fn help_examples_never_wrap_in_the_middle_of_a_command() {
    let subcommands: &[&[&str]] = &[
        &[],
        &["gitops"],
        &["gitops", "validate"],
        &["gitops", "plan"],
        &["gitops", "sync"],
        &["gitops", "status"],
        &["gitops", "history"],
        &["gitops", "export"],
        &["gitops", "approve"],
        &["gitops", "rollback"],
        &["gitops", "resume"],
        &["gitops", "init"],
        &["gitops", "diff"],
        &["gitops", "suspend"],
        &["gitops", "adopt"],
        &["get"],
        &["encrypt-credential"],
        &["decrypt-credential"],
        &["rotate-credentials"],
        &["serve"],
    ];
    let mut checked = 0;
    for subcommand in subcommands {
        let mut args = subcommand.to_vec();
        args.push("--help");
        let help_at =
            |columns: &str| stdout(&command(&args).env("COLUMNS", columns).output().unwrap());
        let (wide, narrow) = (help_at("1000"), help_at("80"));
        for line in example_lines(&wide) {
            assert!(
                narrow.lines().any(|shown| shown == line),
                "`ritmo {} --help` at 80 columns wraps `{line}`:\n{narrow}",
                subcommand.join(" ")
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} example lines found");
}

#[test]
fn serve_help_prints_no_empty_environment_value() {
    let output = command(&["serve", "--help"])
        .env("AWS_ENDPOINT_URL", "")
        .env("RITMO_GITOPS_PLAN_QUEUE_URL", "")
        .output()
        .unwrap();

    assert!(
        stdout(&output).contains("AWS_ENDPOINT_URL"),
        "{}",
        stdout(&output)
    );
    assert!(!stdout(&output).contains("=]"), "{}", stdout(&output));
}

#[tokio::test]
async fn history_shows_the_actor() {
    let db = TestDb::new().await;
    let synced = command(&["gitops", "sync", "--repo-path", path_str(&example_dir())])
        .env("DATABASE_URL", &db.url)
        .env("USER", "ada-lovelace")
        .output()
        .unwrap();
    assert_exit(&synced, 0);

    let history = ritmo_db(&["gitops", "history"], &db);

    assert!(
        stdout(&history).contains("ada-lovelace"),
        "{}",
        stdout(&history)
    );
}
