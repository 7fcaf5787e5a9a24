//! Where the pipeline reads a target's repository: its source (cached under
//! `cache_dir/<target>`, read by `incremental::locate`), revision strings, and the remote head
//! the poller asks for.

use super::SourceSpec;
use crate::config::TargetSettings;
use crate::git::{self, NetworkOptions, RepoLocation};
use crate::model::Revision;
use crate::{Error, Result};

/// The source of `target` as the planner reads it: its branch (HEAD when it names none), or
/// the files on disk when `worktree` is asked for or the location is a plain directory.
pub(crate) async fn source_spec(
    settings: &crate::config::Settings,
    target: &TargetSettings,
    worktree: bool,
) -> Result<SourceSpec> {
    let location = RepoLocation::parse(&target.repo_url)?;
    let plain_directory = location
        .local_path()
        .is_some_and(|path| !git::is_git_repository(path));
    Ok(SourceSpec {
        location,
        branch: (!target.branch.is_empty()).then(|| target.branch.clone()),
        path: target.path.clone(),
        worktree: worktree || plain_directory,
        auth: super::git_auth(&target.auth).await?,
        cache_dir: settings.cache_dir.join(&target.name),
    })
}

/// The commit of `branch@sha1:<hex>`, or of a bare hex commit id.
pub(crate) fn commit_of(revision: &str) -> Option<&str> {
    let commit = revision
        .rsplit_once("@sha1:")
        .map_or(revision, |(_, commit)| commit);
    is_commit_id(commit).then_some(commit)
}

/// A full or abbreviated (at least 7 digits) hex commit id.
pub(crate) fn is_commit_id(text: &str) -> bool {
    (7..=40).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `branch@sha1:<commit>`.
pub(crate) fn revision(branch: &str, commit: &str) -> String {
    Revision::Commit {
        branch: branch.to_string(),
        commit: commit.to_ascii_lowercase(),
    }
    .to_string()
}

/// Remote head of `target`'s branch, off the runtime and bounded by `timeout`.
pub(crate) async fn remote_head(
    source: &SourceSpec,
    timeout: std::time::Duration,
) -> Result<String> {
    let display = source.location.to_string();
    let source = source.clone();
    let options = NetworkOptions {
        timeout,
        connect_timeout: timeout.min(NetworkOptions::default().connect_timeout),
        shallow_depth: None,
    };
    let branch = source.branch.clone().unwrap_or_else(|| "main".into());
    let task = tokio::task::spawn_blocking(move || {
        git::remote_head(&source.location, &branch, &source.auth, &options)
    });
    // gix honours the deadline itself; this outer bound covers a stuck DNS lookup or the like.
    match tokio::time::timeout(timeout + std::time::Duration::from_secs(5), task).await {
        Ok(joined) => joined
            .map_err(|join| Error::Internal(format!("the remote head check stopped: {join}")))?
            .map_err(Error::from),
        Err(_) => Err(Error::Git(git::GitError::Timeout {
            location: display,
            seconds: timeout.as_secs(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_of_a_revision_is_its_hex_part() {
        let commit = "8b5f2a6c1d3e4f5061728394a5b6c7d8e9f00112";

        assert_eq!(commit_of(&format!("main@sha1:{commit}")), Some(commit));
        assert_eq!(commit_of(commit), Some(commit));
        assert_eq!(commit_of("main"), None);
        assert_eq!(commit_of("main@sha1:xyz"), None);
    }
}
