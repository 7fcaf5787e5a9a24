//! The `applier` Lambda function: apply requests from the SQS FIFO apply queue → Postgres.

pub mod handler;
