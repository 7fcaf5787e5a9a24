//! The applier: run a stored plan in one PostgreSQL transaction.
//!
//! The target's row is locked first (`SELECT … FOR UPDATE`: a lease released on commit,
//! rollback or a lost connection); a plan computed against another generation is stale and
//! applies nothing. Writes are set-based (`UNNEST` arrays in batches), resources, inventory
//! and revisions in the same statement, with every affected-row count checked. Any failure
//! rolls everything back; the run is then marked failed outside the transaction.
//!
//! Deciding what to do is `plan`'s job; re-enqueueing a stale plan is the caller's.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::Transaction;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Json;
use uuid::Uuid;

use crate::hash::{HASH_VERSION, Spec};
use crate::model::{DesiredResource, ResourceId};
use crate::plan::{Action, Plan};
use crate::store::{Prepared, RunStatus, Store, StoreError};

/// Rows per statement: large enough that 10,000 rows take a handful of round trips, small
/// enough to keep each statement's arrays a few megabytes at most.
pub const BATCH_SIZE: usize = 1_000;

/// Label every managed row carries, naming the tool.
pub const LABEL_MANAGED_BY: &str = "managed-by";
/// Label naming the commit a row was last written from.
pub const LABEL_GIT_COMMIT: &str = "git-commit";
/// Label naming the target that last wrote a row (informational: ownership is the inventory).
pub const LABEL_TARGET: &str = "ritmo.dev/target";

/// What an applied plan did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    pub sync_id: Uuid,
    pub target: String,
    /// The target's generation after this apply.
    pub generation: i64,
    /// The commit applied (`None` for a working tree).
    pub commit: Option<String>,
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub unchanged: usize,
    /// From the start of the transaction to its commit (`duration_ms` in JSON).
    #[serde(rename = "duration_ms", serialize_with = "as_millis")]
    pub duration: Duration,
}

/// How an apply ended when nothing went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ApplyOutcome {
    Applied(ApplyReport),
    /// The target moved on since the plan was computed: nothing was written and the run is
    /// `superseded`. The caller should request a fresh plan.
    Stale {
        planned_generation: i64,
        current_generation: i64,
    },
    /// The run was already finished (a redelivered message): nothing was done.
    AlreadyFinished {
        status: RunStatus,
    },
}

