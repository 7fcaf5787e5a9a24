//! What every function needs once per cold start: settings, a database connection, the queues,
//! the credential keys and the metrics sink. Built once, shared behind an `Arc`.

use tokio::sync::Mutex;

use crate::config::Settings;
use crate::crypto::{self, CredentialKeys};
use crate::metrics::MetricsSink;
use crate::notify::Notifier;
use crate::queue::Queues;
use crate::secret_refs::SecretRefChecker;
use crate::store::{DatabaseSettings, Store};
use crate::{Result, workflow};

pub struct Services {
    pub settings: Settings,
    /// One connection per container: Lambda runs one invocation at a time, and `ritmo serve`
    /// serialises database work through it (the apply transaction needs it exclusively).
    pub store: Mutex<Store>,
    pub queues: Queues,
    pub keys: CredentialKeys,
    pub refs: SecretRefChecker,
    pub metrics: MetricsSink,
    /// Where sync failures, drift and pending approvals are announced.
    pub notifier: Notifier,
}

impl Services {
    /// What checking a repository needs, from this container's keys and settings.
    pub fn checks(&self) -> crate::workflow::Checks<'_> {
        crate::workflow::Checks {
            keys: &self.keys,
            refs: &self.refs,
            builtin_plugins: &self.settings.builtin_plugins,
        }
    }

    /// Connects to the database the settings name (a URL, or an RDS secret with TLS) and loads
    /// the credential keys and the `secret_ref` checker.
    pub async fn connect(
        settings: Settings,
        queues: Queues,
        metrics: MetricsSink,
    ) -> Result<Services> {
        let secrets = match &settings.database_secret_id {
            Some(_) => Some(crypto::secrets_manager().await),
            None => None,
        };
        let store = Store::connect_with(
            &DatabaseSettings::from_settings(&settings),
            secrets.as_ref(),
        )
        .await?;
        let keys = workflow::credential_keys(&settings).await?;
        let refs = SecretRefChecker::from_settings(&settings).await;
        let notifier = Notifier::from_settings(&settings).await;
        Ok(Services {
            settings,
            store: Mutex::new(store),
            queues,
            keys,
            refs,
            metrics,
            notifier,
        })
    }
}
