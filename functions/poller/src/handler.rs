//! Runs one poll tick per scheduled event and answers with its report.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::LambdaEvent;
use ritmo::services::Services;
use ritmo::workflow::{self, PollReport};

/// Handles one invocation. A failed tick (database or queue down) is an error, so Lambda
/// records it; the next scheduled tick tries again.
pub async fn handle(
    services: &Services,
    event: LambdaEvent<EventBridgeEvent>,
) -> Result<PollReport, lambda_runtime::Error> {
    tracing::debug!(time = ?event.payload.time, "scheduled poll");
    Ok(workflow::poll_targets(services).await?)
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
    use ritmo::message::Trigger;
    use ritmo::metrics::MetricsSink;
    use ritmo::plan::PlanPolicy;
    use ritmo::queue::Queues;
    use ritmo::workflow::PolledTarget;
    use ritmo_tests::db::TestDb;
    use ritmo_tests::git_http::TestRepo;
    use secrecy::SecretString;

    use super::*;

    const EVENT: &str = include_str!("../../../events/poller-scheduled.json");

    #[tokio::test]
    async fn the_scheduled_event_queues_a_plan_for_a_branch_that_moved() {
        let db = TestDb::new().await;
        let repo = TestRepo::new();
        repo.write("README.md", "config\n");
        let head = repo.commit("initial");
        let settings = Settings {
            enabled: true,
            targets: vec![TargetSettings {
                name: "prod".into(),
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
        let (queues, mut receivers) = Queues::local();
        let services = Services::connect(settings, queues, MetricsSink::capture())
            .await
            .unwrap();
        let event: EventBridgeEvent = serde_json::from_str(EVENT).unwrap();

        let report = handle(&services, LambdaEvent::new(event, Context::default()))
            .await
            .unwrap();

        assert_eq!(report.enqueued, 1);
        assert_eq!(
            report.targets,
            [PolledTarget::Enqueued {
                target: "prod".into(),
                head: head.clone(),
                trigger: Trigger::Schedule
            }]
        );
        let request = receivers.plans.try_recv().unwrap();
        assert_eq!(
            request.revision.as_deref(),
            Some(format!("main@sha1:{head}").as_str())
        );
    }
}