fn as_millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the plan for target `{target}` has errors and cannot be applied")]
    PlanHasErrors { target: String },
    #[error("sync run `{0}` does not exist")]
    RunNotFound(Uuid),
    #[error("target `{0}` is not registered")]
    UnknownTarget(String),
    #[error("sync run `{sync_id}` belongs to target `{run_target}`, not to `{plan_target}`")]
    TargetMismatch {
        sync_id: Uuid,
        run_target: String,
        plan_target: String,
    },
    #[error("sync run `{sync_id}` is `{status}` and cannot be applied")]
    NotApplicable { sync_id: Uuid, status: RunStatus },
    #[error("sync run `{0}` is a dry run and cannot be applied")]
    DryRun(Uuid),
    #[error(
        "a resource of the plan is already owned elsewhere (another target or an out-of-band \
         insert got there first): {detail}"
    )]
    Conflict { detail: String },
    #[error("{step} of {expected} resources affected {actual} rows of `{table}`")]
    RowCount {
        step: &'static str,
        table: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApplyError {
    /// Connection trouble, serialization failures and deadlocks may pass on a retry;
    /// everything else needs a new plan or a person.
    pub fn is_retryable(&self) -> bool {
        match self {
            ApplyError::Store(error) => error.is_retryable(),
            _ => false,
        }
    }

    /// Whether the run should be marked failed: not when the run was never ours to touch.
    fn fails_the_run(&self) -> bool {
        !matches!(
            self,
            ApplyError::PlanHasErrors { .. }
                | ApplyError::RunNotFound(_)
                | ApplyError::TargetMismatch { .. }
                | ApplyError::NotApplicable { .. }
                | ApplyError::DryRun(_)
        )
    }
}

/// Applies `plan` (stored as run `sync_id`) in one transaction. See the module docs.
pub async fn apply_plan(
    store: &mut Store,
    sync_id: Uuid,
    plan: &Plan,
) -> Result<ApplyOutcome, ApplyError> {
    if plan.has_errors() {
        return Err(ApplyError::PlanHasErrors {
            target: plan.target.clone(),
        });
    }
    crate::progress::report(crate::progress::Stage::Applying {
        changes: plan.summary().create + plan.summary().update + plan.summary().delete,
    });
    let applied = apply_in_transaction(store, sync_id, plan).await;
    if let Err(error) = &applied
        && error.fails_the_run()
    {
        // The transaction was dropped, hence rolled back, before we get here.
        let reason = crate::telemetry::error_chain(error);
        if let Err(record_error) = store.fail_run(sync_id, &reason, &[]).await {
            tracing::warn!(
                %sync_id,
                error = %crate::telemetry::error_chain(&record_error),
                "could not mark the sync run failed"
            );
        }
    }
    // The CLI's own sync owns its `applying` run until here (see `store::owners`); now it is
    // finished, or left for another attempt that needs no owner.
    if let Err(error) = store.release_run(sync_id).await {
        tracing::warn!(
            %sync_id,
            error = %crate::telemetry::error_chain(&error),
            "could not release the sync run"
        );
    }
    applied
}

async fn apply_in_transaction(
    store: &mut Store,
    sync_id: Uuid,
    plan: &Plan,
) -> Result<ApplyOutcome, ApplyError> {
    let started = Instant::now();
    let tx = store
        .client
        .transaction()
        .await
        .map_err(StoreError::query("begin the apply transaction"))?;
    let db = Prepared::new(&tx, &store.statements);

    let Some(row) = db
        .query_opt(
            "SELECT generation FROM targets WHERE name = $1 FOR UPDATE",
            &[&plan.target],
        )
        .await
        .map_err(StoreError::query("lock the target"))?
    else {
        return Err(ApplyError::UnknownTarget(plan.target.clone()));
    };
    let current_generation: i64 = row
        .try_get(0)
        .map_err(StoreError::query("read the target's generation"))?;

    let Some(run) = db
        .query_opt(
            "SELECT target, status, dry_run FROM sync_runs WHERE id = $1 FOR UPDATE",
            &[&sync_id],
        )
        .await
        .map_err(StoreError::query("lock the sync run"))?
    else {
        return Err(ApplyError::RunNotFound(sync_id));
    };
    let run_target: String = run
        .try_get(0)
        .map_err(StoreError::query("read the sync run"))?;
    let status: String = run
        .try_get(1)
        .map_err(StoreError::query("read the sync run"))?;
    let dry_run: bool = run
        .try_get(2)
        .map_err(StoreError::query("read the sync run"))?;
    let status: RunStatus = status.parse().map_err(|_| StoreError::Corrupt {
        table: "sync_runs",
        reason: format!("unknown status `{status}`"),
    })?;
    if run_target != plan.target {
        return Err(ApplyError::TargetMismatch {
            sync_id,
            run_target,
            plan_target: plan.target.clone(),
        });
    }
    if matches!(
        status,
        RunStatus::Succeeded | RunStatus::Superseded | RunStatus::Abandoned
    ) {
        return Ok(ApplyOutcome::AlreadyFinished { status });
    }
    if matches!(
        status,
        RunStatus::Planning | RunStatus::PendingApproval | RunStatus::WaitingForWindow
    ) {
        return Err(ApplyError::NotApplicable { sync_id, status });
    }
    if dry_run {
        return Err(ApplyError::DryRun(sync_id));
    }

    if current_generation != plan.base.generation {
        let reason = format!(
            "the plan was computed at generation {} of target `{}`, which is now at {}",
            plan.base.generation, plan.target, current_generation
        );
        db.execute(
            "UPDATE sync_runs SET status = 'superseded', error = $2,
                 finished_at = clock_timestamp()
             WHERE id = $1",
            &[&sync_id, &reason],
        )
        .await
        .map_err(StoreError::query("mark a stale run superseded"))?;
        tx.commit()
            .await
            .map_err(StoreError::query("commit a superseded run"))?;
        return Ok(ApplyOutcome::Stale {
            planned_generation: plan.base.generation,
            current_generation,
        });
    }

    db.execute(
        "SELECT set_config('ritmo.sync_id', $1, true)",
        &[&sync_id.to_string()],
    )
    .await
    .map_err(StoreError::query("mark the transaction as a sync"))?;
    db.execute(
        "UPDATE sync_runs SET status = 'applying', error = NULL WHERE id = $1",
        &[&sync_id],
    )
    .await
    .map_err(StoreError::query("mark the run applying"))?;

    let commit = plan.revision.commit_or_worktree();
    let writer = Writer {
        db,
        sync_id,
        target: &plan.target,
        commit,
    };
    let changes = Changes::of(plan);
    for (sql, needed) in [
        (CREATE_SQL, !changes.creates.is_empty()),
        (UPDATE_SQL, !changes.updates.is_empty()),
        (DELETE_SQL, !changes.deletes.is_empty()),
    ] {
        if needed {
            db.prepare(sql)
                .await
                .map_err(StoreError::query("prepare the apply's statements"))?;
        }
    }
    let mut batches: Vec<Batch<'_>> = Vec::new();
    batches.extend(
        changes
            .creates
            .chunks(BATCH_SIZE)
            .map(|batch| Box::pin(writer.create(batch)) as Batch<'_>),
    );
    batches.extend(
        changes
            .updates
            .chunks(BATCH_SIZE)
            .map(|batch| Box::pin(writer.update(batch)) as Batch<'_>),
    );
    batches.extend(
        changes
            .deletes
            .chunks(BATCH_SIZE)
            .map(|batch| Box::pin(writer.delete(batch)) as Batch<'_>),
    );
    write_pipelined(batches).await?;

    // A partial apply (`sync --only`) moves the generation, so plans made before it are stale,
    // but not the last applied commit: the next plan must still diff from the last commit
    // applied whole, or it would miss the changes the selection left out.
    let generation: i64 = if plan.partial.is_some() {
        db.query_one(
            "UPDATE targets SET generation = generation + 1, partial_sync_id = $2,
                 updated_at = now()
             WHERE name = $1 RETURNING generation",
            &[&plan.target, &sync_id],
        )
        .await
    } else {
        db.query_one(
            "UPDATE targets SET generation = generation + 1, last_applied_commit = $2,
                 last_sync_id = $3, partial_sync_id = NULL, updated_at = now()
             WHERE name = $1 RETURNING generation",
            &[&plan.target, &plan.revision.commit(), &sync_id],
        )
        .await
    }
    .and_then(|row| row.try_get(0))
    .map_err(StoreError::query("advance the target's generation"))?;

    // Drift is healed by writing the row again, or moot once the target no longer owns it.
    let written = changes.written_ids();
    let kinds: Vec<&str> = written.iter().map(|id| id.kind.as_str()).collect();
    let names: Vec<&str> = written.iter().map(|id| id.name.as_str()).collect();
    db.execute(
        "UPDATE drift_events d SET resolved_sync_id = $2
         WHERE d.target = $1 AND d.resolved_sync_id IS NULL
           AND ((d.kind, d.name) IN (SELECT * FROM unnest($3::text[], $4::text[]))
                OR NOT EXISTS (SELECT 1 FROM inventory v
                               WHERE v.target = $1 AND v.kind = d.kind AND v.name = d.name))",
        &[&plan.target, &sync_id, &kinds, &names],
    )
    .await
    .map_err(StoreError::query("resolve drift events"))?;

    let apply_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    db.execute(
        "UPDATE sync_runs SET status = 'succeeded', create_count = $2, update_count = $3,
             delete_count = $4, unchanged_count = $5, apply_ms = $6, error = NULL,
             finished_at = clock_timestamp()
         WHERE id = $1",
        &[
            &sync_id,
            &count(changes.creates.len()),
            &count(changes.updates.len()),
            &count(changes.deletes.len()),
            &count(plan.unchanged),
            &apply_ms,
        ],
    )
    .await
    .map_err(StoreError::query("mark the run succeeded"))?;
    tx.commit()
        .await
        .map_err(StoreError::query("commit the apply transaction"))?;

    Ok(ApplyOutcome::Applied(ApplyReport {
        sync_id,
        target: plan.target.clone(),
        generation,
        commit: plan.revision.commit().map(str::to_string),
        created: changes.creates.len(),
        updated: changes.updates.len(),
        deleted: changes.deletes.len(),
        unchanged: plan.unchanged,
        duration: started.elapsed(),
    }))
}

/// The plan's writes, split by statement shape, each in plan order.
struct Changes<'a> {
    creates: Vec<&'a DesiredResource>,
    updates: Vec<(&'a DesiredResource, &'a str)>,
    deletes: Vec<(&'a ResourceId, &'a str)>,
}

impl<'a> Changes<'a> {
    fn of(plan: &'a Plan) -> Self {
        let mut changes = Changes {
            creates: Vec::new(),
            updates: Vec::new(),
            deletes: Vec::new(),
        };
        for action in &plan.actions {
            match action {
                Action::Create { desired } => changes.creates.push(desired),
                Action::Update {
                    desired, live_hash, ..
                } => changes.updates.push((desired, live_hash.as_str())),
                Action::Delete { id, live_hash, .. } => {
                    changes.deletes.push((id, live_hash.as_str()))
                }
                Action::PruneSkipped { .. } => {}
            }
        }
        changes
    }

    fn written_ids(&self) -> Vec<&'a ResourceId> {
        self.creates
            .iter()
            .map(|desired| &desired.id)
            .chain(self.updates.iter().map(|(desired, _)| &desired.id))
            .chain(self.deletes.iter().map(|(id, _)| *id))
            .collect()
    }
}

/// The labels stored on a row: the document's, plus the ones every managed row carries
/// (which win over a document label of the same name).
pub fn row_labels(desired: &DesiredResource, target: &str, commit: &str) -> Value {
    let mut labels: BTreeMap<&str, &str> = desired
        .labels
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    labels.insert(LABEL_MANAGED_BY, "gitops");
    labels.insert(LABEL_GIT_COMMIT, commit);
    labels.insert(LABEL_TARGET, target);
    Value::Object(
        labels
            .into_iter()
            .map(|(key, value)| (key.to_string(), Value::String(value.to_string())))
            .collect(),
    )
}

/// A row's diff document (`{"labels", "spec"}`) without the labels [`row_labels`] adds, so
/// that a field diff against Git shows what Git changed, not what every apply writes.
pub fn without_row_labels(mut document: Value) -> Value {
    if let Some(Value::Object(labels)) = document.get_mut("labels") {
        for label in [LABEL_MANAGED_BY, LABEL_GIT_COMMIT, LABEL_TARGET] {
            labels.remove(label);
        }
    }
    document
}

/// Column arrays of a batch of creates or updates.
struct UpsertColumns<'a> {
    kinds: Vec<&'static str>,
    names: Vec<&'a str>,
    specs: Vec<Json<&'a Spec>>,
    hashes: Vec<&'a str>,
    labels: Vec<Value>,
    paths: Vec<&'a str>,
}

impl<'a> UpsertColumns<'a> {
    fn of<'b>(
        resources: impl ExactSizeIterator<Item = &'b &'a DesiredResource>,
        target: &str,
        commit: &str,
    ) -> Self
    where
        'a: 'b,
    {
        let len = resources.len();
        let mut columns = UpsertColumns {
            kinds: Vec::with_capacity(len),
            names: Vec::with_capacity(len),
            specs: Vec::with_capacity(len),
            hashes: Vec::with_capacity(len),
            labels: Vec::with_capacity(len),
            paths: Vec::with_capacity(len),
        };
        for desired in resources {
            columns.kinds.push(desired.id.kind.as_str());
            columns.names.push(&desired.id.name);
            columns.specs.push(Json(&desired.spec));
            columns.hashes.push(desired.hash.as_str());
            columns.labels.push(row_labels(desired, target, commit));
            columns.paths.push(&desired.source.path);
        }
        columns
    }
}

