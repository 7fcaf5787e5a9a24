//! Long-running consumers for `ritmo serve` (in-process or SQS queues), and building the
//! services a Lambda function needs once per cold start.

use std::sync::Arc;
use std::time::Duration;

use super::sqs::{self, QueueKind, retry_delay};
use crate::config::Settings;
use crate::metrics::MetricsSink;
use crate::queue::{LocalReceivers, Queues};
use crate::services::Services;
use crate::{Error, Result};

/// Stops the worker loops when it turns `true` (or its sender is dropped).
pub type Shutdown = tokio::sync::watch::Receiver<bool>;

/// Attempts of a message on the in-process queues, like the SQS redrive policy's five receives.
const LOCAL_ATTEMPTS: u32 = 5;
/// Long-polling wait of the SQS workers.
const SQS_WAIT: Duration = Duration::from_secs(20);

/// What a Lambda function builds once per cold start: settings from the bootstrap file and
/// environment, the SQS queues from their URL variables, metrics on stdout, the database.
pub async fn lambda_services() -> Result<Services> {
    let settings = Settings::from_process_env(None)?;
    let (Some(plan_queue_url), Some(apply_queue_url)) = (
        settings.plan_queue_url.clone(),
        settings.apply_queue_url.clone(),
    ) else {
        return Err(Error::Unsupported(
            "the queues are not configured: set RITMO_GITOPS_PLAN_QUEUE_URL and \
             RITMO_GITOPS_APPLY_QUEUE_URL"
                .into(),
        ));
    };
    let client = aws_sdk_sqs::Client::new(&crate::aws::config().await);
    let queues = Queues::sqs(client, plan_queue_url, apply_queue_url);
    Services::connect(settings, queues, MetricsSink::Stdout).await
}

/// Consumes the in-process queues until `shutdown`: plan and apply requests each in arrival
/// order; a retryable failure is retried in place after [`retry_delay`], up to five attempts.
pub async fn run_local_workers(
    services: Arc<Services>,
    receivers: LocalReceivers,
    shutdown: Shutdown,
) {
    let LocalReceivers { plans, applies } = receivers;
    let plan_loop = local_loop(
        services.clone(),
        plans,
        QueueKind::Plan,
        shutdown.clone(),
        |r: &crate::message::PlanRequest| r.to_json(),
    );
    let apply_loop = local_loop(
        services,
        applies,
        QueueKind::Apply,
        shutdown,
        |r: &crate::message::ApplyRequest| r.to_json(),
    );
    tokio::join!(plan_loop, apply_loop);
}

async fn local_loop<T>(
    services: Arc<Services>,
    mut receiver: tokio::sync::mpsc::UnboundedReceiver<T>,
    kind: QueueKind,
    mut shutdown: Shutdown,
    encode: impl Fn(&T) -> String,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let message = tokio::select! {
            message = receiver.recv() => message,
            changed = shutdown.changed() => {
                if changed.is_err() { return; }
                continue;
            }
        };
        let Some(message) = message else {
            return;
        };
        let body = encode(&message);
        for attempt in 1..=LOCAL_ATTEMPTS {
            match sqs::handle_message(&services, kind, &body).await {
                sqs::Disposition::Retry { reason } if attempt < LOCAL_ATTEMPTS => {
                    tracing::warn!(attempt, %reason, "retrying a queued request");
                    tokio::select! {
                        _ = tokio::time::sleep(retry_delay(attempt)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
                sqs::Disposition::Retry { reason } => {
                    tracing::error!(%reason, body = %body, "a queued request failed {LOCAL_ATTEMPTS} times; dropped");
                }
                _ => break,
            }
        }
    }
}

/// Consumes the SQS plan and apply queues until `shutdown`: long polling, deleting what is
/// handled, delaying what failed (see [`sqs`]).
pub async fn run_sqs_workers(
    services: Arc<Services>,
    plan_queue_url: String,
    apply_queue_url: String,
    shutdown: Shutdown,
) {
    let client = match &services.queues {
        Queues::Sqs { client, .. } => client.clone(),
        Queues::Local(_) => aws_sdk_sqs::Client::new(&crate::aws::config().await),
    };
    tokio::join!(
        sqs_loop(
            services.clone(),
            client.clone(),
            plan_queue_url,
            QueueKind::Plan,
            shutdown.clone()
        ),
        sqs_loop(
            services,
            client,
            apply_queue_url,
            QueueKind::Apply,
            shutdown
        ),
    );
}

async fn sqs_loop(
    services: Arc<Services>,
    client: aws_sdk_sqs::Client,
    queue_url: String,
    kind: QueueKind,
    mut shutdown: Shutdown,
) {
    let mut failures: u32 = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let batch = sqs::receive_and_handle(&services, &client, &queue_url, kind, SQS_WAIT);
        let result = tokio::select! {
            result = batch => result,
            changed = shutdown.changed() => {
                if changed.is_err() { return; }
                continue;
            }
        };
        match result {
            Ok(_) => failures = 0,
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = retry_delay(failures);
                tracing::warn!(error = %super::error_chain(&error), queue = %queue_url, "cannot receive from the queue; waiting {}s", delay.as_secs());
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}
