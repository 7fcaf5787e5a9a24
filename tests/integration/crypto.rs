//! crypto scenarios against moto: KMS values bound to their credential (direct and envelope),
//! GenerateDataKey with an encryption context, the Secrets Manager cache and existence
//! checks, and a master keyring kept in a Secrets Manager secret.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ritmo::crypto::{
    CredentialKeys, CryptoError, ExposeSecret, Format, MasterKey, MasterKeyring, SecretsManager,
    encryption_context,
};
use ritmo_tests::moto::Moto;

const SECRET: &str = "planted-secret-9f3c1e";

async fn kms_keys(moto: &Moto) -> CredentialKeys {
    let kms = moto.kms().await;
    let key = kms.create_key().send().await.unwrap();
    let key_id = key.key_metadata().unwrap().key_id().to_owned();
    CredentialKeys {
        master: None,
        kms: Some(kms),
        kms_key_id: Some(key_id),
    }
}

fn assert_secret_free(err: &CryptoError) {
    let (display, debug) = (err.to_string(), format!("{err:?}"));
    assert!(!display.contains(SECRET), "{display}");
    assert!(!debug.contains(SECRET), "{debug}");
}

#[tokio::test]
async fn a_kms_value_round_trips_bound_to_its_credential() {
    let moto = Moto::start();
    let keys = kms_keys(&moto).await;

    let value = keys
        .encrypt_kms("docker-registry", SECRET.as_bytes())
        .await
        .unwrap();
    let decrypted = keys.decrypt("docker-registry", &value).await.unwrap();

    assert!(value.starts_with("KMS:") && !value.starts_with("KMS:v2:"));
    assert!(!value.contains(SECRET));
    assert_eq!(decrypted.plaintext.expose_secret(), SECRET.as_bytes());
    assert_eq!(decrypted.format, Format::Kms);
    assert!(decrypted.bound);
}

