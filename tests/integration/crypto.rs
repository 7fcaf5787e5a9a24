//! crypto scenarios: to be written.
