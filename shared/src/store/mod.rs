//! The PostgreSQL store: schema migrations, targets, live state and inventory, sync runs,
//! revisions, drift events and webhook deliveries.
//!
//! Applying a plan (the one multi-table write) lives in `crate::apply`; this module owns the
//! connection and every other read and write. `Store::connect` / `Store::connect_with`
//! (in `connect`) are the only places that build a database connection.

mod connect;
mod controls;
mod error;
mod fleet;
mod owners;
mod queries;
mod records;
mod sources;
mod statements;
mod text;

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use tokio_postgres::types::Json;
use tokio_postgres::{Client, Row};
use uuid::Uuid;

pub use connect::{DatabaseSecret, DatabaseSettings, is_auth_failure, with_refresh};
pub use error::{ConnectError, StoreError, is_retryable_pg, redact_url};
pub(crate) use fleet::CommitCheck;
pub use owners::AbandonedRun;

pub use crate::config::SslMode;
pub use crate::message::Trigger;
pub use records::{
    DriftRecord, NewRun, NewTarget, PartialSync, RevisionAction, RevisionRecord, RunRecord,
    RunStatus, StoredResource, TargetState, UnknownValue,
};
pub use sources::{AppliedBase, PlanningState};
pub(crate) use statements::{Prepared, StatementCache};
pub(crate) use text::{JsonText, storable, storable_json, storable_opt};

use crate::diagnostic::Diagnostic;
use crate::hash::SpecHash;
use crate::model::{InventoryEntry, Kind, LiveState, ResourceId};
use crate::plan::{Plan, Summary};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Session-level advisory lock key held while migrating, so processes starting together do
/// not race to create the schema ("ritmo-mg" in ASCII).
const MIGRATION_LOCK: i64 = 0x7269_746d_6f2d_6d67;

/// The highest version under `migrations/`: a database recording it needs nothing from
/// refinery. (A unit test keeps the two equal.)
const SCHEMA_VERSION: i64 = 11;

/// A connection to the Ritmo database with the schema migrated.
pub struct Store {
    pub(crate) client: Client,
    pub(crate) statements: StatementCache,
    /// The runs this session owns (see `owners`).
    owned: owners::OwnedRuns,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

const TARGET_COLUMNS: &str = "name, repo_url, branch, path, generation, last_applied_commit, \
     last_sync_id, pinned_commit, suspended, created_at, updated_at, suspended_by, suspended_at, \
     last_head_check_at, partial_sync_id";

const RUN_COLUMNS: &str = "id, target, trigger, actor, status, revision, git_commit, \
     base_commit, base_generation, create_count, update_count, delete_count, unchanged_count, \
     approval_reason, diagnostics, error, dry_run, started_at, planned_at, finished_at, plan_ms, \
     apply_ms, approved_by, approved_at, selected, pending, window_override_by";

impl Store {
    /// Connects to `database_url` (URL or key-value form; `sslmode` and `sslrootcert` as in
    /// libpq, `prefer` by default) and applies pending migrations. See
    /// [`Store::connect_with`] for secrets and TLS settings.
    pub async fn connect(database_url: &str) -> Result<Store, StoreError> {
        Store::connect_with(&DatabaseSettings::from_url(database_url), None).await
    }

    /// Brings the schema to [`SCHEMA_VERSION`]. A database already there (every start but the
    /// first after a release) costs one query: refinery's run (the advisory lock, `CREATE
    /// TABLE IF NOT EXISTS`, reading and checking the whole history, the unlock) is five round
    /// trips, taken only when the schema is missing, behind, or ahead of this binary (refinery
    /// then refuses it, as it always did). Concurrent first starts all take the slow path and
    /// meet at the advisory lock, where refinery reads the history again.
    async fn migrate(&mut self) -> Result<(), StoreError> {
        if self.schema_version().await? == Some(SCHEMA_VERSION) {
            return Ok(());
        }
        self.client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(StoreError::query("lock the schema for migration"))?;
        // refinery's `CREATE TABLE IF NOT EXISTS refinery_schema_history` draws a NOTICE from
        // PostgreSQL whenever the table exists, which tokio-postgres logs at `info` on every
        // start that migrates: keep the server's notices to warnings while refinery runs.
        let quiet = self
            .client
            .batch_execute("SET client_min_messages = warning")
            .await;
        let migrated = embedded::migrations::runner()
            .run_async(&mut self.client)
            .await;
        let reset = self.client.batch_execute("RESET client_min_messages").await;
        let unlocked = self
            .client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        migrated.map_err(StoreError::Migrate)?;
        quiet.map_err(StoreError::query("quieten notices for the migration"))?;
        reset.map_err(StoreError::query("restore notices after the migration"))?;
        unlocked.map_err(StoreError::query("unlock the schema after migration"))?;
        Ok(())
    }

