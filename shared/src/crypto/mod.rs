//! crypto: to be written.
