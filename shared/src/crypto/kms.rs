//! `KMS:` values: direct KMS encryption up to 4096 bytes, envelope (`KMS:v2:`) above, both
//! with the encryption context `{"ritmo:credential": "<name>"}` (see the module doc of
//! `crypto` for the byte layouts).

use std::collections::HashMap;

use aws_sdk_kms::Client;
use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::SecretBox;
use zeroize::Zeroizing;

use super::Decrypted;
use super::error::aws_failure;
use super::master::{
    KEY_LEN, MAX_PLAINTEXT, NONCE_LEN, TAG_LEN, associated_data, check_plaintext, open, seal,
};
use super::{CryptoError, Format, KMS_ENVELOPE_PREFIX, KMS_PREFIX};

/// The encryption-context key naming the credential a KMS value belongs to.
pub const CONTEXT_KEY: &str = "ritmo:credential";

/// The largest plaintext KMS `Encrypt` takes; larger values are enveloped.
pub const KMS_DIRECT_LIMIT: usize = 4096;

/// The encryption context of a credential's KMS values (IAM policies condition
/// `kms:EncryptionContext:ritmo:credential` on it).
pub fn encryption_context(credential: &str) -> HashMap<String, String> {
    HashMap::from([(CONTEXT_KEY.to_owned(), credential.to_owned())])
}

/// Encrypts `plaintext` for `credential` under the KMS key `key_id`: `KMS:` up to
/// [`KMS_DIRECT_LIMIT`] bytes, `KMS:v2:` (envelope) above.
pub async fn encrypt_kms(
    client: &Client,
    key_id: &str,
    credential: &str,
    plaintext: &[u8],
) -> Result<String, CryptoError> {
    check_plaintext(Some(credential), plaintext)?;
    if plaintext.len() <= KMS_DIRECT_LIMIT {
        let out = client
            .encrypt()
            .key_id(key_id)
            .plaintext(Blob::new(plaintext))
            .set_encryption_context(Some(encryption_context(credential)))
            .send()
            .await
            .map_err(|e| kms_error("Encrypt", credential, &e))?;
        let blob = out
            .ciphertext_blob
            .ok_or_else(|| missing("Encrypt", credential))?;
        return Ok(format!("{KMS_PREFIX}{}", STANDARD.encode(blob.as_ref())));
    }

    let mut out = client
        .generate_data_key()
        .key_id(key_id)
        .key_spec(DataKeySpec::Aes256)
        .set_encryption_context(Some(encryption_context(credential)))
        .send()
        .await
        .map_err(|e| kms_error("GenerateDataKey", credential, &e))?;
    let data_key = Zeroizing::new(
        out.plaintext
            .take()
            .ok_or_else(|| missing("GenerateDataKey", credential))?
            .into_inner(),
    );
    let data_key = data_key_array(&data_key, "GenerateDataKey", credential)?;
    let wrapped = out
        .ciphertext_blob
        .ok_or_else(|| missing("GenerateDataKey", credential))?
        .into_inner();
    let wrapped_len = u16::try_from(wrapped.len()).map_err(|_| CryptoError::Kms {
        operation: "GenerateDataKey",
        credential: Some(credential.to_owned()),
        detail: format!("wrapped data key is {} bytes, too long", wrapped.len()),
        retryable: false,
    })?;
    let sealed = seal(&data_key, &associated_data(credential), plaintext).ok_or_else(|| {
        CryptoError::TooLarge {
            credential: Some(credential.to_owned()),
            limit: MAX_PLAINTEXT,
        }
    })?;
    let mut bytes = Vec::with_capacity(2 + wrapped.len() + sealed.len());
    bytes.extend_from_slice(&wrapped_len.to_be_bytes());
    bytes.extend_from_slice(&wrapped);
    bytes.extend_from_slice(&sealed);
    Ok(format!("{KMS_ENVELOPE_PREFIX}{}", STANDARD.encode(bytes)))
}

/// A `KMS:` or `KMS:v2:` value taken apart, before anything is sent to KMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsCiphertext {
    /// `KMS:`: the blob KMS `Decrypt` takes.
    Direct { blob: Vec<u8> },
    /// `KMS:v2:`: the data key as KMS wrapped it, and nonce ‖ ciphertext ‖ tag under that key.
    Envelope { wrapped: Vec<u8>, sealed: Vec<u8> },
}

impl KmsCiphertext {
    /// The format the value had.
    pub fn format(&self) -> Format {
        match self {
            KmsCiphertext::Direct { .. } => Format::Kms,
            KmsCiphertext::Envelope { .. } => Format::KmsEnvelope,
        }
    }
}

