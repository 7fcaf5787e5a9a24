//! Which step consumes which queue: plan requests go to [`plan_revision`]'s default path
//! ([`handle_plan_request`]), apply requests to [`handle_apply_request`]. The queue machinery
//! itself (batches, FIFO groups, back-off, Lambda's partial failures) is `queue::consume`'s.

use std::future::Future;

use super::apply::handle_apply_request;
use super::plan::handle_plan_request;
#[cfg(doc)]
use super::plan::plan_revision;
use crate::Error;
use crate::message::{ApplyRequest, PlanRequest};
use crate::queue::Queues;
use crate::queue::consume::{Consumer, Disposition, RetryPolicy};
use crate::services::Services;

/// The plan queue, consumed by the planner function.
pub enum PlanQueue {}

/// The apply queue, consumed by the applier function.
pub enum ApplyQueue {}

impl Consumer for PlanQueue {
    type Context = Services;

    fn handle(services: &Services, body: &str) -> impl Future<Output = Disposition> + Send {
        plan_message(services, body)
    }

    fn sqs_queue(services: &Services) -> Option<(&aws_sdk_sqs::Client, &str)> {
        match &services.queues {
            Queues::Sqs {
                client,
                plan_queue_url,
                ..
            } => Some((client, plan_queue_url)),
            Queues::Local(_) => None,
        }
    }

    fn retry_policy(services: &Services) -> RetryPolicy {
        services.settings.retry
    }
}

impl Consumer for ApplyQueue {
    type Context = Services;

    fn handle(services: &Services, body: &str) -> impl Future<Output = Disposition> + Send {
        apply_message(services, body)
    }

    fn sqs_queue(services: &Services) -> Option<(&aws_sdk_sqs::Client, &str)> {
        match &services.queues {
            Queues::Sqs {
                client,
                apply_queue_url,
                ..
            } => Some((client, apply_queue_url)),
            Queues::Local(_) => None,
        }
    }

    fn retry_policy(services: &Services) -> RetryPolicy {
        services.settings.retry
    }
}

/// Handles one plan-queue message body.
pub async fn plan_message(services: &Services, body: &str) -> Disposition {
    let request = match PlanRequest::from_json(body) {
        Ok(request) => request,
        Err(error) => {
            tracing::error!(%error, "malformed plan request dropped");
            return Disposition::Drop {
                reason: error.to_string(),
            };
        }
    };
    match handle_plan_request(services, &request).await {
        Ok(outcome) => {
            tracing::debug!(?outcome, "plan request handled");
            Disposition::Done
        }
        Err(error) => classify(&error, "plan request"),
    }
}

/// Handles one apply-queue message body.
pub async fn apply_message(services: &Services, body: &str) -> Disposition {
    let request = match ApplyRequest::from_json(body) {
        Ok(request) => request,
        Err(error) => {
            tracing::error!(%error, "malformed apply request dropped");
            return Disposition::Drop {
                reason: error.to_string(),
            };
        }
    };
    match handle_apply_request(services, &request).await {
        Ok(outcome) => {
            tracing::debug!(?outcome, "apply request handled");
            Disposition::Done
        }
        Err(error) => classify(&error, "apply request"),
    }
}

fn classify(error: &Error, what: &str) -> Disposition {
    let reason = crate::telemetry::error_chain(error);
    if error.is_retryable() {
        tracing::warn!(error = %reason, "{what} failed; it will be retried");
        Disposition::Retry { reason }
    } else {
        tracing::error!(error = %reason, "{what} failed permanently; acknowledged");
        Disposition::Drop { reason }
    }
}
