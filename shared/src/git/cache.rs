//! A per-target bare repository cache, reused across fetches (and warm Lambda invocations in
//! `/tmp`), never trusted blindly.
//!
//! Layout of the cache directory:
//! - `ritmo.lock`: an OS file lock held for the whole fetch or read, released by the kernel if
//!   the process dies, so it can never go stale;
//! - `repo.git/`: the bare repository, one explicit refspec per branch
//!   (`+refs/heads/B:refs/heads/B`), no tags;
//! - `complete`: written after every fetch that returned (success or error), removed while one
//!   runs. Its absence means a process died mid-fetch.
//!
//! The cache is rebuilt from scratch when `complete` is missing, a `*.lock` or temporary file is
//! left over, a pack is truncated (its trailer disagrees with its index) or the repository does
//! not open; and once more if a fetch into it fails for a reason other than the network.
//!
//! A first fetch may be shallow (depth 1: one commit, its tree and blobs). A commit older than
//! the shallow boundary (the last applied commit an incremental plan diffs from, a rollback's
//! commit) is brought in by [`GitCache::find_commit`], which deepens the history step by step
//! and unshallows it as a last resort.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::config_path::ConfigPath;
use super::remote::{Remote, open_options, with_deadline};
use super::tree::{find_commit_id, object_error, resolve_branch, snapshot_at};
use super::{Auth, GitError, NetworkOptions, RepoLocation, Snapshot};
use crate::manifest::Limits;
use crate::model::Revision;

/// The cache of one target. Cheap to construct; nothing happens until a method is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitCache {
    dir: PathBuf,
}

/// How far [`GitCache::find_commit`] deepens a shallow cache before it unshallows it: each
/// step adds that many commits behind the shallow boundary. Most lookups want the last applied
/// commit, a few commits behind the head.
const DEEPEN_STEPS: [u32; 2] = [16, 240];

/// A commit [`GitCache::find_commit`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundCommit {
    /// The full hex id.
    pub commit: String,
    /// Fetches it took to deepen the history (0: it was in the cache).
    pub deepened: u32,
    /// Whether the cache is still shallow.
    pub shallow: bool,
}

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOutcome {
    /// The branch and the commit it now points to (in the cache and, at fetch time, remotely).
    pub revision: Revision,
    /// Objects in the pack received (0 when the cache already had everything).
    pub objects_received: u64,
    /// Whether the cache was found unsound and rebuilt before this fetch.
    pub rebuilt: bool,
    /// Whether the cache holds a truncated history (shallow fetch).
    pub shallow: bool,
}

