//! db: to be written.
