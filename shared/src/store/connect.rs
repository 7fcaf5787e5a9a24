//! Connecting to PostgreSQL: where the credentials come from, TLS, and a retry with fresh
//! credentials after an authentication failure.
//!
//! # Credentials
//! Three layers, later ones winning field by field:
//! 1. `DATABASE_URL` (URL or key-value form), when set;
//! 2. `DATABASE_SECRET_ARN`: a Secrets Manager secret holding JSON in the shape RDS manages
//!    (`username`, `password`, and optionally `host`, `port`, `dbname`), read through
//!    [`SecretsManager`] and its per-container cache;
//! 3. `DATABASE_HOST`, `DATABASE_PORT`, `DATABASE_NAME`, `DATABASE_USER` (an RDS-managed
//!    master secret holds only the user name and password).
//!
//! When the server refuses the credentials (SQLSTATE class 28) and they came from a secret,
//! the cached secret is dropped and the connection tried once more with a fresh read: a
//! rotated password is picked up without a redeploy.
//!
//! # TLS
//! rustls (aws-lc-rs) with libpq's `sslmode` meanings, taken from `DATABASE_SSLMODE`, else the
//! URL's `sslmode`, else the default:
//! - `disable`: no TLS;
//! - `prefer`: TLS when the server offers it, plain otherwise; `require`: TLS or fail. Like
//!   libpq, neither checks the certificate unless a CA bundle is configured, in which case
//!   the chain is checked as with `verify-ca`. On a Unix socket or a loopback address `prefer`
//!   starts plain and uses TLS only when the server refuses a plain start (see
//!   `stays_on_this_machine` for why that is safe);
//! - `verify-ca`: the chain must lead to the CA bundle (`DATABASE_CA_FILE` or the URL's
//!   `sslrootcert`; the system roots without one); `verify-full`: and the host name must match.
//!
//! The default is `verify-full` when a CA bundle is configured (you gave us the CA: we check
//! everything), `require` inside AWS Lambda (the password crosses a network: never in
//! clear; RDS CAs are not public roots, so without a bundle the chain cannot be checked), and
//! `prefer` elsewhere (a developer's local server). RDS certificates chain to Amazon's RDS CAs:
//! download the region's bundle and point `DATABASE_CA_FILE` at it.
//!
//! Nothing here ever puts a password in an error, a log line or a `Debug` output.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroize;

use super::owners::OwnedRuns;
use super::{ConnectError, StatementCache, Store, StoreError};
use crate::config::{Settings, SslMode};
use crate::crypto::SecretsManager;

/// Where and how to connect: see the module documentation for how the layers combine.
#[derive(Debug, Clone, Default)]
pub struct DatabaseSettings {
    /// `DATABASE_URL`; may hold a password, hence secret.
    pub url: Option<SecretString>,
    /// `DATABASE_SECRET_ARN`: name or ARN of the credentials secret.
    pub secret_id: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub dbname: Option<String>,
    pub user: Option<String>,
    /// PEM file of the CA certificates to trust (`DATABASE_CA_FILE`).
    pub ca_file: Option<PathBuf>,
    /// `DATABASE_SSLMODE`, which beats the URL's `sslmode`.
    pub sslmode: Option<SslMode>,
    /// Running inside AWS Lambda: the default sslmode is `require`, not `prefer`.
    pub in_lambda: bool,
}

impl DatabaseSettings {
    /// The settings the bootstrap configuration and environment give.
    pub fn from_settings(settings: &Settings) -> DatabaseSettings {
        DatabaseSettings {
            url: settings.database_url.clone(),
            secret_id: settings.database_secret_id.clone(),
            host: settings.database_host.clone(),
            port: settings.database_port,
            dbname: settings.database_name.clone(),
            user: settings.database_user.clone(),
            ca_file: settings.database_ca_file.clone(),
            sslmode: settings.database_sslmode,
            in_lambda: settings.in_lambda,
        }
    }

    /// Just a URL (what [`Store::connect`] takes).
    pub fn from_url(url: &str) -> DatabaseSettings {
        DatabaseSettings {
            url: Some(SecretString::from(url.to_owned())),
            ..DatabaseSettings::default()
        }
    }
}

/// The credentials and address read from the database secret. `Debug` redacts the password.
#[derive(Default, serde::Deserialize)]
pub struct DatabaseSecret {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default, deserialize_with = "port_number_or_text")]
    pub port: Option<u16>,
    #[serde(default, alias = "database")]
    pub dbname: Option<String>,
}

