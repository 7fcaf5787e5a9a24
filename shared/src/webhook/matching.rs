//! Which targets a push concerns: same repository (however its URL is spelled) and same branch.

use super::Push;

/// One target as matching needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetRef<'a> {
    pub name: &'a str,
    pub repo_url: &'a str,
    pub branch: &'a str,
}

impl<'a> From<(&'a str, &'a str, &'a str)> for TargetRef<'a> {
    fn from((name, repo_url, branch): (&'a str, &'a str, &'a str)) -> Self {
        TargetRef {
            name,
            repo_url,
            branch,
        }
    }
}

/// The names of the targets that track the pushed repository and branch, in the order given,
/// each once.
pub fn matching_targets<'a, I, T>(push: &Push, targets: I) -> Vec<&'a str>
where
    I: IntoIterator<Item = T>,
    T: Into<TargetRef<'a>>,
{
    targets_following(&push.repo_urls, &push.branch, targets)
}

/// The names of the targets that follow `branch` of the repository known by any of
/// `repo_urls`, in the order given, each once: a push's, or a pull request's base.
pub fn targets_following<'a, I, T>(repo_urls: &[String], branch: &str, targets: I) -> Vec<&'a str>
where
    I: IntoIterator<Item = T>,
    T: Into<TargetRef<'a>>,
{
    let wanted: Vec<String> = repo_urls
        .iter()
        .filter_map(|url| normalize_repo_url(url))
        .collect();
    let branch = normalize_branch(branch);
    let mut names: Vec<&'a str> = Vec::new();
    for target in targets {
        let target = target.into();
        if normalize_branch(target.branch) != branch || names.contains(&target.name) {
            continue;
        }
        let Some(url) = normalize_repo_url(target.repo_url) else {
            continue;
        };
        if wanted.contains(&url) {
            names.push(target.name);
        }
    }
    names
}

/// `owner/name` (GitLab: `group/subgroup/name`) of a repository URL, lower-case, as
/// [`normalize_repo_url`] reads it: where a target's pull-request previews are posted.
pub fn repository_path(url: &str) -> Option<String> {
    let normalized = normalize_repo_url(url)?;
    let (_host, path) = normalized.split_once('/')?;
    path.contains('/').then(|| path.to_string())
}

/// A branch name without a leading `refs/heads/`.
pub fn normalize_branch(branch: &str) -> &str {
    let branch = branch.trim();
    branch.strip_prefix("refs/heads/").unwrap_or(branch)
}

/// `host/path`, lower-case, from any way of writing a repository's address: `https://` (with
/// or without user info), `ssh://`, `git://`, scp-like `git@host:owner/repo`; port, `.git`
/// suffix, trailing slashes, query and fragment dropped.
///
/// The path is compared case-insensitively too: GitHub, GitLab, Gitea and Bitbucket all
/// resolve repository paths without regard to case, and their payloads spell the canonical
/// case while people often type lower case. Ports are dropped because the same repository is
/// served over ssh and https on different ports. `None` when no host or path can be found
/// (a local path, an empty string).
pub fn normalize_repo_url(url: &str) -> Option<String> {
    let url = url.trim();
    let (authority, path) = match url.split_once("://") {
        Some((_scheme, rest)) => {
            let rest = rest.split(['?', '#']).next().unwrap_or_default();
            rest.split_once('/').unwrap_or((rest, ""))
        }
        None => {
            // scp-like syntax: `[user@]host:path`, where no `/` comes before the `:`.
            let (authority, path) = url.split_once(':')?;
            if authority.contains('/') || path.starts_with("//") {
                return None;
            }
            (authority, path)
        }
    };
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split_once(']').map(|(host, _)| host)?
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    let mut path = path.trim_matches('/');
    if let Some(split) = path.len().checked_sub(4)
        && path
            .get(split..)
            .is_some_and(|suffix| suffix.eq_ignore_ascii_case(".git"))
    {
        path = path.get(..split).unwrap_or_default().trim_end_matches('/');
    }
    if host.is_empty() || path.is_empty() {
        return None;
    }
    Some(format!(
        "{}/{}",
        host.to_ascii_lowercase(),
        path.to_lowercase()
    ))
}
