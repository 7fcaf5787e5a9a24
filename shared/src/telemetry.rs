//! telemetry: to be written.
