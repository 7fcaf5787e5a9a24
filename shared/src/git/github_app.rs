//! GitHub App authentication: the app's private key signs a short JWT (RS256), the JWT buys an
//! installation token (`POST {api_url}/app/installations/{id}/access_tokens`), and the token is
//! sent to the Git host as the basic-auth password of `x-access-token`.
//!
//! Installation tokens live an hour; one is kept per process (per API, app and installation)
//! until [`REFRESH_MARGIN`] before it expires, and dropped when the Git host refuses it. When
//! GitHub refuses the JWT, the key is read again once (it may have been rotated).
//!
//! No message, log line or `Debug` output ever holds the key, the JWT or a token: errors name
//! the API, the app and installation ids and what to check.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::credentials::SecretSource;

/// A token is replaced this long before GitHub says it expires, so it never expires mid-fetch.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// How far `iat` is set in the past, for clocks that run ahead of GitHub's (GitHub's advice).
pub const JWT_BACKDATE: Duration = Duration::from_secs(60);

/// How long a JWT is valid after `iat`: GitHub refuses more than ten minutes.
pub const JWT_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// The claims of the JWT GitHub asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issued at, backdated by [`JWT_BACKDATE`].
    pub iat: i64,
    /// Expiry, [`JWT_LIFETIME`] after `iat`.
    pub exp: i64,
    /// The app id.
    pub iss: String,
}

impl Claims {
    /// The claims of a JWT for `app_id` signed at `now` (seconds since the epoch).
    pub fn new(app_id: u64, now: i64) -> Claims {
        let iat = now - JWT_BACKDATE.as_secs() as i64;
        Claims {
            iat,
            exp: iat + JWT_LIFETIME.as_secs() as i64,
            iss: app_id.to_string(),
        }
    }
}

/// Why no installation token could be had. The message is secret-free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHubAppError {
    pub message: String,
    pub retryable: bool,
}

impl fmt::Display for GitHubAppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for GitHubAppError {}

/// One GitHub App installation. `Debug` shows the ids, the API and where the key comes from.
pub struct GitHubApp {
    app_id: u64,
    installation_id: u64,
    api_url: String,
    key: SecretSource,
    timeout: Duration,
}

impl fmt::Debug for GitHubApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubApp")
            .field("app_id", &self.app_id)
            .field("installation_id", &self.installation_id)
            .field("api_url", &self.api_url)
            .field("key", &self.key)
            .finish()
    }
}

/// An installation token and when GitHub says it expires.
#[derive(Clone)]
struct InstallationToken {
    token: SecretString,
    expires_at: DateTime<Utc>,
}

impl InstallationToken {
    fn is_fresh(&self, now: DateTime<Utc>) -> bool {
        let margin = chrono::Duration::seconds(REFRESH_MARGIN.as_secs() as i64);
        now + margin < self.expires_at
    }
}

type TokenKey = (String, u64, u64);

/// The process's installation tokens: `git_auth` builds a new [`GitHubApp`] per operation, the
/// tokens outlive it (warm Lambda invocations reuse them).
fn tokens() -> std::sync::MutexGuard<'static, HashMap<TokenKey, InstallationToken>> {
    static TOKENS: OnceLock<Mutex<HashMap<TokenKey, InstallationToken>>> = OnceLock::new();
    TOKENS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

#[derive(Deserialize)]
struct AccessTokenResponse {
    token: String,
    expires_at: DateTime<Utc>,
}

impl GitHubApp {
    /// `api_url` without a trailing slash (`https://api.github.com`, or
    /// `https://HOST/api/v3` for GitHub Enterprise Server); `timeout` bounds each API request.
    pub fn new(
        app_id: u64,
        installation_id: u64,
        api_url: impl Into<String>,
        key: SecretSource,
        timeout: Duration,
    ) -> GitHubApp {
        GitHubApp {
            app_id,
            installation_id,
            api_url: api_url.into().trim_end_matches('/').to_string(),
            key,
            timeout,
        }
    }

    pub fn app_id(&self) -> u64 {
        self.app_id
    }

    pub fn installation_id(&self) -> u64 {
        self.installation_id
    }

