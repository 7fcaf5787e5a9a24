//! The `applier` Lambda function: apply requests from the SQS FIFO apply queue → Postgres.

#![recursion_limit = "256"] // the async state machines of a whole sync nest deeper than the default 128

pub mod handler;
