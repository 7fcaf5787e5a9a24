//! The store's side of the operator controls (issue 24): which targets are suspended, the
//! webhook deliveries left alone because of it, and when the poller last asked each remote.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::{PartialSync, Store, StoreError, delivery_key, get, id_from_row};
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

    /// [`Store::record_delivery`] and [`Store::suspended_targets`] of `names` in one statement:
    /// whether the delivery is new, and which of `names` are suspended. The webhook needs both
    /// for every push, and a round trip is most of what it waits on.
    pub async fn record_delivery_reading_suspended(
        &self,
        delivery_id: &str,
        target: Option<&str>,
        names: &[&str],
    ) -> Result<(bool, HashSet<String>), StoreError> {
        let row = self
            .db()
            .query_one(
                "WITH no_flush_wait AS (SELECT set_config('synchronous_commit', 'off', true)),
                 recorded AS (
                     INSERT INTO webhook_deliveries (delivery_id, target)
                     SELECT $1::text, $2::text FROM no_flush_wait
                     ON CONFLICT (delivery_id) DO NOTHING
                     RETURNING 1)
                 SELECT EXISTS (SELECT 1 FROM recorded),
                        ARRAY(SELECT name FROM targets WHERE name = ANY($3::text[]) AND suspended)",
                &[&delivery_key(delivery_id).as_ref(), &target, &names],
            )
            .await
            .map_err(StoreError::query("record a webhook delivery"))?;
        let recorded: bool = row
            .try_get(0)
            .map_err(StoreError::query("decode whether a delivery is new"))?;
        let suspended: Vec<String> = row
            .try_get(1)
            .map_err(StoreError::query("decode a target name"))?;
        Ok((recorded, suspended.into_iter().collect()))
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

    /// Moves the newest run of `target` waiting for its sync window to `planned`, and marks the
    /// older waiting ones `superseded` (the newest holds the latest commit). Returns the run to
    /// apply, if any.
    pub async fn release_waiting_run(
        &self,
        target: &str,
    ) -> Result<Option<uuid::Uuid>, StoreError> {
        let newest = self
            .db()
            .query_opt(
                "UPDATE sync_runs SET status = 'planned'
                 WHERE id = (SELECT id FROM sync_runs
                             WHERE target = $1 AND status = 'waiting_for_window'
                             ORDER BY started_at DESC LIMIT 1)
                   AND status = 'waiting_for_window'
                 RETURNING id",
                &[&target],
            )
            .await
            .map_err(StoreError::query(
                "release a run waiting for its sync window",
            ))?;
        let Some(row) = newest else {
            return Ok(None);
        };
        let id: uuid::Uuid = row
            .try_get(0)
            .map_err(StoreError::query("decode a released run"))?;
        self.db()
            .execute(
                "UPDATE sync_runs SET status = 'superseded', finished_at = clock_timestamp(),
                     error = 'a newer plan waited for the same sync window'
                 WHERE target = $1 AND status = 'waiting_for_window'",
                &[&target],
            )
            .await
            .map_err(StoreError::query(
                "supersede older runs waiting for a window",
            ))?;
        Ok(Some(id))
    }

    /// Moves a run waiting for its sync window (or for approval) to `planned` despite closed
    /// windows, recording who overrode them (and approved it). Returns false when the run waits
    /// for neither.
    pub async fn override_window(
        &self,
        sync_id: uuid::Uuid,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let updated = self
            .db()
            .execute(
                "UPDATE sync_runs SET status = 'planned', window_override_by = $2,
                     approved_by = coalesce(approved_by, $2),
                     approved_at = coalesce(approved_at, clock_timestamp())
                 WHERE id = $1 AND status IN ('waiting_for_window', 'pending_approval')",
                &[&sync_id, &actor],
            )
            .await
            .map_err(StoreError::query("override a sync window"))?;
        Ok(updated == 1)
    }

    /// Records that `actor` had run `sync_id` planned although the target's sync windows were
    /// closed to manual syncs (`sync --override-window`).
    pub async fn record_window_override(
        &self,
        sync_id: uuid::Uuid,
        actor: &str,
    ) -> Result<(), StoreError> {
        self.db()
            .execute(
                "UPDATE sync_runs SET window_override_by = $2 WHERE id = $1",
                &[&sync_id, &actor],
            )
            .await
            .map_err(StoreError::query("record a sync window override"))?;
        Ok(())
    }

    /// The run that left `target` partially synced (`sync --only`), while no whole plan has
    /// been applied since.
    pub async fn partial_sync(&self, target: &str) -> Result<Option<PartialSync>, StoreError> {
        let row = self
            .db()
            .query_opt(
                "SELECT s.id, s.git_commit,
                        s.create_count + s.update_count + s.delete_count,
                        coalesce(s.pending, '{}')
                 FROM targets t JOIN sync_runs s ON s.id = t.partial_sync_id
                 WHERE t.name = $1",
                &[&target],
            )
            .await
            .map_err(StoreError::query("read a partial sync"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let applied = usize::try_from(get::<i64>(&row, 2)?).unwrap_or(0);
        let pending: Vec<String> = get(&row, 3)?;
        Ok(Some(PartialSync {
            sync_id: get(&row, 0)?,
            commit: get(&row, 1)?,
            applied,
            total: applied + pending.len(),
            pending,
        }))
    }

    /// Who overrode the sync windows for a run, if anyone.
    pub async fn window_override_by(
        &self,
        sync_id: uuid::Uuid,
    ) -> Result<Option<String>, StoreError> {
        let row = self
            .db()
            .query_opt(
                "SELECT window_override_by FROM sync_runs WHERE id = $1",
                &[&sync_id],
            )
            .await
            .map_err(StoreError::query("read a sync window override"))?;
        match row {
            Some(row) => row
                .try_get(0)
                .map_err(StoreError::query("decode a sync window override")),
            None => Ok(None),
        }
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
                // `NOT owned` narrows the look to the partial index of V9; the inventory
                // stays the truth.
                "SELECT r.kind, r.name FROM resources r
                 WHERE NOT r.owned AND r.labels->>'managed-by' = 'gitops'
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
