//! The poller's reads and writes over every target at once: one statement each instead of one
//! per target, so a tick's database part stays a few round trips at 1,000 targets
//! (docs/scaling.md).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{
    DriftRecord, NewTarget, Store, StoreError, TARGET_COLUMNS, TargetState, check_target,
    drift_from_row, target_from_row,
};

/// One target's question to [`Store::handled_commits`]: was this commit already handled?
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommitCheck {
    pub target: String,
    pub commit: String,
    pub dry_run: bool,
}

impl Store {
    /// [`Store::ensure_target`] of each of `targets` in one statement; the states come back in
    /// the order of `targets`. A name given twice is registered as its last entry says, as
    /// calling `ensure_target` for each in turn would leave it.
    pub async fn ensure_targets(
        &self,
        targets: &[NewTarget],
    ) -> Result<Vec<TargetState>, StoreError> {
        // One INSERT may not touch a row twice, so each name goes in once, with its last entry.
        let mut last: BTreeMap<&str, &NewTarget> = BTreeMap::new();
        for target in targets {
            check_target(target)?;
            last.insert(&target.name, target);
        }
        let column = |field: fn(&NewTarget) -> &str| -> Vec<&str> {
            last.values().map(|target| field(target)).collect()
        };
        let (names, urls, branches, paths) = (
            column(|t| &t.name),
            column(|t| &t.repo_url),
            column(|t| &t.branch),
            column(|t| &t.path),
        );
        let sql = format!(
            "INSERT INTO targets (name, repo_url, branch, path)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
             ON CONFLICT (name) DO UPDATE SET
                 repo_url = EXCLUDED.repo_url, branch = EXCLUDED.branch, path = EXCLUDED.path,
                 updated_at = CASE
                     WHEN (targets.repo_url, targets.branch, targets.path)
                          IS DISTINCT FROM (EXCLUDED.repo_url, EXCLUDED.branch, EXCLUDED.path)
                     THEN now() ELSE targets.updated_at END,
                 source_changed_at = CASE
                     WHEN (targets.repo_url, targets.branch, targets.path)
                          IS DISTINCT FROM (EXCLUDED.repo_url, EXCLUDED.branch, EXCLUDED.path)
                     THEN now() ELSE targets.source_changed_at END
             RETURNING {TARGET_COLUMNS}"
        );
        let rows = self
            .db()
            .query(&sql, &[&names, &urls, &branches, &paths])
            .await
            .map_err(StoreError::query("register targets"))?;
        let states: HashMap<String, TargetState> = rows
            .iter()
            .map(|row| target_from_row(row).map(|state| (state.name.clone(), state)))
            .collect::<Result<_, _>>()?;
        targets
            .iter()
            .map(|target| {
                states
                    .get(&target.name)
                    .cloned()
                    .ok_or_else(|| StoreError::UnknownTarget(target.name.clone()))
            })
            .collect()
    }

    /// [`Store::drift`] of each of `targets` in one query: each name maps to its unresolved
    /// events, oldest first (a name without any is absent).
    pub async fn drift_of(
        &self,
        targets: &[&str],
    ) -> Result<HashMap<String, Vec<DriftRecord>>, StoreError> {
        let rows = self
            .db()
            .query(
                "SELECT id, target, kind, name, operation, detected_at, resolved_sync_id
                 FROM drift_events WHERE target = ANY($1) AND resolved_sync_id IS NULL
                 ORDER BY id",
                &[&targets],
            )
            .await
            .map_err(StoreError::query("list drift events"))?;
        let mut drift: HashMap<String, Vec<DriftRecord>> = HashMap::new();
        for row in &rows {
            let record = drift_from_row(row)?;
            // Always set: the query asks for these targets by name.
            if let Some(target) = record.target.clone() {
                drift.entry(target).or_default().push(record);
            }
        }
        Ok(drift)
    }

    /// The targets among `checks` whose commit already ended in a way a retry would only
    /// repeat (failed on the repository's content, waiting for approval, or a dry run's plan),
    /// so the poller need not ask again.
    ///
    /// A real `planned` run is not enough: its apply request may have died with the process
    /// that queued it (`ritmo serve`'s queues live in memory), and only a new plan request
    /// sends it again (see the planner's `already_done`). An abandoned run never counts.
    pub(crate) async fn handled_commits(
        &self,
        checks: &[CommitCheck],
    ) -> Result<HashSet<String>, StoreError> {
        if checks.is_empty() {
            return Ok(HashSet::new());
        }
        let targets: Vec<&str> = checks.iter().map(|check| check.target.as_str()).collect();
        let commits: Vec<&str> = checks.iter().map(|check| check.commit.as_str()).collect();
        let dry_runs: Vec<bool> = checks.iter().map(|check| check.dry_run).collect();
        let rows = self
            .db()
            .query(
                "SELECT DISTINCT q.target
                 FROM unnest($1::text[], $2::text[], $3::bool[]) AS q(target, git_commit, dry_run)
                 JOIN sync_runs s
                   ON s.target = q.target AND s.git_commit = q.git_commit
                  AND s.dry_run = q.dry_run
                 WHERE s.status IN ('failed', 'pending_approval')
                    OR (s.status = 'planned' AND q.dry_run)",
                &[&targets, &commits, &dry_runs],
            )
            .await
            .map_err(StoreError::query("look for earlier runs of commits"))?;
        rows.iter()
            .map(|row| {
                row.try_get(0)
                    .map_err(StoreError::query("decode a target name"))
            })
            .collect()
    }
}
