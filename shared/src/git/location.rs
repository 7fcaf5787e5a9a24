//! Where a config repository lives, as a user writes it: a local path, a `file://` URL, an
//! https/http/ssh URL or scp-like `git@host:org/repo.git`.
//!
//! Credentials written into an https URL (`https://user:token@host/…`) are split off at parse
//! time: the URL kept for gix and for display never carries them, and the password is held in
//! a redacted secret, handed to gix only through the credentials callback.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};

use super::GitError;

/// A repository location. `Display` and `Debug` never show a password or token.
#[derive(Clone, PartialEq, Eq)]
pub enum RepoLocation {
    /// A repository on this machine (work tree, `.git` directory or bare repository), read in
    /// place.
    Local(PathBuf),
    /// A repository reached over the network.
    Remote(RemoteUrl),
}

/// The scheme of a remote location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteScheme {
    Https,
    /// Plain http: credentials are never sent over it outside tests.
    Http,
    /// `ssh://` or scp-like; gix runs the `ssh` program.
    Ssh,
    /// The unauthenticated `git://` protocol.
    Git,
}

/// A remote URL without credentials, plus any credentials the user wrote into it.
#[derive(Clone)]
pub struct RemoteUrl {
    url: gix::Url,
    scheme: RemoteScheme,
    username: Option<String>,
    password: Option<SecretString>,
}

impl RemoteUrl {
    /// The URL handed to gix: for http(s) it carries no user and no password.
    pub fn gix_url(&self) -> &gix::Url {
        &self.url
    }

    pub fn scheme(&self) -> RemoteScheme {
        self.scheme
    }

    /// The user written in an http(s) URL (`https://user@host/…`), used as the basic-auth user.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The password or token written in an http(s) URL, if any.
    pub fn password(&self) -> Option<&SecretString> {
        self.password.as_ref()
    }
}

impl PartialEq for RemoteUrl {
    fn eq(&self, other: &Self) -> bool {
        self.url == other.url
            && self.username == other.username
            && self.password.as_ref().map(|p| p.expose_secret().to_owned())
                == other
                    .password
                    .as_ref()
                    .map(|p| p.expose_secret().to_owned())
    }
}

impl Eq for RemoteUrl {}

impl fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `url` never holds a password; gix's Display would redact one anyway.
        write!(f, "{}", self.url)
    }
}

impl fmt::Debug for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteUrl")
            .field("url", &self.to_string())
            .field("scheme", &self.scheme)
            .field("credentials_in_url", &self.password.is_some())
            .finish()
    }
}

impl RepoLocation {
    /// Parses what a user passes as `--repo`.
    pub fn parse(input: &str) -> Result<Self, GitError> {
        let trimmed = input.trim();
        let invalid = |reason: &str| GitError::InvalidLocation {
            input: redact_input(trimmed),
            reason: reason.to_string(),
        };
        if trimmed.is_empty() {
            return Err(invalid("empty location"));
        }
        if let Some((scheme, _)) = trimmed.split_once("://") {
            let scheme = scheme.to_ascii_lowercase();
            if scheme == "file" {
                let url = gix::url::parse(trimmed).map_err(|_| invalid("not a valid file URL"))?;
                let path = gix::path::from_bstring(url.path.clone())
                    .map_err(|_| invalid("not a valid file URL"))?;
                return Ok(RepoLocation::Local(path));
            }
            let scheme = match scheme.as_str() {
                "https" => RemoteScheme::Https,
                "http" => RemoteScheme::Http,
                "ssh" | "git+ssh" | "ssh+git" => RemoteScheme::Ssh,
                "git" => RemoteScheme::Git,
                _ => {
                    return Err(invalid(
                        "unsupported scheme: use https, http, ssh, git or file",
                    ));
                }
            };
            let url = gix::url::parse(trimmed).map_err(|_| invalid("not a valid URL"))?;
            return RemoteUrl::new(url, scheme).map(RepoLocation::Remote);
        }
        if looks_scp_like(trimmed) {
            let url = gix::url::parse(trimmed).map_err(|_| invalid("not a valid scp-like URL"))?;
            if url.scheme == gix::url::Scheme::Ssh {
                return RemoteUrl::new(url, RemoteScheme::Ssh).map(RepoLocation::Remote);
            }
        }
        Ok(RepoLocation::Local(PathBuf::from(trimmed)))
    }

    /// The local path, when the repository is read in place.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            RepoLocation::Local(path) => Some(path),
            RepoLocation::Remote(_) => None,
        }
    }

    /// The remote URL, when the repository must be fetched.
    pub fn remote(&self) -> Option<&RemoteUrl> {
        match self {
            RepoLocation::Local(_) => None,
            RepoLocation::Remote(url) => Some(url),
        }
    }

    /// The URL gix connects to for a fetch or remote head (a `file://` URL for a local path).
    pub fn fetch_url(&self) -> Result<gix::Url, GitError> {
        match self {
            RepoLocation::Remote(remote) => Ok(remote.url.clone()),
            RepoLocation::Local(path) => {
                let absolute = std::path::absolute(path).map_err(|source| GitError::Io {
                    path: path.display().to_string(),
                    source,
                })?;
                let unusable = || GitError::InvalidLocation {
                    input: path.display().to_string(),
                    reason: "not usable as a file URL".into(),
                };
                let bytes = gix::path::into_bstr(absolute)
                    .map_err(|_| unusable())?
                    .into_owned();
                gix::url::Url::from_parts(
                    gix::url::Scheme::File,
                    None,
                    None,
                    None,
                    None,
                    bytes,
                    false,
                )
                .map_err(|_| unusable())
            }
        }
    }
}

