//! Where the git source's own secrets come from (a token, a GitHub App private key, an ssh
//! key): a value, a file, or a Secrets Manager secret read through the process-wide cache.
//!
//! The git code is blocking (gix), Secrets Manager is async: a read from a blocking thread is
//! run on the runtime that built the source, from a short-lived helper thread so that it is
//! safe from any thread. A source can be invalidated after the Git host refused what it gave,
//! so a rotated secret is picked up without a restart.
//!
//! Does not decide how a secret is used (that is `remote`, `github_app`, `ssh`).

use std::fmt;
use std::path::PathBuf;

use secrecy::SecretString;

use crate::crypto::SecretsManager;

/// One secret the git source authenticates with. `Debug` never shows a value.
#[derive(Clone)]
pub enum SecretSource {
    /// The value itself (from the environment, for local use).
    Value(SecretString),
    /// A file, read every time (a mounted secret may be rotated in place).
    File(PathBuf),
    /// A Secrets Manager secret (name or ARN), cached by `secrets` for its TTL.
    SecretsManager {
        id: String,
        secrets: SecretsManager,
        runtime: tokio::runtime::Handle,
    },
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl SecretSource {
    /// A Secrets Manager secret read with `secrets` on the current Tokio runtime. `None` when
    /// called outside a runtime.
    pub fn secrets_manager(id: impl Into<String>, secrets: SecretsManager) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        Some(SecretSource::SecretsManager {
            id: id.into(),
            secrets,
            runtime,
        })
    }

    /// Where the value comes from, for messages: never the value.
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Value(_) => "the configured value".to_string(),
            SecretSource::File(path) => format!("file `{}`", path.display()),
            SecretSource::SecretsManager { id, .. } => format!("Secrets Manager secret `{id}`"),
        }
    }

    /// The current value. Blocking. The error is secret-free and names the source.
    pub fn read(&self) -> Result<SecretString, String> {
        match self {
            SecretSource::Value(value) => Ok(value.clone()),
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(SecretString::from)
                .map_err(|err| format!("cannot read {}: {err}", self.describe())),
            SecretSource::SecretsManager {
                id,
                secrets,
                runtime,
            } => {
                // `Handle::block_on` panics on a runtime worker thread; a fresh thread never is one.
                let read = std::thread::scope(|scope| {
                    scope
                        .spawn(|| runtime.block_on(secrets.get_string(id)))
                        .join()
                });
                match read {
                    Ok(Ok(value)) => Ok(value),
                    Ok(Err(err)) => Err(err.to_string()),
                    Err(_) => Err(format!("reading {} stopped unexpectedly", self.describe())),
                }
            }
        }
    }

    /// Forgets a cached value after the Git host refused it. Returns whether reading again
    /// may give a different value (a fixed value never does).
    pub fn invalidate(&self) -> bool {
        match self {
            SecretSource::Value(_) => false,
            SecretSource::File(_) => true,
            SecretSource::SecretsManager { id, secrets, .. } => {
                secrets.invalidate(id);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn a_source_describes_where_it_reads_and_never_the_value() {
        let value = SecretSource::Value(SecretString::from("ghp_planted"));
        let file = SecretSource::File(PathBuf::from("/etc/ritmo/key"));

        let shown = format!("{value:?} {file:?} {}", value.describe());

        assert!(!shown.contains("ghp_planted"), "{shown}");
        assert!(shown.contains("/etc/ritmo/key"), "{shown}");
    }

    #[test]
    fn a_file_is_read_every_time_and_a_value_cannot_be_refreshed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "v1").unwrap();
        let file = SecretSource::File(path.clone());
        let value = SecretSource::Value(SecretString::from("fixed"));

        let first = file.read().unwrap();
        std::fs::write(&path, "v2").unwrap();
        let second = file.read().unwrap();

        assert_eq!(first.expose_secret(), "v1");
        assert_eq!(second.expose_secret(), "v2");
        assert!(file.invalidate());
        assert!(!value.invalidate());
    }

    #[test]
    fn a_missing_file_names_the_file() {
        let source = SecretSource::File(PathBuf::from("/nonexistent/ritmo-key"));

        let err = source.read().unwrap_err();

        assert!(err.contains("/nonexistent/ritmo-key"), "{err}");
    }
}
