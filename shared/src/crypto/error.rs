//! `CryptoError`: everything that can go wrong decrypting, encrypting or fetching a secret.
//!
//! No variant ever carries plaintext, key material or a secret's value: only credential
//! names, secret ids, key ids and the error codes AWS returns.

use std::fmt;

use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};

use super::Format;

/// A failure of the `crypto` module.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// Not base64, too short, or otherwise not the shape its prefix promises.
    #[error("encrypted value{} is malformed: {reason}", of(.credential))]
    Malformed {
        credential: Option<String>,
        reason: &'static str,
    },
    /// Neither `AES256:` nor `KMS:`.
    #[error(
        "encrypted value{} has no known format: expected an `AES256:` or `KMS:` prefix",
        of(.credential)
    )]
    UnknownFormat { credential: Option<String> },
    /// The value's format needs a key (or client) that is not configured.
    #[error("no {missing} is configured for `{}` values{}", .format.prefix(), of(.credential))]
    NoKey {
        credential: Option<String>,
        format: Format,
        missing: &'static str,
    },
    /// Authentication failed: wrong key, tampered bytes, or bound to another credential's name.
    #[error(
        "encrypted value{} does not decrypt with the configured key: wrong key, tampered, or copied from another credential",
        of(.credential)
    )]
    DoesNotDecrypt { credential: Option<String> },
    /// Encrypting nothing is almost always an empty stdin or a missing variable.
    #[error("refusing to encrypt an empty value{}", of(.credential))]
    EmptyPlaintext { credential: Option<String> },
    /// Over [`MAX_PLAINTEXT`](super::MAX_PLAINTEXT) bytes.
    #[error("refusing to encrypt a value{} over {limit} bytes", of(.credential))]
    TooLarge {
        credential: Option<String>,
        limit: usize,
    },
    /// The plaintext was asked for as text but is not UTF-8.
    #[error("decrypted value{} is not UTF-8 text", of(.credential))]
    NotUtf8 { credential: Option<String> },
    /// A master key that is not 64 hex characters, base64 of 32 bytes or 32 raw bytes.
    #[error("invalid master key{}: {reason}", named(.which))]
    InvalidMasterKey {
        which: Option<String>,
        reason: String,
    },
    /// A keyring whose structure is wrong (ids, JSON shape, `current`).
    #[error("invalid master keyring: {reason}")]
    InvalidKeyring { reason: String },
    /// A KMS call failed for a reason other than the ciphertext not fitting.
    #[error("kms `{operation}`{} failed: {detail}", for_credential(.credential))]
    Kms {
        operation: &'static str,
        credential: Option<String>,
        detail: String,
        retryable: bool,
    },
    /// The secret does not exist (or is scheduled for deletion).
    #[error("secret `{id}` not found in secrets manager")]
    SecretNotFound { id: String },
    /// The secret holds only binary data.
    #[error("secret `{id}` has no string value")]
    SecretNotString { id: String },
    /// A Secrets Manager call failed.
    #[error("secrets manager `{operation}` of secret `{id}` failed: {detail}")]
    SecretsManager {
        operation: &'static str,
        id: String,
        detail: String,
        retryable: bool,
    },
}

impl CryptoError {
    /// Whether the same call may succeed later without anyone changing anything: throttling,
    /// network failures and AWS-side errors are; wrong keys, bad values and missing secrets
    /// are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            CryptoError::Kms { retryable, .. } | CryptoError::SecretsManager { retryable, .. } => {
                *retryable
            }
            _ => false,
        }
    }

    /// Whether the value itself is wrong (malformed, unknown format, wrong key, tampered,
    /// moved), as opposed to the environment (no key configured, AWS unavailable).
    pub fn is_bad_value(&self) -> bool {
        matches!(
            self,
            CryptoError::Malformed { .. }
                | CryptoError::UnknownFormat { .. }
                | CryptoError::DoesNotDecrypt { .. }
        )
    }
}

