//! The database back out as a config repository: each stored resource as the YAML document
//! that would produce it, at the path the layout gives its kind.
//!
//! The documents are pure. The round trip (export → validate → plan) giving zero changes is what
//! makes this trustworthy; the CLI tests check exactly that. The database is not trusted for
//! file paths: a stored name becomes a file name only if validation would accept it, and
//! [`ExportDir`] writes only inside its directory, through no symlink and over no existing file.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Component, Path, PathBuf};

use serde_json::{Value, json};

use crate::apply::{LABEL_GIT_COMMIT, LABEL_MANAGED_BY, LABEL_TARGET};
use crate::model::{API_VERSION, Kind, is_valid_name};
use crate::store::StoredResource;

/// Why a resource was not exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The stored name is one validation refuses, so it cannot name a file either (it may
    /// hold `/`, `..` or control characters). `name` is escaped for printing.
    #[error(
        "{kind} `{name}` was not exported: its stored name is not a valid resource name (1-63 \
         lower-case letters, digits and `-`, starting and ending with a letter or digit), so it \
         cannot name a file: rename or delete that row in the database"
    )]
    InvalidName { kind: Kind, name: String },

    /// Writing would leave the directory, follow a symlink or replace something.
    #[error("`{path}` was not written: {reason}")]
    Unsafe { path: String, reason: String },

    #[error("cannot write `{path}`")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl ExportError {
    /// A bad row, skipped; the other errors mean the output directory cannot be trusted.
    pub fn is_bad_row(&self) -> bool {
        matches!(self, ExportError::InvalidName { .. })
    }
}

/// The labels the author wrote, without the ones a sync adds to every row.
pub fn authored_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(key, _)| {
            ![LABEL_MANAGED_BY, LABEL_GIT_COMMIT, LABEL_TARGET].contains(&key.as_str())
        })
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// The path, relative to the repository root, that `resource` is exported to: refused for a
/// name validation would refuse.
pub fn export_path(resource: &StoredResource) -> Result<String, ExportError> {
    if !is_valid_name(&resource.name) {
        return Err(ExportError::InvalidName {
            kind: resource.kind,
            name: resource.name.escape_debug().to_string(),
        });
    }
    Ok(format!(
        "{}/{}.yaml",
        resource.kind.directory(),
        resource.name
    ))
}

/// The directory an export writes into.
#[derive(Debug, Clone)]
pub struct ExportDir {
    root: PathBuf,
}

impl ExportDir {
    /// `root` is the directory the user named (it may be reached through a symlink of theirs);
    /// nothing is followed below it.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Writes `contents` to `relative` (`/`-separated plain names, as [`export_path`] gives),
    /// creating its directories. Refuses a path that is absolute or has `.`/`..`, a directory
    /// on the way that exists as anything but a real directory (a symlink above all), and a
    /// file that exists already: the file is created with `create_new`, which never follows a
    /// symlink in its place.
    pub fn write(&self, relative: &str, contents: &[u8]) -> Result<PathBuf, ExportError> {
        let unsafe_path = |path: &Path, reason: &str| ExportError::Unsafe {
            path: path.display().to_string(),
            reason: reason.to_string(),
        };
        let names: Vec<&str> = relative.split('/').collect();
        let plain = |name: &&str| {
            let mut components = Path::new(name).components();
            matches!(components.next(), Some(Component::Normal(_))) && components.next().is_none()
        };
        let Some((file_name, dirs)) = names.split_last() else {
            return Err(unsafe_path(Path::new(relative), "the path is empty"));
        };
        if !names.iter().all(plain) {
            return Err(unsafe_path(
                Path::new(relative),
                "only plain names are written: no absolute path, `.` or `..`",
            ));
        }
        let mut path = self.root.clone();
        for dir in dirs {
            path.push(dir);
            match fs::create_dir(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == ErrorKind::AlreadyExists => {
                    let metadata =
                        fs::symlink_metadata(&path).map_err(|source| io(&path, source))?;
                    if !metadata.file_type().is_dir() {
                        return Err(unsafe_path(
                            &path,
                            "it exists and is not a directory (a symlink is never followed): \
                             export into a new or empty directory",
                        ));
                    }
                }
                Err(source) => return Err(io(&path, source)),
            }
        }
        path.push(file_name);
        let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == ErrorKind::AlreadyExists => {
                return Err(unsafe_path(
                    &path,
                    "something exists there already (a symlink is never followed): export into \
                     a new or empty directory",
                ));
            }
            Err(source) => return Err(io(&path, source)),
        };
        file.write_all(contents)
            .map_err(|source| io(&path, source))?;
        Ok(path)
    }
}

