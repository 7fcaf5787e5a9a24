//! git: to be written.
