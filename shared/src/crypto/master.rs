//! The master key for `AES256:` values, the keyring that rotates it, and the AES-256-GCM
//! sealing shared with KMS envelopes.
//!
//! Key text (`RITMO_MASTER_ENCRYPTION_KEY` or a Secrets Manager secret) is one of:
//! - one key: 64 hex characters, standard base64 of 32 bytes, or exactly 32 raw bytes;
//! - a ring `id1:key1,id2:key2`, newest last (raw keys in a ring must not contain `,`);
//! - a JSON object `{"keys": [{"id": "…", "key": "…"}], "current": "…"}`; without
//!   `current` the last key is the newest.
//!
//! Reading the environment or Secrets Manager is the caller's business; this module parses text.

use aes_gcm::aead::rand_core::RngCore as _;
use aes_gcm::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretBox};
use zeroize::{Zeroize, Zeroizing};

use super::Decrypted;
use super::{AES256_PREFIX, CryptoError, Format};

pub(crate) const KEY_LEN: usize = 32;
pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;

/// The largest credential value encrypted (1 MiB): certificates and keys fit many times over.
pub const MAX_PLAINTEXT: usize = 1024 * 1024;

/// The associated data binding a value to its credential: `ritmo:credential:<name>`.
pub fn associated_data(credential: &str) -> Vec<u8> {
    format!("ritmo:credential:{credential}").into_bytes()
}

/// One AES-256 master key. `Debug` shows `[REDACTED]`; the bytes are zeroized on drop.
#[derive(Debug)]
pub struct MasterKey {
    bytes: SecretBox<[u8; KEY_LEN]>,
}

impl Clone for MasterKey {
    fn clone(&self) -> Self {
        MasterKey::from_bytes(self.bytes.expose_secret())
    }
}

impl MasterKey {
    /// Parses key text: 64 hex characters, standard base64 of 32 bytes, or exactly 32 raw
    /// bytes (tried in that order; a trailing newline is ignored). The error never echoes
    /// the text.
    pub fn parse(text: &str) -> Result<MasterKey, CryptoError> {
        Self::parse_with_id(text, None)
    }

    /// `which` names the key in errors: "`id`" for JSON keyrings, "entry N" for text rings
    /// (whose ids could be a fragment of a mistyped key).
    fn parse_with_id(text: &str, which: Option<String>) -> Result<MasterKey, CryptoError> {
        let text = text.trim_end_matches(['\r', '\n']);
        let trimmed = text.trim();
        if trimmed.len() == 2 * KEY_LEN && trimmed.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
            if hex::decode_to_slice(trimmed, &mut *bytes).is_ok() {
                return Ok(MasterKey::from_bytes(&bytes));
            }
        }
        if let Ok(decoded) = STANDARD.decode(trimmed) {
            let decoded = Zeroizing::new(decoded);
            if let Ok(bytes) = <&[u8; KEY_LEN]>::try_from(&decoded[..]) {
                return Ok(MasterKey::from_bytes(bytes));
            }
        }
        if let Ok(bytes) = <&[u8; KEY_LEN]>::try_from(text.as_bytes()) {
            return Ok(MasterKey::from_bytes(bytes));
        }
        Err(CryptoError::InvalidMasterKey {
            which,
            reason: format!(
                "expected 64 hex characters, base64 of 32 bytes or exactly 32 raw bytes, got {} bytes",
                text.len()
            ),
        })
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> MasterKey {
        MasterKey {
            bytes: SecretBox::init_with_mut(|key: &mut [u8; KEY_LEN]| key.copy_from_slice(bytes)),
        }
    }

    /// A fresh random key, for tests and `ritmo` key generation.
    pub fn generate() -> MasterKey {
        MasterKey {
            bytes: SecretBox::init_with_mut(|key: &mut [u8; KEY_LEN]| OsRng.fill_bytes(key)),
        }
    }

    /// The key as 64 lowercase hex characters (to hand to a person generating a key; never log it).
    pub fn to_hex(&self) -> secrecy::SecretString {
        secrecy::SecretString::from(hex::encode(self.bytes.expose_secret()))
    }

    fn bytes(&self) -> &[u8; KEY_LEN] {
        self.bytes.expose_secret()
    }
}

