//! cli scenarios: to be written.