impl GitCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The bare repository inside the cache (for [`super::changed_paths`] and friends).
    pub fn repository_path(&self) -> PathBuf {
        self.dir.join("repo.git")
    }

    /// Fetches `branch` of `location` into the cache and returns where it points. The first
    /// fetch into an empty cache honours `options.shallow_depth`; later ones are incremental
    /// and only receive objects the cache lacks.
    ///
    /// Blocking: call it from `spawn_blocking` in async code.
    pub fn fetch(
        &self,
        location: &RepoLocation,
        branch: &str,
        auth: &Auth,
        options: &NetworkOptions,
    ) -> Result<FetchOutcome, GitError> {
        let remote = Remote::new(location, branch, auth, options)?;
        let _lock = self.lock()?;
        let mut rebuilt = self.ensure_sound()?;
        remote.retry_refused(|| match self.fetch_once(&remote, options, rebuilt) {
            Err(err) if !rebuilt && !is_network_failure(&err) => {
                // A failure that is not the network's may be the cache's: retry from scratch.
                self.rebuild()?;
                rebuilt = true;
                self.fetch_once(&remote, options, rebuilt)
            }
            other => other,
        })
    }

    /// Whether the cache already holds `commit` (full or abbreviated hex), without fetching.
    pub fn contains_commit(&self, commit: &str) -> Result<bool, GitError> {
        let _lock = self.lock()?;
        let repository = self.open()?;
        let display = self.dir.display().to_string();
        match find_commit_id(&repository, &display, commit) {
            Ok(_) => Ok(true),
            Err(GitError::CommitNotFound { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Fetches a pull request's head by its ref in the base repository (`refs/pull/7/head`,
    /// `refs/merge-requests/7/head`, see [`super::is_pull_request_ref`]): a fork's commits are
    /// read from the target's own repository, never from the fork. Returns where the ref
    /// points. Objects are only stored, never run: nothing here checks anything out.
    ///
    /// Blocking: call it from `spawn_blocking` in async code.
    pub fn fetch_pull_request(
        &self,
        location: &RepoLocation,
        branch: &str,
        pull_ref: &str,
        auth: &Auth,
        options: &NetworkOptions,
    ) -> Result<FetchOutcome, GitError> {
        if !super::is_pull_request_ref(pull_ref) {
            return Err(GitError::BranchNotFound {
                location: location.to_string(),
                branch: pull_ref.to_string(),
            });
        }
        let mut remote = Remote::new(location, branch, auth, options)?;
        remote.pull_ref = Some(pull_ref.to_string());
        let _lock = self.lock()?;
        let rebuilt = self.ensure_sound()?;
        // Never shallow: a cache holding only the pull request's head would lose the branch.
        let options = NetworkOptions {
            shallow_depth: None,
            ..options.clone()
        };
        remote.retry_refused(|| self.fetch_once(&remote, &options, rebuilt))
    }

    /// Reads the snapshot of `config_path` at `commit` (labelled with `branch`) from the cache.
    pub fn read_commit(
        &self,
        branch: &str,
        commit: &str,
        config_path: &str,
        limits: &Limits,
    ) -> Result<Snapshot, GitError> {
        let config = ConfigPath::parse(config_path)?;
        let _lock = self.lock()?;
        let location = self.dir.display().to_string();
        let repository = self.open()?;
        let id = find_commit_id(&repository, &location, commit)?;
        snapshot_at(&repository, &location, branch, id, &config, limits)
    }

    /// Finds `commit` (full or abbreviated hex) in the cache. When a shallow cache lacks it,
    /// deepens the history of `branch` ([`DEEPEN_STEPS`], then the whole history) until it is
    /// there. [`GitError::CommitNotFound`] when the full history of the branch lacks it
    /// (force-pushed away, another branch, never existed).
    ///
    /// Blocking: call it from `spawn_blocking` in async code.
    pub fn find_commit(
        &self,
        location: &RepoLocation,
        branch: &str,
        auth: &Auth,
        options: &NetworkOptions,
        commit: &str,
    ) -> Result<FoundCommit, GitError> {
        use gix::remote::fetch::Shallow;

        let remote = Remote::new(location, branch, auth, options)?;
        let _lock = self.lock()?;
        let display = self.dir.display().to_string();
        let mut steps = DEEPEN_STEPS
            .into_iter()
            .map(Shallow::Deepen)
            .chain([Shallow::undo()]);
        let mut deepened = 0;
        loop {
            // Opened afresh: the shallow boundary and the packs changed with the last fetch.
            let repository = self.open()?;
            let shallow = repository.is_shallow().map_err(|err| GitError::Cache {
                path: self.repository_path().display().to_string(),
                message: err.to_string(),
            })?;
            match find_commit_id(&repository, &display, commit) {
                Ok(id) => {
                    return Ok(FoundCommit {
                        commit: id.to_string(),
                        deepened,
                        shallow,
                    });
                }
                Err(GitError::CommitNotFound { .. }) if shallow => {}
                Err(err) => return Err(err),
            }
            let Some(step) = steps.next() else {
                return Err(GitError::CommitNotFound {
                    location: remote.display.clone(),
                    commit: commit.to_string(),
                });
            };
            tracing::info!(cache = %self.dir.display(), %commit, ?step, "deepening the shallow cache");
            self.remove_marker()?;
            let received = self.receive(&repository, &remote, options, step);
            self.write_marker()?;
            received?;
            deepened += 1;
        }
    }

    fn fetch_once(
        &self,
        remote: &Remote,
        options: &NetworkOptions,
        rebuilt: bool,
    ) -> Result<FetchOutcome, GitError> {
        let repository = self.open()?;
        let was_empty = repository
            .references()
            .and_then(|platform| platform.all().map(|mut refs| refs.next().is_none()))
            .unwrap_or(true);
        let shallow = match options.shallow_depth {
            Some(depth) if was_empty => gix::remote::fetch::Shallow::DepthAtRemote(depth),
            _ => gix::remote::fetch::Shallow::NoChange,
        };
        self.remove_marker()?;
        let result = self.receive(&repository, remote, options, shallow);
        // Returned (not killed): the repository is consistent whatever the outcome.
        self.write_marker()?;
        let (objects_received, commit) = result?;
        let shallow = repository.is_shallow().map_err(|err| GitError::Cache {
            path: self.repository_path().display().to_string(),
            message: err.to_string(),
        })?;
        // The fetched commit and its root tree must be readable before anyone relies on them.
        let commit_object = repository
            .find_commit(commit)
            .map_err(|err| object_error(&remote.display, &commit.to_string(), err))?;
        let tree = commit_object
            .tree_id()
            .map_err(|err| object_error(&remote.display, &commit.to_string(), err))?;
        repository
            .find_tree(tree.detach())
            .map_err(|err| object_error(&remote.display, &tree.to_string(), err))?;
        Ok(FetchOutcome {
            revision: Revision::Commit {
                branch: remote.branch.clone(),
                commit: commit.to_string(),
            },
            objects_received,
            rebuilt,
            shallow,
        })
    }

    fn receive(
        &self,
        repository: &gix::Repository,
        remote: &Remote,
        options: &NetworkOptions,
        shallow: gix::remote::fetch::Shallow,
    ) -> Result<(u64, gix::ObjectId), GitError> {
        let refspec = remote.refspec();
        with_deadline(options.timeout, |interrupt| {
            let gix_remote = repository
                .remote_at(remote.url.clone())
                .and_then(|r| r.with_refspecs([refspec.as_str()], gix::remote::Direction::Fetch))
                .map_err(|err| remote.network_error(err, interrupt))?
                .with_fetch_tags(gix::remote::fetch::Tags::None);
            let connection = remote.connect(repository, &gix_remote, interrupt)?;
            let mut prepare = connection
                .prepare_fetch(gix::progress::Discard, Default::default())
                .map_err(|err| remote.network_error(err, interrupt))?;
            if !prepare
                .ref_map()
                .mappings
                .iter()
                .any(|mapping| mapping.local.is_some())
            {
                return Err(GitError::BranchNotFound {
                    location: remote.display.clone(),
                    branch: remote
                        .pull_ref
                        .clone()
                        .unwrap_or_else(|| remote.branch.clone()),
                });
            }
            if shallow != gix::remote::fetch::Shallow::NoChange {
                prepare = prepare.with_shallow(shallow);
            }
            let outcome = prepare
                .receive(gix::progress::Discard, interrupt)
                .map_err(|err| remote.network_error(err, interrupt))?;
            let objects = match &outcome.status {
                gix::remote::fetch::Status::Change {
                    write_pack_bundle, ..
                } => {
                    // The pack is referenced now: the keep file has done its job.
                    if let Some(keep) = &write_pack_bundle.keep_path {
                        let _ = fs::remove_file(keep);
                    }
                    u64::from(write_pack_bundle.index.num_objects)
                }
                gix::remote::fetch::Status::NoPackReceived { .. } => 0,
            };
            let location = self.dir.display().to_string();
            let commit = match &remote.pull_ref {
                Some(reference) => resolve_reference(repository, reference, &location)?,
                None => resolve_branch(repository, Some(&remote.branch), &location)?.1,
            };
            Ok((objects, commit))
        })
    }

    /// Opens the cache repository; on first use creates it.
    fn open(&self) -> Result<gix::Repository, GitError> {
        let path = self.repository_path();
        gix::open_opts(&path, open_options()).map_err(|err| GitError::Cache {
            path: path.display().to_string(),
            message: err.to_string(),
        })
    }

    /// Rebuilds the cache when anything about it is doubtful. Returns whether it did (a cache
    /// created for the first time is not a rebuild).
    fn ensure_sound(&self) -> Result<bool, GitError> {
        let path = self.repository_path();
        if !path.exists() {
            self.rebuild()?;
            return Ok(false);
        }
        let problem = self.problem();
        if let Some(problem) = problem {
            tracing::warn!(cache = %self.dir.display(), %problem, "git cache unsound, rebuilding");
            self.rebuild()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Why the cache cannot be trusted, if it cannot.
    fn problem(&self) -> Option<String> {
        if !self.dir.join("complete").exists() {
            return Some("a previous fetch did not finish".into());
        }
        let repo = self.repository_path();
        if let Some(leftover) = find_leftover(&repo) {
            return Some(format!("leftover `{}`", leftover.display()));
        }
        if let Err(problem) = check_packs(&repo.join("objects").join("pack")) {
            return Some(problem);
        }
        match gix::open_opts(&repo, open_options()) {
            Ok(repository) => {
                // Every ref must point at a readable commit.
                let refs = match repository.references() {
                    Ok(refs) => refs,
                    Err(err) => return Some(err.to_string()),
                };
                let all = match refs.all() {
                    Ok(all) => all,
                    Err(err) => return Some(err.to_string()),
                };
                for reference in all {
                    let Ok(mut reference) = reference else {
                        return Some("unreadable reference".into());
                    };
                    if reference.peel_to_commit().is_err() {
                        return Some(format!(
                            "reference `{}` is broken",
                            reference.name().as_bstr()
                        ));
                    }
                }
                None
            }
            Err(err) => Some(err.to_string()),
        }
    }

    fn rebuild(&self) -> Result<(), GitError> {
        let path = self.repository_path();
        let cache_error = |message: String| GitError::Cache {
            path: path.display().to_string(),
            message,
        };
        if path.exists() {
            fs::remove_dir_all(&path).map_err(|err| cache_error(err.to_string()))?;
        }
        gix::init_bare(&path).map_err(|err| cache_error(err.to_string()))?;
        self.write_marker()
    }

    fn lock(&self) -> Result<File, GitError> {
        let cache_error = |err: std::io::Error| GitError::Cache {
            path: self.dir.display().to_string(),
            message: err.to_string(),
        };
        fs::create_dir_all(&self.dir).map_err(cache_error)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join("ritmo.lock"))
            .map_err(cache_error)?;
        file.lock().map_err(cache_error)?;
        Ok(file)
    }

    fn write_marker(&self) -> Result<(), GitError> {
        fs::write(self.dir.join("complete"), b"").map_err(|err| GitError::Cache {
            path: self.dir.display().to_string(),
            message: err.to_string(),
        })
    }

    fn remove_marker(&self) -> Result<(), GitError> {
        match fs::remove_file(self.dir.join("complete")) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(GitError::Cache {
                path: self.dir.display().to_string(),
                message: err.to_string(),
            }),
        }
    }
}

/// Commit ids the caller got from us are full hex; anything else is not in the cache.
pub(crate) fn parse_commit(
    repository: &gix::Repository,
    location: &str,
    commit: &str,
) -> Result<gix::ObjectId, GitError> {
    let not_found = || GitError::CommitNotFound {
        location: location.to_string(),
        commit: commit.to_string(),
    };
    let id = gix::ObjectId::from_hex(commit.as_bytes()).map_err(|_| not_found())?;
    if repository.find_commit(id).is_err() {
        return Err(not_found());
    }
    Ok(id)
}

fn is_network_failure(err: &GitError) -> bool {
    matches!(
        err,
        GitError::Authentication { .. }
            | GitError::Credentials { .. }
            | GitError::Timeout { .. }
            | GitError::Network { .. }
            | GitError::BranchNotFound { .. }
            | GitError::InvalidLocation { .. }
    )
}

/// A `*.lock` file or a temporary pack left by a process that died mid-write.
fn find_leftover(repo: &Path) -> Option<PathBuf> {
    let mut pending = vec![repo.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(&dir).ok()?;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                pending.push(path);
            } else if name.ends_with(".lock") || name.starts_with("tmp") {
                return Some(path);
            }
        }
    }
    None
}

/// Every pack is whole: it exists beside its index, starts with `PACK`, and ends with the
/// checksum its index records. Cheap (no hashing), and catches truncation.
fn check_packs(pack_dir: &Path) -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};

    let Ok(entries) = fs::read_dir(pack_dir) else {
        return Ok(());
    };
    let hash_len = 20;
    for entry in entries.flatten() {
        let index_path = entry.path();
        if index_path.extension().is_none_or(|ext| ext != "idx") {
            continue;
        }
        let pack_path = index_path.with_extension("pack");
        let index =
            fs::read(&index_path).map_err(|err| format!("{}: {err}", index_path.display()))?;
        if index.len() < 2 * hash_len {
            return Err(format!("truncated index `{}`", index_path.display()));
        }
        let expected = &index[index.len() - 2 * hash_len..index.len() - hash_len];
        let mut pack = File::open(&pack_path)
            .map_err(|_| format!("missing pack `{}`", pack_path.display()))?;
        let mut magic = [0u8; 4];
        let length = pack.metadata().map_err(|err| err.to_string())?.len();
        if length < 12 + hash_len as u64
            || pack.read_exact(&mut magic).is_err()
            || &magic != b"PACK"
        {
            return Err(format!("truncated pack `{}`", pack_path.display()));
        }
        let mut trailer = vec![0u8; hash_len];
        pack.seek(SeekFrom::End(-(hash_len as i64)))
            .and_then(|_| pack.read_exact(&mut trailer))
            .map_err(|err| err.to_string())?;
        if trailer != expected {
            return Err(format!("truncated pack `{}`", pack_path.display()));
        }
    }
    Ok(())
}

/// Where the full ref `name` points in the cache.
fn resolve_reference(
    repository: &gix::Repository,
    name: &str,
    location: &str,
) -> Result<gix::ObjectId, GitError> {
    let not_found = || GitError::BranchNotFound {
        location: location.to_string(),
        branch: name.to_string(),
    };
    let mut reference = repository
        .try_find_reference(name)
        .map_err(|_| not_found())?
        .ok_or_else(not_found)?;
    let commit = reference
        .peel_to_commit()
        .map_err(|err| object_error(location, name, err))?;
    Ok(commit.id)
}
