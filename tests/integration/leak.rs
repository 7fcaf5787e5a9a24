//! The leak test: known secret values are planted everywhere the service gets secrets from (a
//! git token, a webhook secret, the master key, a credential's plaintext encrypted in the
//! repository, the database password), then the `ritmo` CLI runs validate, plan, sync and
//! rotate-credentials with `-vv`, and failing cases (wrong master key, tampered and swapped
//! ciphertexts, an unreachable database, a wrong git token, a bad webhook signature, a refused
//! database secret) run in-process under a DEBUG subscriber. A second scenario runs
//! `ritmo serve` (`RUST_LOG=debug`, SQS queues in moto) and drives it over HTTP: a webhook with
//! a bad signature, a good one, a manual sync of a target whose git token is wrong, and the
//! status, history, plan and credential reads; then the same pipeline runs in-process on
//! queues nobody consumes, so every plan and apply message can be read back (queues and
//! DLQs). None of the planted values, nor their base64 or hex forms, may appear in any stdout,
//! stderr, log line, error message, API answer, queued message, or row of any table. `ritmo
//! serve`'s API token is planted too.
//!
//! The CLI is `target/debug/ritmo`, next to this test binary's directory: build it first
//! (`cargo build -p ritmo-cli`); the test says so when it is missing.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, Once};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ritmo::crypto::secret_refs::SecretRefChecker;
use ritmo::crypto::{CredentialKeys, MasterKey, MasterKeyring, SecretString, SecretsManager};
use ritmo::git::{Auth, RepoLocation};
use ritmo::manifest::Limits;
use ritmo::queue::consume::Consumer;
use ritmo::source::{self, SourceSpec};
use ritmo::store::{DatabaseSettings, SslMode, Store};
use ritmo::webhook::{self, Provider};
use ritmo_tests::db::TestDb;
use ritmo_tests::git_http::{GitHttpServer, TestRepo};
use ritmo_tests::moto::Moto;

const GIT_TOKEN: &str = "planted-git-token-3d9a61c0";
const WRONG_GIT_TOKEN: &str = "planted-wrong-git-token-77e0";
const WEBHOOK_SECRET: &str = "planted-webhook-secret-b41f";
/// The webhook secret's `AWSPREVIOUS` version in the serve scenario.
const PREVIOUS_WEBHOOK_SECRET: &str = "planted-previous-webhook-secret-5a0e";
/// The Secrets Manager secret (in moto) `ritmo serve` reads the webhook secret from.
const WEBHOOK_SECRET_ID: &str = "ritmo/leak-webhook";
/// Exactly 32 bytes: a raw master key.
const MASTER_KEY: &str = "planted-master-key-0123456789abc";
const NEW_MASTER_KEY: &str = "planted-newer-master-key-0123456";
const WRONG_MASTER_KEY: &str = "planted-wrong-master-key-0123456";
const PLAINTEXT: &str = "planted-credential-plaintext-6c2e";
const DB_PASSWORD: &str = "planted-db-password-a07d";
/// The bearer token `ritmo serve`'s API requires for state changes.
const API_TOKEN: &str = "planted-api-token-9e3b27c4d1";

/// Every planted value and the encodings a careless log line could use.
fn planted_forms() -> Vec<(&'static str, String)> {
    let mut forms = Vec::new();
    for (name, value) in [
        ("git token", GIT_TOKEN),
        ("wrong git token", WRONG_GIT_TOKEN),
        ("webhook secret", WEBHOOK_SECRET),
        ("previous webhook secret", PREVIOUS_WEBHOOK_SECRET),
        ("master key", MASTER_KEY),
        ("new master key", NEW_MASTER_KEY),
        ("wrong master key", WRONG_MASTER_KEY),
        ("credential plaintext", PLAINTEXT),
        ("database password", DB_PASSWORD),
        ("api token", API_TOKEN),
    ] {
        forms.push((name, value.to_owned()));
        forms.push((name, STANDARD.encode(value)));
        forms.push((name, hex(value.as_bytes())));
    }
    // `x-access-token:<token>` as HTTP basic auth.
    forms.push((
        "git basic auth",
        STANDARD.encode(format!("x-access-token:{GIT_TOKEN}")),
    ));
    forms
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// --- in-process log capture --------------------------------------------------------------

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOG.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A global DEBUG subscriber writing into [`LOG`] (other tests' lines land there too, which
/// only makes the check stricter).
fn capture_logs() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init()
            .expect("no other test installs a global tracing subscriber");
    });
}