    /// The highest migration the database records; `None` before the first migration (no
    /// history table, or an empty one).
    async fn schema_version(&self) -> Result<Option<i64>, StoreError> {
        let messages = match self
            .client
            .simple_query("SELECT max(version) FROM refinery_schema_history")
            .await
        {
            Ok(messages) => messages,
            Err(error)
                if error.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) =>
            {
                return Ok(None);
            }
            Err(error) => return Err(StoreError::query("read the schema version")(error)),
        };
        Ok(messages.iter().find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => {
                row.get(0).and_then(|version| version.parse().ok())
            }
            _ => None,
        }))
    }

    /// Whether the connection has been lost (the store must then be rebuilt).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// The connection, running each statement through its cache of prepared statements.
    pub(crate) fn db(&self) -> Prepared<'_, Client> {
        Prepared::new(&self.client, &self.statements)
    }

    /// Registers `target`, or updates its repository, branch and path; its generation,
    /// history and pin are kept (the one-target case of [`Store::ensure_targets`]).
    pub async fn ensure_target(&self, target: &NewTarget) -> Result<TargetState, StoreError> {
        self.ensure_targets(std::slice::from_ref(target))
            .await?
            .pop()
            .ok_or_else(|| StoreError::UnknownTarget(target.name.clone()))
    }

    pub async fn target(&self, name: &str) -> Result<Option<TargetState>, StoreError> {
        let sql = format!("SELECT {TARGET_COLUMNS} FROM targets WHERE name = $1");
        let row = self
            .db()
            .query_opt(&sql, &[&name])
            .await
            .map_err(StoreError::query("read a target"))?;
        row.as_ref().map(target_from_row).transpose()
    }

    /// Every registered target, by name.
    pub async fn targets(&self) -> Result<Vec<TargetState>, StoreError> {
        let sql = format!("SELECT {TARGET_COLUMNS} FROM targets ORDER BY name");
        let rows = self
            .db()
            .query(&sql, &[])
            .await
            .map_err(StoreError::query("list targets"))?;
        rows.iter().map(target_from_row).collect()
    }

    /// Sets or clears the rollback pin of `name`. Returns the updated target.
    pub async fn set_pin(
        &self,
        name: &str,
        pinned_commit: Option<&str>,
    ) -> Result<TargetState, StoreError> {
        let sql = format!(
            "UPDATE targets SET pinned_commit = $2, updated_at = now() WHERE name = $1
             RETURNING {TARGET_COLUMNS}"
        );
        let row = self
            .db()
            .query_opt(&sql, &[&name, &pinned_commit])
            .await
            .map_err(StoreError::query("pin a target"))?
            .ok_or_else(|| StoreError::UnknownTarget(name.to_string()))?;
        target_from_row(&row)
    }

    /// Suspends (recording `actor` and the time) or resumes automatic syncs of `name`.
    /// Returns the updated target.
    pub async fn set_suspended(
        &self,
        name: &str,
        suspended: bool,
        actor: Option<&str>,
    ) -> Result<TargetState, StoreError> {
        // Suspending a suspended target keeps who did it first and when.
        let sql = format!(
            "UPDATE targets SET suspended = $2,
                 suspended_by = CASE WHEN NOT $2 THEN NULL
                                     WHEN suspended THEN suspended_by ELSE $3 END,
                 suspended_at = CASE WHEN NOT $2 THEN NULL
                                     WHEN suspended THEN suspended_at ELSE now() END,
                 updated_at = now()
             WHERE name = $1
             RETURNING {TARGET_COLUMNS}"
        );
        let row = self
            .db()
            .query_opt(&sql, &[&name, &suspended, &actor])
            .await
            .map_err(StoreError::query("suspend or resume a target"))?
            .ok_or_else(|| StoreError::UnknownTarget(name.to_string()))?;
        target_from_row(&row)
    }

    /// Live state for planning `target`: every resource row (whoever owns it) and the
    /// target's inventory.
    ///
    /// A row hashed with another canonical form than this build's is reported with a hash
    /// that matches nothing, so the planner rewrites it.
    pub async fn live_state(&self, target: &str) -> Result<LiveState, StoreError> {
        // Both queries go out before either answer is read: one round trip, not two.
        let target_param: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&target];
        let (resource_rows, inventory_rows) = futures_util::try_join!(
            self.db().query(
                "SELECT kind, name, spec_hash, hash_version, drifted_at IS NOT NULL FROM resources",
                &[],
            ),
            self.db().query(
                "SELECT kind, name, spec_hash, git_commit FROM inventory WHERE target = $1",
                &target_param,
            ),
        )
        .map_err(StoreError::query("read live state"))?;

        let mut live = LiveState::default();
        sources::add_resource_rows(&mut live, &resource_rows)?;
        for row in &inventory_rows {
            let id = id_from_row(row, "inventory")?;
            live.inventory.insert(
                id.clone(),
                InventoryEntry {
                    id,
                    hash: SpecHash::from_hex(get::<String>(row, 2)?),
                    commit: get(row, 3)?,
                },
            );
        }
        Ok(live)
    }

    /// Starts a sync run in status `planning`, owned by this session until it is planned or
    /// fails (see `owners`), and returns its id (a UUIDv7, so ids sort by start time).
    ///
    /// Runs of the target whose process died are marked `abandoned` first.
    pub async fn begin_run(&self, run: &NewRun) -> Result<Uuid, StoreError> {
        self.abandon_ownerless_runs(Some(&run.target)).await?;
        let id = Uuid::now_v7();
        // Owned before the row exists, so no one ever sees it `planning` without an owner.
        self.own_run(id).await?;
        let result = self
            .db()
            .execute(
                "INSERT INTO sync_runs (id, target, trigger, actor, status, revision, dry_run)
                 VALUES ($1, $2, $3, $4, 'planning', $5, $6)",
                &[
                    &id,
                    &run.target,
                    &run.trigger.as_str(),
                    &storable_opt(run.actor.as_deref()),
                    &storable_opt(run.revision.as_deref()),
                    &run.dry_run,
                ],
            )
            .await;
        if result.is_err()
            && let Err(error) = self.release_run(id).await
        {
            tracing::warn!(error = %crate::telemetry::error_chain(&error), "cannot release a run never started");
        }
        match result {
            Ok(_) => Ok(id),
            Err(error)
                if error.code()
                    == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) =>
            {
                Err(StoreError::UnknownTarget(run.target.clone()))
            }
            Err(error) => Err(StoreError::query("start a sync run")(error)),
        }
    }

    /// Stores the plan of run `sync_id` (specs included, so any process can apply it) with
    /// its counts and diagnostics, and moves the run to `status`: usually `planned` or
    /// `pending_approval`; `succeeded`, `failed` and `superseded` also finish the run. Every
    /// status but `applying` ends this session's ownership of the run; an abandoned run stays
    /// abandoned ([`StoreError::RunAbandoned`]).
    pub async fn record_plan(
        &self,
        sync_id: Uuid,
        plan: &Plan,
        status: RunStatus,
    ) -> Result<(), StoreError> {
        let summary = plan.summary();
        let revision = plan.revision.to_string();
        let selected: Option<Vec<String>> = plan
            .partial
            .as_ref()
            .map(|partial| partial.selected.iter().map(ToString::to_string).collect());
        let pending: Option<Vec<String>> = plan
            .partial
            .as_ref()
            .map(|partial| partial.pending.iter().map(ToString::to_string).collect());
        let updated = self
            .db()
            .execute(
                "UPDATE sync_runs SET
                     status = $2, plan = $3, revision = $4, git_commit = $5, base_commit = $6,
                     base_generation = $7, create_count = $8, update_count = $9,
                     delete_count = $10, unchanged_count = $11, diagnostics = $12,
                     approval_reason = $13, selected = $15, pending = $16,
                     planned_at = clock_timestamp(),
                     plan_ms = (extract(epoch FROM clock_timestamp() - started_at) * 1000)::bigint,
                     finished_at = CASE WHEN $14 THEN clock_timestamp() ELSE finished_at END
                 WHERE id = $1 AND status <> 'abandoned'",
                &[
                    &sync_id,
                    &status.as_str(),
                    // A `text` column, which the server does not parse (V11); serde_json
                    // writes `\u0000` escaped, so specs stay exact.
                    &JsonText(plan),
                    &storable(&revision),
                    &plan.revision.commit(),
                    &plan.base.commit,
                    &plan.base.generation,
                    &count(summary.create),
                    &count(summary.update),
                    &count(summary.delete),
                    &count(summary.unchanged),
                    &Json(storable_json(&plan.diagnostics)?),
                    &storable_opt(plan.approval_reason.as_deref()),
                    &status.is_finished(),
                    &selected,
                    &pending,
                ],
            )
            .await
            .map_err(StoreError::query("record a plan"))?;
        if updated == 0 {
            return Err(match self.run(sync_id).await? {
                Some(_) => StoreError::RunAbandoned(sync_id),
                None => StoreError::RunNotFound(sync_id),
            });
        }
        if status != RunStatus::Applying {
            self.release_run(sync_id).await?;
        }
        Ok(())
    }

    /// Marks run `sync_id` failed with `error` (and `diagnostics`, when given), and ends this
    /// session's ownership of it. A run that already succeeded, was superseded or was
    /// abandoned keeps its status. Both are stored with NUL escaped (see `text`): a failure
    /// quoting bad input is still recorded.
    pub async fn fail_run(
        &self,
        sync_id: Uuid,
        error: &str,
        diagnostics: &[Diagnostic],
    ) -> Result<(), StoreError> {
        let updated = self
            .db()
            .execute(
                "UPDATE sync_runs SET status = 'failed', error = $2,
                     diagnostics = CASE WHEN $4 THEN diagnostics ELSE $3 END,
                     finished_at = clock_timestamp()
                 WHERE id = $1 AND status NOT IN ('succeeded', 'superseded', 'abandoned')",
                &[
                    &sync_id,
                    &storable(error),
                    &Json(storable_json(diagnostics)?),
                    &diagnostics.is_empty(),
                ],
            )
            .await
            .map_err(StoreError::query("mark a sync run failed"))?;
        if updated == 0 && self.run(sync_id).await?.is_none() {
            return Err(StoreError::RunNotFound(sync_id));
        }
        self.release_run(sync_id).await?;
        Ok(())
    }

    /// Moves a run waiting for approval to `planned`. Returns false when the run is not
    /// waiting for approval (already approved, applied or failed).
    pub async fn approve_run(&self, sync_id: Uuid, actor: &str) -> Result<bool, StoreError> {
        let updated = self
            .db()
            .execute(
                "UPDATE sync_runs SET status = 'planned', approved_by = $2,
                     approved_at = clock_timestamp()
                 WHERE id = $1 AND status = 'pending_approval'",
                &[&sync_id, &actor],
            )
            .await
            .map_err(StoreError::query("approve a sync run"))?;
        if updated == 0 && self.run(sync_id).await?.is_none() {
            return Err(StoreError::RunNotFound(sync_id));
        }
        Ok(updated == 1)
    }

    pub async fn run(&self, sync_id: Uuid) -> Result<Option<RunRecord>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM sync_runs WHERE id = $1");
        let row = self
            .db()
            .query_opt(&sql, &[&sync_id])
            .await
            .map_err(StoreError::query("read a sync run"))?;
        row.as_ref().map(run_from_row).transpose()
    }

    /// The stored plan of run `sync_id`; `None` when the run does not exist or has no plan
    /// yet.
    pub async fn load_plan(&self, sync_id: Uuid) -> Result<Option<Plan>, StoreError> {
        let row = self
            .db()
            .query_opt("SELECT plan FROM sync_runs WHERE id = $1", &[&sync_id])
            .await
            .map_err(StoreError::query("read a plan"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let text: Option<String> = row
            .try_get(0)
            .map_err(StoreError::query("read a stored plan"))?;
        text.map(|text| {
            serde_json::from_str(&text).map_err(|error| StoreError::Corrupt {
                table: "sync_runs",
                reason: format!("run {sync_id}'s plan is not a plan: {error}"),
            })
        })
        .transpose()
    }

    /// Sync runs, newest first: of one target or all, at most `limit`, started strictly
    /// before `before` (pass the last `started_at` of a page to get the next).
    pub async fn runs(
        &self,
        target: Option<&str>,
        limit: i64,
        before: Option<DateTime<Utc>>,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM sync_runs
             WHERE ($1::text IS NULL OR target = $1)
               AND ($2::timestamptz IS NULL OR started_at < $2)
             ORDER BY started_at DESC, id DESC
             LIMIT $3"
        );
        let rows = self
            .db()
            .query(&sql, &[&target, &before, &limit.max(0)])
            .await
            .map_err(StoreError::query("list sync runs"))?;
        rows.iter().map(run_from_row).collect()
    }

    /// The changes run `sync_id` made, in the order it made them.
    pub async fn revisions(&self, sync_id: Uuid) -> Result<Vec<RevisionRecord>, StoreError> {
        let rows = self
            .db()
            .query(
                "SELECT id, sync_id, target, kind, name, action, old_hash, new_hash, git_commit,
                        applied_at
                 FROM revisions WHERE sync_id = $1 ORDER BY id",
                &[&sync_id],
            )
            .await
            .map_err(StoreError::query("list revisions"))?;
        rows.iter()
            .map(|row| {
                Ok(RevisionRecord {
                    id: get(row, 0)?,
                    sync_id: get(row, 1)?,
                    target: get(row, 2)?,
                    kind: parse(row, 3, "revisions")?,
                    name: get(row, 4)?,
                    action: parse(row, 5, "revisions")?,
                    old_hash: get(row, 6)?,
                    new_hash: get(row, 7)?,
                    commit: get(row, 8)?,
                    applied_at: get(row, 9)?,
                })
            })
            .collect()
    }

    /// Resource rows, optionally of one kind and one name, ordered by kind and name.
    pub async fn resources(
        &self,
        kind: Option<Kind>,
        name: Option<&str>,
    ) -> Result<Vec<StoredResource>, StoreError> {
        let rows = self
            .db()
            .query(
                "SELECT r.kind, r.name, r.spec, r.spec_hash, r.hash_version, r.labels,
                        r.source_path, r.git_commit, r.target, i.target, r.drifted_at,
                        r.created_at, r.updated_at
                 FROM resources r
                 LEFT JOIN inventory i ON i.kind = r.kind AND i.name = r.name
                 WHERE ($1::text IS NULL OR r.kind = $1) AND ($2::text IS NULL OR r.name = $2)
                 ORDER BY r.kind, r.name",
                &[&kind.map(Kind::as_str), &name],
            )
            .await
            .map_err(StoreError::query("list resources"))?;
        let mut resources: Vec<StoredResource> = rows
            .iter()
            .map(|row| {
                let labels: serde_json::Value = get(row, 5)?;
                Ok(StoredResource {
                    kind: parse(row, 0, "resources")?,
                    name: get(row, 1)?,
                    spec: get(row, 2)?,
                    spec_hash: get(row, 3)?,
                    hash_version: get(row, 4)?,
                    labels: labels_from_json(labels),
                    source_path: get(row, 6)?,
                    commit: get(row, 7)?,
                    target: get(row, 8)?,
                    owner: get(row, 9)?,
                    drifted_at: get(row, 10)?,
                    created_at: get(row, 11)?,
                    updated_at: get(row, 12)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        resources.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        Ok(resources)
    }

    /// Unresolved drift events of `target`, oldest first.
    pub async fn drift(&self, target: &str) -> Result<Vec<DriftRecord>, StoreError> {
        let rows = self
            .db()
            .query(
                "SELECT id, target, kind, name, operation, detected_at, resolved_sync_id
                 FROM drift_events WHERE target = $1 AND resolved_sync_id IS NULL ORDER BY id",
                &[&target],
            )
            .await
            .map_err(StoreError::query("list drift events"))?;
        rows.iter().map(drift_from_row).collect()
    }

    /// Deletes finished sync runs beyond the newest `keep` of each target (never a target's
    /// last applied run, never a run still in progress). Revisions, the audit trail, stay.
    /// Returns how many runs were deleted.
    pub async fn prune_history(&self, keep: i64) -> Result<u64, StoreError> {
        self.db().execute(
                "DELETE FROM sync_runs s USING (
                     SELECT id, row_number() OVER (PARTITION BY target ORDER BY started_at DESC, id DESC) AS n
                     FROM sync_runs
                 ) ranked
                 WHERE s.id = ranked.id AND ranked.n > $1
                   AND s.status IN ('succeeded', 'failed', 'superseded', 'abandoned')
                   AND NOT EXISTS (SELECT 1 FROM targets t
                                   WHERE t.last_sync_id = s.id OR t.partial_sync_id = s.id)",
                &[&keep.max(0)],
            )
            .await
            .map_err(StoreError::query("prune sync run history"))
    }

    /// Records a webhook delivery id (as its [`delivery_key`]); false when it was seen before
    /// (a replay).
    ///
    /// Committed without waiting for the WAL flush (`synchronous_commit` off for this one
    /// statement): the flush wait was nearly half of the statement's time. The id only turns
    /// replays away: one lost to a database crash costs at most a second plan request for the
    /// same commit, and planning a commit again changes nothing.
    pub async fn record_delivery(
        &self,
        delivery_id: &str,
        target: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.record_delivery_reading_suspended(delivery_id, target, &[])
            .await
            .map(|(recorded, _)| recorded)
    }
}

/// The longest delivery id stored as it is. Providers send UUIDs (36 characters); a btree
/// index row cannot hold much over 2,700 bytes, so a longer id could never be recorded.
pub const MAX_STORED_DELIVERY_ID: usize = 200;

/// How a webhook delivery id is kept in `webhook_deliveries`: as it is up to
/// [`MAX_STORED_DELIVERY_ID`] bytes, so the ids operators look up stay readable; longer ones
/// as `sha256:<hex>` of the id, so replay protection holds for an id of any length. (No
/// provider's id looks like `sha256:` followed by 64 hex digits, so the two never collide.)
pub fn delivery_key(delivery_id: &str) -> std::borrow::Cow<'_, str> {
    use sha2::{Digest, Sha256};
    if delivery_id.len() <= MAX_STORED_DELIVERY_ID {
        return std::borrow::Cow::Borrowed(delivery_id);
    }
    std::borrow::Cow::Owned(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(delivery_id.as_bytes()))
    ))
}

