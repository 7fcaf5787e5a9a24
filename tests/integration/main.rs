//! Integration scenarios against real PostgreSQL, real git repositories and moto.

mod apply;
mod cli;
mod crypto;
mod git;
