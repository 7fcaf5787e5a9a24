//! Field-level diffs as a person sees them: `plan`, `sync` and `diff` on a real repository and
//! a real PostgreSQL database, in text and JSON, with secrets never shown.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

use std::process::{Command, Output, Stdio};

mod common;

use common::{EXAMPLE_KEY, git, ritmo, stdout};
use ritmo_tests::db::TestDb;
use serde_json::Value;

fn everything(output: &Output) -> String {
    format!(
        "{}{}",
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("stdout is not JSON ({error}):\n{}", everything(output)))
}

/// The example repository, committed and synced into `db`.
fn synced_example(db: &TestDb) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ritmo_tests::copy_dir(&ritmo_tests::example_dir(), dir.path());
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-qm", "config"]);
    let sync = ritmo(&["gitops", "sync", "--repo-path", repo_path(&dir)], &db.url);
    assert!(sync.status.success(), "{}", everything(&sync));
    dir
}

fn repo_path(dir: &tempfile::TempDir) -> &str {
    dir.path().to_str().unwrap()
}

fn edit(dir: &tempfile::TempDir, file: &str, from: &str, to: &str) {
    let path = dir.path().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} holds no `{from}`");
    std::fs::write(&path, text.replace(from, to)).unwrap();
    git(dir.path(), &["commit", "-qam", "edit"]);
}

fn action<'v>(value: &'v Value, name: &str) -> &'v Value {
    value["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no action on `{name}` in {value}"))
}

#[tokio::test]
async fn a_description_edit_shows_old_and_new_values_in_text_and_json() {
    let db = TestDb::new().await;
    let repo = synced_example(&db);
    edit(
        &repo,
        "jobs/backend-service.yaml",
        "description: Backend microservice",
        "description: Backend service",
    );

    let text = ritmo(
        &["gitops", "plan", "--repo-path", repo_path(&repo)],
        &db.url,
    );
    let short = ritmo(
        &[
            "gitops",
            "plan",
            "--repo-path",
            repo_path(&repo),
            "--no-diff",
        ],
        &db.url,
    );
    let diff = ritmo(
        &["gitops", "diff", "--repo-path", repo_path(&repo)],
        &db.url,
    );
    let value = ritmo(
        &[
            "gitops",
            "plan",
            "--repo-path",
            repo_path(&repo),
            "-o",
            "json",
        ],
        &db.url,
    );

    let line = r#"~ spec.description: "Backend microservice" → "Backend service""#;
    let text = stdout(&text);
    assert!(text.contains("~ job/backend-service"), "{text}");
    assert!(text.contains(line), "{text}");
    assert!(
        !stdout(&short).contains("spec.description"),
        "{}",
        stdout(&short)
    );
    assert!(stdout(&short).contains("~ job/backend-service"));
    assert!(diff.status.success(), "{}", everything(&diff));
    assert!(stdout(&diff).contains(line), "{}", stdout(&diff));
    let value = json(&value);
    assert_eq!(
        action(&value, "backend-service")["changes"],
        serde_json::json!([{
            "op": "replace",
            "path": "/spec/description",
            "before": "Backend microservice",
            "after": "Backend service",
        }])
    );
}

#[tokio::test]
async fn an_encrypted_value_rotation_shows_changed_encrypted_and_neither_value() {
    let db = TestDb::new().await;
    let repo = synced_example(&db);
    let path = repo.path().join("credentials/docker-registry.yaml");
    let file = std::fs::read_to_string(&path).unwrap();
    let old = file
        .lines()
        .find_map(|line| line.trim().strip_prefix("encrypted_value: "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    let encrypted = {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ritmo"))
            .args(["encrypt-credential", "--name", "docker-registry"])
            .env("RITMO_MASTER_ENCRYPTION_KEY", EXAMPLE_KEY)
            .env("RITMO_GITOPS_BOOTSTRAP", "")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"rotated-password").unwrap();
        stdout(&child.wait_with_output().unwrap())
            .trim()
            .to_string()
    };
    assert!(encrypted.starts_with("AES256:"), "{encrypted}");
    edit(&repo, "credentials/docker-registry.yaml", &old, &encrypted);

    let text = ritmo(
        &["gitops", "plan", "--repo-path", repo_path(&repo)],
        &db.url,
    );
    let value = ritmo(
        &[
            "gitops",
            "sync",
            "--repo-path",
            repo_path(&repo),
            "-o",
            "json",
        ],
        &db.url,
    );

    let text_out = everything(&text);
    assert!(
        text_out.contains("~ spec.encrypted_value: (changed, encrypted)"),
        "{text_out}"
    );
    let json_out = everything(&value);
    for shown in [&text_out, &json_out] {
        assert!(!shown.contains(&old), "{shown}");
        assert!(!shown.contains(&encrypted), "{shown}");
        assert!(!shown.contains("rotated-password"), "{shown}");
    }
    let value = json(&value);
    assert_eq!(value["status"], "succeeded", "{value}");
    assert_eq!(
        action(&value, "docker-registry")["changes"],
        serde_json::json!([{
            "op": "replace",
            "path": "/spec/encrypted_value",
            "before": "(encrypted)",
            "after": "(encrypted)",
        }])
    );
    // The stored plan carries the same redacted diff, and no other text of the values.
    let client = db.client().await;
    let stored: String = client
        .query_one(
            "SELECT plan::text FROM sync_runs WHERE update_count = 1 ORDER BY started_at DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored.contains(r#""changes":[{"op":"replace","path":"/spec/encrypted_value","before":"(encrypted)","after":"(encrypted)"}]"#), "{stored}");
    assert!(
        !stored.contains(&old),
        "the old ciphertext is in the stored plan"
    );
}

#[tokio::test]
async fn plan_commit_previews_a_pull_request_head_and_writes_nothing() {
    let db = TestDb::new().await;
    let repo = synced_example(&db);
    git(repo.path(), &["checkout", "-qb", "feature"]);
    edit(
        &repo,
        "jobs/backend-service.yaml",
        "description: Backend microservice",
        "description: Proposed in a pull request",
    );
    let head = String::from_utf8(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(repo.path())
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    git(repo.path(), &["checkout", "-q", "main"]);
    let runs_before: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM sync_runs", &[])
        .await
        .unwrap()
        .get(0);

    let preview = ritmo(
        &[
            "gitops",
            "plan",
            "--repo-path",
            repo_path(&repo),
            "--commit",
            &head,
        ],
        &db.url,
    );
    let refused = ritmo(
        &[
            "gitops",
            "sync",
            "--repo-path",
            repo_path(&repo),
            "--commit",
            &head,
        ],
        &db.url,
    );
    let branch = ritmo(
        &[
            "gitops",
            "plan",
            "--repo-path",
            repo_path(&repo),
            "-o",
            "json",
        ],
        &db.url,
    );

    let text = stdout(&preview);
    assert!(preview.status.success(), "{}", everything(&preview));
    assert!(text.contains(&head), "{text}");
    assert!(
        text.contains(
            r#"~ spec.description: "Backend microservice" → "Proposed in a pull request""#
        ),
        "{text}"
    );
    assert_eq!(refused.status.code(), Some(2), "{}", everything(&refused));
    assert!(everything(&refused).contains("only previews"));
    let branch = json(&branch);
    assert_eq!(branch["summary"]["update"], 0, "{branch}");
    let client = db.client().await;
    let runs_after: i64 = client
        .query_one("SELECT count(*) FROM sync_runs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs_after, runs_before);
    let description: String = client
        .query_one(
            "SELECT spec->>'description' FROM resources WHERE name = 'backend-service'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(description, "Backend microservice");
}