/// Seals `plaintext` with AES-256-GCM under `key`: returns nonce ‖ ciphertext ‖ tag, or
/// `None` past AES-GCM's length limit (callers refuse such sizes long before).
pub(crate) fn seal(key: &[u8; KEY_LEN], aad: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
    let cipher = Aes256Gcm::new(key.into());
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    // Capacity for the tag up front: growing the buffer would leave a plaintext copy behind.
    let mut buffer = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    buffer.extend_from_slice(&nonce);
    buffer.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(&nonce, aad, &mut buffer[NONCE_LEN..])
        .ok()?;
    buffer.extend_from_slice(&tag);
    Some(buffer)
}

/// Opens nonce ‖ ciphertext ‖ tag; `None` when the key, the associated data or the bytes
/// do not fit. The caller checks the minimum length.
pub(crate) fn open(key: &[u8; KEY_LEN], aad: &[u8], sealed: &[u8]) -> Option<SecretBox<[u8]>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let cipher = Aes256Gcm::new(key.into());
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut buffer = Zeroizing::new(ciphertext.to_vec());
    cipher
        .decrypt_in_place_detached(Nonce::from_slice(nonce), aad, &mut buffer, tag.into())
        .ok()?;
    Some(SecretBox::new(Box::from(&buffer[..])))
}

