//! git authentication scenarios: a GitHub App (a fake GitHub API on loopback that verifies the
//! JWT with the app's public key, in front of the smart-HTTP server), ssh through a fake ssh
//! client (git's own test suite does the same: a script that checks what it was given and runs
//! `git-upload-pack` locally), and rotation of secrets in moto picked up without a restart
//! after exactly one re-read.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_secretsmanager::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_secretsmanager::config::{ConfigBag, Intercept, RuntimeComponents};
use ritmo::config::{GitAuth, KnownHosts, SecretSetting};
use ritmo::crypto::SecretsManager;
use ritmo::git::{Auth, GitCache, GitError, NetworkOptions, RepoLocation, remote_head};
use ritmo::source::git_auth_with;
use ritmo_tests::git_http::{GitHttpServer, TestRepo, run_git};
use ritmo_tests::moto::Moto;
use secrecy::SecretString;

// ---------------------------------------------------------------------------------------------
// fixtures

/// A repository with one job, and a bare clone of it under `root/acme/config.git`.
struct Served {
    repo: TestRepo,
    root: tempfile::TempDir,
}

impl Served {
    fn new() -> Served {
        let repo = TestRepo::new();
        repo.write("jobs/a.yaml", "kind: Job\n");
        repo.commit("initial");
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("acme")).unwrap();
        run_git(
            root.path(),
            &[
                "clone",
                "--quiet",
                "--bare",
                repo.path().to_str().unwrap(),
                "acme/config.git",
            ],
        );
        Served { repo, root }
    }

    fn bare(&self) -> PathBuf {
        self.root.path().join("acme/config.git")
    }

    /// Commits a change and pushes it to the bare repository; returns the commit.
    fn push(&self, file: &str) -> String {
        self.repo.write(file, "kind: Job\n");
        let commit = self.repo.commit(file);
        self.repo
            .git(&["push", "--quiet", self.bare().to_str().unwrap(), "main"]);
        commit
    }
}

/// gix is blocking: run it off the runtime, as the product does.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap()
}

/// Counts the GetSecretValue requests a Secrets Manager client sends.
#[derive(Debug, Clone, Default)]
struct CountReads(Arc<AtomicUsize>);

