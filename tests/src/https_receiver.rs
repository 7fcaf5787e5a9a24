//! An HTTPS endpoint on loopback that records every request it is sent, for tests of what the
//! product posts to webhooks. Its certificate is issued by a throwaway CA made at start, so the
//! product reaches it only when told to trust that CA (`SSL_CERT_FILE`), as a user behind a
//! corporate CA would; nothing about its verification is switched off.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// One request as it arrived: header names are lower-case, the body is the raw bytes (a
/// signature is checked over those, not over a re-serialised parse).
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ReceivedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A throwaway CA and a server certificate it issued for `127.0.0.1` and `localhost`, with the
/// CA written to `ca.pem` in a directory removed on drop.
struct ThrowawayPki {
    dir: tempfile::TempDir,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
}

impl ThrowawayPki {
    fn issue() -> ThrowawayPki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "ritmo tests throwaway CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-signed CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("server parameters");
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server_params.use_authority_key_identifier_extension = true;
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().expect("server key");
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .expect("server certificate");

        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).expect("write ca.pem");
        ThrowawayPki {
            dir,
            server_chain: vec![server_cert.der().clone()],
            server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()).into(),
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// What the server thread shares with the test.
#[derive(Default)]
struct Log {
    requests: Mutex<Vec<ReceivedRequest>>,
    failed_handshakes: AtomicUsize,
}

/// The HTTPS receiver: answers every request `204 No Content` and records it. Runs on its own
/// thread and runtime, so synchronous tests (which wait on child processes) can use it too;
/// stopped on drop.
pub struct HttpsReceiver {
    address: SocketAddr,
    pki: ThrowawayPki,
    log: Arc<Log>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpsReceiver {
    /// Issues the certificates and starts listening on a free loopback port.
    ///
    /// # Panics
    /// When the certificates cannot be made or the port cannot be bound.
    pub fn start() -> HttpsReceiver {
        let pki = ThrowawayPki::issue();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
        .expect("server certificate and key");
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let log = Arc::new(Log::default());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (bound, address) = mpsc::channel();
        let thread = std::thread::spawn({
            let log = log.clone();
            move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("receiver runtime");
                runtime.block_on(serve(acceptor, log, bound, stopped));
            }
        });
        let address = address
            .recv_timeout(Duration::from_secs(10))
            .expect("the receiver listens");
        HttpsReceiver {
            address,
            pki,
            log,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `https://127.0.0.1:PORT{path}`: the certificate names the IP address.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.address)
    }

    /// The throwaway CA's certificate (PEM), for `SSL_CERT_FILE`.
    pub fn ca_file(&self) -> PathBuf {
        self.pki.ca_file()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.log.requests.lock().expect("request log lock").clone()
    }

    /// TLS handshakes that failed (a client that did not trust the certificate, for one).
    pub fn failed_handshakes(&self) -> usize {
        self.log.failed_handshakes.load(Ordering::SeqCst)
    }

    /// Waits until `count` requests have arrived and returns them all, or `None` at `deadline`
    /// (a bound on the wait, not a speed assertion).
    pub fn wait_for(&self, count: usize, deadline: Duration) -> Option<Vec<ReceivedRequest>> {
        let until = Instant::now() + deadline;
        loop {
            let requests = self.requests();
            if requests.len() >= count {
                return Some(requests);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for HttpsReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    acceptor: TlsAcceptor,
    log: Arc<Log>,
    bound: mpsc::Sender<SocketAddr>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind a loopback port");
    bound
        .send(listener.local_addr().expect("local address"))
        .expect("the test waits for the address");
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let acceptor = acceptor.clone();
        let log = log.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                log.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                return;
            };
            let service = service_fn(move |request| record(log.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn record(
    log: Arc<Log>,
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<http_body_util::Empty<hyper::body::Bytes>>, hyper::Error> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes().to_vec();
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    log.requests
        .lock()
        .expect("request log lock")
        .push(ReceivedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            headers,
            body,
        });
    let mut response = hyper::Response::new(http_body_util::Empty::new());
    *response.status_mut() = hyper::StatusCode::NO_CONTENT;
    Ok(response)
}