/// Takes a `KMS:` or `KMS:v2:` value for `credential` apart (prefix, base64, the envelope's
/// length-prefixed wrapped key) without calling KMS, so every malformed value is refused
/// before a request is made. Public so the decoder can be fuzzed on its own.
pub fn decode_kms(credential: &str, value: &str) -> Result<KmsCiphertext, CryptoError> {
    let value = value.trim();
    let malformed = |reason| CryptoError::Malformed {
        credential: Some(credential.to_owned()),
        reason,
    };
    let (format, encoded) = if let Some(rest) = value.strip_prefix(KMS_ENVELOPE_PREFIX) {
        (Format::KmsEnvelope, rest)
    } else if let Some(rest) = value.strip_prefix(KMS_PREFIX) {
        (Format::Kms, rest)
    } else {
        return Err(CryptoError::UnknownFormat {
            credential: Some(credential.to_owned()),
        });
    };
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|_| malformed("not standard base64 after the `KMS:` prefix"))?;
    if bytes.is_empty() {
        return Err(malformed("empty ciphertext blob"));
    }
    if format == Format::Kms {
        return Ok(KmsCiphertext::Direct { blob: bytes });
    }
    let (len, rest) = bytes
        .split_first_chunk::<2>()
        .ok_or_else(|| malformed("too short for the wrapped key length"))?;
    let wrapped_len = usize::from(u16::from_be_bytes(*len));
    if wrapped_len == 0 || rest.len() < wrapped_len + NONCE_LEN + TAG_LEN {
        return Err(malformed("too short for wrapped key, nonce and tag"));
    }
    let (wrapped, sealed) = rest.split_at(wrapped_len);
    Ok(KmsCiphertext::Envelope {
        wrapped: wrapped.to_vec(),
        sealed: sealed.to_vec(),
    })
}

/// Opens the sealed part of a `KMS:v2:` value with the data key KMS unwrapped (`data_key`,
/// any length: anything but 32 bytes is KMS misbehaving and reported as such).
pub fn open_envelope(
    credential: &str,
    data_key: &[u8],
    sealed: &[u8],
) -> Result<SecretBox<[u8]>, CryptoError> {
    let data_key = data_key_array(data_key, "Decrypt", credential)?;
    open(&data_key, &associated_data(credential), sealed).ok_or_else(|| {
        CryptoError::DoesNotDecrypt {
            credential: Some(credential.to_owned()),
        }
    })
}

/// Decrypts a `KMS:` or `KMS:v2:` value for `credential`. A value made for another
/// credential, with another key or altered fails with [`CryptoError::DoesNotDecrypt`].
pub async fn decrypt_kms(
    client: &Client,
    credential: &str,
    value: &str,
) -> Result<Decrypted, CryptoError> {
    let decoded = decode_kms(credential, value)?;
    let format = decoded.format();
    let plaintext = match decoded {
        KmsCiphertext::Direct { blob } => {
            let plaintext = kms_decrypt(client, credential, blob).await?;
            SecretBox::new(Box::from(&plaintext[..]))
        }
        KmsCiphertext::Envelope { wrapped, sealed } => {
            let data_key = kms_decrypt(client, credential, wrapped).await?;
            open_envelope(credential, &data_key, &sealed)?
        }
    };
    Ok(Decrypted {
        plaintext,
        format,
        bound: true,
        key_id: None,
    })
}

async fn kms_decrypt(
    client: &Client,
    credential: &str,
    blob: Vec<u8>,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut out = client
        .decrypt()
        .ciphertext_blob(Blob::new(blob))
        .set_encryption_context(Some(encryption_context(credential)))
        .send()
        .await
        .map_err(|e| {
            if matches!(
                e.code(),
                Some("InvalidCiphertextException" | "IncorrectKeyException")
            ) {
                CryptoError::DoesNotDecrypt {
                    credential: Some(credential.to_owned()),
                }
            } else {
                kms_error("Decrypt", credential, &e)
            }
        })?;
    let plaintext = out
        .plaintext
        .take()
        .ok_or_else(|| missing("Decrypt", credential))?;
    Ok(Zeroizing::new(plaintext.into_inner()))
}

fn data_key_array(
    key: &[u8],
    operation: &'static str,
    credential: &str,
) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    let array: [u8; KEY_LEN] = key.try_into().map_err(|_| CryptoError::Kms {
        operation,
        credential: Some(credential.to_owned()),
        detail: format!("data key is {} bytes, expected {KEY_LEN}", key.len()),
        retryable: false,
    })?;
    Ok(Zeroizing::new(array))
}

fn kms_error<E>(
    operation: &'static str,
    credential: &str,
    err: &SdkError<E, HttpResponse>,
) -> CryptoError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let failure = aws_failure(err);
    CryptoError::Kms {
        operation,
        credential: Some(credential.to_owned()),
        detail: failure.detail,
        retryable: failure.retryable,
    }
}

fn missing(operation: &'static str, credential: &str) -> CryptoError {
    CryptoError::Kms {
        operation,
        credential: Some(credential.to_owned()),
        detail: "the response has no blob".to_owned(),
        retryable: false,
    }
}
