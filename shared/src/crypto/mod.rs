//! crypto: credential ciphertexts (master key and KMS), the master keyring, Secrets Manager
//! access and the redacted secret types.
//!
//! It does not own webhook signatures (`webhook`), reading environment variables (`config`) or
//! deciding what to report about a credential (`validate`): it answers "does this value decrypt
//! for this credential, and how" and "what is in this secret".
//!
//! # Formats of `encrypted_value`
//!
//! - `AES256:<base64(nonce(12) ‖ ciphertext ‖ tag(16))>`: AES-256-GCM under the master key,
//!   standard base64 with padding, a random nonce per encryption. The associated data is the
//!   UTF-8 bytes `ritmo:credential:<name>` when the value is *bound* to its credential's name
//!   (what [`MasterKeyring::encrypt`] does when given a name), and empty when *unbound* (the
//!   seed's `ritmo encrypt-credential --value=x`, which has no name). Decrypting for credential
//!   N tries the bound form first, then the unbound one, and reports which in
//!   [`Decrypted::bound`]; a value bound to another name fails. The value carries no key id:
//!   every key of the [`MasterKeyring`] is tried, and the GCM tag tells which one fits.
//! - `KMS:<base64(ciphertext blob)>`: KMS `Encrypt`/`Decrypt` with the encryption context
//!   `{"ritmo:credential": "<name>"}`, so a blob moved to another credential fails. Used for
//!   values up to 4096 bytes (KMS's direct limit).
//! - `KMS:v2:<base64(len(2, big-endian) ‖ wrapped data key ‖ nonce(12) ‖ ciphertext ‖ tag(16))>`:
//!   envelope encryption for larger values. `GenerateDataKey` (AES_256) with the same
//!   encryption context wraps a fresh data key; the value is AES-256-GCM under that data key
//!   with the bound associated data above. `v2:` cannot be mistaken for the first form because
//!   `:` is not a base64 character.
//!
//! Every error is secret-free: no plaintext, no key material, no secret value ever reaches a
//! message, a `Debug` output or a log line. Plaintexts live in [`SecretBox`]/[`SecretString`]
//! (from `secrecy`), which redact `Debug` and zeroize their memory on drop.

mod decrypted;
mod error;
mod keys;
mod kms;
mod master;
pub mod rotate;
pub mod secret_refs;
mod secrets_manager;

pub use decrypted::{Decrypted, VerifyOutcome};
pub use error::CryptoError;
pub use keys::{CredentialKeys, credential_keys};
pub use kms::{
    CONTEXT_KEY as KMS_CONTEXT_KEY, KMS_DIRECT_LIMIT, KmsCiphertext, decode_kms, decrypt_kms,
    encrypt_kms, encryption_context, open_envelope,
};
pub use master::{MAX_PLAINTEXT, MasterKey, MasterKeyring, associated_data};
pub use secrecy::{ExposeSecret, SecretBox, SecretSlice, SecretString};
pub use secrets_manager::{DEFAULT_TTL as SECRETS_DEFAULT_TTL, SecretsManager};

use std::fmt;

/// The prefix of an `AES256:` value.
pub const AES256_PREFIX: &str = "AES256:";
/// The prefix of every KMS value.
pub const KMS_PREFIX: &str = "KMS:";
/// The prefix of an enveloped KMS value (over [`KMS_DIRECT_LIMIT`] bytes).
pub const KMS_ENVELOPE_PREFIX: &str = "KMS:v2:";

/// The format of an `encrypted_value`, read from its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `AES256:` under the master key.
    Aes256,
    /// `KMS:` ciphertext blob.
    Kms,
    /// `KMS:v2:` data key wrapped by KMS, value under AES-256-GCM.
    KmsEnvelope,
}

impl Format {
    /// The format a value claims by its prefix, without looking further.
    pub fn of(value: &str) -> Option<Format> {
        if value.starts_with(AES256_PREFIX) {
            Some(Format::Aes256)
        } else if value.starts_with(KMS_ENVELOPE_PREFIX) {
            Some(Format::KmsEnvelope)
        } else if value.starts_with(KMS_PREFIX) {
            Some(Format::Kms)
        } else {
            None
        }
    }

    /// The prefix values of this format start with.
    pub fn prefix(self) -> &'static str {
        match self {
            Format::Aes256 => AES256_PREFIX,
            Format::Kms => KMS_PREFIX,
            Format::KmsEnvelope => KMS_ENVELOPE_PREFIX,
        }
    }

    /// Whether decrypting values of this format needs KMS.
    pub fn uses_kms(self) -> bool {
        matches!(self, Format::Kms | Format::KmsEnvelope)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Aes256 => "AES256",
            Format::Kms => "KMS",
            Format::KmsEnvelope => "KMS envelope",
        })
    }
}

/// The process's Secrets Manager reader, from [`crate::aws::config`]: one client and one cache
/// (TTL [`SECRETS_DEFAULT_TTL`]) shared by every caller, so a warm Lambda reads each secret
/// once per TTL and an invalidation after an authentication failure is seen by all.
pub async fn secrets_manager() -> SecretsManager {
    static SHARED: tokio::sync::OnceCell<SecretsManager> = tokio::sync::OnceCell::const_new();
    SHARED
        .get_or_init(|| async {
            SecretsManager::new(aws_sdk_secretsmanager::Client::new(
                &crate::aws::config().await,
            ))
        })
        .await
        .clone()
}

/// A KMS client from the process's AWS configuration.
pub async fn kms_client() -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(&crate::aws::config().await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_tells_the_format() {
        let values = ["AES256:abc", "KMS:abc", "KMS:v2:abc", "aes256:abc", "plain"];

        let formats: Vec<_> = values.iter().map(|v| Format::of(v)).collect();

        assert_eq!(
            formats,
            [
                Some(Format::Aes256),
                Some(Format::Kms),
                Some(Format::KmsEnvelope),
                None,
                None
            ]
        );
    }
}
