//! What every function needs once per cold start: settings, a database connection, the queues,
//! the credential keys and the metrics sink. Built once, shared behind an `Arc`.

use tokio::sync::Mutex;

use crate::config::Settings;
use crate::crypto::{self, CredentialKeys, SecretsManager};
use crate::metrics::{Metric, MetricsBatch, MetricsSink, UNKNOWN_TARGET};
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
    /// Reads the database secret (cached), when the settings name one.
    database_secrets: Option<SecretsManager>,
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
        let store = open_store(&settings, secrets.as_ref(), &metrics).await?;
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
            database_secrets: secrets,
        })
    }

    /// A new database connection, for when the container's one was lost (a Lambda container
    /// outlives database restarts, failovers and password rotations).
    pub async fn reconnect(&self) -> Result<Store> {
        open_store(
            &self.settings,
            self.database_secrets.as_ref(),
            &self.metrics,
        )
        .await
    }
}

/// Connects as the settings say; a failure is counted in `DatabaseConnectionFailed`, which
/// the stack's database alarm watches.
async fn open_store(
    settings: &Settings,
    secrets: Option<&SecretsManager>,
    metrics: &MetricsSink,
) -> Result<Store> {
    let connected = Store::connect_with(&DatabaseSettings::from_settings(settings), secrets).await;
    if connected.is_err() {
        MetricsBatch::new(UNKNOWN_TARGET)
            .put(Metric::DatabaseConnectionFailed, 1.0)
            .emit_to(metrics);
    }
    Ok(connected?)
}
