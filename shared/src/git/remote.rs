//! Talking to a remote: credentials, timeouts, and the cheap "where is this branch now?"
//! question (ls-refs over protocol v2, no objects fetched).
//!
//! Credentials are supplied programmatically through gix's credentials callback, only when the
//! server asks (HTTP 401), never written into a URL, the repository config, a log or an error.
//! A callback is always installed, so gix never falls back to git's credential helpers or a
//! terminal prompt. Over ssh the key is handed to the ssh client as a file (see `ssh`).
//!
//! Credentials that are read rather than given (a token in Secrets Manager, a GitHub App
//! installation token, an ssh key from a secret) are refreshed when the host refuses them:
//! `Remote::retry_refused` forgets them, reads them again and runs the operation once more, so
//! a rotated secret is picked up without a restart.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use gix::credentials::helper::Action;
use gix::credentials::protocol::Outcome;
use gix::remote::Direction;
use secrecy::{ExposeSecret, SecretString};

use super::credentials::SecretSource;
use super::github_app::GitHubApp;
use super::location::{RemoteScheme, is_loopback};
use super::ssh::{SshAuth, SshSession};
use super::tree::DELTA_BASE_CACHE;
use super::{GitError, RepoLocation};

/// How to authenticate to a remote. `Debug` never shows a secret.
#[derive(Clone, Default)]
pub enum Auth {
    /// No credentials, unless the location's URL carries some.
    #[default]
    None,
    /// A personal access, installation or deploy token, sent as the basic-auth password with
    /// the user `x-access-token` (accepted by GitHub, GitLab, Gitea and Bitbucket).
    Token(SecretString),
    Basic {
        username: String,
        password: SecretString,
    },
    /// A token read from a secret when needed, and read again once after the host refused it.
    TokenFrom(SecretSource),
    /// A GitHub App installation token (minted, cached, minted again after a refusal).
    GitHubApp(Arc<GitHubApp>),
    /// An ssh key for an ssh remote.
    Ssh(SshAuth),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("Auth::None"),
            Auth::Token(_) => f.write_str("Auth::Token(<redacted>)"),
            Auth::Basic { username, .. } => f
                .debug_struct("Auth::Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Auth::TokenFrom(source) => f.debug_tuple("Auth::TokenFrom").field(source).finish(),
            Auth::GitHubApp(app) => f.debug_tuple("Auth::GitHubApp").field(app).finish(),
            Auth::Ssh(ssh) => f.debug_tuple("Auth::Ssh").field(ssh).finish(),
        }
    }
}

impl Auth {
    /// Forgets credentials the host refused, so the next operation reads them again. Returns
    /// whether that may change anything (a fixed value never does).
    pub fn refresh(&self) -> bool {
        match self {
            Auth::None | Auth::Token(_) | Auth::Basic { .. } => false,
            Auth::TokenFrom(source) => source.invalidate(),
            Auth::GitHubApp(app) => {
                app.forget_token();
                true
            }
            Auth::Ssh(ssh) => ssh.key.as_ref().is_some_and(SecretSource::invalidate),
        }
    }

    /// What to check when the host refuses these credentials.
    fn hint(&self) -> String {
        match self {
            Auth::None => "the repository needs credentials: configure authentication (token, \
                           ssh or github_app)"
                .into(),
            Auth::Token(_) | Auth::Basic { .. } => {
                "the configured token or password and its access to the repository".into()
            }
            Auth::TokenFrom(source) => format!(
                "the token in {} and its access to the repository",
                source.describe()
            ),
            Auth::GitHubApp(app) => format!(
                "that GitHub App {} (installation {}) is installed on the repository with \
                 contents read access",
                app.app_id(),
                app.installation_id()
            ),
            Auth::Ssh(ssh) => match &ssh.key {
                Some(source) => format!(
                    "the ssh key in {}: its public key must be a deploy key (or a user's key) \
                     with access to the repository",
                    source.describe()
                ),
                None => "the ssh client's own keys: none is configured (ssh_key_secret, \
                         ssh_key_path)"
                    .into(),
            },
        }
    }
}

/// The user sent with a bare token.
pub const TOKEN_USERNAME: &str = "x-access-token";

