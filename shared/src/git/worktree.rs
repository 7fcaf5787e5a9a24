//! Reading the config files from a plain directory (a pre-commit check of uncommitted work).
//!
//! Never follows a symlink and never leaves the directory: every entry is examined with
//! `symlink_metadata`/`file_type`, and a file is read only after its size is known, with the
//! read itself bounded.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::config_path::ConfigPath;
use super::{GitError, Snapshot};
use crate::manifest::{FileContent, Limits, SourceFile, resource_kind_for_path};
use crate::model::{Kind, Revision};

/// Reads the resource files of `config_path` inside `dir` as they are on disk, labelled
/// `Revision::Worktree`. Same rules as [`super::read_commit`]: only the kind directories are
/// walked; symlinks become `Symlink`, FIFOs, sockets and devices `NonRegular`, a file in place
/// of a kind directory `NotADirectory`, big files `TooLarge` without being read; past
/// `limits.max_files`, the snapshot is a single `TooManyFiles` entry.
pub fn read_worktree(dir: &Path, config_path: &str, limits: &Limits) -> Result<Snapshot, GitError> {
    let config = ConfigPath::parse(config_path)?;
    let revision = Revision::Worktree;
    let Some(Listing { mut files, to_read }) = list(dir, &config, limits)? else {
        return Ok(Snapshot {
            revision,
            files: super::tree::too_many_files(limits, &config),
        });
    };
    let limit = limits.max_file_bytes;
    for (index, content) in on_every_core(to_read, |_, path| read_bounded(path, limit))? {
        if let Some(file) = files.get_mut(index) {
            file.content = content;
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Snapshot { revision, files })
}

/// How many resource files of `config_path` differ between `committed` (the same config path
/// read at a commit of the repository at `dir`) and the working tree: added, removed or
/// changed, what a validate of the commit did not check. As `git status` does, a file whose
/// stat data matches its clean index entry holds that entry's blob: when that is the
/// committed blob, the file is not read. The others are read and compared byte for byte.
pub fn uncommitted_files(
    dir: &Path,
    config_path: &str,
    committed: &[SourceFile],
    limits: &Limits,
) -> Result<usize, GitError> {
    let config = ConfigPath::parse(config_path)?;
    let Some(Listing { mut files, to_read }) = list(dir, &config, limits)? else {
        return Ok(differing_files(
            committed,
            &super::tree::too_many_files(limits, &config),
        ));
    };
    let committed: HashMap<&str, &FileContent> = committed
        .iter()
        .map(|file| (file.path.as_str(), &file.content))
        .collect();
    let index = CleanIndex::open(dir, &config);
    let limit = limits.max_file_bytes;
    let paths: Vec<&str> = files.iter().map(|file| file.path.as_str()).collect();
    let read = on_every_core(to_read, |at, path| {
        let relative = paths.get(at).copied().unwrap_or_default();
        let unchanged = index.as_ref().is_some_and(|index| {
            index.holds_committed(relative, path, committed.get(relative).copied())
        });
        Ok(if unchanged {
            None
        } else {
            Some(read_bounded(path, limit)?)
        })
    })?;
    let mut unchanged = vec![false; files.len()];
    for (at, content) in read {
        match (content, files.get_mut(at)) {
            (Some(content), Some(file)) => file.content = content,
            (None, Some(_)) => unchanged[at] = true,
            _ => {}
        }
    }
    let on_disk: HashSet<&str> = files.iter().map(|file| file.path.as_str()).collect();
    let changed_or_new = files
        .iter()
        .zip(&unchanged)
        .filter(|(file, unchanged)| {
            !**unchanged && committed.get(file.path.as_str()) != Some(&&file.content)
        })
        .count();
    let removed = committed
        .keys()
        .filter(|path| !on_disk.contains(*path))
        .count();
    Ok(changed_or_new + removed)
}

/// The repository's index, for telling a file git already knows unchanged from its stat data.
struct CleanIndex {
    index: gix::index::File,
    options: gix::index::entry::stat::Options,
    object_hash: gix::hash::Kind,
    /// The config path as index paths start: `""` or `"team/config/"`.
    prefix: String,
}

impl CleanIndex {
    /// `None` (every file is read) when `dir` is not the top of a repository's working tree
    /// or its index cannot be read.
    fn open(dir: &Path, config: &ConfigPath) -> Option<CleanIndex> {
        let repository = gix::open_opts(dir, gix::open::Options::isolated()).ok()?;
        let top = repository.workdir()?.canonicalize().ok()?;
        if top != dir.canonicalize().ok()? {
            return None;
        }
        let mut prefix = config.components().join("/");
        if !prefix.is_empty() {
            prefix.push('/');
        }
        Some(CleanIndex {
            index: repository.open_index().ok()?,
            // Compared to the nanosecond, as git does on Linux, both when matching stat data and
            // when telling a racy entry: by the second, every file of a fresh checkout written
            // in the index's last second would be racy and read. The two must agree: a
            // same-size rewrite in the second of the first write matches by the second, while
            // its entry is not racy by the nanosecond.
            options: gix::index::entry::stat::Options {
                use_nsec: true,
                ..repository.stat_options().ok()?
            },
            object_hash: repository.object_hash(),
            prefix,
        })
    }

    /// Whether the file at `path` (`relative` to the config path) is known, without reading
    /// it, to hold `committed`: a clean index entry whose stat data matches the file's and
    /// whose blob is `committed`'s. Anything in doubt is `false`, and the file is read.
    fn holds_committed(
        &self,
        relative: &str,
        path: &Path,
        committed: Option<&FileContent>,
    ) -> bool {
        use gix::index::entry::{Flags, Mode, Stage, Stat};
        let Some(FileContent::Bytes(committed)) = committed else {
            return false;
        };
        let key = format!("{}{relative}", self.prefix);
        let Some(entry) = self.index.entry_by_path(key.as_bytes().into()) else {
            return false;
        };
        let trusted = entry.stage() == Stage::Unconflicted
            && !entry
                .flags
                .intersects(Flags::ASSUME_VALID | Flags::SKIP_WORKTREE | Flags::INTENT_TO_ADD)
            && matches!(entry.mode, Mode::FILE | Mode::FILE_EXECUTABLE)
            // Written no earlier than the index, the file may have changed since without its
            // stat data showing it ("racy git").
            && !entry.stat.is_racy(self.index.timestamp(), self.options);
        if !trusted {
            return false;
        }
        let on_disk = match gix::index::fs::Metadata::from_path_no_follow(path) {
            Ok(metadata) if metadata.is_file() => Stat::from_fs(&metadata).ok(),
            _ => None,
        };
        on_disk.is_some_and(|stat| entry.stat.matches(&stat, self.options))
            && gix::objs::compute_hash(self.object_hash, gix::objs::Kind::Blob, committed)
                .is_ok_and(|id| id == entry.id)
    }
}

/// What a walk of the kind directories found: every entry, and the regular resource files
/// still to read as (index in `files`, path).
struct Listing {
    files: Vec<SourceFile>,
    to_read: Vec<(usize, PathBuf)>,
}

/// The entries of `config`'s kind directories inside `dir`, not read yet; `None` past
/// `limits.max_files`.
fn list(dir: &Path, config: &ConfigPath, limits: &Limits) -> Result<Option<Listing>, GitError> {
    let root = config_root(dir, config, &Revision::Worktree)?;
    let mut files = Vec::new();
    let mut pending: Vec<(String, PathBuf)> = Vec::new();
    for kind in Kind::ALL {
        let name = kind.directory();
        let path = root.join(name);
        let metadata = match fs::symlink_metadata(&path) {
            Ok(metadata) => metadata,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(io_error(&path, source)),
        };
        let file_type = metadata.file_type();
        if file_type.is_dir() {
            pending.push((name.to_string(), path));
        } else if file_type.is_symlink() {
            files.push(SourceFile {
                path: name.to_string(),
                content: FileContent::Symlink,
            });
        } else {
            files.push(SourceFile {
                path: name.to_string(),
                content: if file_type.is_file() {
                    FileContent::NotADirectory
                } else {
                    FileContent::NonRegular
                },
            });
        }
    }
    let mut to_read: Vec<(usize, PathBuf)> = Vec::new();
    while let Some((prefix, path)) = pending.pop() {
        let entries = fs::read_dir(&path).map_err(|source| io_error(&path, source))?;
        for entry in entries {
            let entry = entry.map_err(|source| io_error(&path, source))?;
            let file_type = entry
                .file_type()
                .map_err(|source| io_error(&entry.path(), source))?;
            let relative = format!("{prefix}/{}", entry.file_name().to_string_lossy());
            let content = if file_type.is_dir() {
                pending.push((relative, entry.path()));
                continue;
            } else if file_type.is_symlink() {
                FileContent::Symlink
            } else if file_type.is_file() {
                if resource_kind_for_path(&relative).is_none() {
                    continue;
                }
                to_read.push((files.len(), entry.path()));
                // Replaced by what is read, once the walk is done.
                FileContent::NonRegular
            } else {
                FileContent::NonRegular
            };
            files.push(SourceFile {
                path: relative,
                content,
            });
            if files.len() > limits.max_files {
                return Ok(None);
            }
        }
    }
    Ok(Some(Listing { files, to_read }))
}

/// `work` on each path, split over the cores (10,000 small files are most of a working
/// tree's read), with the index each path came with.
fn on_every_core<T: Send>(
    paths: Vec<(usize, PathBuf)>,
    work: impl Fn(usize, &Path) -> Result<T, GitError> + Sync,
) -> Result<Vec<(usize, T)>, GitError> {
    let run = |part: Vec<(usize, PathBuf)>| {
        part.into_iter()
            .map(|(index, path)| Ok((index, work(index, &path)?)))
            .collect::<Result<Vec<_>, GitError>>()
    };
    let threads = crate::parallel::threads();
    if threads < 2 || paths.len() < 256 {
        return run(paths);
    }
    let per_part = paths.len().div_ceil(threads);
    let mut parts: Vec<Vec<(usize, PathBuf)>> = Vec::new();
    let mut rest = paths.into_iter().peekable();
    while rest.peek().is_some() {
        parts.push(rest.by_ref().take(per_part).collect());
    }
    let mut done = Vec::new();
    for part in crate::parallel::map_parts(parts, run) {
        done.extend(part?);
    }
    Ok(done)
}

/// `dir` joined with the config path, refusing a component that is a symlink or not a directory.
fn config_root(dir: &Path, config: &ConfigPath, revision: &Revision) -> Result<PathBuf, GitError> {
    let mut root = dir.to_path_buf();
    let not_found = || GitError::ConfigPathNotFound {
        path: config.display(),
        revision: revision.to_string(),
    };
    let not_a_directory = || GitError::ConfigPathNotADirectory {
        path: config.display(),
        revision: revision.to_string(),
    };
    let metadata = fs::metadata(&root).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            not_found()
        } else {
            io_error(&root, source)
        }
    })?;
    if !metadata.is_dir() {
        return Err(not_a_directory());
    }
    for component in config.components() {
        root.push(component);
        match fs::symlink_metadata(&root) {
            Ok(metadata) if metadata.file_type().is_dir() => {}
            Ok(_) => return Err(not_a_directory()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
            Err(source) => return Err(io_error(&root, source)),
        }
    }
    Ok(root)
}