    /// An installation token: the cached one while it has more than [`REFRESH_MARGIN`] left,
    /// else a new one. Blocking.
    pub fn token(&self) -> Result<SecretString, GitHubAppError> {
        if let Some(cached) = tokens().get(&self.cache_key())
            && cached.is_fresh(Utc::now())
        {
            return Ok(cached.token.clone());
        }
        let minted = match self.mint() {
            // GitHub refused the JWT: the key may have been rotated since it was read.
            Err(Refused::Jwt(_)) if self.key.invalidate() => self.mint(),
            other => other,
        }
        .map_err(Refused::into_error)?;
        tokens().insert(self.cache_key(), minted.clone());
        Ok(minted.token)
    }

    /// Drops the cached token (the Git host refused it): the next [`token`](Self::token) mints.
    pub fn forget_token(&self) {
        tokens().remove(&self.cache_key());
    }

    fn cache_key(&self) -> TokenKey {
        (self.api_url.clone(), self.app_id, self.installation_id)
    }

    fn endpoint(&self) -> String {
        format!(
            "{}/app/installations/{}/access_tokens",
            self.api_url, self.installation_id
        )
    }

    fn mint(&self) -> Result<InstallationToken, Refused> {
        let plain_http_elsewhere = reqwest::Url::parse(&self.api_url).map_or(true, |url| {
            url.scheme() != "https" && !super::location::is_loopback(url.host_str())
        });
        if plain_http_elsewhere {
            return Err(Refused::Other(self.failure(
                "the API URL must be https (plain http is accepted on loopback only)",
            )));
        }
        let key = self.key.read().map_err(|reason| {
            Refused::Other(GitHubAppError {
                message: format!(
                    "cannot read the private key of GitHub App {}: {reason}",
                    self.app_id
                ),
                retryable: true,
            })
        })?;
        let jwt = sign_jwt(self.app_id, &key, Utc::now().timestamp()).map_err(|message| {
            Refused::Other(GitHubAppError {
                message: format!("{message} (from {})", self.key.describe()),
                retryable: false,
            })
        })?;
        drop(key);
        let client = reqwest::blocking::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(15)))
            .user_agent(concat!("ritmo-gitops/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| {
                Refused::Other(self.failure(&format!("cannot build a client: {err}")))
            })?;
        let response = client
            .post(self.endpoint())
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .bearer_auth(jwt.expose_secret())
            .send()
            .map_err(|err| {
                // reqwest's message names the URL (no secret in it) and the cause.
                let reason = if err.is_timeout() {
                    format!("timed out after {}s", self.timeout.as_secs())
                } else {
                    crate::telemetry::error_chain(&err)
                };
                Refused::Other(GitHubAppError {
                    message: format!(
                        "cannot reach the GitHub API at `{}` for app {}: {reason}",
                        self.api_url, self.app_id
                    ),
                    retryable: true,
                })
            })?;
        let status = response.status();
        match status.as_u16() {
            200 | 201 => {}
            401 => {
                return Err(Refused::Jwt(self.failure(
                    "GitHub refused the app's JWT (401): check that the private key belongs to \
                     this app and that the machine's clock is right",
                )));
            }
            403 => {
                return Err(Refused::Other(self.failure(
                    "GitHub refused to issue an installation token (403): check the app's \
                     permissions (contents: read) and that the installation is not suspended",
                )));
            }
            404 => {
                return Err(Refused::Other(self.failure(
                    "installation not found (404): check the installation id and that the app \
                     is installed on the repository's owner",
                )));
            }
            code => {
                let mut failure = self.failure(&format!("the GitHub API answered {code}"));
                failure.retryable = status.is_server_error() || code == 429;
                return Err(Refused::Other(failure));
            }
        }
        // The body holds the token: it never reaches a message, only its shape does.
        let body = response.bytes().map_err(|err| {
            Refused::Other(GitHubAppError {
                message: format!(
                    "reading the installation token of GitHub App {} failed: {}",
                    self.app_id,
                    crate::telemetry::error_chain(&err)
                ),
                retryable: true,
            })
        })?;
        let parsed: AccessTokenResponse = serde_json::from_slice(&body).map_err(|_| {
            Refused::Other(self.failure(
                "the GitHub API's answer has no `token` and `expires_at`: is `api_url` the \
                 REST API (`https://api.github.com`, or `https://HOST/api/v3` on GitHub \
                 Enterprise Server)?",
            ))
        })?;
        Ok(InstallationToken {
            token: SecretString::from(parsed.token),
            expires_at: parsed.expires_at,
        })
    }

    fn failure(&self, what: &str) -> GitHubAppError {
        GitHubAppError {
            message: format!(
                "GitHub App {} installation {} at `{}`: {what}",
                self.app_id, self.installation_id, self.api_url
            ),
            retryable: false,
        }
    }
}