/// Several master keys by id, the newest (`current`) used to encrypt, all tried to decrypt.
/// `Debug` shows ids only.
#[derive(Debug, Clone)]
pub struct MasterKeyring {
    keys: Vec<(String, MasterKey)>,
    current: usize,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringJson {
    keys: Vec<KeyJson>,
    current: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyJson {
    id: String,
    key: String,
}

impl Drop for KeyJson {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl MasterKeyring {
    /// A ring of one key, with id `default`.
    pub fn single(key: MasterKey) -> MasterKeyring {
        MasterKeyring {
            keys: vec![("default".to_owned(), key)],
            current: 0,
        }
    }

    /// A ring from `(id, key)` pairs, newest last.
    pub fn new(keys: Vec<(String, MasterKey)>) -> Result<MasterKeyring, CryptoError> {
        let current = keys
            .len()
            .checked_sub(1)
            .ok_or(CryptoError::InvalidKeyring {
                reason: "no keys".to_owned(),
            })?;
        Self::with_current(keys, current)
    }

    fn with_current(
        keys: Vec<(String, MasterKey)>,
        current: usize,
    ) -> Result<MasterKeyring, CryptoError> {
        for (i, (id, _)) in keys.iter().enumerate() {
            check_id(id)?;
            if keys[..i].iter().any(|(other, _)| other == id) {
                return Err(CryptoError::InvalidKeyring {
                    reason: format!("key id `{id}` appears twice"),
                });
            }
        }
        Ok(MasterKeyring { keys, current })
    }

    /// Parses a single key, an `id:key,id:key` ring (newest last) or the JSON object form
    /// (see the module doc). Errors name key ids, never key text.
    pub fn parse(text: &str) -> Result<MasterKeyring, CryptoError> {
        let trimmed = text.trim();
        if trimmed.starts_with('{') {
            return Self::parse_json(trimmed);
        }
        let single = match MasterKey::parse(text) {
            Ok(key) => return Ok(MasterKeyring::single(key)),
            Err(e) => e,
        };
        if !trimmed.contains(':') {
            return Err(single);
        }
        let mut keys = Vec::new();
        for entry in trimmed.split(',') {
            let Some((id, key)) = entry.split_once(':') else {
                return Err(CryptoError::InvalidKeyring {
                    reason: format!(
                        "entry {} is not `id:key` (expected `id1:key1,id2:key2`)",
                        keys.len() + 1
                    ),
                });
            };
            let id = id.trim();
            check_id(id)?;
            let which = format!("entry {}", keys.len() + 1);
            keys.push((id.to_owned(), MasterKey::parse_with_id(key, Some(which))?));
        }
        MasterKeyring::new(keys)
    }

    fn parse_json(text: &str) -> Result<MasterKeyring, CryptoError> {
        // serde_json's messages may quote the offending input (a key): report only where
        // and what kind of problem it is.
        let parsed: KeyringJson =
            serde_json::from_str(text).map_err(|e| CryptoError::InvalidKeyring {
                reason: format!(
                    "JSON {} error at line {} column {}: expected {{\"keys\": [{{\"id\": …, \"key\": …}}], \"current\": …}}",
                    match e.classify() {
                        serde_json::error::Category::Io => "io",
                        serde_json::error::Category::Syntax => "syntax",
                        serde_json::error::Category::Data => "data",
                        serde_json::error::Category::Eof => "unexpected end",
                    },
                    e.line(),
                    e.column()
                ),
            })?;
        let mut keys = Vec::with_capacity(parsed.keys.len());
        for entry in &parsed.keys {
            check_id(&entry.id)?;
            keys.push((
                entry.id.clone(),
                MasterKey::parse_with_id(&entry.key, Some(format!("`{}`", entry.id)))?,
            ));
        }
        let current = match &parsed.current {
            None => keys.len().checked_sub(1),
            Some(id) => Some(keys.iter().position(|(k, _)| k == id).ok_or_else(|| {
                CryptoError::InvalidKeyring {
                    reason: format!("`current` names `{id}`, which is not in `keys`"),
                }
            })?),
        }
        .ok_or(CryptoError::InvalidKeyring {
            reason: "no keys".to_owned(),
        })?;
        Self::with_current(keys, current)
    }

    /// The id of the key new values are encrypted with.
    pub fn current_id(&self) -> &str {
        &self.keys[self.current].0
    }

    /// Every key id, in ring order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    /// Encrypts under the newest key: bound to `credential` when given, unbound otherwise.
    pub fn encrypt(
        &self,
        credential: Option<&str>,
        plaintext: &[u8],
    ) -> Result<String, CryptoError> {
        check_plaintext(credential, plaintext)?;
        let aad = credential.map(associated_data).unwrap_or_default();
        let sealed = seal(self.keys[self.current].1.bytes(), &aad, plaintext).ok_or(
            CryptoError::TooLarge {
                credential: credential.map(str::to_owned),
                limit: MAX_PLAINTEXT,
            },
        )?;
        Ok(format!("{AES256_PREFIX}{}", STANDARD.encode(sealed)))
    }

    /// Decrypts an `AES256:` value for `credential` (bound form first, then unbound; with
    /// `None` only the unbound form), trying the current key first, then the others.
    pub fn decrypt(&self, credential: Option<&str>, value: &str) -> Result<Decrypted, CryptoError> {
        let owned = || credential.map(str::to_owned);
        let encoded =
            value
                .trim()
                .strip_prefix(AES256_PREFIX)
                .ok_or_else(|| CryptoError::UnknownFormat {
                    credential: owned(),
                })?;
        let sealed = STANDARD
            .decode(encoded)
            .map_err(|_| CryptoError::Malformed {
                credential: owned(),
                reason: "not standard base64 after `AES256:`",
            })?;
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Malformed {
                credential: owned(),
                reason: "too short for nonce and tag",
            });
        }
        let bound_aad = credential.map(associated_data);
        let order = std::iter::once(self.current)
            .chain((0..self.keys.len()).filter(|&i| i != self.current));
        for i in order {
            let (id, key) = &self.keys[i];
            let attempts = bound_aad
                .as_deref()
                .map(|aad| (aad, true))
                .into_iter()
                .chain([(&[][..], false)]);
            for (aad, bound) in attempts {
                if let Some(plaintext) = open(key.bytes(), aad, &sealed) {
                    return Ok(Decrypted {
                        plaintext,
                        format: Format::Aes256,
                        bound,
                        key_id: Some(id.clone()),
                    });
                }
            }
        }
        Err(CryptoError::DoesNotDecrypt {
            credential: owned(),
        })
    }

    /// Re-encrypts an `AES256:` value to the newest key, bound to `credential`. Returns
    /// `None` when it already is (current key, bound), so a rotation leaves such files alone.
    pub fn reencrypt(&self, credential: &str, value: &str) -> Result<Option<String>, CryptoError> {
        let decrypted = self.decrypt(Some(credential), value)?;
        if decrypted.bound && decrypted.key_id.as_deref() == Some(self.current_id()) {
            return Ok(None);
        }
        self.encrypt(Some(credential), decrypted.plaintext.expose_secret())
            .map(Some)
    }
}

/// Refuses what is surely a mistake: nothing (an empty stdin) or more than [`MAX_PLAINTEXT`].
pub(crate) fn check_plaintext(
    credential: Option<&str>,
    plaintext: &[u8],
) -> Result<(), CryptoError> {
    let credential = || credential.map(str::to_owned);
    if plaintext.is_empty() {
        return Err(CryptoError::EmptyPlaintext {
            credential: credential(),
        });
    }
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(CryptoError::TooLarge {
            credential: credential(),
            limit: MAX_PLAINTEXT,
        });
    }
    Ok(())
}

