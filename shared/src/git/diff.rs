//! Which resource files differ between two commits: a tree-to-tree comparison that skips every
//! subtree whose id did not change, so its cost follows the change, not the repository.
//!
//! A tree diff is exact whatever the history between the two commits (a force-push included):
//! it compares what the trees hold. It only needs both commits and their trees in the object
//! database; when the base is gone (pruned, shallow cache, never fetched) the caller gets
//! [`GitError::DiffBaseUnavailable`] and scans the whole tree instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use gix::ObjectId;
use gix::objs::tree::EntryKind;

use super::GitError;
use super::cache::parse_commit;
use super::config_path::ConfigPath;
use super::tree::{
    EntryClass, classify, config_root, object_error, open_local, read_blobs, too_many_files,
};
use crate::manifest::{Limits, SourceFile};
use crate::model::{Kind, Revision};

/// How a path changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One changed path, relative to the config path. A rename is a `Deleted` and an `Added`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathChange {
    pub path: String,
    pub change: ChangeKind,
}

/// The paths that a [`Snapshot`](super::Snapshot) of `config_path` would list differently at
/// `to_commit` than at `from_commit`: resource files, and symlinks or submodules under (or in
/// place of) a kind directory, or a file in place of one. Sorted by path.
///
/// `repo` is a local repository or a [`GitCache`](super::GitCache)'s repository path.
pub fn changed_paths(
    repo: &Path,
    from_commit: &str,
    to_commit: &str,
    config_path: &str,
) -> Result<Vec<PathChange>, GitError> {
    changed_paths_up_to(repo, from_commit, to_commit, config_path, usize::MAX)
        .map(Option::unwrap_or_default)
}

/// [`changed_paths`], or `None` as soon as more than `most` paths changed: the caller scans
/// the whole tree then, and the rest of the diff would be wasted.
pub fn changed_paths_up_to(
    repo: &Path,
    from_commit: &str,
    to_commit: &str,
    config_path: &str,
    most: usize,
) -> Result<Option<Vec<PathChange>>, GitError> {
    let config = ConfigPath::parse(config_path)?;
    let location = repo.display().to_string();
    let repository = open_local(repo, &location)?;
    let unavailable = |reason: &str| GitError::DiffBaseUnavailable {
        from: from_commit.to_string(),
        to: to_commit.to_string(),
        reason: reason.to_string(),
    };
    let to = parse_commit(&repository, &location, to_commit)?;
    let from = parse_commit(&repository, &location, from_commit)
        .map_err(|_| unavailable("the base commit is not in the repository"))?;
    let label = |id: ObjectId| Revision::Commit {
        branch: "diff".into(),
        commit: id.to_string(),
    };
    let to_root = config_root(&repository, &location, to, &config, &label(to))?;
    let from_root = match config_root(&repository, &location, from, &config, &label(from)) {
        Ok(root) => Some(root),
        Err(GitError::ConfigPathNotFound { .. } | GitError::ConfigPathNotADirectory { .. }) => None,
        Err(_) => return Err(unavailable("the base commit's tree is not readable")),
    };
    if from_root.is_some_and(|root| !repository.has_object(root)) {
        return Err(unavailable(
            "the base commit's tree is not in the repository",
        ));
    }
    let differ = Differ {
        repository: &repository,
        location: &location,
        most,
    };
    let old_dirs = match from_root {
        Some(root) => differ.children(root)?,
        None => BTreeMap::new(),
    };
    let new_dirs = differ.children(to_root)?;
    let mut changes = Vec::new();
    for kind in Kind::ALL {
        let dir = kind.directory();
        differ.compare(
            dir,
            old_dirs.get(dir).copied(),
            new_dirs.get(dir).copied(),
            &mut changes,
        )?;
        if changes.len() > most {
            return Ok(None);
        }
    }
    changes.sort();
    Ok(Some(changes))
}