impl RemoteUrl {
    fn new(mut url: gix::Url, scheme: RemoteScheme) -> Result<Self, GitError> {
        let (username, password) = match scheme {
            RemoteScheme::Https | RemoteScheme::Http => {
                // A token may be written as the user (`https://ghp_…@github.com/…`), so the
                // user goes with the password and neither stays in the URL.
                let user = url.set_user(None);
                let password = url.set_password(None).map(SecretString::from);
                (user, password)
            }
            RemoteScheme::Ssh | RemoteScheme::Git => {
                if url.set_password(None).is_some() {
                    return Err(GitError::InvalidLocation {
                        input: url.to_string(),
                        reason: "a password in an ssh or git URL is not supported".into(),
                    });
                }
                (None, None)
            }
        };
        if url.host().is_none() {
            return Err(GitError::InvalidLocation {
                input: url.to_string(),
                reason: "no host".into(),
            });
        }
        Ok(Self {
            url,
            scheme,
            username,
            password,
        })
    }
}

impl FromStr for RepoLocation {
    type Err = GitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RepoLocation::parse(s)
    }
}

impl fmt::Display for RepoLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoLocation::Local(path) => write!(f, "{}", path.display()),
            RepoLocation::Remote(url) => url.fmt(f),
        }
    }
}

impl fmt::Debug for RepoLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoLocation::Local(path) => f.debug_tuple("Local").field(path).finish(),
            RepoLocation::Remote(url) => f.debug_tuple("Remote").field(url).finish(),
        }
    }
}

/// `user@host:path` or `host:path`, but not a Windows drive (`C:\x`) nor a path whose first
/// component holds a colon after a slash.
fn looks_scp_like(input: &str) -> bool {
    match input.split_once(':') {
        Some((before, _)) => before.len() > 1 && !before.contains('/') && !before.contains('\\'),
        None => false,
    }
}

/// An unparseable input may still hold credentials: keep only what precedes the userinfo.
fn redact_input(input: &str) -> String {
    match (input.find("://"), input.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***{}", &input[..scheme_end], &input[at..])
        }
        _ => input.to_string(),
    }
}

pub(crate) fn is_loopback(host: Option<&str>) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_relative_and_file_url_paths_are_local() {
        let absolute = RepoLocation::parse("/srv/config").unwrap();
        let relative = RepoLocation::parse("config-repo").unwrap();
        let file_url = RepoLocation::parse("file:///srv/config").unwrap();

        assert_eq!(absolute.local_path(), Some(Path::new("/srv/config")));
        assert_eq!(relative.local_path(), Some(Path::new("config-repo")));
        assert_eq!(file_url.local_path(), Some(Path::new("/srv/config")));
    }

    #[test]
    fn https_ssh_and_scp_like_urls_are_remote() {
        let https = RepoLocation::parse("https://github.com/acme/config.git").unwrap();
        let ssh = RepoLocation::parse("ssh://git@github.com/acme/config.git").unwrap();
        let scp = RepoLocation::parse("git@github.com:acme/config.git").unwrap();

        assert_eq!(https.remote().unwrap().scheme(), RemoteScheme::Https);
        assert_eq!(ssh.remote().unwrap().scheme(), RemoteScheme::Ssh);
        assert_eq!(scp.remote().unwrap().scheme(), RemoteScheme::Ssh);
        assert_eq!(https.to_string(), "https://github.com/acme/config.git");
        assert!(scp.to_string().contains("github.com"));
    }

    #[test]
    fn credentials_in_an_https_url_never_reach_display_or_debug() {
        let location =
            RepoLocation::parse("https://x-access-token:ghp_SECRET123@github.com/acme/c.git")
                .unwrap();

        let shown = format!("{location} {location:?} {}", location.fetch_url().unwrap());

        assert!(!shown.contains("ghp_SECRET123"), "{shown}");
        assert!(!shown.contains("x-access-token"), "{shown}");
        let remote = location.remote().unwrap();
        assert_eq!(remote.username(), Some("x-access-token"));
        assert_eq!(
            remote.password().map(|p| p.expose_secret()),
            Some("ghp_SECRET123")
        );
    }

    #[test]
    fn a_token_written_as_the_user_is_not_displayed() {
        let location = RepoLocation::parse("https://ghp_TOKEN@github.com/acme/c.git").unwrap();

        assert_eq!(location.to_string(), "https://github.com/acme/c.git");
    }

    #[test]
    fn unsupported_schemes_are_refused_without_echoing_credentials() {
        let err = RepoLocation::parse("ftp://user:hunter2@example.com/r.git").unwrap_err();

        let message = err.to_string();
        assert!(message.contains("unsupported scheme"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn empty_input_is_refused() {
        assert!(RepoLocation::parse("  ").is_err());
    }
}
