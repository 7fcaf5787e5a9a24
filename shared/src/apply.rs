//! apply: to be written.
