//! Files at a revision → parsed documents with positions → typed, hashed resources.
//!
//! Owns YAML parsing (limits, duplicate keys, positions) and each kind's schema. Does not own
//! cross-document rules (references, duplicate identities, secret scanning): those are
//! `validate`'s. Pure: the caller (the `git` module or a directory walk) supplies the bytes.

mod event_tree;
mod loader;
mod schema;
mod yaml;

pub use loader::{load, load_with_positions, resolve_positions};
pub(crate) use schema::did_you_mean;
pub use schema::spec_references;
/// The pinned parser setup, for measuring serde-saphyr on its own (the benchmark).
pub use yaml::parser_options;

use std::collections::BTreeSet;

use crate::diagnostic::Diagnostic;
use crate::model::{DesiredResource, Kind, ResourceId, SourceLocation};

/// One file of the config repository, as the source found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Path relative to the target's root (`jobs/backend-service.yaml`), `/`-separated.
    pub path: String,
    pub content: FileContent,
}

/// What a source found at a path. Only regular files within the size limit carry bytes, so a
/// symlink or an oversized blob is never read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    Bytes(Vec<u8>),
    Symlink,
    Submodule,
    /// A FIFO, socket, device or other entry that is not a regular file.
    NonRegular,
    /// A file where a kind directory belongs (`webhooks` committed as a file).
    NotADirectory,
    TooLarge {
        size: u64,
    },
    /// The source stopped listing past `limit` files and read none of them: a snapshot that
    /// holds this holds nothing else (path `""`, the config root). `config_path` is the
    /// target's path as the user wrote it in the repository (`/` for the root).
    TooManyFiles {
        limit: usize,
        config_path: String,
    },
}

/// Bounds that keep a hostile repository from hanging the parser or exhausting memory.
/// Changing them can change what parses, so they are part of the pinned parser setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_file_bytes: u64,
    pub max_depth: usize,
    pub max_nodes: usize,
    pub max_alias_expansions: usize,
    pub max_files: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_bytes: 1024 * 1024,
            max_depth: 64,
            max_nodes: 250_000,
            max_alias_expansions: 1_000,
            max_files: 100_000,
        }
    }
}

/// The kind whose directory holds `path`, when `path` is a resource file (`.yaml`/`.yml` under
/// one of the six kind directories, at any depth). Everything else is ignored.
pub fn resource_kind_for_path(path: &str) -> Option<Kind> {
    let (dir, rest) = path.split_once('/')?;
    let kind = Kind::from_directory(dir)?;
    let is_yaml = rest.ends_with(".yaml") || rest.ends_with(".yml");
    is_yaml.then_some(kind)
}

/// The kind whose directory is `path` or holds it: every path a source lists (resource files,
/// and symlinks, submodules or other entries in or in place of a kind directory) has one.
pub fn kind_directory_of(path: &str) -> Option<Kind> {
    let dir = path.split('/').next()?;
    Kind::from_directory(dir)
}

/// The kinds whose directory the source listed anything for: a resource file, or an entry it
/// refused to read (a symlink, a submodule, a file in place of the directory). A kind whose
/// directory is gone, or holds only files that are not resource files, is not among them.
pub fn kinds_listed(files: &[SourceFile]) -> BTreeSet<Kind> {
    files
        .iter()
        .filter_map(|file| kind_directory_of(&file.path))
        .collect()
}

/// A reference from one resource to another, with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub target: ResourceId,
    /// The field that holds it, e.g. `spec.scm.credentials`.
    pub field: String,
    pub at: SourceLocation,
}

/// An `encrypted_value` to prove decryptable, bound to its credential's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiphertextField {
    pub credential: String,
    pub value: String,
    pub at: SourceLocation,
}

/// A `secret_ref` of a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRefField {
    pub credential: String,
    pub provider: String,
    pub key: String,
    pub region: Option<String>,
    pub at: SourceLocation,
}

/// A string scalar of a document with its position, for secret scanning. Only strings of at
/// least `validate::MIN_SECRET_LEN` bytes are kept: no shorter one can match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringScalar {
    pub value: String,
    /// Dotted path of the field (`spec.environment.TOKEN`).
    pub field: String,
    pub at: SourceLocation,
}

/// A document that passed syntax and schema checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub resource: DesiredResource,
    pub references: Vec<Reference>,
    pub ciphertexts: Vec<CiphertextField>,
    pub secret_refs: Vec<SecretRefField>,
    pub strings: Vec<StringScalar>,
}

/// The result of loading a set of files: the good documents and everything wrong with the rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    pub documents: Vec<Document>,
    pub diagnostics: Vec<Diagnostic>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yaml_files_under_kind_directories_are_resource_files() {
        assert_eq!(resource_kind_for_path("jobs/a.yaml"), Some(Kind::Job));
        assert_eq!(resource_kind_for_path("jobs/team/a.yml"), Some(Kind::Job));
        assert_eq!(
            resource_kind_for_path("deployments/prod.yaml"),
            Some(Kind::Environment)
        );
        assert_eq!(resource_kind_for_path("README.md"), None);
        assert_eq!(resource_kind_for_path("jobs/notes.md"), None);
        assert_eq!(resource_kind_for_path(".github/workflows/ci.yaml"), None);
        assert_eq!(resource_kind_for_path("a.yaml"), None);
    }

    #[test]
    fn kind_directories_and_everything_under_them_belong_to_their_kind() {
        assert_eq!(kind_directory_of("webhooks"), Some(Kind::Webhook));
        assert_eq!(kind_directory_of("jobs/team"), Some(Kind::Job));
        assert_eq!(kind_directory_of("jobs/notes.md"), Some(Kind::Job));
        assert_eq!(kind_directory_of("webhook/a.yaml"), None);
        assert_eq!(kind_directory_of(""), None);
    }

    #[test]
    fn the_kinds_listed_are_those_with_any_entry_under_their_directory() {
        let file = |path: &str, content| SourceFile {
            path: path.into(),
            content,
        };
        let files = [
            file("jobs/a.yaml", FileContent::Bytes(Vec::new())),
            file("webhooks", FileContent::Symlink),
            file("README.md", FileContent::Bytes(Vec::new())),
        ];

        let listed = kinds_listed(&files);

        assert_eq!(listed, BTreeSet::from([Kind::Job, Kind::Webhook]));
    }
}
