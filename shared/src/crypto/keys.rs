//! `CredentialKeys`: the configured key providers, and the one entry point that decrypts or
//! verifies any `encrypted_value` for a credential.

use super::{CryptoError, Decrypted, Format, MasterKeyring, SecretsManager, VerifyOutcome, kms};
use crate::config::Settings;

/// The key providers a process has: the master keyring for `AES256:` values, a KMS client
/// for `KMS:` values, and the KMS key new `KMS:` values are encrypted under.
#[derive(Debug, Clone, Default)]
pub struct CredentialKeys {
    pub master: Option<MasterKeyring>,
    pub kms: Option<aws_sdk_kms::Client>,
    pub kms_key_id: Option<String>,
}

impl CredentialKeys {
    /// Decrypts `value` (any format) for the credential named `credential`.
    pub async fn decrypt(&self, credential: &str, value: &str) -> Result<Decrypted, CryptoError> {
        match Format::of(value.trim()) {
            Some(Format::Aes256) => self.master(credential)?.decrypt(Some(credential), value),
            Some(format @ (Format::Kms | Format::KmsEnvelope)) => {
                let client = self.kms.as_ref().ok_or_else(|| CryptoError::NoKey {
                    credential: Some(credential.to_owned()),
                    format,
                    missing: "KMS client",
                })?;
                kms::decrypt_kms(client, credential, value).await
            }
            None => Err(CryptoError::UnknownFormat {
                credential: Some(credential.to_owned()),
            }),
        }
    }

    /// Proves `value` decrypts for `credential`; the plaintext is zeroized before returning.
    pub async fn verify(
        &self,
        credential: &str,
        value: &str,
    ) -> Result<VerifyOutcome, CryptoError> {
        let decrypted = self.decrypt(credential, value).await?;
        Ok(decrypted.outcome())
    }

    /// Encrypts under the newest master key, bound to `credential` when given (the default
    /// for `ritmo encrypt-credential --name N`), unbound otherwise.
    pub async fn encrypt_master(
        &self,
        credential: Option<&str>,
        plaintext: &[u8],
    ) -> Result<String, CryptoError> {
        let master = self.master.as_ref().ok_or_else(|| CryptoError::NoKey {
            credential: credential.map(str::to_owned),
            format: Format::Aes256,
            missing: "master key",
        })?;
        master.encrypt(credential, plaintext)
    }

    /// Encrypts for `credential` under `kms_key_id` (`KMS:`, or `KMS:v2:` over 4096 bytes).
    pub async fn encrypt_kms(
        &self,
        credential: &str,
        plaintext: &[u8],
    ) -> Result<String, CryptoError> {
        let no_key = |missing| CryptoError::NoKey {
            credential: Some(credential.to_owned()),
            format: Format::Kms,
            missing,
        };
        let client = self.kms.as_ref().ok_or_else(|| no_key("KMS client"))?;
        let key_id = self
            .kms_key_id
            .as_deref()
            .ok_or_else(|| no_key("KMS key id"))?;
        kms::encrypt_kms(client, key_id, credential, plaintext).await
    }

    fn master(&self, credential: &str) -> Result<&MasterKeyring, CryptoError> {
        self.master.as_ref().ok_or_else(|| CryptoError::NoKey {
            credential: Some(credential.to_owned()),
            format: Format::Aes256,
            missing: "master key",
        })
    }
}