impl fmt::Debug for DatabaseSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSecret")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .finish()
    }
}

impl Drop for DatabaseSecret {
    fn drop(&mut self) {
        if let Some(password) = &mut self.password {
            password.zeroize();
        }
    }
}

impl DatabaseSecret {
    /// Parses the secret's JSON. Errors say where and what kind of problem, never the text
    /// (serde_json quotes offending values, which here could be the password).
    pub fn parse(id: &str, text: &str) -> Result<DatabaseSecret, ConnectError> {
        serde_json::from_str(text).map_err(|e| ConnectError::SecretFormat {
            id: id.to_owned(),
            reason: format!(
                "expected a JSON object with `username` and `password` (JSON {} error at line {} column {})",
                match e.classify() {
                    serde_json::error::Category::Io => "io",
                    serde_json::error::Category::Syntax => "syntax",
                    serde_json::error::Category::Data => "data",
                    serde_json::error::Category::Eof => "unexpected end",
                },
                e.line(),
                e.column()
            ),
        })
    }
}

fn port_number_or_text<'de, D>(deserializer: D) -> Result<Option<u16>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Port {
        Number(u16),
        Text(String),
    }
    match Option::<Port>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Port::Number(port)) => Ok(Some(port)),
        Some(Port::Text(text)) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom("`port` is not a port number")),
    }
}

use serde::Deserialize as _;