/// Whether GitHub refused the JWT itself (worth reading the key again) or something else.
enum Refused {
    Jwt(GitHubAppError),
    Other(GitHubAppError),
}

impl Refused {
    fn into_error(self) -> GitHubAppError {
        match self {
            Refused::Jwt(err) | Refused::Other(err) => err,
        }
    }
}

/// An RS256 JWT for `app_id` at `now` (seconds since the epoch), signed with `key_pem` (PKCS#1
/// `RSA PRIVATE KEY`, as GitHub hands it out, or PKCS#8 `PRIVATE KEY`). The error never holds
/// key material.
pub fn sign_jwt(app_id: u64, key_pem: &SecretString, now: i64) -> Result<SecretString, String> {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    // Only one backend is compiled in; installing it explicitly keeps jsonwebtoken from ever
    // having to guess (it panics when two are linked and none was chosen).
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let key =
        EncodingKey::from_rsa_pem(key_pem.expose_secret().trim().as_bytes()).map_err(|_| {
            format!(
                "the private key of GitHub App {app_id} is not an RSA private key in PEM format"
            )
        })?;
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &Claims::new(app_id, now),
        &key,
    )
    .map(SecretString::from)
    .map_err(|_| format!("cannot sign a JWT with the private key of GitHub App {app_id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_backdated_a_minute_expire_within_ten_and_name_the_app() {
        let now = 1_700_000_000;

        let claims = Claims::new(123_456, now);

        assert_eq!(claims.iat, now - 60);
        assert!(claims.exp - claims.iat <= 600, "{claims:?}");
        assert!(claims.exp > now, "{claims:?}");
        assert_eq!(claims.iss, "123456");
    }

    #[test]
    fn a_token_is_reused_until_five_minutes_before_it_expires() {
        let now = Utc::now();
        let token = |minutes_left: i64| InstallationToken {
            token: SecretString::from("ghs_x"),
            expires_at: now + chrono::Duration::minutes(minutes_left),
        };

        assert!(token(60).is_fresh(now));
        assert!(token(6).is_fresh(now));
        assert!(!token(5).is_fresh(now));
        assert!(!token(-1).is_fresh(now));
    }

    #[test]
    fn a_cached_token_is_served_without_the_network_and_forgetting_it_drops_it() {
        // Port 9 on loopback: nothing answers, so a mint would fail.
        let app = GitHubApp::new(
            4242,
            77,
            "http://127.0.0.1:9",
            SecretSource::Value(SecretString::from("not a key")),
            Duration::from_secs(1),
        );
        tokens().insert(
            app.cache_key(),
            InstallationToken {
                token: SecretString::from("ghs_cached"),
                expires_at: Utc::now() + chrono::Duration::hours(1),
            },
        );

        let served = app.token().unwrap();
        app.forget_token();
        let after = app.token().unwrap_err();

        assert_eq!(served.expose_secret(), "ghs_cached");
        assert!(after.message.contains("4242"), "{after}");
        assert!(!after.message.contains("not a key"), "{after}");
    }

    #[test]
    fn a_key_that_is_not_pem_gives_an_error_without_the_key() {
        let key = SecretString::from("-----BEGIN RSA PRIVATE KEY-----\nplanted\n");

        let err = sign_jwt(1, &key, 1_700_000_000).unwrap_err();

        assert!(err.contains("GitHub App 1"), "{err}");
        assert!(!err.contains("planted"), "{err}");
    }
}
