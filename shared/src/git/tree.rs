//! Reading the config files of one commit straight from the object database: no checkout, so
//! uncommitted edits are invisible and nothing on disk is followed.

use std::path::Path;

use gix::ObjectId;
use gix::objs::tree::EntryKind;

use super::config_path::ConfigPath;
use super::{GitError, RepoLocation, Snapshot};
use crate::manifest::{FileContent, Limits, SourceFile, resource_kind_for_path};
use crate::model::{Kind, Revision};
use crate::parallel;

/// Reads the resource files of `config_path` at the tip of `branch` (HEAD when `None`) of a
/// local repository: a work tree, a `.git` directory, a bare repository or a `file://` URL.
///
/// Only the six kind directories are walked (at any depth). Regular blobs that are resource
/// files become `Bytes` (or `TooLarge` from the object header, unread); symlinks and submodule
/// commits anywhere under a kind directory, or in place of one, and a file in place of one, are
/// reported as such so the validator can refuse them rather than silently drop what they hide.
/// Past `limits.max_files` the snapshot is a single `TooManyFiles` entry (E106), not an error.
///
/// Blocking: call it from `spawn_blocking` in async code.
pub fn read_commit(
    repo: &RepoLocation,
    branch: Option<&str>,
    config_path: &str,
    limits: &Limits,
) -> Result<Snapshot, GitError> {
    let config = ConfigPath::parse(config_path)?;
    let path = repo.local_path().ok_or_else(|| GitError::NotRemote {
        location: repo.to_string(),
    })?;
    let location = repo.to_string();
    let repository = open_local(path, &location)?;
    let (branch, commit) = resolve_branch(&repository, branch, &location)?;
    snapshot_at(&repository, &location, &branch, commit, &config, limits)
}

/// Reads the resource files of `config_path` at `commit` (full or abbreviated hex) of a local
/// repository, labelled with `branch`. Unlike [`read_commit`], the commit is fixed, so a branch
/// that moves meanwhile does not change what is read.
///
/// Blocking: call it from `spawn_blocking` in async code.
pub fn read_commit_at(
    repo: &Path,
    branch: &str,
    commit: &str,
    config_path: &str,
    limits: &Limits,
) -> Result<Snapshot, GitError> {
    let config = ConfigPath::parse(config_path)?;
    let location = repo.display().to_string();
    let repository = open_local(repo, &location)?;
    let id = find_commit_id(&repository, &location, commit)?;
    snapshot_at(&repository, &location, branch, id, &config, limits)
}

/// The full id of `commit` (full or abbreviated hex) in a local repository.
///
/// Blocking: call it from `spawn_blocking` in async code.
pub fn resolve_commit(repo: &Path, commit: &str) -> Result<String, GitError> {
    let location = repo.display().to_string();
    let repository = open_local(repo, &location)?;
    Ok(find_commit_id(&repository, &location, commit)?.to_string())
}

/// `commit` (full hex, or at least 7 hex digits naming one commit) → its id, when the commit
/// object is in the repository.
pub(crate) fn find_commit_id(
    repository: &gix::Repository,
    location: &str,
    commit: &str,
) -> Result<ObjectId, GitError> {
    let not_found = || GitError::CommitNotFound {
        location: location.to_string(),
        commit: commit.to_string(),
    };
    let is_hex = commit.bytes().all(|b| b.is_ascii_hexdigit());
    let id = if let Ok(id) = ObjectId::from_hex(commit.as_bytes()) {
        id
    } else if is_hex && (7..40).contains(&commit.len()) {
        // An abbreviation that is missing or ambiguous is "not found": a deeper history may
        // hold it, or the caller must give more digits.
        let prefix = gix::hash::Prefix::from_hex(commit).map_err(|_| not_found())?;
        match repository.objects.lookup_prefix(prefix, None) {
            Ok(Some(Ok(id))) => id,
            _ => return Err(not_found()),
        }
    } else {
        return Err(not_found());
    };
    if repository.find_commit(id).is_err() {
        return Err(not_found());
    }
    Ok(id)
}

/// Whether `path` is a git repository itself (a work tree root, a `.git` directory or a bare
/// repository), as opposed to a plain directory. Parent directories are not searched.
pub fn is_git_repository(path: &Path) -> bool {
    gix::open_opts(path, gix::open::Options::isolated()).is_ok()
}

/// The delta-base cache of each repository handle (every reading thread has its own). gix's
/// default keeps the last 64 bases, and a full sync's read rebuilt bases it had just dropped;
/// capped at 8 MB instead, reading the 10,000 blobs of a full sync took 73–85 ms instead of
/// 118–121 (docs/benchmarks.md), for 10 MiB more planner memory.
pub(crate) const DELTA_BASE_CACHE: &str = "core.deltaBaseCacheLimit=8m";

/// Opens a repository at exactly `path`, ignoring the environment and global configuration.
pub(crate) fn open_local(path: &Path, location: &str) -> Result<gix::Repository, GitError> {
    if !path.exists() {
        return Err(GitError::NotARepository {
            location: location.to_string(),
            message: "no such directory".into(),
        });
    }
    let options = gix::open::Options::isolated().config_overrides([DELTA_BASE_CACHE]);
    gix::open_opts(path, options).map_err(|err| GitError::NotARepository {
        location: location.to_string(),
        message: err.to_string(),
    })
}