/// Creates: resources, inventory and revisions in one statement; the counts come back.
const CREATE_SQL: &str = "WITH input AS (
         SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::text[],
                              $5::jsonb[], $6::text[])
             AS u(kind, name, spec, spec_hash, labels, source_path)
     ), written AS (
         INSERT INTO resources (kind, name, spec, spec_hash, hash_version, labels,
                                source_path, git_commit, target, owned)
         SELECT kind, name, spec, spec_hash, $7, labels, source_path, $8, $9, true
         FROM input
         RETURNING 1
     ), owned AS (
         INSERT INTO inventory (target, kind, name, spec_hash, git_commit, applied_at)
         SELECT $9, kind, name, spec_hash, $8, now() FROM input
         ON CONFLICT (target, kind, name) DO UPDATE SET
             spec_hash = EXCLUDED.spec_hash, git_commit = EXCLUDED.git_commit,
             applied_at = EXCLUDED.applied_at
         RETURNING 1
     ), audit AS (
         INSERT INTO revisions (sync_id, target, kind, name, action, new_hash,
                                git_commit)
         SELECT $10, $9, kind, name, 'created', spec_hash, $8 FROM input
         RETURNING 1
     )
     SELECT (SELECT count(*) FROM written), (SELECT count(*) FROM owned),
            (SELECT count(*) FROM audit)";

