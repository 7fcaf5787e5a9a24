//! Test support shared by the integration scenarios: throwaway PostgreSQL databases, git
//! repositories made on the spot, a smart-HTTP git server and a moto server.

pub mod db;
pub mod git_http;
pub mod moto;
