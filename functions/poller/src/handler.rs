//! Runs one poll tick per scheduled event and answers with its report.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::LambdaEvent;
use ritmo::pipeline::{self, PollReport};
use ritmo::services::Services;

/// Handles one invocation. A failed tick (database or queue down) is an error, so Lambda
/// records it; the next scheduled tick tries again.
pub async fn handle(
    services: &Services,
    event: LambdaEvent<EventBridgeEvent>,
) -> Result<PollReport, lambda_runtime::Error> {
    tracing::debug!(time = ?event.payload.time, "scheduled poll");
    Ok(pipeline::poll_targets(services).await?)
}
