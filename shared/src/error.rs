//! The crate error: one variant per module's error, and whether trying again may help.

/// Every failure the core library reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Whether the same request may succeed later without anyone changing anything
    /// (network, database availability), as opposed to a problem a person must fix.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
