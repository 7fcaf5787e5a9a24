//! `ritmo serve` obeys the same policies as the CLI and the Lambda functions: with
//! `gitops.enabled: false` its poller plans nothing, and with `auto_apply: false` what it plans
//! waits for approval. The real binary, configured by environment variables alone.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ritmo_tests::db::TestDb;
use ritmo_tests::example_repo;
use ritmo_tests::git_http::TestRepo;

const EXAMPLE_KEY: &str = "ritmo-example-master-key-32bytes";

/// `ritmo serve` on a free port, its log lines (stdout, JSON) collected.
struct Serve {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Serve {
    fn start(db: &TestDb, repo: &TestRepo, cache: &Path, env: &[(&str, &str)]) -> Serve {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ritmo"));
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("RITMO_GITOPS_PLAN_QUEUE_URL")
            .env_remove("RITMO_GITOPS_APPLY_QUEUE_URL")
            .env("RITMO_GITOPS_BOOTSTRAP", "")
            .env("DATABASE_URL", &db.url)
            .env("RITMO_GITOPS_REPO_URL", repo.path())
            .env("RITMO_GITOPS_REPO_BRANCH", "main")
            .env("RITMO_GITOPS_CACHE_DIR", cache)
            .env("RITMO_MASTER_ENCRYPTION_KEY", EXAMPLE_KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Serve { child, lines }
    }

    /// Waits (at most a minute) for a log line containing `text`.
    fn wait_for_log(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_secs(1)) {
                Ok(line) if line.contains(text) => return line,
                Ok(line) => seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!("no log line with `{text}`; seen:\n{}", seen.join("\n"));
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn count(db: &TestDb, query: &str) -> i64 {
    db.client()
        .await
        .query_one(query, &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn serve_with_gitops_disabled_polls_and_plans_nothing() {
    let db = TestDb::new().await;
    let repo = example_repo();
    let cache = tempfile::tempdir().unwrap();

    let serve = Serve::start(
        &db,
        &repo,
        cache.path(),
        &[("RITMO_GITOPS_ENABLED", "false")],
    );
    serve.wait_for_log("gitops is disabled");

    assert_eq!(count(&db, "select count(*) from sync_runs").await, 0);
    assert_eq!(count(&db, "select count(*) from resources").await, 0);
}

#[tokio::test]
async fn serve_with_auto_apply_off_plans_and_waits_for_approval() {
    let db = TestDb::new().await;
    let repo = example_repo();
    let cache = tempfile::tempdir().unwrap();

    let serve = Serve::start(
        &db,
        &repo,
        cache.path(),
        &[("RITMO_GITOPS_AUTO_APPLY", "false")],
    );
    let planned = serve.wait_for_log("\"planned\"");

    assert!(planned.contains("pending_approval"), "{planned}");
    assert_eq!(
        count(
            &db,
            "select count(*) from sync_runs where status = 'pending_approval'"
        )
        .await,
        1
    );
    assert_eq!(count(&db, "select count(*) from resources").await, 0);
}
