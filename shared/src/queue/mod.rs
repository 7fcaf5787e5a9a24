//! The two FIFO queues between the functions: plan requests and apply requests.
//!
//! In AWS they are SQS FIFO queues (group id = target, deduplication ids from `message`); on one
//! machine (`ritmo serve` without `AWS_ENDPOINT_URL`, tests) they are in-process channels that
//! keep the same contract: per-target order and a five-minute deduplication window, so a
//! webhook delivered three times still yields one plan.

pub mod consume;
pub mod workers;

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::message::{ApplyRequest, PlanRequest};

/// SQS keeps a deduplication id for five minutes; the local queues do the same.
pub const DEDUPLICATION_WINDOW: Duration = Duration::from_secs(300);

/// SendMessageBatch takes at most ten entries.
const SQS_BATCH: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot send to queue `{queue}`: {message}")]
    Send { queue: String, message: String },
    #[error("queue `{queue}` rejected {failed} of {total} messages: {first_error}")]
    Partial {
        queue: String,
        failed: usize,
        total: usize,
        first_error: String,
    },
    #[error("the local `{0}` queue is closed: the server is shutting down")]
    Closed(&'static str),
}

impl QueueError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, QueueError::Send { .. } | QueueError::Partial { .. })
    }
}

/// Where plan and apply requests go.
#[derive(Debug)]
pub enum Queues {
    Sqs {
        client: aws_sdk_sqs::Client,
        plan_queue_url: String,
        apply_queue_url: String,
    },
    Local(LocalQueues),
}

/// The consuming ends of the local queues, for `ritmo serve`'s planner and applier loops.
#[derive(Debug)]
pub struct LocalReceivers {
    pub plans: mpsc::UnboundedReceiver<PlanRequest>,
    pub applies: mpsc::UnboundedReceiver<ApplyRequest>,
}

#[derive(Debug)]
pub struct LocalQueues {
    plans: mpsc::UnboundedSender<PlanRequest>,
    applies: mpsc::UnboundedSender<ApplyRequest>,
    seen: Mutex<DeduplicationWindow>,
}

/// The deduplication ids sent in the last [`DEDUPLICATION_WINDOW`], oldest first, so expiring
/// them costs only the expired ones (a scan of every id per message made a busy `ritmo serve`
/// quadratic). As on SQS, a duplicate does not extend its id's window.
#[derive(Debug, Default)]
struct DeduplicationWindow {
    ids: HashSet<String>,
    by_age: VecDeque<(Instant, String)>,
}

impl DeduplicationWindow {
    /// Records `id` as sent at `now`; false when it was sent within the window before.
    fn first_sighting(&mut self, id: &str, now: Instant) -> bool {
        while let Some((sent, _)) = self.by_age.front()
            && now.duration_since(*sent) >= DEDUPLICATION_WINDOW
        {
            if let Some((_, expired)) = self.by_age.pop_front() {
                self.ids.remove(&expired);
            }
        }
        if !self.ids.insert(id.to_string()) {
            return false;
        }
        self.by_age.push_back((now, id.to_string()));
        true
    }
}

impl Queues {
    /// In-process queues and their receivers.
    pub fn local() -> (Queues, LocalReceivers) {
        let (plans, plan_rx) = mpsc::unbounded_channel();
        let (applies, apply_rx) = mpsc::unbounded_channel();
        let queues = Queues::Local(LocalQueues {
            plans,
            applies,
            seen: Mutex::new(DeduplicationWindow::default()),
        });
        (
            queues,
            LocalReceivers {
                plans: plan_rx,
                applies: apply_rx,
            },
        )
    }

    pub fn sqs(
        client: aws_sdk_sqs::Client,
        plan_queue_url: String,
        apply_queue_url: String,
    ) -> Queues {
        Queues::Sqs {
            client,
            plan_queue_url,
            apply_queue_url,
        }
    }

    pub async fn send_plan(&self, request: &PlanRequest) -> Result<(), QueueError> {
        self.send_plans(std::slice::from_ref(request)).await
    }

