//! The config repository the faults hit, and the database states they may leave.
//!
//! The repository has two commits, A and B, of `resources` resources each (plugins and jobs;
//! no credentials, whose deletes wait for approval). B deletes one job in fifty, edits the
//! rest and adds as many new ones, so going either way writes every job row: a long apply
//! with creates, updates and deletes. `main` is moved between them with `git update-ref`.
//! (Few deletes: an incremental plan looks for every removed name in every stored spec, 80 s
//! for 980 names over 10,000 rows on the suite's first machine.)
//!
//! Resources sit [`DOCS_PER_FILE`] to a file (`---` between documents): the apply is the same
//! as with one file each, and the planner reads a few hundred changed files instead of ten
//! thousand, which keeps the suite's time on the faults (an incremental plan's cost per
//! changed file is issue 22's finding 5, measured elsewhere).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use ritmo_tests::git_http::TestRepo;
use tokio_postgres::Client;

const PLUGINS: usize = 200;
const DOCS_PER_FILE: usize = 50;

pub struct ConfigRepo {
    repo: TestRepo,
    /// Commit A then commit B.
    pub commits: [String; 2],
}

impl ConfigRepo {
    pub fn generate(resources: usize) -> Result<ConfigRepo> {
        let jobs = resources
            .checked_sub(PLUGINS)
            .filter(|jobs| *jobs >= 10)
            .with_context(|| format!("at least {} resources", PLUGINS + 10))?;
        let repo = TestRepo::new();
        write_batches(&repo, "plugins", 0..PLUGINS, plugin);
        write_batches(&repo, "jobs", 0..jobs, |i| job(i, "a"));
        let a = repo.commit("commit A");
        let kept_and_new = (0..jobs + jobs.div_ceil(50)).filter(|i| *i >= jobs || i % 50 != 49);
        write_batches(&repo, "jobs", kept_and_new, |i| job(i, "b"));
        let b = repo.commit("commit B");
        Ok(ConfigRepo {
            repo,
            commits: [a, b],
        })
    }

    pub fn path(&self) -> &Path {
        self.repo.path()
    }

    /// Moves `main` (HEAD) to `commit`. The sync reads the branch's commit, never the checkout.
    pub fn point_main_at(&self, commit: &str) {
        self.repo.git(&["update-ref", "refs/heads/main", commit]);
    }
}

/// Writes the documents of `indices` into `dir/batch-NNNN.yaml`, resource `i` in batch
/// `i / DOCS_PER_FILE`, replacing those files.
fn write_batches(
    repo: &TestRepo,
    dir: &str,
    indices: impl Iterator<Item = usize>,
    document: impl Fn(usize) -> String,
) {
    let mut batches: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
    for i in indices {
        batches
            .entry(i / DOCS_PER_FILE)
            .or_default()
            .push(document(i));
    }
    for (batch, documents) in batches {
        repo.write(
            &format!("{dir}/batch-{batch:04}.yaml"),
            documents.join("---\n"),
        );
    }
}

fn plugin(i: usize) -> String {
    format!(
        "apiVersion: ritmo.dev/v1
kind: Plugin
metadata:
  name: plugin-{i:04}
spec:
  type: build
  description: Build step {i}
  binary_path: /opt/ritmo/plugins/plugin-{i:04}
  version: 1.{}.0
  enabled: true
",
        i % 10
    )
}

/// A job whose description and timeout depend on `revision`, so A and B differ in every job.
fn job(i: usize, revision: &str) -> String {
    let mut text = format!(
        "apiVersion: ritmo.dev/v1
kind: Job
metadata:
  name: svc-{i:05}
  labels:
    team: team-{team:02}
spec:
  description: Service {i} at revision {revision}
  scm:
    type: github
    url: https://github.com/acme/svc-{i:05}
    branch: main
  build:
    type: maven
  pipeline:
    stages:
",
        team = i % 50
    );
    for (stage, (name, depends)) in [("build", ""), ("test", "build"), ("deploy", "test")]
        .into_iter()
        .enumerate()
    {
        let _ = writeln!(text, "      - name: {name}");
        if !depends.is_empty() {
            let _ = writeln!(text, "        depends_on: [{depends}]");
        }
        let _ = writeln!(
            text,
            "        steps:\n          - plugin: plugin-{:04}",
            (i + stage) % PLUGINS
        );
    }
    let timeout = if revision == "a" { 30 } else { 45 };
    let _ = write!(text, "  timeout: {timeout}\n  enabled: true\n");
    text
}

