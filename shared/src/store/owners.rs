//! Who is working on a run, and what becomes of a run whose worker died.
//!
//! A run in `planning` (and, on the CLI's own sync, `applying`) has an owner: the process
//! that began it, holding a session-level advisory lock keyed on the run's id from before the
//! run's row exists until the run leaves that status. PostgreSQL releases the lock when the
//! session ends however it ends (SIGKILL, a lost connection, `pg_ctl stop -m immediate`), so
//! such a run whose lock is free has a dead owner: [`Store::abandon_ownerless_runs`] marks
//! it `abandoned`, with its reason, and later syncs of its commit no longer wait for it.
//!
//! `planned` and `pending_approval` runs have no owner on purpose: they wait in a queue or for
//! a person, and any process may pick them up. The applier's own `applying` is written inside
//! its transaction, so no other session ever sees it.
//!
//! The lock key is the last 64 bits of the run's id (a UUIDv7's random bits); the SQL
//! functions `ritmo_run_lock_key` and `ritmo_run_has_owner` (migration V5) compute the same.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

use uuid::Uuid;

use super::{Store, StoreError};

/// The runs this connection's session holds the lock of.
#[derive(Debug, Default)]
pub(crate) struct OwnedRuns(Mutex<HashSet<Uuid>>);

impl OwnedRuns {
    fn lock(&self) -> MutexGuard<'_, HashSet<Uuid>> {
        // Only inserts and removals happen under the lock: the set is whole after a panic.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The advisory lock key of run `sync_id`.
pub(crate) fn lock_key(sync_id: Uuid) -> i64 {
    let bytes = sync_id.as_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..]);
    i64::from_be_bytes(low)
}

/// A run found without a live owner and marked `abandoned`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbandonedRun {
    pub sync_id: Uuid,
    pub target: String,
    /// The status it was left in: `planning` or `applying`.
    pub was: String,
}

impl Store {
    /// Takes the lock of run `sync_id` for this session (see the module docs). Taking it twice
    /// is harmless: the session holds it once.
    pub(crate) async fn own_run(&self, sync_id: Uuid) -> Result<(), StoreError> {
        if self.owned.lock().contains(&sync_id) {
            return Ok(());
        }
        self.db()
            .execute("SELECT pg_advisory_lock($1)", &[&lock_key(sync_id)])
            .await
            .map_err(StoreError::query("take ownership of a sync run"))?;
        self.owned.lock().insert(sync_id);
        Ok(())
    }

    /// Gives up the lock of run `sync_id`, once its status no longer needs an owner. Nothing
    /// happens when this session does not hold it (a run planned by another process, or a
    /// connection lost since, which released it already).
    pub async fn release_run(&self, sync_id: Uuid) -> Result<(), StoreError> {
        if !self.owned.lock().remove(&sync_id) {
            return Ok(());
        }
        self.db()
            .execute("SELECT pg_advisory_unlock($1)", &[&lock_key(sync_id)])
            .await
            .map_err(StoreError::query("release a sync run"))?;
        Ok(())
    }

    /// Marks `abandoned` every run (of `target`, or of all targets) left `planning` or
    /// `applying` by a process that is gone, and returns them. Nothing of such a run was
    /// applied: the apply commits its run's `succeeded` with its rows.
    pub async fn abandon_ownerless_runs(
        &self,
        target: Option<&str>,
    ) -> Result<Vec<AbandonedRun>, StoreError> {
        // `FOR UPDATE SKIP LOCKED`: a run whose row another transaction holds (an apply under
        // way) is that transaction's business. The owner check runs again on the locked row.
        let rows = self
            .db()
            .query(
                "WITH ownerless AS (
                     SELECT id, status FROM sync_runs
                     WHERE status IN ('planning', 'applying')
                       AND ($1::text IS NULL OR target = $1)
                       AND NOT ritmo_run_has_owner(id)
                     FOR UPDATE SKIP LOCKED
                 )
                 UPDATE sync_runs s SET status = 'abandoned',
                     error = format('abandoned while %s: the process working on it ended (its \
                                     database session is gone) before the run finished; \
                                     nothing of it was applied', o.status),
                     finished_at = clock_timestamp()
                 FROM ownerless o
                 WHERE s.id = o.id AND NOT ritmo_run_has_owner(s.id)
                 RETURNING s.id, s.target, o.status",
                &[&target],
            )
            .await
            .map_err(StoreError::query("mark runs with a dead owner abandoned"))?;
        let abandoned = rows
            .iter()
            .map(|row| {
                Ok(AbandonedRun {
                    sync_id: super::get(row, 0)?,
                    target: super::get(row, 1)?,
                    was: super::get(row, 2)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        for run in &abandoned {
            tracing::warn!(
                sync_id = %run.sync_id,
                target = %run.target,
                was = %run.was,
                "a sync run whose process is gone was marked abandoned"
            );
        }
        Ok(abandoned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_key_is_the_ids_last_64_bits() {
        let id: Uuid = "0190f3c2-7d1e-7a3b-9c4d-5e6f7a8b9c0d".parse().unwrap();

        // The same value as `SELECT ritmo_run_lock_key('0190f3c2-…'::uuid)`.
        assert_eq!(lock_key(id), -7_183_981_997_695_722_483);
    }
}
