//! Git fixtures: repositories made on the spot with the git CLI, and (below) a smart-HTTP git
//! server on loopback with basic auth.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A throwaway repository with a work tree, driven through the git CLI. Commits are made with a
/// fixed identity and no global or system configuration.
pub struct TestRepo {
    dir: tempfile::TempDir,
}

impl TestRepo {
    /// `git init` on branch `main`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Self { dir };
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs git in the work tree and returns its trimmed stdout; panics when git fails.
    pub fn git(&self, args: &[&str]) -> String {
        run_git(self.path(), args)
    }

    /// Writes a file (creating its directories) without staging it.
    pub fn write(&self, relative: &str, content: impl AsRef<[u8]>) -> &Self {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
        self
    }

    pub fn remove(&self, relative: &str) -> &Self {
        self.git(&["rm", "--quiet", "-r", relative]);
        self
    }

    /// A symlink at `relative` pointing to `target`, staged.
    pub fn symlink(&self, relative: &str, target: &str) -> &Self {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, &path).expect("symlink");
        self.git(&["add", relative]);
        self
    }

    /// A submodule entry (gitlink) at `relative` pointing to `commit`, staged: commit it with
    /// [`TestRepo::commit_staged`].
    pub fn gitlink(&self, relative: &str, commit: &str) -> &Self {
        let info = format!("160000,{commit},{relative}");
        self.git(&["update-index", "--add", "--cacheinfo", &info]);
        self
    }

    /// Stages everything and commits; returns the new commit id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "--allow-empty", "-m", message]);
        self.head()
    }

    /// Commits what is staged, without `git add` (which would drop a gitlink that has no
    /// directory in the work tree).
    pub fn commit_staged(&self, message: &str) -> String {
        self.git(&["commit", "--quiet", "--allow-empty", "-m", message]);
        self.head()
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    /// `git checkout -b <branch>` (or switch to it when it exists).
    pub fn checkout(&self, branch: &str) -> &Self {
        if self.git(&["branch", "--list", branch]).trim().is_empty() {
            self.git(&["checkout", "--quiet", "-b", branch]);
        } else {
            self.git(&["checkout", "--quiet", branch]);
        }
        self
    }
}