/// The `sslmode` and `sslrootcert` parameters of a connection string, taken out (tokio-postgres
/// knows neither `verify-ca`/`verify-full` nor `sslrootcert`), and the rest.
#[derive(Debug, PartialEq, Eq)]
struct TlsParams {
    rest: String,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

fn take_tls_params(url: &str) -> TlsParams {
    let mut sslmode = None;
    let mut sslrootcert = None;
    let mut take = |key: &str, value: &str| match key {
        "sslmode" => {
            sslmode = Some(value.to_owned());
            true
        }
        "sslrootcert" => {
            sslrootcert = Some(value.to_owned());
            true
        }
        _ => false,
    };
    let rest = if url.contains("://") {
        match url.split_once('?') {
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                        !take(key, value)
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => url.to_owned(),
        }
    } else {
        // Key-value form: `sslmode` and `sslrootcert` values never need quoting in practice;
        // a quoted or spaced one is left for tokio-postgres to judge.
        url.split_whitespace()
            .filter(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                value.is_empty() || !take(key, value)
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    TlsParams {
        rest,
        sslmode,
        sslrootcert,
    }
}

/// A ready-to-use connection configuration: tokio-postgres's config (password included),
/// the TLS mode, the CA bundle, and a password-free description for messages.
struct Prepared {
    config: tokio_postgres::Config,
    sslmode: SslMode,
    ca_file: Option<PathBuf>,
    described: String,
}

/// Combines the layers into one configuration. `secret` is the parsed database secret, when
/// one is configured.
fn prepare(
    settings: &DatabaseSettings,
    secret: Option<&DatabaseSecret>,
) -> Result<Prepared, StoreError> {
    let (mut config, url_sslmode, url_ca, url_text) = match &settings.url {
        Some(url) => {
            let params = take_tls_params(url.expose_secret());
            let config: tokio_postgres::Config =
                params
                    .rest
                    .parse()
                    .map_err(|source| StoreError::InvalidUrl {
                        url: super::redact_url(&params.rest),
                        source,
                    })?;
            (
                config,
                params.sslmode,
                params.sslrootcert,
                Some(super::redact_url(&params.rest)),
            )
        }
        None if secret.is_some() || settings.host.is_some() => {
            (tokio_postgres::Config::new(), None, None, None)
        }
        None => return Err(ConnectError::NoDatabase.into()),
    };
    if let Some(secret) = secret {
        if let Some(user) = &secret.username {
            config.user(user);
        }
        if let Some(password) = &secret.password {
            config.password(password.as_bytes());
        }
        if let Some(host) = &secret.host {
            config.host(host);
        }
        if let Some(port) = secret.port {
            config.port(port);
        }
        if let Some(dbname) = &secret.dbname {
            config.dbname(dbname);
        }
    }
    if let Some(host) = &settings.host {
        config.host(host);
    }
    if let Some(port) = settings.port {
        config.port(port);
    }
    if let Some(dbname) = &settings.dbname {
        config.dbname(dbname);
    }
    if let Some(user) = &settings.user {
        config.user(user);
    }
    if config.get_hosts().is_empty() {
        return Err(ConnectError::Missing {
            what: "host",
            variable: "DATABASE_HOST",
            field: "host",
        }
        .into());
    }
    if config.get_user().is_none() {
        return Err(ConnectError::Missing {
            what: "user",
            variable: "DATABASE_USER",
            field: "username",
        }
        .into());
    }
    if config.get_application_name().is_none() {
        config.application_name("ritmo");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    let ca_file = settings
        .ca_file
        .clone()
        .or_else(|| url_ca.map(PathBuf::from));
    let sslmode = match (settings.sslmode, url_sslmode) {
        (Some(mode), _) => mode,
        (None, Some(text)) => text.parse().map_err(ConnectError::from)?,
        (None, None) if ca_file.is_some() => SslMode::VerifyFull,
        (None, None) if settings.in_lambda => SslMode::Require,
        (None, None) => SslMode::Prefer,
    };
    config.ssl_mode(match sslmode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    let described = url_text
        .filter(|_| secret.is_none() && settings.host.is_none())
        .unwrap_or_else(|| describe(&config));
    Ok(Prepared {
        config,
        sslmode,
        ca_file,
        described,
    })
}

/// `postgres://user@host:port/db`, never with a password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => String::new(),
    };
    let port = config
        .get_ports()
        .first()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    format!(
        "postgres://{}@{host}{port}/{}",
        config.get_user().unwrap_or_default(),
        config.get_dbname().unwrap_or_default()
    )
}

/// The rustls configuration for `sslmode` (the connector is built for `disable` too, and
/// unused: tokio-postgres then never starts TLS).
fn tls_connector(
    sslmode: SslMode,
    ca_file: Option<&Path>,
) -> Result<MakeRustlsConnect, ConnectError> {
    let provider = crate::tls::crypto_provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::Tls(e.to_string()))?;
    let checked = |check_name| -> Result<Arc<dyn ServerCertVerifier>, ConnectError> {
        let roots = match ca_file {
            Some(path) => Arc::new(roots_from_file(path)?),
            None => crate::tls::native_roots().ok_or_else(|| {
                ConnectError::Tls("no system CA certificates found: set DATABASE_CA_FILE".into())
            })?,
        };
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| ConnectError::Tls(e.to_string()))?;
        Ok(Arc::new(Verifier::Chain { inner, check_name }))
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (sslmode, ca_file) {
        (SslMode::VerifyFull, _) => checked(true)?,
        (SslMode::VerifyCa, _) | (SslMode::Prefer | SslMode::Require, Some(_)) => checked(false)?,
        // `disable` never starts TLS: the connector is built but unused, so no CA is read.
        (SslMode::Disable, _) | (SslMode::Prefer | SslMode::Require, None) => {
            Arc::new(Verifier::Unchecked {
                provider: provider.clone(),
            })
        }
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn roots_from_file(path: &Path) -> Result<RootCertStore, ConnectError> {
    let pem = std::fs::read(path).map_err(|source| ConnectError::CaFile {
        path: path.to_path_buf(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
        // An unparseable certificate among many (bundles carry expired ones) is skipped.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(ConnectError::NoCertificates {
            path: path.to_path_buf(),
        });
    }
    Ok(roots)
}

/// How the server's certificate is judged.
#[derive(Debug)]
enum Verifier {
    /// `prefer`/`require` without a CA bundle (libpq's meaning): encryption against passive
    /// listeners only. Handshake signatures are still checked.
    Unchecked { provider: Arc<CryptoProvider> },
    /// The chain must lead to a trusted root; the host name too when `check_name`.
    Chain {
        inner: Arc<WebPkiServerVerifier>,
        check_name: bool,
    },
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self {
            Verifier::Unchecked { .. } => Ok(ServerCertVerified::assertion()),
            Verifier::Chain { inner, check_name } => {
                match inner.verify_server_cert(
                    end_entity,
                    intermediates,
                    server_name,
                    ocsp_response,
                    now,
                ) {
                    Err(rustls::Error::InvalidCertificate(
                        CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. },
                    )) if !check_name => Ok(ServerCertVerified::assertion()),
                    other => other,
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self {
            Verifier::Unchecked { provider } => rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &provider.signature_verification_algorithms,
            ),
            Verifier::Chain { inner, .. } => inner.verify_tls12_signature(message, cert, dss),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self {
            Verifier::Unchecked { provider } => rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &provider.signature_verification_algorithms,
            ),
            Verifier::Chain { inner, .. } => inner.verify_tls13_signature(message, cert, dss),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        match self {
            Verifier::Unchecked { provider } => provider
                .signature_verification_algorithms
                .supported_schemes(),
            Verifier::Chain { inner, .. } => inner.supported_verify_schemes(),
        }
    }
}

/// Drives a connection until it ends, on the runtime's threads.
fn spawn_connection<F>(connection: F)
where
    F: Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "database connection ended with an error");
        }
    });
}

