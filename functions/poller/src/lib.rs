//! The `poller` Lambda function: on the EventBridge schedule, queue plans for targets whose
//! branch moved or drifted.

pub mod handler;