fn of(credential: &Option<String>) -> Credential<'_> {
    Credential(" of", credential.as_deref())
}

fn for_credential(credential: &Option<String>) -> Credential<'_> {
    Credential(" for", credential.as_deref())
}

/// ` of credential `name`` (or ` for …`), or nothing without a name.
struct Credential<'a>(&'static str, Option<&'a str>);

impl fmt::Display for Credential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(name) => write!(f, "{} credential `{name}`", self.0),
            None => Ok(()),
        }
    }
}

fn named(which: &Option<String>) -> String {
    which
        .as_deref()
        .map(|which| format!(" {which}"))
        .unwrap_or_default()
}

/// What an AWS SDK error says, reduced to what is safe and useful to report.
pub(crate) struct AwsFailure {
    pub detail: String,
    pub retryable: bool,
}

/// Error codes AWS uses for "try again later" across KMS and Secrets Manager.
const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "KMSInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
    "InternalServiceError",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
];

pub(crate) fn aws_failure<E>(err: &SdkError<E, HttpResponse>) -> AwsFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(_) => {
            let code = err.code().map(str::to_owned);
            let status = err.raw_response().map(|r| r.status().as_u16());
            let retryable = code
                .as_deref()
                .is_some_and(|c| RETRYABLE_CODES.contains(&c))
                || status.is_some_and(|s| s == 429 || s >= 500);
            let detail = match (code.as_deref(), err.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_owned(),
                (None, Some(message)) => message.to_owned(),
                (None, None) => chain(err),
            };
            AwsFailure { detail, retryable }
        }
        SdkError::ConstructionFailure(_) => AwsFailure {
            detail: chain(err),
            retryable: false,
        },
        // Timeouts, dispatch (network) failures and unparseable responses are transient.
        _ => AwsFailure {
            detail: chain(err),
            retryable: true,
        },
    }
}

/// An error and its sources, `: `-separated, without the `Debug` dump `DisplayErrorContext`
/// appends.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // hyper and the smithy connector sometimes repeat their source's text.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kms::error::ErrorMetadata;
    use aws_sdk_kms::operation::decrypt::DecryptError;

    fn service_error(code: &str, status: u16) -> SdkError<DecryptError, HttpResponse> {
        let err = DecryptError::generic(
            ErrorMetadata::builder()
                .code(code)
                .message("something happened")
                .build(),
        );
        let raw = HttpResponse::new(status.try_into().unwrap(), Vec::<u8>::new().into());
        SdkError::service_error(err, raw)
    }

    #[test]
    fn throttling_and_server_errors_are_retryable_client_errors_are_not() {
        let cases = [
            ("ThrottlingException", 400, true),
            ("KMSInternalException", 500, true),
            ("SomethingNew", 503, true),
            ("SomethingNew", 429, true),
            ("AccessDeniedException", 400, false),
            ("NotFoundException", 400, false),
        ];

        let results: Vec<bool> = cases
            .iter()
            .map(|(code, status, _)| aws_failure(&service_error(code, *status)).retryable)
            .collect();

        let expected: Vec<bool> = cases.iter().map(|c| c.2).collect();
        assert_eq!(results, expected);
    }

    #[test]
    fn a_service_error_is_described_by_code_and_message() {
        let failure = aws_failure(&service_error("AccessDeniedException", 400));

        assert_eq!(failure.detail, "AccessDeniedException: something happened");
    }

    #[test]
    fn messages_name_the_credential_only_when_known() {
        let named = CryptoError::DoesNotDecrypt {
            credential: Some("db".to_owned()),
        };
        let unnamed = CryptoError::Malformed {
            credential: None,
            reason: "not standard base64 after `AES256:`",
        };

        assert!(
            named
                .to_string()
                .starts_with("encrypted value of credential `db` does not")
        );
        assert_eq!(
            unnamed.to_string(),
            "encrypted value is malformed: not standard base64 after `AES256:`"
        );
    }
}
