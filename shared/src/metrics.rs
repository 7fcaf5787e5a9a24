//! metrics: to be written.
