//! The leak test: known secret values are planted everywhere the service gets secrets from (a
//! git token, a webhook secret, the master key, a credential's plaintext encrypted in the
//! repository, the database password), then the `ritmo` CLI runs validate, plan, sync and
//! rotate-credentials with `-vv`, and failing cases (wrong master key, tampered and swapped
//! ciphertexts, an unreachable database, a wrong git token, a bad webhook signature, a refused
//! database secret) run in-process under a DEBUG subscriber. None of the planted values may
//! appear in any stdout, stderr, log line, error message, or row of any table.
//!
//! The CLI is `target/debug/ritmo`, next to this test binary's directory: build it first
//! (`cargo build -p ritmo-cli`); the test says so when it is missing.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, Once};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ritmo::crypto::{CredentialKeys, MasterKey, MasterKeyring, SecretString, SecretsManager};
use ritmo::git::{Auth, RepoLocation};
use ritmo::manifest::Limits;
use ritmo::secret_refs::SecretRefChecker;
use ritmo::store::{DatabaseSettings, SslMode, Store};
use ritmo::webhook::{self, Provider};
use ritmo::workflow::{self, SourceSpec};
use ritmo_tests::db::TestDb;
use ritmo_tests::git_http::{GitHttpServer, TestRepo};
use ritmo_tests::moto::Moto;

const GIT_TOKEN: &str = "planted-git-token-3d9a61c0";
const WRONG_GIT_TOKEN: &str = "planted-wrong-git-token-77e0";
const WEBHOOK_SECRET: &str = "planted-webhook-secret-b41f";
/// Exactly 32 bytes: a raw master key.
const MASTER_KEY: &str = "planted-master-key-0123456789abc";
const NEW_MASTER_KEY: &str = "planted-newer-master-key-0123456";
const WRONG_MASTER_KEY: &str = "planted-wrong-master-key-0123456";
const PLAINTEXT: &str = "planted-credential-plaintext-6c2e";
const DB_PASSWORD: &str = "planted-db-password-a07d";

/// Every planted value and the encodings a careless log line could use.
fn planted_forms() -> Vec<(&'static str, String)> {
    let mut forms = Vec::new();
    for (name, value) in [
        ("git token", GIT_TOKEN),
        ("wrong git token", WRONG_GIT_TOKEN),
        ("webhook secret", WEBHOOK_SECRET),
        ("master key", MASTER_KEY),
        ("new master key", NEW_MASTER_KEY),
        ("wrong master key", WRONG_MASTER_KEY),
        ("credential plaintext", PLAINTEXT),
        ("database password", DB_PASSWORD),
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
    assert!(
        run("wrong key")
            .stdout()
            .contains("credentials/registry.yaml:7:20: error[E402]")
    );
    assert!(
        run("wrong key")
            .stdout()
            .contains("credentials/other.yaml:7:20: error[E402]")
    );
    for label in ["tampered", "swapped"] {
        let out = run(label).stdout();
        assert_eq!(run(label).code(), Some(1), "{label}: {out}");
        assert!(
            out.contains(
                "credentials/registry.yaml:7:20: error[E402]: encrypted value of credential \
                 `registry` does not decrypt with the configured key: wrong key, tampered, or \
                 copied from another credential"
            ),
            "{label}: {out}"
        );
        assert!(!out.contains("other.yaml:7:20: error"), "{label}: {out}");
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
    let good = workflow::read_source(&source(GIT_TOKEN), Limits::default()).await;
    assert!(good.is_ok(), "{:?}", good.err());
    let refused = workflow::read_source(&source(WRONG_GIT_TOKEN), Limits::default())
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
    let checked = workflow::check(
        ritmo::git::Snapshot {
            revision: ritmo::model::Revision::Worktree,
            files: vec![ritmo::manifest::SourceFile {
                path: "credentials/registry.yaml".into(),
                content: ritmo::manifest::FileContent::Bytes(
                    credential_yaml("registry", &value).into_bytes(),
                ),
            }],
        },
        workflow::Checks {
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
