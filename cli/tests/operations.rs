//! `ritmo gitops approve`, `rollback` and `resume` as an operator runs them: a real git
//! repository, a real PostgreSQL database per test, exit codes and what is printed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

mod common;

use std::process::{Command, Stdio};

use common::{ConfigRepo, assert_exit, json, stderr, stdout};
use ritmo_tests::db::TestDb;
use serde_json::Value;

/// Commits plugin `git-scm` at `version`; returns the commit id.
fn commit_plugin(repo: &ConfigRepo, version: &str) -> String {
    repo.write(
        "plugins/git-scm.yaml",
        &format!(
            "apiVersion: ritmo.dev/v1\nkind: Plugin\nmetadata:\n  name: git-scm\nspec:\n  \
             type: scm\n  binary_path: /opt/ritmo/plugins/git-scm\n  version: {version}\n  \
             enabled: true\n"
        ),
    );
    repo.commit(version)
}

#[tokio::test]
async fn a_rollback_pins_the_target_which_status_shows_until_resume_returns_to_the_head() {
    let db = TestDb::new().await;
    let repo = ConfigRepo::new();
    let first = commit_plugin(&repo, "1.0.0");
    let bootstrap = repo.bootstrap("");
    let config = bootstrap.path().to_str().unwrap();
    assert_exit(&repo.ritmo(&["--config", config, "gitops", "sync"], &db), 0);
    let second = commit_plugin(&repo, "2.0.0");
    assert_exit(&repo.ritmo(&["--config", config, "gitops", "sync"], &db), 0);

    let rollback = repo.ritmo(
        &["--config", config, "gitops", "rollback", "--to", &first],
        &db,
    );
    let status = repo.ritmo(&["--config", config, "gitops", "status"], &db);
    let sync_while_pinned = repo.ritmo(&["--config", config, "gitops", "sync"], &db);
    let plugin_while_pinned = json(&repo.ritmo(&["get", "plugin", "git-scm", "-o", "json"], &db));
    let resume = repo.ritmo(&["--config", config, "gitops", "resume"], &db);
    let status_after =
        json(&repo.ritmo(&["--config", config, "gitops", "status", "-o", "json"], &db));

    assert_exit(&rollback, 0);
    assert!(
        stdout(&rollback).contains(&format!("pinned at {first}")),
        "{}",
        stdout(&rollback)
    );
    assert!(
        stdout(&rollback).contains("1 updated"),
        "{}",
        stdout(&rollback)
    );
    assert_exit(&status, 0);
    assert!(
        stdout(&status).contains(&format!("pinned: {first}")),
        "{}",
        stdout(&status)
    );
    // A sync of a pinned target reads the pinned commit, as the API's manual sync does: it
    // never undoes the rollback, and says how to follow the branch again.
    assert_exit(&sync_while_pinned, 0);
    assert!(
        stdout(&sync_while_pinned).contains(&format!("pinned at {first}"))
            && stdout(&sync_while_pinned).contains("ritmo gitops resume"),
        "{}",
        stdout(&sync_while_pinned)
    );
    assert_eq!(plugin_while_pinned["spec"]["version"], "1.0.0");
    assert_exit(&resume, 0);
    assert!(
        stdout(&resume).contains(&format!("unpinned (was at {first})")),
        "{}",
        stdout(&resume)
    );
    let target = &status_after["targets"][0]["target"];
    assert_eq!(target["pinned_commit"], Value::Null);
    assert_eq!(target["last_applied_commit"], second.as_str());
}

#[tokio::test]
async fn rollback_to_something_that_is_not_a_commit_or_a_run_is_refused() {
    let db = TestDb::new().await;
    let repo = ConfigRepo::new();
    commit_plugin(&repo, "1.0.0");
    let bootstrap = repo.bootstrap("");
    let config = bootstrap.path().to_str().unwrap();
    assert_exit(&repo.ritmo(&["--config", config, "gitops", "sync"], &db), 0);

    let output = repo.ritmo(
        &[
            "--config",
            config,
            "gitops",
            "rollback",
            "--to",
            "yesterday",
        ],
        &db,
    );
    let unknown_run = repo.ritmo(
        &[
            "--config",
            config,
            "gitops",
            "rollback",
            "--to",
            "0190f3c2-7d1e-7a3b-9c4d-5e6f7a8b9c0d",
        ],
        &db,
    );

    assert_exit(&output, 1);
    assert!(
        stderr(&output).contains("`yesterday`"),
        "{}",
        stderr(&output)
    );
    assert_exit(&unknown_run, 1);
    let status = json(&repo.ritmo(&["--config", config, "gitops", "status", "-o", "json"], &db));
    assert_eq!(status["targets"][0]["target"]["pinned_commit"], Value::Null);
}