/// Updates: only rows in this target's inventory are written (ownership is enforced here
/// too, not just by the planner).
const UPDATE_SQL: &str = "WITH input AS (
         SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::text[],
                              $5::jsonb[], $6::text[], $7::text[])
             AS u(kind, name, spec, spec_hash, labels, source_path, old_hash)
     ), owned AS (
         UPDATE inventory v SET spec_hash = i.spec_hash, git_commit = $9,
             applied_at = now()
         FROM input i
         WHERE v.target = $10 AND v.kind = i.kind AND v.name = i.name
         RETURNING v.kind, v.name
     ), written AS (
         UPDATE resources r SET spec = i.spec, spec_hash = i.spec_hash,
             hash_version = $8, labels = i.labels, source_path = i.source_path,
             git_commit = $9, target = $10, drifted_at = NULL, updated_at = now()
         FROM input i JOIN owned o ON o.kind = i.kind AND o.name = i.name
         WHERE r.kind = i.kind AND r.name = i.name
         RETURNING 1
     ), audit AS (
         INSERT INTO revisions (sync_id, target, kind, name, action, old_hash,
                                new_hash, git_commit)
         SELECT $11, $10, kind, name, 'updated', old_hash, spec_hash, $9 FROM input
         RETURNING 1
     )
     SELECT (SELECT count(*) FROM written), (SELECT count(*) FROM owned),
            (SELECT count(*) FROM audit)";

