//! One sync engine: the same commits synced through `ritmo gitops sync` (the CLI, running the
//! pipeline in its own process) and through the planner and applier Lambda handlers fed from
//! moto's SQS FIFO queues end in the same database; the CLI's read-only commands write nothing;
//! and the target's policies (`enabled`, `auto_apply`) mean the same at every entry.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use lambda_runtime::{Context, LambdaEvent};
use ritmo::config::{Settings, env_from_map};
use ritmo::message::PlanRequest;
use ritmo::metrics::MetricsSink;
use ritmo::queue::Queues;
use ritmo::services::Services;
use ritmo::workflow::{self, ApproveOutcome};
use ritmo_tests::db::TestDb;
use ritmo_tests::example_repo;
use ritmo_tests::git_http::TestRepo;
use ritmo_tests::moto::Moto;
use serde_json::{Value, json};
use uuid::Uuid;

const EXAMPLE_KEY: &str = "ritmo-example-master-key-32bytes";
const TARGET: &str = "default";

/// A bootstrap file naming `repo`'s `main` as target `default`.
fn bootstrap(dir: &Path, repo: &TestRepo, auto_apply: bool) -> PathBuf {
    let path = dir.join("gitops-bootstrap.yaml");
    std::fs::write(
        &path,
        format!(
            "gitops:\n  enabled: true\n  repository:\n    url: {}\n    branch: main\n    path: /\n  \
             sync:\n    auto_apply: {auto_apply}\n",
            repo.path().display()
        ),
    )
    .unwrap();
    path
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `ritmo` binary as a person runs it, against its own database.
struct Cli {
    db: TestDb,
    cache: tempfile::TempDir,
}

impl Cli {
    async fn new() -> Cli {
        Cli {
            db: TestDb::new().await,
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ritmo"));
        command
            .arg("--config")
            .arg(config)
            .args(args)
            .env_remove("RITMO_GITOPS_REPO_URL")
            .env("RITMO_GITOPS_BOOTSTRAP", "")
            .env("RITMO_GITOPS_CACHE_DIR", self.cache.path())
            .env("RITMO_MASTER_ENCRYPTION_KEY", EXAMPLE_KEY)
            .env("DATABASE_URL", &self.db.url)
            .env("USER", "jane")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for (name, value) in env {
            command.env(name, value);
        }
        command.output().expect("ritmo runs")
    }

    /// `ritmo gitops sync -o json`: its exit code and output.
    fn sync(&self, config: &Path) -> (i32, Value) {
        let output = self.run(config, &["gitops", "sync", "-o", "json"], &[]);
        let value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", text(&output)));
        (output.status.code().unwrap_or(-1), value)
    }
}

/// The planner and applier functions as Lambda runs them: SQS FIFO queues on moto, each
/// batch received by an event source mapping's stand-in and handed to the function's own
/// handler, the messages it did not report as failures deleted.
struct Lambda {
    db: TestDb,
    sqs: aws_sdk_sqs::Client,
    plan_queue: String,
    apply_queue: String,
    cache: tempfile::TempDir,
    _moto: Moto,
}

impl Lambda {
    async fn new() -> Lambda {
        let moto = Moto::start();
        let (plan_queue, _) = moto.fifo_queue_with_dlq("ritmo-plan", 30, 5).await;
        let (apply_queue, _) = moto.fifo_queue_with_dlq("ritmo-apply", 30, 5).await;
        Lambda {
            db: TestDb::new().await,
            sqs: aws_sdk_sqs::Client::new(&moto.sdk_config().await),
            plan_queue,
            apply_queue,
            cache: tempfile::tempdir().unwrap(),
            _moto: moto,
        }
    }

    /// What a function builds at a cold start from `config`: settings, the queues, the
    /// database.
    async fn services(&self, config: &Path) -> Services {
        let env = env_from_map(BTreeMap::from([
            ("DATABASE_URL".to_owned(), self.db.url.clone()),
            (
                "RITMO_MASTER_ENCRYPTION_KEY".to_owned(),
                EXAMPLE_KEY.to_owned(),
            ),
            (
                "RITMO_GITOPS_CACHE_DIR".to_owned(),
                self.cache.path().display().to_string(),
            ),
        ]));
        let settings = Settings::load(Some(config), &env).unwrap();
        let queues = Queues::sqs(
            self.sqs.clone(),
            self.plan_queue.clone(),
            self.apply_queue.clone(),
        );
        Services::connect(settings, queues, MetricsSink::capture())
            .await
            .unwrap()
    }

    /// `POST /api/v1/gitops/sync`'s work, then the functions until both queues are empty.
    async fn sync(&self, config: &Path) {
        let services = self.services(config).await;
        workflow::request_sync(
            &services,
            &workflow::ManualSync {
                actor: Some("jane".into()),
                ..workflow::ManualSync::of(TARGET)
            },
        )
        .await
        .unwrap();
        self.deliver(&services).await;
    }

    /// `POST /api/v1/gitops/plans/{id}/approve`'s work, then the functions.
    async fn approve(&self, config: &Path, sync_id: Uuid) -> ApproveOutcome {
        let services = self.services(config).await;
        let outcome = workflow::approve_plan(&services, sync_id, "jane")
            .await
            .unwrap();
        self.deliver(&services).await;
        outcome
    }

    async fn deliver(&self, services: &Services) {
        for _ in 0..20 {
            let planned = self
                .invoke(services, &self.plan_queue, Function::Planner)
                .await;
            let applied = self
                .invoke(services, &self.apply_queue, Function::Applier)
                .await;
            if !planned && !applied {
                return;
            }
        }
        panic!("the queues never emptied");
    }

    /// One invocation of `function` with what `queue` holds; false when it held nothing.
    async fn invoke(&self, services: &Services, queue: &str, function: Function) -> bool {
        let received = self
            .sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        let messages = received.messages();
        if messages.is_empty() {
            return false;
        }
        let records: Vec<Value> = messages
            .iter()
            .map(|message| {
                let attributes: BTreeMap<String, String> = message
                    .attributes()
                    .into_iter()
                    .flatten()
                    .map(|(name, value)| (name.as_str().to_owned(), value.clone()))
                    .collect();
                json!({
                    "messageId": message.message_id(),
                    "receiptHandle": message.receipt_handle(),
                    "body": message.body(),
                    "attributes": attributes,
                    "messageAttributes": {},
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:queue.fifo",
                    "awsRegion": "us-east-1",
                })
            })
            .collect();
        let event: SqsEvent = serde_json::from_value(json!({ "Records": records })).unwrap();
        let event = LambdaEvent::new(event, Context::default());
        let response = match function {
            Function::Planner => planner_function::handler::handle(services, event).await,
            Function::Applier => applier_function::handler::handle(services, event).await,
        }
        .unwrap();
        assert!(
            response.batch_item_failures.is_empty(),
            "{function:?} reported failures: {:?}",
            response.batch_item_failures
        );
        for message in messages {
            self.sqs
                .delete_message()
                .queue_url(queue)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        true
    }
}

#[derive(Debug, Clone, Copy)]
enum Function {
    Planner,
    Applier,
}

/// What a sync leaves behind, without what differs by nature between two databases (ids,
/// times, who or what triggered the run).
async fn synced_state(db: &TestDb) -> String {
    let client = db.client().await;
    let mut state = String::new();
    for (table, query) in [
        (
            "resources",
            "select kind || '/' || name || ' ' || spec_hash || ' ' || spec::text || ' ' || \
             labels::text || ' ' || coalesce(source_path, '-') from resources order by kind, name",
        ),
        (
            "inventory",
            "select target || ' ' || kind || '/' || name || ' ' || spec_hash || ' ' || git_commit \
             from inventory order by 1",
        ),
        (
            "revisions",
            "select kind || '/' || name || ' ' || action || ' ' || coalesce(old_hash, '-') || ' ' \
             || coalesce(new_hash, '-') || ' ' || coalesce(git_commit, '-') from revisions \
             order by id",
        ),
        (
            "sync_runs",
            "select status || ' ' || coalesce(revision, '-') || ' +' || create_count || ' ~' || \
             update_count || ' -' || delete_count || ' =' || unchanged_count from sync_runs \
             order by started_at, id",
        ),
        (
            "targets",
            "select name || ' ' || generation || ' ' || coalesce(last_applied_commit, '-') || ' ' \
             || coalesce(pinned_commit, '-') from targets order by name",
        ),
    ] {
        state.push_str(&format!("== {table}\n"));
        for row in client.query(query, &[]).await.unwrap() {
            state.push_str(&row.get::<_, String>(0));
            state.push('\n');
        }
    }
    state
}

/// The last run's id and status, newest first.
async fn last_run(db: &TestDb) -> (Uuid, String) {
    let row = db
        .client()
        .await
        .query_one(
            "select id, status from sync_runs order by started_at desc, id desc limit 1",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

fn edit(repo: &TestRepo, path: &str, from: &str, to: &str) {
    let file = repo.path().join(path);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(from), "{path} lost `{from}`");
    std::fs::write(file, text.replacen(from, to, 1)).unwrap();
}

#[tokio::test]
async fn the_cli_and_the_lambda_functions_leave_the_same_database_after_every_commit() {
    let repo = example_repo();
    let configs = tempfile::tempdir().unwrap();
    let auto = bootstrap(configs.path(), &repo, true);
    let cli = Cli::new().await;
    let lambda = Lambda::new().await;
    let mut exits = Vec::new();
    // Both entries sync the same commit, then the two databases are compared.
    let mut step = async |name: &str, config: &Path| {
        let (exit, output) = cli.sync(config);
        lambda.sync(config).await;
        exits.push((name.to_owned(), exit, output["status"].clone()));
        let (from_cli, from_lambda) = (synced_state(&cli.db).await, synced_state(&lambda.db).await);
        assert_eq!(from_cli, from_lambda, "after `{name}` the databases differ");
    };

    step("create", &auto).await;
    edit(
        &repo,
        "plugins/git-scm.yaml",
        "Clones the job's",
        "Checks out the job's",
    );
    repo.commit("edit");
    step("edit", &auto).await;
    edit(&repo, "plugins/jacoco.yaml", "  enabled: true\n", "");
    edit(
        &repo,
        "plugins/jacoco.yaml",
        "spec:\n",
        "spec:\n  enabled: true\n",
    );
    repo.commit("reorder keys");
    step("key reorder", &auto).await;
    repo.remove("webhooks/gitlab-frontend.yaml");
    repo.commit("delete a webhook");
    step("delete with prune", &auto).await;
    edit(
        &repo,
        "webhooks/github-backend.yaml",
        "name: github-backend",
        "name: backend-push",
    );
    repo.git(&[
        "mv",
        "webhooks/github-backend.yaml",
        "webhooks/backend-push.yaml",
    ]);
    repo.commit("rename a webhook");
    step("rename", &auto).await;
    repo.write(
        "jobs/broken.yaml",
        "apiVersion: ritmo.dev/v1\nkind: Job\nmetadata: [\n",
    );
    repo.commit("break the repository");
    step("validation failure", &auto).await;
    repo.remove("jobs/broken.yaml");
    repo.commit("repair");
    step("repair", &auto).await;

    // Under `auto_apply: false` every plan waits; approving the newer one makes the older
    // stale, and approving that is refused at both entries.
    let manual = bootstrap(configs.path(), &repo, false);
    edit(
        &repo,
        "plugins/git-scm.yaml",
        "version: 2.3.1",
        "version: 2.4.0",
    );
    repo.commit("older plan");
    step("older plan waits for approval", &manual).await;
    let older = (last_run(&cli.db).await, last_run(&lambda.db).await);
    edit(
        &repo,
        "plugins/git-scm.yaml",
        "version: 2.4.0",
        "version: 2.5.0",
    );
    repo.commit("newer plan");
    step("newer plan waits for approval", &manual).await;
    let newer = (last_run(&cli.db).await, last_run(&lambda.db).await);
    let approved = cli.run(&manual, &["gitops", "approve", &newer.0.0.to_string()], &[]);
    let lambda_approved = lambda.approve(&manual, newer.1.0).await;
    let stale = cli.run(&manual, &["gitops", "approve", &older.0.0.to_string()], &[]);
    let lambda_stale = lambda.approve(&manual, older.1.0).await;

    let statuses: Vec<(String, i32, String)> = exits
        .iter()
        .map(|(name, exit, status)| (name.clone(), *exit, status.as_str().unwrap_or("-").into()))
        .collect();
    let expected: Vec<(String, i32, String)> = [
        ("create", 0, "succeeded"),
        ("edit", 0, "succeeded"),
        ("key reorder", 0, "succeeded"),
        ("delete with prune", 0, "succeeded"),
        ("rename", 0, "succeeded"),
        ("validation failure", 1, "failed"),
        ("repair", 0, "succeeded"),
        ("older plan waits for approval", 0, "pending_approval"),
        ("newer plan waits for approval", 0, "pending_approval"),
    ]
    .into_iter()
    .map(|(name, exit, status)| (name.to_owned(), exit, status.to_owned()))
    .collect();
    assert_eq!(statuses, expected);
    assert_eq!(older.0.1, "pending_approval");
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
    assert!(matches!(lambda_approved, ApproveOutcome::Approved { .. }));
    assert_eq!(stale.status.code(), Some(1), "{}", text(&stale));
    assert!(String::from_utf8_lossy(&stale.stderr).contains("stale"));
    assert!(matches!(lambda_stale, ApproveOutcome::Stale { .. }));
    let (from_cli, from_lambda) = (synced_state(&cli.db).await, synced_state(&lambda.db).await);
    assert_eq!(
        from_cli, from_lambda,
        "after the approvals the databases differ"
    );
    assert!(
        from_cli.contains("superseded") && from_cli.contains("version\": \"2.5.0"),
        "{from_cli}"
    );
}

/// Every row of every table, as `pg_dump --data-only` writes them.
fn dump(db: &TestDb) -> String {
    let output = Command::new("pg_dump")
        .args(["--data-only", "--no-owner", "--no-privileges"])
        .arg(&db.url)
        .output()
        .expect("pg_dump runs (install postgresql-client)");
    assert!(output.status.success(), "{}", text(&output));
    // `\restrict KEY` guards a restore with a key made anew by every dump.
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with("\\restrict") && !line.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lines of `after` that `before` lacks, and the other way round.
fn difference(before: &str, after: &str) -> String {
    let (before, after): (Vec<&str>, Vec<&str>) =
        (before.lines().collect(), after.lines().collect());
    let gone = before.iter().filter(|line| !after.contains(line));
    let new = after.iter().filter(|line| !before.contains(line));
    gone.map(|line| format!("- {line}"))
        .chain(new.map(|line| format!("+ {line}")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn validate_plan_and_a_dry_run_sync_write_nothing_to_any_table() {
    let repo = example_repo();
    let configs = tempfile::tempdir().unwrap();
    let config = bootstrap(configs.path(), &repo, true);
    let cli = Cli::new().await;
    assert_eq!(cli.sync(&config).0, 0);
    edit(
        &repo,
        "plugins/git-scm.yaml",
        "version: 2.3.1",
        "version: 2.4.0",
    );
    repo.remove("webhooks/gitlab-frontend.yaml");
    repo.commit("a change to preview");
    let before = dump(&cli.db);

    let validate = cli.run(&config, &["gitops", "validate"], &[]);
    let plan = cli.run(&config, &["gitops", "plan"], &[]);
    let dry_run = cli.run(&config, &["gitops", "sync", "--dry-run"], &[]);
    let dry_full = cli.run(&config, &["gitops", "sync", "--dry-run", "--full"], &[]);

    for output in [&validate, &plan, &dry_run, &dry_full] {
        assert_eq!(output.status.code(), Some(0), "{}", text(output));
    }
    let shown = String::from_utf8_lossy(&plan.stdout);
    assert!(
        shown.contains("~ plugin/git-scm") && shown.contains("- webhook/gitlab-frontend"),
        "{shown}"
    );
    assert!(String::from_utf8_lossy(&dry_run.stdout).contains("Dry run: nothing applied"));
    let after = dump(&cli.db);
    assert!(
        after == before,
        "a read-only command wrote:\n{}",
        difference(&before, &after)
    );
}

#[tokio::test]
async fn flags_that_contradict_a_configured_target_are_refused_and_change_nothing() {
    let repo = example_repo();
    let other = example_repo();
    let configs = tempfile::tempdir().unwrap();
    let config = bootstrap(configs.path(), &repo, true);
    let cli = Cli::new().await;
    assert_eq!(cli.sync(&config).0, 0);
    let before = dump(&cli.db);

    let elsewhere = cli.run(
        &config,
        &[
            "gitops",
            "sync",
            "--repo-path",
            other.path().to_str().unwrap(),
        ],
        &[],
    );
    let branch = cli.run(&config, &["gitops", "sync", "--branch", "staging"], &[]);
    let same = cli.run(
        &config,
        &[
            "gitops",
            "sync",
            "--repo-path",
            repo.path().to_str().unwrap(),
            "--branch",
            "main",
        ],
        &[],
    );
    let own_target = cli.run(
        &config,
        &[
            "gitops",
            "plan",
            "--target",
            "scratch",
            "--repo-path",
            other.path().to_str().unwrap(),
        ],
        &[],
    );

    for refused in [&elsewhere, &branch] {
        assert_eq!(refused.status.code(), Some(2), "{}", text(refused));
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains("--target NAME") && stderr.contains("configured"),
            "{stderr}"
        );
    }
    assert_eq!(same.status.code(), Some(0), "{}", text(&same));
    // Under a name of its own the other repository is planned as another target, which may
    // not take over what `default` owns.
    assert_eq!(own_target.status.code(), Some(1), "{}", text(&own_target));
    assert!(
        String::from_utf8_lossy(&own_target.stdout).contains("target `scratch` does not own it")
    );
    let after = dump(&cli.db);
    let runs = |dump: &str| {
        dump.lines()
            .filter(|line| line.contains("main@sha1:"))
            .count()
    };
    // The agreeing sync records one more run of the same commit and nothing else.
    assert_eq!(runs(&after), runs(&before) + 1, "{after}");
    assert!(!after.contains(other.path().to_str().unwrap()), "{after}");
}

#[tokio::test]
async fn with_gitops_disabled_neither_the_cli_nor_the_functions_plan_or_apply() {
    let repo = example_repo();
    let configs = tempfile::tempdir().unwrap();
    let config = bootstrap(configs.path(), &repo, true);
    let disabled = [("RITMO_GITOPS_ENABLED", "false")];
    let cli = Cli::new().await;
    let lambda = Lambda::new().await;

    let sync = cli.run(&config, &["gitops", "sync"], &disabled);
    let status = cli.run(&config, &["gitops", "status", "-o", "json"], &disabled);
    let env = env_from_map(BTreeMap::from([
        ("DATABASE_URL".to_owned(), lambda.db.url.clone()),
        ("RITMO_GITOPS_ENABLED".to_owned(), "false".to_owned()),
    ]));
    let mut settings = Settings::load(Some(&config), &env).unwrap();
    settings.cache_dir = lambda.cache.path().to_path_buf();
    let services = Services::connect(
        settings,
        Queues::sqs(
            lambda.sqs.clone(),
            lambda.plan_queue.clone(),
            lambda.apply_queue.clone(),
        ),
        MetricsSink::capture(),
    )
    .await
    .unwrap();
    let polled = workflow::poll_targets(&services).await.unwrap();
    services
        .queues
        .send_plan(&PlanRequest::new(
            TARGET,
            ritmo::message::Trigger::Webhook,
            chrono::Utc::now(),
        ))
        .await
        .unwrap();
    lambda.deliver(&services).await;

    assert_eq!(sync.status.code(), Some(1), "{}", text(&sync));
    assert!(String::from_utf8_lossy(&sync.stdout).contains("GitOps is disabled"));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["enabled"], false);
    assert_eq!(polled.enqueued, 0);
    for db in [&cli.db, &lambda.db] {
        let client = db.client().await;
        for table in ["resources", "sync_runs"] {
            let count: i64 = client
                .query_one(&format!("select count(*) from {table}"), &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(count, 0, "{table} of {}", db.name);
        }
    }
}

#[tokio::test]
async fn with_auto_apply_off_the_cli_waits_for_approval_unless_told_to_approve() {
    let repo = example_repo();
    let configs = tempfile::tempdir().unwrap();
    let config = bootstrap(configs.path(), &repo, false);
    let cli = Cli::new().await;

    let waiting = cli.run(&config, &["gitops", "sync"], &[]);
    let (sync_id, status) = last_run(&cli.db).await;
    let resources_while_waiting: i64 = cli
        .db
        .client()
        .await
        .query_one("select count(*) from resources", &[])
        .await
        .unwrap()
        .get(0);
    let approved = cli.run(&config, &["gitops", "sync", "--auto-approve"], &[]);
    let (_, after_approval) = last_run(&cli.db).await;

    assert_eq!(waiting.status.code(), Some(0), "{}", text(&waiting));
    assert_eq!(status, "pending_approval");
    assert_eq!(resources_while_waiting, 0);
    let printed = String::from_utf8_lossy(&waiting.stdout);
    assert!(
        printed.contains(&format!("ritmo gitops approve {sync_id}"))
            && printed.contains("auto_apply is off"),
        "{printed}"
    );
    // The second sync finds the waiting run of the same commit and approves it as `jane`.
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
    assert_eq!(after_approval, "succeeded");
    let approved_by: Option<String> = cli
        .db
        .client()
        .await
        .query_one(
            "select approved_by from sync_runs where id = $1",
            &[&sync_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(approved_by.as_deref(), Some("jane"));
}
