//! Decodes an SQS FIFO batch of apply requests, hands each to `ritmo::workflow`, and answers with
//! the partial batch failures (`ReportBatchItemFailures`): retryable failures, and the later
//! messages of their group, go back to the queue; everything else is acknowledged.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::LambdaEvent;
use ritmo::queue::consume;
use ritmo::services::Services;
use ritmo::workflow::ApplyQueue;

/// Handles one invocation.
pub async fn handle(
    services: &Services,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, lambda_runtime::Error> {
    Ok(consume::handle_lambda_batch::<ApplyQueue>(services, event.payload).await)
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
    use lambda_runtime::Context;
    use ritmo::config::{GitAuth, Settings, TargetSettings};
    use ritmo::message::{PlanRequest, Trigger};
    use ritmo::metrics::MetricsSink;
    use ritmo::plan::PlanPolicy;
    use ritmo::queue::{LocalReceivers, Queues};
    use ritmo::store::RunStatus;
    use ritmo_tests::db::TestDb;
    use ritmo_tests::git_http::TestRepo;
    use secrecy::SecretString;

    use super::*;

    const EVENT: &str = include_str!("../../../events/applier-apply-request.json");
    const EVENT_SYNC_ID: &str = "0192f5a4-7b1e-7c3a-9d2e-5f6a7b8c9d0e";

    async fn services(db: &TestDb, repo: &TestRepo) -> (Services, LocalReceivers) {
        let settings = Settings {
            enabled: true,
            targets: vec![TargetSettings {
                name: "default".into(),
                repo_url: repo.path().display().to_string(),
                branch: "main".into(),
                path: String::new(),
                interval_secs: 60,
                auto_apply: true,
                dry_run: false,
                self_heal: false,
                controls: Default::default(),
                policy: PlanPolicy::default(),
                auth: GitAuth::None,
            }],
            database_url: Some(SecretString::from(db.url.clone())),
            ..Settings::default()
        };
        let (queues, receivers) = Queues::local();
        let services = Services::connect(settings, queues, MetricsSink::capture())
            .await
            .unwrap();
        (services, receivers)
    }

    fn repo() -> TestRepo {
        let repo = TestRepo::new();
        repo.write(
            "plugins/git-scm.yaml",
            "apiVersion: ritmo.dev/v1\nkind: Plugin\nmetadata:\n  name: git-scm\nspec:\n  \
             type: scm\n  binary_path: /opt/ritmo/plugins/git-scm\n  version: 1.0.0\n",
        );
        repo.commit("plugin");
        repo
    }

    fn event(sync_id: &str) -> SqsEvent {
        serde_json::from_str(&EVENT.replace(EVENT_SYNC_ID, sync_id)).unwrap()
    }

    #[tokio::test]
    async fn the_sample_event_for_an_unknown_run_is_acknowledged() {
        let db = TestDb::new().await;
        let repo = repo();
        let (services, _receivers) = services(&db, &repo).await;

        let response = handle(
            &services,
            LambdaEvent::new(event(EVENT_SYNC_ID), Context::default()),
        )
        .await
        .unwrap();

        assert!(response.batch_item_failures.is_empty());
    }

    #[tokio::test]
    async fn the_sample_event_applies_a_stored_plan_once() {
        let db = TestDb::new().await;
        let repo = repo();
        let (services, mut receivers) = services(&db, &repo).await;
        ritmo::workflow::handle_plan_request(
            &services,
            &PlanRequest::new("default", Trigger::Manual, chrono::Utc::now()),
        )
        .await
        .unwrap();
        let sync_id = receivers.applies.try_recv().unwrap().sync_id.to_string();

        let first = handle(
            &services,
            LambdaEvent::new(event(&sync_id), Context::default()),
        )
        .await
        .unwrap();
        let redelivered = handle(
            &services,
            LambdaEvent::new(event(&sync_id), Context::default()),
        )
        .await
        .unwrap();

        assert!(first.batch_item_failures.is_empty());
        assert!(redelivered.batch_item_failures.is_empty());
        let store = services.store.lock().await;
        let run = store.run(sync_id.parse().unwrap()).await.unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(run.summary.create, 1);
        let target = store.target("default").await.unwrap().unwrap();
        assert_eq!(target.generation, 1);
    }
}
