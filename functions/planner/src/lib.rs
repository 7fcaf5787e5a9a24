//! The `planner` Lambda function: plan requests from the SQS FIFO plan queue → plans.

pub mod handler;
