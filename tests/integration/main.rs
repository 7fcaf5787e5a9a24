//! Integration scenarios against real PostgreSQL, real git repositories and moto.

mod apply;
mod controls;
mod crypto;
mod fleet;
mod git;
mod git_auth;
mod incremental;
mod leak;
mod logs;
mod operations;
mod pipeline;
mod preview;
mod secrets;
mod startup;
mod stuck_runs;
mod tree_safety;
