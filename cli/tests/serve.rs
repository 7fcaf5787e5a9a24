//! `ritmo serve` as `make dev` runs it: the real binary on a free port, configured only by
//! `RITMO_GITOPS_*`, `RITMO_API_*` and `DATABASE_URL`, a real database and git repository, the
//! seed's two curl commands, then SIGTERM. Then what the server refuses (DESIGN.md §14): state
//! changes without the token, from web pages, under a foreign `Host` or with a body that is
//! not JSON; and how its webhook answers a switched-off webhook, a missing secret, disabled
//! GitOps and an over-long delivery id.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ritmo_tests::db::TestDb;
use ritmo_tests::git_http::TestRepo;
use serde_json::Value;

const EXAMPLE_KEY: &str = "ritmo-example-master-key-32bytes";
/// The API token the servers below are started with.
const TOKEN: &str = "serve-test-token-5f0c9a7e21d4b8";
/// The secret the sample GitLab push carries in `X-Gitlab-Token` (events/README.md).
const WEBHOOK_SECRET: &str = "ritmo-test-webhook-secret";
/// What a person or a bot may wait for: a deadline to stop waiting, not a speed assertion.
const DEADLINE: Duration = Duration::from_secs(60);

/// One HTTP/1.1 request with `Host` set to the server's address; the status and the JSON body.
fn http(address: &str, method: &str, path: &str) -> (u16, Value) {
    let (status, _, body) = request(address, method, path, &[("Host", address)], "");
    (status, body)
}

/// One HTTP/1.1 request with exactly `headers` (so a test can send a foreign `Host`) and
/// `body`; the status, the response head and the JSON body (`null` when empty).
fn request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, Value) {
    let mut stream = TcpStream::connect(address).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    };
    (status, head.to_owned(), body)
}

/// `ritmo serve` on a free loopback port, with the environment of the test process's own
/// `RITMO_*`, `AWS_*` and `DATABASE_*` variables removed; killed on drop.
struct Served {
    child: Child,
    address: String,
    /// The stderr lines read so far (the banner).
    banner: Vec<String>,
    lines: mpsc::Receiver<String>,
}

impl Served {
    fn start(env: &[(&str, &str)], args: &[&str]) -> Served {
        let mut child = serve_command(env, args)
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
        let mut address = None;
        // The banner ends with the webhook line.
        while !banner
            .last()
            .is_some_and(|line: &String| line.starts_with("Webhooks:"))
        {
            let line = lines
                .recv_timeout(DEADLINE)
                .unwrap_or_else(|_| panic!("no whole banner; stderr so far: {banner:#?}"));
            if let Some(rest) = line.split("listening on http://").nth(1) {
                address = Some(rest.split_whitespace().next().unwrap().to_owned());
            }
            banner.push(line);
        }
        let address = address.unwrap_or_else(|| panic!("no listening line: {banner:#?}"));
        Served {
            child,
            address,
            banner,
            lines,
        }
    }

    /// A request as a well-behaved client sends it: `Host` is the listen address.
    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
        let mut all = vec![("Host", self.address.as_str())];
        all.extend_from_slice(headers);
        let (status, _, body) = request(&self.address, method, path, &all, body);
        (status, body)
    }

    /// A JSON POST carrying the token.
    fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let bearer = format!("Bearer {TOKEN}");
        self.send(
            "POST",
            path,
            &[
                ("Authorization", &bearer),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    }

    fn status(&self) -> Value {
        let (code, body) = http(&self.address, "GET", "/api/v1/gitops/status");
        assert_eq!(code, 200, "{body}");
        body
    }

    /// Polls the runs of `default` until one satisfies `found`; panics after the deadline.
    fn wait_for_run(&self, found: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (_, history) = http(
                &self.address,
                "GET",
                "/api/v1/gitops/sync/history?target=default",
            );
            if let Some(run) = history["runs"]
                .as_array()
                .and_then(|runs| runs.iter().find(|run| found(run)))
            {
                return run.clone();
            }
            assert!(Instant::now() < deadline, "no such run: {history}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_command(env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ritmo"));
    for (name, _) in std::env::vars() {
        if name.starts_with("RITMO_") || name.starts_with("AWS_") || name.starts_with("DATABASE_") {
            command.env_remove(name);
        }
    }
    command
        .arg("serve")
        .args(args)
        .env("RITMO_GITOPS_BOOTSTRAP", "")
        .env("RITMO_MASTER_ENCRYPTION_KEY", EXAMPLE_KEY)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

/// A copy of `examples/ritmo-config`, committed on `main`.
fn example_repo() -> (TestRepo, String) {
    let repo = TestRepo::new();
    ritmo_tests::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ritmo-config"),
        repo.path(),
    );
    let head = repo.commit("example config");
    (repo, head)
}

