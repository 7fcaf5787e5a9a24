//! secrets scenarios: `secret_ref` existence checks against moto (per region), database
//! credentials read from a moto secret and used against the real PostgreSQL, a rotated
//! password picked up after an authentication failure (by `Store::connect_with` and by
//! `Services::reconnect`), a rotated webhook secret accepted without a redeploy, and TLS modes
//! against the local server's certificate, and the functions' AWS configuration built from
//! the environment alone.

use std::collections::BTreeSet;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use ritmo::config::Settings;
use ritmo::metrics::MetricsSink;
use ritmo::queue::Queues;
use ritmo::services::Services;
use ritmo::workflow::accept_webhook;
use secrecy::SecretString;

use aws_sdk_secretsmanager::config::Region;
use ritmo::crypto::secret_refs::SecretRefChecker;
use ritmo::crypto::{CredentialKeys, SecretsManager};
use ritmo::diagnostic::Code;
use ritmo::git::Snapshot;
use ritmo::manifest::{FileContent, Limits, SourceFile};
use ritmo::model::Revision;
use ritmo::source;
use ritmo::store::{DatabaseSettings, SslMode, Store, StoreError, is_auth_failure};
use ritmo_tests::db::{TestDb, connect};
use ritmo_tests::moto::{Moto, REGION};

const DB_PASSWORD: &str = "planted-db-password-5e1b7a";

fn credential(name: &str, secret_ref: &str) -> String {
    format!(
        "apiVersion: ritmo.dev/v1\nkind: Credential\nmetadata:\n  name: {name}\nspec:\n  type: token\n  secret_ref:\n{secret_ref}"
    )
}

fn snapshot(files: &[(&str, String)]) -> Snapshot {
    Snapshot {
        revision: Revision::Worktree,
        files: files
            .iter()
            .map(|(path, text)| SourceFile {
                path: (*path).to_owned(),
                content: FileContent::Bytes(text.clone().into_bytes()),
            })
            .collect(),
    }
}

async fn create_secret(moto: &Moto, region: &str, name: &str, value: &str) {
    let config = aws_sdk_secretsmanager::config::Builder::from(&moto.sdk_config().await)
        .region(Region::new(region.to_owned()))
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .unwrap();
}

fn environment(variables: &[(&str, &str)]) -> aws_config::SdkConfig {
    let keys = [
        ("AWS_REGION", REGION),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_SESSION_TOKEN", "testing"),
    ];
    ritmo::aws::from_environment(
        keys.iter()
            .chain(variables)
            .map(|(name, value)| (name.to_string(), value.to_string())),
    )
}

