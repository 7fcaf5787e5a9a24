//! What every function needs once per cold start: settings, a database connection, the queues,
//! the credential keys and the metrics sink. Built once, shared behind an `Arc`.

use tokio::sync::{Mutex, MutexGuard, OnceCell};

use crate::config::Settings;
use crate::crypto::secret_refs::SecretRefChecker;
use crate::crypto::{self, CredentialKeys, SecretsManager};
use crate::metrics::{Metric, MetricsBatch, MetricsSink, UNKNOWN_TARGET};
use crate::notify::Notifier;
use crate::queue::Queues;
use crate::store::{DatabaseSettings, Store};
use crate::{Error, Result};

pub struct Services {
    pub settings: Settings,
    /// One connection per container: Lambda runs one invocation at a time, and `ritmo serve`
    /// serialises database work through it (the apply transaction needs it exclusively).
    pub store: Mutex<Store>,
    pub queues: Queues,
    /// Read on first use: only the planner (credentials) and the notifiers (a Slack URL kept
    /// as a credential) decrypt, so the webhook and the API never read the master key and no
    /// function reads it while starting.
    keys: OnceCell<CredentialKeys>,
    /// Built on first use, like the notifier: only the planner checks `secret_ref`s.
    refs: OnceCell<SecretRefChecker>,
    pub metrics: MetricsSink,
    /// Where sync failures, drift and pending approvals are announced. Built on first use:
    /// only the planner, applier and poller announce, so the webhook and the API neither
    /// build it nor link its SNS client (docs/benchmarks.md, binary size).
    notifier: OnceCell<Notifier>,
    /// Reads the service's own secrets (database credentials, webhook secret) with one cache
    /// per container; built on first use, so a setup naming no secret never loads AWS config.
    secrets: OnceCell<SecretsManager>,
}

impl Services {
    /// What a Lambda function builds once per cold start: settings from the bootstrap file and
    /// environment, the SQS queues from their URL variables, metrics on stdout, the database.
    pub async fn for_lambda() -> Result<Services> {
        let settings = Settings::from_process_env(None)?;
        let (Some(plan_queue_url), Some(apply_queue_url)) = (
            settings.plan_queue_url.clone(),
            settings.apply_queue_url.clone(),
        ) else {
            return Err(Error::Unsupported(
                "the queues are not configured: set RITMO_GITOPS_PLAN_QUEUE_URL and \
                 RITMO_GITOPS_APPLY_QUEUE_URL"
                    .into(),
            ));
        };
        let client = aws_sdk_sqs::Client::new(&crate::aws::config().await);
        let queues = Queues::sqs(client, plan_queue_url, apply_queue_url);
        Services::connect(settings, queues, MetricsSink::Stdout).await
    }

    /// The store, reconnected first when its connection was lost (a Lambda container outlives
    /// database restarts and failovers).
    pub async fn database(&self) -> Result<MutexGuard<'_, Store>> {
        let mut store = self.store.lock().await;
        if store.is_closed() {
            tracing::warn!("the database connection was lost; reconnecting");
            *store = self.reconnect().await?;
        }
        Ok(store)
    }

    /// What checking a repository needs, from this container's keys and settings.
    pub async fn checks(&self) -> Result<crate::source::Checks<'_>> {
        Ok(crate::source::Checks {
            keys: self.keys().await?,
            refs: self.refs().await,
            builtin_plugins: &self.settings.builtin_plugins,
        })
    }

    /// The credential keys, loaded by the first call (reading the master key from Secrets
    /// Manager when the settings name one); a failed load is tried again by the next call.
    pub async fn keys(&self) -> Result<&CredentialKeys> {
        self.keys
            .get_or_try_init(|| async {
                let secrets = self
                    .secrets_manager_for(&self.settings.master_key_secret_id)
                    .await;
                Ok(crypto::credential_keys(&self.settings, secrets).await?)
            })
            .await
    }

    /// Connects to the database the settings name (a URL, or an RDS secret with TLS) and sets
    /// up the `secret_ref` checker; the credential keys wait for [`keys`](Self::keys).
    pub async fn connect(
        settings: Settings,
        queues: Queues,
        metrics: MetricsSink,
    ) -> Result<Services> {
        Services::open(settings, queues, metrics, OnceCell::new()).await
    }

    /// [`connect`](Self::connect) reading the service's secrets through `secrets` (a client
    /// for another endpoint, a shorter TTL or refresh interval) instead of the default one.
    pub async fn connect_with_secrets_manager(
        settings: Settings,
        queues: Queues,
        metrics: MetricsSink,
        secrets: SecretsManager,
    ) -> Result<Services> {
        Services::open(settings, queues, metrics, OnceCell::new_with(Some(secrets))).await
    }

    async fn open(
        settings: Settings,
        queues: Queues,
        metrics: MetricsSink,
        secrets: OnceCell<SecretsManager>,
    ) -> Result<Services> {
        let database_secrets = match &settings.database_secret_id {
            Some(_) => Some(secrets.get_or_init(crypto::secrets_manager).await),
            None => None,
        };
        let store = open_store(&settings, database_secrets, &metrics).await?;
        Ok(Services {
            settings,
            store: Mutex::new(store),
            queues,
            keys: OnceCell::new(),
            refs: OnceCell::new(),
            metrics,
            notifier: OnceCell::new(),
            secrets,
        })
    }

    /// The `secret_ref` checker the settings ask for.
    pub async fn refs(&self) -> &SecretRefChecker {
        self.refs
            .get_or_init(|| SecretRefChecker::from_settings(&self.settings))
            .await
    }

    /// The notifier the settings configure.
    pub async fn notifier(&self) -> &Notifier {
        self.notifier
            .get_or_init(|| Notifier::from_settings(&self.settings))
            .await
    }

    /// Announces through `notifier` instead (tests point one at a local hook or at moto).
    pub fn set_notifier(&mut self, notifier: Notifier) {
        self.notifier = OnceCell::new_with(Some(notifier));
    }

    /// The Secrets Manager reader of this container's own secrets.
    pub async fn secrets_manager(&self) -> &SecretsManager {
        self.secrets.get_or_init(crypto::secrets_manager).await
    }

    /// The reader when a setting names a secret; none (and no AWS configuration loaded)
    /// when it names none.
    async fn secrets_manager_for(&self, secret_id: &Option<String>) -> Option<&SecretsManager> {
        match secret_id {
            Some(_) => Some(self.secrets_manager().await),
            None => None,
        }
    }

    /// A new database connection, for when the container's one was lost (a Lambda container
    /// outlives database restarts, failovers and password rotations). Credentials from a
    /// secret are read from the cache first; when the server refuses them, the cached secret
    /// is dropped and read again once (see `store::connect`), so a rotated password is picked
    /// up here without waiting for the TTL.
    pub async fn reconnect(&self) -> Result<Store> {
        let secrets = self
            .secrets_manager_for(&self.settings.database_secret_id)
            .await;
        open_store(&self.settings, secrets, &self.metrics).await
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