/// Deletes: rows go only through this target's inventory. A row already gone (deleted out
/// of band) is fine: the inventory entry still goes and the revision is written.
const DELETE_SQL: &str = "WITH input AS (
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
             AS u(kind, name, old_hash)
     ), disowned AS (
         DELETE FROM inventory v USING input i
         WHERE v.target = $4 AND v.kind = i.kind AND v.name = i.name
         RETURNING v.kind, v.name
     ), removed AS (
         DELETE FROM resources r USING disowned d
         WHERE r.kind = d.kind AND r.name = d.name
         RETURNING 1
     ), audit AS (
         INSERT INTO revisions (sync_id, target, kind, name, action, old_hash,
                                git_commit)
         SELECT $5, $4, kind, name, 'deleted', old_hash, $6 FROM input
         RETURNING 1
     )
     SELECT (SELECT count(*) FROM removed), (SELECT count(*) FROM disowned),
            (SELECT count(*) FROM audit)";

struct Writer<'t> {
    db: Prepared<'t, Transaction<'t>>,
    sync_id: Uuid,
    target: &'t str,
    commit: &'t str,
}

/// One batch's statement, not yet sent.
type Batch<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), ApplyError>> + Send + 'a>>;

/// Batches sent ahead of the one the server is writing. Statements on one connection still
/// run one after another, in order; sending the next batch before the last one's answer lets
/// this process encode it while the server writes, instead of each side waiting in turn.
const PIPELINE_DEPTH: usize = 3;

