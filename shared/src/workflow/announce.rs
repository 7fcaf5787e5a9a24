//! Announcing what a sync did on the configured channels (`notify`): the events go out
//! through the container's [`Notifier`]; a Slack URL kept as a credential is read from the
//! store and decrypted with the container's keys.

use secrecy::{ExposeSecret, SecretString};

use crate::config::SecretSetting;
use crate::model::Kind;
use crate::notify::{Event, NotifyError, NotifyReport};
use crate::services::Services;

/// The Slack webhook URL: the named credential's `encrypted_value`, decrypted.
async fn slack_url(services: &Services, name: &str) -> Result<SecretString, NotifyError> {
    let resources = {
        let store = services
            .database()
            .await
            .map_err(|e| NotifyError::CredentialUnreadable {
                name: name.to_string(),
                reason: e.to_string(),
            })?;
        store
            .resources(Some(Kind::Credential), Some(name))
            .await
            .map_err(|e| NotifyError::CredentialUnreadable {
                name: name.to_string(),
                reason: e.to_string(),
            })?
    };
    let credential =
        resources
            .into_iter()
            .next()
            .ok_or_else(|| NotifyError::CredentialMissing {
                name: name.to_string(),
            })?;
    let value = credential
        .spec
        .get("encrypted_value")
        .and_then(|value| value.as_str())
        .ok_or_else(|| NotifyError::CredentialNotEncrypted {
            name: name.to_string(),
        })?;
    // The crypto errors name the credential and never carry key material or plaintext.
    let unreadable = |reason: String| NotifyError::CredentialUnreadable {
        name: name.to_string(),
        reason,
    };
    let keys = services
        .keys()
        .await
        .map_err(|e| unreadable(e.to_string()))?;
    let decrypted = keys
        .decrypt(name, value)
        .await
        .map_err(|e| unreadable(e.to_string()))?;
    let url = std::str::from_utf8(decrypted.plaintext.expose_secret())
        .map_err(|_| NotifyError::CredentialUnreadable {
            name: name.to_string(),
            reason: "the value is not UTF-8 text".into(),
        })?
        .trim()
        .to_string();
    Ok(SecretString::from(url))
}

/// Sends `event` on every configured channel (see [`crate::notify::Notifier::send`]); a Slack URL kept as a
/// credential is read and decrypted here. Never fails. Call it without holding the store lock.
pub async fn announce(services: &Services, event: &Event) -> NotifyReport {
    let subscriptions = services
        .settings
        .target(event.target())
        .map(|target| target.controls.notifications.as_slice())
        .unwrap_or_default();
    services
        .notifier()
        .await
        .send(
            event,
            subscriptions,
            |name| async move { slack_url(services, &name).await },
            |setting| async move { signing_secret(services, &setting).await },
            &services.metrics,
        )
        .await
}

/// A webhook's signing secret, read where the bootstrap file says (the value came from the
/// environment at start-up; a file is read each time, as a mounted secret may rotate).
async fn signing_secret(
    services: &Services,
    setting: &SecretSetting,
) -> Result<SecretString, NotifyError> {
    let unreadable = |reason: String| NotifyError::SigningSecret { reason };
    match setting {
        SecretSetting::Value(value) => Ok(value.clone()),
        SecretSetting::File(path) => std::fs::read_to_string(path)
            .map(|text| SecretString::from(text.trim().to_string()))
            .map_err(|e| unreadable(format!("cannot read `{}`: {e}", path.display()))),
        SecretSetting::SecretsManager(id) => services
            .secrets_manager()
            .await
            .get_string(id)
            .await
            .map_err(|e| unreadable(format!("secret `{id}`: {e}"))),
    }
}
