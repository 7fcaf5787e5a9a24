//! workflow: to be written.
