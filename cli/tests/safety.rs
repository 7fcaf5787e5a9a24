//! Issue 22's reproductions, run as an attacker ran them: the real `ritmo` binary, a real git
//! repository and a real PostgreSQL database per test. A kind directory swapped for a symlink
//! must not prune that kind, and a stored name must not make `export` write outside its
//! directory.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;

use common::{ritmo, stderr, stdout};
use ritmo_tests::db::TestDb;
use serde_json::Value;

fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

/// Runs a shell command in `dir`, as the reproduction was typed.
fn sh(dir: &Path, script: &str) {
    let status = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@ritmo.invalid")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@ritmo.invalid")
        .stdout(Stdio::null())
        .status()
        .expect("sh runs");
    assert!(status.success(), "`{script}` failed");
}

/// The example repository, committed on `main`, synced into `db`.
fn synced_example(db: &TestDb) -> tempfile::TempDir {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ritmo-config");
    let repo = tempfile::tempdir().unwrap();
    ritmo_tests::copy_dir(&example, repo.path());
    sh(
        repo.path(),
        "git init -q -b main && git add -A && git commit -qm config",
    );
    let sync = ritmo(
        &["gitops", "sync", "--repo-path", path(repo.path())],
        &db.url,
    );
    assert_exit(&sync, 0);
    repo
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

async fn count_webhooks(db: &TestDb) -> i64 {
    db.client()
        .await
        .query_one("SELECT count(*) FROM resources WHERE kind = 'Webhook'", &[])
        .await
        .unwrap()
        .get(0)
}

// Issue 22, finding 1: `validate` said 0 errors with no E105, and `sync` deleted every webhook
// and exited 0.
#[tokio::test]
async fn a_webhooks_directory_replaced_by_a_symlink_is_e105_and_prunes_nothing() {
    let db = TestDb::new().await;
    let repo = synced_example(&db);
    assert_eq!(count_webhooks(&db).await, 2);

    sh(
        repo.path(),
        "rm -rf webhooks; ln -s /etc webhooks; git add -A; git commit -qm symlink",
    );
    let validate = ritmo(
        &["gitops", "validate", "--repo-path", path(repo.path())],
        &db.url,
    );
    let sync = ritmo(
        &["gitops", "sync", "--repo-path", path(repo.path())],
        &db.url,
    );
    let full = ritmo(
        &["gitops", "sync", "--full", "--repo-path", path(repo.path())],
        &db.url,
    );

    assert_exit(&validate, 1);
    assert!(
        stdout(&validate).contains("error[E105]: `webhooks` is a symlink, not a directory"),
        "{}",
        stdout(&validate)
    );
    assert!(
        stdout(&validate).contains("--> webhooks:1:1"),
        "{}",
        stdout(&validate)
    );
    assert_exit(&sync, 1);
    assert!(
        stdout(&sync).contains("Failed: the repository has validation errors; nothing applied."),
        "{}",
        stdout(&sync)
    );
    assert!(stdout(&sync).contains("error[E105]"), "{}", stdout(&sync));
    assert_exit(&full, 1);
    assert_eq!(count_webhooks(&db).await, 2);
}

#[tokio::test]
async fn webhook_files_left_empty_wait_for_approval_before_every_webhook_goes() {
    let db = TestDb::new().await;
    let repo = synced_example(&db);

    sh(
        repo.path(),
        "for f in webhooks/*.yaml; do : > \"$f\"; done; git commit -qam emptied",
    );
    let sync = ritmo(
        &[
            "gitops",
            "sync",
            "--repo-path",
            path(repo.path()),
            "-o",
            "json",
        ],
        &db.url,
    );

    assert_exit(&sync, 0);
    let value: Value = serde_json::from_slice(&sync.stdout).unwrap();
    assert_eq!(value["status"], "pending_approval", "{value}");
    assert_eq!(count_webhooks(&db).await, 2);
}

// Issue 22, finding 2: a resource named `../../../x/pwned`, inserted by hand, made `export`
// write `x/pwned.yaml` outside the output directory, creating directories.
#[tokio::test]
async fn export_skips_a_stored_name_that_would_leave_the_directory() {
    let db = TestDb::new().await;
    let _repo = synced_example(&db);
    db.client()
        .await
        .execute(
            "INSERT INTO resources (kind, name, spec, spec_hash, hash_version)
             VALUES ('Job', '../../../x/pwned', '{}', 'x', 1)",
            &[],
        )
        .await
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir: PathBuf = out.path().join("a/b/D");

    let export = ritmo(&["gitops", "export", "--output-dir", path(&dir)], &db.url);

    assert_exit(&export, 1);
    assert!(
        stderr(&export).contains("Job `../../../x/pwned` was not exported"),
        "{}",
        stderr(&export)
    );
    assert!(
        !out.path().join("a/x").exists(),
        "written outside the directory"
    );
    assert!(
        !out.path().join("x").exists(),
        "written outside the directory"
    );
    assert!(
        stdout(&export).contains("Wrote 28 resources"),
        "{}",
        stdout(&export)
    );
    assert!(dir.join("webhooks/github-backend-webhook.yaml").is_file());
}
