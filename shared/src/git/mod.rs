//! The git source: read a config repository's resource files at a commit (or from a plain
//! directory), and, for remote repositories, learn a branch's head, fetch into a reusable cache
//! and diff two trees.
//!
//! - [`read_commit`] / [`read_worktree`]: the resource files of a config path (local repository
//!   at a branch tip, or a plain directory), as a [`Snapshot`]; [`uncommitted_files`]: how many
//!   of them the working tree changes.
//! - [`remote_head`]: where a remote branch points, with one ls-refs request (protocol v2).
//! - [`GitCache`]: fetch a branch into a per-target bare cache (shallow at first, deepened when
//!   an older commit is needed) and read snapshots from it.
//! - [`changed_paths`] / [`read_files`] / [`is_ancestor`] / [`kinds_listed_at`]: what an
//!   incremental plan needs.
//!
//! Everything here is blocking (gix is): async callers run it in `tokio::task::spawn_blocking`.
//! Transports: https needs no external program; `file://` runs `git-upload-pack` and ssh runs
//! an ssh client through `sh -c` (the Lambda image has no ssh client: see infra/README.md for
//! what to ship). Authentication: a token or basic auth, a token read from a secret, a GitHub
//! App installation token, or an ssh key (see [`Auth`]); credentials read from a secret are
//! read again once when the host refuses them.
//! Does not parse YAML (that is `manifest`) nor decide what a symlink or an oversized file means
//! (that is `validate`): it reports what it found as [`FileContent`](crate::manifest::FileContent).

mod cache;
mod config_path;
mod credentials;
mod diff;
mod error;
mod github_app;
mod location;
mod remote;
mod ssh;
mod tree;
mod worktree;

pub use cache::{FetchOutcome, FoundCommit, GitCache};
pub use config_path::ConfigPath;
pub use credentials::SecretSource;
pub use diff::{
    ChangeKind, PathChange, changed_paths, changed_paths_up_to, is_ancestor, kinds_listed_at,
    read_files,
};
pub use error::GitError;
pub use github_app::{Claims as GitHubAppClaims, GitHubApp, GitHubAppError, sign_jwt};
pub(crate) use location::is_loopback;
pub use location::{RemoteScheme, RemoteUrl, RepoLocation};
pub use remote::{
    Auth, NetworkOptions, TOKEN_USERNAME, is_pull_request_ref, is_valid_branch_name, remote_head,
};
pub use ssh::{KnownHosts, SshAuth};
pub use tree::{is_git_repository, read_commit, read_commit_at, resolve_commit};
pub use worktree::{read_worktree, uncommitted_files};

use crate::manifest::SourceFile;
use crate::model::Revision;

/// The resource files of a config path at one revision, paths relative to the config path and
/// sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub revision: Revision,
    pub files: Vec<SourceFile>,
}