/// Reads the given paths (relative to `config_path`) at `commit`, with the same rules as
/// [`read_commit`](super::read_commit): what [`changed_paths`] reports as added or modified,
/// for an incremental plan. A path that is absent at `commit` is skipped. More paths than
/// `limits.max_files` read nothing and give the snapshot's `TooManyFiles` entry.
///
/// One walk: each tree on the way to a wanted path is decoded once, however many wanted paths
/// it holds, so the cost follows the paths read (a lookup per path would decode a directory of
/// n files once per file in it).
pub fn read_files(
    repo: &Path,
    commit: &str,
    config_path: &str,
    paths: &[String],
    limits: &Limits,
) -> Result<Vec<SourceFile>, GitError> {
    let config = ConfigPath::parse(config_path)?;
    if paths.len() > limits.max_files {
        return Ok(too_many_files(limits, &config));
    }
    let location = repo.display().to_string();
    let repository = open_local(repo, &location)?;
    let id = parse_commit(&repository, &location, commit)?;
    let revision = Revision::Commit {
        branch: "read".into(),
        commit: id.to_string(),
    };
    let root = config_root(&repository, &location, id, &config, &revision)?;
    let components: Vec<Vec<&str>> = paths
        .iter()
        .map(|path| path.split('/').filter(|part| !part.is_empty()).collect())
        .collect();
    let mut files = Vec::new();
    // (index in `files`, blob): read once the walk is done, on every core.
    let mut blobs: Vec<(usize, ObjectId)> = Vec::new();
    // A tree to visit, its depth below the root, and the indices of the paths that go through it.
    let mut pending: Vec<(ObjectId, usize, Vec<usize>)> =
        vec![(root, 0, (0..paths.len()).collect())];
    while let Some((tree_id, depth, wanted)) = pending.pop() {
        let mut by_name: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
        for index in wanted {
            if let Some(name) = components[index].get(depth) {
                by_name.entry(name.as_bytes()).or_default().push(index);
            }
        }
        let tree = repository
            .find_tree(tree_id)
            .map_err(|err| object_error(&location, &tree_id.to_string(), err))?;
        for entry in tree.iter() {
            let entry = entry.map_err(|err| object_error(&location, &tree_id.to_string(), err))?;
            let Some(through) = by_name.remove(entry.filename().as_ref() as &[u8]) else {
                continue;
            };
            let (ends_here, deeper): (Vec<usize>, Vec<usize>) = through
                .into_iter()
                .partition(|&index| components[index].len() == depth + 1);
            if !deeper.is_empty() && entry.mode().kind() == EntryKind::Tree {
                pending.push((entry.object_id(), depth + 1, deeper));
            }
            for index in ends_here {
                let path = &paths[index];
                let class = classify(entry.mode().kind(), path);
                let Some(content) = class.listed() else {
                    continue;
                };
                if matches!(class, EntryClass::Resource) {
                    blobs.push((files.len(), entry.object_id()));
                }
                files.push(SourceFile {
                    path: path.clone(),
                    content,
                });
            }
        }
    }
    for (index, content) in read_blobs(&repository, &location, &blobs, limits)? {
        files[index].content = content;
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// Which of `kinds` a [`Snapshot`](super::Snapshot) of `config_path` at `commit` would list
/// anything for (see [`manifest::kinds_listed`](crate::manifest::kinds_listed)), walking each
/// kind directory only until its first listed entry: what a full scan knows from its snapshot,
/// for an incremental plan that empties a kind.
pub fn kinds_listed_at(
    repo: &Path,
    commit: &str,
    config_path: &str,
    kinds: &BTreeSet<Kind>,
) -> Result<BTreeSet<Kind>, GitError> {
    let config = ConfigPath::parse(config_path)?;
    let location = repo.display().to_string();
    let repository = open_local(repo, &location)?;
    let id = parse_commit(&repository, &location, commit)?;
    let revision = Revision::Commit {
        branch: "read".into(),
        commit: id.to_string(),
    };
    let root = config_root(&repository, &location, id, &config, &revision)?;
    let differ = Differ {
        repository: &repository,
        location: &location,
        most: usize::MAX,
    };
    let dirs = differ.children(root)?;
    let mut listed = BTreeSet::new();
    for kind in kinds {
        if let Some(entry) = dirs.get(kind.directory())
            && differ.lists_anything(kind.directory(), *entry)?
        {
            listed.insert(*kind);
        }
    }
    Ok(listed)
}

/// Whether `ancestor` is `descendant` or one of its ancestors. `false` after a force-push.
/// An incomplete history (a shallow cache) that cannot answer is `DiffBaseUnavailable`.
pub fn is_ancestor(repo: &Path, ancestor: &str, descendant: &str) -> Result<bool, GitError> {
    let location = repo.display().to_string();
    let repository = open_local(repo, &location)?;
    let unavailable = |reason: String| GitError::DiffBaseUnavailable {
        from: ancestor.to_string(),
        to: descendant.to_string(),
        reason,
    };
    let descendant_id = parse_commit(&repository, &location, descendant)?;
    let ancestor_id = parse_commit(&repository, &location, ancestor)
        .map_err(|_| unavailable("the base commit is not in the repository".into()))?;
    let walk = repository
        .rev_walk([descendant_id])
        .all()
        .map_err(|err| unavailable(err.to_string()))?;
    for info in walk {
        let info = info.map_err(|err| unavailable(err.to_string()))?;
        if info.id == ancestor_id {
            return Ok(true);
        }
    }
    if repository.is_shallow().unwrap_or(true) {
        return Err(unavailable("the history is shallow".into()));
    }
    Ok(false)
}

struct Differ<'a> {
    repository: &'a gix::Repository,
    location: &'a str,
    /// [`Differ::compare`] stops once more paths than this changed.
    most: usize,
}

type Entry = (EntryKind, ObjectId);

impl Differ<'_> {
    fn children(&self, tree: ObjectId) -> Result<BTreeMap<String, Entry>, GitError> {
        let object = self
            .repository
            .find_tree(tree)
            .map_err(|err| object_error(self.location, &tree.to_string(), err))?;
        let mut children = BTreeMap::new();
        for entry in object.iter() {
            let entry = entry.map_err(|err| object_error(self.location, &tree.to_string(), err))?;
            children.insert(
                entry.filename().to_string(),
                (entry.mode().kind(), entry.object_id()),
            );
        }
        Ok(children)
    }

    fn compare(
        &self,
        path: &str,
        old: Option<Entry>,
        new: Option<Entry>,
        changes: &mut Vec<PathChange>,
    ) -> Result<(), GitError> {
        if old == new {
            return Ok(());
        }
        if let (Some((EntryKind::Tree, old_id)), Some((EntryKind::Tree, new_id))) = (old, new) {
            let old_children = self.children(old_id)?;
            let new_children = self.children(new_id)?;
            let names: BTreeSet<&String> = old_children.keys().chain(new_children.keys()).collect();
            for name in names {
                if changes.len() > self.most {
                    break;
                }
                self.compare(
                    &format!("{path}/{name}"),
                    old_children.get(name).copied(),
                    new_children.get(name).copied(),
                    changes,
                )?;
            }
            return Ok(());
        }
        let old_files = self.listed(path, old)?;
        let new_files = self.listed(path, new)?;
        for file in &old_files {
            let change = if new_files.contains(file) {
                ChangeKind::Modified
            } else {
                ChangeKind::Deleted
            };
            changes.push(PathChange {
                path: file.clone(),
                change,
            });
        }
        for file in new_files.difference(&old_files) {
            changes.push(PathChange {
                path: file.clone(),
                change: ChangeKind::Added,
            });
        }
        Ok(())
    }

    /// Whether the entry at `path` stands for any snapshot path (see [`Differ::listed`]).
    fn lists_anything(&self, path: &str, entry: Entry) -> Result<bool, GitError> {
        let mut found = false;
        self.walk_listed(path, Some(entry), |_| {
            found = true;
            false
        })?;
        Ok(found)
    }

    /// The snapshot paths an entry at `path` stands for.
    fn listed(&self, path: &str, entry: Option<Entry>) -> Result<BTreeSet<String>, GitError> {
        let mut listed = BTreeSet::new();
        self.walk_listed(path, entry, |path| {
            listed.insert(path);
            true
        })?;
        Ok(listed)
    }

    /// Hands each snapshot path the entry at `path` stands for to `visit`, until it returns
    /// false.
    fn walk_listed(
        &self,
        path: &str,
        entry: Option<Entry>,
        mut visit: impl FnMut(String) -> bool,
    ) -> Result<(), GitError> {
        let mut pending = match entry {
            Some(entry) => vec![(path.to_string(), entry)],
            None => Vec::new(),
        };
        while let Some((path, (kind, id))) = pending.pop() {
            match classify(kind, &path) {
                EntryClass::Directory => {
                    for (name, child) in self.children(id)? {
                        pending.push((format!("{path}/{name}"), child));
                    }
                }
                EntryClass::Ignored => {}
                EntryClass::Resource
                | EntryClass::Symlink
                | EntryClass::Submodule
                | EntryClass::NotADirectory => {
                    if !visit(path) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}
