//! Secrets Manager: the service's own secrets (Git token, SSH key, webhook secret, master key,
//! database password), cached per container, and plan-time existence checks of `secret_ref`s.
//!
//! Values are cached for a TTL so a warm Lambda does not call AWS per request, and
//! [`SecretsManager::invalidate`] drops one after an authentication failure so a rotated
//! secret is picked up without a redeploy. Existence checks use `DescribeSecret`, never
//! `GetSecretValue`: planning a `secret_ref` must not read the secret.
//!
//! Secrets checked against what a caller sends (the webhook secret) are read as a pair: the
//! `AWSCURRENT` and `AWSPREVIOUS` versions ([`SecretsManager::current_and_previous`]), so a
//! sender still signing with the old value keeps working while a rotation propagates. A value
//! the caller cannot match may mean a rotation this container has not seen yet;
//! [`SecretsManager::refresh_current_and_previous`] re-reads past the cache, but at most once
//! per [`DEFAULT_REFRESH_INTERVAL`] per secret and process, so a stream of forged requests
//! cannot turn into a stream of `GetSecretValue` calls (each one billed and rate-limited).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The shortest time between two reads past the cache of one secret that a caller's
/// mismatch asks for ([`SecretsManager::refresh_current_and_previous`]).
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// The staging label of the version in use.
pub const AWSCURRENT: &str = "AWSCURRENT";
/// The staging label of the version in use before the last rotation.
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";

const NOT_FOUND: &str = "ResourceNotFoundException";

/// A Secrets Manager client with a per-container cache of string secrets. Cloning shares
/// the cache, the refresh limit and the call counter. `Debug` shows the TTL and how many
/// values are cached, never a value.
#[derive(Clone)]
pub struct SecretsManager {
    client: Client,
    ttl: Duration,
    refresh_interval: Duration,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
    pairs: Arc<Mutex<HashMap<String, CachedPair>>>,
    /// When each secret was last read past the cache on a caller's request.
    refreshed: Arc<Mutex<HashMap<String, Instant>>>,
    reads: Arc<AtomicU64>,
}

struct Cached {
    value: SecretString,
    fetched: Instant,
}

struct CachedPair {
    current: SecretString,
    /// `None`: the secret has no `AWSPREVIOUS` version (never rotated).
    previous: Option<SecretString>,
    fetched: Instant,
}

impl CachedPair {
    fn values(&self) -> Vec<SecretString> {
        std::iter::once(self.current.clone())
            .chain(self.previous.clone())
            .collect()
    }
}

