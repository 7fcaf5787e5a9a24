//! No run outlives its process (issue 22): a run whose owner died is marked `abandoned` and
//! holds nothing back, and a failure quoting text PostgreSQL refuses (NUL) is still recorded.
//!
//! A process "dies" here by having its database session terminated (`pg_terminate_backend`),
//! which is all PostgreSQL sees of a SIGKILL. The real thing — processes killed in the middle
//! of a 10,000-resource apply — is the fault suite (`make test-faults`, tests/faults/).

use std::collections::BTreeSet;

use ritmo::config::{GitAuth, Settings, TargetSettings};
use ritmo::message::PlanRequest;
use ritmo::metrics::MetricsSink;
use ritmo::model::Revision;
use ritmo::plan::{Plan, PlanBase, PlanPolicy};
use ritmo::queue::{LocalReceivers, Queues};
use ritmo::services::Services;
use ritmo::store::{NewRun, NewTarget, RunStatus, Store, Trigger};
use ritmo::workflow::{self, ApplyRequestOutcome, PlanRequestOutcome};
use ritmo_tests::db::TestDb;
use ritmo_tests::git_http::ServedRepo as Remote;
use secrecy::SecretString;

const TARGET: &str = "default";

/// `ritmo serve`'s pipeline (in-process queues) on a test database and a served repository.
struct Serve {
    services: Services,
    receivers: LocalReceivers,
}

impl Serve {
    async fn start(db: &TestDb, remote: &Remote, cache: &tempfile::TempDir) -> Serve {
        let (queues, receivers) = Queues::local();
        let services = Services::connect(
            Settings {
                enabled: true,
                targets: vec![target_settings(remote)],
                builtin_plugins: BTreeSet::new(),
                database_url: Some(SecretString::from(db.url.clone())),
                cache_dir: cache.path().to_path_buf(),
                ..Settings::default()
            },
            queues,
            MetricsSink::capture(),
        )
        .await
        .unwrap();
        Serve {
            services,
            receivers,
        }
    }
}

fn target_settings(remote: &Remote) -> TargetSettings {
    TargetSettings {
        name: TARGET.into(),
        repo_url: remote.url(),
        branch: "main".into(),
        path: String::new(),
        // Due at every tick.
        interval_secs: 0,
        auto_apply: true,
        dry_run: false,
        self_heal: false,
        controls: Default::default(),
        policy: PlanPolicy::default(),
        auth: GitAuth::None,
    }
}

fn new_run(revision: Option<String>) -> NewRun {
    NewRun {
        target: TARGET.into(),
        trigger: Trigger::Cli,
        actor: None,
        revision,
        dry_run: false,
    }
}

fn empty_plan(commit: &str) -> Plan {
    Plan {
        target: TARGET.into(),
        revision: Revision::Commit {
            branch: "main".into(),
            commit: commit.into(),
        },
        base: PlanBase::default(),
        actions: Vec::new(),
        unchanged: 0,
        diagnostics: Vec::new(),
        approval_reason: None,
        partial: None,
    }
}

/// A store as a separate process holds it: its own connection, the target registered.
async fn process_store(db: &TestDb, repo_url: &str) -> Store {
    let store = Store::connect(&db.url).await.unwrap();
    store
        .ensure_target(&NewTarget {
            name: TARGET.into(),
            repo_url: repo_url.into(),
            branch: "main".into(),
            path: String::new(),
        })
        .await
        .unwrap();
    store
}

