//! The `ritmo` binary as a person runs it: real git repositories, a real PostgreSQL database
//! per test, and the exit codes and output a script would rely on.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;

use common::git;
use ritmo_tests::db::TestDb;
use serde_json::Value;

const EXAMPLE_KEY: &str = "ritmo-example-master-key-32bytes";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example_dir() -> PathBuf {
    workspace_root().join("examples/ritmo-config")
}

fn ritmo(args: &[&str], database_url: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ritmo"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("RITMO_GITOPS_REPO_URL")
        .env("RITMO_GITOPS_BOOTSTRAP", "")
        .env("RITMO_MASTER_ENCRYPTION_KEY", EXAMPLE_KEY)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    command.output().expect("ritmo runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "stdout is not JSON ({error}):\n{}\nstderr:\n{}",
            stdout(output),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// A git repository holding a copy of `fixture`, committed on `main`.
fn repo_from(fixture: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ritmo_tests::copy_dir(fixture, dir.path());
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-qm", "config"]);
    dir
}

fn commit_all(dir: &Path, message: &str) {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", message]);
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn validate_accepts_the_example_repository() {
    let repo = repo_from(&example_dir());

    let output = ritmo(
        &["gitops", "validate", "--repo-path", path_str(repo.path())],
        None,
    );

    assert!(output.status.success(), "{}", stdout(&output));
    assert!(stdout(&output).contains("0 errors"), "{}", stdout(&output));
}

/// With nothing AWS configured (an inline master key, no secret ids, no KMS key), a command
/// loads no AWS configuration: without a region that would ask the instance metadata service,
/// which logs warnings and, where nothing answers, waits for its timeouts.
#[test]
fn a_command_with_nothing_aws_configured_asks_aws_nothing() {
    let repo = repo_from(&example_dir());
    let metadata_service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    metadata_service.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", metadata_service.local_addr().unwrap());

    let output = Command::new(env!("CARGO_BIN_EXE_ritmo"))
        .args(["gitops", "validate", "--repo-path", path_str(repo.path())])
        .env_remove("DATABASE_URL")
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", repo.path().join("no-aws-config"))
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &endpoint)
        .env("RITMO_GITOPS_BOOTSTRAP", "")
        .env("RITMO_MASTER_ENCRYPTION_KEY", EXAMPLE_KEY)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("ritmo runs");

    assert!(output.status.success(), "{}", stdout(&output));
    let asked = metadata_service.accept().map(|(_, from)| from).ok();
    assert_eq!(asked, None, "the metadata service was asked");
}

#[test]
fn validate_reports_every_fault_of_a_broken_repository_with_file_and_line() {
    let fixture = workspace_root().join("tests/fixtures/broken-repo");
    let expected = std::fs::read_to_string(fixture.join("EXPECTED.txt")).unwrap();

    let output = ritmo(
        &[
            "gitops",
            "validate",
            "--repo-path",
            path_str(&fixture),
            "--worktree",
        ],
        None,
    );

    assert_eq!(output.status.code(), Some(1));
    let printed = stdout(&output);
    for line in expected
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        // EXPECTED.txt lines read `path:line: CODE`; each diagnostic prints as a header
        // `error[CODE]: …` followed by ` --> path:line:column`.
        let (place, code) = line.rsplit_once(' ').unwrap();
        let lines: Vec<&str> = printed.lines().collect();
        let found = lines.windows(2).any(|pair| {
            pair[0].contains(&format!("[{code}]"))
                && pair[1]
                    .trim_start()
                    .strip_prefix("--> ")
                    .is_some_and(|at| at.starts_with(place))
        });
        assert!(found, "expected `{line}` in:\n{printed}");
    }
}

#[test]
fn validate_json_lists_diagnostics_with_positions() {
    let fixture = workspace_root().join("tests/fixtures/broken-repo");

    let output = ritmo(
        &[
            "gitops",
            "validate",
            "--repo-path",
            path_str(&fixture),
            "--worktree",
            "-o",
            "json",
        ],
        None,
    );

    let value = json(&output);
    assert_eq!(value["valid"], false);
    let first = &value["diagnostics"][0];
    for field in ["severity", "code", "path", "line", "column", "message"] {
        assert!(!first[field].is_null(), "missing `{field}` in {first}");
    }
}

#[tokio::test]
async fn sync_applies_then_a_second_sync_changes_nothing() {
    let db = TestDb::new().await;
    let repo = repo_from(&example_dir());
    let repo_path = path_str(repo.path());

    let first = ritmo(
        &["gitops", "sync", "--repo-path", repo_path, "-o", "json"],
        Some(&db.url),
    );
    let second = ritmo(
        &["gitops", "sync", "--repo-path", repo_path, "-o", "json"],
        Some(&db.url),
    );

    let first = json(&first);
    assert_eq!(first["status"], "succeeded", "{first}");
    assert!(
        first["summary"]["create"].as_u64().unwrap() >= 10,
        "{first}"
    );
    assert_eq!(first["actions"][0]["kind"], "Credential");
    let second = json(&second);
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(second["summary"]["create"], 0);
    assert_eq!(second["summary"]["update"], 0);
    assert_eq!(second["summary"]["unchanged"], first["summary"]["create"]);
}

#[tokio::test]
async fn plan_reads_like_terraform_and_dry_run_changes_nothing() {
    let db = TestDb::new().await;
    let repo = repo_from(&example_dir());
    let repo_path = path_str(repo.path());

    let plan = ritmo(&["gitops", "plan", "--repo-path", repo_path], Some(&db.url));
    let dry = ritmo(
        &[
            "gitops",
            "sync",
            "--repo-path",
            repo_path,
            "--dry-run",
            "-o",
            "json",
        ],
        Some(&db.url),
    );
    let jobs = ritmo(&["get", "jobs", "-o", "json"], Some(&db.url));

    assert!(plan.status.success());
    let text = stdout(&plan);
    assert!(text.contains("+ job/backend-service"), "{text}");
    assert!(
        text.contains("to create, 0 to update, 0 to delete, 0 unchanged."),
        "{text}"
    );
    assert_eq!(json(&dry)["status"], "planned");
    assert_eq!(json(&jobs)["items"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn an_edit_and_a_removal_show_as_update_and_delete() {
    let db = TestDb::new().await;
    let repo = repo_from(&example_dir());
    let repo_path = path_str(repo.path());
    ritmo(&["gitops", "sync", "--repo-path", repo_path], Some(&db.url));
    let job = repo.path().join("jobs/frontend-app.yaml");
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(&job, text.replace("description:", "description: Edited —")).unwrap();
    std::fs::remove_file(repo.path().join("webhooks/gitlab-frontend.yaml")).unwrap();
    commit_all(repo.path(), "edit and remove");

    let output = ritmo(
        &["gitops", "sync", "--repo-path", repo_path, "-o", "json"],
        Some(&db.url),
    );

    let value = json(&output);
    assert_eq!(value["status"], "succeeded", "{value}");
    let actions: Vec<(String, String)> = value["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().into(),
                a["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("update".to_string(), "frontend-app".to_string()),
            ("delete".to_string(), "gitlab-frontend-webhook".to_string())
        ]
    );
}

#[tokio::test]
async fn export_writes_a_repository_that_plans_to_zero_changes() {
    let db = TestDb::new().await;
    let repo = repo_from(&example_dir());
    ritmo(
        &["gitops", "sync", "--repo-path", path_str(repo.path())],
        Some(&db.url),
    );
    let out = tempfile::tempdir().unwrap();
    let exported = out.path().join("export");

    let export = ritmo(
        &["gitops", "export", "--output-dir", path_str(&exported)],
        Some(&db.url),
    );
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    git(&exported, &["init", "-q", "-b", "main"]);
    commit_all(&exported, "exported");
    let plan = ritmo(
        &[
            "gitops",
            "plan",
            "--repo-path",
            path_str(&exported),
            "-o",
            "json",
        ],
        Some(&db.url),
    );

    let value = json(&plan);
    assert_eq!(value["actions"], serde_json::json!([]), "{value}");
    assert_eq!(value["summary"]["create"], 0);
    assert!(value["summary"]["unchanged"].as_u64().unwrap() >= 10);
}

#[test]
fn without_a_database_plan_exits_2_with_a_clear_message() {
    let repo = repo_from(&example_dir());

    let output = ritmo(
        &["gitops", "plan", "--repo-path", path_str(repo.path())],
        None,
    );

    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("DATABASE_URL"));
}

#[test]
fn a_credential_round_trips_through_encrypt_and_decrypt_via_stdin() {
    let secret = "s3cr3t-value-from-stdin";
    let run = |args: &[&str], input: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ritmo"))
            .args(args)
            .env("RITMO_MASTER_ENCRYPTION_KEY", EXAMPLE_KEY)
            .env("RITMO_GITOPS_BOOTSTRAP", "")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };

    let encrypted = run(&["encrypt-credential", "--name", "github-pat"], secret);
    let ciphertext = stdout(&encrypted).trim().to_string();
    let decrypted = run(&["decrypt-credential", "--name", "github-pat"], &ciphertext);
    let wrong_name = run(&["decrypt-credential", "--name", "other"], &ciphertext);

    assert!(ciphertext.starts_with("AES256:"), "{ciphertext}");
    assert!(!ciphertext.contains(secret));
    assert_eq!(stdout(&decrypted), secret);
    assert_eq!(wrong_name.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong_name.stderr).contains("does not decrypt"));
    assert!(!String::from_utf8_lossy(&wrong_name.stderr).contains(secret));
}

/// People at a terminal keep their AWS keys in a profile: the CLI reads them there, though
/// the functions read only their environment.
#[tokio::test]
async fn kms_encryption_finds_its_region_and_keys_in_an_aws_profile() {
    let moto = ritmo_tests::moto::Moto::start();
    let created = moto.kms().await.create_key().send().await.unwrap();
    let key_id = created.key_metadata.unwrap().key_id;
    let aws = tempfile::tempdir().unwrap();
    std::fs::write(
        aws.path().join("config"),
        "[profile ritmo-test]\nregion = us-east-1\n",
    )
    .unwrap();
    std::fs::write(
        aws.path().join("credentials"),
        "[ritmo-test]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_ritmo"));
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") || name == "DATABASE_URL" {
            command.env_remove(name);
        }
    }

    let output = command
        .args([
            "encrypt-credential",
            "--name",
            "github-pat",
            "--value",
            "ghp_x",
        ])
        .args(["--kms-key-id", &key_id])
        .env("AWS_PROFILE", "ritmo-test")
        .env("AWS_CONFIG_FILE", aws.path().join("config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            aws.path().join("credentials"),
        )
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RITMO_GITOPS_BOOTSTRAP", "")
        .env("RITMO_MASTER_ENCRYPTION_KEY", EXAMPLE_KEY)
        .stdin(Stdio::null())
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout(&output).starts_with("KMS:"), "{}", stdout(&output));
}

