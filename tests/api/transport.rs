//! How the service listens: `/metrics` on a port of its own (`METRICS_PORT`), and HTTPS with TLS 1.3 only
//! (`TLS_CERT_FILE`/`TLS_KEY_FILE`) with a self-signed certificate made here for each test (rcgen), spoken
//! to by a rustls client that trusts exactly that certificate. Every network step is bounded in time.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wallet_service::config::TlsFiles;

use crate::helpers::app::{TestApp, spawn_app};
use crate::helpers::{paths, within};

/// Bound of one connection's exchange (connect, handshake, request, answer) in these tests.
const EXCHANGE_WITHIN: Duration = Duration::from_secs(15);

// ---- METRICS_PORT ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_metrics_port_metrics_are_served_there_only_and_the_api_port_answers_404() {
    let app = TestApp::builder()
        .configure(|c| c.transport.metrics_port = Some(0))
        .spawn()
        .await;
    let metrics_port = app.metrics_port.expect("the app bound a metrics port");
    assert_ne!(metrics_port, app.port);
    // A request on the API port, so that its latency histogram has a series to show.
    assert_eq!(app.get("/health").await.status(), 200);

    let on_api = app.get("/metrics").await;
    assert_eq!(on_api.status(), 404);
    let body = on_api.text().await.expect("body");
    assert!(!body.contains("http_request_duration_seconds"), "{body}");
    let posted = app.http.post(app.url("/metrics")).send().await.expect("request");
    assert_eq!(posted.status(), 404, "no method reveals /metrics on the API port");

    let metrics = format!("http://127.0.0.1:{metrics_port}");
    let res = app
        .http
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .expect("text")
            .starts_with("text/plain"),
        "{:?}",
        res.headers()
    );
    let text = res.text().await.expect("body");
    assert!(text.contains("http_request_duration_seconds"), "{text}");
    assert!(text.contains("route=\"/health\""), "{text}");

    // The metrics port serves nothing of the API.
    let res = app.http.get(format!("{metrics}/health")).send().await.expect("request");
    assert_eq!(res.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_metrics_port_metrics_stay_on_the_api_port() {
    let app = spawn_app().await;
    assert_eq!(app.metrics_port, None);
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.expect("body").contains("# TYPE"));
}

// ---- TLS ----

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files of its own.
struct Cert {
    files: TlsFiles,
    der: CertificateDer<'static>,
}

fn self_signed() -> Cert {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("a self-signed certificate");
    let dir = paths::target_dir().join("tls").join(paths::unique());
    std::fs::create_dir_all(&dir).expect("a directory for the certificate");
    let write = |name: &str, pem: String| -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write a PEM file");
        path
    };
    Cert {
        files: TlsFiles {
            cert: write("cert.pem", made.cert.pem()),
            key: write("key.pem", made.signing_key.serialize_pem()),
        },
        der: made.cert.der().clone(),
    }
}

async fn spawn_tls_app(cert: &Cert) -> TestApp {
    let files = cert.files.clone();
    TestApp::builder()
        .configure(move |c| c.transport.tls = Some(files))
        .spawn()
        .await
}

