//! `ritmo gitops sync --only` (selective sync) and manual syncs under sync windows
//! (`--override-window`, `manual_sync: true`), through the built `ritmo` against a real
//! PostgreSQL database and a git repository made here.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

mod common;

use common::{ConfigRepo, assert_exit, json, stderr, stdout};
use ritmo_tests::db::TestDb;
use serde_json::Value;

fn plugin(name: &str, version: &str) -> String {
    format!(
        "apiVersion: ritmo.dev/v1\nkind: Plugin\nmetadata:\n  name: {name}\nspec:\n  type: scm\n  \
         binary_path: /opt/ritmo/plugins/{name}\n  version: \"{version}\"\n  enabled: true\n"
    )
}

fn credential(name: &str) -> String {
    format!(
        "apiVersion: ritmo.dev/v1\nkind: Credential\nmetadata:\n  name: {name}\nspec:\n  type: \
         token\n  secret_ref:\n    provider: vault\n    path: secret/ritmo/{name}\n    key: token\n"
    )
}

fn job(name: &str, credential: &str) -> String {
    format!(
        "apiVersion: ritmo.dev/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n  description: \
         {name}\n  scm:\n    type: git\n    url: https://git.example.com/{name}.git\n    \
         credentials: {credential}\n"
    )
}

/// Commit A (synced whole): plugins `p1`, `p2`, `old`, credential `cred-a`, job `build`.
/// Commit B, five changes: `p1` and `p2` updated, `old` deleted, credential `cred-b` created
/// and job `deploy` (which refers to `cred-b`) created. Returns (A, B).
fn five_changes(repo: &ConfigRepo, db: &TestDb, config: &str) -> (String, String) {
    repo.write("plugins/p1.yaml", &plugin("p1", "1"));
    repo.write("plugins/p2.yaml", &plugin("p2", "1"));
    repo.write("plugins/old.yaml", &plugin("old", "1"));
    repo.write("credentials/cred-a.yaml", &credential("cred-a"));
    repo.write("jobs/build.yaml", &job("build", "cred-a"));
    let first = repo.commit("A");
    assert_exit(&repo.ritmo(&["--config", config, "gitops", "sync"], db), 0);
    repo.write("plugins/p1.yaml", &plugin("p1", "2"));
    repo.write("plugins/p2.yaml", &plugin("p2", "2"));
    repo.remove("plugins/old.yaml");
    repo.write("credentials/cred-b.yaml", &credential("cred-b"));
    repo.write("jobs/deploy.yaml", &job("deploy", "cred-b"));
    let second = repo.commit("B");
    (first, second)
}

