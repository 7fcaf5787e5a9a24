//! Test support shared by the integration scenarios: throwaway PostgreSQL databases, git
//! repositories made on the spot, a smart-HTTP git server and a moto server.

pub mod db;
pub mod events;
pub mod forge;
pub mod git_http;
pub mod https_receiver;
pub mod moto;
pub mod runtime_api;

/// A loopback port nothing listens on right now, for a server the test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("find a free loopback port")
}

/// Copies the files under `from` into `to` (created), as the test repositories' fixtures are
/// laid out.
///
/// # Panics
/// When a file cannot be read or written.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create the directory");
    for entry in std::fs::read_dir(from).expect("read the directory") {
        let entry = entry.expect("read a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("read a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy a file");
        }
    }
}

/// The repository's `examples/ritmo-config`, the seed's complete and valid example.
pub fn example_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ritmo-config")
}

/// A git repository holding a copy of the example configuration, committed on `main`.
pub fn example_repo() -> git_http::TestRepo {
    let repo = git_http::TestRepo::new();
    copy_dir(&example_dir(), repo.path());
    repo.commit("example config");
    repo
}
