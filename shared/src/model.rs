//! The resource model: kinds, identities, desired resources and live rows.
//!
//! Plain data only. Parsing lives in `manifest`, rules in `validate`, storage in `store`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::hash::{Spec, SpecHash};

/// The `apiVersion` every document must carry.
pub const API_VERSION: &str = "ritmo.dev/v1";

/// The six kinds of resource a config repository holds, in apply order:
/// what is referenced comes before what refers to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Credential,
    Plugin,
    WorkerPool,
    Job,
    Webhook,
    Environment,
}

impl Kind {
    /// Every kind, in apply order.
    pub const ALL: [Kind; 6] = [
        Kind::Credential,
        Kind::Plugin,
        Kind::WorkerPool,
        Kind::Job,
        Kind::Webhook,
        Kind::Environment,
    ];

    /// The `kind:` value in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Credential => "Credential",
            Kind::Plugin => "Plugin",
            Kind::WorkerPool => "WorkerPool",
            Kind::Job => "Job",
            Kind::Webhook => "Webhook",
            Kind::Environment => "Environment",
        }
    }

    /// The top-level directory of the config repository that holds this kind.
    pub fn directory(self) -> &'static str {
        match self {
            Kind::Credential => "credentials",
            Kind::Plugin => "plugins",
            Kind::WorkerPool => "workers",
            Kind::Job => "jobs",
            Kind::Webhook => "webhooks",
            Kind::Environment => "deployments",
        }
    }

    /// The kind whose directory is `dir`, if any.
    pub fn from_directory(dir: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.directory() == dir)
    }

    /// Lower-case singular used in action lines and the CLI (`job/backend-service`).
    pub fn slug(self) -> &'static str {
        match self {
            Kind::Credential => "credential",
            Kind::Plugin => "plugin",
            Kind::WorkerPool => "workerpool",
            Kind::Job => "job",
            Kind::Webhook => "webhook",
            Kind::Environment => "environment",
        }
    }

    /// Position in apply order (0 first).
    pub fn apply_rank(self) -> usize {
        Kind::ALL
            .iter()
            .position(|k| *k == self)
            .unwrap_or(Kind::ALL.len())
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a string that names no kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown kind `{0}`: expected one of Job, Credential, Plugin, Webhook, WorkerPool, Environment"
)]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;

    /// Accepts the YAML name (`Job`), the slug (`job`), the plural (`jobs`) and the directory.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        Kind::ALL
            .into_iter()
            .find(|kind| {
                lower == kind.slug()
                    || lower == kind.as_str().to_ascii_lowercase()
                    || lower == format!("{}s", kind.slug())
                    || lower == kind.directory()
            })
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

/// The identity of a resource: `(kind, name)`, unique across the whole database.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourceId {
    pub kind: Kind,
    pub name: String,
}

impl ResourceId {
    pub fn new(kind: Kind, name: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
        }
    }

    /// Sort key for apply order: kind rank, then name.
    pub fn apply_order_key(&self) -> (usize, &str) {
        (self.kind.apply_rank(), self.name.as_str())
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.slug(), self.name)
    }
}

/// A position in a file of the config repository. Lines and columns count from 1; line 0 in a
/// file marks an unresolved position (see [`SourceLocation::unresolved`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourceLocation {
    pub path: String,
    pub line: u32,
    pub column: u32,
}

impl SourceLocation {
    pub fn new(path: impl Into<String>, line: u32, column: u32) -> Self {
        Self {
            path: path.into(),
            line,
            column,
        }
    }

    /// A place in `path` known only by its ordinal, the node's place in the file's parse tree:
    /// `manifest::load` leaves positions inside good documents unresolved, since few are
    /// ever shown, and `manifest::resolve_positions` turns one into a line and column.
    pub fn unresolved(path: impl Into<String>, ordinal: u32) -> Self {
        Self::new(path, 0, ordinal)
    }
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path, self.line, self.column)
    }
}

/// A resource as Git wants it: validated, canonical, hashed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredResource {
    pub id: ResourceId,
    pub labels: BTreeMap<String, String>,
    /// The `spec` mapping as canonical JSON. Holds ciphertexts and references, never
    /// plaintext secrets.
    pub spec: Spec,
    pub hash: SpecHash,
    /// Where the document starts (its `apiVersion` line).
    pub source: SourceLocation,
}

/// What the planner needs to know about a row in the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveResource {
    pub id: ResourceId,
    pub hash: SpecHash,
    /// Changed outside a sync since it was last applied (set by the drift trigger).
    pub drifted: bool,
}

/// One entry of a target's inventory: a resource this target created and therefore owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryEntry {
    pub id: ResourceId,
    pub hash: SpecHash,
    pub commit: String,
}

/// Live state as the planner sees it: every row of the resource table (any owner) plus this
/// target's inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveState {
    pub resources: BTreeMap<ResourceId, LiveResource>,
    pub inventory: BTreeMap<ResourceId, InventoryEntry>,
}

/// A point in the config repository's history: `main@sha1:<hex>`, or the working tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Revision {
    Commit { branch: String, commit: String },
    Worktree,
}

impl Revision {
    /// The commit id, when there is one.
    pub fn commit(&self) -> Option<&str> {
        match self {
            Revision::Commit { commit, .. } => Some(commit),
            Revision::Worktree => None,
        }
    }

    /// The commit id, or `worktree`.
    pub fn commit_or_worktree(&self) -> &str {
        self.commit().unwrap_or("worktree")
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Revision::Commit { branch, commit } => write!(f, "{branch}@sha1:{commit}"),
            Revision::Worktree => f.write_str("worktree"),
        }
    }
}

/// A resource name must be a DNS label: 1-63 lower-case letters, digits and `-`, starting and
/// ending with a letter or digit.
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.last().is_some_and(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_from_every_spelling_a_user_types() {
        for text in ["Job", "job", "jobs"] {
            assert_eq!(text.parse::<Kind>(), Ok(Kind::Job));
        }
        assert_eq!("deployments".parse::<Kind>(), Ok(Kind::Environment));
        assert_eq!("workerpools".parse::<Kind>(), Ok(Kind::WorkerPool));
        assert!("pipelines".parse::<Kind>().is_err());
    }

    #[test]
    fn apply_order_puts_credentials_before_jobs_before_webhooks() {
        let mut ids = [
            ResourceId::new(Kind::Webhook, "w"),
            ResourceId::new(Kind::Job, "j"),
            ResourceId::new(Kind::Credential, "c"),
        ];

        ids.sort_by(|a, b| a.apply_order_key().cmp(&b.apply_order_key()));

        let kinds: Vec<Kind> = ids.iter().map(|id| id.kind).collect();
        assert_eq!(kinds, [Kind::Credential, Kind::Job, Kind::Webhook]);
    }

    #[test]
    fn names_follow_dns_label_rules() {
        assert!(is_valid_name("backend-service"));
        assert!(is_valid_name("a"));
        assert!(is_valid_name(&"a".repeat(63)));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name(&"a".repeat(64)));
        assert!(!is_valid_name("Backend"));
        assert!(!is_valid_name("-lead"));
        assert!(!is_valid_name("trail-"));
        assert!(!is_valid_name("under_score"));
    }

    #[test]
    fn revisions_read_branch_at_sha1() {
        let revision = Revision::Commit {
            branch: "main".into(),
            commit: "abc123".into(),
        };

        assert_eq!(revision.to_string(), "main@sha1:abc123");
        assert_eq!(Revision::Worktree.to_string(), "worktree");
    }
}