/// Bounds on network operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkOptions {
    /// Upper bound of one operation (remote head, or one fetch) and of each HTTP request.
    pub timeout: Duration,
    /// Upper bound of establishing a connection.
    pub connect_timeout: Duration,
    /// Depth of the first fetch into an empty cache (`None`: full history). Later fetches are
    /// incremental and keep what the cache holds. Needs protocol v2 (always used here).
    pub shallow_depth: Option<std::num::NonZeroU32>,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(15),
            shallow_depth: None,
        }
    }
}

/// The commit `refs/heads/<branch>` points to on the remote, learned with one ls-refs request
/// (protocol v2, filtered by prefix); no objects are fetched. Works over https, http, ssh and
/// `file://` (a local path is asked through `git-upload-pack`, like a remote).
///
/// Blocking: call it from `spawn_blocking` in async code.
pub fn remote_head(
    location: &RepoLocation,
    branch: &str,
    auth: &Auth,
    options: &NetworkOptions,
) -> Result<String, GitError> {
    let scratch = scratch_repository()?;
    let remote = Remote::new(location, branch, auth, options)?;
    let refspec = remote.refspec();
    let display = location.to_string();
    remote.retry_refused(|| {
        with_deadline(options.timeout, |interrupt| {
            let gix_remote = scratch
                .remote_at(remote.url.clone())
                .and_then(|r| r.with_refspecs([refspec.as_str()], Direction::Fetch))
                .map_err(|err| remote.network_error(err, interrupt))?
                .with_fetch_tags(gix::remote::fetch::Tags::None);
            let connection = remote.connect(&scratch, &gix_remote, interrupt)?;
            let (ref_map, _handshake) = connection
                .ref_map(gix::progress::Discard, Default::default())
                .map_err(|err| remote.network_error(err, interrupt))?;
            let wanted = format!("refs/heads/{branch}");
            ref_map
                .mappings
                .iter()
                .find_map(|mapping| match &mapping.remote {
                    gix::remote::fetch::refmap::Source::Ref(reference) => {
                        let (name, target, peeled) = reference.unpack();
                        (name == wanted.as_str())
                            .then(|| peeled.or(target).map(|id| id.to_hex().to_string()))
                            .flatten()
                    }
                    gix::remote::fetch::refmap::Source::ObjectId(_) => None,
                })
                .ok_or_else(|| GitError::BranchNotFound {
                    location: display.clone(),
                    branch: branch.to_string(),
                })
        })
    })
}

/// Everything needed to talk to one remote about one branch.
pub(crate) struct Remote {
    pub(crate) url: gix::Url,
    pub(crate) display: String,
    pub(crate) branch: String,
    /// A pull request's ref (`refs/pull/7/head`) fetched instead of the branch.
    pub(crate) pull_ref: Option<String>,
    auth: Auth,
    /// The user and password written in the location's URL, used with [`Auth::None`].
    url_identity: Option<(String, SecretString)>,
    /// Credentials as read for the current attempt; dropped by [`Remote::retry_refused`].
    resolved: Mutex<Option<Arc<Resolved>>>,
    /// Every secret handed out, scrubbed from error messages.
    handed_out: Mutex<Vec<SecretString>>,
    options: NetworkOptions,
}