/// Whether every address the connection may use is on this machine: a Unix socket or a
/// loopback address (`localhost` included). There `prefer` starts without TLS, saving the
/// handshake (about 80 ms of a whole `ritmo gitops sync` on a 2-core machine): `prefer`
/// checks no certificate, so its TLS guards only against a passive listener, and loopback
/// and Unix-socket traffic never leaves the kernel, where only root could listen, who can read
/// the process anyway. libpq never uses TLS on a Unix socket either. A server that demands TLS
/// still gets it (see `connect_once`).
fn stays_on_this_machine(config: &tokio_postgres::Config) -> bool {
    let hosts = config.get_hosts();
    let addresses = config.get_hostaddrs();
    let count = hosts.len().max(addresses.len());
    count > 0
        && (0..count).all(|i| match (addresses.get(i), hosts.get(i)) {
            (Some(address), _) => address.to_canonical().is_loopback(),
            (None, Some(tokio_postgres::config::Host::Tcp(host))) => {
                host.eq_ignore_ascii_case("localhost")
                    || host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.to_canonical().is_loopback())
            }
            #[cfg(unix)]
            (None, Some(tokio_postgres::config::Host::Unix(_))) => true,
            (None, None) => false,
        })
}

/// Whether the server refused the credentials (SQLSTATE class 28: wrong password, unknown
/// role, no `pg_hba` entry), the one failure fresh credentials can fix.
pub fn is_auth_failure(error: &StoreError) -> bool {
    matches!(error, StoreError::Connect { source, .. }
    if source.code().is_some_and(|code| {
        *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            || code.code().starts_with("28")
    }))
}

/// Runs `attempt`; when it fails with an error `is_auth` accepts and `refresh` is given, calls
/// `refresh` (drop the cached credentials) and runs `attempt` once more. Never loops: a
/// second refusal is the answer.
pub async fn with_refresh<T, E, F, Fut>(
    mut attempt: F,
    is_auth: impl Fn(&E) -> bool,
    refresh: Option<impl FnOnce()>,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    match attempt().await {
        Err(error) if is_auth(&error) => match refresh {
            Some(refresh) => {
                tracing::info!(
                    "database refused the credentials: reading them again from secrets manager"
                );
                refresh();
                attempt().await
            }
            None => Err(error),
        },
        other => other,
    }
}

impl Store {
    /// Connects as `settings` say (URL, secret, host settings, TLS; see the module doc),
    /// reading the secret through `secrets`, and applies pending migrations. When the server
    /// refuses credentials that came from the secret, the secret is read again once.
    pub async fn connect_with(
        settings: &DatabaseSettings,
        secrets: Option<&SecretsManager>,
    ) -> Result<Store, StoreError> {
        let refresh = match (&settings.secret_id, secrets) {
            (Some(id), Some(secrets)) => Some(move || secrets.invalidate(id)),
            _ => None,
        };
        with_refresh(
            || Store::connect_once(settings, secrets),
            is_auth_failure,
            refresh,
        )
        .await
    }

