//! The ciphertext decoders: `AES256:`, `KMS:` and `KMS:v2:` values (and the master key text
//! they are decrypted with) → what decrypting them for a credential gives, under a fixed ring
//! of two master keys and, for envelopes, a fixed data key in place of KMS's answer.
//!
//! Input: the first line is the credential's name, the rest the value. The rest is also
//! encrypted, decrypted and re-encrypted, which must give it back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ritmo::crypto::{
    self, CredentialKeys, CryptoError, ExposeSecret, Format, KmsCiphertext, MAX_PLAINTEXT,
    MasterKey, MasterKeyring,
};
use ritmo::validate;
use ritmo_fuzz::{EXAMPLE_MASTER_KEY, block_on, keyring};

const DATA_KEY: [u8; 32] = [7; 32];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (credential, value) = text.split_once('\n').unwrap_or(("fuzz", &text));
    let ring = keyring();

    let _ =
        Format::of(value).map(|format| (format.prefix(), format.uses_kms(), format.to_string()));
    let well_formed = validate::is_well_formed_ciphertext(value);
    let _ = ring.decrypt(None, value);
    let keys = CredentialKeys {
        master: Some(ring.clone()),
        ..CredentialKeys::default()
    };
    match block_on(keys.decrypt(credential, value)) {
        Ok(decrypted) => {
            let _ = decrypted.outcome();
            let _ = decrypted.into_secret_string();
        }
        Err(error) => {
            let _ = (
                error.to_string(),
                error.is_retryable(),
                error.is_bad_value(),
            );
            if well_formed && value.starts_with(crypto::AES256_PREFIX) {
                assert!(
                    !matches!(error, CryptoError::Malformed { .. }),
                    "validation calls `{value}` well-formed, decryption malformed: {error}"
                );
            }
        }
    }
    match crypto::decode_kms(credential, value) {
        Ok(KmsCiphertext::Envelope { wrapped, sealed }) => {
            assert!(!wrapped.is_empty());
            let _ = crypto::open_envelope(credential, &DATA_KEY, &sealed);
            let _ = crypto::open_envelope(credential, &wrapped, &sealed);
        }
        Ok(KmsCiphertext::Direct { blob }) => assert!(!blob.is_empty()),
        Err(error) => {
            let _ = error.to_string();
        }
    }
    let _ = MasterKeyring::parse(value).map(|parsed| parsed.current_id().len());
    let _ = MasterKey::parse(value);

    // Encrypting any plaintext gives a value that decrypts back, for its credential only, and
    // survives a rotation to a newer key.
    let plaintext = value.as_bytes();
    if !plaintext.is_empty() && plaintext.len() <= MAX_PLAINTEXT {
        let Ok(sealed) = ring.encrypt(Some(credential), plaintext) else {
            panic!("encrypting {} bytes failed", plaintext.len());
        };
        assert!(validate::is_well_formed_ciphertext(&sealed));
        let Ok(opened) = ring.decrypt(Some(credential), &sealed) else {
            panic!("a fresh value does not decrypt");
        };
        assert!(opened.bound);
        assert_eq!(opened.plaintext.expose_secret(), plaintext);
        let other = format!("{credential}-other");
        assert!(
            ring.decrypt(Some(&other), &sealed).is_err(),
            "bound to another name"
        );

        let Ok(newer) = MasterKeyring::parse(&format!(
            "example:{EXAMPLE_MASTER_KEY},newest:{}",
            "ab".repeat(32)
        )) else {
            panic!("the fixed ring text does not parse");
        };
        match newer.reencrypt(credential, &sealed) {
            Ok(Some(rotated)) => {
                let Ok(again) = newer.decrypt(Some(credential), &rotated) else {
                    panic!("a rotated value does not decrypt");
                };
                assert_eq!(again.plaintext.expose_secret(), plaintext);
                assert_eq!(again.key_id.as_deref(), Some("newest"));
            }
            other => panic!("rotation to a newer key: {other:?}"),
        }
    }
});
