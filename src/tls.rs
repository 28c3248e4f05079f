//! HTTPS for the API port: TLS 1.3 only, terminated in the process with rustls (`TLS_CERT_FILE`,
//! `TLS_KEY_FILE`).
//!
//! warp 0.4 has no TLS of its own, and its `Server::incoming` takes only its own sealed listener types, so
//! this module runs the accept loop itself: accept TCP → rustls handshake (bounded by
//! [`HANDSHAKE_TIMEOUT`]) → hyper-util's HTTP/1.1-and-h2 connection with the same warp filter as a tower
//! service (`warp::service`). The drain is warp's own recipe: on the shutdown signal the listener closes,
//! every open connection is told to finish its in-flight requests and close
//! (`hyper_util::server::graceful`), and the function returns when the last one has.
//!
//! The crypto provider is aws-lc-rs, the one `jsonwebtoken` already links (one provider in the binary).
//! Only TLS 1.3 is offered, so a TLS 1.2 client fails in the handshake, and plain HTTP on the port never
//! gets an HTTP answer (its bytes are not a TLS record).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::config::TlsFiles;

/// Longest a client may take to complete its handshake; a connection that has not by then is closed, so
/// half-open handshakes cannot pile up, and the drain never waits on one for longer than this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after an accept error that is not about one connection (e.g. out of file descriptors), so the
/// loop does not spin while the process has none to give (warp's own loop does the same).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// ALPN: HTTP/2 and HTTP/1.1, both served by hyper-util's auto builder, as on the plain port.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why the certificate and key could not be used (the process logs it and exits; paths are not secret,
/// the key's content never appears).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS_CERT_FILE {path}: cannot read a PEM certificate chain: {source}")]
    Cert {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("TLS_CERT_FILE {path} holds no certificate")]
    NoCert { path: String },
    /// `reason` never quotes the file's content (it is a private key).
    #[error("TLS_KEY_FILE {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("TLS_CERT_FILE and TLS_KEY_FILE cannot serve TLS 1.3 together: {0}")]
    Config(#[from] rustls::Error),
}

/// A TLS 1.3-only acceptor from the PEM files (certificate chain, leaf first; PKCS#8, PKCS#1 or SEC1 key).
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let shown = |p: &Path| p.display().to_string();
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Cert {
            path: shown(&files.cert),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            path: shown(&files.cert),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: shown(&files.key),
        reason: match e {
            rustls::pki_types::pem::Error::Io(io) => format!("cannot read it: {io}"),
            rustls::pki_types::pem::Error::NoItemsFound => "holds no PEM private key".into(),
            _ => "is not a valid PEM private key".into(),
        },
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `routes` over TLS on `listener` until `shutdown` resolves, then drains: stops accepting, lets
/// every open connection finish its in-flight requests, and returns once all have closed.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    routes: BoxedFilter<(Response,)>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => tcp,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    warn!(error = %e, "accept failed; pausing");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(warp::service(routes.clone()));
        // Taken before the handshake, so the drain also waits for (at most HANDSHAKE_TIMEOUT of) a
        // handshake under way and then serves that connection's requests like any other's.
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                // A client that speaks plain HTTP, an older TLS, or nothing: its problem, not the server's.
                Ok(Err(e)) => {
                    debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!("TLS handshake timed out");
                    return;
                }
            };
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(connection).await {
                debug!(error = %e, "TLS connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Errors of one connection that `accept` reports (the listener itself is fine).
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
