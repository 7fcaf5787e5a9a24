//! A moto server (AWS SQS, KMS and Secrets Manager stand-in) for one test: started on a free
//! loopback port, ready when `GET /moto-api/` answers, killed when dropped. Each test gets its
//! own server, so no test sees another's queues, keys or secrets.
//!
//! The program is `$MOTO_SERVER`, else `<workspace>/.venv/bin/moto_server` (what `make test`
//! installs), else `moto_server` on `PATH`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kms::config::Credentials;

/// How long moto may take to start on a loaded 2-core machine before the test gives up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The region every test client uses.
pub const REGION: &str = "us-east-1";

/// A running moto server, killed on drop.
pub struct Moto {
    child: Child,
    port: u16,
    endpoint: String,
}

impl Moto {
    /// Starts a fresh server and waits until it answers. Panics (with how to install moto)
    /// when `moto_server` cannot be found, and with its output when it does not come up.
    pub fn start() -> Moto {
        let program = moto_server();
        let mut last_output = String::new();
        // A free port can be taken between choosing it and moto binding it: try a few.
        for _ in 0..3 {
            let port = crate::free_port();
            let mut log = tempfile::tempfile().expect("create a log file for moto_server");
            let mut child = Command::new(&program)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("share the moto log file"))
                .stderr(log.try_clone().expect("share the moto log file"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", program.display()));
            if wait_until_ready(&mut child, port) {
                return Moto {
                    child,
                    port,
                    endpoint: format!("http://127.0.0.1:{port}"),
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_output = read_all(&mut log);
        }
        panic!(
            "moto_server (`{}`) did not start within {START_TIMEOUT:?}; its output:\n{last_output}",
            program.display()
        );
    }

    /// The endpoint URL, e.g. `http://127.0.0.1:41234` (what `AWS_ENDPOINT_URL` would hold).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// An AWS configuration pointed at this server: region `us-east-1`, static test
    /// credentials, no retries (a failure should show, not be papered over).
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .load()
            .await
    }

    /// A KMS client for this server.
    pub async fn kms(&self) -> aws_sdk_kms::Client {
        aws_sdk_kms::Client::new(&self.sdk_config().await)
    }

    /// A Secrets Manager client for this server.
    pub async fn secrets_manager(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk_config().await)
    }

    /// A FIFO queue `<name>.fifo` whose messages move to `<name>-dlq.fifo` after
    /// `max_receives` receives, as the stack's queues do: the queue's URL and the DLQ's.
    pub async fn fifo_queue_with_dlq(
        &self,
        name: &str,
        visibility_secs: u32,
        max_receives: u32,
    ) -> (String, String) {
        use aws_sdk_sqs::types::QueueAttributeName;
        let sqs = aws_sdk_sqs::Client::new(&self.sdk_config().await);
        let dlq = sqs
            .create_queue()
            .queue_name(format!("{name}-dlq.fifo"))
            .attributes(QueueAttributeName::FifoQueue, "true")
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let dlq_arn = sqs
            .get_queue_attributes()
            .queue_url(&dlq)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()
            .remove(&QueueAttributeName::QueueArn)
            .unwrap();
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": max_receives.to_string(),
        });
        let queue = sqs
            .create_queue()
            .queue_name(format!("{name}.fifo"))
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::ContentBasedDeduplication, "false")
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                visibility_secs.to_string(),
            )
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        (queue, dlq)
    }

    /// Forgets every queue, key and secret (`POST /moto-api/reset`).
    pub fn reset(&self) {
        let status = http_status(self.port, "POST", "/moto-api/reset");
        assert_eq!(status, Some(200), "moto reset failed");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds the moto_server program or panics with how to install it.
fn moto_server() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."));
    let venv = workspace.join(".venv/bin/moto_server");
    if venv.is_file() {
        return venv;
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("moto_server"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "moto_server not found (tried $MOTO_SERVER, {}, PATH): `make test` installs it, or run \
             `python3 -m venv .venv && .venv/bin/pip install 'moto[server]'` in the workspace root",
            venv.display()
        )
    })
}

/// Polls `GET /moto-api/` until it answers 200 (true), the process exits or the time is up
/// (false).
fn wait_until_ready(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if http_status(port, "GET", "/moto-api/") == Some(200) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A bare HTTP/1.0 request, enough for moto's control API without an HTTP client crate.
fn http_status(port: u16, method: &str, path: &str) -> Option<u16> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    // "HTTP/1.1 200"
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn read_all(file: &mut File) -> String {
    let mut output = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.read_to_string(&mut output);
    output
}