    async fn connect_once(
        settings: &DatabaseSettings,
        secrets: Option<&SecretsManager>,
    ) -> Result<Store, StoreError> {
        let secret = match (&settings.secret_id, secrets) {
            (Some(id), Some(secrets)) => {
                let text = secrets.get_string(id).await.map_err(ConnectError::Secret)?;
                Some(DatabaseSecret::parse(id, text.expose_secret())?)
            }
            (Some(_), None) => {
                return Err(ConnectError::NoSecretsClient.into());
            }
            (None, _) => None,
        };
        let mut prepared = prepare(settings, secret.as_ref())?;
        drop(secret);
        let connect_error = |source| StoreError::Connect {
            url: prepared.described.clone(),
            source,
        };
        let plain_first = match prepared.sslmode {
            SslMode::Disable => true,
            SslMode::Prefer => stays_on_this_machine(&prepared.config),
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => false,
        };
        let mut client = None;
        if plain_first {
            prepared
                .config
                .ssl_mode(tokio_postgres::config::SslMode::Disable);
            match prepared.config.connect(tokio_postgres::NoTls).await {
                Ok((plain, connection)) => {
                    spawn_connection(connection);
                    client = Some(plain);
                }
                // A loopback server that accepts only TLS (`hostssl` lines) refuses a plain
                // start with 28000; `prefer` then tries TLS, as the server asks.
                Err(error)
                    if prepared.sslmode == SslMode::Prefer
                        && error.code() == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION) =>
                {
                    prepared
                        .config
                        .ssl_mode(tokio_postgres::config::SslMode::Prefer);
                }
                Err(error) => return Err(connect_error(error)),
            }
        }
        let client = match client {
            Some(client) => client,
            None => {
                let tls = tls_connector(prepared.sslmode, prepared.ca_file.as_deref())?;
                let (client, connection) =
                    prepared.config.connect(tls).await.map_err(connect_error)?;
                spawn_connection(connection);
                client
            }
        };
        tracing::debug!(database = %prepared.described, sslmode = %prepared.sslmode, plain_first, "connected to the database");
        let mut store = Store {
            client,
            statements: StatementCache::default(),
            owned: OwnedRuns::default(),
        };
        store.migrate().await?;
        // Every process that connects finishes the runs of processes that died: `status`
        // then shows them abandoned, and no sync waits for them.
        store.abandon_ownerless_runs(None).await?;
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const PASSWORD: &str = "planted-db-password-9f2c";