impl Default for TestRepo {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs git in `dir` with a clean, fixed environment; panics with git's stderr on failure.
pub fn run_git(dir: &Path, args: &[&str]) -> String {
    let output = git_command(dir).args(args).output().expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn git_command(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_TERMINAL_PROMPT", "0");
    command
}

/// `git --exec-path`: where `git-http-backend` lives.
pub fn git_exec_path() -> PathBuf {
    let output = Command::new("git")
        .arg("--exec-path")
        .output()
        .expect("git runs");
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// A smart-HTTP git server on 127.0.0.1: a tiny CGI host in front of `git http-backend`, with
/// optional HTTP basic auth checked by the server. Protocol v2 works because the `Git-Protocol`
/// header is passed to the backend as `GIT_PROTOCOL`. Stopped on drop.
pub struct GitHttpServer {
    addr: std::net::SocketAddr,
    config: std::sync::Arc<ServerConfig>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    log: std::sync::Arc<std::sync::Mutex<Vec<LoggedRequest>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One request the server answered.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The `Git-Protocol` header (`version=2`), when sent.
    pub git_protocol: Option<String>,
    /// Whether an `Authorization` header was present at all.
    pub sent_credentials: bool,
    pub status: u16,
    /// When the response was written (after any [`GitHttpServer::set_delay`]).
    pub answered_at: std::time::Instant,
}

struct ServerConfig {
    project_root: PathBuf,
    /// Changed by [`GitHttpServer::set_credentials`] (a rotated secret).
    expected_authorization: std::sync::Mutex<Option<String>>,
    backend: PathBuf,
    /// Changed by [`GitHttpServer::set_delay`]: how long each request waits before it is
    /// answered, to stand in for a distant git host.
    delay: std::sync::Mutex<std::time::Duration>,
}

impl GitHttpServer {
    /// Serves every repository under `project_root` (`http://127.0.0.1:PORT/<dir>`); with
    /// `credentials`, every request must carry that user and password.
    pub fn start(project_root: &Path, credentials: Option<(&str, &str)>) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let config = Arc::new(ServerConfig {
            project_root: project_root.to_path_buf(),
            expected_authorization: std::sync::Mutex::new(credentials.map(basic_authorization)),
            backend: git_exec_path().join("git-http-backend"),
            delay: std::sync::Mutex::new(std::time::Duration::ZERO),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let stop = stop.clone();
            let log = log.clone();
            let config = config.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let config = config.clone();
                    let log = log.clone();
                    std::thread::spawn(move || {
                        if let Some(entry) = serve(stream, &config) {
                            log.lock().expect("log lock").push(entry);
                        }
                    });
                }
            })
        };
        Self {
            addr,
            config,
            stop,
            log,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// From now on, accept only these credentials (`None`: none needed), as after a rotation.
    pub fn set_credentials(&self, credentials: Option<(&str, &str)>) {
        *self
            .config
            .expected_authorization
            .lock()
            .expect("credentials lock") = credentials.map(basic_authorization);
    }

    /// From now on, hold every request this long before answering it (each on its own thread,
    /// so concurrent requests wait together), as a git host's round trips would.
    pub fn set_delay(&self, delay: std::time::Duration) {
        *self.config.delay.lock().expect("delay lock") = delay;
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.log.lock().expect("log lock").clone()
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers one connection (one request: every response closes the connection).
fn serve(stream: std::net::TcpStream, config: &ServerConfig) -> Option<LoggedRequest> {
    use std::io::{BufRead, BufReader, Write};

    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let body = read_body(&mut reader, &header)?;
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_string(), query.to_string()),
        None => (target.clone(), String::new()),
    };
    let delay = *config.delay.lock().expect("delay lock");
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
    let authorization = header("authorization");
    let mut entry = LoggedRequest {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        git_protocol: header("git-protocol"),
        sent_credentials: authorization.is_some(),
        status: 0,
        answered_at: std::time::Instant::now(),
    };
    let mut out = stream;
    let expected_authorization = config
        .expected_authorization
        .lock()
        .expect("credentials lock")
        .clone();
    if let Some(expected) = &expected_authorization
        && authorization.as_deref() != Some(expected.as_str())
    {
        entry.status = 401;
        let body = "authentication required\n";
        let _ = write!(
            out,
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        entry.answered_at = std::time::Instant::now();
        return Some(entry);
    }
    let mut command = std::process::Command::new(&config.backend);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", &config.project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", &path)
        .env("QUERY_STRING", &query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(content_type) = header("content-type") {
        command.env("CONTENT_TYPE", content_type);
    }
    if let Some(encoding) = header("content-encoding") {
        command.env("HTTP_CONTENT_ENCODING", encoding);
    }
    if let Some(protocol) = header("git-protocol") {
        command.env("GIT_PROTOCOL", protocol);
    }
    if expected_authorization.is_some() {
        command.env("REMOTE_USER", "git");
    }
    let mut child = command.spawn().ok()?;
    let mut stdin = child.stdin.take()?;
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let output = child.wait_with_output().ok()?;
    let _ = writer.join();
    let (status, response_headers, response_body) = parse_cgi(&output.stdout);
    entry.status = status;
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in response_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        response_body.len()
    ));
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(response_body);
    let _ = out.flush();
    entry.answered_at = std::time::Instant::now();
    Some(entry)
}

fn read_body(
    reader: &mut impl std::io::BufRead,
    header: &dyn Fn(&str) -> Option<String>,
) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line).ok()?;
            let size_text = size_line.trim().split(';').next()?.to_string();
            let size = usize::from_str_radix(&size_text, 16).ok()?;
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).ok()?;
                    if line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0; size];
            reader.read_exact(&mut chunk).ok()?;
            body.extend_from_slice(&chunk);
            let mut crlf = [0; 2];
            reader.read_exact(&mut crlf).ok()?;
        }
    } else if let Some(length) = header("content-length") {
        let length: usize = length.parse().ok()?;
        body.resize(length, 0);
        reader.read_exact(&mut body).ok()?;
    }
    Some(body)
}

