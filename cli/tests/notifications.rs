//! Each notification event as an operator subscribes to it, end to end: the built `ritmo` (its
//! commands, and `ritmo serve` for the events only the poller and the planner behind it raise)
//! posts to an HTTPS webhook whose certificate a throwaway CA issued. The product trusts that
//! CA only through `SSL_CERT_FILE`, as it would a corporate CA; nothing in its verification is
//! switched off. Every message's HMAC is checked with the configured signing secret, with its
//! target, commit and counts, and that no secret is in it. Real PostgreSQL and git.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use hmac::{Hmac, Mac};
use ritmo_tests::db::TestDb;
use ritmo_tests::git_http::TestRepo;
use ritmo_tests::https_receiver::{HttpsReceiver, ReceivedRequest};
use serde_json::Value;

use common::{EXAMPLE_KEY, json, stderr, stdout};

/// The secret the subscriptions sign with; the bootstrap file names its variable only.
const SIGNING_SECRET: &str = "notify-signing-secret-7d2e91c4a05b";
const API_URL: &str = "https://ritmo.example.com";
/// A bound on waiting for `ritmo serve` to deliver, not a speed assertion.
const DEADLINE: Duration = Duration::from_secs(60);

/// A config repository, a database, the HTTPS receiver and a directory for the bootstrap file
/// and the git cache.
struct Setup {
    db: TestDb,
    repo: TestRepo,
    receiver: HttpsReceiver,
    dir: tempfile::TempDir,
}

/// One `notifications.subscriptions` entry: the events, and the receiver's path it posts to.
struct Subscription<'a> {
    events: &'a [&'a str],
    path: &'a str,
}

