//! Consuming the FIFO queues, the same way in the Lambda functions and in `ritmo serve`:
//! hand each message to its queue's [`Consumer`] (the workflow step that owns the queue), and
//! sort the result into done, retry later, or drop. Knows queues, not what the messages mean.
//!
//! - retryable errors → the message is a batch item failure, made visible again after
//!   [`RetryPolicy::delay`] (by default 5 s doubling per receive up to 3 min; the queue's
//!   redrive policy moves it to the DLQ after the policy's attempts, 5 by default);
//! - permanent errors → recorded on the sync run by the pipeline function, logged, and
//!   acknowledged: retrying would fail the same way;
//! - malformed bodies → logged and acknowledged;
//! - once a message of a FIFO group fails, the later messages of that group in the batch are
//!   failures too, unprocessed, so the group keeps its order.

use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageSystemAttributeName,
};

use super::QueueError;

/// First retry delay; each further receive doubles it.
pub const FIRST_RETRY_DELAY: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(180);

/// One received queue message, whatever delivered it (a Lambda SQS event, ReceiveMessage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub message_id: String,
    pub receipt_handle: Option<String>,
    pub body: String,
    /// The FIFO message group (the target).
    pub group_id: Option<String>,
    /// `ApproximateReceiveCount`: 1 on the first delivery.
    pub receive_count: u32,
}

/// What to do with a message after handling it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Handled: delete it.
    Done,
    /// Failed for now: leave it to come back after a delay.
    Retry { reason: String },
    /// Can never succeed (malformed, or a permanent failure already recorded): delete it.
    Drop { reason: String },
}

impl Disposition {
    pub fn is_failure(&self) -> bool {
        matches!(self, Disposition::Retry { .. })
    }
}

/// A message and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    pub message: QueueMessage,
    pub disposition: Disposition,
}

/// A queue as a type: what handles its messages, and where they come from. Choosing the
/// handler at compile time lets the applier's binary leave out the planner's git, YAML and
/// validation code (issue 7's size budget).
pub trait Consumer {
    /// What handling a message needs (the process's services).
    type Context: Sync;

    /// Handles one message body.
    fn handle(context: &Self::Context, body: &str) -> impl Future<Output = Disposition> + Send;

    /// The SQS queue the messages come from, when they come from SQS: failed messages are
    /// delayed there.
    fn sqs_queue(context: &Self::Context) -> Option<(&aws_sdk_sqs::Client, &str)>;

    /// How failed messages are retried.
    fn retry_policy(_context: &Self::Context) -> RetryPolicy {
        RetryPolicy::default()
    }
}

/// How failed queue messages are retried, per deployment: `retry:` in the bootstrap file,
/// `RITMO_GITOPS_RETRY_BASE_DELAY`, `RITMO_GITOPS_RETRY_MAX_DELAY` and
/// `RITMO_GITOPS_RETRY_ATTEMPTS` (the template's `RetryBaseDelay`, `RetryMaxDelay` and
/// `RetryAttempts`, which also set the queues' redrive `maxReceiveCount`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The delay after the first failed receive; each further receive doubles it.
    pub base_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// Receives before a message goes to the dead-letter queue (on SQS, the redrive policy's
    /// `maxReceiveCount`; in-process, the attempts before it is dropped).
    pub attempts: u32,
}

/// Receives before the dead-letter queue when no retry setting says otherwise.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 5;

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            base_delay: FIRST_RETRY_DELAY,
            max_delay: MAX_RETRY_DELAY,
            attempts: DEFAULT_RETRY_ATTEMPTS,
        }
    }
}

impl RetryPolicy {
    /// How long a message that failed on its `receive_count`-th receive stays invisible.
    pub fn delay(&self, receive_count: u32) -> Duration {
        let doublings = receive_count.saturating_sub(1).min(16);
        self.base_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay)
    }
}

/// [`RetryPolicy::delay`] of the default policy.
pub fn retry_delay(receive_count: u32) -> Duration {
    RetryPolicy::default().delay(receive_count)
}