#[tokio::test]
async fn the_environment_configuration_signs_and_routes_calls_to_its_endpoints() {
    let moto = Moto::start();
    create_secret(&moto, REGION, "env/secret", "from-moto").await;

    // Nothing listens on port 9: only the service's own endpoint can answer.
    let own_endpoint = environment(&[
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.endpoint()),
    ]);
    let read = aws_sdk_secretsmanager::Client::new(&own_endpoint)
        .get_secret_value()
        .secret_id("env/secret")
        .send()
        .await
        .unwrap();
    let shared_endpoint = environment(&[("AWS_ENDPOINT_URL", moto.endpoint())]);
    let created = aws_sdk_sqs::Client::new(&shared_endpoint)
        .create_queue()
        .queue_name("env-config")
        .send()
        .await
        .unwrap();
    let keyless = ritmo::aws::from_environment(
        [
            ("AWS_REGION", REGION),
            ("AWS_ENDPOINT_URL", moto.endpoint()),
        ]
        .map(|(name, value)| (name.to_string(), value.to_string())),
    );
    let refused = aws_sdk_sqs::Client::new(&keyless)
        .list_queues()
        .send()
        .await
        .unwrap_err();

    assert_eq!(read.secret_string(), Some("from-moto"));
    assert!(created.queue_url().unwrap().ends_with("/env-config"));
    assert!(
        format!("{refused:?}").contains("NoIdentityResolver"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn secret_refs_to_existing_secrets_pass_and_missing_ones_fail_by_name() {
    let moto = Moto::start();
    create_secret(&moto, "us-east-1", "prod/ritmo/github-token", "ghp_x").await;
    create_secret(&moto, "eu-west-1", "prod/ritmo/eu-only", "v").await;
    let checker = SecretRefChecker::aws(SecretsManager::new(moto.secrets_manager().await));
    let files = [
        (
            "credentials/present.yaml",
            credential(
                "github-token",
                "    provider: aws_secrets_manager\n    key: prod/ritmo/github-token\n",
            ),
        ),
        (
            "credentials/missing.yaml",
            credential(
                "deploy-key",
                "    provider: aws_secrets_manager\n    key: prod/ritmo/typo\n",
            ),
        ),
        (
            "credentials/eu.yaml",
            credential(
                "eu-token",
                "    provider: aws_secrets_manager\n    key: prod/ritmo/eu-only\n    region: eu-west-1\n",
            ),
        ),
        (
            "credentials/eu-wrong-region.yaml",
            credential(
                "eu-token-default-region",
                "    provider: aws_secrets_manager\n    key: prod/ritmo/eu-only\n",
            ),
        ),
        (
            "credentials/vault.yaml",
            credential(
                "vault-token",
                "    provider: vault\n    path: secret/data/ritmo\n    key: token\n",
            ),
        ),
    ];

    let checked = source::check(
        snapshot(&files),
        source::Checks {
            keys: &CredentialKeys::default(),
            refs: &checker,
            builtin_plugins: &BTreeSet::new(),
        },
        &Limits::default(),
    )
    .await;

    let rendered: Vec<String> = checked
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(rendered.len(), 3, "{rendered:#?}");
    assert_eq!(
        rendered[0],
        "credentials/eu-wrong-region.yaml:7:3: error[E404]: `secret_ref` of credential \
         `eu-token-default-region` names secret `prod/ritmo/eu-only`, which does not exist in \
         AWS Secrets Manager (or is scheduled for deletion)"
    );
    assert_eq!(
        rendered[1],
        "credentials/missing.yaml:7:3: error[E404]: `secret_ref` of credential `deploy-key` \
         names secret `prod/ritmo/typo`, which does not exist in AWS Secrets Manager (or is \
         scheduled for deletion)"
    );
    assert!(rendered[2].starts_with("credentials/vault.yaml:7:3: warning[W103]: "));
    assert!(checked.has_errors());
    assert!(!rendered.iter().any(|line| line.contains("ghp_x")));
}

#[tokio::test]
async fn secret_refs_are_warned_about_not_failed_when_aws_cannot_answer() {
    // Nothing listens on this port: the plan must still work offline.
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version_latest()
        .region(Region::new("us-east-1"))
        .endpoint_url("http://127.0.0.1:9")
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .retry_config(aws_sdk_secretsmanager::config::retry::RetryConfig::disabled())
        .build();
    let checker = SecretRefChecker::aws(SecretsManager::new(
        aws_sdk_secretsmanager::Client::from_conf(config),
    ));
    let files = [(
        "credentials/a.yaml",
        credential(
            "a",
            "    provider: aws_secrets_manager\n    key: prod/ritmo/a\n",
        ),
    )];

    let checked = source::check(
        snapshot(&files),
        source::Checks {
            keys: &CredentialKeys::default(),
            refs: &checker,
            builtin_plugins: &BTreeSet::new(),
        },
        &Limits::default(),
    )
    .await;

    assert!(!checked.has_errors(), "{:#?}", checked.diagnostics);
    assert_eq!(checked.diagnostics.len(), 1);
    assert_eq!(checked.diagnostics[0].code, Code::W103);
    assert!(
        checked.diagnostics[0].message.starts_with(
            "could not check `secret_ref` of credential `a` (secret `prod/ritmo/a`): "
        )
    );
}

/// A login role with a password, owning the test database (so it can run the migrations).
/// Dropped by [`Role::drop_after`]; trust auth ignores the password, so these tests prove the
/// user and database come from the secret, not that the password is checked.
struct Role {
    name: String,
}

impl Role {
    async fn create(db: &TestDb) -> Role {
        let name = format!("{}_app", db.name);
        let admin = admin().await;
        admin
            .batch_execute(&format!(
                "CREATE ROLE \"{name}\" LOGIN PASSWORD '{DB_PASSWORD}';
                 ALTER DATABASE \"{}\" OWNER TO \"{name}\";",
                db.name
            ))
            .await
            .unwrap();
        Role { name }
    }

    async fn drop_after(self, db: TestDb) {
        drop(db);
        admin()
            .await
            .batch_execute(&format!("DROP ROLE IF EXISTS \"{}\"", self.name))
            .await
            .unwrap();
    }
}

async fn admin() -> tokio_postgres::Client {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    connect(&url).await.unwrap()
}

/// Who the `ritmo` connections to `db` logged in as, and whether they use TLS.
async fn ritmo_sessions(db: &TestDb) -> Vec<(String, bool)> {
    admin()
        .await
        .query(
            "SELECT a.usename::text, coalesce(s.ssl, false) FROM pg_stat_activity a
               LEFT JOIN pg_stat_ssl s ON s.pid = a.pid
              WHERE a.datname = $1 AND a.application_name = 'ritmo'",
            &[&db.name],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

fn rds_secret(user: &str, db: &TestDb) -> String {
    serde_json::json!({
        "username": user,
        "password": DB_PASSWORD,
        "engine": "postgres",
        "host": "127.0.0.1",
        "port": 5432,
        "dbname": db.name,
    })
    .to_string()
}

#[tokio::test]
async fn database_credentials_come_from_an_rds_style_secret() {
    let moto = Moto::start();
    let db = TestDb::new().await;
    let role = Role::create(&db).await;
    create_secret(
        &moto,
        "us-east-1",
        "rds!db-ritmo",
        &rds_secret(&role.name, &db),
    )
    .await;
    let secrets = SecretsManager::new(moto.secrets_manager().await);
    let settings = DatabaseSettings {
        secret_id: Some("rds!db-ritmo".into()),
        sslmode: Some(SslMode::Disable),
        ..DatabaseSettings::default()
    };

    let store = Store::connect_with(&settings, Some(&secrets))
        .await
        .unwrap();
    let targets = store.targets().await.unwrap();

    assert!(targets.is_empty());
    assert_eq!(ritmo_sessions(&db).await, [(role.name.clone(), false)]);
    drop(store);
    role.drop_after(db).await;
}

#[tokio::test]
async fn host_settings_take_only_the_credentials_from_a_master_user_secret() {
    let moto = Moto::start();
    let db = TestDb::new().await;
    let role = Role::create(&db).await;
    let master_secret = serde_json::json!({"username": role.name, "password": DB_PASSWORD});
    create_secret(&moto, "us-east-1", "rds-master", &master_secret.to_string()).await;
    let secrets = SecretsManager::new(moto.secrets_manager().await);
    let settings = DatabaseSettings {
        secret_id: Some("rds-master".into()),
        host: Some("127.0.0.1".into()),
        port: Some(5432),
        dbname: Some(db.name.clone()),
        sslmode: Some(SslMode::Require),
        ..DatabaseSettings::default()
    };

    let store = Store::connect_with(&settings, Some(&secrets))
        .await
        .unwrap();

    assert_eq!(ritmo_sessions(&db).await, [(role.name.clone(), true)]);
    drop(store);
    role.drop_after(db).await;
}

#[tokio::test]
async fn a_rotated_secret_is_read_again_after_the_database_refuses_the_cached_one() {
    let moto = Moto::start();
    let db = TestDb::new().await;
    let role = Role::create(&db).await;
    let before = format!("{}_retired", role.name);
    create_secret(&moto, "us-east-1", "rds!db", &rds_secret(&before, &db)).await;
    let secrets = SecretsManager::new(moto.secrets_manager().await);
    let settings = DatabaseSettings {
        secret_id: Some("rds!db".into()),
        sslmode: Some(SslMode::Disable),
        ..DatabaseSettings::default()
    };
    let refused = Store::connect_with(&settings, Some(&secrets))
        .await
        .unwrap_err();
    // Rotation: the secret now names a role that exists; the container still caches the old.
    moto.secrets_manager()
        .await
        .put_secret_value()
        .secret_id("rds!db")
        .secret_string(rds_secret(&role.name, &db))
        .send()
        .await
        .unwrap();

    let store = Store::connect_with(&settings, Some(&secrets))
        .await
        .unwrap();

    assert!(is_auth_failure(&refused), "{refused:?}");
    let message = format!(
        "{refused} {refused:?} {:?}",
        std::error::Error::source(&refused)
    );
    assert!(message.contains(&before), "{message}");
    assert!(!message.contains(DB_PASSWORD), "{message}");
    assert_eq!(ritmo_sessions(&db).await, [(role.name.clone(), false)]);
    drop(store);
    role.drop_after(db).await;
}

/// The local server's certificate (a self-signed `CN=localhost`), when TLS is on and its file
/// is readable here.
async fn server_certificate() -> Option<std::path::PathBuf> {
    let admin = admin().await;
    let ssl: String = admin.query_one("SHOW ssl", &[]).await.ok()?.get(0);
    let file: String = admin
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .ok()?
        .get(0);
    let path = std::path::PathBuf::from(file);
    (ssl == "on" && std::fs::read(&path).is_ok()).then_some(path)
}

#[tokio::test]
async fn tls_modes_check_the_chain_and_the_host_name_as_libpq_does() {
    let Some(certificate) = server_certificate().await else {
        panic!("these tests need the local PostgreSQL with ssl = on and a readable ssl_cert_file");
    };
    let db = TestDb::new().await;
    let with = |host: &str, mode: SslMode, ca: Option<&std::path::Path>| DatabaseSettings {
        url: Some(format!("postgres://postgres@{host}:5432/{}", db.name).into()),
        sslmode: Some(mode),
        ca_file: ca.map(std::path::Path::to_path_buf),
        ..DatabaseSettings::default()
    };
    let unrelated_ca = std::env::temp_dir().join(format!("{}-unrelated-ca.pem", db.name));
    generate_unrelated_ca(&unrelated_ca);

    let required = Store::connect_with(&with("127.0.0.1", SslMode::Require, None), None).await;
    let full_by_name = Store::connect_with(
        &with("localhost", SslMode::VerifyFull, Some(&certificate)),
        None,
    )
    .await;
    let ca_by_address = Store::connect_with(
        &with("127.0.0.1", SslMode::VerifyCa, Some(&certificate)),
        None,
    )
    .await;
    let full_by_address = Store::connect_with(
        &with("127.0.0.1", SslMode::VerifyFull, Some(&certificate)),
        None,
    )
    .await;
    let wrong_ca = Store::connect_with(
        &with("localhost", SslMode::VerifyFull, Some(&unrelated_ca)),
        None,
    )
    .await;
    let missing_ca = Store::connect_with(
        &with(
            "localhost",
            SslMode::VerifyFull,
            Some(std::path::Path::new("/nonexistent/ca.pem")),
        ),
        None,
    )
    .await;

    assert!(required.is_ok(), "{:?}", required.err());
    assert!(full_by_name.is_ok(), "{:?}", full_by_name.err());
    assert!(ca_by_address.is_ok(), "{:?}", ca_by_address.err());
    let sessions = ritmo_sessions(&db).await;
    assert_eq!(sessions.len(), 3);
    assert!(sessions.iter().all(|(_, ssl)| *ssl), "{sessions:?}");
    let name_error = chain(&full_by_address.err().unwrap());
    assert!(name_error.contains("NotValidForName"), "{name_error}");
    let issuer_error = chain(&wrong_ca.err().unwrap());
    assert!(issuer_error.contains("UnknownIssuer"), "{issuer_error}");
    assert_eq!(
        missing_ca.err().unwrap().to_string(),
        "cannot read the database CA bundle `/nonexistent/ca.pem`"
    );
    let _ = std::fs::remove_file(unrelated_ca);
    drop((required, full_by_name, ca_by_address));
}

fn chain(error: &StoreError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause} ({cause:?})"));
        source = cause.source();
    }
    text
}

fn generate_unrelated_ca(path: &std::path::Path) {
    let key = path.with_extension("key");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=unrelated",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success());
    let _ = std::fs::remove_file(key);
}

// --- webhook secret rotation ----------------------------------------------------------------

const WEBHOOK_SECRET_ID: &str = "ritmo/webhook";

/// A signed GitHub `ping` delivery with a fresh delivery id: verified, recorded, answered 200,
/// and nothing queued (no target needed).
fn ping(secret: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let body = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#.to_vec();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&body);
    let signature = hex::encode(mac.finalize().into_bytes());
    let headers = vec![
        ("X-GitHub-Event".to_owned(), "ping".to_owned()),
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

async fn deliver(services: &Services, secret: &str) -> &'static str {
    let (headers, body) = ping(secret);
    accept_webhook(services, &headers, &body).await.code()
}

/// Settings whose webhook secret is the moto secret [`WEBHOOK_SECRET_ID`].
fn webhook_settings(db: &TestDb) -> Settings {
    Settings {
        enabled: true,
        database_url: Some(SecretString::from(db.url.clone())),
        webhook_secret_id: Some(WEBHOOK_SECRET_ID.into()),
        ..Settings::default()
    }
}

/// Services reading their own secrets through `secrets`, with in-process queues.
async fn services_reading(settings: Settings, secrets: SecretsManager) -> Services {
    let (queues, _receivers) = Queues::local();
    Services::connect_with_secrets_manager(settings, queues, MetricsSink::capture(), secrets)
        .await
        .unwrap()
}

async fn webhook_services(db: &TestDb, secrets: SecretsManager) -> Services {
    services_reading(webhook_settings(db), secrets).await
}

async fn rotate(moto: &Moto, id: &str, value: &str) {
    moto.secrets_manager()
        .await
        .put_secret_value()
        .secret_id(id)
        .secret_string(value)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_rotated_webhook_secret_is_accepted_at_once_and_the_previous_one_still_passes() {
    let moto = Moto::start();
    let db = TestDb::new().await;
    create_secret(
        &moto,
        "us-east-1",
        WEBHOOK_SECRET_ID,
        "whsec-before-rotation",
    )
    .await;
    let secrets = SecretsManager::new(moto.secrets_manager().await);
    let services = webhook_services(&db, secrets.clone()).await;
    let before_rotation = deliver(&services, "whsec-before-rotation").await;
    let reads_before_rotation = secrets.get_secret_value_calls();
    // The old value becomes AWSPREVIOUS; this container still caches the old pair.
    rotate(&moto, WEBHOOK_SECRET_ID, "whsec-after-rotation").await;

    let new_secret = deliver(&services, "whsec-after-rotation").await;
    let reads_after_new = secrets.get_secret_value_calls();
    let previous_secret = deliver(&services, "whsec-before-rotation").await;
    let wrong_secret = deliver(&services, "whsec-never-configured").await;

    assert_eq!(before_rotation, "ping");
    assert_eq!(
        new_secret, "ping",
        "the new secret is accepted before the TTL runs out"
    );
    assert_eq!(
        previous_secret, "ping",
        "the previous secret is still accepted"
    );
    assert_eq!(wrong_secret, "bad_signature");
    // AWSCURRENT and AWSPREVIOUS once at start, once more on the first mismatch, and not
    // again for the wrong signature within the refresh interval.
    assert_eq!(reads_before_rotation, 2);
    assert_eq!(reads_after_new, 4);
    assert_eq!(secrets.get_secret_value_calls(), 4);
}

/// Only the planner and the notifiers decrypt, so only their roles may read the master key:
/// a function whose settings name it (the template sets one environment for all five) must
/// start and take deliveries without reading it. moto answers "not found" where AWS would
/// answer "access denied"; both are errors that do not go away by asking again at once.
#[tokio::test]
async fn the_master_key_is_read_on_first_use_not_when_a_function_starts() {
    let moto = Moto::start();
    let db = TestDb::new().await;
    create_secret(&moto, "us-east-1", WEBHOOK_SECRET_ID, "whsec-real").await;
    let secrets = SecretsManager::new(moto.secrets_manager().await);
    let settings = Settings {
        master_key_secret_id: Some("ritmo/master-key".into()),
        ..webhook_settings(&db)
    };

    let services = services_reading(settings, secrets.clone()).await;
    let delivered = deliver(&services, "whsec-real").await;
    let reads_before_checks = secrets.get_secret_value_calls();
    let unreadable = services.checks().await.err().map(|e| e.to_string());
    let key = ritmo::crypto::MasterKey::generate();
    let keyring = serde_json::json!({
        "keys": [{"id": "k1", "key": secrecy::ExposeSecret::expose_secret(&key.to_hex())}],
        "current": "k1",
    });
    create_secret(&moto, "us-east-1", "ritmo/master-key", &keyring.to_string()).await;
    let loaded = services.keys().await.map(|keys| keys.master.is_some());

    assert_eq!(delivered, "ping");
    // The webhook secret's AWSCURRENT and AWSPREVIOUS, and nothing else.
    assert_eq!(reads_before_checks, 2);
    let unreadable = unreadable.unwrap_or_default();
    assert!(
        unreadable.contains("ritmo/master-key"),
        "the error names the secret: {unreadable}"
    );
    assert_eq!(loaded.ok(), Some(true), "a failed load is tried again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_bad_signatures_reads_the_webhook_secret_again_at_most_once() {
    let moto = Moto::start();
    let db = TestDb::new().await;
    create_secret(&moto, "us-east-1", WEBHOOK_SECRET_ID, "whsec-real").await;
    let secrets = SecretsManager::new(moto.secrets_manager().await);
    let services = Arc::new(webhook_services(&db, secrets.clone()).await);
    let warm = deliver(&services, "whsec-real").await;
    let reads_when_warm = secrets.get_secret_value_calls();

    let mut burst = tokio::task::JoinSet::new();
    for n in 0..24 {
        let services = services.clone();
        burst.spawn(async move { deliver(&services, &format!("whsec-forged-{n}")).await });
    }
    let outcomes: Vec<&str> = burst.join_all().await;

    assert_eq!(warm, "ping");
    assert_eq!(outcomes, vec!["bad_signature"; 24]);
    // One re-read is AWSCURRENT plus AWSPREVIOUS: two calls, whatever the burst's size.
    assert_eq!(secrets.get_secret_value_calls() - reads_when_warm, 2);
}

#[tokio::test]
async fn a_webhook_secret_never_rotated_has_no_previous_version_and_still_verifies() {
    let moto = Moto::start();
    create_secret(&moto, "us-east-1", WEBHOOK_SECRET_ID, "whsec-only").await;
    let secrets = SecretsManager::new(moto.secrets_manager().await);

    let values = secrets
        .current_and_previous(WEBHOOK_SECRET_ID)
        .await
        .unwrap();
    let refreshed = secrets
        .refresh_current_and_previous(WEBHOOK_SECRET_ID)
        .await
        .unwrap();
    let throttled = secrets
        .refresh_current_and_previous(WEBHOOK_SECRET_ID)
        .await
        .unwrap();
    let missing = secrets.current_and_previous("ritmo/no-such-secret").await;

    use secrecy::ExposeSecret as _;
    let exposed: Vec<&str> = values.iter().map(|v| v.expose_secret()).collect();
    assert_eq!(exposed, ["whsec-only"]);
    assert_eq!(refreshed.map(|v| v.len()), Some(1));
    assert!(throttled.is_none());
    assert!(
        matches!(
            missing,
            Err(ritmo::crypto::CryptoError::SecretNotFound { .. })
        ),
        "{missing:?}"
    );
}

// --- database password rotation through Services::reconnect --------------------------------

async fn drop_role(name: &str) {
    admin()
        .await
        .batch_execute(&format!("DROP ROLE IF EXISTS \"{name}\""))
        .await
        .unwrap();
}

/// Regression for the rotation path of a long-lived container: the store's connection is lost
/// after the database secret rotated, and `Services::reconnect` (what every workflow calls on
/// a closed connection) must not keep presenting the cached, retired credentials.
///
/// The local server authenticates loopback connections by `trust`, so a changed password
/// alone is never refused there; the retired credentials are refused by making their role
/// `NOLOGIN` (SQLSTATE 28000, the same class-28 refusal as a wrong password's 28P01), and the
/// rotation moves to a second role as RDS's alternating-users rotation does.
#[tokio::test]
async fn services_reconnect_reads_a_rotated_database_secret_after_the_old_one_is_refused() {
    let moto = Moto::start();
    let db = TestDb::new().await;
    let role = Role::create(&db).await;
    let successor = format!("{}_next", role.name);
    admin()
        .await
        .batch_execute(&format!(
            "CREATE ROLE \"{successor}\" LOGIN PASSWORD 'planted-rotated-password-1c9e'
                IN ROLE \"{}\";",
            role.name
        ))
        .await
        .unwrap();
    create_secret(
        &moto,
        "us-east-1",
        "rds!db-rotating",
        &rds_secret(&role.name, &db),
    )
    .await;
    let secrets = SecretsManager::new(moto.secrets_manager().await);
    let settings = Settings {
        database_secret_id: Some("rds!db-rotating".into()),
        database_sslmode: Some(SslMode::Disable),
        ..Settings::default()
    };
    let services = services_reading(settings, secrets.clone()).await;
    let reads_at_start = secrets.get_secret_value_calls();
    // Rotation: the old credentials are retired, the secret names the new ones, and the
    // container's connection drops (a failover, an idle timeout).
    let mut rotated =
        serde_json::from_str::<serde_json::Value>(&rds_secret(&successor, &db)).unwrap();
    rotated["password"] = "planted-rotated-password-1c9e".into();
    rotate(&moto, "rds!db-rotating", &rotated.to_string()).await;
    admin()
        .await
        .batch_execute(&format!(
            "ALTER ROLE \"{0}\" NOLOGIN PASSWORD 'planted-retired-password-77d0';
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE usename = '{0}' AND datname = '{1}';",
            role.name, db.name
        ))
        .await
        .unwrap();

    let reconnected = services.reconnect().await;

    let store = reconnected.unwrap();
    assert!(store.targets().await.unwrap().is_empty());
    assert_eq!(ritmo_sessions(&db).await, [(successor.clone(), false)]);
    // The cached secret was tried (refused), then read again once.
    assert_eq!(secrets.get_secret_value_calls(), reads_at_start + 1);
    drop(store);
    drop(services);
    role.drop_after(db).await;
    drop_role(&successor).await;
}
