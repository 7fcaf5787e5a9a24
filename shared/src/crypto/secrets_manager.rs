//! Secrets Manager: the service's own secrets (Git token, SSH key, webhook secret, master key,
//! database password), cached per container, and plan-time existence checks of `secret_ref`s.
//!
//! Values are cached for a TTL so a warm Lambda does not call AWS per request, and
//! [`SecretsManager::invalidate`] drops one after an authentication failure so a rotated
//! secret is picked up without a redeploy. Existence checks use `DescribeSecret`, never
//! `GetSecretValue`: planning a `secret_ref` must not read the secret.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use secrecy::{ExposeSecret, SecretString};

use super::error::aws_failure;
use super::{CryptoError, MasterKeyring};

/// How long a fetched value is reused before it is read again.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);

const NOT_FOUND: &str = "ResourceNotFoundException";

/// A Secrets Manager client with a per-container cache of string secrets. Cloning shares
/// the cache. `Debug` shows the TTL and how many values are cached, never a value.
#[derive(Clone)]
pub struct SecretsManager {
    client: Client,
    ttl: Duration,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
}

struct Cached {
    value: SecretString,
    fetched: Instant,
}

impl fmt::Debug for SecretsManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("SecretsManager")
            .field("ttl", &self.ttl)
            .field("cached", &cached)
            .finish_non_exhaustive()
    }
}

impl SecretsManager {
    /// A cache over `client` with the [`DEFAULT_TTL`].
    pub fn new(client: Client) -> SecretsManager {
        SecretsManager::with_ttl(client, DEFAULT_TTL)
    }

    /// A cache over `client` keeping values for `ttl` (`Duration::ZERO`: never reuse).
    pub fn with_ttl(client: Client, ttl: Duration) -> SecretsManager {
        SecretsManager {
            client,
            ttl,
            cache: Arc::default(),
        }
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The string value of secret `id` (name or ARN), from the cache when fetched less than
    /// the TTL ago.
    pub async fn get_string(&self, id: &str) -> Result<SecretString, CryptoError> {
        if let Some(value) = self.cached(id) {
            return Ok(value);
        }
        let mut out = self
            .client
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| sm_error("GetSecretValue", id, &e))?;
        let value = SecretString::from(
            out.secret_string
                .take()
                .ok_or_else(|| CryptoError::SecretNotString { id: id.to_owned() })?,
        );
        self.lock().insert(
            id.to_owned(),
            Cached {
                value: value.clone(),
                fetched: Instant::now(),
            },
        );
        Ok(value)
    }

    /// Forgets the cached value of `id` (after an authentication failure with it), so the
    /// next [`get_string`](Self::get_string) reads it again.
    pub fn invalidate(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Forgets every cached value.
    pub fn invalidate_all(&self) {
        self.lock().clear();
    }

    /// Whether secret `id` exists and is not scheduled for deletion, by `DescribeSecret`
    /// (the value is never read).
    pub async fn exists(&self, id: &str) -> Result<bool, CryptoError> {
        match self.client.describe_secret().secret_id(id).send().await {
            Ok(out) => Ok(out.deleted_date.is_none()),
            Err(e) if e.code() == Some(NOT_FOUND) => Ok(false),
            Err(e) => Err(sm_error("DescribeSecret", id, &e)),
        }
    }

    /// The master keyring stored in secret `id` (any text form [`MasterKeyring::parse`]
    /// takes, typically the JSON object).
    pub async fn master_keyring(&self, id: &str) -> Result<MasterKeyring, CryptoError> {
        let text = self.get_string(id).await?;
        MasterKeyring::parse(text.expose_secret())
    }

    fn cached(&self, id: &str) -> Option<SecretString> {
        let cache = self.lock();
        let entry = cache.get(id)?;
        (entry.fetched.elapsed() < self.ttl).then(|| entry.value.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        // A panic while holding the lock cannot leave the map half-updated: keep using it.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn sm_error<E>(operation: &'static str, id: &str, err: &SdkError<E, HttpResponse>) -> CryptoError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if err.code() == Some(NOT_FOUND) {
        return CryptoError::SecretNotFound { id: id.to_owned() };
    }
    let failure = aws_failure(err);
    CryptoError::SecretsManager {
        operation,
        id: id.to_owned(),
        detail: failure.detail,
        retryable: failure.retryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offline_client() -> Client {
        let config = aws_sdk_secretsmanager::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
            .build();
        Client::from_conf(config)
    }

    #[test]
    fn debug_shows_the_ttl_and_count_but_no_value() {
        let secrets = SecretsManager::with_ttl(offline_client(), Duration::from_secs(60));
        secrets.lock().insert(
            "git-token".to_owned(),
            Cached {
                value: SecretString::from("ghp_plantedvalue"),
                fetched: Instant::now(),
            },
        );

        let output = format!("{secrets:?}");

        assert_eq!(output, "SecretsManager { ttl: 60s, cached: 1, .. }");
    }

    #[test]
    fn a_zero_ttl_never_serves_from_the_cache_and_invalidate_forgets() {
        let never = SecretsManager::with_ttl(offline_client(), Duration::ZERO);
        let always = SecretsManager::new(offline_client());
        for secrets in [&never, &always] {
            secrets.lock().insert(
                "id".to_owned(),
                Cached {
                    value: SecretString::from("v"),
                    fetched: Instant::now(),
                },
            );
        }

        let from_never = never.cached("id");
        let from_always = always.cached("id");
        always.invalidate("id");

        assert!(from_never.is_none());
        assert_eq!(from_always.unwrap().expose_secret(), "v");
        assert!(always.cached("id").is_none());
    }
}
