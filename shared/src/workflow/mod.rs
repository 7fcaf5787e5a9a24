//! The steps of a sync, each a function every entry point calls: the Lambda functions
//! (`webhook`, `poller`, `planner`, `applier`, `api`), `ritmo serve`, the CLI and the bench.
//!
//! ```text
//! accept_webhook / request_sync / rollback / resume / poll_targets ─► plan queue
//! plan queue ─► plan_revision ─► (auto-apply, or approve_plan) ─► apply queue
//! apply queue ─► handle_apply_request ─► Postgres (stale: a fresh plan request)
//! ```
//!
//! Every step is safe to run twice: a redelivered or duplicated message finds the work done
//! (or in progress) and returns a `Skipped`/`AlreadyFinished` outcome instead of doing it again.
//! [`queues`] says which step consumes which queue; `queue` moves the messages; [`inline`] runs
//! the steps to completion in one process (the CLI). HTTP framing belongs to the adapters.

mod accept;
mod announce;
mod apply;
mod controls;
mod inline;
mod plan;
mod poll;
mod publish;
mod queues;
mod requests;
mod selective;

pub use accept::{WebhookFailure, WebhookOutcome, accept_webhook};
pub use apply::{ApplyRequestOutcome, PRUNE_EVERY, handle_apply_request};
pub use controls::{AdoptOutcome, adopt};
pub use inline::{Drained, InlineSync, OnPlanned, drain, sync_inline, sync_inline_with};
pub use plan::{
    PlanDetail, PlanOptions, PlanRequestOutcome, SkipReason, handle_plan_request, plan_revision,
};
pub use poll::{PollReport, PolledTarget, poll_targets, poll_targets_at, run_poller_loop};
pub use queues::{ApplyQueue, PlanQueue};
pub use requests::{
    ApproveOutcome, ManualSync, admit_manual_sync, approve_plan, approve_plan_with, request_sync,
    resume, rollback, suspend,
};
