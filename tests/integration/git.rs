//! git scenarios: to be written.