fn io(path: &Path, source: std::io::Error) -> ExportError {
    ExportError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The YAML document for `resource`.
pub fn export_document(resource: &StoredResource) -> Result<String, serde_saphyr::ser::Error> {
    let labels = authored_labels(&resource.labels);
    let mut metadata = json!({ "name": resource.name });
    if !labels.is_empty() {
        metadata["labels"] = json!(labels);
    }
    let document: Value = json!({
        "apiVersion": API_VERSION,
        "kind": resource.kind.as_str(),
        "metadata": metadata,
        "spec": resource.spec,
    });
    serde_saphyr::to_string(&document)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(kind: Kind, name: &str) -> StoredResource {
        StoredResource {
            kind,
            name: name.to_string(),
            spec: json!({}),
            spec_hash: String::new(),
            hash_version: 1,
            labels: BTreeMap::new(),
            source_path: None,
            commit: None,
            target: None,
            owner: None,
            drifted_at: None,
            created_at: Default::default(),
            updated_at: Default::default(),
        }
    }

    // Issue 22, finding 2: `../../../x/pwned` was joined to the output directory unchecked.
    #[test]
    fn a_stored_name_validation_refuses_gets_no_path() {
        for name in [
            "../../../x/pwned",
            "/etc/passwd",
            "a/b",
            "..",
            "",
            "UPPER",
            "nul\0",
        ] {
            let err = export_path(&stored(Kind::Job, name)).unwrap_err();

            assert!(err.is_bad_row(), "{name}: {err}");
        }
        assert_eq!(
            export_path(&stored(Kind::Webhook, "github-backend")).unwrap(),
            "webhooks/github-backend.yaml"
        );
    }

    #[test]
    fn a_refused_name_is_printed_escaped_with_its_kind() {
        let err = export_path(&stored(Kind::Job, "x\n\u{1b}[2J")).unwrap_err();

        let message = err.to_string();
        assert!(
            message.starts_with("Job `x\\n\\u{1b}[2J` was not exported"),
            "{message}"
        );
    }

    #[test]
    fn paths_that_are_not_plain_names_are_never_written() {
        let out = tempfile::tempdir().unwrap();
        let dir = ExportDir::new(out.path().join("d"));
        fs::create_dir(out.path().join("d")).unwrap();

        for relative in [
            "../escaped.yaml",
            "/tmp/abs.yaml",
            "jobs/./a.yaml",
            "jobs//a.yaml",
            "",
        ] {
            let err = dir.write(relative, b"x").unwrap_err();

            assert!(
                matches!(err, ExportError::Unsafe { .. }),
                "{relative}: {err}"
            );
        }
        assert!(!out.path().join("escaped.yaml").exists());
    }

    #[test]
    fn a_symlink_planted_inside_the_directory_is_not_followed() {
        let out = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = out.path().join("d");
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("jobs")).unwrap();
        fs::create_dir(root.join("webhooks")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("w.yaml"), root.join("webhooks/w.yaml"))
            .unwrap();
        let dir = ExportDir::new(&root);

        let through_dir = dir.write("jobs/a.yaml", b"x").unwrap_err();
        let through_file = dir.write("webhooks/w.yaml", b"x").unwrap_err();

        assert!(
            matches!(through_dir, ExportError::Unsafe { .. }),
            "{through_dir}"
        );
        assert!(
            matches!(through_file, ExportError::Unsafe { .. }),
            "{through_file}"
        );
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn files_are_written_under_new_directories() {
        let out = tempfile::tempdir().unwrap();
        let dir = ExportDir::new(out.path());

        let path = dir.write("jobs/a.yaml", b"spec").unwrap();

        assert_eq!(path, out.path().join("jobs/a.yaml"));
        assert_eq!(fs::read(path).unwrap(), b"spec");
    }
}