/// `refs/heads/<branch>` (or HEAD) → (branch name, commit id).
pub(crate) fn resolve_branch(
    repository: &gix::Repository,
    branch: Option<&str>,
    location: &str,
) -> Result<(String, ObjectId), GitError> {
    match branch {
        Some(branch) => {
            let not_found = || GitError::BranchNotFound {
                location: location.to_string(),
                branch: branch.to_string(),
            };
            let name = format!("refs/heads/{branch}");
            let mut reference = repository
                .try_find_reference(name.as_str())
                .map_err(|_| not_found())?
                .ok_or_else(not_found)?;
            let commit = reference
                .peel_to_commit()
                .map_err(|err| object_error(location, &name, err))?;
            Ok((branch.to_string(), commit.id))
        }
        None => {
            let mut head = repository
                .head()
                .map_err(|err| object_error(location, "HEAD", err))?;
            if head.is_unborn() {
                return Err(GitError::UnbornHead {
                    location: location.to_string(),
                });
            }
            let branch = head
                .referent_name()
                .map(|name| name.shorten().to_string())
                .unwrap_or_else(|| "HEAD".to_string());
            let commit = head
                .peel_to_commit()
                .map_err(|err| object_error(location, "HEAD", err))?;
            Ok((branch, commit.id))
        }
    }
}

/// The snapshot of `config` at `commit`, labelled with `branch`.
pub(crate) fn snapshot_at(
    repository: &gix::Repository,
    location: &str,
    branch: &str,
    commit: ObjectId,
    config: &ConfigPath,
    limits: &Limits,
) -> Result<Snapshot, GitError> {
    let revision = Revision::Commit {
        branch: branch.to_string(),
        commit: commit.to_string(),
    };
    let root = config_root(repository, location, commit, config, &revision)?;
    let files = collect_files(repository, location, root, limits, config)?;
    Ok(Snapshot { revision, files })
}

/// The tree id of the config path at `commit`.
pub(crate) fn config_root(
    repository: &gix::Repository,
    location: &str,
    commit: ObjectId,
    config: &ConfigPath,
    revision: &Revision,
) -> Result<ObjectId, GitError> {
    let commit_object = repository
        .find_commit(commit)
        .map_err(|_| GitError::CommitNotFound {
            location: location.to_string(),
            commit: commit.to_string(),
        })?;
    let tree_id = commit_object
        .tree_id()
        .map_err(|err| object_error(location, &commit.to_string(), err))?
        .detach();
    if config.is_root() {
        return Ok(tree_id);
    }
    let tree = repository
        .find_tree(tree_id)
        .map_err(|err| object_error(location, &tree_id.to_string(), err))?;
    let entry = tree
        .lookup_entry(config.components().iter().map(String::as_str))
        .map_err(|err| object_error(location, &tree_id.to_string(), err))?
        .ok_or_else(|| GitError::ConfigPathNotFound {
            path: config.display(),
            revision: revision.to_string(),
        })?;
    if !entry.mode().is_tree() {
        return Err(GitError::ConfigPathNotADirectory {
            path: config.display(),
            revision: revision.to_string(),
        });
    }
    Ok(entry.object_id())
}

/// What a tree entry in or in place of a kind directory becomes, if anything. Shared with the
/// diff.
pub(crate) enum EntryClass {
    Directory,
    /// A resource blob: read it (subject to the size limit).
    Resource,
    Symlink,
    Submodule,
    /// A blob where a kind directory belongs.
    NotADirectory,
    Ignored,
}

impl EntryClass {
    /// What a snapshot lists for a file-like entry, its blob's content left empty to be read
    /// later (`None` for a directory or an ignored entry).
    pub(crate) fn listed(&self) -> Option<FileContent> {
        match self {
            EntryClass::Resource => Some(FileContent::Bytes(Vec::new())),
            EntryClass::Symlink => Some(FileContent::Symlink),
            EntryClass::Submodule => Some(FileContent::Submodule),
            EntryClass::NotADirectory => Some(FileContent::NotADirectory),
            EntryClass::Directory | EntryClass::Ignored => None,
        }
    }
}

/// `path` is a kind directory (`webhooks`) or under one (`webhooks/a.yaml`).
pub(crate) fn classify(kind: EntryKind, path: &str) -> EntryClass {
    let is_kind_directory = !path.contains('/');
    match kind {
        EntryKind::Tree => EntryClass::Directory,
        EntryKind::Link => EntryClass::Symlink,
        EntryKind::Commit => EntryClass::Submodule,
        EntryKind::Blob | EntryKind::BlobExecutable if is_kind_directory => {
            EntryClass::NotADirectory
        }
        EntryKind::Blob | EntryKind::BlobExecutable => {
            if resource_kind_for_path(path).is_some() {
                EntryClass::Resource
            } else {
                EntryClass::Ignored
            }
        }
    }
}

