//! webhook: to be written.
