//! Store errors, and the rules for what is worth retrying and what a URL may show.

use std::error::Error as _;

use std::path::PathBuf;

use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::config::UnknownSslMode;
use crate::crypto::CryptoError;

/// What is wrong with the connection settings (as opposed to the server refusing them).
/// Messages carry setting names, secret ids and file paths, never a value from a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "invalid sslmode `{value}`: expected disable, prefer, require, verify-ca or verify-full"
    )]
    InvalidSslMode { value: String },
    #[error("no database configured: set DATABASE_URL or DATABASE_SECRET_ARN")]
    NoDatabase,
    #[error("no database {what}: set {variable} or put `{field}` in the database secret")]
    Missing {
        what: &'static str,
        variable: &'static str,
        field: &'static str,
    },
    #[error("a database secret is configured but no Secrets Manager client was given")]
    NoSecretsClient,
    #[error("cannot read the database secret")]
    Secret(#[source] CryptoError),
    #[error("database secret `{id}` is not usable: {reason}")]
    SecretFormat { id: String, reason: String },
    #[error("cannot read the database CA bundle `{path}`")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database CA bundle `{path}` holds no PEM certificate")]
    NoCertificates { path: PathBuf },
    #[error("cannot set up TLS for the database: {0}")]
    Tls(String),
}

impl ConnectError {
    /// Only reading the secret can succeed later unchanged (throttling, network).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ConnectError::Secret(e) if e.is_retryable())
    }
}

impl From<UnknownSslMode> for ConnectError {
    fn from(error: UnknownSslMode) -> Self {
        ConnectError::InvalidSslMode { value: error.0 }
    }
}

/// Everything the store can fail with. Messages never carry a database password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database url `{url}`")]
    InvalidUrl {
        /// The URL with its password replaced by `***`.
        url: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("cannot connect to the database at `{url}`")]
    Connect {
        /// The URL with its password replaced by `***`.
        url: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The connection settings are wrong or incomplete (see `store::connect`).
    #[error(transparent)]
    Settings(#[from] super::ConnectError),
    #[error("database migration failed")]
    Migrate(#[source] refinery::Error),
    #[error("database error while trying to {context}")]
    Query {
        context: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("target `{0}` is not registered")]
    UnknownTarget(String),
    #[error("invalid target `{name}`: {reason}")]
    InvalidTarget { name: String, reason: String },
    #[error("sync run `{0}` does not exist")]
    RunNotFound(Uuid),
    /// The run's owner lost its database session, and another process marked the run
    /// abandoned (see `store::owners`); a retry starts a new run.
    #[error(
        "sync run `{0}` was abandoned: this process lost its database session while working on it"
    )]
    RunAbandoned(Uuid),
    #[error("unexpected data in table `{table}`: {reason}")]
    Corrupt { table: &'static str, reason: String },
}

impl StoreError {
    /// Whether the same call may succeed later (connection trouble, serialization failures,
    /// deadlocks, a server starting or shutting down) rather than needing a person.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Connect { source, .. } | StoreError::Query { source, .. } => {
                is_retryable_pg(source)
            }
            StoreError::Settings(error) => error.is_retryable(),
            StoreError::RunAbandoned(_) => true,
            StoreError::Migrate(_)
            | StoreError::InvalidUrl { .. }
            | StoreError::UnknownTarget(_)
            | StoreError::InvalidTarget { .. }
            | StoreError::RunNotFound(_)
            | StoreError::Corrupt { .. } => false,
        }
    }

    /// The SQLSTATE of the underlying database error, if there is one.
    pub fn sql_state(&self) -> Option<&SqlState> {
        match self {
            StoreError::Connect { source, .. } | StoreError::Query { source, .. } => source.code(),
            _ => None,
        }
    }

    pub(crate) fn query(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |source| StoreError::Query { context, source }
    }
}

