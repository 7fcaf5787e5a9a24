//! Talking to a remote: credentials, timeouts, and the cheap "where is this branch now?"
//! question (ls-refs over protocol v2, no objects fetched).
//!
//! Credentials are supplied programmatically through gix's credentials callback, only when the
//! server asks (HTTP 401), never written into a URL, the repository config, a log or an error.
//! A callback is always installed, so gix never falls back to git's credential helpers or a
//! terminal prompt.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use gix::credentials::helper::Action;
use gix::credentials::protocol::Outcome;
use gix::remote::Direction;
use secrecy::{ExposeSecret, SecretString};

use super::location::RemoteScheme;
use super::{GitError, RepoLocation};

/// How to authenticate to an https remote. `Debug` never shows a secret.
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
}

/// Everything needed to talk to one remote about one branch.
pub(crate) struct Remote {
    pub(crate) url: gix::Url,
    pub(crate) display: String,
    pub(crate) branch: String,
    identity: Option<(String, SecretString)>,
    options: NetworkOptions,
}

impl Remote {
    pub(crate) fn new(
        location: &RepoLocation,
        branch: &str,
        auth: &Auth,
        options: &NetworkOptions,
    ) -> Result<Self, GitError> {
        let display = location.to_string();
        if branch.is_empty() || gix::validate::reference::name_partial(branch.into()).is_err() {
            return Err(GitError::BranchNotFound {
                location: display,
                branch: branch.to_string(),
            });
        }
        let identity =
            match auth {
                Auth::Token(token) => Some((TOKEN_USERNAME.to_string(), token.clone())),
                Auth::Basic { username, password } => Some((username.clone(), password.clone())),
                Auth::None => location.remote().and_then(|remote| {
                    match (remote.username(), remote.password()) {
                        (user, Some(password)) => {
                            Some((user.unwrap_or(TOKEN_USERNAME).to_string(), password.clone()))
                        }
                        (Some(user), None) => Some((user.to_string(), SecretString::from(""))),
                        (None, None) => None,
                    }
                }),
            };
        if let Some(remote) = location.remote()
            && identity.is_some()
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
            identity,
            options: options.clone(),
        })
    }

    /// The one refspec a cache needs: the branch into a local branch of the same name.
    pub(crate) fn refspec(&self) -> String {
        format!("+refs/heads/{0}:refs/heads/{0}", self.branch)
    }

    /// Connects `remote` with our credentials callback and transport options installed.
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
        let connection = remote
            .connect(Direction::Fetch)
            .map_err(|err| self.network_error(err, interrupt))?;
        let mut connection = connection.with_credentials(self.credentials());
        if let Some(transport_options) = self.transport_options(repository, interrupt)? {
            connection = connection.with_transport_options(transport_options);
        }
        Ok(connection)
    }

    /// Answers gix's `get` with our identity (or nothing), and ignores `store`/`erase`.
    fn credentials(&self) -> impl FnMut(Action) -> gix::Result<Option<Outcome>> + use<'_> {
        move |action| match action {
            Action::Get(context) => {
                Ok(self.identity.as_ref().map(|(username, password)| Outcome {
                    identity: gix::sec::identity::Account {
                        username: username.clone(),
                        password: password.expose_secret().to_string(),
                        oauth_refresh_token: None,
                    },
                    next: context.into(),
                }))
            }
            Action::Store(_) | Action::Erase(_) => Ok(None),
        }
    }

    /// HTTP options: the repository's defaults plus our timeouts on the reqwest client.
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
                    Ok(builder.timeout(timeout).connect_timeout(connect_timeout))
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
        {
            return GitError::Authentication {
                location: self.display.clone(),
            };
        }
        let retryable = err.is_retryable()
            || lower.contains("connection refused")
            || lower.contains("connection reset")
            || lower.contains("dns");
        GitError::Network {
            location: self.display.clone(),
            message: redact(&message, self.identity.as_ref()),
            retryable,
        }
    }
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
fn redact(message: &str, identity: Option<&(String, SecretString)>) -> String {
    match identity {
        Some((_, password)) if !password.expose_secret().is_empty() => {
            message.replace(password.expose_secret(), "<redacted>")
        }
        _ => message.to_string(),
    }
}

fn is_loopback(host: Option<&str>) -> bool {
    match host {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
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
/// environment, protocol v2.
pub(crate) fn open_options() -> gix::open::Options {
    gix::open::Options::isolated().config_overrides(["protocol.version=2"])
}

#[cfg(test)]
mod tests {
    use super::*;

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
