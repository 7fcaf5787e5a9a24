//! Long-running consumers for `ritmo serve`: the plan and apply queues (in-process or SQS)
//! consumed until shutdown, each message handed to its queue's [`Consumer`].

use std::sync::Arc;
use std::time::Duration;

use super::LocalReceivers;
use super::consume::{self, Consumer, Disposition};

/// Stops the worker loops when it turns `true` (or its sender is dropped).
pub type Shutdown = tokio::sync::watch::Receiver<bool>;

/// Long-polling wait of the SQS workers.
const SQS_WAIT: Duration = Duration::from_secs(20);

/// Consumes the in-process queues until `shutdown`: plan requests with `P`, apply requests
/// with `A`, each in arrival order; a retryable failure is retried in place after the
/// consumer's [`RetryPolicy`](consume::RetryPolicy) delay, up to its attempts (as the SQS
/// redrive policy would).
pub async fn run_local_workers<P, A>(
    context: Arc<P::Context>,
    receivers: LocalReceivers,
    shutdown: Shutdown,
) where
    P: Consumer,
    A: Consumer<Context = P::Context>,
{
    let LocalReceivers { plans, applies } = receivers;
    let plan_loop = local_loop::<P, _>(context.clone(), plans, shutdown.clone(), |r| r.to_json());
    let apply_loop = local_loop::<A, _>(context, applies, shutdown, |r| r.to_json());
    tokio::join!(plan_loop, apply_loop);
}

async fn local_loop<C: Consumer, T>(
    context: Arc<C::Context>,
    mut receiver: tokio::sync::mpsc::UnboundedReceiver<T>,
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
        let policy = C::retry_policy(&context);
        let attempts = policy.attempts.max(1);
        for attempt in 1..=attempts {
            match C::handle(&context, &body).await {
                Disposition::Retry { reason } if attempt < attempts => {
                    tracing::warn!(attempt, %reason, "retrying a queued request");
                    tokio::select! {
                        _ = tokio::time::sleep(policy.delay(attempt)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
                Disposition::Retry { reason } => {
                    tracing::error!(%reason, body = %body, "a queued request failed {attempts} times; dropped");
                }
                _ => break,
            }
        }
    }
}

/// Consumes the SQS plan and apply queues until `shutdown`: long polling, deleting what is
/// handled, delaying what failed (see [`consume`]).
pub async fn run_sqs_workers<P, A>(
    context: Arc<P::Context>,
    client: aws_sdk_sqs::Client,
    plan_queue_url: String,
    apply_queue_url: String,
    shutdown: Shutdown,
) where
    P: Consumer,
    A: Consumer<Context = P::Context>,
{
    tokio::join!(
        sqs_loop::<P>(
            context.clone(),
            client.clone(),
            plan_queue_url,
            shutdown.clone()
        ),
        sqs_loop::<A>(context, client, apply_queue_url, shutdown),
    );
}

async fn sqs_loop<C: Consumer>(
    context: Arc<C::Context>,
    client: aws_sdk_sqs::Client,
    queue_url: String,
    mut shutdown: Shutdown,
) {
    let mut failures: u32 = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let batch = consume::receive_and_handle::<C>(&context, &client, &queue_url, SQS_WAIT);
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
                let delay = C::retry_policy(&context).delay(failures);
                tracing::warn!(error = %crate::telemetry::error_chain(&error), queue = %queue_url, "cannot receive from the queue; waiting {}s", delay.as_secs());
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}