/// Runs `batches` in order, up to [`PIPELINE_DEPTH`] of them in flight; the first error ends
/// it (the transaction is then rolled back, the later batches' writes with it).
async fn write_pipelined(batches: Vec<Batch<'_>>) -> Result<(), ApplyError> {
    let mut written = futures_util::stream::iter(batches).buffered(PIPELINE_DEPTH);
    while let Some(batch) = written.next().await {
        batch?;
    }
    Ok(())
}

impl Writer<'_> {
    async fn create(&self, batch: &[&DesiredResource]) -> Result<(), ApplyError> {
        let columns = UpsertColumns::of(batch.iter(), self.target, self.commit);
        let row = self
            .db
            .query_one(
                CREATE_SQL,
                &[
                    &columns.kinds,
                    &columns.names,
                    &columns.specs,
                    &columns.hashes,
                    &columns.labels,
                    &columns.paths,
                    &HASH_VERSION,
                    &self.commit,
                    &self.target,
                    &self.sync_id,
                ],
            )
            .await
            .map_err(write_error("create resources"))?;
        check_counts(
            "create",
            &row,
            batch.len(),
            ["resources", "inventory", "revisions"],
        )
    }

    async fn update(&self, batch: &[(&DesiredResource, &str)]) -> Result<(), ApplyError> {
        let columns = UpsertColumns::of(
            batch.iter().map(|(desired, _)| desired),
            self.target,
            self.commit,
        );
        let old_hashes: Vec<&str> = batch.iter().map(|(_, old)| *old).collect();
        let row = self
            .db
            .query_one(
                UPDATE_SQL,
                &[
                    &columns.kinds,
                    &columns.names,
                    &columns.specs,
                    &columns.hashes,
                    &columns.labels,
                    &columns.paths,
                    &old_hashes,
                    &HASH_VERSION,
                    &self.commit,
                    &self.target,
                    &self.sync_id,
                ],
            )
            .await
            .map_err(write_error("update resources"))?;
        check_counts(
            "update",
            &row,
            batch.len(),
            ["resources", "inventory", "revisions"],
        )
    }

    async fn delete(&self, batch: &[(&ResourceId, &str)]) -> Result<(), ApplyError> {
        let kinds: Vec<&str> = batch.iter().map(|(id, _)| id.kind.as_str()).collect();
        let names: Vec<&str> = batch.iter().map(|(id, _)| id.name.as_str()).collect();
        let old_hashes: Vec<&str> = batch.iter().map(|(_, old)| *old).collect();
        let row = self
            .db
            .query_one(
                DELETE_SQL,
                &[
                    &kinds,
                    &names,
                    &old_hashes,
                    &self.target,
                    &self.sync_id,
                    &self.commit,
                ],
            )
            .await
            .map_err(write_error("delete resources"))?;
        let removed: i64 = row
            .try_get(0)
            .map_err(StoreError::query("read affected row counts"))?;
        if usize::try_from(removed).unwrap_or(usize::MAX) > batch.len() {
            return Err(ApplyError::RowCount {
                step: "delete",
                table: "resources",
                expected: batch.len(),
                actual: usize::try_from(removed).unwrap_or(usize::MAX),
            });
        }
        for (index, table) in [(1, "inventory"), (2, "revisions")] {
            check_count("delete", &row, index, table, batch.len())?;
        }
        Ok(())
    }
}

