//! The store's side of the operator controls (issue 24): which targets are suspended, the
//! webhook deliveries left alone because of it, and when the poller last asked each remote.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::{Store, StoreError, delivery_key, id_from_row};
use crate::model::ResourceId;

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

    /// Rows labelled `managed-by: gitops` that no target's inventory owns (made by hand, by
    /// an older tool, or left by a target since removed), by kind and name.
    pub async fn unowned_managed(&self) -> Result<Vec<ResourceId>, StoreError> {
        let rows = self
            .db()
            .query(
                "SELECT r.kind, r.name FROM resources r
                 WHERE r.labels->>'managed-by' = 'gitops'
                   AND NOT EXISTS (SELECT 1 FROM inventory i
                                   WHERE i.kind = r.kind AND i.name = r.name)
                 ORDER BY r.kind, r.name",
                &[],
            )
            .await
            .map_err(StoreError::query("look for unowned managed rows"))?;
        rows.iter()
            .map(|row| id_from_row(row, "resources"))
            .collect()
    }

    /// Takes the unowned row `id` into `target`'s inventory at `commit`, with the row's current
    /// hash (so the next plan updates it when Git says otherwise). False when the row does not
    /// exist or is owned already.
    pub async fn adopt(
        &self,
        target: &str,
        id: &ResourceId,
        commit: &str,
    ) -> Result<bool, StoreError> {
        let adopted = self
            .db()
            .execute(
                "INSERT INTO inventory (target, kind, name, spec_hash, git_commit)
                 SELECT $1, r.kind, r.name, r.spec_hash, $4 FROM resources r
                 WHERE r.kind = $2 AND r.name = $3
                   AND NOT EXISTS (SELECT 1 FROM inventory i
                                   WHERE i.kind = r.kind AND i.name = r.name)
                 ON CONFLICT DO NOTHING",
                &[&target, &id.kind.as_str(), &id.name, &commit],
            )
            .await
            .map_err(StoreError::query(
                "adopt a resource into a target's inventory",
            ))?;
        Ok(adopted == 1)
    }
}
