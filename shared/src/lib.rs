//! Ritmo GitOps core: keep Ritmo's configuration in PostgreSQL identical to a Git repository.
//!
//! `model`, `hash`, `diagnostic`, `message`, `manifest`, `validate`, `diff` and `plan` are pure;
//! `source`, `git`, `store`, `apply`, `crypto`, `queue` and `config` do IO; `workflow` holds the
//! steps of a sync, which the Lambda functions, `ritmo serve`, the CLI and the bench all call.

pub mod apply;
pub mod aws;
pub mod config;
pub mod crypto;
pub mod diagnostic;
pub mod diff;
pub mod error;
pub mod export;
pub mod forge;
pub mod git;
pub mod hash;
pub mod manifest;
pub mod message;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod onboard;
mod parallel;
pub mod plan;
pub mod preview;
pub mod progress;
pub mod queue;
pub mod selection;
pub mod services;
pub mod source;
pub mod store;
pub mod telemetry;
mod tls;
pub mod validate;
pub mod webhook;
pub mod windows;
pub mod workflow;

pub use error::{Error, Result};