fn check_id(id: &str) -> Result<(), CryptoError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(CryptoError::InvalidKeyring {
            reason: "key ids are 1-64 characters of letters, digits, `-`, `_` and `.`".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW_KEY: &str = "ritmo-example-master-key-32bytes";
    const SECRET: &[u8] = b"example-secret-value";

    fn ring() -> MasterKeyring {
        MasterKeyring::single(MasterKey::parse(RAW_KEY).unwrap())
    }

    fn assert_secret_free(message: &str) {
        for needle in ["example-secret-value", RAW_KEY, "ritmo-example"] {
            assert!(!message.contains(needle), "`{message}` leaks `{needle}`");
        }
    }

    #[test]
    fn a_bound_value_round_trips_and_says_it_is_bound() {
        let ring = ring();

        let value = ring.encrypt(Some("docker-registry"), SECRET).unwrap();
        let decrypted = ring.decrypt(Some("docker-registry"), &value).unwrap();

        assert!(value.starts_with("AES256:"));
        assert_eq!(decrypted.plaintext.expose_secret(), SECRET);
        assert!(decrypted.bound);
        assert_eq!(decrypted.format, Format::Aes256);
        assert_eq!(decrypted.key_id.as_deref(), Some("default"));
    }

    #[test]
    fn an_unbound_value_decrypts_for_any_credential_and_says_it_is_unbound() {
        let ring = ring();
        let value = ring.encrypt(None, SECRET).unwrap();

        let for_a = ring.decrypt(Some("a"), &value).unwrap();
        let for_b = ring.decrypt(Some("b"), &value).unwrap();
        let for_none = ring.decrypt(None, &value).unwrap();

        for decrypted in [for_a, for_b, for_none] {
            assert_eq!(decrypted.plaintext.expose_secret(), SECRET);
            assert!(!decrypted.bound);
        }
    }

    #[test]
    fn a_value_moved_to_another_credential_is_refused_without_leaking() {
        let ring = ring();
        let value = ring.encrypt(Some("docker-registry"), SECRET).unwrap();

        let err = ring.decrypt(Some("github-token"), &value).unwrap_err();

        assert!(matches!(err, CryptoError::DoesNotDecrypt { .. }));
        let message = err.to_string();
        assert_eq!(
            message,
            "encrypted value of credential `github-token` does not decrypt with the configured key: wrong key, tampered, or copied from another credential"
        );
        assert_secret_free(&message);
        assert_secret_free(&format!("{err:?}"));
    }

    #[test]
    fn a_bound_value_does_not_decrypt_without_a_name() {
        let ring = ring();
        let value = ring.encrypt(Some("docker-registry"), SECRET).unwrap();

        let err = ring.decrypt(None, &value).unwrap_err();

        assert!(matches!(
            err,
            CryptoError::DoesNotDecrypt { credential: None }
        ));
    }

    #[test]
    fn every_tampered_byte_is_refused() {
        let ring = ring();
        let value = ring.encrypt(Some("c"), SECRET).unwrap();
        let sealed = STANDARD.decode(&value[AES256_PREFIX.len()..]).unwrap();

        let results: Vec<_> = (0..sealed.len())
            .map(|i| {
                let mut tampered = sealed.clone();
                tampered[i] ^= 0x01;
                ring.decrypt(Some("c"), &format!("AES256:{}", STANDARD.encode(tampered)))
            })
            .collect();

        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(CryptoError::DoesNotDecrypt { .. })))
        );
    }

    #[test]
    fn each_encryption_uses_a_fresh_nonce() {
        let ring = ring();

        let first = ring.encrypt(Some("c"), SECRET).unwrap();
        let second = ring.encrypt(Some("c"), SECRET).unwrap();

        assert_ne!(first, second);
        assert_eq!(
            STANDARD.decode(&first[7..]).unwrap().len(),
            12 + SECRET.len() + 16
        );
    }

    #[test]
    fn malformed_values_are_refused_as_malformed() {
        let ring = ring();
        let short = format!("AES256:{}", STANDARD.encode([0u8; 27]));

        let not_base64 = ring.decrypt(Some("c"), "AES256:not base64!").unwrap_err();
        let too_short = ring.decrypt(Some("c"), &short).unwrap_err();
        let no_prefix = ring.decrypt(Some("c"), "KMS:abc").unwrap_err();

        assert!(matches!(not_base64, CryptoError::Malformed { .. }));
        assert!(matches!(too_short, CryptoError::Malformed { .. }));
        assert!(matches!(no_prefix, CryptoError::UnknownFormat { .. }));
        assert_eq!(
            too_short.to_string(),
            "encrypted value of credential `c` is malformed: too short for nonce and tag"
        );
    }

    #[test]
    fn empty_and_oversized_values_are_not_encrypted() {
        let ring = ring();

        let empty = ring.encrypt(Some("c"), b"").unwrap_err();
        let oversized = ring
            .encrypt(Some("c"), &vec![b'x'; MAX_PLAINTEXT + 1])
            .unwrap_err();
        let largest = ring.encrypt(Some("c"), &vec![b'x'; MAX_PLAINTEXT]);

        assert!(matches!(empty, CryptoError::EmptyPlaintext { .. }));
        assert_eq!(
            oversized.to_string(),
            "refusing to encrypt a value of credential `c` over 1048576 bytes"
        );
        assert!(largest.is_ok());
    }

    #[test]
    fn hex_base64_and_raw_spellings_of_one_key_are_the_same_key() {
        let hex_text = hex::encode(RAW_KEY);
        let base64_text = format!("{}\n", STANDARD.encode(RAW_KEY));
        let value = ring().encrypt(Some("c"), SECRET).unwrap();

        let from_hex = MasterKeyring::parse(&hex_text).unwrap();
        let from_base64 = MasterKeyring::parse(&base64_text).unwrap();
        let from_raw_with_newline = MasterKeyring::parse(&format!("{RAW_KEY}\n")).unwrap();

        for ring in [from_hex, from_base64, from_raw_with_newline] {
            let decrypted = ring.decrypt(Some("c"), &value).unwrap();
            assert_eq!(decrypted.plaintext.expose_secret(), SECRET);
        }
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_them() {
        let bad = [
            "too-short-key-material",
            "ritmo-example-master-key-33bytes!",
            &"ab".repeat(31),
            &STANDARD.encode("ritmo-16-bytes!!"),
            "",
        ];

        let errors: Vec<_> = bad
            .iter()
            .map(|k| MasterKey::parse(k).unwrap_err())
            .collect();

        for (key, err) in bad.iter().zip(&errors) {
            assert!(matches!(err, CryptoError::InvalidMasterKey { .. }));
            let message = err.to_string();
            assert!(
                key.is_empty() || !message.contains(key),
                "`{message}` echoes the key"
            );
            assert!(message.starts_with(
                "invalid master key: expected 64 hex characters, base64 of 32 bytes or exactly 32 raw bytes"
            ));
        }
    }

    #[test]
    fn a_bad_key_in_a_ring_is_named_by_position_not_by_its_text() {
        let text = format!("old:{},new:short-secret-key", hex::encode(RAW_KEY));

        let err = MasterKeyring::parse(&text).unwrap_err();

        let message = err.to_string();
        assert!(
            message.starts_with("invalid master key entry 2: "),
            "{message}"
        );
        assert!(!message.contains("short-secret-key") && !message.contains("new"));
    }

    #[test]
    fn a_keyring_encrypts_with_the_newest_and_decrypts_with_any() {
        let old = MasterKey::generate();
        let new = MasterKey::generate();
        let before = MasterKeyring::single(old.clone());
        let old_value = before.encrypt(Some("c"), SECRET).unwrap();
        let text = format!(
            "k1:{},k2:{}",
            old.to_hex().expose_secret(),
            new.to_hex().expose_secret()
        );

        let ring = MasterKeyring::parse(&text).unwrap();
        let new_value = ring.encrypt(Some("c"), SECRET).unwrap();

        assert_eq!(ring.current_id(), "k2");
        assert_eq!(ring.ids().collect::<Vec<_>>(), ["k1", "k2"]);
        let old_decrypted = ring.decrypt(Some("c"), &old_value).unwrap();
        assert_eq!(old_decrypted.key_id.as_deref(), Some("k1"));
        assert_eq!(old_decrypted.plaintext.expose_secret(), SECRET);
        assert_eq!(
            ring.decrypt(Some("c"), &new_value)
                .unwrap()
                .key_id
                .as_deref(),
            Some("k2")
        );
        assert!(matches!(
            before.decrypt(Some("c"), &new_value),
            Err(CryptoError::DoesNotDecrypt { .. })
        ));
    }

    #[test]
    fn reencrypt_moves_old_and_unbound_values_to_the_newest_key_bound() {
        let old = MasterKey::generate();
        let new = MasterKey::generate();
        let old_value = MasterKeyring::single(old.clone())
            .encrypt(Some("c"), SECRET)
            .unwrap();
        let ring =
            MasterKeyring::new(vec![("k1".into(), old), ("k2".into(), new.clone())]).unwrap();
        let unbound_current = ring.encrypt(None, SECRET).unwrap();
        let bound_current = ring.encrypt(Some("c"), SECRET).unwrap();

        let moved = ring.reencrypt("c", &old_value).unwrap().unwrap();
        let bound = ring.reencrypt("c", &unbound_current).unwrap().unwrap();
        let untouched = ring.reencrypt("c", &bound_current).unwrap();

        let only_new = MasterKeyring::single(new);
        for value in [&moved, &bound] {
            let decrypted = only_new.decrypt(Some("c"), value).unwrap();
            assert!(decrypted.bound);
            assert_eq!(decrypted.plaintext.expose_secret(), SECRET);
        }
        assert_eq!(untouched, None);
    }

    #[test]
    fn a_json_keyring_takes_current_from_the_object() {
        let (a, b) = (MasterKey::generate(), MasterKey::generate());
        let json = serde_json::json!({
            "keys": [
                {"id": "2025-01", "key": a.to_hex().expose_secret()},
                {"id": "2026-01", "key": STANDARD.encode(b.bytes())},
            ],
            "current": "2025-01",
        })
        .to_string();

        let ring = MasterKeyring::parse(&json).unwrap();
        let value = ring.encrypt(Some("c"), SECRET).unwrap();

        assert_eq!(ring.current_id(), "2025-01");
        assert!(MasterKeyring::single(a).decrypt(Some("c"), &value).is_ok());
    }

    #[test]
    fn a_json_keyring_without_current_uses_the_last_key() {
        let json = format!(
            r#"{{"keys": [{{"id": "a", "key": "{}"}}, {{"id": "b", "key": "{RAW_KEY}"}}]}}"#,
            MasterKey::generate().to_hex().expose_secret()
        );

        let ring = MasterKeyring::parse(&json).unwrap();

        assert_eq!(ring.current_id(), "b");
    }

    #[test]
    fn broken_json_keyrings_are_refused_without_echoing_keys() {
        let wrong_type = format!(r#"{{"keys": "{RAW_KEY}"}}"#);
        let unknown_current =
            format!(r#"{{"keys": [{{"id": "a", "key": "{RAW_KEY}"}}], "current": "z"}}"#);
        let bad_key = r#"{"keys": [{"id": "a", "key": "ritmo-example-short"}]}"#;
        let duplicate = format!(
            r#"{{"keys": [{{"id": "a", "key": "{RAW_KEY}"}}, {{"id": "a", "key": "{RAW_KEY}"}}]}}"#
        );
        let empty = r#"{"keys": []}"#;

        let errors: Vec<String> = [
            &wrong_type[..],
            &unknown_current,
            bad_key,
            &duplicate,
            empty,
        ]
        .iter()
        .map(|text| MasterKeyring::parse(text).unwrap_err().to_string())
        .collect();

        for message in &errors {
            assert_secret_free(message);
        }
        assert!(errors[0].starts_with("invalid master keyring: JSON data error at line 1"));
        assert_eq!(
            errors[1],
            "invalid master keyring: `current` names `z`, which is not in `keys`"
        );
        assert!(errors[2].starts_with("invalid master key `a`: "));
        assert_eq!(
            errors[3],
            "invalid master keyring: key id `a` appears twice"
        );
        assert_eq!(errors[4], "invalid master keyring: no keys");
    }

    #[test]
    fn debug_of_keys_and_rings_shows_no_key_material() {
        let key = MasterKey::parse(RAW_KEY).unwrap();
        let ring = MasterKeyring::new(vec![("k1".into(), key.clone())]).unwrap();
        let hex_key = hex::encode(RAW_KEY);

        let outputs = [
            format!("{key:?}"),
            format!("{ring:?}"),
            format!("{ring:#?}"),
        ];

        for output in &outputs {
            assert!(output.contains("REDACTED"), "{output}");
            assert_secret_free(output);
            assert!(
                !output.contains(&hex_key) && !output.contains("114, 105"),
                "{output}"
            );
        }
    }
}
