//! What reading and checking a repository needs from IO: the credential keys, the Git
//! credentials, the source to read, and the check itself (`manifest` → `validate` → proving
//! ciphertexts decrypt). The sync itself is orchestrated once, in `pipeline`.

use std::collections::BTreeSet;

use crate::config::{GitAuth, SecretSetting, Settings};
use crate::crypto::{self, CredentialKeys, MasterKeyring, SecretsManager};
use crate::diagnostic::{self, Code, Diagnostic};
use crate::git::{self, RepoLocation, Snapshot};
use crate::manifest::{self, Limits};
use crate::model::{DesiredResource, ResourceId, Revision};
use crate::secret_refs::SecretRefChecker;
use crate::store::Store;
use crate::validate::{self, ValidationContext};
use crate::{Error, Result};

/// The keys that decrypt credential ciphertexts: the master keyring from the environment or
/// from Secrets Manager (read through `secrets`, else the process's reader), and KMS when a
/// key id is configured. AWS configuration is loaded only when one of them needs it.
pub async fn credential_keys(
    settings: &Settings,
    secrets: Option<&SecretsManager>,
) -> Result<CredentialKeys> {
    use secrecy::ExposeSecret;

    let master = match (&settings.master_key, &settings.master_key_secret_id) {
        (Some(key), _) => Some(MasterKeyring::parse(key.expose_secret())?),
        (None, Some(secret_id)) => Some(match secrets {
            Some(secrets) => secrets.master_keyring(secret_id).await?,
            None => {
                crypto::secrets_manager()
                    .await
                    .master_keyring(secret_id)
                    .await?
            }
        }),
        (None, None) => None,
    };
    let kms = match &settings.kms_key_id {
        Some(_) => Some(crypto::kms_client().await),
        None => None,
    };
    Ok(CredentialKeys {
        master,
        kms,
        kms_key_id: settings.kms_key_id.clone(),
    })
}

/// The credentials a target's Git host wants. Secrets named by the bootstrap configuration are
/// not read here but when the host asks for them, through the process-wide Secrets Manager
/// cache ([`crypto::secrets_manager`]), and read again once when the host refuses them.
pub async fn git_auth(auth: &GitAuth) -> Result<git::Auth> {
    let needs_secrets_manager = match auth {
        GitAuth::Token {
            token: None,
            token_secret: Some(_),
        } => true,
        GitAuth::Ssh {
            key: Some(SecretSetting::SecretsManager(_)),
            ..
        } => true,
        GitAuth::GitHubApp { private_key, .. } => {
            matches!(private_key, SecretSetting::SecretsManager(_))
        }
        _ => false,
    };
    let secrets = if needs_secrets_manager {
        Some(crypto::secrets_manager().await)
    } else {
        None
    };
    git_auth_with(auth, secrets.as_ref())
}

/// [`git_auth`] reading secrets with `secrets` (a test's moto client); an auth that names a
/// secret without `secrets` is an error. Call it inside a Tokio runtime.
pub fn git_auth_with(auth: &GitAuth, secrets: Option<&SecretsManager>) -> Result<git::Auth> {
    let source = |setting: &SecretSetting| -> Result<git::SecretSource> {
        match setting {
            SecretSetting::Value(value) => Ok(git::SecretSource::Value(value.clone())),
            SecretSetting::File(path) => Ok(git::SecretSource::File(path.clone())),
            SecretSetting::SecretsManager(id) => secrets
                .and_then(|secrets| git::SecretSource::secrets_manager(id, secrets.clone()))
                .ok_or_else(|| {
                    Error::Internal(format!(
                        "secret `{id}` cannot be read: no Secrets Manager client in this context"
                    ))
                }),
        }
    };
    match auth {
        GitAuth::None => Ok(git::Auth::None),
        GitAuth::Token {
            token: Some(token), ..
        } => Ok(git::Auth::Token(token.clone())),
        GitAuth::Token {
            token: None,
            token_secret: Some(secret_id),
        } => Ok(git::Auth::TokenFrom(source(
            &SecretSetting::SecretsManager(secret_id.clone()),
        )?)),
        GitAuth::Token {
            token: None,
            token_secret: None,
        } => Ok(git::Auth::None),
        GitAuth::Ssh {
            key,
            known_hosts,
            program,
        } => Ok(git::Auth::Ssh(git::SshAuth {
            key: key.as_ref().map(source).transpose()?,
            known_hosts: known_hosts.clone(),
            program: program.clone(),
        })),
        GitAuth::GitHubApp {
            app_id,
            installation_id,
            private_key,
            api_url,
        } => Ok(git::Auth::GitHubApp(std::sync::Arc::new(
            git::GitHubApp::new(
                *app_id,
                *installation_id,
                api_url.clone(),
                source(private_key)?,
                git::NetworkOptions::default().connect_timeout * 2,
            ),
        ))),
    }
}

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
    let loaded = crate::parallel::load_manifest(&snapshot.files, limits);
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
        desired: loaded
            .documents
            .into_iter()
            .map(|document| document.resource)
            .collect(),
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

/// Applied runs between two history prunes: pruning scans the run table, so it runs every
/// tenth generation rather than after every run (a target then holds at most its limit plus
/// the runs since the last prune).
pub const PRUNE_EVERY: i64 = 10;

/// Deletes finished runs beyond `limit` (default 100) per target every [`PRUNE_EVERY`]
/// generations. Revisions, the audit trail, are never pruned; nor is a target's last applied
/// run. A failure is logged, never returned: retention must not fail a sync.
pub(crate) async fn prune_history(store: &Store, generation: i64, limit: Option<u32>) {
    if generation % PRUNE_EVERY != 0 {
        return;
    }
    let keep = i64::from(limit.unwrap_or(crate::config::DEFAULT_HISTORY_LIMIT));
    match store.prune_history(keep).await {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(deleted, keep, "old sync runs pruned"),
        Err(error) => tracing::warn!(error = %error, "cannot prune sync run history"),
    }
}
