//! Decodes an SQS FIFO batch of plan requests, hands each to `ritmo::workflow`, and answers with
//! the partial batch failures (`ReportBatchItemFailures`): retryable failures, and the later
//! messages of their group, go back to the queue; everything else is acknowledged.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::LambdaEvent;
use ritmo::queue::consume;
use ritmo::services::Services;
use ritmo::workflow::PlanQueue;

/// Handles one invocation.
pub async fn handle(
    services: &Services,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, lambda_runtime::Error> {
    Ok(consume::handle_lambda_batch::<PlanQueue>(services, event.payload).await)
}

/// Serves invocations with `services`, built once per cold start, until the runtime stops.
pub async fn run(services: Services) -> Result<(), lambda_runtime::Error> {
    let services = std::sync::Arc::new(services);
    lambda_runtime::run(lambda_runtime::service_fn(move |event| {
        let services = services.clone();
        async move { handle(&services, event).await }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use lambda_runtime::Context;
    use ritmo::config::{GitAuth, Settings, TargetSettings};
    use ritmo::metrics::MetricsSink;
    use ritmo::plan::PlanPolicy;
    use ritmo::queue::{LocalReceivers, Queues};
    use ritmo_tests::db::TestDb;
    use ritmo_tests::git_http::TestRepo;
    use secrecy::SecretString;

    use super::*;

    fn event(name: &str) -> SqsEvent {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn target(name: &str, repo_url: &str, branch: &str) -> TargetSettings {
        TargetSettings {
            name: name.into(),
            repo_url: repo_url.into(),
            branch: branch.into(),
            path: String::new(),
            interval_secs: 60,
            auto_apply: true,
            dry_run: false,
            self_heal: false,
            controls: Default::default(),
            policy: PlanPolicy::default(),
            auth: GitAuth::None,
        }
    }

    /// A repository with a `main` and a `staging` branch holding one plugin.
    fn repo() -> TestRepo {
        let repo = TestRepo::new();
        repo.write(
            "plugins/git-scm.yaml",
            "apiVersion: ritmo.dev/v1\nkind: Plugin\nmetadata:\n  name: git-scm\nspec:\n  \
             type: scm\n  binary_path: /opt/ritmo/plugins/git-scm\n  version: 1.0.0\n",
        );
        repo.commit("plugin");
        repo.git(&["branch", "staging"]);
        repo
    }

    async fn services(db: &TestDb, targets: Vec<TargetSettings>) -> (Services, LocalReceivers) {
        let settings = Settings {
            enabled: true,
            targets,
            builtin_plugins: BTreeSet::new(),
            database_url: Some(SecretString::from(db.url.clone())),
            cache_dir: std::env::temp_dir().join(format!("ritmo-planner-test-{}", db.name)),
            ..Settings::default()
        };
        let (queues, receivers) = Queues::local();
        let services = Services::connect(settings, queues, MetricsSink::capture())
            .await
            .unwrap();
        (services, receivers)
    }

    async fn run_count(db: &TestDb) -> i64 {
        db.client()
            .await
            .query_one("SELECT count(*) FROM sync_runs", &[])
            .await
            .unwrap()
            .get(0)
    }

    #[tokio::test]
    async fn every_record_of_the_batch_event_is_planned_and_acknowledged() {
        let db = TestDb::new().await;
        let repo = repo();
        let url = repo.path().display().to_string();
        let (services, _receivers) = services(
            &db,
            vec![
                target("default", &url, "main"),
                target("staging", &url, "staging"),
            ],
        )
        .await;

        let response = handle(
            &services,
            LambdaEvent::new(event("planner-plan-request-batch.json"), Context::default()),
        )
        .await
        .unwrap();

        assert!(response.batch_item_failures.is_empty());
        assert_eq!(run_count(&db).await, 3);
    }

    #[tokio::test]
    async fn a_malformed_record_is_acknowledged_and_never_retried() {
        let db = TestDb::new().await;
        let (services, _receivers) =
            services(&db, vec![target("default", "/nonexistent", "main")]).await;

        let response = handle(
            &services,
            LambdaEvent::new(event("planner-invalid-message.json"), Context::default()),
        )
        .await
        .unwrap();

        assert!(response.batch_item_failures.is_empty());
        assert_eq!(run_count(&db).await, 0);
    }

    #[tokio::test]
    async fn a_record_failing_for_now_is_reported_with_the_later_records_of_its_group() {
        let db = TestDb::new().await;
        let repo = repo();
        let unreachable = "http://127.0.0.1:9/acme/config.git";
        let (services, _receivers) = services(
            &db,
            vec![
                target("default", unreachable, "main"),
                target("staging", &repo.path().display().to_string(), "staging"),
            ],
        )
        .await;

        let response = handle(
            &services,
            LambdaEvent::new(event("planner-plan-request-batch.json"), Context::default()),
        )
        .await
        .unwrap();

        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(
            failed,
            [
                "2f1e0d9c-8b7a-4c6d-9e5f-1a2b3c4d5e6f",
                "a9b8c7d6-e5f4-4a3b-8c2d-1e0f9a8b7c6d"
            ]
        );
        assert_eq!(run_count(&db).await, 1);
    }
}
