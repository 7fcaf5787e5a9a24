//! The repository a sync reads: where it is ([`SourceSpec`], [`spec`]), how to authenticate
//! ([`auth`]), reading it whole or from the files changed since the last apply
//! ([`incremental`]), and checking what was read (`manifest` → `validate` → proving ciphertexts
//! decrypt). The sync itself is orchestrated once, in `workflow`.

mod auth;
pub mod incremental;
pub(crate) mod spec;

pub use auth::{git_auth, git_auth_with};

use std::collections::BTreeSet;

use crate::crypto::secret_refs::SecretRefChecker;
use crate::crypto::{self, CredentialKeys};
use crate::diagnostic::{self, Code, Diagnostic};
use crate::git::{self, RepoLocation, Snapshot};
use crate::manifest::{self, Limits, SourceFile};
use crate::model::{DesiredResource, ResourceId, Revision};
use crate::validate::{self, ValidationContext};
use crate::{Error, Result};

/// What checking a repository needs besides its files: the keys that prove ciphertexts
/// decrypt, the `secret_ref` checker and the plugins Ritmo ships.
#[derive(Clone, Copy)]
pub struct Checks<'a> {
    pub keys: &'a CredentialKeys,
    pub refs: &'a SecretRefChecker,
    pub builtin_plugins: &'a BTreeSet<String>,
}

/// Where to read a config repository from.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub location: RepoLocation,
    /// Branch to read; `None` reads HEAD.
    pub branch: Option<String>,
    /// Directory inside the repository holding the kind directories.
    pub path: String,
    /// Read the files on disk instead of a commit (pre-commit checks of a plain directory).
    pub worktree: bool,
    /// Credentials for a remote repository.
    pub auth: git::Auth,
    /// Where a remote repository is cached between reads (kept across warm invocations).
    pub cache_dir: std::path::PathBuf,
}

/// Reads the repository at its branch tip (or the working tree), off the async runtime since
/// gix is blocking.
pub async fn read_source(source: &SourceSpec, limits: Limits) -> Result<Snapshot> {
    crate::progress::report(crate::progress::Stage::Reading);
    let source = source.clone();
    tokio::task::spawn_blocking(move || match (&source.location, source.worktree) {
        (RepoLocation::Local(dir), true) => git::read_worktree(dir, &source.path, &limits),
        (location @ RepoLocation::Local(_), false) => {
            git::read_commit(location, source.branch.as_deref(), &source.path, &limits)
        }
        (location @ RepoLocation::Remote(_), _) => {
            let branch = source.branch.as_deref().unwrap_or("main");
            let cache = git::GitCache::new(&source.cache_dir);
            let fetched = cache.fetch(
                location,
                branch,
                &source.auth,
                &git::NetworkOptions::default(),
            )?;
            let commit = fetched.revision.commit().unwrap_or_default().to_string();
            cache.read_commit(branch, &commit, &source.path, &limits)
        }
    })
    .await
    .map_err(|join| Error::Internal(format!("the repository reader stopped: {join}")))?
    .map_err(Error::from)
}

/// The files at `paths` (relative to the config directory) as `revision` has them: the
/// files a plan's diagnostics point into, for their snippets. A commit is read from the local
/// repository, or from the cache a remote one was fetched into, whatever its branch points
/// at now; a working tree is read again. Paths that are not there are left out.
pub async fn read_files_at(
    source: &SourceSpec,
    revision: &Revision,
    paths: Vec<String>,
    limits: Limits,
) -> Result<Vec<SourceFile>> {
    let Some(commit) = revision.commit() else {
        let snapshot = read_source(source, limits).await?;
        let wanted: BTreeSet<&String> = paths.iter().collect();
        let mut files = snapshot.files;
        files.retain(|file| wanted.contains(&file.path));
        return Ok(files);
    };
    let repo = match source.location.local_path() {
        Some(path) => path.to_path_buf(),
        None => git::GitCache::new(&source.cache_dir).repository_path(),
    };
    let (commit, config_path) = (commit.to_string(), source.path.clone());
    tokio::task::spawn_blocking(move || {
        git::read_files(&repo, &commit, &config_path, &paths, &limits)
    })
    .await
    .map_err(|join| Error::Internal(format!("the repository reader stopped: {join}")))?
    .map_err(Error::from)
}