/// Refuses repository URLs that carry credentials: they would be stored in plaintext.
fn check_target(target: &NewTarget) -> Result<(), StoreError> {
    let invalid = |reason: &str| StoreError::InvalidTarget {
        name: target.name.clone(),
        reason: reason.to_string(),
    };
    if target.name.is_empty() {
        return Err(invalid("the name is empty"));
    }
    if let Some((scheme, rest)) = target.repo_url.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            let is_http =
                scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
            if userinfo.contains(':') || is_http {
                return Err(invalid(
                    "the repository url carries credentials; configure a token secret instead",
                ));
            }
        }
    }
    Ok(())
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    index: usize,
) -> Result<T, StoreError> {
    row.try_get(index)
        .map_err(StoreError::query("decode a database row"))
}

fn parse<T>(row: &Row, index: usize, table: &'static str) -> Result<T, StoreError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let text: String = get(row, index)?;
    text.parse().map_err(|error: T::Err| StoreError::Corrupt {
        table,
        reason: error.to_string(),
    })
}

fn id_from_row(row: &Row, table: &'static str) -> Result<ResourceId, StoreError> {
    Ok(ResourceId::new(
        parse(row, 0, table)?,
        get::<String>(row, 1)?,
    ))
}

fn labels_from_json(value: serde_json::Value) -> BTreeMap<String, String> {
    match value {
        serde_json::Value::Object(map) => map
            .into_iter()
            .map(|(key, value)| match value {
                serde_json::Value::String(text) => (key, text),
                other => (key, other.to_string()),
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// A `drift_events` row read as `id, target, kind, name, operation, detected_at,
/// resolved_sync_id`.
fn drift_from_row(row: &Row) -> Result<DriftRecord, StoreError> {
    Ok(DriftRecord {
        id: get(row, 0)?,
        target: get(row, 1)?,
        kind: parse(row, 2, "drift_events")?,
        name: get(row, 3)?,
        operation: get(row, 4)?,
        detected_at: get(row, 5)?,
        resolved_sync_id: get(row, 6)?,
    })
}

fn target_from_row(row: &Row) -> Result<TargetState, StoreError> {
    Ok(TargetState {
        name: get(row, 0)?,
        repo_url: get(row, 1)?,
        branch: get(row, 2)?,
        path: get(row, 3)?,
        generation: get(row, 4)?,
        last_applied_commit: get(row, 5)?,
        last_sync_id: get(row, 6)?,
        pinned_commit: get(row, 7)?,
        suspended: get(row, 8)?,
        created_at: get(row, 9)?,
        updated_at: get(row, 10)?,
        suspended_by: get(row, 11)?,
        suspended_at: get(row, 12)?,
        last_head_check_at: get(row, 13)?,
        partial_sync_id: get(row, 14)?,
    })
}

fn run_from_row(row: &Row) -> Result<RunRecord, StoreError> {
    let to_usize = |n: i64| usize::try_from(n).unwrap_or(0);
    let Json(diagnostics): Json<Vec<Diagnostic>> = get(row, 14)?;
    Ok(RunRecord {
        id: get(row, 0)?,
        target: get(row, 1)?,
        trigger: parse(row, 2, "sync_runs")?,
        actor: get(row, 3)?,
        status: parse(row, 4, "sync_runs")?,
        revision: get(row, 5)?,
        commit: get(row, 6)?,
        base_commit: get(row, 7)?,
        base_generation: get(row, 8)?,
        summary: Summary {
            create: to_usize(get(row, 9)?),
            update: to_usize(get(row, 10)?),
            delete: to_usize(get(row, 11)?),
            unchanged: to_usize(get(row, 12)?),
        },
        approval_reason: get(row, 13)?,
        diagnostics,
        error: get(row, 15)?,
        dry_run: get(row, 16)?,
        started_at: get(row, 17)?,
        planned_at: get(row, 18)?,
        finished_at: get(row, 19)?,
        plan_ms: get(row, 20)?,
        apply_ms: get(row, 21)?,
        approved_by: get(row, 22)?,
        approved_at: get(row, 23)?,
        selected: get(row, 24)?,
        pending: get(row, 25)?,
        window_override_by: get(row, 26)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> NewTarget {
        NewTarget {
            name: "default".into(),
            repo_url: url.into(),
            branch: "main".into(),
            path: String::new(),
        }
    }

    #[test]
    fn a_delivery_id_too_long_for_the_index_is_kept_as_its_hash() {
        let short = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
        let long = "d".repeat(8000);

        assert_eq!(delivery_key(short), short);
        let key = delivery_key(&long);
        assert!(key.starts_with("sha256:") && key.len() == 7 + 64, "{key}");
        assert_eq!(key, delivery_key(&long));
        assert_ne!(key, delivery_key(&"d".repeat(8001)));
        assert_eq!(
            delivery_key(&"x".repeat(MAX_STORED_DELIVERY_ID)).len(),
            MAX_STORED_DELIVERY_ID
        );
    }

    #[test]
    fn the_schema_version_is_the_highest_embedded_migration() {
        let highest = embedded::migrations::runner()
            .get_migrations()
            .iter()
            .map(|migration| i64::from(migration.version()))
            .max();

        assert_eq!(highest, Some(SCHEMA_VERSION));
    }

    #[test]
    fn repository_urls_with_credentials_are_refused() {
        for url in [
            "https://ghp_token@github.com/acme/config.git",
            "https://user:secret@gitlab.example/acme/config.git",
            "ssh://git:secret@host/acme/config.git",
        ] {
            assert!(check_target(&target(url)).is_err(), "{url}");
        }
    }

    #[test]
    fn repository_urls_without_credentials_are_accepted() {
        for url in [
            "https://github.com/acme/config.git",
            "ssh://git@github.com/acme/config.git",
            "git@github.com:acme/config.git",
            "file:///tmp/config",
        ] {
            assert!(check_target(&target(url)).is_ok(), "{url}");
        }
    }

    #[test]
    fn non_string_label_values_are_kept_as_json_text() {
        let labels = labels_from_json(serde_json::json!({"team": "a", "tier": 2}));

        assert_eq!(labels["team"], "a");
        assert_eq!(labels["tier"], "2");
    }
}