#[tokio::test]
async fn a_branch_that_requires_approval_waits_until_approved_and_a_stale_approval_is_refused() {
    let db = TestDb::new().await;
    let repo = ConfigRepo::new();
    commit_plugin(&repo, "1.0.0");
    let bootstrap = repo.bootstrap("    require_approval_for_branches: [main]\n");
    let config = bootstrap.path().to_str().unwrap();

    let waiting = repo.ritmo(&["--config", config, "gitops", "sync", "-o", "json"], &db);
    let sync_id = json(&waiting)["sync_id"].as_str().unwrap().to_string();
    let approved = repo.ritmo(&["--config", config, "gitops", "approve", &sync_id], &db);
    let again = repo.ritmo(&["--config", config, "gitops", "approve", &sync_id], &db);
    // Two plans wait; approving the newer moves the target, so the older is stale.
    commit_plugin(&repo, "2.0.0");
    let older = json(&repo.ritmo(&["--config", config, "gitops", "sync", "-o", "json"], &db));
    commit_plugin(&repo, "3.0.0");
    let newer = json(&repo.ritmo(&["--config", config, "gitops", "sync", "-o", "json"], &db));
    let newer_approved = repo.ritmo(
        &[
            "--config",
            config,
            "gitops",
            "approve",
            newer["sync_id"].as_str().unwrap(),
        ],
        &db,
    );
    let stale = repo.ritmo(
        &[
            "--config",
            config,
            "gitops",
            "approve",
            older["sync_id"].as_str().unwrap(),
        ],
        &db,
    );
    let auto_approved = {
        commit_plugin(&repo, "4.0.0");
        repo.ritmo(
            &[
                "--config",
                config,
                "gitops",
                "sync",
                "--auto-approve",
                "-o",
                "json",
            ],
            &db,
        )
    };

    assert_exit(&waiting, 0);
    assert_eq!(json(&waiting)["status"], "pending_approval");
    assert_exit(&approved, 0);
    assert!(
        stdout(&approved).contains(&format!("Approved sync {sync_id}")),
        "{}",
        stdout(&approved)
    );
    assert!(
        stdout(&approved).contains("1 created"),
        "{}",
        stdout(&approved)
    );
    assert_exit(&again, 1);
    assert!(
        stderr(&again).contains("not waiting for approval: it is `succeeded`"),
        "{}",
        stderr(&again)
    );
    assert_eq!(older["status"], "pending_approval");
    assert_exit(&newer_approved, 0);
    assert_exit(&stale, 1);
    assert!(stderr(&stale).contains("is stale"), "{}", stderr(&stale));
    assert_exit(&auto_approved, 0);
    assert_eq!(json(&auto_approved)["status"], "succeeded");
    let history = json(&repo.ritmo(&["gitops", "history", "-o", "json"], &db));
    let statuses: Vec<&str> = history["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["succeeded", "succeeded", "superseded", "succeeded"]
    );
}

#[tokio::test]
async fn approving_something_that_is_not_a_sync_id_is_refused_as_json_too() {
    let db = TestDb::new().await;
    let repo = ConfigRepo::new();

    let output = repo.ritmo(&["gitops", "approve", "not-a-uuid", "-o", "json"], &db);

    // A malformed argument is a usage error (README.md, exit codes).
    assert_exit(&output, 2);
    assert!(
        json(&output)["error"]
            .as_str()
            .unwrap()
            .contains("`not-a-uuid` is not a sync run id"),
        "{}",
        stdout(&output)
    );
}

#[tokio::test]
async fn suspend_and_resume_from_the_cli_show_who_suspended_the_target_and_when() {
    let db = TestDb::new().await;
    let repo = ConfigRepo::new();
    commit_plugin(&repo, "1.0.0");
    let bootstrap = repo.bootstrap("");
    let config = bootstrap.path().to_str().unwrap();
    assert_exit(&repo.ritmo(&["--config", config, "gitops", "sync"], &db), 0);

    let suspended = repo.ritmo(&["--config", config, "gitops", "suspend"], &db);
    let status = repo.ritmo(&["--config", config, "gitops", "status"], &db);
    let status_json = repo.ritmo(&["--config", config, "-o", "json", "gitops", "status"], &db);
    let resumed = repo.ritmo(&["--config", config, "gitops", "resume"], &db);
    let after = repo.ritmo(&["--config", config, "-o", "json", "gitops", "status"], &db);

    assert_exit(&suspended, 0);
    assert!(
        stdout(&suspended).contains("suspended by jane"),
        "{}",
        stdout(&suspended)
    );
    assert!(
        stdout(&status).contains("suspended: by jane at"),
        "{}",
        stdout(&status)
    );
    let target = &json(&status_json)["targets"][0]["target"];
    assert_eq!(target["suspended"], true);
    assert_eq!(target["suspended_by"], "jane");
    assert!(target["suspended_at"].is_string());
    assert_exit(&resumed, 0);
    assert!(stdout(&resumed).contains("resumed"), "{}", stdout(&resumed));
    assert_eq!(json(&after)["targets"][0]["target"]["suspended"], false);
}

