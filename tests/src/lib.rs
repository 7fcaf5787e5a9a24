//! Test support shared by the integration scenarios: throwaway PostgreSQL databases, git
//! repositories made on the spot, a smart-HTTP git server and a moto server.

pub mod db;
pub mod events;
pub mod git_http;
pub mod moto;

/// A loopback port nothing listens on right now, for a server the test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("find a free loopback port")
}