/// What the database holds for a target, reduced to digests: the resources (everything but
/// timestamps), the inventory, and the target's last applied commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbState {
    pub resources: i64,
    pub resources_digest: String,
    pub inventory_digest: String,
    pub last_applied_commit: Option<String>,
}

impl DbState {
    /// Reads the three in one snapshot: an apply committing meanwhile is wholly in or out.
    pub async fn read(db: &Client) -> Result<DbState> {
        db.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let state = DbState::read_in_snapshot(db).await;
        db.batch_execute("COMMIT").await?;
        state
    }

    async fn read_in_snapshot(db: &Client) -> Result<DbState> {
        if !has_schema(db).await? {
            return Ok(DbState::empty());
        }
        let resources = db
            .query_one(
                "SELECT count(*), md5(coalesce(string_agg(concat_ws('|', kind, name, spec_hash,
                     hash_version, spec::text, labels::text, source_path, git_commit, target,
                     drifted_at IS NULL), E'\\n' ORDER BY kind, name), ''))
                 FROM resources",
                &[],
            )
            .await?;
        let inventory = db
            .query_one(
                "SELECT md5(coalesce(string_agg(concat_ws('|', target, kind, name, spec_hash,
                     git_commit), E'\\n' ORDER BY target, kind, name), ''))
                 FROM inventory",
                &[],
            )
            .await?;
        let target = db
            .query_opt(
                "SELECT last_applied_commit FROM targets WHERE name = 'default'",
                &[],
            )
            .await?;
        Ok(DbState {
            resources: resources.get(0),
            resources_digest: resources.get(1),
            inventory_digest: inventory.get(0),
            last_applied_commit: target.and_then(|row| row.get(0)),
        })
    }

    /// The state of an empty database.
    pub fn empty() -> DbState {
        DbState {
            resources: 0,
            resources_digest: "d41d8cd98f00b204e9800998ecf8427e".into(),
            inventory_digest: "d41d8cd98f00b204e9800998ecf8427e".into(),
            last_applied_commit: None,
        }
    }
}

/// A run the check found in progress.
#[derive(Debug)]
pub struct OpenRun {
    pub id: String,
    pub status: String,
    pub trigger: String,
    pub error: Option<String>,
}

/// Whether `ritmo` has created its tables yet (the first process to connect does).
async fn has_schema(db: &Client) -> Result<bool> {
    let row = db
        .query_one("SELECT to_regclass('sync_runs') IS NOT NULL", &[])
        .await?;
    Ok(row.get(0))
}

/// Runs in `statuses`, oldest first.
pub async fn runs_in(db: &Client, statuses: &[&str]) -> Result<Vec<OpenRun>> {
    if !has_schema(db).await? {
        return Ok(Vec::new());
    }
    let statuses: Vec<String> = statuses.iter().map(|s| (*s).to_string()).collect();
    let rows = db
        .query(
            "SELECT id::text, status, trigger, error FROM sync_runs
             WHERE status = ANY($1) ORDER BY started_at",
            &[&statuses],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| OpenRun {
            id: row.get(0),
            status: row.get(1),
            trigger: row.get(2),
            error: row.get(3),
        })
        .collect())
}

/// Whether a session other than ours is writing `resources` (an apply under way): it holds
/// `RowExclusiveLock` on the table from its first batch until it commits or dies.
pub async fn apply_under_way(db: &Client) -> Result<bool> {
    let row = db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_locks l
                 WHERE l.relation = to_regclass('resources') AND l.mode = 'RowExclusiveLock'
                   AND l.granted AND l.pid <> pg_backend_pid()
                   AND l.database = (SELECT oid FROM pg_database
                                     WHERE datname = current_database()))",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// How many sessions `ritmo` processes hold on the database (they name themselves `ritmo`).
pub async fn ritmo_sessions(db: &Client) -> Result<i64> {
    let row = db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'ritmo'",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// The `apply_ms` of the newest succeeded run: how long its transaction took.
pub async fn last_apply_ms(db: &Client) -> Result<i64> {
    let row = db
        .query_opt(
            "SELECT apply_ms FROM sync_runs WHERE status = 'succeeded' AND apply_ms IS NOT NULL
             ORDER BY finished_at DESC LIMIT 1",
            &[],
        )
        .await?;
    match row.and_then(|row| row.get::<_, Option<i64>>(0)) {
        Some(ms) => Ok(ms),
        None => bail!("no run recorded an apply time"),
    }
}