impl fmt::Debug for SecretsManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = lock(&self.cache).len() + lock(&self.pairs).len();
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
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            cache: Arc::default(),
            pairs: Arc::default(),
            refreshed: Arc::default(),
            reads: Arc::default(),
        }
    }

    /// The same cache, allowing a read past it on a caller's mismatch at most once per
    /// `interval` per secret (default [`DEFAULT_REFRESH_INTERVAL`]).
    pub fn with_refresh_interval(mut self, interval: Duration) -> SecretsManager {
        self.refresh_interval = interval;
        self
    }

    /// How many `GetSecretValue` calls this cache (and its clones) has made: what the cache
    /// and the refresh limit are there to keep low, and what tests count.
    pub fn get_secret_value_calls(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
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
        let value = self
            .read(id, None)
            .await?
            .ok_or_else(|| CryptoError::SecretNotFound { id: id.to_owned() })?;
        self.lock().insert(
            id.to_owned(),
            Cached {
                value: value.clone(),
                fetched: Instant::now(),
            },
        );
        Ok(value)
    }

    /// The `AWSCURRENT` value of secret `id` followed by its `AWSPREVIOUS` value when it has
    /// one, from the cache when read less than the TTL ago: every value a caller may
    /// legitimately be using during a rotation.
    pub async fn current_and_previous(&self, id: &str) -> Result<Vec<SecretString>, CryptoError> {
        let cached = {
            let pairs = lock(&self.pairs);
            pairs
                .get(id)
                .filter(|pair| pair.fetched.elapsed() < self.ttl)
                .map(CachedPair::values)
        };
        match cached {
            Some(values) => Ok(values),
            None => self.read_pair(id).await,
        }
    }

    /// Reads both versions of `id` again past the cache, because a caller presented a value
    /// matching neither (a rotation this container has not seen yet, or a forgery). `None`
    /// when `id` was already read this way less than the refresh interval ago: the answer
    /// would almost surely be the same, and forged requests must not drive AWS calls.
    pub async fn refresh_current_and_previous(
        &self,
        id: &str,
    ) -> Result<Option<Vec<SecretString>>, CryptoError> {
        {
            // Claimed before the read, under the lock: of a burst of concurrent mismatches only
            // the first reads.
            let mut refreshed = lock(&self.refreshed);
            let now = Instant::now();
            if let Some(last) = refreshed.get(id)
                && now.duration_since(*last) < self.refresh_interval
            {
                return Ok(None);
            }
            refreshed.insert(id.to_owned(), now);
        }
        self.read_pair(id).await.map(Some)
    }

    async fn read_pair(&self, id: &str) -> Result<Vec<SecretString>, CryptoError> {
        let current = self
            .read(id, Some(AWSCURRENT))
            .await?
            .ok_or_else(|| CryptoError::SecretNotFound { id: id.to_owned() })?;
        let previous = self.read(id, Some(AWSPREVIOUS)).await?;
        let pair = CachedPair {
            current,
            previous,
            fetched: Instant::now(),
        };
        let values = pair.values();
        lock(&self.pairs).insert(id.to_owned(), pair);
        Ok(values)
    }

    /// One `GetSecretValue` of `id` at `stage` (the default: `AWSCURRENT`). `Ok(None)` when
    /// a stage is asked for and no version carries it; a missing secret is an error.
    async fn read(
        &self,
        id: &str,
        stage: Option<&str>,
    ) -> Result<Option<SecretString>, CryptoError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let mut out = match self
            .client
            .get_secret_value()
            .secret_id(id)
            .set_version_stage(stage.map(str::to_owned))
            .send()
            .await
        {
            Ok(out) => out,
            // Secrets Manager answers the same code for a missing secret and a missing stage:
            // only the latter is expected, and only when a stage other than current is asked.
            Err(e) if stage.is_some_and(|s| s != AWSCURRENT) && e.code() == Some(NOT_FOUND) => {
                return Ok(None);
            }
            Err(e) => return Err(sm_error("GetSecretValue", id, &e)),
        };
        out.secret_string
            .take()
            .map(|value| Some(SecretString::from(value)))
            .ok_or_else(|| CryptoError::SecretNotString { id: id.to_owned() })
    }

    /// Forgets the cached values of `id` (after an authentication failure with it), so the
    /// next [`get_string`](Self::get_string) or
    /// [`current_and_previous`](Self::current_and_previous) reads it again.
    pub fn invalidate(&self, id: &str) {
        self.lock().remove(id);
        lock(&self.pairs).remove(id);
    }

    /// Forgets every cached value.
    pub fn invalidate_all(&self) {
        self.lock().clear();
        lock(&self.pairs).clear();
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
        lock(&self.cache)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a map half-updated: keep using it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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

    #[tokio::test]
    async fn a_mismatch_reads_again_at_most_once_per_interval() {
        // No credentials: every call fails at once, which is enough to count them.
        let secrets = SecretsManager::new(offline_client());
        let never_limited =
            SecretsManager::new(offline_client()).with_refresh_interval(Duration::ZERO);

        let first = secrets.refresh_current_and_previous("webhook").await;
        let second = secrets.refresh_current_and_previous("webhook").await;
        let other = secrets.refresh_current_and_previous("other").await;
        for _ in 0..3 {
            let _ = never_limited.refresh_current_and_previous("webhook").await;
        }

        assert!(first.is_err(), "the first mismatch reads (and fails here)");
        assert!(
            matches!(second, Ok(None)),
            "the second within the interval does not"
        );
        assert!(other.is_err(), "the limit is per secret");
        assert_eq!(secrets.get_secret_value_calls(), 2);
        assert_eq!(never_limited.get_secret_value_calls(), 3);
    }
}
