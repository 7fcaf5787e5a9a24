//! apply scenarios: to be written.
