//! Decodes an SQS FIFO batch of apply requests, hands each to `ritmo::pipeline`, and answers with
//! the partial batch failures (`ReportBatchItemFailures`): retryable failures, and the later
//! messages of their group, go back to the queue; everything else is acknowledged.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::LambdaEvent;
use ritmo::pipeline::sqs::{self, QueueKind, QueueMessage};
use ritmo::services::Services;

/// Handles one invocation.
pub async fn handle(
    services: &Services,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, lambda_runtime::Error> {
    let messages = event.payload.records.iter().map(queue_message).collect();
    let handled = sqs::handle_batch(services, QueueKind::Apply, messages).await;
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = handled
        .into_iter()
        .filter(|h| h.disposition.is_failure())
        .map(|h| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = h.message.message_id;
            failure
        })
        .collect();
    Ok(response)
}

fn queue_message(record: &SqsMessage) -> QueueMessage {
    QueueMessage {
        message_id: record.message_id.clone().unwrap_or_default(),
        receipt_handle: record.receipt_handle.clone(),
        body: record.body.clone().unwrap_or_default(),
        group_id: record.attributes.get("MessageGroupId").cloned(),
        receive_count: record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|count| count.parse().ok())
            .unwrap_or(1),
    }
}