/// Everything a sync may write, as text, to compare before and after.
async fn database_state(db: &TestDb) -> String {
    let client = db.client().await;
    let mut state = String::new();
    for query in [
        "select kind || '/' || name || ' ' || spec_hash || ' ' || spec::text || ' ' || labels::text from resources order by kind, name",
        "select target || ' ' || kind || '/' || name || ' ' || spec_hash from inventory order by 1",
        "select name || ' ' || generation || ' ' || coalesce(last_applied_commit, '-') from targets order by name",
        "select count(*)::text from revisions",
    ] {
        for row in client.query(query, &[]).await.unwrap() {
            state.push_str(&row.get::<_, String>(0));
            state.push('\n');
        }
    }
    state
}

#[tokio::test]
async fn a_repository_with_errors_changes_nothing_in_the_database() {
    let db = TestDb::new().await;
    let repo = repo_from(&example_dir());
    let repo_path = path_str(repo.path());
    ritmo(&["gitops", "sync", "--repo-path", repo_path], Some(&db.url));
    let before = database_state(&db).await;
    std::fs::remove_file(repo.path().join("webhooks/gitlab-frontend.yaml")).unwrap();
    let job = repo.path().join("jobs/backend-service.yaml");
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(
        &job,
        text.replace("credentials: github-pat", "credentials: no-such-credential"),
    )
    .unwrap();
    commit_all(repo.path(), "a dangling reference and a removal");

    let output = ritmo(
        &["gitops", "sync", "--repo-path", repo_path, "-o", "json"],
        Some(&db.url),
    );

    assert_eq!(output.status.code(), Some(1));
    let value = json(&output);
    assert_eq!(value["status"], "failed");
    assert!(
        value["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["code"] == "E300"),
        "{value}"
    );
    assert_eq!(database_state(&db).await, before);
}

#[tokio::test]
async fn history_pages_through_runs_newest_first() {
    let db = TestDb::new().await;
    let repo = repo_from(&example_dir());
    let repo_path = path_str(repo.path());
    for _ in 0..3 {
        ritmo(&["gitops", "sync", "--repo-path", repo_path], Some(&db.url));
    }

    let first = json(&ritmo(
        &["gitops", "history", "--limit", "2", "-o", "json"],
        Some(&db.url),
    ));
    let next = first["next"].as_str().unwrap().to_string();
    let second = json(&ritmo(
        &[
            "gitops", "history", "--limit", "2", "--before", &next, "-o", "json",
        ],
        Some(&db.url),
    ));

    let ids = |page: &Value| -> Vec<String> {
        page["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&first).len(), 2);
    assert_eq!(ids(&second).len(), 1);
    assert!(second["next"].is_null());
    assert!(!ids(&first).contains(&ids(&second)[0]));
}

/// A git fetch over https trusts the CAs the system names (here through `SSL_CERT_FILE`, read
/// at the first handshake) and no other: with another CA the handshake is refused and nothing
/// is sent; with the server's CA the fetch's first request reaches it.
#[tokio::test]
async fn a_git_fetch_over_https_trusts_the_ca_the_system_names_and_no_other() {
    let db = TestDb::new().await;
    let server = ritmo_tests::https_receiver::HttpsReceiver::start();
    let other = ritmo_tests::https_receiver::HttpsReceiver::start();
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/acme/config.git");
    let validate = |ca: PathBuf| {
        common::command(&["gitops", "validate", "--repo", &url], &db.url)
            .env("SSL_CERT_FILE", ca)
            .env_remove("SSL_CERT_DIR")
            .env("RITMO_GITOPS_CACHE_DIR", cache.path())
            .output()
            .unwrap()
    };

    let untrusted = validate(other.ca_file());
    let sent_untrusted = server.requests().len();
    let refused_handshakes = server.failed_handshakes();
    let trusted = validate(server.ca_file());

    assert_ne!(untrusted.status.code(), Some(0));
    assert!(
        common::stderr(&untrusted).contains("certificate"),
        "{}",
        common::stderr(&untrusted)
    );
    assert_eq!(sent_untrusted, 0);
    assert!(refused_handshakes > 0, "the connection was never tried");
    // The receiver answers 204 to everything, which is no git server: the fetch still fails,
    // after its request went through the trusted handshake.
    assert_ne!(trusted.status.code(), Some(0));
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .any(|request| request.path.contains("info/refs")),
        "{requests:?}\n{}",
        common::stderr(&trusted)
    );
}