/// Reads a regular file of at most `limit` bytes; larger files are reported, not read.
fn read_bounded(path: &Path, limit: u64) -> Result<FileContent, GitError> {
    let file = File::open(path).map_err(|source| io_error(path, source))?;
    // The entry could have been swapped since the directory was listed: check what was opened.
    let metadata = file.metadata().map_err(|source| io_error(path, source))?;
    if !metadata.is_file() {
        return Ok(FileContent::NonRegular);
    }
    if metadata.len() > limit {
        return Ok(FileContent::TooLarge {
            size: metadata.len(),
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| io_error(path, source))?;
    let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if read > limit {
        return Ok(FileContent::TooLarge { size: read });
    }
    Ok(FileContent::Bytes(bytes))
}

fn io_error(path: &Path, source: std::io::Error) -> GitError {
    GitError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// How many resource files differ between two readings of a config path (added, removed or
/// changed): with a commit and the working tree, what is not committed yet.
fn differing_files(committed: &[SourceFile], worktree: &[SourceFile]) -> usize {
    let committed: HashMap<&str, &FileContent> = committed
        .iter()
        .map(|f| (f.path.as_str(), &f.content))
        .collect();
    let on_disk: HashMap<&str, &FileContent> = worktree
        .iter()
        .map(|f| (f.path.as_str(), &f.content))
        .collect();
    let changed_or_new = on_disk
        .iter()
        .filter(|(path, content)| committed.get(*path) != Some(content))
        .count();
    let removed = committed
        .keys()
        .filter(|path| !on_disk.contains_key(*path))
        .count();
    changed_or_new + removed
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_added_changed_and_removed_files() {
        let file = |path: &str, text: &str| SourceFile {
            path: path.into(),
            content: FileContent::Bytes(text.as_bytes().to_vec()),
        };
        let committed = [
            file("jobs/a.yaml", "a"),
            file("jobs/b.yaml", "b"),
            file("jobs/c.yaml", "c"),
        ];
        let on_disk = [
            file("jobs/a.yaml", "a"),
            file("jobs/b.yaml", "B"),
            file("jobs/d.yaml", "d"),
        ];

        assert_eq!(differing_files(&committed, &on_disk), 3);
        assert_eq!(differing_files(&committed, &committed), 0);
    }

    use super::*;

    fn write(root: &Path, relative: &str, content: &str) {
        let path = root.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn paths(snapshot: &Snapshot) -> Vec<&str> {
        snapshot.files.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn only_yaml_files_under_kind_directories_are_read() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "jobs/a.yaml", "a");
        write(dir.path(), "jobs/team/b.yml", "b");
        write(dir.path(), "jobs/notes.md", "n");
        write(dir.path(), "README.md", "r");
        write(dir.path(), "other/c.yaml", "c");

        let snapshot = read_worktree(dir.path(), "/", &Limits::default()).unwrap();

        assert_eq!(snapshot.revision, Revision::Worktree);
        assert_eq!(paths(&snapshot), ["jobs/a.yaml", "jobs/team/b.yml"]);
        assert_eq!(snapshot.files[0].content, FileContent::Bytes(b"a".to_vec()));
    }

    #[test]
    fn a_sub_path_roots_the_file_paths() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "config/prod/plugins/p.yaml", "p");
        write(dir.path(), "jobs/outside.yaml", "o");

        let snapshot = read_worktree(dir.path(), "./config/prod/", &Limits::default()).unwrap();

        assert_eq!(paths(&snapshot), ["plugins/p.yaml"]);
    }

    #[test]
    fn symlinks_are_reported_and_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "secret.yaml", "secret");
        write(outside.path(), "jobs/x.yaml", "x");
        fs::create_dir_all(dir.path().join("jobs")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.yaml"),
            dir.path().join("jobs/link.yaml"),
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.path().join("jobs"), dir.path().join("webhooks"))
            .unwrap();

        let snapshot = read_worktree(dir.path(), "", &Limits::default()).unwrap();

        assert_eq!(
            snapshot.files,
            [
                SourceFile {
                    path: "jobs/link.yaml".into(),
                    content: FileContent::Symlink
                },
                SourceFile {
                    path: "webhooks".into(),
                    content: FileContent::Symlink
                },
            ]
        );
    }

    #[test]
    fn files_over_the_limit_are_reported_with_their_size() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "jobs/big.yaml", &"x".repeat(100));
        let limits = Limits {
            max_file_bytes: 10,
            ..Limits::default()
        };

        let snapshot = read_worktree(dir.path(), "", &limits).unwrap();

        assert_eq!(
            snapshot.files[0].content,
            FileContent::TooLarge { size: 100 }
        );
    }

    #[test]
    fn a_missing_config_path_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();

        let err = read_worktree(dir.path(), "config/prod", &Limits::default()).unwrap_err();

        assert_eq!(
            err.to_string(),
            "config path `config/prod` does not exist at worktree"
        );
    }

    // Issue 22, finding 3: this was an error (exit 2), not the E106 diagnostic (exit 1).
    #[test]
    fn too_many_files_is_one_entry_the_loader_reports_with_the_config_path() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            write(dir.path(), &format!("config/jobs/{i}.yaml"), "x");
        }
        let limits = Limits {
            max_files: 2,
            ..Limits::default()
        };

        let snapshot = read_worktree(dir.path(), "config", &limits).unwrap();

        assert_eq!(
            snapshot.files,
            [SourceFile {
                path: String::new(),
                content: FileContent::TooManyFiles {
                    limit: 2,
                    config_path: "config".into()
                }
            }]
        );
    }

    // Issue 22, finding 1: a kind directory that is not a directory must be listed, so that it
    // is refused, never read as "no resources of this kind".
    #[test]
    fn a_file_or_fifo_in_place_of_a_kind_directory_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "webhooks", "not a directory");
        let fifo = std::process::Command::new("mkfifo")
            .arg(dir.path().join("jobs"))
            .status()
            .unwrap();
        assert!(fifo.success());

        let snapshot = read_worktree(dir.path(), "", &Limits::default()).unwrap();

        assert_eq!(
            snapshot.files,
            [
                SourceFile {
                    path: "jobs".into(),
                    content: FileContent::NonRegular
                },
                SourceFile {
                    path: "webhooks".into(),
                    content: FileContent::NotADirectory
                },
            ]
        );
    }
}