fn captured_logs() -> String {
    String::from_utf8_lossy(
        &LOG.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned()
}

// --- the CLI -----------------------------------------------------------------------------

fn ritmo_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let debug_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/debug/deps/<test binary>");
    let binary = debug_dir.join("ritmo");
    assert!(
        binary.is_file(),
        "`{}` is missing: run `cargo build -p ritmo-cli` before the integration tests",
        binary.display()
    );
    binary
}

struct Run {
    label: String,
    output: Output,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

/// Runs `ritmo -vv ARGS` with every planted secret in its environment.
fn ritmo(label: &str, args: &[&str], master_key: &str, database_url: &str) -> Run {
    let mut command = Command::new(ritmo_binary());
    for (name, _) in std::env::vars() {
        if name.starts_with("RITMO_")
            || name.starts_with("AWS_")
            || name.starts_with("DATABASE_")
            || name == "RUST_LOG"
        {
            command.env_remove(name);
        }
    }
    let output = command
        .arg("-vv")
        .args(args)
        .env("RITMO_GITOPS_BOOTSTRAP", "")
        .env("RITMO_MASTER_ENCRYPTION_KEY", master_key)
        .env("RITMO_GITOPS_AUTH_TYPE", "token")
        .env("RITMO_GITOPS_TOKEN", GIT_TOKEN)
        .env("RITMO_GITOPS_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("DATABASE_URL", database_url)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("ritmo runs");
    Run {
        label: label.to_owned(),
        output,
    }
}

fn credential_yaml(name: &str, value: &str) -> String {
    format!(
        "apiVersion: ritmo.dev/v1\nkind: Credential\nmetadata:\n  name: {name}\nspec:\n  type: token\n  encrypted_value: \"{value}\"\n"
    )
}

/// `postgres://postgres:<DB_PASSWORD>@host:port/<db>` from the test database's URL.
fn with_password(url: &str) -> String {
    url.replacen("://postgres@", &format!("://postgres:{DB_PASSWORD}@"), 1)
}

/// Every row of every table of the test database, as text.
async fn dump_tables(db: &TestDb) -> Vec<(String, String)> {
    let client = db.client().await;
    let tables = client
        .query(
            "SELECT table_schema::text, table_name::text FROM information_schema.tables
              WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
                AND table_type = 'BASE TABLE'",
            &[],
        )
        .await
        .unwrap();
    let mut rows = Vec::new();
    for table in &tables {
        let (schema, name): (String, String) = (table.get(0), table.get(1));
        let sql = format!("SELECT t::text FROM \"{schema}\".\"{name}\" t");
        for row in client.query(&sql, &[]).await.unwrap() {
            rows.push((format!("table {schema}.{name}"), row.get::<_, String>(0)));
        }
    }
    rows
}

fn assert_no_planted_value(texts: &[(String, String)]) {
    let forms = planted_forms();
    let mut leaks = Vec::new();
    for (label, text) in texts {
        for (what, form) in &forms {
            if let Some(line) = text.lines().find(|line| line.contains(form.as_str())) {
                leaks.push(format!("{what} in {label}: {line}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "planted secrets leaked:\n{}",
        leaks.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_planted_secret_reaches_output_logs_errors_or_the_database() {
    capture_logs();
    let db = TestDb::new().await;
    let database_url = with_password(&db.url);
    let keyring = MasterKeyring::parse(MASTER_KEY).unwrap();
    let repo = TestRepo::new();
    let registry_value = keyring
        .encrypt(Some("registry"), PLAINTEXT.as_bytes())
        .unwrap();
    let other_value = keyring
        .encrypt(Some("other"), PLAINTEXT.as_bytes())
        .unwrap();
    repo.write(
        "credentials/registry.yaml",
        credential_yaml("registry", &registry_value),
    );
    repo.write(
        "credentials/other.yaml",
        credential_yaml("other", &other_value),
    );
    repo.write("README.md", "config\n");
    repo.commit("credentials");
    let dir = repo.path().to_str().unwrap().to_owned();
    let mut texts: Vec<(String, String)> = Vec::new();

    // Happy paths.
    let mut runs = vec![
        ritmo(
            "validate",
            &["gitops", "validate", "--repo-path", &dir],
            MASTER_KEY,
            &database_url,
        ),
        ritmo(
            "plan",
            &["gitops", "plan", "--repo-path", &dir],
            MASTER_KEY,
            &database_url,
        ),
        ritmo(
            "sync",
            &["gitops", "sync", "--repo-path", &dir],
            MASTER_KEY,
            &database_url,
        ),
        ritmo(
            "status",
            &["gitops", "status", "-o", "json"],
            MASTER_KEY,
            &database_url,
        ),
    ];
    // Failing cases.
    runs.push(ritmo(
        "wrong key",
        &["gitops", "validate", "--repo-path", &dir],
        WRONG_MASTER_KEY,
        &database_url,
    ));
    let tampered = {
        let encoded = registry_value.trim_start_matches("AES256:");
        let mut bytes = STANDARD.decode(encoded).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        format!("AES256:{}", STANDARD.encode(bytes))
    };
    repo.write(
        "credentials/registry.yaml",
        credential_yaml("registry", &tampered),
    );
    runs.push(ritmo(
        "tampered",
        &["gitops", "validate", "--worktree", "--repo-path", &dir],
        MASTER_KEY,
        &database_url,
    ));
    repo.write(
        "credentials/registry.yaml",
        credential_yaml("registry", &other_value),
    );
    runs.push(ritmo(
        "swapped",
        &["gitops", "validate", "--worktree", "--repo-path", &dir],
        MASTER_KEY,
        &database_url,
    ));
    runs.push(ritmo(
        "sync swapped",
        &["gitops", "sync", "--worktree", "--repo-path", &dir],
        MASTER_KEY,
        &database_url,
    ));
    let missing_db = format!("{}_missing", database_url);
    runs.push(ritmo(
        "no such database",
        &["gitops", "plan", "--repo-path", &dir],
        MASTER_KEY,
        &missing_db,
    ));
    runs.push(ritmo(
        "decrypt with the wrong name",
        &[
            "decrypt-credential",
            "--name",
            "registry",
            "--value",
            &other_value,
        ],
        MASTER_KEY,
        &database_url,
    ));
    // Rotation to a new key: the files change, nothing is printed but names and paths.
    repo.write(
        "credentials/registry.yaml",
        credential_yaml("registry", &registry_value),
    );
    let ring = format!("old:{MASTER_KEY},new:{NEW_MASTER_KEY}");
    runs.push(ritmo(
        "rotate",
        &["rotate-credentials", "--repo-path", &dir],
        &ring,
        &database_url,
    ));

    for run in &runs {
        texts.push((format!("{} stdout", run.label), run.stdout()));
        texts.push((format!("{} stderr", run.label), run.stderr()));
    }
    let run = |label: &str| runs.iter().find(|r| r.label == label).unwrap();
    assert_eq!(
        run("validate").code(),
        Some(0),
        "{}",
        run("validate").stderr()
    );
    assert_eq!(run("plan").code(), Some(0), "{}", run("plan").stderr());
    assert_eq!(run("sync").code(), Some(0), "{}", run("sync").stderr());
    assert!(run("sync").stdout().contains("Applied."));
    assert!(
        run("sync").stderr().contains("DEBUG"),
        "-vv logs at debug level"
    );
    assert_eq!(run("wrong key").code(), Some(1));
    // Diagnostics print as rustc's: `error[CODE]: message`, then ` --> path:line:column`.
    let reported = |out: &str, header: &str, place: &str| {
        let lines: Vec<&str> = out.lines().collect();
        lines.windows(2).any(|pair| {
            pair[0].starts_with(header) && pair[1].trim_start() == format!("--> {place}")
        })
    };
    let wrong_key = run("wrong key").stdout();
    assert!(
        reported(&wrong_key, "error[E402]", "credentials/registry.yaml:7:20"),
        "{wrong_key}"
    );
    assert!(
        reported(&wrong_key, "error[E402]", "credentials/other.yaml:7:20"),
        "{wrong_key}"
    );
    for label in ["tampered", "swapped"] {
        let out = run(label).stdout();
        assert_eq!(run(label).code(), Some(1), "{label}: {out}");
        assert!(
            reported(
                &out,
                "error[E402]: encrypted value of credential `registry` does not decrypt with \
                 the configured key: wrong key, tampered, or copied from another credential",
                "credentials/registry.yaml:7:20"
            ),
            "{label}: {out}"
        );
        assert!(
            !out.contains("--> credentials/other.yaml"),
            "{label}: {out}"
        );
    }
    assert_eq!(run("sync swapped").code(), Some(1));
    assert_eq!(run("no such database").code(), Some(2));
    assert!(run("no such database").stderr().contains("postgres:***@"));
    assert_eq!(run("decrypt with the wrong name").code(), Some(1));
    assert_eq!(run("rotate").code(), Some(0), "{}", run("rotate").stderr());
    assert!(run("rotate").stdout().contains("changed credentials/"));
    let rotated = std::fs::read_to_string(repo.path().join("credentials/registry.yaml")).unwrap();
    let only_new = MasterKeyring::single(MasterKey::parse(NEW_MASTER_KEY).unwrap());
    let value = rotated
        .lines()
        .find_map(|l| l.trim().strip_prefix("encrypted_value: "))
        .unwrap();
    assert!(
        only_new
            .decrypt(Some("registry"), value.trim_matches('"'))
            .is_ok()
    );
    texts.push(("rotated file".into(), rotated));

    // In-process failures under the DEBUG subscriber.
    texts.extend(in_process_failures(&db).await);

    let rows = dump_tables(&db).await;
    assert!(
        rows.iter().any(|(_, row)| row.contains(&registry_value)),
        "the ciphertext (never the plaintext) is stored"
    );
    assert!(rows.iter().any(|(label, _)| label.ends_with(".sync_runs")));
    texts.extend(rows);
    let logs = captured_logs();
    assert!(
        logs.contains("DEBUG"),
        "the subscriber captured debug lines"
    );
    texts.push(("in-process logs".into(), logs));
    assert_no_planted_value(&texts);
}

/// Wrong git token, bad webhook signature, a database secret naming an unknown role, a
/// wrong master key: each error's Display and Debug, with its sources.
async fn in_process_failures(db: &TestDb) -> Vec<(String, String)> {
    let mut texts = Vec::new();

    // Git over smart HTTP with basic auth: the right token reads, a wrong one is refused.
    let served = TestRepo::new();
    served.write("jobs/a.yaml", "kind: Job\n");
    served.commit("initial");
    let server = GitHttpServer::start(served.path(), Some(("x-access-token", GIT_TOKEN)));
    let cache = tempfile::tempdir().unwrap();
    let source = |token: &str| SourceSpec {
        location: RepoLocation::parse(&server.url(".git")).unwrap(),
        branch: Some("main".into()),
        path: "/".into(),
        worktree: false,
        auth: Auth::Token(SecretString::from(token.to_owned())),
        cache_dir: cache.path().join(token.len().to_string()),
    };
    let good = source::read_source(&source(GIT_TOKEN), Limits::default()).await;
    assert!(good.is_ok(), "{:?}", good.err());
    let refused = source::read_source(&source(WRONG_GIT_TOKEN), Limits::default())
        .await
        .unwrap_err();
    texts.push(described("wrong git token", &refused));
    texts.push(("git source spec".into(), format!("{:?}", source(GIT_TOKEN))));

    // A webhook with a signature made with another secret.
    let body = br#"{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567"}"#;
    let headers = vec![
        ("X-GitHub-Event", "push".to_owned()),
        ("X-Hub-Signature-256", format!("sha256={}", "ab".repeat(32))),
    ];
    let bad_signature = webhook::verify(
        Provider::GitHub,
        &headers,
        body,
        &[SecretString::from(WEBHOOK_SECRET)],
    )
    .unwrap_err();
    texts.push(described("bad webhook signature", &bad_signature));

    // A wrong master key, in-process.
    let keys = CredentialKeys {
        master: Some(MasterKeyring::parse(WRONG_MASTER_KEY).unwrap()),
        ..CredentialKeys::default()
    };
    let value = MasterKeyring::parse(MASTER_KEY)
        .unwrap()
        .encrypt(Some("registry"), PLAINTEXT.as_bytes())
        .unwrap();
    texts.push(described(
        "wrong master key",
        &keys.decrypt("registry", &value).await.unwrap_err(),
    ));
    texts.push(("credential keys".into(), format!("{keys:?}")));
    let checked = source::check(
        ritmo::git::Snapshot {
            revision: ritmo::model::Revision::Worktree,
            files: vec![ritmo::manifest::SourceFile {
                path: "credentials/registry.yaml".into(),
                content: ritmo::manifest::FileContent::Bytes(
                    credential_yaml("registry", &value).into_bytes(),
                ),
            }],
        },
        source::Checks {
            keys: &keys,
            refs: &SecretRefChecker::off("offline"),
            builtin_plugins: &Default::default(),
        },
        &Limits::default(),
    )
    .await;
    texts.push((
        "check diagnostics".into(),
        serde_json::to_string(&checked.diagnostics).unwrap(),
    ));

    // The database password in a Secrets Manager secret: refused once, then read again.
    let moto = Moto::start();
    let secret = serde_json::json!({
        "username": format!("{}_nobody", db.name),
        "password": DB_PASSWORD,
        "host": "127.0.0.1",
        "port": 5432,
        "dbname": db.name,
    });
    moto.secrets_manager()
        .await
        .create_secret()
        .name("rds!leak")
        .secret_string(secret.to_string())
        .send()
        .await
        .unwrap();
    let secrets = SecretsManager::new(moto.secrets_manager().await);
    let settings = DatabaseSettings {
        secret_id: Some("rds!leak".into()),
        sslmode: Some(SslMode::Prefer),
        ..DatabaseSettings::default()
    };
    let refused = Store::connect_with(&settings, Some(&secrets))
        .await
        .unwrap_err();
    texts.push(described("database secret refused", &refused));
    texts.push((
        "secrets manager".into(),
        format!("{secrets:?} {settings:?}"),
    ));
    let url_settings = DatabaseSettings::from_url(&with_password(&db.url));
    let store = Store::connect_with(&url_settings, None).await.unwrap();
    texts.push((
        "store and url settings".into(),
        format!("{store:?} {url_settings:?}"),
    ));
    let _ = std::io::stderr().flush();
    texts
}

/// An error's Display and Debug, with every source's.
fn described(label: &str, error: &(dyn std::error::Error + 'static)) -> (String, String) {
    let mut text = format!("{error}\n{error:?}");
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!("\n{cause}\n{cause:?}"));
        source = cause.source();
    }
    (label.to_owned(), text)
}

// --- `ritmo serve` and queued messages ---------------------------------------------------

/// How long `ritmo serve` may take to come up, or a sync to finish, on a loaded 2-core machine
/// before the test gives up (a deadline to stop waiting, not an assertion about speed).
/// Where `ritmo serve` takes webhooks (the webhook function's default path).
const WEBHOOK_PATH: &str = "/webhooks/gitops";

const SERVE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(180);

/// Every message in `queue_url`, received and deleted until the queue answers none (a FIFO
/// queue hands out the next message of a group only once the one before is gone): bodies
/// first, then attributes and message attributes, as text.
async fn drain_queue(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<String> {
    use aws_sdk_sqs::types::MessageSystemAttributeName;
    let mut messages = Vec::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(300)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        let batch = received.messages.unwrap_or_default();
        if batch.is_empty() {
            return messages;
        }
        for message in batch {
            if let Some(receipt) = &message.receipt_handle {
                sqs.delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .unwrap();
            }
            messages.push(format!(
                "{}\n{:?}\n{:?}",
                message.body.as_deref().unwrap_or_default(),
                message.attributes,
                message.message_attributes
            ));
        }
    }
}

/// A GitHub push of `commit` to `main` of `repo_url`, signed with `secret`.
fn signed_push(repo_url: &str, commit: &str, secret: &str) -> (Vec<(String, String)>, Vec<u8>) {
    use hmac::Mac as _;
    let body = serde_json::json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": commit,
        "repository": {"full_name": "acme/config", "clone_url": repo_url},
        "pusher": {"name": "alice"},
    })
    .to_string()
    .into_bytes();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&body);
    let signature = hex(&mac.finalize().into_bytes());
    let headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("X-GitHub-Event".to_owned(), "push".to_owned()),
        (
            "X-GitHub-Delivery".to_owned(),
            uuid::Uuid::new_v4().to_string(),
        ),
        (
            "X-Hub-Signature-256".to_owned(),
            format!("sha256={signature}"),
        ),
    ];
    (headers, body)
}

/// One HTTP/1.1 request to `127.0.0.1:port` (`Connection: close`): the status and the body
/// (de-chunked). `None` when nothing answers.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Option<(u16, String)> {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .ok()?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let status = head.get(9..12)?.parse().ok()?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Some((
        status,
        if chunked {
            dechunk(rest)
        } else {
            rest.to_owned()
        },
    ))
}

fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}

/// The bootstrap file of the serve scenario: target `good` on an open server with the git
/// token, target `locked` on a server demanding another token, given the wrong one. The
/// tokens come from the environment through `${…}`, as an operator's file would take them.
fn serve_bootstrap(dir: &Path, open_url: &str, locked_url: &str) -> PathBuf {
    let path = dir.join("gitops-bootstrap.yaml");
    std::fs::write(
        &path,
        format!(
            "gitops:
  enabled: true
  sync:
    interval: 3600
    auto_apply: true
  targets:
    - name: good
      repository: {{url: \"{open_url}\", branch: main}}
      authentication: {{type: token, token: \"${{LEAK_GIT_TOKEN}}\"}}
    - name: locked
      repository: {{url: \"{locked_url}\", branch: main}}
      authentication: {{type: token, token: \"${{LEAK_WRONG_GIT_TOKEN}}\"}}
"
        ),
    )
    .unwrap();
    path
}

/// The environment both the served process and the in-process pipeline get: every planted
/// secret, the bootstrap file, moto's endpoint and the queues.
fn serve_env(
    bootstrap: &Path,
    database_url: &str,
    moto: &Moto,
    queues: (&str, &str),
    cache: &Path,
) -> Vec<(String, String)> {
    [
        ("RITMO_GITOPS_BOOTSTRAP", bootstrap.to_str().unwrap()),
        ("LEAK_GIT_TOKEN", GIT_TOKEN),
        ("LEAK_WRONG_GIT_TOKEN", WRONG_GIT_TOKEN),
        ("RITMO_MASTER_ENCRYPTION_KEY", MASTER_KEY),
        ("RITMO_GITOPS_WEBHOOK_SECRET_ARN", WEBHOOK_SECRET_ID),
        ("RITMO_API_TOKEN", API_TOKEN),
        ("RITMO_GITOPS_CACHE_DIR", cache.to_str().unwrap()),
        ("DATABASE_URL", database_url),
        ("AWS_ENDPOINT_URL", moto.endpoint()),
        ("AWS_REGION", ritmo_tests::moto::REGION),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("RITMO_GITOPS_PLAN_QUEUE_URL", queues.0),
        ("RITMO_GITOPS_APPLY_QUEUE_URL", queues.1),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect()
}

/// `ritmo serve` with debug logging, its stdout and stderr going to files; killed on drop.
struct Served {
    child: std::process::Child,
    port: u16,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Served {
    fn start(env: &[(String, String)], logs: &Path) -> Served {
        let port = ritmo_tests::free_port();
        let stdout = logs.join("serve.stdout");
        let stderr = logs.join("serve.stderr");
        let mut command = Command::new(ritmo_binary());
        for (name, _) in std::env::vars() {
            if name.starts_with("RITMO_")
                || name.starts_with("AWS_")
                || name.starts_with("DATABASE_")
                || name == "RUST_LOG"
            {
                command.env_remove(name);
            }
        }
        let child = command
            .args(["-v", "serve", "--listen", &format!("127.0.0.1:{port}")])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("ritmo serve starts");
        let mut served = Served {
            child,
            port,
            stdout,
            stderr,
        };
        served.wait_until(|served| matches!(served.get("/health/live"), Some((200, _))));
        served
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        http(self.port, "GET", path, &[], b"")
    }

    fn post(&self, path: &str, headers: &[(String, String)], body: &[u8]) -> (u16, String) {
        http(self.port, "POST", path, headers, body)
            .unwrap_or_else(|| panic!("POST {path}: no answer\n{}", self.output()))
    }

    /// Polls `ready` until it holds; panics with the server's output when the process exits
    /// or the deadline passes.
    fn wait_until(&mut self, ready: impl Fn(&Served) -> bool) {
        let deadline = std::time::Instant::now() + SERVE_DEADLINE;
        loop {
            if ready(self) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("ritmo serve exited ({status})\n{}", self.output());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "gave up waiting on ritmo serve\n{}",
                self.output()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// SIGTERM, then waits for the graceful shutdown (SIGKILL after the deadline).
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + SERVE_DEADLINE;
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn output(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The runs `history` lists for `target`, as JSON.
fn runs_of(served: &Served, target: &str) -> Vec<serde_json::Value> {
    served
        .get(&format!("/api/v1/gitops/sync/history?target={target}"))
        .and_then(|(status, body)| (status == 200).then_some(body))
        .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
        .and_then(|page| page["runs"].as_array().cloned())
        .unwrap_or_default()
}

fn has_run(served: &Served, target: &str, status: &str) -> bool {
    runs_of(served, target)
        .iter()
        .any(|run| run["status"] == status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_planted_secret_reaches_serve_output_api_answers_or_queued_messages() {
    capture_logs();
    let moto = Moto::start();
    let sqs = aws_sdk_sqs::Client::new(&moto.sdk_config().await);
    let db = TestDb::new().await;
    let database_url = with_password(&db.url);
    let repo = TestRepo::new();
    let keyring = MasterKeyring::parse(MASTER_KEY).unwrap();
    let registry_value = keyring
        .encrypt(Some("registry"), PLAINTEXT.as_bytes())
        .unwrap();
    repo.write(
        "credentials/registry.yaml",
        credential_yaml("registry", &registry_value),
    );
    let commit = repo.commit("credentials");
    // Two bare copies under one root: `acme/config` served openly, `acme/locked` behind the
    // git token (the webhook matches repositories by host and path, so their paths differ).
    let root = tempfile::tempdir().unwrap();
    let bare = |name: &str| {
        let path = root.path().join(format!("acme/{name}.git"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        ritmo_tests::git_http::run_git(
            root.path(),
            &[
                "clone",
                "--quiet",
                "--bare",
                repo.path().to_str().unwrap(),
                path.to_str().unwrap(),
            ],
        );
        path
    };
    let config_bare = bare("config");
    bare("locked");
    let open = GitHttpServer::start(root.path(), None);
    let locked = GitHttpServer::start(root.path(), Some(("x-access-token", GIT_TOKEN)));
    let (open_url, locked_url) = (open.url("acme/config.git"), locked.url("acme/locked.git"));
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = serve_bootstrap(dir.path(), &open_url, &locked_url);
    let mut texts: Vec<(String, String)> = Vec::new();

    // 1. `ritmo serve` on SQS queues in moto, driven over HTTP. The webhook secret is in
    // Secrets Manager, rotated once: the bad signature makes serve read it again.
    let secrets_client = moto.secrets_manager().await;
    secrets_client
        .create_secret()
        .name(WEBHOOK_SECRET_ID)
        .secret_string(PREVIOUS_WEBHOOK_SECRET)
        .send()
        .await
        .unwrap();
    secrets_client
        .put_secret_value()
        .secret_id(WEBHOOK_SECRET_ID)
        .secret_string(WEBHOOK_SECRET)
        .send()
        .await
        .unwrap();
    let (plan_queue, plan_dlq) = moto.fifo_queue_with_dlq("leak-serve-plan", 30, 2).await;
    let (apply_queue, apply_dlq) = moto.fifo_queue_with_dlq("leak-serve-apply", 30, 2).await;
    let env = serve_env(
        &bootstrap,
        &database_url,
        &moto,
        (&plan_queue, &apply_queue),
        &dir.path().join("serve-cache"),
    );
    let mut served = Served::start(&env, dir.path());
    let mut answers = Vec::new();
    let (bad_headers, bad_body) = signed_push(&open_url, &commit, "planted-forged-secret");
    answers.push((
        "webhook with a bad signature",
        served.post(WEBHOOK_PATH, &bad_headers, &bad_body),
    ));
    let (headers, body) = signed_push(&open_url, &commit, WEBHOOK_SECRET);
    answers.push(("webhook", served.post(WEBHOOK_PATH, &headers, &body)));
    let (headers, body) = signed_push(&open_url, &commit, PREVIOUS_WEBHOOK_SECRET);
    answers.push((
        "webhook signed with the previous secret",
        served.post(WEBHOOK_PATH, &headers, &body),
    ));
    let json = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("Authorization".to_owned(), format!("Bearer {API_TOKEN}")),
    ];
    answers.push((
        "manual sync with the wrong token",
        served.post("/api/v1/gitops/sync", &json, br#"{"target":"locked"}"#),
    ));
    served.wait_until(|s| has_run(s, "good", "succeeded") && has_run(s, "locked", "failed"));
    let mut reads = vec![
        "/api/v1/gitops/status".to_owned(),
        "/api/v1/gitops/sync/history".to_owned(),
        "/api/v1/credentials".to_owned(),
        "/api/v1/credentials/registry".to_owned(),
    ];
    for target in ["good", "locked"] {
        for run in runs_of(&served, target) {
            reads.push(format!(
                "/api/v1/gitops/plans/{}",
                run["id"].as_str().unwrap()
            ));
        }
    }
    let read_answers: Vec<(String, (u16, String))> = reads
        .iter()
        .map(|path| (format!("GET {path}"), served.get(path).unwrap()))
        .collect();
    served.stop();

    assert_eq!(answers[0].1.0, 401, "{:?}", answers[0]);
    assert_eq!(answers[1].1.0, 202, "{:?}", answers[1]);
    assert!(answers[1].1.1.contains("\"good\""), "{:?}", answers[1]);
    assert_eq!(answers[2].1.0, 202, "{:?}", answers[2]);
    assert_eq!(answers[3].1.0, 202, "{:?}", answers[3]);
    assert!(
        read_answers.iter().all(|(_, (status, _))| *status == 200),
        "{read_answers:?}"
    );
    // Built alone, the binary will not send credentials over plain http (the refusal comes
    // before the token would be sent); built with the tests' feature unified in (`cargo test
    // --workspace`), it sends the wrong token and the server answers 401. Either way the run
    // fails and says where, never with what.
    let locked_runs = runs_of_text(&read_answers, "locked");
    assert!(
        locked_runs.contains(&format!("`{locked_url}`"))
            && (locked_runs.contains("authentication") || locked_runs.contains("credentials")),
        "the locked target's run says why: {locked_runs}"
    );
    let serve_output = served.output();
    assert!(serve_output.contains("DEBUG"), "serve logs at debug level");
    texts.push(("serve stdout and stderr".into(), serve_output));
    for (label, (status, body)) in answers
        .iter()
        .map(|(l, a)| (l.to_string(), a))
        .chain(read_answers.iter().map(|(l, a)| (l.clone(), a)))
    {
        texts.push((format!("{label} answer ({status})"), body.clone()));
    }
    for (label, url) in [
        ("serve plan queue", &plan_queue),
        ("serve plan DLQ", &plan_dlq),
        ("serve apply queue", &apply_queue),
        ("serve apply DLQ", &apply_dlq),
    ] {
        for message in drain_queue(&sqs, url).await {
            texts.push((label.to_owned(), message));
        }
    }

    // 2. The same pipeline in-process on queues nobody consumes, so every message it queues
    // can be read back: the webhook's and the API's plan requests, then the apply requests
    // the planner queues from them.
    let (plan_queue, plan_dlq) = moto.fifo_queue_with_dlq("leak-pipeline-plan", 30, 2).await;
    let (apply_queue, apply_dlq) = moto.fifo_queue_with_dlq("leak-pipeline-apply", 30, 2).await;
    let env: std::collections::BTreeMap<String, String> = serve_env(
        &bootstrap,
        &database_url,
        &moto,
        (&plan_queue, &apply_queue),
        &dir.path().join("pipeline-cache"),
    )
    .into_iter()
    .collect();
    let settings =
        ritmo::config::Settings::load(Some(&bootstrap), &ritmo::config::env_from_map(env)).unwrap();
    let queues = ritmo::queue::Queues::sqs(sqs.clone(), plan_queue.clone(), apply_queue.clone());
    let services = ritmo::services::Services::connect_with_secrets_manager(
        settings,
        queues,
        ritmo::metrics::MetricsSink::capture(),
        SecretsManager::new(moto.secrets_manager().await),
    )
    .await
    .unwrap();
    let second_value = keyring
        .encrypt(Some("second"), PLAINTEXT.as_bytes())
        .unwrap();
    repo.write(
        "credentials/second.yaml",
        credential_yaml("second", &second_value),
    );
    let commit = repo.commit("a second credential");
    repo.git(&["push", "--quiet", config_bare.to_str().unwrap(), "main"]);
    let (headers, body) = signed_push(&open_url, &commit, WEBHOOK_SECRET);
    let accepted = ritmo::workflow::accept_webhook(&services, &headers, &body).await;
    let requested = ritmo::workflow::request_sync(
        &services,
        &ritmo::workflow::ManualSync {
            actor: Some("leak".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let plan_messages = drain_queue(&sqs, &plan_queue).await;
    for message in &plan_messages {
        let body = message.lines().next().unwrap();
        <ritmo::workflow::PlanQueue as Consumer>::handle(&services, body).await;
    }
    let apply_messages = drain_queue(&sqs, &apply_queue).await;
    for message in &apply_messages {
        let body = message.lines().next().unwrap();
        <ritmo::workflow::ApplyQueue as Consumer>::handle(&services, body).await;
    }

    assert_eq!(accepted.code(), "accepted", "{accepted:?}");
    assert_eq!(requested.len(), 2);
    assert_eq!(plan_messages.len(), 3, "{plan_messages:#?}");
    assert!(
        !apply_messages.is_empty(),
        "the good target's plans are queued for apply"
    );
    texts.push(("in-process webhook answer".into(), format!("{accepted:?}")));
    for message in plan_messages {
        texts.push(("pipeline plan queue".into(), message));
    }
    for message in apply_messages {
        texts.push(("pipeline apply queue".into(), message));
    }
    for (label, url) in [
        ("pipeline plan DLQ", &plan_dlq),
        ("pipeline apply DLQ", &apply_dlq),
        ("pipeline plan queue after", &plan_queue),
        ("pipeline apply queue after", &apply_queue),
    ] {
        for message in drain_queue(&sqs, url).await {
            texts.push((label.to_owned(), message));
        }
    }
    drop(services);

    let rows = dump_tables(&db).await;
    assert!(
        rows.iter().any(|(_, row)| row.contains(&registry_value)),
        "the ciphertext (never the plaintext) is stored"
    );
    // In-process the tests' feature lets the wrong token be sent: the server refused it.
    assert!(
        rows.iter().any(|(label, row)| label.ends_with(".sync_runs")
            && row.contains(&format!("authentication to `{locked_url}` failed"))),
        "the wrong git token was sent and refused"
    );
    texts.extend(rows);
    texts.push(("in-process logs".into(), captured_logs()));
    assert_no_planted_value(&texts);
}

/// The `GET /api/v1/gitops/plans/{id}` answers, concatenated, of `target`'s runs.
fn runs_of_text(answers: &[(String, (u16, String))], target: &str) -> String {
    answers
        .iter()
        .filter(|(label, (_, body))| {
            label.contains("/plans/") && body.contains(&format!("\"target\":\"{target}\""))
        })
        .map(|(_, (_, body))| body.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}
