//! The `planner` Lambda function: plan requests from the SQS FIFO plan queue → plans.

#![recursion_limit = "256"] // the async state machines of a whole sync nest deeper than the default 128

pub mod handler;