/// `kind/name` → version (plugins) or `-` of every resource row, sorted.
async fn rows(db: &TestDb) -> Vec<String> {
    let client = db.client().await;
    client
        .query(
            "SELECT lower(kind) || '/' || name || '@' || coalesce(spec ->> 'version', '-')
             FROM resources ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

async fn count_runs(db: &TestDb) -> i64 {
    let client = db.client().await;
    client
        .query_one("SELECT count(*) FROM sync_runs", &[])
        .await
        .unwrap()
        .get(0)
}

fn default_target(status: &Value) -> &Value {
    status["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"]["name"] == "default")
        .unwrap()
}

#[tokio::test]
async fn sync_only_applies_two_of_five_changes_then_a_plain_sync_applies_the_other_three() {
    let db = TestDb::new().await;
    let repo = ConfigRepo::new();
    let bootstrap = repo.bootstrap("");
    let config = bootstrap.path().to_str().unwrap();
    let (first, second) = five_changes(&repo, &db, config);

    let partial = repo.ritmo(
        &[
            "--config",
            config,
            "gitops",
            "sync",
            "--only",
            "plugin/p1",
            "--only",
            "plugin/old",
        ],
        &db,
    );

    assert_exit(&partial, 0);
    assert!(
        stdout(&partial).contains("Selective: 2 of 5 changes"),
        "{}",
        stdout(&partial)
    );
    assert_eq!(
        rows(&db).await,
        [
            "credential/cred-a@-",
            "job/build@-",
            "plugin/p1@2",
            "plugin/p2@1",
        ],
        "only p1's update and old's delete are applied"
    );
    let status = json(&repo.ritmo(&["gitops", "status", "-o", "json"], &db));
    let target = default_target(&status);
    assert_eq!(target["target"]["last_applied_commit"], first.as_str());
    let partial_sync = &target["partial_sync"];
    assert_eq!(partial_sync["applied"], 2, "{status}");
    assert_eq!(partial_sync["total"], 5, "{status}");
    assert_eq!(partial_sync["commit"], second.as_str());
    let mut pending: Vec<&str> = partial_sync["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    pending.sort();
    assert_eq!(
        pending,
        [
            "create credential/cred-b",
            "create job/deploy",
            "update plugin/p2"
        ]
    );
    let text = stdout(&repo.ritmo(&["gitops", "status"], &db));
    assert!(
        text.contains("partially synced: 2 of 5 changes of"),
        "{text}"
    );
    let history = json(&repo.ritmo(&["gitops", "history", "-o", "json"], &db));
    let run = &history["runs"][0];
    assert_eq!(run["status"], "succeeded");
    assert_eq!(
        run["selected"],
        serde_json::json!(["plugin/p1", "plugin/old"])
    );
    assert_eq!(run["pending"].as_array().unwrap().len(), 3);

    let rest = repo.ritmo(&["--config", config, "gitops", "sync", "-o", "json"], &db);

    assert_exit(&rest, 0);
    let applied = &json(&rest)["applied"];
    assert_eq!(
        (
            &applied["created"],
            &applied["updated"],
            &applied["deleted"]
        ),
        (
            &serde_json::json!(2),
            &serde_json::json!(1),
            &serde_json::json!(0)
        ),
        "the plain sync applies exactly the three changes left out: {applied}"
    );
    assert_eq!(
        rows(&db).await,
        [
            "credential/cred-a@-",
            "credential/cred-b@-",
            "job/build@-",
            "job/deploy@-",
            "plugin/p1@2",
            "plugin/p2@2",
        ]
    );
    let status = json(&repo.ritmo(&["gitops", "status", "-o", "json"], &db));
    let target = default_target(&status);
    assert_eq!(target["target"]["last_applied_commit"], second.as_str());
    assert_eq!(target["partial_sync"], Value::Null, "{status}");
    let drift = target["drift"].as_array().unwrap();
    assert!(
        drift.is_empty(),
        "rows a partial sync wrote are not drift: {drift:?}"
    );
}

#[tokio::test]
async fn sync_only_refuses_what_cannot_be_applied_and_writes_nothing() {
    let db = TestDb::new().await;
    let repo = ConfigRepo::new();
    let bootstrap = repo.bootstrap("");
    let config = bootstrap.path().to_str().unwrap();
    let (first, _) = five_changes(&repo, &db, config);
    let rows_before = rows(&db).await;
    let runs_before = count_runs(&db).await;
    let sync_only =
        |only: &str| repo.ritmo(&["--config", config, "gitops", "sync", "--only", only], &db);

    let unmatched = sync_only("job/build");
    let malformed = sync_only("jobs-build");
    let dangling = sync_only("job/deploy");

    assert_exit(&unmatched, 2);
    let message = stderr(&unmatched);
    assert!(
        message.contains("`--only job/build` matches no action"),
        "{message}"
    );
    for action in [
        "~ plugin/p1",
        "- plugin/old",
        "+ credential/cred-b",
        "+ job/deploy",
    ] {
        assert!(
            message.contains(action),
            "lists the plan's actions: {message}"
        );
    }
    assert_exit(&malformed, 2);
    assert!(
        stderr(&malformed).contains("`jobs-build` is not KIND/NAME"),
        "{}",
        stderr(&malformed)
    );
    assert_exit(&dangling, 2);
    assert!(
        stderr(&dangling).contains("add `credential/cred-b` to `--only`"),
        "{}",
        stderr(&dangling)
    );
    assert_eq!(rows(&db).await, rows_before);
    assert_eq!(count_runs(&db).await, runs_before, "no run is recorded");
    let status = json(&repo.ritmo(&["gitops", "status", "-o", "json"], &db));
    let target = default_target(&status);
    assert_eq!(target["target"]["last_applied_commit"], first.as_str());
    assert_eq!(target["partial_sync"], Value::Null);
}

/// Every minute opens a day-long deny window: closed whenever the test runs.
const ALWAYS_DENIED: &str =
    "  sync_windows:\n    - { kind: deny, schedule: \"* * * * *\", duration: 1d }\n";

#[tokio::test]
async fn a_manual_sync_in_a_closed_window_is_refused_unless_overridden_and_the_override_is_recorded()
 {
    let db = TestDb::new().await;
    let repo = ConfigRepo::new();
    repo.write("plugins/p1.yaml", &plugin("p1", "1"));
    repo.commit("A");
    let bootstrap = repo.bootstrap(ALWAYS_DENIED);
    let config = bootstrap.path().to_str().unwrap();

    let refused = repo.ritmo(&["--config", config, "gitops", "sync"], &db);

    assert_exit(&refused, 2);
    assert!(
        stderr(&refused).contains("--override-window"),
        "{}",
        stderr(&refused)
    );
    assert!(rows(&db).await.is_empty(), "nothing is written");
    assert_eq!(count_runs(&db).await, 0, "no run is recorded");

    let overridden = repo.ritmo(
        &["--config", config, "gitops", "sync", "--override-window"],
        &db,
    );

    assert_exit(&overridden, 0);
    assert_eq!(rows(&db).await, ["plugin/p1@1"]);
    let history = json(&repo.ritmo(&["gitops", "history", "-o", "json"], &db));
    let run = &history["runs"][0];
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["window_override_by"], "jane", "{history}");
    let text = stdout(&repo.ritmo(&["gitops", "history"], &db));
    assert!(text.contains("window overridden by jane"), "{text}");
}

#[tokio::test]
async fn a_window_that_allows_manual_syncs_lets_a_plain_manual_sync_through() {
    let db = TestDb::new().await;
    let repo = ConfigRepo::new();
    repo.write("plugins/p1.yaml", &plugin("p1", "1"));
    repo.commit("A");
    let bootstrap = repo.bootstrap(
        "  sync_windows:\n    - { kind: deny, schedule: \"* * * * *\", duration: 1d, manual_sync: true }\n",
    );
    let config = bootstrap.path().to_str().unwrap();

    let synced = repo.ritmo(&["--config", config, "gitops", "sync"], &db);

    assert_exit(&synced, 0);
    assert_eq!(rows(&db).await, ["plugin/p1@1"]);
    let history = json(&repo.ritmo(&["gitops", "history", "-o", "json"], &db));
    assert_eq!(history["runs"][0]["window_override_by"], Value::Null);
}
