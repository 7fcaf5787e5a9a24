//! The git module's error: what went wrong, where (repository location with credentials
//! stripped, branch, path, commit), and whether trying again may help.

/// Every failure of the git source. Messages name the location with credentials stripped and
/// never contain a token, a password or a credential-bearing URL.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("invalid repository location `{input}`: {reason}")]
    InvalidLocation { input: String, reason: String },

    #[error("`{location}` is not a git repository: {message}")]
    NotARepository { location: String, message: String },

    #[error("branch `{branch}` does not exist in `{location}`")]
    BranchNotFound { location: String, branch: String },

    #[error("`{location}` has no commit on HEAD yet")]
    UnbornHead { location: String },

    #[error("commit `{commit}` is not in `{location}`")]
    CommitNotFound { location: String, commit: String },

    #[error("invalid config path `{path}`: {reason}")]
    InvalidConfigPath { path: String, reason: String },

    #[error("config path `{path}` does not exist at {revision}")]
    ConfigPathNotFound { path: String, revision: String },

    #[error("config path `{path}` at {revision} is not a directory")]
    ConfigPathNotADirectory { path: String, revision: String },

    #[error("more than {limit} resource files under the config path at {revision}")]
    TooManyFiles { limit: usize, revision: String },

    #[error("cannot read object `{id}` in `{location}`: {message}")]
    Object {
        location: String,
        id: String,
        message: String,
    },

    #[error("cannot read `{path}`")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// The remote refused the credentials, or demanded some and none were configured.
    #[error("authentication to `{location}` failed: check {hint}")]
    Authentication { location: String, hint: String },

    /// The credentials could not be obtained (a secret unreadable, GitHub refusing to issue an
    /// installation token): nothing was sent to the Git host.
    #[error("cannot get the credentials for `{location}`: {message}")]
    Credentials {
        location: String,
        message: String,
        retryable: bool,
    },

    #[error("network operation on `{location}` timed out after {seconds}s")]
    Timeout { location: String, seconds: u64 },

    #[error("cannot reach `{location}`: {message}")]
    Network {
        location: String,
        message: String,
        retryable: bool,
    },

    #[error(
        "`{location}` is not a remote repository; a local path or `file://` URL is read in place"
    )]
    NotRemote { location: String },

    #[error("cache directory `{path}`: {message}")]
    Cache { path: String, message: String },

    /// The base commit of a diff is gone (force-push, shallow cache, garbage collected) or is
    /// not an ancestor: the caller should scan the whole tree instead.
    #[error("cannot diff from `{from}` to `{to}`: {reason}")]
    DiffBaseUnavailable {
        from: String,
        to: String,
        reason: String,
    },
}

impl GitError {
    /// Whether the same call may succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            GitError::Timeout { .. } => true,
            GitError::Network { retryable, .. } | GitError::Credentials { retryable, .. } => {
                *retryable
            }
            GitError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
            ),
            GitError::Cache { .. } => true,
            _ => false,
        }
    }

    /// Whether the caller should fall back to a full scan rather than fail.
    pub fn needs_full_scan(&self) -> bool {
        matches!(self, GitError::DiffBaseUnavailable { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_retryable_and_missing_branches_are_not() {
        let timeout = GitError::Timeout {
            location: "https://example.com/r.git".into(),
            seconds: 30,
        };
        let missing = GitError::BranchNotFound {
            location: "/srv/repo".into(),
            branch: "main".into(),
        };

        assert!(timeout.is_retryable());
        assert!(!missing.is_retryable());
    }

    #[test]
    fn messages_are_lowercase_and_name_the_value_in_backticks() {
        let err = GitError::ConfigPathNotFound {
            path: "config/prod".into(),
            revision: "main@sha1:abc".into(),
        };

        assert_eq!(
            err.to_string(),
            "config path `config/prod` does not exist at main@sha1:abc"
        );
    }
}
