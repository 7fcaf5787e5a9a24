//! The serverless pipeline's logic, one function per step, shared by the Lambda functions
//! (`webhook`, `poller`, `planner`, `applier`, `api`) and `ritmo serve`:
//!
//! ```text
//! accept_webhook / request_sync / rollback / resume / poll_targets ─► plan queue
//! plan queue ─► handle_plan_request ─► (auto-apply, or approve_plan) ─► apply queue
//! apply queue ─► handle_apply_request ─► Postgres (stale: a fresh plan request)
//! ```
//!
//! Every step is safe to run twice: a redelivered or duplicated message finds the work done
//! (or in progress) and returns a `Skipped`/`AlreadyFinished` outcome instead of doing it again.
//! Queue plumbing (SQS records, partial batch failures, visibility back-off, the local worker
//! loops) lives in [`sqs`] and [`workers`]; HTTP framing belongs to the adapters.

mod applier;
mod planner;
mod poller;
mod queries;
mod requests;
mod source;
pub mod sqs;
mod webhook;
mod workers;

use std::sync::Arc;

use tokio::sync::MutexGuard;

pub use applier::{ApplyRequestOutcome, handle_apply_request};
pub use planner::{PlanRequestOutcome, SkipReason, handle_plan_request};
pub use poller::{PollReport, PolledTarget, poll_targets, run_poller_loop};
pub use requests::{ApproveOutcome, approve_plan, request_sync, resume, rollback};
pub use webhook::{WebhookFailure, WebhookOutcome, accept_webhook};
pub use workers::{Shutdown, lambda_services, run_local_workers, run_sqs_workers};

use crate::Result;
use crate::services::Services;
use crate::store::Store;

/// The store, reconnected first when its connection was lost (a Lambda container outlives
/// database restarts and failovers).
pub(crate) async fn store(services: &Services) -> Result<MutexGuard<'_, Store>> {
    let mut store = services.store.lock().await;
    if store.is_closed() {
        tracing::warn!("the database connection was lost; reconnecting");
        *store = services.reconnect().await?;
    }
    Ok(store)
}

pub(crate) use crate::error::error_chain;

/// A shared handle to the services, as the worker loops take them.
pub type SharedServices = Arc<Services>;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn an_error_chain_names_every_cause_once() {
        let error = Outer(std::io::Error::other("disk full"));

        assert_eq!(error_chain(&error), "outer failed: disk full");
    }
}
