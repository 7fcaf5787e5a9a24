//! The queries of the workflow's duplicate checks: an open run for a commit, the last run of
//! each target, forgetting a delivery (handled commits are asked for all targets at once, in
//! `fleet`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{RunStatus, Store, StoreError};

/// A run of a target at a commit that is still going somewhere (planned, waiting for
/// approval, or applying by a live process) and was computed against the target's current
/// generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpenRun {
    pub id: Uuid,
    pub status: RunStatus,
}

impl Store {
    /// The newest open run of `target` at `commit` (see [`OpenRun`]), among dry runs or
    /// real ones as `dry_run` says.
    ///
    /// Runs of the target whose process died are marked abandoned first, and an `applying`
    /// run counts only while its owner lives: a killed `ritmo gitops sync` must not hold
    /// every later sync of its commit back (issue 22).
    pub(crate) async fn open_run_for_commit(
        &self,
        target: &str,
        commit: &str,
        dry_run: bool,
    ) -> Result<Option<OpenRun>, StoreError> {
        self.abandon_ownerless_runs(Some(target)).await?;
        let row = self
            .db()
            .query_opt(
                "SELECT s.id, s.status FROM sync_runs s JOIN targets t ON t.name = s.target
                 WHERE s.target = $1 AND s.git_commit = $2 AND s.dry_run = $3
                   AND s.status IN ('planned', 'applying', 'pending_approval')
                   AND (s.status <> 'applying' OR ritmo_run_has_owner(s.id))
                   AND s.base_generation = t.generation
                 ORDER BY s.started_at DESC LIMIT 1",
                &[&target, &commit, &dry_run],
            )
            .await
            .map_err(StoreError::query("look for an open sync run"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let id: Uuid = row
            .try_get(0)
            .map_err(StoreError::query("decode a sync run"))?;
        let status: String = row
            .try_get(1)
            .map_err(StoreError::query("decode a sync run"))?;
        let status = status.parse().map_err(|_| StoreError::Corrupt {
            table: "sync_runs",
            reason: format!("unknown status `{status}`"),
        })?;
        Ok(Some(OpenRun { id, status }))
    }

    /// When each target's newest run started.
    pub(crate) async fn last_run_started(
        &self,
    ) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
        let rows = self
            .db()
            .query(
                "SELECT target, max(started_at) FROM sync_runs GROUP BY target",
                &[],
            )
            .await
            .map_err(StoreError::query("read the latest run of every target"))?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0)
                        .map_err(StoreError::query("decode a target name"))?,
                    row.try_get(1)
                        .map_err(StoreError::query("decode a start time"))?,
                ))
            })
            .collect()
    }

    /// Forgets a webhook delivery id, so the sender's retry of a delivery we could not enqueue
    /// is not refused as a replay.
    pub(crate) async fn forget_delivery(&self, delivery_id: &str) -> Result<(), StoreError> {
        self.db()
            .execute(
                "DELETE FROM webhook_deliveries WHERE delivery_id = $1",
                &[&crate::store::delivery_key(delivery_id).as_ref()],
            )
            .await
            .map_err(StoreError::query("forget a webhook delivery"))?;
        Ok(())
    }
}