/// Splits a CGI response into status, headers (without `Status`) and body.
fn parse_cgi(output: &[u8]) -> (u16, Vec<(String, String)>, &[u8]) {
    let (head, body) = match find(output, b"\r\n\r\n") {
        Some(at) => (&output[..at], &output[at + 4..]),
        None => match find(output, b"\n\n") {
            Some(at) => (&output[..at], &output[at + 2..]),
            None => (&output[..0], output),
        },
    };
    let mut status = 200;
    let mut headers = Vec::new();
    for line in String::from_utf8_lossy(head).lines() {
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("status") {
                status = value
                    .split_whitespace()
                    .next()
                    .and_then(|code| code.parse().ok())
                    .unwrap_or(500);
            } else {
                headers.push((name.to_string(), value.to_string()));
            }
        }
    }
    (status, headers, body)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Status",
    }
}

fn basic_authorization((user, password): (&str, &str)) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

/// Standard base64 with padding (for the expected `Authorization` header).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let bytes = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A config repository served over smart HTTP as `acme/config.git`: commits are made in
/// `repo` and pushed to a bare repository the server serves.
pub struct ServedRepo {
    pub repo: TestRepo,
    _root: tempfile::TempDir,
    bare: PathBuf,
    server: GitHttpServer,
}

impl ServedRepo {
    /// An initial commit (a README only), pushed and served without authentication.
    pub fn new() -> ServedRepo {
        let repo = TestRepo::new();
        repo.write("README.md", "config\n");
        repo.commit("initial");
        let root = tempfile::tempdir().expect("temporary directory");
        let bare = root.path().join("acme/config.git");
        std::fs::create_dir_all(bare.parent().expect("bare repository has a parent"))
            .expect("bare repository directory");
        run_git(
            root.path(),
            &[
                "clone",
                "--quiet",
                "--bare",
                repo.path().to_str().expect("UTF-8 path"),
                bare.to_str().expect("UTF-8 path"),
            ],
        );
        let server = GitHttpServer::start(root.path(), None);
        ServedRepo {
            repo,
            _root: root,
            bare,
            server,
        }
    }

    pub fn url(&self) -> String {
        self.server.url("acme/config.git")
    }

    /// Commits what was written and pushes it; returns the commit.
    pub fn push(&self, message: &str) -> String {
        let commit = self.repo.commit(message);
        self.repo.git(&[
            "push",
            "--quiet",
            self.bare.to_str().expect("UTF-8 path"),
            "main",
        ]);
        commit
    }

    /// Commits `files` on a line of its own (a fork's pull request) and pushes it only as
    /// `refs/pull/<number>/head`, as a forge keeps a pull request's head in the base
    /// repository; `main` is left where it was. Returns the commit.
    pub fn push_pull_request(&self, number: u64, files: &[(&str, &str)]) -> String {
        let line = format!("fork-{number}");
        self.repo.checkout(&line);
        for (path, content) in files {
            self.repo.write(path, content);
        }
        let commit = self.repo.commit(&format!("pull request {number}"));
        self.repo.git(&[
            "push",
            "--quiet",
            "--force",
            self.bare.to_str().expect("UTF-8 path"),
            &format!("HEAD:refs/pull/{number}/head"),
        ]);
        self.repo.checkout("main");
        commit
    }

    /// Commits plugin `name` at `version` and pushes; returns the commit.
    pub fn push_plugin(&self, name: &str, version: &str) -> String {
        self.repo.write(
            &format!("plugins/{name}.yaml"),
            format!(
                "apiVersion: ritmo.dev/v1\nkind: Plugin\nmetadata:\n  name: {name}\nspec:\n  \
                 type: scm\n  binary_path: /opt/ritmo/plugins/{name}\n  version: {version}\n  \
                 enabled: true\n"
            ),
        );
        self.push(&format!("{name} {version}"))
    }
}

impl Default for ServedRepo {
    fn default() -> Self {
        ServedRepo::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn cgi_output_is_split_into_status_headers_and_body() {
        let output = b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nmissing";

        let (status, headers, body) = parse_cgi(output);

        assert_eq!(status, 404);
        assert_eq!(
            headers,
            [("Content-Type".to_string(), "text/plain".to_string())]
        );
        assert_eq!(body, b"missing");
    }
}
