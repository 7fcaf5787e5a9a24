//! `ritmo serve` as `make dev` runs it: the real binary on a free port, configured only by
//! `RITMO_GITOPS_*` and `DATABASE_URL`, a real database and git repository, the seed's two curl
//! commands, then SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ritmo_tests::db::TestDb;
use ritmo_tests::git_http::TestRepo;
use serde_json::Value;

const EXAMPLE_KEY: &str = "ritmo-example-master-key-32bytes";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// One HTTP/1.1 request; the status and the JSON body.
fn http(address: &str, method: &str, path: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(address).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap())
}

#[tokio::test]
async fn serve_answers_the_seeds_curl_commands_and_stops_cleanly_on_sigterm() {
    let db = TestDb::new().await;
    let repo = TestRepo::new();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ritmo-config"),
        repo.path(),
    );
    let head = repo.commit("example config");
    let cache = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ritmo"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--poll-interval",
            "3600",
        ])
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("RITMO_GITOPS_PLAN_QUEUE_URL")
        .env_remove("RITMO_GITOPS_APPLY_QUEUE_URL")
        .env("RITMO_GITOPS_BOOTSTRAP", "")
        .env("DATABASE_URL", &db.url)
        .env("RITMO_GITOPS_REPO_URL", repo.path())
        .env("RITMO_GITOPS_REPO_BRANCH", "main")
        .env("RITMO_GITOPS_CACHE_DIR", cache.path())
        .env("RITMO_MASTER_ENCRYPTION_KEY", EXAMPLE_KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut banner = Vec::new();
    let address = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no listening line; stderr so far: {banner:#?}"));
        banner.push(line.clone());
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };

    let (sync_status, sync) = http(&address, "POST", "/api/v1/gitops/sync");
    // The sync runs on the server's workers: wait (bounded) until status shows it applied.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let (code, body) = http(&address, "GET", "/api/v1/gitops/status");
        assert_eq!(code, 200, "{body}");
        if body["targets"][0]["generation"] == 1 || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (jobs_status, jobs) = http(&address, "GET", "/api/v1/jobs");
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let exit = child.wait().unwrap();
    // The child has exited: the reader thread reaches end of file and the channel closes.
    let rest: Vec<String> = lines.iter().collect();

    let stderr = [banner, rest.clone()].concat().join("\n");
    assert!(
        stderr.contains(&format!("curl -X POST http://{address}/api/v1/gitops/sync")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("curl http://{address}/api/v1/gitops/status")),
        "{stderr}"
    );
    assert_eq!(sync_status, 202, "{sync}");
    assert_eq!(sync["queued"][0]["target"], "default");
    let target = &status["targets"][0];
    assert_eq!(target["name"], "default");
    assert_eq!(target["generation"], 1, "{status}");
    assert_eq!(target["last_applied_commit"], head.as_str());
    assert_eq!(jobs_status, 200);
    assert_eq!(jobs["items"].as_array().unwrap().len(), 3, "{jobs}");
    assert!(killed.success());
    assert!(exit.success(), "{exit:?}: {rest:#?}");
    assert!(
        rest.iter().any(|line| line.contains("stopped")),
        "{rest:#?}"
    );
}