#[tokio::test]
async fn a_kms_value_moved_to_another_credential_is_refused() {
    let moto = Moto::start();
    let keys = kms_keys(&moto).await;
    let value = keys
        .encrypt_kms("docker-registry", SECRET.as_bytes())
        .await
        .unwrap();

    let err = keys.decrypt("github-token", &value).await.unwrap_err();

    assert!(matches!(err, CryptoError::DoesNotDecrypt { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "encrypted value of credential `github-token` does not decrypt with the configured key: wrong key, tampered, or copied from another credential"
    );
    assert_secret_free(&err);
}

#[tokio::test]
async fn moto_enforces_the_encryption_context_on_decrypt() {
    let moto = Moto::start();
    let keys = kms_keys(&moto).await;
    let kms = keys.kms.as_ref().unwrap();
    let blob = kms
        .encrypt()
        .key_id(keys.kms_key_id.as_deref().unwrap())
        .plaintext(Blob::new(SECRET))
        .set_encryption_context(Some(encryption_context("a")))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();

    let same = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .set_encryption_context(Some(encryption_context("a")))
        .send()
        .await;
    let other = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .set_encryption_context(Some(encryption_context("b")))
        .send()
        .await;
    let none = kms.decrypt().ciphertext_blob(blob).send().await;

    assert_eq!(same.unwrap().plaintext.unwrap().as_ref(), SECRET.as_bytes());
    assert!(other.is_err());
    assert!(none.is_err());
}

#[tokio::test]
async fn a_tampered_kms_value_is_refused() {
    let moto = Moto::start();
    let keys = kms_keys(&moto).await;
    let value = keys.encrypt_kms("c", SECRET.as_bytes()).await.unwrap();
    let mut blob = base64_decode(&value["KMS:".len()..]);
    let last = blob.len() - 1;
    blob[last] ^= 0x01;
    let tampered = format!("KMS:{}", base64_encode(&blob));

    let err = keys.decrypt("c", &tampered).await.unwrap_err();

    assert!(matches!(err, CryptoError::DoesNotDecrypt { .. }), "{err}");
    assert_secret_free(&err);
}

#[tokio::test]
async fn a_10_kb_value_is_enveloped_and_bound_to_its_credential() {
    let moto = Moto::start();
    let keys = kms_keys(&moto).await;
    let large = format!("{SECRET}{}", "x".repeat(10 * 1024));

    let value = keys.encrypt_kms("ssh-key", large.as_bytes()).await.unwrap();
    let decrypted = keys.decrypt("ssh-key", &value).await.unwrap();
    let moved = keys.decrypt("other", &value).await.unwrap_err();

    assert!(value.starts_with("KMS:v2:"));
    assert!(!value.contains(SECRET));
    assert_eq!(decrypted.plaintext.expose_secret(), large.as_bytes());
    assert_eq!(decrypted.format, Format::KmsEnvelope);
    assert!(decrypted.bound);
    assert!(
        matches!(moved, CryptoError::DoesNotDecrypt { .. }),
        "{moved}"
    );
    assert_secret_free(&moved);
}

#[tokio::test]
async fn a_tampered_envelope_body_is_refused() {
    let moto = Moto::start();
    let keys = kms_keys(&moto).await;
    let value = keys
        .encrypt_kms("ssh-key", "y".repeat(5000).as_bytes())
        .await
        .unwrap();
    let mut bytes = base64_decode(&value["KMS:v2:".len()..]);
    let middle = bytes.len() - 100;
    bytes[middle] ^= 0x01;
    let tampered = format!("KMS:v2:{}", base64_encode(&bytes));

    let err = keys.decrypt("ssh-key", &tampered).await.unwrap_err();

    assert!(matches!(err, CryptoError::DoesNotDecrypt { .. }), "{err}");
}

#[tokio::test]
async fn generate_data_key_wraps_a_key_that_unwraps_only_with_its_context() {
    let moto = Moto::start();
    let keys = kms_keys(&moto).await;
    let kms = keys.kms.as_ref().unwrap();

    let generated = kms
        .generate_data_key()
        .key_id(keys.kms_key_id.as_deref().unwrap())
        .key_spec(DataKeySpec::Aes256)
        .set_encryption_context(Some(encryption_context("c")))
        .send()
        .await
        .unwrap();
    let wrapped = generated.ciphertext_blob.clone().unwrap();
    let unwrapped = kms
        .decrypt()
        .ciphertext_blob(wrapped.clone())
        .set_encryption_context(Some(encryption_context("c")))
        .send()
        .await
        .unwrap();
    let elsewhere = kms
        .decrypt()
        .ciphertext_blob(wrapped)
        .set_encryption_context(Some(encryption_context("d")))
        .send()
        .await;

    let plaintext = generated.plaintext.unwrap();
    assert_eq!(plaintext.as_ref().len(), 32);
    assert_eq!(unwrapped.plaintext.unwrap().as_ref(), plaintext.as_ref());
    assert!(elsewhere.is_err());
}

#[tokio::test]
async fn encrypting_under_a_missing_kms_key_is_a_permanent_kms_error() {
    let moto = Moto::start();
    let mut keys = kms_keys(&moto).await;
    keys.kms_key_id = Some("alias/does-not-exist".to_owned());

    let err = keys.encrypt_kms("c", SECRET.as_bytes()).await.unwrap_err();

    assert!(matches!(err, CryptoError::Kms { .. }), "{err}");
    assert!(!err.is_retryable());
    assert!(
        err.to_string()
            .starts_with("kms `Encrypt` for credential `c` failed: NotFoundException: ")
    );
    assert_secret_free(&err);
}

#[tokio::test]
async fn a_kms_endpoint_that_hangs_up_is_a_retryable_error() {
    let moto = Moto::start();
    let keys = kms_keys(&moto).await;
    let value = keys.encrypt_kms("c", SECRET.as_bytes()).await.unwrap();
    // A listener we own (not a closed port another test's server could take) that drops
    // every connection unanswered.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || listener.incoming().for_each(drop));
    let config = aws_sdk_kms::config::Builder::from(&moto.sdk_config().await)
        .endpoint_url(endpoint)
        .build();
    let unreachable = CredentialKeys {
        kms: Some(aws_sdk_kms::Client::from_conf(config)),
        ..keys
    };

    let err = unreachable.decrypt("c", &value).await.unwrap_err();

    assert!(matches!(err, CryptoError::Kms { .. }), "{err}");
    assert!(err.is_retryable());
    assert_secret_free(&err);
}

#[tokio::test]
async fn a_cached_secret_is_served_until_invalidated() {
    let moto = Moto::start();
    let client = moto.secrets_manager().await;
    client
        .create_secret()
        .name("ritmo/git-token")
        .secret_string("ghp-first")
        .send()
        .await
        .unwrap();
    let secrets = SecretsManager::new(client.clone());

    let first = secrets.get_string("ritmo/git-token").await.unwrap();
    client
        .put_secret_value()
        .secret_id("ritmo/git-token")
        .secret_string("ghp-second")
        .send()
        .await
        .unwrap();
    let still_cached = secrets.get_string("ritmo/git-token").await.unwrap();
    secrets.invalidate("ritmo/git-token");
    let refreshed = secrets.get_string("ritmo/git-token").await.unwrap();

    assert_eq!(first.expose_secret(), "ghp-first");
    assert_eq!(still_cached.expose_secret(), "ghp-first");
    assert_eq!(refreshed.expose_secret(), "ghp-second");
}

#[tokio::test]
async fn a_deleted_secret_is_served_from_the_cache_then_reported_missing() {
    let moto = Moto::start();
    let client = moto.secrets_manager().await;
    client
        .create_secret()
        .name("ritmo/webhook-secret")
        .secret_string(SECRET)
        .send()
        .await
        .unwrap();
    let secrets = SecretsManager::new(client.clone());
    secrets.get_string("ritmo/webhook-secret").await.unwrap();
    client
        .delete_secret()
        .secret_id("ritmo/webhook-secret")
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();

    let cached = secrets.get_string("ritmo/webhook-secret").await.unwrap();
    secrets.invalidate("ritmo/webhook-secret");
    let err = secrets
        .get_string("ritmo/webhook-secret")
        .await
        .unwrap_err();

    assert_eq!(cached.expose_secret(), SECRET);
    assert_eq!(
        err.to_string(),
        "secret `ritmo/webhook-secret` not found in secrets manager"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn exists_describes_the_secret_without_reading_it() {
    let moto = Moto::start();
    let client = moto.secrets_manager().await;
    // No value at all: GetSecretValue would fail, DescribeSecret does not.
    client
        .create_secret()
        .name("prod/db-password")
        .send()
        .await
        .unwrap();
    client
        .create_secret()
        .name("prod/retired")
        .secret_string("x")
        .send()
        .await
        .unwrap();
    client
        .delete_secret()
        .secret_id("prod/retired")
        .recovery_window_in_days(7)
        .send()
        .await
        .unwrap();
    let secrets = SecretsManager::new(client);

    let present = secrets.exists("prod/db-password").await.unwrap();
    let missing = secrets.exists("prod/nope").await.unwrap();
    let scheduled_for_deletion = secrets.exists("prod/retired").await.unwrap();

    assert!(present);
    assert!(!missing);
    assert!(!scheduled_for_deletion);
    assert!(secrets.get_string("prod/db-password").await.is_err());
    moto.reset();
    assert!(!secrets.exists("prod/db-password").await.unwrap());
}

#[tokio::test]
async fn a_master_keyring_loads_from_a_json_secret_and_rotates() {
    let moto = Moto::start();
    let client = moto.secrets_manager().await;
    let (old, new) = (MasterKey::generate(), MasterKey::generate());
    let old_value = MasterKeyring::single(old.clone())
        .encrypt(Some("docker-registry"), SECRET.as_bytes())
        .unwrap();
    let json = serde_json::json!({
        "keys": [
            {"id": "2025-06", "key": old.to_hex().expose_secret()},
            {"id": "2026-01", "key": new.to_hex().expose_secret()},
        ],
        "current": "2026-01",
    });
    client
        .create_secret()
        .name("ritmo/master-key")
        .secret_string(json.to_string())
        .send()
        .await
        .unwrap();
    let secrets = SecretsManager::new(client);

    let ring = secrets.master_keyring("ritmo/master-key").await.unwrap();
    let keys = CredentialKeys {
        master: Some(ring.clone()),
        ..CredentialKeys::default()
    };
    let old_outcome = keys.verify("docker-registry", &old_value).await.unwrap();
    let rotated = ring
        .reencrypt("docker-registry", &old_value)
        .unwrap()
        .unwrap();
    let new_outcome = keys.verify("docker-registry", &rotated).await.unwrap();

    assert_eq!(ring.current_id(), "2026-01");
    assert_eq!(old_outcome.key_id.as_deref(), Some("2025-06"));
    assert_eq!(new_outcome.key_id.as_deref(), Some("2026-01"));
    let only_new = MasterKeyring::single(new);
    let decrypted = only_new.decrypt(Some("docker-registry"), &rotated).unwrap();
    assert_eq!(decrypted.plaintext.expose_secret(), SECRET.as_bytes());
}

fn base64_decode(text: &str) -> Vec<u8> {
    STANDARD.decode(text).unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}