    #[test]
    fn tls_parameters_are_taken_out_of_both_url_forms() {
        let url = take_tls_params(
            "postgres://u:p@h:5432/db?sslmode=verify-full&application_name=x&sslrootcert=/ca.pem",
        );
        let kv = take_tls_params("host=h sslmode=verify-ca user=u");
        let none = take_tls_params("postgres://u@h/db?sslmode=require");

        assert_eq!(url.rest, "postgres://u:p@h:5432/db?application_name=x");
        assert_eq!(url.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(url.sslrootcert.as_deref(), Some("/ca.pem"));
        assert_eq!(kv.rest, "host=h user=u");
        assert_eq!(kv.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(none.rest, "postgres://u@h/db");
    }

    #[test]
    fn sslmode_comes_from_the_setting_then_the_url_then_the_default() {
        let url = |u: &str| DatabaseSettings::from_url(u);
        let mut explicit = url("postgres://u@h/db?sslmode=disable");
        explicit.sslmode = Some(SslMode::VerifyFull);
        let mut lambda = url("postgres://u@h/db");
        lambda.in_lambda = true;
        let mut with_ca = url("postgres://u@h/db");
        with_ca.ca_file = Some("/etc/rds-ca.pem".into());

        let modes: Vec<SslMode> = [
            explicit,
            url("postgres://u@h/db?sslmode=require"),
            url("postgres://u@h/db"),
            lambda,
            with_ca,
            url("postgres://u@h/db?sslrootcert=/ca.pem"),
        ]
        .iter()
        .map(|s| prepare(s, None).unwrap().sslmode)
        .collect();

        assert_eq!(
            modes,
            [
                SslMode::VerifyFull,
                SslMode::Require,
                SslMode::Prefer,
                SslMode::Require,
                SslMode::VerifyFull,
                SslMode::VerifyFull
            ]
        );
    }

    #[test]
    fn only_unix_sockets_and_loopback_addresses_stay_on_this_machine() {
        let local = |url: &str| stays_on_this_machine(&url.parse().unwrap());

        let on_this_machine = [
            "postgres://u@127.0.0.1:5432/db",
            "postgres://u@127.8.9.10/db",
            "postgres://u@localhost/db",
            "postgres://u@LocalHost/db",
            "postgres://u@[::1]:5432/db",
            "host=/var/run/postgresql user=u",
            "host=db.internal hostaddr=127.0.0.1 user=u",
            "host=127.0.0.1,localhost user=u",
        ];
        let elsewhere = [
            "postgres://u@db.internal/db",
            "postgres://u@10.0.0.5/db",
            "postgres://u@localhost.example.com/db",
            "host=localhost hostaddr=10.0.0.5 user=u",
            "host=127.0.0.1,db.internal user=u",
        ];

        for url in on_this_machine {
            assert!(local(url), "{url}");
        }
        for url in elsewhere {
            assert!(!local(url), "{url}");
        }
    }

    #[test]
    fn an_unknown_sslmode_is_refused_by_name() {
        let err = prepare(
            &DatabaseSettings::from_url("postgres://u@h/db?sslmode=sometimes"),
            None,
        )
        .err()
        .unwrap();

        assert_eq!(
            err.to_string(),
            "invalid sslmode `sometimes`: expected disable, prefer, require, verify-ca or verify-full"
        );
    }

    #[test]
    fn the_secret_fills_credentials_and_host_settings_win_over_it() {
        let secret = DatabaseSecret::parse(
            "rds!db-1",
            &format!(
                r#"{{"username":"ritmo_app","password":"{PASSWORD}","engine":"postgres","host":"db.internal","port":"6432","dbname":"ritmo"}}"#
            ),
        )
        .unwrap();
        let settings = DatabaseSettings {
            secret_id: Some("rds!db-1".into()),
            dbname: Some("ritmo_prod".into()),
            ..DatabaseSettings::default()
        };

        let prepared = prepare(&settings, Some(&secret)).unwrap();

        assert_eq!(prepared.config.get_user(), Some("ritmo_app"));
        assert_eq!(prepared.config.get_password(), Some(PASSWORD.as_bytes()));
        assert_eq!(prepared.config.get_ports(), [6432]);
        assert_eq!(prepared.config.get_dbname(), Some("ritmo_prod"));
        assert_eq!(
            prepared.described,
            "postgres://ritmo_app@db.internal:6432/ritmo_prod"
        );
        assert!(!format!("{:?}", prepared.config).contains(PASSWORD));
        assert!(!format!("{secret:?}").contains(PASSWORD));
    }

    #[test]
    fn an_rds_master_secret_needs_the_host_from_the_settings() {
        let secret = DatabaseSecret::parse(
            "rds!db-1",
            &format!(r#"{{"username":"postgres","password":"{PASSWORD}"}}"#),
        )
        .unwrap();
        let only_secret = DatabaseSettings {
            secret_id: Some("rds!db-1".into()),
            ..DatabaseSettings::default()
        };

        let err = prepare(&only_secret, Some(&secret)).err().unwrap();

        assert_eq!(
            err.to_string(),
            "no database host: set DATABASE_HOST or put `host` in the database secret"
        );
    }

    #[test]
    fn a_malformed_secret_is_described_without_its_text() {
        let texts = [
            format!(r#"{{"username": "u", "password": {PASSWORD}}}"#),
            format!(r#"{{"username": "u", "password": "x", "port": "{PASSWORD}"}}"#),
            PASSWORD.to_string(),
        ];

        let errors: Vec<String> = texts
            .iter()
            .map(|t| DatabaseSecret::parse("db", t).unwrap_err().to_string())
            .collect();

        for error in &errors {
            assert!(
                error.starts_with("database secret `db` is not usable: expected a JSON object")
            );
            assert!(!error.contains(PASSWORD), "{error}");
        }
    }

    #[tokio::test]
    async fn an_auth_failure_refreshes_once_and_retries_once() {
        let attempts = Cell::new(0);
        let refreshed = Cell::new(0);

        let result: Result<u32, &str> = with_refresh(
            || {
                attempts.set(attempts.get() + 1);
                let n = attempts.get();
                async move { if n == 1 { Err("auth") } else { Ok(n) } }
            },
            |e| *e == "auth",
            Some(|| refreshed.set(refreshed.get() + 1)),
        )
        .await;

        assert_eq!(result, Ok(2));
        assert_eq!(refreshed.get(), 1);
    }

    #[tokio::test]
    async fn a_second_refusal_or_another_error_is_returned_without_looping() {
        let attempts = Cell::new(0);
        let other_attempts = Cell::new(0);
        let unrefreshable_attempts = Cell::new(0);

        let refused: Result<(), &str> = with_refresh(
            || {
                attempts.set(attempts.get() + 1);
                async { Err("auth") }
            },
            |e| *e == "auth",
            Some(|| {}),
        )
        .await;
        let other: Result<(), &str> = with_refresh(
            || {
                other_attempts.set(other_attempts.get() + 1);
                async { Err("network") }
            },
            |e| *e == "auth",
            Some(|| {}),
        )
        .await;
        let no_secret: Result<(), &str> = with_refresh(
            || {
                unrefreshable_attempts.set(unrefreshable_attempts.get() + 1);
                async { Err("auth") }
            },
            |e| *e == "auth",
            None::<fn()>,
        )
        .await;

        assert_eq!((refused, attempts.get()), (Err("auth"), 2));
        assert_eq!((other, other_attempts.get()), (Err("network"), 1));
        assert_eq!((no_secret, unrefreshable_attempts.get()), (Err("auth"), 1));
    }
}
