//! The crate error: one variant per module's error, and whether trying again may help.

use crate::apply::ApplyError;
use crate::config::ConfigError;
use crate::crypto::CryptoError;
use crate::git::GitError;
use crate::message::MessageError;
use crate::queue::QueueError;
use crate::store::StoreError;
use crate::webhook::WebhookError;

/// Every failure the core library reports to its callers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    #[error(transparent)]
    Message(#[from] MessageError),
    /// Posting a pull request's preview to its forge.
    #[error(transparent)]
    Forge(#[from] crate::forge::ForgeError),
    /// The request itself is wrong (an unknown revision, a run of another target).
    #[error(transparent)]
    Selection(#[from] crate::selection::SelectionError),
    /// A manual sync while the target's sync windows are closed to manual syncs.
    #[error(
        "the sync windows of target `{target}` are closed to manual syncs{}: pass \
         `--override-window` (API: `\"override_window\": true`) to sync now, recorded in the \
         run with your name, or let the window allow them (`manual_sync: true`)",
        next_opening.map(|at| format!(" until {}", at.to_rfc3339())).unwrap_or_default()
    )]
    WindowClosed {
        target: String,
        next_opening: Option<chrono::DateTime<chrono::Utc>>,
    },
    #[error("{0}")]
    InvalidRequest(String),
    /// Something this build cannot do yet, or a setting that is missing, said plainly.
    #[error("{0}")]
    Unsupported(String),
    /// A broken invariant or a task that died: a bug, or the process is going down.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// Whether the same request may succeed later without anyone changing anything
    /// (network, database availability), as opposed to a problem a person must fix
    /// (Flux's split between stalled and retrying).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Config(_) => false,
            Error::Crypto(error) => error.is_retryable(),
            Error::Git(error) => error.is_retryable(),
            Error::Store(error) => error.is_retryable(),
            Error::Apply(error) => error.is_retryable(),
            Error::Queue(error) => error.is_retryable(),
            Error::Webhook(error) => error.is_retryable(),
            Error::Message(error) => error.is_retryable(),
            Error::Forge(error) => error.is_retryable(),
            Error::InvalidRequest(_)
            | Error::Unsupported(_)
            | Error::Selection(_)
            | Error::WindowClosed { .. } => false,
            Error::Internal(_) => true,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
