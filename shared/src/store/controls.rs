//! The store's side of the operator controls (issue 24): which targets are suspended, the
//! webhook deliveries left alone because of it, and when the poller last asked each remote.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::{Store, StoreError, delivery_key};

impl Store {
    /// Which of `names` are suspended in the database (the bootstrap file's `suspended` is the
    /// caller's to add).
    pub async fn suspended_targets(&self, names: &[&str]) -> Result<HashSet<String>, StoreError> {
        let rows = self
            .db()
            .query(
                "SELECT name FROM targets WHERE name = ANY($1::text[]) AND suspended",
                &[&names],
            )
            .await
            .map_err(StoreError::query("read which targets are suspended"))?;
        rows.iter()
            .map(|row| {
                row.try_get(0)
                    .map_err(StoreError::query("decode a target name"))
            })
            .collect()
    }

    /// Records on a webhook delivery the targets it did not sync because they are suspended.
    pub async fn record_skipped_delivery(
        &self,
        delivery_id: &str,
        skipped: &[String],
    ) -> Result<(), StoreError> {
        self.db()
            .execute(
                "UPDATE webhook_deliveries SET skipped_targets = $2 WHERE delivery_id = $1",
                &[&delivery_key(delivery_id).as_ref(), &skipped],
            )
            .await
            .map_err(StoreError::query(
                "record the targets a webhook delivery skipped",
            ))?;
        Ok(())
    }

    /// The targets a webhook delivery skipped (suspended ones); `None` for an unknown delivery.
    pub async fn delivery_skipped_targets(
        &self,
        delivery_id: &str,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let row = self
            .db()
            .query_opt(
                "SELECT skipped_targets FROM webhook_deliveries WHERE delivery_id = $1",
                &[&delivery_key(delivery_id).as_ref()],
            )
            .await
            .map_err(StoreError::query("read a webhook delivery"))?;
        row.map(|row| {
            row.try_get(0)
                .map_err(StoreError::query("decode a webhook delivery"))
        })
        .transpose()
    }

    /// Records that the poller asked the remotes of `names` where their branches are, at `at`.
    pub async fn record_head_checks(
        &self,
        names: &[&str],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if names.is_empty() {
            return Ok(());
        }
        self.db()
            .execute(
                "UPDATE targets SET last_head_check_at = $2 WHERE name = ANY($1::text[])",
                &[&names, &at],
            )
            .await
            .map_err(StoreError::query("record the remote head checks"))?;
        Ok(())
    }
}
