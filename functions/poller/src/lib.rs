//! The `poller` Lambda function: on the EventBridge schedule, queue plans for targets whose
//! branch moved or drifted.

#![recursion_limit = "256"] // the async state machines of a whole sync nest deeper than the default 128

pub mod handler;