/// A rustls client that trusts only `cert` and offers only these TLS versions.
fn client(cert: &Cert, versions: &[&'static rustls::SupportedProtocolVersion]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone()).expect("the certificate is a trust anchor");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("the provider supports these versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// `GET path` over one HTTP/1.1 connection that closes after the answer; the raw answer.
async fn get_raw<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: &mut S, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send the request");
    let mut answer = Vec::new();
    // A peer that closes without TLS close_notify ends the read with an error; what came before counts.
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_1_3_client_trusting_the_certificate_gets_answers_over_https() {
    let cert = self_signed();
    let app = spawn_tls_app(&cert).await;
    within(EXCHANGE_WITHIN, "an HTTPS exchange", async {
        let tcp = TcpStream::connect(("127.0.0.1", app.port)).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("a server name");
        let mut tls = client(&cert, &[&rustls::version::TLS13])
            .connect(name, tcp)
            .await
            .expect("the TLS 1.3 handshake succeeds");
        assert_eq!(
            tls.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        let answer = get_raw(&mut tls, "/health").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_offers_only_tls_1_2_is_refused_in_the_handshake() {
    let cert = self_signed();
    let app = spawn_tls_app(&cert).await;
    within(EXCHANGE_WITHIN, "a TLS 1.2 handshake attempt", async {
        let tcp = TcpStream::connect(("127.0.0.1", app.port)).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("a server name");
        let refused = client(&cert, &[&rustls::version::TLS12]).connect(name, tcp).await;
        let Err(err) = refused else {
            panic!("the server accepted a TLS 1.2-only client")
        };
        assert!(
            err.to_string().contains("ProtocolVersion") || err.to_string().contains("protocol version"),
            "refused for its version: {err}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_gets_no_http_answer() {
    let cert = self_signed();
    let app = spawn_tls_app(&cert).await;
    within(EXCHANGE_WITHIN, "a plain HTTP request on the TLS port", async {
        let mut tcp = TcpStream::connect(("127.0.0.1", app.port)).await.expect("connect");
        let answer = get_raw(&mut tcp, "/health").await;
        assert!(
            !answer.contains("HTTP/1.1"),
            "plain HTTP got an HTTP answer: {answer:?}"
        );
    })
    .await;
    // The refused client did not hurt the listener: the plain HTTP client of the tests gets nothing either,
    // and a TLS client still gets its answer.
    assert!(app.http.get(app.url("/health")).send().await.is_err());
    within(EXCHANGE_WITHIN, "an HTTPS exchange after the plain one", async {
        let tcp = TcpStream::connect(("127.0.0.1", app.port)).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("a server name");
        let mut tls = client(&cert, &[&rustls::version::TLS13])
            .connect(name, tcp)
            .await
            .expect("handshake");
        assert!(get_raw(&mut tls, "/ready").await.starts_with("HTTP/1.1 200"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_app_with_a_connection_open_drains_and_stops_on_shutdown() {
    let cert = self_signed();
    let mut app = spawn_tls_app(&cert).await;
    // A keep-alive connection that has been served once and stays open across the shutdown.
    let tcp = TcpStream::connect(("127.0.0.1", app.port)).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("a server name");
    let mut tls = within(
        EXCHANGE_WITHIN,
        "a handshake",
        client(&cert, &[&rustls::version::TLS13]).connect(name, tcp),
    )
    .await
    .expect("handshake");
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("send");
    let mut first = [0u8; 12];
    within(EXCHANGE_WITHIN, "the first answer", tls.read_exact(&mut first))
        .await
        .expect("an answer");
    assert_eq!(&first, b"HTTP/1.1 200");

    // `stop` fails the test unless the app drains and ends within its bound.
    app.stop().await;
    assert!(app.is_finished());
    // The listener is closed: no new connection is accepted.
    assert!(TcpStream::connect(("127.0.0.1", app.port)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_file_that_holds_no_certificate_fails_the_start_naming_it() {
    let cert = self_signed();
    // The key where the certificate should be: a PEM file, but no certificate in it.
    let files = TlsFiles {
        cert: cert.files.key.clone(),
        key: cert.files.key.clone(),
    };
    let err = TestApp::builder()
        .configure(move |c| c.transport.tls = Some(files))
        .refused()
        .await;
    assert!(err.contains("TLS_CERT_FILE"), "{err}");
    assert!(!err.contains("PRIVATE KEY"), "the key's text never appears: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_given_a_certificate_without_its_key_refuses_to_start() {
    let cert = self_signed();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wallet-service"))
        .arg("serve")
        .env_clear()
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("JWT_SECRET", crate::helpers::fixtures::JWT_SECRET)
        .env("PORT", "0")
        .env("TLS_CERT_FILE", &cert.files.cert)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the binary");
    let status = within(EXCHANGE_WITHIN, "the binary's exit", async {
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read stderr");
    assert!(stderr.contains("TLS_KEY_FILE"), "{stderr}");
}