/// The backend pids of the `ritmo` sessions on the test database now.
async fn ritmo_sessions(db: &TestDb) -> Vec<i32> {
    db.client()
        .await
        .query(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'ritmo'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Ends the sessions `pids` and waits until they are gone: to PostgreSQL, their processes
/// died.
async fn kill_sessions(db: &TestDb, pids: &[i32]) {
    let admin = db.client().await;
    for pid in pids {
        let ended: bool = admin
            .query_one("SELECT pg_terminate_backend($1, 30000)", &[pid])
            .await
            .unwrap()
            .get(0);
        assert!(ended, "session {pid} did not end");
    }
}

/// Regression (issue 22, finding 4): `ritmo gitops sync` committed `applying` before its apply
/// transaction. Killed mid-apply, its run stayed `applying` for good, and `ritmo serve` then
/// treated it as in progress: the poller never asked for the commit again and the planner
/// skipped every request for it (0 of 3 recovered).
#[tokio::test]
async fn a_killed_clis_applying_run_is_abandoned_and_serve_applies_its_commit() {
    let db = TestDb::new().await;
    let remote = Remote::new();
    let cache = tempfile::tempdir().unwrap();
    let commit = remote.push_plugin("git-scm", "1.0.0");
    let cli = process_store(&db, &remote.url()).await;
    let dead = cli
        .begin_run(&new_run(Some(format!("main@sha1:{commit}"))))
        .await
        .unwrap();
    cli.record_plan(dead, &empty_plan(&commit), RunStatus::Applying)
        .await
        .unwrap();
    kill_sessions(&db, &ritmo_sessions(&db).await).await;

    let mut serve = Serve::start(&db, &remote, &cache).await;
    let poll = workflow::poll_targets(&serve.services).await.unwrap();
    let request = serve.receivers.plans.try_recv();
    let planned = match &request {
        Ok(request) => Some(
            workflow::handle_plan_request(&serve.services, request)
                .await
                .unwrap(),
        ),
        Err(_) => None,
    };
    let apply = serve.receivers.applies.try_recv();
    let applied = match &apply {
        Ok(apply) => Some(
            workflow::handle_apply_request(&serve.services, apply)
                .await
                .unwrap(),
        ),
        Err(_) => None,
    };
    let store = Store::connect(&db.url).await.unwrap();
    let dead_run = store.run(dead).await.unwrap().unwrap();

    assert_eq!(poll.enqueued, 1, "{poll:?}");
    assert!(
        matches!(
            planned,
            Some(PlanRequestOutcome::Planned {
                apply_enqueued: true,
                ..
            })
        ),
        "{planned:?}"
    );
    assert!(
        matches!(applied, Some(ApplyRequestOutcome::Applied { .. })),
        "{applied:?}"
    );
    assert_eq!(
        store
            .target(TARGET)
            .await
            .unwrap()
            .unwrap()
            .last_applied_commit,
        Some(commit)
    );
    assert_eq!(dead_run.status, RunStatus::Abandoned);
    assert!(
        dead_run
            .error
            .as_deref()
            .is_some_and(|error| error.contains("abandoned while applying")),
        "{:?}",
        dead_run.error
    );
}

/// Regression (issue 22, finding 4): a `metadata.name` holding NUL (`"bad\0name"`, a YAML
/// escape) is quoted by its diagnostic; `jsonb` refused it ("\u0000 cannot be converted to
/// text"), so the run's own failure record failed and the run stayed `planning` for good.
#[tokio::test]
async fn a_name_containing_nul_fails_its_run_instead_of_leaving_it_planning() {
    let db = TestDb::new().await;
    let remote = Remote::new();
    let cache = tempfile::tempdir().unwrap();
    remote.repo.write(
        "jobs/bad.yaml",
        "apiVersion: ritmo.dev/v1\nkind: Job\nmetadata:\n  name: \"bad\\0name\"\nspec:\n  \
         description: a name no database can hold\n",
    );
    let commit = remote.push("a NUL in a name");
    let serve = Serve::start(&db, &remote, &cache).await;
    let request = PlanRequest::new(TARGET, ritmo::message::Trigger::Manual, chrono::Utc::now())
        .with_revision(format!("main@sha1:{commit}"));

    let outcome = workflow::handle_plan_request(&serve.services, &request).await;

    let Ok(PlanRequestOutcome::Failed { sync_id, .. }) = outcome else {
        panic!("expected a failed run, got {outcome:?}");
    };
    let store = Store::connect(&db.url).await.unwrap();
    let run = store.run(sync_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        run.diagnostics
            .iter()
            .any(|diagnostic| diagnostic.message.contains("`bad\\u0000name`")),
        "{:?}",
        run.diagnostics
    );
    let planning: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM sync_runs WHERE status = 'planning'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(planning, 0);
}

/// Regression (issue 22): a failure reason quoting NUL made `fail_run`'s own write fail
/// ("invalid byte sequence for encoding UTF8: 0x00"), so the run was never finished.
#[tokio::test]
async fn a_failure_reason_containing_nul_is_recorded_escaped() {
    let db = TestDb::new().await;
    let store = process_store(&db, "https://git.example/acme/config.git").await;
    let sync_id = store.begin_run(&new_run(None)).await.unwrap();

    store
        .fail_run(sync_id, "cannot read `a\0b`", &[])
        .await
        .unwrap();

    let run = store.run(sync_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error.as_deref(), Some("cannot read `a\\u0000b`"));
}

#[tokio::test]
async fn a_run_whose_process_died_while_planning_is_abandoned_by_the_next_run() {
    let db = TestDb::new().await;
    let planner = process_store(&db, "https://git.example/acme/config.git").await;
    let dead = planner.begin_run(&new_run(None)).await.unwrap();
    kill_sessions(&db, &ritmo_sessions(&db).await).await;
    let next = process_store(&db, "https://git.example/acme/config.git").await;

    let live = next.begin_run(&new_run(None)).await.unwrap();

    let dead_run = next.run(dead).await.unwrap().unwrap();
    assert_eq!(dead_run.status, RunStatus::Abandoned);
    assert!(dead_run.finished_at.is_some());
    assert!(
        dead_run
            .error
            .as_deref()
            .is_some_and(|error| error.starts_with("abandoned while planning")),
        "{:?}",
        dead_run.error
    );
    assert_eq!(
        next.run(live).await.unwrap().unwrap().status,
        RunStatus::Planning
    );
}

#[tokio::test]
async fn a_live_processs_runs_and_runs_waiting_in_a_queue_are_never_abandoned() {
    let db = TestDb::new().await;
    let planner = process_store(&db, "https://git.example/acme/config.git").await;
    let planner_session = ritmo_sessions(&db).await;
    let planning = planner.begin_run(&new_run(None)).await.unwrap();
    let queued = planner.begin_run(&new_run(None)).await.unwrap();
    planner
        .record_plan(queued, &empty_plan("abc123"), RunStatus::Planned)
        .await
        .unwrap();
    let other = process_store(&db, "https://git.example/acme/config.git").await;

    let swept_while_alive = other.abandon_ownerless_runs(None).await.unwrap();
    kill_sessions(&db, &planner_session).await;
    let swept_once_dead = other.abandon_ownerless_runs(None).await.unwrap();

    assert!(swept_while_alive.is_empty(), "{swept_while_alive:?}");
    let swept: Vec<_> = swept_once_dead.iter().map(|run| run.sync_id).collect();
    assert_eq!(swept, [planning]);
    // A planned run waits for an applier, whichever process planned it.
    assert_eq!(
        other.run(queued).await.unwrap().unwrap().status,
        RunStatus::Planned
    );
}
