//! validate: to be written.