/// A repository read and checked: the resources that passed and everything found wrong.
#[derive(Debug, Clone)]
pub struct Checked {
    pub revision: Revision,
    pub desired: Vec<DesiredResource>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    pub fn has_errors(&self) -> bool {
        diagnostic::has_errors(&self.diagnostics)
    }
}

/// Parses, validates, proves every ciphertext decrypts and checks `secret_ref`s with `refs`
/// (see [`SecretRefChecker::from_settings`]). `known` answers for resources that exist outside
/// this snapshot (empty for a full scan).
pub async fn check(snapshot: Snapshot, checks: Checks<'_>, limits: &Limits) -> Checked {
    let Checks {
        keys,
        refs,
        builtin_plugins,
    } = checks;
    let files = snapshot.files.len();
    crate::progress::report(crate::progress::Stage::Parsing { files });
    let loaded = crate::parallel::load_manifest(&snapshot.files, limits);
    crate::progress::report(crate::progress::Stage::Validating { files });
    let mut diagnostics = loaded.diagnostics.clone();
    let no_outside_resources = |_: &ResourceId| false;
    diagnostics.extend(validate::validate(
        &loaded,
        &ValidationContext {
            builtin_plugins,
            known: &no_outside_resources,
        },
    ));
    diagnostics.extend(verify_secrets(&loaded, keys, refs).await);
    manifest::resolve_positions(&mut diagnostics, &snapshot.files, limits);
    diagnostic::sort(&mut diagnostics);
    Checked {
        revision: snapshot.revision,
        desired: crate::parallel::resources_of(loaded.documents),
        diagnostics,
    }
}

/// Proves the documents' ciphertexts decrypt and their AWS `secret_ref`s exist (DescribeSecret
/// only). Malformed ciphertexts are `validate`'s to report, so only well-formed ones are tried.
pub(crate) async fn verify_secrets(
    manifest: &manifest::Manifest,
    keys: &CredentialKeys,
    refs: &SecretRefChecker,
) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    for field in manifest
        .documents
        .iter()
        .flat_map(|document| &document.ciphertexts)
        .filter(|field| validate::is_well_formed_ciphertext(&field.value))
    {
        diagnostics.extend(verify_ciphertext(keys, field).await);
    }
    let secret_refs: Vec<_> = manifest
        .documents
        .iter()
        .flat_map(|document| document.secret_refs.iter().cloned())
        .collect();
    diagnostics.extend(refs.check(&secret_refs).await);
    diagnostics
}

async fn verify_ciphertext(
    keys: &CredentialKeys,
    field: &manifest::CiphertextField,
) -> Option<Diagnostic> {
    match keys.verify(&field.credential, &field.value).await {
        Ok(outcome) if outcome.bound => None,
        Ok(_) => Some(Diagnostic::new(
            Code::W102,
            &field.at,
            format!(
                "`encrypted_value` of credential `{}` is not bound to its name, so it could be \
                 copied to another credential: re-encrypt it with `ritmo encrypt-credential --name {}`",
                field.credential, field.credential
            ),
        )),
        Err(error @ crypto::CryptoError::NoKey { .. }) => Some(Diagnostic::new(
            Code::E403,
            &field.at,
            format!(
                "{error}: set RITMO_MASTER_ENCRYPTION_KEY (or the KMS key) so validation can prove \
                 the value decrypts"
            ),
        )),
        // The crypto errors name the credential and never carry key material or plaintext.
        Err(error) => Some(Diagnostic::new(Code::E402, &field.at, error.to_string())),
    }
}