/// The snapshot of a source that stopped listing past the file limit: nothing read, one entry
/// the loader turns into E106.
pub(crate) fn too_many_files(limits: &Limits, config: &ConfigPath) -> Vec<SourceFile> {
    vec![SourceFile {
        path: String::new(),
        content: FileContent::TooManyFiles {
            limit: limits.max_files,
            config_path: config.display(),
        },
    }]
}

/// The content of one blob: `TooLarge` from the header alone, else the bytes.
fn blob_content(
    repository: &gix::Repository,
    location: &str,
    id: ObjectId,
    limits: &Limits,
) -> Result<FileContent, GitError> {
    let header = repository
        .find_header(id)
        .map_err(|err| object_error(location, &id.to_string(), err))?;
    let size = header.size();
    if size > limits.max_file_bytes {
        return Ok(FileContent::TooLarge { size });
    }
    let mut blob = repository
        .find_blob(id)
        .map_err(|err| object_error(location, &id.to_string(), err))?;
    Ok(FileContent::Bytes(blob.take_data()))
}

/// Every file that matters under the kind directories of the tree `root`, sorted by path; past
/// the file limit, only [`too_many_files`].
fn collect_files(
    repository: &gix::Repository,
    location: &str,
    root: ObjectId,
    limits: &Limits,
    config: &ConfigPath,
) -> Result<Vec<SourceFile>, GitError> {
    let root_tree = repository
        .find_tree(root)
        .map_err(|err| object_error(location, &root.to_string(), err))?;
    let mut files = Vec::new();
    // (index in `files`, blob): read once the walk is done, on every core.
    let mut blobs: Vec<(usize, ObjectId)> = Vec::new();
    let mut pending: Vec<(String, ObjectId)> = Vec::new();
    for kind in Kind::ALL {
        let dir = kind.directory();
        let Some(entry) = root_tree.find_entry(dir) else {
            continue;
        };
        let content = match classify(entry.mode().kind(), dir) {
            EntryClass::Directory => {
                pending.push((dir.to_string(), entry.object_id()));
                continue;
            }
            EntryClass::Symlink => FileContent::Symlink,
            EntryClass::Submodule => FileContent::Submodule,
            EntryClass::NotADirectory => FileContent::NotADirectory,
            EntryClass::Resource | EntryClass::Ignored => continue,
        };
        files.push(SourceFile {
            path: dir.to_string(),
            content,
        });
    }
    while let Some((prefix, tree_id)) = pending.pop() {
        let tree = repository
            .find_tree(tree_id)
            .map_err(|err| object_error(location, &tree_id.to_string(), err))?;
        for entry in tree.iter() {
            let entry = entry.map_err(|err| object_error(location, &tree_id.to_string(), err))?;
            let path = format!("{prefix}/{}", entry.filename());
            let class = classify(entry.mode().kind(), &path);
            if matches!(class, EntryClass::Directory) {
                pending.push((path, entry.object_id()));
                continue;
            }
            let Some(content) = class.listed() else {
                continue;
            };
            if matches!(class, EntryClass::Resource) {
                blobs.push((files.len(), entry.object_id()));
            }
            files.push(SourceFile { path, content });
            if files.len() > limits.max_files {
                // Nothing more is listed or read: the loader reports E106 for the whole tree.
                return Ok(too_many_files(limits, config));
            }
        }
    }
    for (index, content) in read_blobs(repository, location, &blobs, limits)? {
        files[index].content = content;
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// The content of each of `blobs`, with its index, read on every core: at 10,000 files
/// reading is a tenth of a full sync. Thread `t` of `n` reads blobs `t`, `t + n`, ... (larger
/// and smaller files sit in runs by directory, so runs would not share the work evenly).
pub(crate) fn read_blobs(
    repository: &gix::Repository,
    location: &str,
    blobs: &[(usize, ObjectId)],
    limits: &Limits,
) -> Result<Vec<(usize, FileContent)>, GitError> {
    let read = |repository: &gix::Repository, first: usize, step: usize| {
        blobs
            .iter()
            .skip(first)
            .step_by(step)
            .map(|(index, id)| Ok((*index, blob_content(repository, location, *id, limits)?)))
            .collect::<Result<Vec<_>, GitError>>()
    };
    let threads = parallel::threads();
    if threads < 2 || blobs.len() < 256 {
        return read(repository, 0, 1);
    }
    // gix handles are not `Sync`: each thread reads through a clone of its own (and its own
    // delta-base cache).
    let handles: Vec<(usize, gix::Repository)> = (0..threads)
        .map(|first| (first, repository.clone()))
        .collect();
    let mut contents = Vec::with_capacity(blobs.len());
    for stride in parallel::map_parts(handles, |(first, repository)| {
        read(&repository, first, threads)
    }) {
        contents.extend(stride?);
    }
    Ok(contents)
}

pub(crate) fn object_error(location: &str, id: &str, err: impl std::fmt::Display) -> GitError {
    GitError::Object {
        location: location.to_string(),
        id: id.to_string(),
        message: err.to_string(),
    }
}