#[tokio::test]
async fn a_target_suspended_in_the_bootstrap_file_says_so_and_cannot_be_resumed_from_the_cli() {
    let db = TestDb::new().await;
    let repo = ConfigRepo::new();
    commit_plugin(&repo, "1.0.0");
    let bootstrap = repo.bootstrap("    suspended: true\n");
    let config = bootstrap.path().to_str().unwrap();
    assert_exit(&repo.ritmo(&["--config", config, "gitops", "sync"], &db), 0);

    let status = repo.ritmo(&["--config", config, "gitops", "status"], &db);
    let resumed = repo.ritmo(&["--config", config, "gitops", "resume"], &db);

    assert!(
        stdout(&status).contains("suspended: by the settings"),
        "{}",
        stdout(&status)
    );
    assert_exit(&resumed, 1);
    assert!(
        stderr(&resumed).contains("sync.suspended"),
        "{}",
        stderr(&resumed)
    );
}

#[tokio::test]
async fn init_on_an_empty_machine_writes_checks_and_registers_then_a_second_run_changes_nothing() {
    let db = TestDb::new().await;
    let repo = ConfigRepo::new();
    commit_plugin(&repo, "1.0.0");
    let etc = tempfile::tempdir().unwrap();
    let config = etc.path().join("ritmo/gitops-bootstrap.yaml");
    let url = format!("file://{}", repo.path());
    let init = |extra: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ritmo"));
        command
            .args(["--config", config.to_str().unwrap(), "gitops", "init"])
            .args(["--repo", &url, "--branch", "main"])
            .args(extra)
            .env_remove("RITMO_GITOPS_REPO_URL")
            .env("RITMO_GITOPS_TOKEN", "ghp_initTestToken123")
            .env("RITMO_GITOPS_CACHE_DIR", repo.cache())
            .env("DATABASE_URL", &db.url)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        command.output().expect("ritmo runs")
    };

    let first = init(&[]);
    let written = std::fs::read_to_string(&config).unwrap();
    let second = init(&[]);
    let with_flag = init(&["--token", "ghp_initTestToken123"]);
    let registered = {
        let client = db.client().await;
        let row = client
            .query_one(
                "SELECT repo_url, branch FROM targets WHERE name = 'default'",
                &[],
            )
            .await
            .unwrap();
        (row.get::<_, String>(0), row.get::<_, String>(1))
    };

    assert_exit(&first, 0);
    assert!(stdout(&first).contains("Wrote"), "{}", stdout(&first));
    assert!(
        stdout(&first).contains("the repository can be read"),
        "{}",
        stdout(&first)
    );
    assert!(
        stdout(&first).contains("Registered target `default`"),
        "{}",
        stdout(&first)
    );
    assert!(stdout(&first).contains("gitops sync"), "{}", stdout(&first));
    assert!(!written.contains("ghp_"), "{written}");
    assert!(written.contains("${RITMO_GITOPS_TOKEN}"), "{written}");
    assert_exit(&second, 0);
    assert!(
        stdout(&second).contains("Nothing changed"),
        "{}",
        stdout(&second)
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), written);
    assert_exit(&with_flag, 0);
    assert!(
        stderr(&with_flag).contains("shell history"),
        "{}",
        stderr(&with_flag)
    );
    assert!(!std::fs::read_to_string(&config).unwrap().contains("ghp_"));
    assert_eq!(registered.1, "main");
    assert!(registered.0.ends_with(repo.path()), "{registered:?}");
}

#[tokio::test]
async fn init_refuses_a_repository_it_cannot_read_and_writes_nothing() {
    let db = TestDb::new().await;
    let etc = tempfile::tempdir().unwrap();
    let config = etc.path().join("gitops-bootstrap.yaml");
    let missing = etc.path().join("no-such-repo");

    let output = Command::new(env!("CARGO_BIN_EXE_ritmo"))
        .args(["--config", config.to_str().unwrap(), "gitops", "init"])
        .args(["--repo", &format!("file://{}", missing.display())])
        .env_remove("RITMO_GITOPS_TOKEN")
        .env("DATABASE_URL", &db.url)
        .stdin(Stdio::null())
        .output()
        .unwrap();

    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("nothing written"),
        "{}",
        stderr(&output)
    );
    assert!(!config.exists());
}