fn check_counts(
    step: &'static str,
    row: &tokio_postgres::Row,
    expected: usize,
    tables: [&'static str; 3],
) -> Result<(), ApplyError> {
    for (index, table) in tables.into_iter().enumerate() {
        check_count(step, row, index, table, expected)?;
    }
    Ok(())
}

fn check_count(
    step: &'static str,
    row: &tokio_postgres::Row,
    index: usize,
    table: &'static str,
    expected: usize,
) -> Result<(), ApplyError> {
    let actual: i64 = row
        .try_get(index)
        .map_err(StoreError::query("read affected row counts"))?;
    let actual = usize::try_from(actual).unwrap_or(usize::MAX);
    if actual != expected {
        return Err(ApplyError::RowCount {
            step,
            table,
            expected,
            actual,
        });
    }
    Ok(())
}

/// A unique violation while writing means someone else holds the identity; everything else
/// is a database error.
fn write_error(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> ApplyError {
    move |error| {
        if error.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            let detail = error
                .as_db_error()
                .map(|db| db.detail().unwrap_or(db.message()).to_string())
                .unwrap_or_default();
            ApplyError::Conflict { detail }
        } else {
            ApplyError::Store(StoreError::Query {
                context,
                source: error,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::hash::content_hash;
    use crate::model::{Kind, Revision, SourceLocation};
    use crate::plan::PlanBase;

    fn desired(name: &str, labels: &[(&str, &str)]) -> DesiredResource {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let spec = Spec::from_value(&json!({"timeout": 30}));
        DesiredResource {
            id: ResourceId::new(Kind::Job, name),
            hash: content_hash(&labels, &spec),
            labels,
            spec,
            source: SourceLocation::new(format!("jobs/{name}.yaml"), 1, 1),
        }
    }

    #[test]
    fn stored_labels_add_the_managed_labels_to_the_documents_own() {
        let resource = desired("build", &[("team", "platform")]);

        let labels = row_labels(&resource, "prod", "abc123");

        assert_eq!(
            labels,
            json!({"team": "platform", "managed-by": "gitops", "git-commit": "abc123",
                   "ritmo.dev/target": "prod"})
        );
    }

    #[test]
    fn a_document_cannot_override_the_managed_labels() {
        let resource = desired("build", &[("managed-by", "me"), ("git-commit", "fake")]);

        let labels = row_labels(&resource, "prod", "abc123");

        assert_eq!(labels["managed-by"], "gitops");
        assert_eq!(labels["git-commit"], "abc123");
    }

    #[test]
    fn changes_split_a_plan_by_statement_and_skip_prune_warnings() {
        let plan = Plan {
            target: "prod".into(),
            revision: Revision::Worktree,
            base: PlanBase::default(),
            actions: vec![
                Action::Create {
                    desired: desired("a", &[]),
                },
                Action::Update {
                    desired: desired("b", &[]),
                    live_hash: content_hash(&BTreeMap::new(), &Spec::from_value(&json!({}))),
                    drifted: false,
                    changes: Vec::new(),
                },
                Action::Delete {
                    id: ResourceId::new(Kind::Job, "c"),
                    live_hash: content_hash(&BTreeMap::new(), &Spec::from_value(&json!({}))),
                    changes: Vec::new(),
                },
                Action::PruneSkipped {
                    id: ResourceId::new(Kind::Job, "d"),
                },
            ],
            unchanged: 0,
            diagnostics: Vec::new(),
            approval_reason: None,
            partial: None,
        };

        let changes = Changes::of(&plan);

        let written: Vec<String> = changes
            .written_ids()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(written, ["job/a", "job/b", "job/c"]);
    }

    #[test]
    fn only_errors_about_the_write_itself_fail_the_run() {
        assert!(
            ApplyError::Conflict {
                detail: String::new()
            }
            .fails_the_run()
        );
        assert!(!ApplyError::DryRun(Uuid::nil()).fails_the_run());
        assert!(
            !ApplyError::NotApplicable {
                sync_id: Uuid::nil(),
                status: RunStatus::PendingApproval
            }
            .fails_the_run()
        );
    }
}