#[tokio::test]
async fn serve_answers_the_seeds_curl_commands_and_stops_cleanly_on_sigterm() {
    let db = TestDb::new().await;
    let (repo, head) = example_repo();
    let cache = tempfile::tempdir().unwrap();
    let repo_url = repo.path().display().to_string();
    let cache_dir = cache.path().display().to_string();
    let served = Served::start(
        &[
            ("DATABASE_URL", &db.url),
            ("RITMO_GITOPS_REPO_URL", &repo_url),
            ("RITMO_GITOPS_REPO_BRANCH", "main"),
            ("RITMO_GITOPS_CACHE_DIR", &cache_dir),
            ("RITMO_API_TOKEN", TOKEN),
        ],
        &["--listen", "127.0.0.1:0", "--poll-interval", "3600"],
    );
    let address = served.address.clone();

    let (sync_status, sync) = served.post("/api/v1/gitops/sync", "");
    // The sync runs on the server's workers: wait (bounded) until status shows it applied.
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        let body = served.status();
        if body["targets"][0]["generation"] == 1 || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (jobs_status, jobs) = http(&address, "GET", "/api/v1/jobs");
    let mut served = served;
    let pid = served.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let exit = served.child.wait().unwrap();
    // The child has exited: the reader thread reaches end of file and the channel closes.
    let rest: Vec<String> = served.lines.iter().collect();

    let stderr = [served.banner.clone(), rest.clone()].concat().join("\n");
    assert!(
        stderr.contains(&format!(
            "curl -X POST -H \"Authorization: Bearer $RITMO_API_TOKEN\" -H 'Content-Type: application/json' http://{address}/api/v1/gitops/sync"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("curl http://{address}/api/v1/gitops/status")),
        "{stderr}"
    );
    assert!(
        !stderr.contains(TOKEN),
        "the token is never printed: {stderr}"
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

// Regression (issue 22, finding 3): with no credentials, a web page could post a `text/plain`
// rollback with `Origin` and `Host: evil.example` and got 202; the rollback pinned `0000000`,
// a commit that does not exist, and the target stopped syncing until someone resumed it.
#[tokio::test]
async fn serve_refuses_the_cross_origin_text_plain_rollback_and_every_unauthenticated_change() {
    let db = TestDb::new().await;
    let (repo, _) = example_repo();
    let cache = tempfile::tempdir().unwrap();
    let repo_url = repo.path().display().to_string();
    let cache_dir = cache.path().display().to_string();
    let served = Served::start(
        &[
            ("DATABASE_URL", &db.url),
            ("RITMO_GITOPS_REPO_URL", &repo_url),
            ("RITMO_GITOPS_REPO_BRANCH", "main"),
            ("RITMO_GITOPS_CACHE_DIR", &cache_dir),
            ("RITMO_API_TOKEN", TOKEN),
        ],
        &["--listen", "127.0.0.1:0", "--poll-interval", "3600"],
    );
    let rollback = r#"{"target":"default","to":"0000000"}"#;
    let bearer = format!("Bearer {TOKEN}");

    let (page, _, page_body) = request(
        &served.address,
        "POST",
        "/api/v1/gitops/rollback",
        &[
            ("Host", "evil.example"),
            ("Origin", "http://evil.example"),
            ("Content-Type", "text/plain"),
        ],
        rollback,
    );
    let (origin, origin_body) = served.send(
        "POST",
        "/api/v1/gitops/rollback",
        &[
            ("Origin", "http://evil.example"),
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        rollback,
    );
    let (_, unauthorized_head, _) = request(
        &served.address,
        "POST",
        "/api/v1/gitops/sync",
        &[
            ("Host", &served.address),
            ("Content-Type", "application/json"),
        ],
        "",
    );
    let mut without_token = Vec::new();
    for (path, body) in [
        ("/api/v1/gitops/sync", ""),
        (
            "/api/v1/gitops/plans/0192f5a4-7b1e-7c3a-9d2e-5f6a7b8c9d0e/approve",
            "",
        ),
        ("/api/v1/gitops/rollback", rollback),
        ("/api/v1/gitops/resume", r#"{"target":"default"}"#),
    ] {
        let (code, answer) =
            served.send("POST", path, &[("Content-Type", "application/json")], body);
        without_token.push((path, code, answer));
    }
    let (wrong, wrong_body) = served.send(
        "POST",
        "/api/v1/gitops/rollback",
        &[
            ("Authorization", "Bearer not-the-token-at-all"),
            ("Content-Type", "application/json"),
        ],
        rollback,
    );
    let (plain, plain_body) = served.send(
        "POST",
        "/api/v1/gitops/rollback",
        &[("Authorization", &bearer), ("Content-Type", "text/plain")],
        rollback,
    );
    let (missing_commit, missing_commit_body) = served.post("/api/v1/gitops/rollback", rollback);
    let (nul, nul_body) = served.send("GET", "/api/v1/jobs/x%00", &[], "");
    let (rebound_read, _, rebound_read_body) = request(
        &served.address,
        "GET",
        "/api/v1/gitops/status",
        &[("Host", "evil.example:8080")],
        "",
    );
    let status = served.status();

    assert_eq!(page, 421, "{page_body}");
    assert_eq!(page_body["error"], "host_not_allowed", "{page_body}");
    assert!(
        page_body["message"]
            .as_str()
            .unwrap()
            .contains("--allow-host")
    );
    assert_eq!(origin, 403, "{origin_body}");
    assert_eq!(origin_body["error"], "origin_not_allowed");
    assert!(
        origin_body["message"]
            .as_str()
            .unwrap()
            .contains("--allow-origin http://evil.example"),
        "{origin_body}"
    );
    for (path, code, answer) in &without_token {
        assert_eq!(*code, 401, "{path}: {answer}");
        assert_eq!(answer["error"], "unauthorized", "{path}: {answer}");
    }
    assert!(
        unauthorized_head
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{unauthorized_head}"
    );
    assert_eq!(wrong, 401, "{wrong_body}");
    assert_eq!(plain, 415, "{plain_body}");
    assert_eq!(plain_body["error"], "unsupported_media_type");
    assert_eq!(missing_commit, 422, "{missing_commit_body}");
    assert_eq!(missing_commit_body["error"], "unknown_commit");
    assert_eq!(nul, 400, "{nul_body}");
    assert_eq!(rebound_read, 421, "{rebound_read_body}");
    assert_eq!(
        status["targets"][0]["pinned_commit"],
        Value::Null,
        "{status}"
    );
    assert_eq!(status["targets"][0]["suspended"], false, "{status}");
}

#[tokio::test]
async fn serve_records_who_approved_and_who_asked_for_a_sync() {
    let db = TestDb::new().await;
    let (repo, _) = example_repo();
    let cache = tempfile::tempdir().unwrap();
    let repo_url = repo.path().display().to_string();
    let cache_dir = cache.path().display().to_string();
    let served = Served::start(
        &[
            ("DATABASE_URL", &db.url),
            ("RITMO_GITOPS_REPO_URL", &repo_url),
            ("RITMO_GITOPS_REPO_BRANCH", "main"),
            ("RITMO_GITOPS_CACHE_DIR", &cache_dir),
            ("RITMO_API_TOKEN", TOKEN),
            ("RITMO_API_ACTOR", "ops-bot"),
        ],
        &["--listen", "127.0.0.1:0", "--poll-interval", "3600"],
    );
    let (first, first_body) = served.post("/api/v1/gitops/sync", "");
    assert_eq!(first, 202, "{first_body}");
    let applied = served.wait_for_run(|run| run["status"] == "succeeded");
    // Deleting a credential always waits for approval.
    repo.remove("webhooks/github-backend.yaml")
        .remove("credentials/github-webhook-secret.yaml");
    repo.commit("drop the github webhook");
    let (second, second_body) = served.post("/api/v1/gitops/sync", "");
    assert_eq!(second, 202, "{second_body}");
    let waiting = served.wait_for_run(|run| run["status"] == "pending_approval");
    let bearer = format!("Bearer {TOKEN}");

    let (approved, approved_body) = served.send(
        "POST",
        &format!(
            "/api/v1/gitops/plans/{}/approve",
            waiting["id"].as_str().unwrap()
        ),
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
            ("X-Ritmo-Actor", "alice"),
        ],
        r#"{"comment":"CHG-1234"}"#,
    );
    let run = served
        .wait_for_run(|run| run["id"] == waiting["id"] && run["status"] != "pending_approval");

    assert_eq!(applied["actor"], "ops-bot", "{applied}");
    assert_eq!(approved, 202, "{approved_body}");
    assert_eq!(approved_body["approved_by"], "alice");
    assert_eq!(run["approved_by"], "alice", "{run}");
}

#[tokio::test]
async fn serve_without_a_token_refuses_state_changes_and_says_how_to_configure_one() {
    let db = TestDb::new().await;
    let served = Served::start(&[("DATABASE_URL", &db.url)], &["--listen", "127.0.0.1:0"]);

    let (refused, body) = served.send(
        "POST",
        "/api/v1/gitops/sync",
        &[("Content-Type", "application/json")],
        "",
    );
    let (read, _) = http(&served.address, "GET", "/api/v1/gitops/status");

    assert_eq!(refused, 403, "{body}");
    assert_eq!(body["error"], "no_api_token_configured");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("RITMO_API_TOKEN"), "{message}");
    assert!(message.contains("--insecure-local"), "{message}");
    assert_eq!(read, 200, "reads stay open on loopback");
    assert!(
        served
            .banner
            .join("\n")
            .contains("state changes are refused"),
        "{:?}",
        served.banner
    );
}

#[tokio::test]
async fn insecure_local_opens_state_changes_on_loopback_only() {
    let db = TestDb::new().await;
    let served = Served::start(
        &[("DATABASE_URL", &db.url)],
        &["--listen", "127.0.0.1:0", "--insecure-local"],
    );

    let (accepted, body) = served.send(
        "POST",
        "/api/v1/gitops/sync",
        &[("Content-Type", "application/json")],
        "",
    );
    let (plain, _) = served.send(
        "POST",
        "/api/v1/gitops/sync",
        &[("Content-Type", "text/plain")],
        "",
    );
    let everywhere = serve_command(
        &[("DATABASE_URL", &db.url)],
        &["--listen", "0.0.0.0:0", "--insecure-local"],
    )
    .stderr(Stdio::piped())
    .output()
    .unwrap();

    assert_eq!(accepted, 202, "{body}");
    assert_eq!(plain, 415, "still JSON only");
    assert_eq!(everywhere.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&everywhere.stderr);
    assert!(
        stderr.contains("--insecure-local is only allowed on a loopback address"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_allowed_origin_gets_its_preflight_and_cors_headers() {
    let db = TestDb::new().await;
    let served = Served::start(
        &[("DATABASE_URL", &db.url), ("RITMO_API_TOKEN", TOKEN)],
        &[
            "--listen",
            "127.0.0.1:0",
            "--allow-origin",
            "https://ops.example.com",
        ],
    );
    let bearer = format!("Bearer {TOKEN}");

    let (_, preflight_head, _) = request(
        &served.address,
        "OPTIONS",
        "/api/v1/gitops/sync",
        &[
            ("Host", &served.address),
            ("Origin", "https://ops.example.com"),
            ("Access-Control-Request-Method", "POST"),
        ],
        "",
    );
    let (_, synced_head, synced) = request(
        &served.address,
        "POST",
        "/api/v1/gitops/sync",
        &[
            ("Host", &served.address),
            ("Origin", "https://ops.example.com"),
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        "",
    );

    assert!(
        preflight_head.starts_with("HTTP/1.1 204"),
        "{preflight_head}"
    );
    let synced_head = synced_head.to_ascii_lowercase();
    assert!(
        synced_head.starts_with("http/1.1 202"),
        "{synced_head} {synced}"
    );
    assert!(
        synced_head.contains("access-control-allow-origin: https://ops.example.com"),
        "{synced_head}"
    );
}

/// The sample GitLab push (`events/webhook-gitlab-push-apigw-v2.json`): its body and its
/// headers, whose `X-Gitlab-Token` is the test secret itself.
fn gitlab_push() -> (Vec<(String, String)>, String) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/webhook-gitlab-push-apigw-v2.json");
    let event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let headers = event["headers"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "host" | "content-length"))
        .map(|(name, value)| (name.clone(), value.as_str().unwrap().to_owned()))
        .collect();
    (headers, event["body"].as_str().unwrap().to_owned())
}

// Regression (issue 21): `webhook.enabled: false` still accepted pushes (202) while a secret
// was set; with no secret the webhook answered 500 `no_secret_configured`; and
// `RITMO_GITOPS_ENABLED=false` was never read. Regression (issue 22, finding 6): a validly
// signed delivery with an 8,000-character id answered 503 "retry later".
#[tokio::test]
async fn serve_webhook_answers_each_configuration_with_a_clear_non_5xx_body() {
    let config = tempfile::tempdir().unwrap();
    let webhook_off = config.path().join("webhook-off.yaml");
    std::fs::write(&webhook_off, "gitops:\n  webhook:\n    enabled: false\n").unwrap();
    let webhook_off = webhook_off.display().to_string();
    let long_id = incompressible_id(8000);
    /// A server configuration, the delivery id the push carries (the sample's when `None`),
    /// and the answers to sending it once per expected `(status, status or error)`.
    struct Case<'a> {
        name: &'a str,
        env: Vec<(&'a str, &'a str)>,
        delivery_id: Option<&'a str>,
        expected: &'a [(u16, &'a str)],
    }
    let cases = [
        Case {
            name: "webhook.enabled: false",
            env: vec![
                ("RITMO_GITOPS_BOOTSTRAP", webhook_off.as_str()),
                ("RITMO_GITOPS_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ],
            delivery_id: None,
            expected: &[(404, "webhook_disabled")],
        },
        Case {
            name: "no secret",
            env: vec![],
            delivery_id: None,
            expected: &[(403, "no_secret_configured")],
        },
        Case {
            name: "RITMO_GITOPS_ENABLED=false",
            env: vec![
                ("RITMO_GITOPS_WEBHOOK_SECRET", WEBHOOK_SECRET),
                ("RITMO_GITOPS_ENABLED", "false"),
            ],
            delivery_id: None,
            expected: &[(200, "disabled")],
        },
        Case {
            name: "an 8,000-character delivery id, twice",
            env: vec![("RITMO_GITOPS_WEBHOOK_SECRET", WEBHOOK_SECRET)],
            delivery_id: Some(long_id.as_str()),
            expected: &[(202, "accepted"), (200, "duplicate")],
        },
    ];

    for Case {
        name: case,
        env,
        delivery_id,
        expected,
    } in cases
    {
        let db = TestDb::new().await;
        let mut env = env;
        env.push(("DATABASE_URL", &db.url));
        env.push((
            "RITMO_GITOPS_REPO_URL",
            "https://gitlab.com/acme/ritmo-config.git",
        ));
        env.push(("RITMO_API_TOKEN", TOKEN));
        let served = Served::start(
            &env,
            &["--listen", "127.0.0.1:0", "--poll-interval", "3600"],
        );
        let (mut headers, body) = gitlab_push();
        if let Some(id) = delivery_id {
            headers.retain(|(name, _)| name != "idempotency-key");
            headers.push(("Idempotency-Key".into(), id.to_owned()));
        }
        // A provider reaches the server under whatever name it was given.
        headers.push(("Host".into(), "hooks.example.net".into()));
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();

        for (status, what) in expected {
            let (code, _, answer) =
                request(&served.address, "POST", "/webhooks/gitops", &headers, &body);

            assert_eq!(code, *status, "{case}: {answer}");
            let named = answer["status"].as_str().or(answer["error"].as_str());
            assert_eq!(named, Some(*what), "{case}: {answer}");
            if code >= 400 {
                assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
            }
        }
    }
}

/// `length` hex digits no compressor shrinks (xorshift64): PostgreSQL compresses a long
/// repetitive value below the index row limit, which a real random id never is.
fn incompressible_id(length: usize) -> String {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b"0123456789abcdef"[(state >> 60) as usize])
        })
        .collect()
}

#[tokio::test]
async fn a_token_kept_in_secrets_manager_passes_in_both_versions_of_a_rotation() {
    let moto = ritmo_tests::moto::Moto::start();
    let secrets = moto.secrets_manager().await;
    let previous = "previous-api-token-3a91c0d2e7";
    let current = "current-api-token-b84f1e6d20";
    secrets
        .create_secret()
        .name("ritmo/api-token")
        .secret_string(previous)
        .send()
        .await
        .unwrap();
    secrets
        .put_secret_value()
        .secret_id("ritmo/api-token")
        .secret_string(current)
        .send()
        .await
        .unwrap();
    let db = TestDb::new().await;
    // Only Secrets Manager goes to moto: with `AWS_ENDPOINT_URL` serve would also put its
    // queues there.
    let aws = [
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.endpoint()),
        ("AWS_REGION", ritmo_tests::moto::REGION),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ];
    let mut env = vec![
        ("DATABASE_URL", db.url.as_str()),
        ("RITMO_API_TOKEN_SECRET_ARN", "ritmo/api-token"),
    ];
    env.extend(aws);
    let served = Served::start(&env, &["--listen", "127.0.0.1:0"]);
    let sync = |token: &str| {
        let bearer = format!("Bearer {token}");
        served
            .send(
                "POST",
                "/api/v1/gitops/sync",
                &[
                    ("Authorization", &bearer),
                    ("Content-Type", "application/json"),
                ],
                "",
            )
            .0
    };

    let answers = [
        sync(current),
        sync(previous),
        sync("wrong-api-token-0000000"),
    ];
    let mut missing_env = vec![
        ("DATABASE_URL", db.url.as_str()),
        ("RITMO_API_TOKEN_SECRET_ARN", "ritmo/no-such-token"),
    ];
    missing_env.extend(aws);
    let missing = serve_command(&missing_env, &["--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();

    assert_eq!(answers, [202, 202, 401]);
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("ritmo/no-such-token"), "{stderr}");
    assert!(stderr.contains("RITMO_API_TOKEN_SECRET_ARN"), "{stderr}");
    let output = served.banner.join("\n");
    assert!(
        !output.contains(current) && !output.contains(previous),
        "{output}"
    );
}