/// The keys that decrypt credential ciphertexts: the master keyring from the environment or
/// from Secrets Manager (read through `secrets`, else the process's reader), and KMS when a
/// key id is configured. AWS configuration is loaded only when one of them needs it.
pub async fn credential_keys(
    settings: &Settings,
    secrets: Option<&SecretsManager>,
) -> Result<CredentialKeys, CryptoError> {
    use secrecy::ExposeSecret;

    let master = match (&settings.master_key, &settings.master_key_secret_id) {
        (Some(key), _) => Some(MasterKeyring::parse(key.expose_secret())?),
        (None, Some(secret_id)) => Some(match secrets {
            Some(secrets) => secrets.master_keyring(secret_id).await?,
            None => {
                super::secrets_manager()
                    .await
                    .master_keyring(secret_id)
                    .await?
            }
        }),
        (None, None) => None,
    };
    let kms = match &settings.kms_key_id {
        Some(_) => Some(super::kms_client().await),
        None => None,
    };
    Ok(CredentialKeys {
        master,
        kms,
        kms_key_id: settings.kms_key_id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use secrecy::ExposeSecret;

    const RAW_KEY: &str = "ritmo-example-master-key-32bytes";

    fn keys() -> CredentialKeys {
        CredentialKeys {
            master: Some(MasterKeyring::single(MasterKey::parse(RAW_KEY).unwrap())),
            ..CredentialKeys::default()
        }
    }

    /// The example of the docs and README: `example-secret-value` under the example key,
    /// bound to `docker-registry`. Pins the `AES256:` format: if this stops decrypting,
    /// every value in every repository has too.
    const EXAMPLE: &str = "AES256:RWVXif75CZJo7pzhHczSFOgHQ3//ig4zkYVtM/abcKPIcAfwoz9vO49Dd9zPxSUS";

    #[tokio::test]
    async fn the_documented_example_value_decrypts_bound_to_its_credential() {
        let keys = keys();

        let decrypted = keys.decrypt("docker-registry", EXAMPLE).await.unwrap();

        assert_eq!(decrypted.plaintext.expose_secret(), b"example-secret-value");
        assert!(decrypted.bound);
        assert!(keys.decrypt("other", EXAMPLE).await.is_err());
    }

    #[tokio::test]
    async fn verify_reports_format_binding_and_key_without_the_plaintext() {
        let keys = keys();
        let unbound = keys.encrypt_master(None, b"v").await.unwrap();

        let bound_outcome = keys.verify("docker-registry", EXAMPLE).await.unwrap();
        let unbound_outcome = keys.verify("docker-registry", &unbound).await.unwrap();

        assert_eq!(
            bound_outcome,
            VerifyOutcome {
                format: Format::Aes256,
                bound: true,
                key_id: Some("default".to_owned())
            }
        );
        assert!(!unbound_outcome.bound);
    }

    #[tokio::test]
    async fn a_format_without_its_key_is_reported_as_not_configured() {
        let none = CredentialKeys::default();
        let master_only = keys();

        let aes = none.decrypt("c", EXAMPLE).await.unwrap_err();
        let kms = master_only.decrypt("c", "KMS:AQID").await.unwrap_err();
        let kms_encrypt = master_only.encrypt_kms("c", b"v").await.unwrap_err();
        let master_encrypt = none.encrypt_master(Some("c"), b"v").await.unwrap_err();

        assert_eq!(
            aes.to_string(),
            "no master key is configured for `AES256:` values of credential `c`"
        );
        assert_eq!(
            kms.to_string(),
            "no KMS client is configured for `KMS:` values of credential `c`"
        );
        assert!(matches!(
            kms_encrypt,
            CryptoError::NoKey {
                missing: "KMS client",
                ..
            }
        ));
        assert!(matches!(master_encrypt, CryptoError::NoKey { .. }));
        assert!(!aes.is_retryable() && !aes.is_bad_value());
    }

    #[tokio::test]
    async fn a_value_without_a_known_prefix_is_refused() {
        let err = keys().decrypt("c", "base64encodedvalue").await.unwrap_err();

        assert_eq!(
            err.to_string(),
            "encrypted value of credential `c` has no known format: expected an `AES256:` or `KMS:` prefix"
        );
        assert!(err.is_bad_value());
    }

    #[tokio::test]
    async fn decrypted_values_and_keys_redact_their_debug_output() {
        let keys = keys();
        let decrypted = keys.decrypt("docker-registry", EXAMPLE).await.unwrap();

        let outputs = [
            format!("{decrypted:?}"),
            format!("{keys:?}"),
            format!("{:?}", decrypted.into_secret_string().unwrap()),
        ];

        for output in &outputs {
            assert!(output.contains("REDACTED"), "{output}");
            assert!(!output.contains("example-secret-value"), "{output}");
            assert!(!output.contains(RAW_KEY), "{output}");
        }
    }

    #[tokio::test]
    async fn binary_plaintext_is_not_turned_into_text() {
        let keys = keys();
        let value = keys.encrypt_master(Some("c"), &[0xff, 0xfe]).await.unwrap();

        let err = keys
            .decrypt("c", &value)
            .await
            .unwrap()
            .into_secret_string()
            .unwrap_err();

        assert!(matches!(err, CryptoError::NotUtf8 { .. }));
    }
}