/// Whether `reference` is a pull request's head as the base repository keeps it:
/// `refs/pull/<number>/head` (GitHub, Gitea, Forgejo) or `refs/merge-requests/<number>/head`
/// (GitLab). Nothing else is fetched for a preview, so a payload cannot make the cache fetch
/// any other ref.
pub fn is_pull_request_ref(reference: &str) -> bool {
    let number = reference
        .strip_prefix("refs/pull/")
        .or_else(|| reference.strip_prefix("refs/merge-requests/"))
        .and_then(|rest| rest.strip_suffix("/head"));
    number.is_some_and(|n| !n.is_empty() && n.len() <= 20 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `branch` is a name git accepts after `refs/heads/` (`main`, `release/1.2`; not
/// `bad..name`, `a b`, `x.lock`, ``). Checked before any network call. Public so the check can
/// be fuzzed on its own.
pub fn is_valid_branch_name(branch: &str) -> bool {
    !branch.is_empty() && gix::validate::reference::name_partial(branch.into()).is_ok()
}

/// Credentials read for one attempt.
enum Resolved {
    Http(Option<(String, SecretString)>),
    Ssh(SshSession),
}

impl Remote {
    pub(crate) fn new(
        location: &RepoLocation,
        branch: &str,
        auth: &Auth,
        options: &NetworkOptions,
    ) -> Result<Self, GitError> {
        let display = location.to_string();
        if !is_valid_branch_name(branch) {
            return Err(GitError::BranchNotFound {
                location: display,
                branch: branch.to_string(),
            });
        }
        let url_identity =
            location
                .remote()
                .and_then(|remote| match (remote.username(), remote.password()) {
                    (user, Some(password)) => {
                        Some((user.unwrap_or(TOKEN_USERNAME).to_string(), password.clone()))
                    }
                    (Some(user), None) => Some((user.to_string(), SecretString::from(""))),
                    (None, None) => None,
                });
        let scheme = location.remote().map(|remote| remote.scheme());
        let mismatch = |message: &str| GitError::Network {
            location: display.clone(),
            message: message.into(),
            retryable: false,
        };
        match (auth, scheme) {
            (Auth::Ssh(_), Some(RemoteScheme::Https | RemoteScheme::Http | RemoteScheme::Git)) => {
                return Err(mismatch(
                    "ssh authentication needs an ssh URL (`ssh://git@host/org/repo.git` or \
                     `git@host:org/repo.git`)",
                ));
            }
            (
                Auth::Token(_) | Auth::Basic { .. } | Auth::TokenFrom(_) | Auth::GitHubApp(_),
                Some(RemoteScheme::Ssh),
            ) => {
                return Err(mismatch(
                    "token and GitHub App authentication need an https URL; an ssh URL needs \
                     ssh authentication",
                ));
            }
            _ => {}
        }
        let sends_password = !matches!(auth, Auth::None | Auth::Ssh(_)) || url_identity.is_some();
        if let Some(remote) = location.remote()
            && sends_password
            && remote.scheme() == RemoteScheme::Http
            && !is_loopback(remote.gix_url().host())
        {
            return Err(GitError::Network {
                location: display,
                message: "refusing to send credentials over plain http: use https".into(),
                retryable: false,
            });
        }
        Ok(Self {
            url: location.fetch_url()?,
            display,
            branch: branch.to_string(),
            pull_ref: None,
            auth: auth.clone(),
            url_identity,
            resolved: Mutex::new(None),
            handed_out: Mutex::new(Vec::new()),
            options: options.clone(),
        })
    }

    /// Runs `operation`; when the host refused credentials that can be read again, forgets
    /// them and runs it once more (a rotated secret, an expired installation token).
    pub(crate) fn retry_refused<T>(
        &self,
        mut operation: impl FnMut() -> Result<T, GitError>,
    ) -> Result<T, GitError> {
        match operation() {
            Err(GitError::Authentication { .. }) if self.auth.refresh() => {
                tracing::info!(
                    location = %self.display,
                    "the git host refused the credentials: reading them again and retrying once"
                );
                *lock(&self.resolved) = None;
                operation()
            }
            other => other,
        }
    }

    /// The credentials of this attempt, read on first use.
    fn resolve(&self) -> Result<Arc<Resolved>, GitError> {
        let mut resolved = lock(&self.resolved);
        if let Some(current) = resolved.as_ref() {
            return Ok(current.clone());
        }
        let unavailable = |message: String, retryable: bool| GitError::Credentials {
            location: self.display.clone(),
            message,
            retryable,
        };
        let handed_out = |password: SecretString| {
            lock(&self.handed_out).push(password.clone());
            password
        };
        let fresh = match &self.auth {
            Auth::Ssh(ssh) => {
                let program =
                    super::ssh::find_program(ssh).map_err(|message| GitError::Network {
                        location: self.display.clone(),
                        message,
                        retryable: false,
                    })?;
                Resolved::Ssh(
                    SshSession::prepare(ssh, &program)
                        .map_err(|message| unavailable(message, true))?,
                )
            }
            Auth::None => Resolved::Http(
                self.url_identity
                    .as_ref()
                    .map(|(user, password)| (user.clone(), handed_out(password.clone()))),
            ),
            Auth::Token(token) => Resolved::Http(Some((
                TOKEN_USERNAME.to_string(),
                handed_out(token.clone()),
            ))),
            Auth::Basic { username, password } => {
                Resolved::Http(Some((username.clone(), handed_out(password.clone()))))
            }
            Auth::TokenFrom(source) => {
                let token = source
                    .read()
                    .map_err(|message| unavailable(message, true))?;
                let token = SecretString::from(token.expose_secret().trim().to_string());
                Resolved::Http(Some((TOKEN_USERNAME.to_string(), handed_out(token))))
            }
            Auth::GitHubApp(app) => {
                let token = app
                    .token()
                    .map_err(|err| unavailable(err.message, err.retryable))?;
                Resolved::Http(Some((TOKEN_USERNAME.to_string(), handed_out(token))))
            }
        };
        let fresh = Arc::new(fresh);
        *resolved = Some(fresh.clone());
        Ok(fresh)
    }

    /// The one refspec a cache needs: the branch into a local branch of the same name, or a
    /// pull request's ref into the same ref.
    pub(crate) fn refspec(&self) -> String {
        match &self.pull_ref {
            Some(reference) => format!("+{reference}:{reference}"),
            None => format!("+refs/heads/{0}:refs/heads/{0}", self.branch),
        }
    }

    /// Connects `remote` with our credentials callback and transport options installed (over
    /// ssh: our ssh command line, naming the key file).
    pub(crate) fn connect<'a, 'repo>(
        &'a self,
        repository: &'repo gix::Repository,
        remote: &'a gix::Remote<'repo>,
        interrupt: &AtomicBool,
    ) -> Result<
        gix::remote::Connection<
            'a,
            'a,
            'repo,
            Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send>,
        >,
        GitError,
    > {
        use gix::protocol::transport::client::blocking_io::{Transport, ssh};

        let resolved = self.resolve()?;
        let connection = match resolved.as_ref() {
            // gix would take the ssh command from the repository's configuration; building the
            // transport here keeps the key file out of any configuration.
            Resolved::Ssh(session) if self.url.scheme == gix::url::Scheme::Ssh => {
                let (url, version) = remote
                    .sanitized_url_and_version(Direction::Fetch)
                    .map_err(|err| self.network_error(err, interrupt))?;
                let options = ssh::connect::Options {
                    command: Some(session.command().clone()),
                    disallow_shell: false,
                    kind: Some(ssh::ProgramKind::Ssh),
                };
                let transport = ssh::connect(url, version, options, false).map_err(|err| {
                    GitError::Network {
                        location: self.display.clone(),
                        message: err.to_string(),
                        retryable: false,
                    }
                })?;
                remote
                    .to_connection_with_transport(Box::new(transport) as Box<dyn Transport + Send>)
            }
            _ => remote
                .connect(Direction::Fetch)
                .map_err(|err| self.network_error(err, interrupt))?,
        };
        let identity = match resolved.as_ref() {
            Resolved::Http(identity) => identity.clone(),
            Resolved::Ssh(_) => None,
        };
        let mut connection = connection.with_credentials(credentials(identity));
        if let Some(transport_options) = self.transport_options(repository, interrupt)? {
            connection = connection.with_transport_options(transport_options);
        }
        Ok(connection)
    }

    /// HTTP options: the repository's defaults plus our timeouts and TLS setup on the reqwest
    /// client.
    fn transport_options(
        &self,
        repository: &gix::Repository,
        interrupt: &AtomicBool,
    ) -> Result<Option<Box<dyn std::any::Any>>, GitError> {
        use gix::protocol::transport::client::blocking_io::http;

        if !matches!(
            self.url.scheme,
            gix::url::Scheme::Http | gix::url::Scheme::Https
        ) {
            return Ok(None);
        }
        let url = self.url.to_bstring();
        let options = repository
            .transport_options(url.as_slice(), None)
            .map_err(|err| self.network_error(err, interrupt))?;
        let mut options = match options.map(|boxed| boxed.downcast::<http::Options>()) {
            Some(Ok(options)) => *options,
            _ => http::Options::default(),
        };
        let timeout = self.options.timeout;
        let connect_timeout = self.options.connect_timeout;
        options.connect_timeout = Some(connect_timeout);
        let backend = http::reqwest::Options {
            configure_client: Some(Box::new(
                move |builder: reqwest::blocking::ClientBuilder| {
                    let builder = builder.timeout(timeout).connect_timeout(connect_timeout);
                    // The process's one TLS setup, instead of reqwest reading the system's CA
                    // certificates again for every client (one per fetch), even over plain http.
                    Ok(match crate::tls::git_client_config() {
                        Some(config) => builder.tls_backend_preconfigured(config),
                        None => builder,
                    })
                },
            )),
            configure_request: None,
        };
        options.backend = Some(std::sync::Arc::new(std::sync::Mutex::new(backend)));
        Ok(Some(Box::new(options)))
    }

    /// A gix failure as our error: timeouts and refused credentials are told apart, and the
    /// message names the location without credentials.
    pub(crate) fn network_error(&self, err: gix::Error, interrupt: &AtomicBool) -> GitError {
        let message = error_chain(&err);
        let lower = message.to_ascii_lowercase();
        if interrupt.load(Ordering::SeqCst) || lower.contains("timed out") {
            return GitError::Timeout {
                location: self.display.clone(),
                seconds: self.options.timeout.as_secs(),
            };
        }
        if err.dominant_class() == Some(gix::error::Class::Unauthenticated)
            || lower.contains("authentication")
            || lower.contains("401")
            // gix reports a 403 as "Received HTTP status 403", classed PermissionDenied.
            || err.dominant_class() == Some(gix::error::Class::PermissionDenied)
            || lower.contains("http status 403")
            || lower.contains("permission denied")
            || lower.contains("no credentials were returned")
        {
            return GitError::Authentication {
                location: self.display.clone(),
                hint: self.auth.hint(),
            };
        }
        let retryable = err.is_retryable()
            || lower.contains("connection refused")
            || lower.contains("connection reset")
            || lower.contains("dns");
        let mut message = redact(&message, &lock(&self.handed_out));
        if let Auth::Ssh(ssh) = &self.auth {
            message.push_str(&ssh_hint(ssh, &lower));
        }
        GitError::Network {
            location: self.display.clone(),
            message,
            retryable,
        }
    }
}

/// Answers gix's `get` with `identity` (or nothing, which makes gix report the refusal at once,
/// as over ssh), and ignores `store`/`erase`.
fn credentials(
    identity: Option<(String, SecretString)>,
) -> impl FnMut(Action) -> gix::Result<Option<Outcome>> {
    move |action| match action {
        Action::Get(context) => Ok(identity.as_ref().map(|(username, password)| Outcome {
            identity: gix::sec::identity::Account {
                username: username.clone(),
                password: password.expose_secret().to_string(),
                oauth_refresh_token: None,
            },
            next: context.into(),
        })),
        Action::Store(_) | Action::Erase(_) => Ok(None),
    }
}

/// What to check after an ssh failure that was not a refused key: the ssh client prints its
/// reason on the process's stderr, where gix leaves it.
fn ssh_hint(ssh: &SshAuth, lower_message: &str) -> String {
    let program = ssh
        .program
        .as_ref()
        .map_or_else(|| "ssh".to_string(), |path| path.display().to_string());
    if lower_message.contains("no such file") || lower_message.contains("not found") {
        return format!(
            " (is the ssh client `{program}` installed? The Lambda image has none: see \
             infra/README.md)"
        );
    }
    match &ssh.known_hosts {
        None => " (check the host key: no known_hosts is configured, so ssh checked its own \
                  files and refuses unknown hosts; set ssh_known_hosts)"
            .to_string(),
        Some(_) => " (check that the configured known_hosts holds the host's key; ssh's own \
                    message is in the log)"
            .to_string(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing behind these locks is left half-updated by a panic: keep using it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The full cause chain of a gix error on one line.
fn error_chain(err: &gix::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Belt and braces: a secret never reaches an error message, even if some layer echoed it.
fn redact(message: &str, secrets: &[SecretString]) -> String {
    secrets
        .iter()
        .map(ExposeSecret::expose_secret)
        .filter(|secret| !secret.is_empty())
        .fold(message.to_string(), |message, secret| {
            message.replace(secret, "<redacted>")
        })
}

/// Runs `operation` with an interrupt flag that a watchdog raises after `timeout`; gix checks
/// it while receiving a pack, and the HTTP client has its own per-request timeout.
pub(crate) fn with_deadline<T>(
    timeout: Duration,
    operation: impl FnOnce(&AtomicBool) -> Result<T, GitError>,
) -> Result<T, GitError> {
    let interrupt = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (done, wait) = mpsc::channel::<()>();
        let flag = &interrupt;
        scope.spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(timeout) {
                flag.store(true, Ordering::SeqCst);
            }
        });
        let result = operation(&interrupt);
        drop(done);
        result
    })
}

/// An empty bare repository that gix needs as a context for ls-refs. Never written to.
fn scratch_repository() -> Result<gix::Repository, GitError> {
    let path: PathBuf = std::env::temp_dir().join("ritmo-git-scratch.git");
    let open = || {
        gix::open_opts(&path, open_options()).map_err(|err| GitError::Cache {
            path: path.display().to_string(),
            message: err.to_string(),
        })
    };
    if let Ok(repository) = open() {
        return Ok(repository);
    }
    // Another thread may be creating it at the same moment: whoever loses opens it.
    let _ = gix::init_bare(&path);
    open()
}

/// How every repository the network code touches is opened: no global or system config, no
/// environment, protocol v2, the reading threads' delta-base cache.
pub(crate) fn open_options() -> gix::open::Options {
    gix::open::Options::isolated().config_overrides(["protocol.version=2", DELTA_BASE_CACHE])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_open_with_a_delta_base_cache_capped_by_bytes() {
        let dir = tempfile::tempdir().unwrap();
        gix::init_bare(dir.path()).unwrap();

        let remote = gix::open_opts(dir.path(), open_options()).unwrap();
        let local = crate::git::tree::open_local(dir.path(), "test").unwrap();

        for repository in [remote, local] {
            let limit = repository
                .config_snapshot()
                .integer("core.deltaBaseCacheLimit");
            assert_eq!(limit, Some(8 * 1024 * 1024));
        }
    }

    #[test]
    fn auth_debug_never_shows_secrets() {
        let token = Auth::Token(SecretString::from("ghp_TOKEN"));
        let basic = Auth::Basic {
            username: "bot".into(),
            password: SecretString::from("hunter2"),
        };

        let shown = format!("{token:?} {basic:?}");

        assert!(!shown.contains("ghp_TOKEN"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("bot"), "{shown}");
    }

    #[test]
    fn credentials_are_refused_over_plain_http_to_other_hosts() {
        let location = RepoLocation::parse("http://git.example.com/config.git").unwrap();
        let auth = Auth::Token(SecretString::from("secret-token"));

        let err = Remote::new(&location, "main", &auth, &NetworkOptions::default())
            .err()
            .unwrap();

        assert!(err.to_string().contains("plain http"), "{err}");
        assert!(!err.to_string().contains("secret-token"), "{err}");
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        assert!(is_loopback(Some("127.0.0.1")));
        assert!(is_loopback(Some("localhost")));
        assert!(is_loopback(Some("[::1]")));
        assert!(!is_loopback(Some("example.com")));
        assert!(!is_loopback(None));
    }

    #[test]
    fn only_a_pull_request_head_ref_is_fetched_for_a_preview() {
        assert!(is_pull_request_ref("refs/pull/7/head"));
        assert!(is_pull_request_ref("refs/merge-requests/12/head"));
        for other in [
            "refs/heads/main",
            "refs/pull/7/merge",
            "refs/pull//head",
            "refs/pull/7a/head",
            "refs/pull/7/head/../../heads/main",
            "refs/tags/v1",
        ] {
            assert!(!is_pull_request_ref(other), "{other}");
        }
    }

    #[test]
    fn invalid_branch_names_are_refused_before_any_network_call() {
        let location = RepoLocation::parse("https://example.com/r.git").unwrap();

        let err = Remote::new(
            &location,
            "bad..name",
            &Auth::None,
            &NetworkOptions::default(),
        )
        .err()
        .unwrap();

        assert!(matches!(err, GitError::BranchNotFound { .. }), "{err:?}");
    }
}