impl Intercept for CountReads {
    fn name(&self) -> &'static str {
        "CountReads"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if context.request().headers().get("x-amz-target") == Some("secretsmanager.GetSecretValue")
        {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// A Secrets Manager cache over moto whose reads are counted, and a plain client to write.
async fn counted_secrets(
    moto: &Moto,
) -> (SecretsManager, CountReads, aws_sdk_secretsmanager::Client) {
    let reads = CountReads::default();
    let config = aws_sdk_secretsmanager::config::Builder::from(&moto.sdk_config().await)
        .interceptor(reads.clone())
        .build();
    let secrets = SecretsManager::new(aws_sdk_secretsmanager::Client::from_conf(config));
    (secrets, reads, moto.secrets_manager().await)
}

async fn put_secret(
    client: &aws_sdk_secretsmanager::Client,
    name: &str,
    value: &str,
    create: bool,
) {
    if create {
        client
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .unwrap();
    } else {
        client
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .send()
            .await
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// a fake GitHub API

/// An RSA key pair as PEM: PKCS#8 private key, X.509 public key.
fn rsa_key_pair() -> (String, String) {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::signature::KeyPair as _;
    use base64::Engine;

    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let private: Pkcs8V1Der = key.as_der().unwrap();
    let public: PublicKeyX509Der = key.public_key().as_der().unwrap();
    let pem = |label: &str, der: &[u8]| {
        let text = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = text
            .as_bytes()
            .chunks(64)
            .map(|chunk| std::str::from_utf8(chunk).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    };
    (
        pem("PRIVATE KEY", private.as_ref()),
        pem("PUBLIC KEY", public.as_ref()),
    )
}

/// What the fake API saw and what it hands out.
struct FakeGitHub {
    url: String,
    /// Tokens issued, in order.
    issued: Arc<Mutex<Vec<String>>>,
    /// Claims of every JWT that verified.
    claims: Arc<Mutex<Vec<ritmo::git::GitHubAppClaims>>>,
    /// Requests refused (bad signature, wrong issuer).
    refused: Arc<AtomicUsize>,
}

impl FakeGitHub {
    /// Serves `POST /app/installations/{installation}/access_tokens` for `app_id`, checking
    /// the JWT's RS256 signature with `public_pem`. Each token it issues is
    /// `ghs_installation_token_<n>`.
    async fn start(app_id: u64, installation: u64, public_pem: &str) -> FakeGitHub {
        use axum::extract::{Path as UrlPath, State};
        use axum::http::{HeaderMap, StatusCode};
        use axum::routing::post;

        #[derive(Clone)]
        struct Shared {
            app_id: u64,
            installation: u64,
            key: jsonwebtoken::DecodingKey,
            issued: Arc<Mutex<Vec<String>>>,
            claims: Arc<Mutex<Vec<ritmo::git::GitHubAppClaims>>>,
            refused: Arc<AtomicUsize>,
        }

        async fn access_tokens(
            State(shared): State<Shared>,
            UrlPath(id): UrlPath<u64>,
            headers: HeaderMap,
        ) -> (StatusCode, String) {
            if id != shared.installation {
                return (StatusCode::NOT_FOUND, r#"{"message":"Not Found"}"#.into());
            }
            let jwt = headers
                .get("authorization")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "))
                .unwrap_or_default();
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
            validation.set_issuer(&[shared.app_id.to_string()]);
            validation.set_required_spec_claims(&["iat", "exp", "iss"]);
            let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
            match jsonwebtoken::decode::<ritmo::git::GitHubAppClaims>(jwt, &shared.key, &validation)
            {
                Ok(data) => {
                    shared.claims.lock().unwrap().push(data.claims);
                    let mut issued = shared.issued.lock().unwrap();
                    let token = format!("ghs_installation_token_{}", issued.len() + 1);
                    issued.push(token.clone());
                    let expires_at = chrono::Utc::now() + chrono::Duration::hours(1);
                    (
                        StatusCode::CREATED,
                        serde_json::json!({
                            "token": token,
                            "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                            "permissions": {"contents": "read"},
                        })
                        .to_string(),
                    )
                }
                Err(_) => {
                    shared.refused.fetch_add(1, Ordering::SeqCst);
                    (
                        StatusCode::UNAUTHORIZED,
                        r#"{"message":"A JSON web token could not be decoded"}"#.into(),
                    )
                }
            }
        }

        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        let shared = Shared {
            app_id,
            installation,
            key: jsonwebtoken::DecodingKey::from_rsa_pem(public_pem.as_bytes()).unwrap(),
            issued: Arc::default(),
            claims: Arc::default(),
            refused: Arc::default(),
        };
        let fake = FakeGitHub {
            url: String::new(),
            issued: shared.issued.clone(),
            claims: shared.claims.clone(),
            refused: shared.refused.clone(),
        };
        let app = axum::Router::new()
            .route("/app/installations/{id}/access_tokens", post(access_tokens))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeGitHub { url, ..fake }
    }

    fn issued(&self) -> Vec<String> {
        self.issued.lock().unwrap().clone()
    }
}

fn app_auth(app_id: u64, installation: u64, key_pem: &str, api_url: &str) -> GitAuth {
    GitAuth::GitHubApp {
        app_id,
        installation_id: installation,
        private_key: SecretSetting::Value(SecretString::from(key_pem.to_owned())),
        api_url: api_url.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// GitHub App

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_app_installation_token_fetches_and_is_minted_again_after_a_refusal() {
    let (private_pem, public_pem) = rsa_key_pair();
    let (app_id, installation) = (310_001, 42);
    let github = FakeGitHub::start(app_id, installation, &public_pem).await;
    let served = Served::new();
    let server = GitHttpServer::start(
        served.root.path(),
        Some(("x-access-token", "ghs_installation_token_1")),
    );
    let location = RepoLocation::parse(&server.url("acme/config.git")).unwrap();
    let auth = git_auth_with(
        &app_auth(app_id, installation, &private_pem, &github.url),
        None,
    )
    .unwrap();
    let cache_dir = tempfile::tempdir().unwrap();

    let (head, fetched) = blocking({
        let (location, auth, cache) = (location.clone(), auth.clone(), cache_dir.path().to_owned());
        move || {
            let head = remote_head(&location, "main", &auth, &NetworkOptions::default()).unwrap();
            let fetched = GitCache::new(cache)
                .fetch(&location, "main", &auth, &NetworkOptions::default())
                .unwrap();
            (head, fetched)
        }
    })
    .await;

    assert_eq!(head, served.repo.head());
    assert_eq!(fetched.revision.commit(), Some(head.as_str()));
    assert_eq!(
        github.issued().len(),
        1,
        "the token is reused across operations"
    );
    let claims = github.claims.lock().unwrap()[0].clone();
    let now = chrono::Utc::now().timestamp();
    assert_eq!(claims.iss, app_id.to_string());
    assert!(claims.iat <= now - 55, "iat is backdated: {claims:?}");
    assert!(claims.exp - claims.iat <= 600, "{claims:?}");

    // The installation token is revoked: the git host refuses it, a new one is minted.
    server.set_credentials(Some(("x-access-token", "ghs_installation_token_2")));
    let moved = served.push("jobs/b.yaml");
    let head = blocking({
        let (location, auth) = (location.clone(), auth.clone());
        move || remote_head(&location, "main", &auth, &NetworkOptions::default()).unwrap()
    })
    .await;

    assert_eq!(head, moved);
    assert_eq!(github.issued().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_github_app_key_fails_clearly_without_any_secret_in_the_error() {
    let (_, public_pem) = rsa_key_pair();
    let (wrong_pem, _) = rsa_key_pair();
    let (app_id, installation) = (310_002, 43);
    let github = FakeGitHub::start(app_id, installation, &public_pem).await;
    let served = Served::new();
    let server = GitHttpServer::start(
        served.root.path(),
        Some(("x-access-token", "ghs_installation_token_1")),
    );
    let location = RepoLocation::parse(&server.url("acme/config.git")).unwrap();
    let auth = git_auth_with(
        &app_auth(app_id, installation, &wrong_pem, &github.url),
        None,
    )
    .unwrap();

    let err = blocking(move || {
        remote_head(&location, "main", &auth, &NetworkOptions::default()).unwrap_err()
    })
    .await;

    let shown = format!("{err} {err:?}");
    assert!(matches!(err, GitError::Credentials { .. }), "{shown}");
    assert!(shown.contains(&format!("GitHub App {app_id}")), "{shown}");
    assert!(
        shown.contains("401") && shown.contains("private key"),
        "{shown}"
    );
    let key_body = wrong_pem.lines().nth(1).unwrap();
    assert!(!shown.contains(key_body), "{shown}");
    assert!(!shown.contains("eyJ"), "a JWT leaked: {shown}");
    assert!(!shown.contains("BEGIN"), "{shown}");
    assert!(github.issued().is_empty());
    assert_eq!(
        github.refused.load(Ordering::SeqCst),
        1,
        "a fixed key is not read twice"
    );
    assert!(
        server.requests().is_empty(),
        "nothing is sent to the git host without a token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_app_key_that_is_not_a_key_is_refused_before_any_request() {
    let (app_id, installation) = (310_003, 44);
    let (_, public_pem) = rsa_key_pair();
    let github = FakeGitHub::start(app_id, installation, &public_pem).await;
    let location = RepoLocation::parse("https://github.example.com/acme/config.git").unwrap();
    let planted =
        "-----BEGIN RSA PRIVATE KEY-----\nplanted-not-a-key\n-----END RSA PRIVATE KEY-----";
    let auth = git_auth_with(&app_auth(app_id, installation, planted, &github.url), None).unwrap();

    let err = blocking(move || {
        remote_head(&location, "main", &auth, &NetworkOptions::default()).unwrap_err()
    })
    .await;

    let shown = format!("{err} {err:?}");
    assert!(shown.contains("not an RSA private key"), "{shown}");
    assert!(!shown.contains("planted-not-a-key"), "{shown}");
    assert_eq!(github.refused.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------------
// rotation of a token in Secrets Manager

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_secret_is_picked_up_after_exactly_one_re_read() {
    let moto = Moto::start();
    let (secrets, reads, writer) = counted_secrets(&moto).await;
    put_secret(&writer, "prod/ritmo/git-token", "token-v1-8c1f", true).await;
    let served = Served::new();
    let server = GitHttpServer::start(
        served.root.path(),
        Some(("x-access-token", "token-v1-8c1f")),
    );
    let location = RepoLocation::parse(&server.url("acme/config.git")).unwrap();
    let auth = git_auth_with(
        &GitAuth::Token {
            token: None,
            token_secret: Some("prod/ritmo/git-token".into()),
        },
        Some(&secrets),
    )
    .unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let run = |auth: Auth, location: RepoLocation, cache: PathBuf| {
        blocking(move || {
            let head = remote_head(&location, "main", &auth, &NetworkOptions::default());
            let fetched =
                GitCache::new(cache).fetch(&location, "main", &auth, &NetworkOptions::default());
            (head, fetched)
        })
    };

    let (head_v1, fetched_v1) = run(auth.clone(), location.clone(), cache_dir.path().into()).await;
    let reads_with_v1 = reads.0.load(Ordering::SeqCst);
    put_secret(&writer, "prod/ritmo/git-token", "token-v2-5d2e", false).await;
    server.set_credentials(Some(("x-access-token", "token-v2-5d2e")));
    let moved = served.push("jobs/b.yaml");
    let (head_v2, fetched_v2) = run(auth.clone(), location.clone(), cache_dir.path().into()).await;

    assert_eq!(head_v1.unwrap(), served.repo.git(&["rev-parse", "HEAD~1"]));
    assert!(fetched_v1.is_ok(), "{fetched_v1:?}");
    assert_eq!(reads_with_v1, 1, "one read serves both operations (cache)");
    assert_eq!(head_v2.unwrap(), moved);
    assert_eq!(fetched_v2.unwrap().revision.commit(), Some(moved.as_str()));
    assert_eq!(
        reads.0.load(Ordering::SeqCst),
        2,
        "the refusal caused exactly one re-read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_stays_wrong_after_the_re_read_fails_clearly() {
    let moto = Moto::start();
    let (secrets, reads, writer) = counted_secrets(&moto).await;
    put_secret(&writer, "git-token", "stale-token-77aa", true).await;
    let served = Served::new();
    let server = GitHttpServer::start(served.root.path(), Some(("x-access-token", "other")));
    let location = RepoLocation::parse(&server.url("acme/config.git")).unwrap();
    let auth = git_auth_with(
        &GitAuth::Token {
            token: None,
            token_secret: Some("git-token".into()),
        },
        Some(&secrets),
    )
    .unwrap();

    let err = blocking(move || {
        remote_head(&location, "main", &auth, &NetworkOptions::default()).unwrap_err()
    })
    .await;

    let shown = format!("{err} {err:?}");
    assert!(matches!(err, GitError::Authentication { .. }), "{shown}");
    assert!(
        shown.contains("Secrets Manager secret `git-token`"),
        "{shown}"
    );
    assert!(!shown.contains("stale-token-77aa"), "{shown}");
    assert_eq!(
        reads.0.load(Ordering::SeqCst),
        2,
        "read, refused, read once more"
    );
}

// ---------------------------------------------------------------------------------------------
// ssh through a fake client

/// A fake ssh client: logs its arguments and the modes of the key file and its directory,
/// refuses (as sshd would) a key other than the one in `expected_key`, and otherwise runs the
/// remote command locally.
struct FakeSsh {
    dir: tempfile::TempDir,
}

impl FakeSsh {
    fn new(expected_key: &str) -> FakeSsh {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let expected = dir.path().join("expected_key");
        std::fs::write(&expected, format!("{expected_key}\n")).unwrap();
        let script = format!(
            r#"#!/bin/sh
key=""
for arg in "$@"; do echo "arg:$arg" >> '{log}'; done
while [ $# -gt 0 ]; do
  case "$1" in
    -i) key="$2"; shift 2 ;;
    -o) shift 2 ;;
    -p*) shift ;;
    *) break ;;
  esac
done
host="$1"; shift
echo "host:$host" >> '{log}'
echo "key:$key" >> '{log}'
echo "key-mode:$(stat -c %a "$key")" >> '{log}'
echo "dir-mode:$(stat -c %a "$(dirname "$key")")" >> '{log}'
echo "protocol:$GIT_PROTOCOL" >> '{log}'
if ! cmp -s "$key" '{expected}'; then
  echo "git@$host: Permission denied (publickey)." >&2
  exit 255
fi
exec sh -c "$*"
"#,
            log = log.display(),
            expected = expected.display(),
        );
        let program = dir.path().join("ssh");
        std::fs::write(&program, script).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeSsh { dir }
    }

    fn program(&self) -> PathBuf {
        self.dir.path().join("ssh")
    }

    fn expect_key(&self, key: &str) {
        std::fs::write(self.dir.path().join("expected_key"), format!("{key}\n")).unwrap();
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn ssh_location(bare: &Path) -> RepoLocation {
    RepoLocation::parse(&format!("ssh://git@git.example.test{}", bare.display())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_runs_the_client_with_the_key_file_and_strict_host_checking() {
    let served = Served::new();
    let ssh = FakeSsh::new("KEY-ONE");
    let auth = git_auth_with(
        &GitAuth::Ssh {
            key: Some(SecretSetting::Value(SecretString::from("KEY-ONE"))),
            known_hosts: Some(KnownHosts::Text(
                "git.example.test ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeHostKey".into(),
            )),
            program: Some(ssh.program()),
        },
        None,
    )
    .unwrap();
    let location = ssh_location(&served.bare());
    let cache_dir = tempfile::tempdir().unwrap();

    let (head, fetched) = blocking({
        let (location, auth, cache) = (location.clone(), auth.clone(), cache_dir.path().to_owned());
        move || {
            let head = remote_head(&location, "main", &auth, &NetworkOptions::default());
            let fetched =
                GitCache::new(cache).fetch(&location, "main", &auth, &NetworkOptions::default());
            (head, fetched)
        }
    })
    .await;

    let log = ssh.log();
    assert_eq!(head.unwrap(), served.repo.head(), "{log:#?}");
    assert_eq!(
        fetched.unwrap().revision.commit(),
        Some(served.repo.head().as_str())
    );
    for expected in [
        "arg:-i",
        "arg:IdentitiesOnly=yes",
        "arg:BatchMode=yes",
        "arg:StrictHostKeyChecking=yes",
        "arg:GlobalKnownHostsFile=/dev/null",
        "arg:SendEnv=GIT_PROTOCOL",
        "host:git@git.example.test",
        "key-mode:600",
        "dir-mode:700",
        "protocol:version=2",
    ] {
        assert!(
            log.iter().any(|line| line == expected),
            "{expected} missing: {log:#?}"
        );
    }
    assert!(
        log.iter()
            .any(|line| line.starts_with("arg:UserKnownHostsFile=")),
        "{log:#?}"
    );
    let upload_pack = log.iter().position(|line| line == "arg:git-upload-pack");
    assert!(
        upload_pack.is_some_and(|at| log[at + 1].contains("acme/config.git")),
        "the remote command runs git-upload-pack on the repository path: {log:#?}"
    );
    let key_file = log
        .iter()
        .find_map(|line| line.strip_prefix("key:"))
        .unwrap();
    assert!(
        !Path::new(key_file).exists(),
        "the key file outlived the operation"
    );
    assert!(log.iter().all(|line| !line.contains("KEY-ONE")), "{log:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_ssh_key_in_secrets_manager_is_picked_up_after_exactly_one_re_read() {
    let moto = Moto::start();
    let (secrets, reads, writer) = counted_secrets(&moto).await;
    put_secret(&writer, "prod/ritmo/deploy-key", "DEPLOY-KEY-V1", true).await;
    let served = Served::new();
    let ssh = FakeSsh::new("DEPLOY-KEY-V1");
    let auth = git_auth_with(
        &GitAuth::Ssh {
            key: Some(SecretSetting::SecretsManager(
                "prod/ritmo/deploy-key".into(),
            )),
            known_hosts: None,
            program: Some(ssh.program()),
        },
        Some(&secrets),
    )
    .unwrap();
    let location = ssh_location(&served.bare());
    let head = |auth: Auth, location: RepoLocation| {
        blocking(move || remote_head(&location, "main", &auth, &NetworkOptions::default()))
    };

    let first = head(auth.clone(), location.clone()).await;
    put_secret(&writer, "prod/ritmo/deploy-key", "DEPLOY-KEY-V2", false).await;
    ssh.expect_key("DEPLOY-KEY-V2");
    let second = head(auth.clone(), location.clone()).await;

    assert_eq!(first.unwrap(), served.repo.head());
    assert_eq!(second.unwrap(), served.repo.head());
    assert_eq!(reads.0.load(Ordering::SeqCst), 2, "one read, one re-read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_ssh_key_and_a_missing_client_are_clear_errors() {
    let served = Served::new();
    let ssh = FakeSsh::new("THE-RIGHT-KEY");
    let location = ssh_location(&served.bare());
    let with = |key: &str, program: PathBuf| {
        git_auth_with(
            &GitAuth::Ssh {
                key: Some(SecretSetting::Value(SecretString::from(key.to_owned()))),
                known_hosts: None,
                program: Some(program),
            },
            None,
        )
        .unwrap()
    };
    let refused = with("A-WRONG-KEY", ssh.program());
    let missing = with("THE-RIGHT-KEY", PathBuf::from("/nonexistent/bin/ssh"));

    let (refused, missing) = blocking(move || {
        (
            remote_head(&location, "main", &refused, &NetworkOptions::default()).unwrap_err(),
            remote_head(&location, "main", &missing, &NetworkOptions::default()).unwrap_err(),
        )
    })
    .await;

    let shown = format!("{refused} {refused:?}");
    assert!(
        matches!(refused, GitError::Authentication { .. }),
        "{shown}"
    );
    assert!(shown.contains("ssh key"), "{shown}");
    assert!(!shown.contains("A-WRONG-KEY"), "{shown}");
    let shown = format!("{missing}");
    assert!(shown.contains("/nonexistent/bin/ssh"), "{shown}");
    assert!(shown.contains("infra/README.md"), "{shown}");
}

#[test]
fn ssh_and_https_credentials_are_not_mixed_up() {
    let https = RepoLocation::parse("https://github.com/acme/config.git").unwrap();
    let ssh = RepoLocation::parse("git@github.com:acme/config.git").unwrap();
    let token = Auth::Token(SecretString::from("t"));
    let key = Auth::Ssh(ritmo::git::SshAuth::default());

    let token_over_ssh = remote_head(&ssh, "main", &token, &NetworkOptions::default()).unwrap_err();
    let key_over_https = remote_head(&https, "main", &key, &NetworkOptions::default()).unwrap_err();

    assert!(
        token_over_ssh.to_string().contains("https URL"),
        "{token_over_ssh}"
    );
    assert!(
        key_over_https.to_string().contains("ssh URL"),
        "{key_over_https}"
    );
}