impl Setup {
    /// A repository holding plugin `git-scm` 1.0.0 on `main`.
    async fn new() -> Setup {
        let repo = TestRepo::new();
        repo.write("plugins/git-scm.yaml", plugin("1.0.0"));
        repo.commit("git-scm 1.0.0");
        Setup {
            db: TestDb::new().await,
            repo,
            receiver: HttpsReceiver::start(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes the bootstrap file: this repository as target `default`, `sync_lines` added under
    /// `sync:`, `gitops_lines` under `gitops:`, and `subscriptions` to the receiver, signed with
    /// the secret in `RITMO_HOOK_SECRET`.
    fn configure(&self, sync_lines: &str, gitops_lines: &str, subscriptions: &[Subscription]) {
        let mut file = format!(
            "gitops:\n  repository:\n    url: {}\n    branch: main\n    path: /\n  sync:\n    \
             interval: 60\n{sync_lines}{gitops_lines}  notifications:\n    api_url: {API_URL}\n    \
             subscriptions:\n",
            self.repo.path().display()
        );
        for subscription in subscriptions {
            file.push_str(&format!(
                "      - events: [{}]\n        webhook:\n          url: {}\n          \
                 signing_secret_env: RITMO_HOOK_SECRET\n",
                subscription.events.join(", "),
                self.receiver.url(subscription.path)
            ));
        }
        std::fs::write(self.bootstrap(), file).unwrap();
    }

    fn bootstrap(&self) -> PathBuf {
        self.dir.path().join("gitops-bootstrap.yaml")
    }

    /// `ritmo --config BOOTSTRAP ARGS` as an operator runs it, trusting the receiver's CA
    /// through `SSL_CERT_FILE` and nothing else from this process's environment.
    fn command(&self, args: &[&str]) -> Command {
        let bootstrap = self.bootstrap().display().to_string();
        let mut all = vec!["--config", bootstrap.as_str()];
        all.extend_from_slice(args);
        let mut command = common::command(&all, &self.db.url);
        for (name, _) in std::env::vars() {
            let ours = matches!(
                name.as_str(),
                "RITMO_GITOPS_BOOTSTRAP" | "RITMO_MASTER_ENCRYPTION_KEY"
            );
            let inherited = name.starts_with("RITMO_")
                || name.starts_with("AWS_")
                || name.starts_with("SSL_CERT_");
            if inherited && !ours {
                command.env_remove(name);
            }
        }
        command
            .env("SSL_CERT_FILE", self.receiver.ca_file())
            .env("RITMO_HOOK_SECRET", SIGNING_SECRET)
            .env("RITMO_GITOPS_CACHE_DIR", self.dir.path().join("cache"))
            .env("USER", "jane");
        command
    }

    fn ritmo(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("ritmo runs")
    }

    /// `ritmo serve` until the receiver holds `count` requests (its poller ticks once at start,
    /// then not for an hour), then stopped; the requests.
    fn serve_until(&self, count: usize) -> Vec<ReceivedRequest> {
        let log = self.dir.path().join("serve.log");
        let mut child = self
            .command(&[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--poll-interval",
                "3600",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let received = self.receiver.wait_for(count, DEADLINE);
        let _ = child.kill();
        let _ = child.wait();
        received.unwrap_or_else(|| {
            panic!(
                "ritmo serve delivered {:?}; its log:\n{}",
                self.receiver.requests(),
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
    }

    /// The one request the receiver holds, after a command that has exited (its deliveries are
    /// done by then).
    fn only_request(&self, output: &Output) -> ReceivedRequest {
        let requests = self.receiver.requests();
        assert_eq!(
            requests.len(),
            1,
            "{requests:#?}\nstdout:\n{}\nstderr:\n{}",
            stdout(output),
            stderr(output)
        );
        requests.into_iter().next().unwrap()
    }
}

fn plugin(version: &str) -> String {
    format!(
        "apiVersion: ritmo.dev/v1\nkind: Plugin\nmetadata:\n  name: git-scm\nspec:\n  type: scm\n  \
         binary_path: /opt/ritmo/plugins/git-scm\n  version: {version}\n  enabled: true\n"
    )
}

/// The message of `request`, once its signature is checked the way the README tells a
/// receiver to (HMAC-SHA256 of the raw body under the signing secret) and no secret is found
/// anywhere in the request.
fn verified(request: &ReceivedRequest, event: &str) -> Value {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SIGNING_SECRET.as_bytes()).unwrap();
    mac.update(&request.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        request.header("x-ritmo-signature"),
        Some(expected.as_str()),
        "{}",
        request.body_text()
    );
    assert_eq!(request.method, "POST");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("x-ritmo-event"), Some(event));
    let everything = format!("{:?} {}", request.headers, request.body_text());
    for secret in [SIGNING_SECRET, EXAMPLE_KEY] {
        assert!(!everything.contains(secret), "{everything}");
    }
    let message: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(message["event"], event, "{message}");
    assert_eq!(message["target"], "default", "{message}");
    message
}

/// The README's shell check of a signature, word for word.
const README_CHECK: &str = r#"expected="sha256=$(openssl dgst -sha256 -hmac "$RITMO_HOOK_SECRET" -r < body.json | cut -d' ' -f1)"
[ "$expected" = "$SIGNATURE" ] && echo "signature ok" || echo "reject: not signed with our secret""#;

/// What [`README_CHECK`] prints for `request`, its body saved as received.
fn readme_check(request: &ReceivedRequest) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("body.json"), &request.body).unwrap();
    let output = Command::new("sh")
        .args(["-c", README_CHECK])
        .current_dir(dir.path())
        .env("RITMO_HOOK_SECRET", SIGNING_SECRET)
        .env(
            "SIGNATURE",
            request.header("x-ritmo-signature").unwrap_or_default(),
        )
        .output()
        .unwrap();
    stdout(&output).trim().to_string()
}

fn plan_url(sync_id: &str) -> String {
    format!("{API_URL}/api/v1/gitops/plans/{sync_id}")
}

#[tokio::test]
async fn a_sync_is_announced_as_sync_succeeded_with_its_commit_and_counts() {
    let setup = Setup::new().await;
    let commit = setup.repo.head();
    setup.configure(
        "",
        "",
        &[Subscription {
            events: &["sync_succeeded"],
            path: "/ritmo",
        }],
    );

    let output = setup.ritmo(&["gitops", "sync", "-o", "json"]);

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let sync_id = json(&output)["sync_id"].as_str().unwrap().to_string();
    let request = setup.only_request(&output);
    assert_eq!(request.path, "/ritmo");
    let message = verified(&request, "sync_succeeded");
    assert_eq!(readme_check(&request), "signature ok");
    assert_eq!(message["commit"], commit, "{message}");
    assert_eq!(message["sync_id"], sync_id);
    assert_eq!(message["plan_url"], plan_url(&sync_id));
    assert_eq!(
        message["counts"],
        serde_json::json!({"create": 1, "update": 0, "delete": 0, "unchanged": 0})
    );
}

#[tokio::test]
async fn a_sync_of_a_commit_with_errors_is_announced_as_sync_failed() {
    let setup = Setup::new().await;
    setup.configure(
        "",
        "",
        &[Subscription {
            events: &["sync_failed"],
            path: "/ritmo",
        }],
    );
    // A plugin without its spec: two validation errors at most, each quoted in the text.
    setup.repo.write(
        "plugins/broken.yaml",
        "apiVersion: ritmo.dev/v1\nkind: Plugin\nmetadata:\n  name: broken\n",
    );
    let commit = setup.repo.commit("broken plugin");

    let output = setup.ritmo(&["gitops", "sync", "-o", "json"]);

    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let reported = json(&output);
    let sync_id = reported["sync_id"].as_str().unwrap().to_string();
    let errors = reported["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == "error")
        .count();
    let message = verified(&setup.only_request(&output), "sync_failed");
    assert_eq!(message["commit"], commit, "{message}");
    assert_eq!(message["sync_id"], sync_id);
    assert_eq!(message["plan_url"], plan_url(&sync_id));
    assert!(errors > 0, "{reported}");
    assert_eq!(message["counts"], serde_json::json!({ "errors": errors }));
    assert!(
        message["text"]
            .as_str()
            .unwrap()
            .contains("plugins/broken.yaml"),
        "{message}"
    );
}

#[tokio::test]
async fn a_plan_that_needs_approval_is_announced_as_pending_approval() {
    let setup = Setup::new().await;
    let commit = setup.repo.head();
    setup.configure(
        "    auto_apply: false\n",
        "",
        &[Subscription {
            events: &["pending_approval"],
            path: "/ritmo",
        }],
    );

    let output = setup.ritmo(&["gitops", "sync", "-o", "json"]);

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let reported = json(&output);
    assert_eq!(reported["status"], "pending_approval", "{reported}");
    let sync_id = reported["sync_id"].as_str().unwrap().to_string();
    let message = verified(&setup.only_request(&output), "pending_approval");
    assert_eq!(message["commit"], commit, "{message}");
    assert_eq!(message["sync_id"], sync_id);
    assert_eq!(message["plan_url"], plan_url(&sync_id));
    assert_eq!(
        message["counts"],
        serde_json::json!({"create": 1, "update": 0, "delete": 0, "unchanged": 0})
    );
    assert!(
        message["text"]
            .as_str()
            .unwrap()
            .contains(&format!("ritmo gitops approve {sync_id}")),
        "{message}"
    );
}

#[tokio::test]
async fn suspending_a_target_is_announced_as_suspended_with_who_did_it() {
    let setup = Setup::new().await;
    setup.configure(
        "",
        "",
        &[Subscription {
            events: &["suspended"],
            path: "/ritmo",
        }],
    );

    let synced = setup.ritmo(&["gitops", "sync"]);
    assert_eq!(synced.status.code(), Some(0), "{}", stderr(&synced));

    let output = setup.ritmo(&["gitops", "suspend", "--target", "default"]);

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let message = verified(&setup.only_request(&output), "suspended");
    // The commit the target stays at while suspended.
    assert_eq!(message["commit"], setup.repo.head(), "{message}");
    assert_eq!(message["counts"], serde_json::json!({}));
    assert!(
        message["text"]
            .as_str()
            .unwrap()
            .contains("Suspended by jane"),
        "{message}"
    );
}

#[tokio::test]
async fn a_row_changed_behind_ritmos_back_is_announced_as_drift_detected_by_the_poller() {
    let setup = Setup::new().await;
    setup.configure(
        "",
        "",
        &[Subscription {
            events: &["drift_detected"],
            path: "/ritmo",
        }],
    );
    let synced = setup.ritmo(&["gitops", "sync"]);
    assert_eq!(synced.status.code(), Some(0), "{}", stderr(&synced));
    assert!(
        setup.receiver.requests().is_empty(),
        "only drift is subscribed"
    );
    setup
        .db
        .client()
        .await
        .execute(
            "UPDATE resources SET spec = jsonb_set(spec, '{version}', '\"9.9.9\"')
             WHERE kind = 'Plugin' AND name = 'git-scm'",
            &[],
        )
        .await
        .unwrap();

    let requests = setup.serve_until(1);

    assert_eq!(requests.len(), 1, "{requests:#?}");
    let message = verified(&requests[0], "drift_detected");
    assert_eq!(message["counts"], serde_json::json!({ "drifted": 1 }));
    // Git's version of the drifted row is the commit last applied.
    assert_eq!(message["commit"], setup.repo.head(), "{message}");
    assert!(
        message["text"]
            .as_str()
            .unwrap()
            .contains("Changed outside Git: Plugin/git-scm"),
        "{message}"
    );
}

#[tokio::test]
async fn a_scheduled_sync_inside_a_deny_window_is_announced_as_waiting_for_window() {
    let setup = Setup::new().await;
    let commit = setup.repo.head();
    // A window that opens every minute and lasts a day: closed whenever the poller looks.
    setup.configure(
        "",
        "  sync_windows:\n    - { kind: deny, schedule: \"* * * * *\", duration: 1d }\n",
        &[Subscription {
            events: &["waiting_for_window"],
            path: "/ritmo",
        }],
    );

    let requests = setup.serve_until(1);

    assert_eq!(requests.len(), 1, "{requests:#?}");
    let message = verified(&requests[0], "waiting_for_window");
    assert_eq!(message["commit"], commit, "{message}");
    let sync_id = message["sync_id"].as_str().unwrap();
    assert_eq!(message["plan_url"], plan_url(sync_id));
    assert_eq!(
        message["counts"],
        serde_json::json!({"create": 1, "update": 0, "delete": 0, "unchanged": 0})
    );
    assert!(
        message["text"]
            .as_str()
            .unwrap()
            .contains(&format!("ritmo gitops approve {sync_id} --override-window")),
        "{message}"
    );
    let history = json(&setup.ritmo(&["gitops", "history", "-o", "json"]));
    assert_eq!(
        history["runs"][0]["status"], "waiting_for_window",
        "{history}"
    );
}

#[tokio::test]
async fn a_subscription_to_other_events_receives_nothing() {
    let setup = Setup::new().await;
    setup.configure(
        "",
        "",
        &[
            Subscription {
                events: &["sync_succeeded"],
                path: "/synced",
            },
            Subscription {
                events: &[
                    "sync_failed",
                    "drift_detected",
                    "pending_approval",
                    "waiting_for_window",
                    "suspended",
                ],
                path: "/everything-else",
            },
        ],
    );

    let output = setup.ritmo(&["gitops", "sync"]);

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let request = setup.only_request(&output);
    assert_eq!(request.path, "/synced");
    verified(&request, "sync_succeeded");
}

#[tokio::test]
async fn a_receiver_whose_ca_is_not_trusted_gets_nothing_and_the_sync_still_succeeds() {
    let setup = Setup::new().await;
    setup.configure(
        "",
        "",
        &[Subscription {
            events: &["sync_succeeded"],
            path: "/ritmo",
        }],
    );
    // Another throwaway CA, which did not issue the receiver's certificate.
    let other = HttpsReceiver::start();
    let untrusted = setup
        .command(&["gitops", "sync"])
        .env("SSL_CERT_FILE", other.ca_file())
        .output()
        .unwrap();

    assert_eq!(untrusted.status.code(), Some(0), "{}", stderr(&untrusted));
    assert!(setup.receiver.requests().is_empty());
    assert!(
        setup.receiver.failed_handshakes() > 0,
        "the connection was never tried"
    );
    assert!(
        stderr(&untrusted).contains("notification not delivered"),
        "{}",
        stderr(&untrusted)
    );
}
