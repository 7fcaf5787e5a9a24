//! What the services log, read as an operator reads it (issue 25): a failed plan names its
//! first errors, and a migration draws neither PostgreSQL's notice about refinery's history
//! table nor refinery's per-migration chatter at `info`. Lines are captured in JSON by the
//! same subscriber the Lambda functions install, with `log` records (tokio-postgres,
//! refinery) bridged in as in the binaries.

use std::collections::BTreeSet;

use ritmo::config::{GitAuth, Settings, TargetSettings};
use ritmo::metrics::MetricsSink;
use ritmo::plan::PlanPolicy;
use ritmo::queue::Queues;
use ritmo::services::Services;
use ritmo::store::Store;
use ritmo::telemetry::{LogCapture, LogFormat, subscriber};
use ritmo::workflow::{self, PlanRequestOutcome};
use ritmo_tests::db::TestDb;
use ritmo_tests::git_http::ServedRepo as Remote;
use secrecy::SecretString;
use serde_json::Value;

/// `log` records reach the thread's tracing subscriber as in the binaries, where
/// `init_logging` installs the bridge. Harmless when another test installed it first.
fn bridge_log_records() {
    let _ = tracing_log::LogTracer::builder()
        .with_max_level(log::LevelFilter::Trace)
        .init();
}

fn json_lines(capture: &LogCapture) -> Vec<Value> {
    capture
        .lines()
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test]
async fn a_failed_plan_logs_its_first_errors_with_file_line_and_code() {
    let db = TestDb::new().await;
    let remote = Remote::new();
    let cache = tempfile::tempdir().unwrap();
    let settings = Settings {
        enabled: true,
        targets: vec![TargetSettings {
            name: "default".into(),
            repo_url: remote.url(),
            branch: "main".into(),
            path: String::new(),
            interval_secs: 60,
            auto_apply: true,
            dry_run: false,
            self_heal: false,
            policy: PlanPolicy::default(),
            auth: GitAuth::None,
            controls: Default::default(),
        }],
        builtin_plugins: BTreeSet::new(),
        database_url: Some(SecretString::from(db.url.clone())),
        cache_dir: cache.path().to_path_buf(),
        ..Settings::default()
    };
    let (queues, mut receivers) = Queues::local();
    let services = Services::connect(settings, queues, MetricsSink::capture())
        .await
        .unwrap();
    remote.repo.write(
        "plugins/broken.yaml",
        "apiVersion: ritmo.dev/v1\nkind: Plugin\nmetadata:\n  name: Broken\n",
    );
    remote.push("broken");
    workflow::request_sync(&services, &workflow::ManualSync::of("default"))
        .await
        .unwrap();
    let request = receivers.plans.try_recv().unwrap();
    let capture = LogCapture::new();

    let outcome = {
        let _logging =
            tracing::subscriber::set_default(subscriber(LogFormat::Json, "info", capture.clone()));
        workflow::handle_plan_request(&services, &request)
            .await
            .unwrap()
    };

    assert!(
        matches!(outcome, PlanRequestOutcome::Failed { .. }),
        "{outcome:?}"
    );
    let lines = json_lines(&capture);
    let failed: Vec<&Value> = lines
        .iter()
        .filter(|line| line["message"] == "plan failed")
        .collect();
    assert_eq!(failed.len(), 1, "{lines:#?}");
    // Both errors, each with file:line:column and code, so the log alone says what to fix.
    let first = failed[0]["first_errors"].as_str().unwrap_or_default();
    assert!(
        first.contains("plugins/broken.yaml:1:1 E205 missing required field `spec`"),
        "{}",
        failed[0]
    );
    assert!(
        first.contains("plugins/broken.yaml:4:9 E203"),
        "{}",
        failed[0]
    );
}

#[tokio::test]
async fn migrating_logs_no_history_table_notice_nor_refinery_chatter_at_info() {
    bridge_log_records();
    let db = TestDb::new().await;
    // A history table that exists but records nothing: the store migrates, and refinery's
    // `CREATE TABLE IF NOT EXISTS` meets the table, which is when PostgreSQL sends its NOTICE.
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE refinery_schema_history (version int4 PRIMARY KEY, name varchar(255),
             applied_on varchar(255), checksum varchar(255))",
        )
        .await
        .unwrap();
    let at_info = LogCapture::new();

    {
        let _logging =
            tracing::subscriber::set_default(subscriber(LogFormat::Json, "info", at_info.clone()));
        Store::connect(&db.url).await.unwrap();
    }

    let lines = at_info.lines();
    for line in &lines {
        assert!(!line.contains("refinery_schema_history"), "{line}");
        assert!(!line.contains("applying migration"), "{line}");
        assert!(!line.contains("log.file"), "{line}");
    }
}

#[test]
fn make_dev_reads_the_repository_once_so_each_warning_prints_once() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // `-n` prints the recipe without running it.
    let output = std::process::Command::new("make")
        .args(["-n", "dev"])
        .current_dir(&root)
        .output()
        .unwrap();
    let recipe = String::from_utf8_lossy(&output.stdout);

    assert!(output.status.success(), "{recipe}");
    // Each of these validates the repository and prints its warnings (W103 …) again.
    let validating: Vec<&str> = ["gitops validate", "gitops plan", "gitops sync"]
        .into_iter()
        .flat_map(|command| recipe.matches(command))
        .collect();
    assert_eq!(validating, ["gitops sync"], "{recipe}");
}