    /// Sends many plan requests, batched ten at a time on SQS.
    pub async fn send_plans(&self, requests: &[PlanRequest]) -> Result<(), QueueError> {
        match self {
            Queues::Sqs {
                client,
                plan_queue_url,
                ..
            } => {
                let entries: Vec<Entry> = requests
                    .iter()
                    .map(|r| Entry {
                        body: r.to_json(),
                        group_id: r.group_id(),
                        deduplication_id: r.deduplication_id(),
                    })
                    .collect();
                send_batches(client, plan_queue_url, &entries).await
            }
            Queues::Local(local) => {
                for request in requests {
                    if local.first_sighting(&format!("plan:{}", request.deduplication_id())) {
                        local
                            .plans
                            .send(request.clone())
                            .map_err(|_| QueueError::Closed("plan"))?;
                    }
                }
                Ok(())
            }
        }
    }

    pub async fn send_apply(&self, request: &ApplyRequest) -> Result<(), QueueError> {
        match self {
            Queues::Sqs {
                client,
                apply_queue_url,
                ..
            } => {
                let entry = Entry {
                    body: request.to_json(),
                    group_id: request.group_id(),
                    deduplication_id: request.deduplication_id(),
                };
                send_batches(client, apply_queue_url, std::slice::from_ref(&entry)).await
            }
            Queues::Local(local) => {
                if local.first_sighting(&format!("apply:{}", request.deduplication_id())) {
                    local
                        .applies
                        .send(request.clone())
                        .map_err(|_| QueueError::Closed("apply"))?;
                }
                Ok(())
            }
        }
    }
}

impl LocalQueues {
    /// Records a deduplication id; false when it was seen within the window.
    fn first_sighting(&self, id: &str) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .first_sighting(id, Instant::now())
    }
}

struct Entry {
    body: String,
    group_id: String,
    deduplication_id: String,
}

async fn send_batches(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    entries: &[Entry],
) -> Result<(), QueueError> {
    use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

    let send_error = |message: String| QueueError::Send {
        queue: queue_url.to_string(),
        message,
    };
    for chunk in entries.chunks(SQS_BATCH) {
        let mut batch = client.send_message_batch().queue_url(queue_url);
        for (index, entry) in chunk.iter().enumerate() {
            batch = batch.entries(
                SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message_body(&entry.body)
                    .message_group_id(&entry.group_id)
                    .message_deduplication_id(&entry.deduplication_id)
                    .build()
                    .map_err(|e| send_error(e.to_string()))?,
            );
        }
        let output = batch
            .send()
            .await
            .map_err(|e| send_error(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
        let failed = output.failed();
        if let Some(first) = failed.first() {
            return Err(QueueError::Partial {
                queue: queue_url.to_string(),
                failed: failed.len(),
                total: chunk.len(),
                first_error: first.message().unwrap_or(first.code()).to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::message::Trigger;

    #[tokio::test]
    async fn local_queues_drop_a_duplicate_within_the_window() {
        let (queues, mut receivers) = Queues::local();
        let request =
            PlanRequest::new("default", Trigger::Webhook, Utc::now()).with_delivery_id("d-1");

        for _ in 0..3 {
            queues.send_plan(&request).await.unwrap();
        }
        queues
            .send_plan(&request.clone().with_delivery_id("d-2"))
            .await
            .unwrap();

        assert_eq!(
            receivers.plans.recv().await.unwrap().delivery_id.as_deref(),
            Some("d-1")
        );
        assert_eq!(
            receivers.plans.recv().await.unwrap().delivery_id.as_deref(),
            Some("d-2")
        );
        assert!(receivers.plans.try_recv().is_err());
    }

    #[test]
    fn an_id_is_sent_again_once_its_window_has_passed_and_a_duplicate_does_not_extend_it() {
        let start = Instant::now();
        let mut window = DeduplicationWindow::default();

        assert!(window.first_sighting("a", start));
        assert!(window.first_sighting("b", start + Duration::from_secs(200)));
        assert!(!window.first_sighting("a", start + Duration::from_secs(299)));
        assert!(window.first_sighting("a", start + DEDUPLICATION_WINDOW));
        assert!(!window.first_sighting("b", start + Duration::from_secs(499)));
        assert!(window.first_sighting("b", start + Duration::from_secs(500)));
        assert_eq!(window.ids.len(), 2);
        assert_eq!(window.by_age.len(), 2);
    }

    #[tokio::test]
    async fn a_closed_local_queue_is_an_error_not_a_silent_drop() {
        let (queues, receivers) = Queues::local();
        drop(receivers);

        let error = queues
            .send_plan(&PlanRequest::new("t", Trigger::Manual, Utc::now()))
            .await
            .unwrap_err();

        assert!(matches!(error, QueueError::Closed("plan")));
    }
}