/// Handles `messages` in order with `handle`, keeping FIFO groups in order (see module docs).
pub async fn process_messages<F, Fut>(messages: Vec<QueueMessage>, handle: F) -> Vec<Handled>
where
    F: Fn(QueueMessage) -> Fut,
    Fut: Future<Output = Disposition>,
{
    let mut failed_groups: Vec<String> = Vec::new();
    let mut handled = Vec::with_capacity(messages.len());
    for message in messages {
        let blocked = message
            .group_id
            .as_ref()
            .filter(|group| failed_groups.contains(group));
        let disposition = match blocked {
            Some(group) => Disposition::Retry {
                reason: format!("an earlier message of group `{group}` failed"),
            },
            None => handle(message.clone()).await,
        };
        if disposition.is_failure()
            && let Some(group) = &message.group_id
            && !failed_groups.contains(group)
        {
            failed_groups.push(group.clone());
        }
        handled.push(Handled {
            message,
            disposition,
        });
    }
    handled
}

/// Makes the failed messages visible again after their `policy` delay. Best effort: a
/// message whose visibility cannot be changed comes back after the queue's own timeout.
pub async fn back_off(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    handled: &[Handled],
    policy: RetryPolicy,
) {
    let entries: Vec<ChangeMessageVisibilityBatchRequestEntry> = handled
        .iter()
        .filter(|h| h.disposition.is_failure())
        .enumerate()
        .filter_map(|(index, h)| {
            let receipt = h.message.receipt_handle.as_ref()?;
            let delay = policy.delay(h.message.receive_count);
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(index.to_string())
                .receipt_handle(receipt)
                .visibility_timeout(i32::try_from(delay.as_secs()).unwrap_or(180))
                .build()
                .ok()
        })
        .collect();
    for chunk in entries.chunks(10) {
        let sent = client
            .change_message_visibility_batch()
            .queue_url(queue_url)
            .set_entries(Some(chunk.to_vec()))
            .send()
            .await;
        if let Err(error) = sent {
            tracing::warn!(
                error = %aws_sdk_sqs::error::DisplayErrorContext(&error),
                "cannot delay the retry of failed messages"
            );
        }
    }
}

/// Deletes the messages that are done or dropped.
pub async fn delete_finished(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    handled: &[Handled],
) -> Result<(), QueueError> {
    let entries: Vec<DeleteMessageBatchRequestEntry> = handled
        .iter()
        .filter(|h| !h.disposition.is_failure())
        .enumerate()
        .filter_map(|(index, h)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .receipt_handle(h.message.receipt_handle.as_ref()?)
                .build()
                .ok()
        })
        .collect();
    for chunk in entries.chunks(10) {
        let output = client
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| QueueError::Send {
                queue: queue_url.to_string(),
                message: aws_sdk_sqs::error::DisplayErrorContext(&e).to_string(),
            })?;
        if let Some(first) = output.failed().first() {
            tracing::warn!(
                failed = output.failed().len(),
                error = first.message().unwrap_or(first.code()),
                "some handled messages could not be deleted; they will be handled again"
            );
        }
    }
    Ok(())
}

/// A Lambda invocation's batch from queue `C`: handles the messages, delays the retry of the
/// failed ones (on SQS), and returns every message with its disposition; the caller reports
/// the failures as `batchItemFailures` and Lambda deletes the rest.
pub async fn handle_batch<C: Consumer>(
    context: &C::Context,
    messages: Vec<QueueMessage>,
) -> Vec<Handled> {
    let handled = process_messages(messages, |message| async move {
        C::handle(context, &message.body).await
    })
    .await;
    if let Some((client, queue_url)) = C::sqs_queue(context) {
        back_off(client, queue_url, &handled, C::retry_policy(context)).await;
    }
    handled
}