/// Whether a PostgreSQL client error is transient.
pub fn is_retryable_pg(error: &tokio_postgres::Error) -> bool {
    if let Some(code) = error.code() {
        // 08 connection exception, 40 transaction rollback (serialization failure, deadlock),
        // 53 insufficient resources, 57 operator intervention (shutdown, statement timeout).
        let class = code.code().get(..2).unwrap_or_default();
        return (matches!(class, "08" | "40" | "53" | "57") && *code != SqlState::DATABASE_DROPPED)
            || *code == SqlState::LOCK_NOT_AVAILABLE;
    }
    if error.is_closed() {
        return true;
    }
    // Without a SQLSTATE: an IO error (refused, reset, timed out) is transient; a type
    // conversion or protocol error is a bug and will fail the same way again.
    let mut cause = error.source();
    while let Some(inner) = cause {
        if inner.is::<std::io::Error>() {
            return true;
        }
        cause = inner.source();
    }
    false
}

/// `url` with any password removed, for messages and logs. Handles both URL form
/// (`postgres://user:secret@host/db?password=secret`) and key-value form
/// (`host=h password=secret`).
pub fn redact_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest_start = scheme_end + 3;
        let rest = &url[rest_start..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let mut out = String::with_capacity(url.len());
        out.push_str(&url[..rest_start]);
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        let tail = &rest[authority_end..];
        match tail.find('?') {
            Some(q) => {
                out.push_str(&tail[..=q]);
                let params: Vec<String> = tail[q + 1..]
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                            format!("{key}=***")
                        }
                        _ => pair.to_string(),
                    })
                    .collect();
                out.push_str(&params.join("&"));
            }
            None => out.push_str(tail),
        }
        out
    } else {
        redact_key_value(url)
    }
}

fn redact_key_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(eq) = find_password_key(rest) {
        out.push_str(&rest[..=eq]);
        out.push_str("***");
        let value = rest[eq + 1..].trim_start();
        let value_len = match value.strip_prefix('\'') {
            Some(quoted) => 1 + quoted_len(quoted),
            None => value.find(char::is_whitespace).unwrap_or(value.len()),
        };
        rest = &value[value_len..];
    }
    out.push_str(rest);
    out
}

/// Length of a single-quoted value after its opening quote, closing quote included.
fn quoted_len(quoted: &str) -> usize {
    let mut escaped = false;
    for (i, c) in quoted.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '\'' => return i + 1,
            _ => {}
        }
    }
    quoted.len()
}

/// The position of the `=` after a `password` key (at a word boundary, spaces allowed).
fn find_password_key(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find("password") {
        let start = from + found;
        let before_ok = start == 0 || lower.as_bytes()[start - 1].is_ascii_whitespace();
        let key_end = start + "password".len();
        let after = lower[key_end..].trim_start();
        if before_ok && after.starts_with('=') {
            return Some(lower.len() - after.len());
        }
        from = start + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_replaced() {
        assert_eq!(
            redact_url("postgres://ritmo:s3cr%40t@db.example:5432/ritmo?sslmode=require"),
            "postgres://ritmo:***@db.example:5432/ritmo?sslmode=require"
        );
    }

    #[test]
    fn urls_without_a_password_are_unchanged() {
        let url = "postgres://postgres@127.0.0.1:5432/postgres";

        assert_eq!(redact_url(url), url);
    }

    #[test]
    fn password_query_parameters_are_replaced() {
        assert_eq!(
            redact_url("postgresql://h/db?user=u&password=hunter2&sslmode=require"),
            "postgresql://h/db?user=u&password=***&sslmode=require"
        );
    }

    #[test]
    fn key_value_passwords_are_replaced_quoted_or_not() {
        assert_eq!(
            redact_url("host=h password=hunter2 dbname=d"),
            "host=h password=*** dbname=d"
        );
        assert_eq!(
            redact_url("host=h password = 'a b\\' c' user=u"),
            "host=h password =*** user=u"
        );
    }

    #[test]
    fn a_password_containing_an_at_sign_is_fully_hidden() {
        let redacted = redact_url("postgres://u:p@ss@host/db");

        assert!(!redacted.contains("p@ss"), "{redacted}");
        assert!(!redacted.contains(":p"), "{redacted}");
    }
}
