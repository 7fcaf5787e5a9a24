//! A decrypted credential value and what is known about it: the one type every key provider
//! returns.

use secrecy::{ExposeSecret, SecretBox, SecretString};

use super::{CryptoError, Format};

/// A decrypted value. `Debug` redacts the plaintext; it is zeroized on drop.
#[derive(Debug)]
pub struct Decrypted {
    pub plaintext: SecretBox<[u8]>,
    pub format: Format,
    /// Whether the value is bound to the credential's name (associated data or KMS
    /// encryption context). Unbound `AES256:` values still decrypt, but could be copied to
    /// another credential unnoticed: validation warns about them.
    pub bound: bool,
    /// The master key that decrypted an `AES256:` value; `None` for KMS.
    pub key_id: Option<String>,
}

impl Decrypted {
    /// The plaintext as text, or [`CryptoError::NotUtf8`].
    pub fn into_secret_string(self) -> Result<SecretString, CryptoError> {
        let text = std::str::from_utf8(self.plaintext.expose_secret())
            .map_err(|_| CryptoError::NotUtf8 { credential: None })?;
        Ok(SecretString::from(text.to_owned()))
    }

    /// What [`CredentialKeys::verify`] reports; the plaintext is dropped (zeroized).
    pub fn outcome(&self) -> VerifyOutcome {
        VerifyOutcome {
            format: self.format,
            bound: self.bound,
            key_id: self.key_id.clone(),
        }
    }
}

/// That a value decrypts, and how, without the plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOutcome {
    pub format: Format,
    pub bound: bool,
    pub key_id: Option<String>,
}
