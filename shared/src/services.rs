//! What every function needs once per cold start: settings, a database connection, the queues,
//! the credential keys and the metrics sink. Built once, shared behind an `Arc`.

use secrecy::ExposeSecret;
use tokio::sync::Mutex;

use crate::config::Settings;
use crate::crypto::CredentialKeys;
use crate::metrics::MetricsSink;
use crate::queue::Queues;
use crate::store::Store;
use crate::{Error, Result, workflow};

pub struct Services {
    pub settings: Settings,
    /// One connection per container: Lambda runs one invocation at a time, and `ritmo serve`
    /// serialises database work through it (the apply transaction needs it exclusively).
    pub store: Mutex<Store>,
    pub queues: Queues,
    pub keys: CredentialKeys,
    pub metrics: MetricsSink,
}

impl Services {
    /// Connects to the database named by the settings and loads the credential keys.
    pub async fn connect(
        settings: Settings,
        queues: Queues,
        metrics: MetricsSink,
    ) -> Result<Services> {
        let url = settings
            .database_url
            .as_ref()
            .ok_or_else(|| Error::Unsupported("no database configured: set DATABASE_URL".into()))?;
        let store = Store::connect(url.expose_secret()).await?;
        let keys = workflow::credential_keys(&settings).await?;
        Ok(Services {
            settings,
            store: Mutex::new(store),
            queues,
            keys,
            metrics,
        })
    }
}