/// Receives one batch from `queue_url` (long polling up to `wait`), handles it, deletes what
/// is finished and delays what failed. Returns what happened to each message.
pub async fn receive_and_handle<C: Consumer>(
    context: &C::Context,
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    wait: Duration,
) -> Result<Vec<Handled>, QueueError> {
    let output = client
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(i32::try_from(wait.as_secs()).unwrap_or(20).min(20))
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
        .send()
        .await
        .map_err(|e| QueueError::Send {
            queue: queue_url.to_string(),
            message: aws_sdk_sqs::error::DisplayErrorContext(&e).to_string(),
        })?;
    let messages: Vec<QueueMessage> = output
        .messages()
        .iter()
        .map(|m| {
            let attribute = |name: MessageSystemAttributeName| {
                m.attributes().and_then(|a| a.get(&name)).cloned()
            };
            QueueMessage {
                message_id: m.message_id().unwrap_or_default().to_string(),
                receipt_handle: m.receipt_handle().map(str::to_owned),
                body: m.body().unwrap_or_default().to_string(),
                group_id: attribute(MessageSystemAttributeName::MessageGroupId),
                receive_count: attribute(MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1),
            }
        })
        .collect();
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let handled = process_messages(messages, |message| async move {
        C::handle(context, &message.body).await
    })
    .await;
    delete_finished(client, queue_url, &handled).await?;
    back_off(client, queue_url, &handled, C::retry_policy(context)).await;
    Ok(handled)
}

/// One Lambda invocation of an SQS FIFO consumer: decode the records, handle them as
/// [`handle_batch`] does, and answer with the partial batch failures
/// (`ReportBatchItemFailures`) so only those return to the queue.
pub async fn handle_lambda_batch<C: Consumer>(
    context: &C::Context,
    event: aws_lambda_events::event::sqs::SqsEvent,
) -> aws_lambda_events::event::sqs::SqsBatchResponse {
    use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};

    let messages = event.records.iter().map(lambda_record).collect();
    let handled = handle_batch::<C>(context, messages).await;
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
    response
}

fn lambda_record(record: &aws_lambda_events::event::sqs::SqsMessage) -> QueueMessage {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, group: &str) -> QueueMessage {
        QueueMessage {
            message_id: id.into(),
            receipt_handle: Some(format!("r-{id}")),
            body: id.into(),
            group_id: Some(group.into()),
            receive_count: 1,
        }
    }

    #[test]
    fn the_retry_delay_doubles_from_five_seconds_up_to_three_minutes() {
        let delays: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();

        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 180, 180]);
        assert_eq!(retry_delay(0).as_secs(), 5);
        assert_eq!(retry_delay(u32::MAX).as_secs(), 180);
    }

    #[test]
    fn a_configured_policy_doubles_from_its_base_up_to_its_cap() {
        let policy = RetryPolicy {
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(30),
            attempts: 8,
        };
        let delays: Vec<u64> = (1..=6).map(|n| policy.delay(n).as_secs()).collect();

        assert_eq!(delays, [2, 4, 8, 16, 30, 30]);
    }

    #[tokio::test]
    async fn later_messages_of_a_failed_group_fail_unprocessed_while_other_groups_go_on() {
        let messages = vec![
            message("a1", "a"),
            message("b1", "b"),
            message("a2", "a"),
            message("b2", "b"),
        ];
        let seen = std::sync::Mutex::new(Vec::new());

        let handled = process_messages(messages, |m| {
            seen.lock().unwrap().push(m.message_id.clone());
            async move {
                if m.message_id == "a1" {
                    Disposition::Retry {
                        reason: "down".into(),
                    }
                } else {
                    Disposition::Done
                }
            }
        })
        .await;

        let failures: Vec<&str> = handled
            .iter()
            .filter(|h| h.disposition.is_failure())
            .map(|h| h.message.message_id.as_str())
            .collect();
        assert_eq!(failures, ["a1", "a2"]);
        assert_eq!(*seen.lock().unwrap(), ["a1", "b1", "b2"]);
    }

    #[tokio::test]
    async fn a_dropped_message_does_not_hold_its_group_back() {
        let messages = vec![message("a1", "a"), message("a2", "a")];

        let handled = process_messages(messages, |m| async move {
            if m.message_id == "a1" {
                Disposition::Drop {
                    reason: "malformed".into(),
                }
            } else {
                Disposition::Done
            }
        })
        .await;

        assert_eq!(handled[1].disposition, Disposition::Done);
    }
}
