//! Integration scenarios against real PostgreSQL, real git repositories and moto.

mod apply;
mod crypto;
mod fleet;
mod git;
mod git_auth;
mod incremental;
mod leak;
mod logs;
mod operations;
mod pipeline;
mod secrets;
mod startup;
mod stuck_runs;
mod tree_safety;
