//! TLS for every Agora listener and gRPC client (rustls with the `ring` provider).
//!
//! A master, an agent and the frameworks each serve gRPC and HTTP on one port; [`Listener`] is that
//! port, plain or TLS, and [`serve`] serves it under [`Limits`] (header-read timeout, HTTP/2
//! keep-alive, connection limit). Handshakes run in their own tasks so that one slow client
//! cannot hold up the accept loop. When the server is given a CA (`--tls-ca`), clients may present
//! a certificate signed by it: the handshake fails for a certificate it did not sign, and the
//! handler learns from [`Peer::client_certificate`] whether one was presented, which is how the
//! master requires mutual TLS of agents while frameworks and browsers on the same port need none.
//!
//! Clients ([`ClientTls`]) verify the server against the cluster CA given with `--tls-ca` (not the
//! system roots: clusters usually run their own CA), and present their own certificate when given
//! `--tls-cert`/`--tls-key`.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tracing::{debug, warn};

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections accepted but not yet taken by the server.
const ACCEPT_BACKLOG: usize = 1024;

/// What went wrong loading TLS material; each names the flag and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{flag} {}: {source}", path.display())]
    Read {
        flag: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The file holds no PEM item of the expected kind.
    #[error("{flag} {}: no {what} in PEM form found in the file", path.display())]
    Missing {
        flag: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    /// rustls refused the material (key does not match the certificate, bad CA, ...).
    #[error("{flag}: {message}")]
    Invalid { flag: &'static str, message: String },
    /// A flag needs another one.
    #[error("{0}")]
    Incomplete(String),
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(flag, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid {
            flag,
            message: format!("{}: {e}", path.display()),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            flag,
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn private_key(flag: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(flag, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::Missing {
        flag,
        path: path.to_path_buf(),
        what: "private key",
    })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates("--tls-ca", path)? {
        roots.add(cert).map_err(|e| TlsError::Invalid {
            flag: "--tls-ca",
            message: format!("{}: {e}", path.display()),
        })?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Invalid {
            flag: "--tls-key",
            message: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| TlsError::Invalid {
        flag: "--tls-key",
        message: format!("does not match --tls-cert: {e}"),
    })?;
    Ok(Arc::new(certified))
}

fn pem_certificates(
    flag: &'static str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid {
            flag,
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Invalid {
            flag,
            message: "no certificate in PEM form".into(),
        });
    }
    Ok(certs)
}

/// The roots of a CA given as PEM.
///
/// # Errors
/// [`TlsError::Invalid`].
pub fn pem_roots(pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in pem_certificates("CA", pem)? {
        roots.add(cert).map_err(|e| TlsError::Invalid {
            flag: "CA",
            message: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// A listener's certificate that can be replaced while it serves (a renewed certificate is used
/// from the next handshake on; connections open keep theirs).
#[derive(Debug)]
pub struct SwappableCert(RwLock<Arc<CertifiedKey>>);

impl SwappableCert {
    /// From a PEM chain and key.
    ///
    /// # Errors
    /// [`TlsError::Invalid`] when they do not parse or do not match.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<SwappableCert>, TlsError> {
        Ok(Arc::new(SwappableCert(RwLock::new(Self::parse(
            chain_pem, key_pem,
        )?))))
    }

    fn parse(chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
        let chain = pem_certificates("certificate", chain_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Invalid {
            flag: "key",
            message: e.to_string(),
        })?;
        certified_key(chain, key)
    }

    /// Serves `chain_pem`/`key_pem` from the next handshake on.
    ///
    /// # Errors
    /// [`TlsError::Invalid`]; the certificate served is then unchanged.
    pub fn replace(&self, chain_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        let new = Self::parse(chain_pem, key_pem)?;
        if let Ok(mut c) = self.0.write() {
            *c = new;
        }
        Ok(())
    }
}

impl rustls::server::ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|c| c.clone())
    }
}

/// A listener's TLS configuration serving `cert`; with `client_roots`, clients may present a
/// certificate those roots signed (verified; one they did not sign fails the handshake).
///
/// # Errors
/// [`TlsError::Invalid`].
pub fn server_config_with(
    cert: Arc<SwappableCert>,
    client_roots: Option<RootCertStore>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid {
            flag: "--tls-cert",
            message: e.to_string(),
        })?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Invalid {
                    flag: "--tls-ca",
                    message: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener's verifier of client certificates whose roots can be replaced while it serves (the
/// cluster CA rotated: both CAs during the transition, then the new one): each handshake uses the
/// roots current when it starts. Clients need not present a certificate; one the roots did not
/// sign fails the handshake.
#[derive(Debug)]
pub struct SwappableClientRoots(RwLock<Arc<dyn rustls::server::danger::ClientCertVerifier>>);

fn client_verifier(
    roots: RootCertStore,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Invalid {
            flag: "--tls-ca",
            message: e.to_string(),
        })
}

impl SwappableClientRoots {
    /// Verifies client certificates against `roots`.
    ///
    /// # Errors
    /// [`TlsError::Invalid`] for unusable roots.
    pub fn new(roots: RootCertStore) -> Result<Arc<SwappableClientRoots>, TlsError> {
        Ok(Arc::new(SwappableClientRoots(RwLock::new(
            client_verifier(roots)?,
        ))))
    }

    /// Verifies against `roots` from the next handshake on.
    ///
    /// # Errors
    /// [`TlsError::Invalid`]; the roots are then unchanged.
    pub fn replace(&self, roots: RootCertStore) -> Result<(), TlsError> {
        let new = client_verifier(roots)?;
        match self.0.write() {
            Ok(mut v) => *v = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
        Ok(())
    }

    fn current(&self) -> Arc<dyn rustls::server::danger::ClientCertVerifier> {
        match self.0.read() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl rustls::server::danger::ClientCertVerifier for SwappableClientRoots {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    /// No hints (they would borrow from roots that may be replaced): clients of the cluster have
    /// one certificate and present it.
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

/// As [`server_config_with`], the client roots replaceable while it serves.
///
/// # Errors
/// [`TlsError::Invalid`].
pub fn server_config_swappable(
    cert: Arc<SwappableCert>,
    client_roots: Arc<SwappableClientRoots>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid {
            flag: "--tls-cert",
            message: e.to_string(),
        })?
        .with_client_cert_verifier(client_roots)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS flags every component takes: `--tls-cert`, `--tls-key`, `--tls-ca`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// This component's certificate chain (PEM); with `key`, its listener speaks TLS and, as a
    /// client, it presents the certificate.
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub key: Option<PathBuf>,
    /// The cluster CA (PEM): clients verify servers against it; a server verifies client
    /// certificates against it.
    pub ca: Option<PathBuf>,
}

impl TlsFiles {
    /// True when nothing was configured: plain TCP everywhere.
    pub fn is_empty(&self) -> bool {
        self.cert.is_none() && self.key.is_none() && self.ca.is_none()
    }

    fn pair(&self) -> Result<Option<(&Path, &Path)>, TlsError> {
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Ok(Some((c, k))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(TlsError::Incomplete(
                "--tls-cert needs --tls-key (the certificate's private key)".into(),
            )),
            (None, Some(_)) => Err(TlsError::Incomplete(
                "--tls-key needs --tls-cert (the certificate it belongs to)".into(),
            )),
        }
    }

    /// The listener's TLS configuration, or `None` for plain TCP (no `--tls-cert`).
    ///
    /// # Errors
    /// [`TlsError`] naming the flag when a file is missing, unreadable or invalid.
    pub fn server_config(&self) -> Result<Option<Arc<ServerConfig>>, TlsError> {
        let Some((cert, key)) = self.pair()? else {
            return Ok(None);
        };
        let chain = certificates("--tls-cert", cert)?;
        let key = private_key("--tls-key", key)?;
        let roots = self.ca.as_deref().map(roots).transpose()?;
        let certified = certified_key(chain, key)?;
        server_config_with(Arc::new(SwappableCert(RwLock::new(certified))), roots).map(Some)
    }

    /// The client side, or `None` when no `--tls-ca` was given (plain TCP).
    ///
    /// # Errors
    /// [`TlsError`] naming the flag when a file is missing or unreadable.
    pub fn client(&self) -> Result<Option<ClientTls>, TlsError> {
        let Some(ca) = &self.ca else {
            if self.pair()?.is_some() {
                return Err(TlsError::Incomplete(
                    "--tls-cert/--tls-key as a client need --tls-ca (the CA that signed the master's certificate)".into(),
                ));
            }
            return Ok(None);
        };
        // Parse now so that a bad file is reported at start, not at the first connection.
        roots(ca)?;
        let identity = match self.pair()? {
            Some((cert, key)) => {
                certificates("--tls-cert", cert)?;
                private_key("--tls-key", key)?;
                Some((read("--tls-cert", cert)?, read("--tls-key", key)?))
            }
            None => None,
        };
        Ok(Some(ClientTls {
            ca_pem: read("--tls-ca", ca)?,
            identity,
        }))
    }
}

/// A client's TLS material: the CA to verify servers with and an optional own certificate.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The cluster CA, PEM.
    pub ca_pem: Vec<u8>,
    /// This client's certificate chain and key, PEM.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientTls {
    fn tonic_config(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        match &self.identity {
            Some((cert, key)) => config.identity(Identity::from_pem(cert, key)),
            None => config,
        }
    }
}

/// A client's TLS material that a renewal replaces: each new connection takes the current one
/// ([`SharedClientTls::get`]); connections open keep theirs.
#[derive(Debug, Clone)]
pub struct SharedClientTls(Arc<RwLock<ClientTls>>);

impl SharedClientTls {
    pub fn new(tls: ClientTls) -> SharedClientTls {
        SharedClientTls(Arc::new(RwLock::new(tls)))
    }

    /// The material new connections use now.
    pub fn get(&self) -> ClientTls {
        match self.0.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces it (a renewed certificate).
    pub fn set(&self, tls: ClientTls) {
        match self.0.write() {
            Ok(mut t) => *t = tls,
            Err(poisoned) => *poisoned.into_inner() = tls,
        }
    }
}

impl From<ClientTls> for SharedClientTls {
    fn from(tls: ClientTls) -> SharedClientTls {
        SharedClientTls::new(tls)
    }
}

/// The URL scheme for a component serving with (`https`) or without (`http`) TLS.
pub fn scheme(tls: bool) -> &'static str {
    if tls {
        "https"
    } else {
        "http"
    }
}

/// A gRPC endpoint for `address` (`host:port`, or a URL whose scheme is replaced), over TLS when
/// `tls` is given.
///
/// # Errors
/// [`TlsError::Invalid`] when the address is not a valid URI.
pub fn endpoint(address: &str, tls: Option<&ClientTls>) -> Result<Endpoint, TlsError> {
    let host_port = address
        .strip_prefix("http://")
        .or_else(|| address.strip_prefix("https://"))
        .unwrap_or(address);
    let url = format!("{}://{host_port}", scheme(tls.is_some()));
    let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| TlsError::Invalid {
        flag: "address",
        message: format!("'{url}': {e}"),
    })?;
    match tls {
        None => Ok(endpoint),
        Some(tls) => endpoint
            .tls_config(tls.tonic_config())
            .map_err(|e| TlsError::Invalid {
                flag: "--tls-ca",
                message: e.to_string(),
            }),
    }
}

/// An error with its causes, `outer: inner: root`. tonic's connection errors say only
/// "transport error" and keep the reason (an unknown CA, a refused certificate) in their sources.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(error), |e| e.source())
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// Whether the server at `address` (`host:port`) speaks TLS, asked the way a plain HTTP/2 client
/// finds out by accident: it sends the HTTP/2 preface in clear, and a TLS server answers with a
/// TLS record (an alert, `0x15 0x03 …`, or a handshake, `0x16 0x03 …`) instead of HTTP/2 frames.
/// `false` when it cannot tell (unreachable, silent, HTTP/2 frames). A client without TLS
/// settings uses it to turn tonic's "h2 protocol error: frame with invalid size" into what the
/// operator must do.
pub async fn speaks_tls(address: &str, within: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut s = TcpStream::connect(address).await.ok()?;
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 2];
        s.read_exact(&mut head).await.ok()?;
        Some(matches!(head, [0x15 | 0x16, 0x03]))
    };
    matches!(tokio::time::timeout(within, probe).await, Ok(Some(true)))
}

/// A connection accepted by [`Listener`]: plain TCP or TLS over it.
pub enum Connection {
    /// No TLS configured.
    Plain(TcpStream),
    /// After a completed handshake.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Connection::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Connection::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(s) => Pin::new(s).poll_flush(cx),
            Connection::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Connection::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Connection::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Connection::Plain(s) => s.is_write_vectored(),
            Connection::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// A TCP listener that hands `axum::serve` plain or TLS connections.
pub struct Listener {
    accepted: mpsc::Receiver<(Connection, SocketAddr, OwnedSemaphorePermit)>,
    local: SocketAddr,
    limits: Limits,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl Listener {
    /// Serves `tcp`, with TLS when `tls` is given, with the default [`Limits`] (or those of the
    /// test-only environment variables, see [`Limits::from_env`]).
    ///
    /// # Errors
    /// The socket's local address cannot be read.
    pub fn new(tcp: TcpListener, tls: Option<Arc<ServerConfig>>) -> io::Result<Listener> {
        Self::with_limits(tcp, tls, Limits::from_env())
    }

    /// As [`Listener::new`] with explicit limits.
    ///
    /// # Errors
    /// The socket's local address cannot be read.
    pub fn with_limits(
        tcp: TcpListener,
        tls: Option<Arc<ServerConfig>>,
        limits: Limits,
    ) -> io::Result<Listener> {
        let local = tcp.local_addr()?;
        let (tx, accepted) = mpsc::channel(ACCEPT_BACKLOG);
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let max = limits.max_connections;
        let accept_loop = tokio::spawn(async move {
            let mut refusals = RefusalLog::default();
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off rather than spin.
                        debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Over the limit: close at once (dropping the stream), and say so now and then.
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    if let Some(refused) = refusals.refused(Instant::now()) {
                        warn!(
                            %peer,
                            refused,
                            max_connections = max,
                            "connection limit reached: closing new connections"
                        );
                    }
                    continue;
                };
                let _ = stream.set_nodelay(true);
                match &acceptor {
                    None => {
                        if tx
                            .send((Connection::Plain(stream), peer, permit))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(tls)) => {
                                    let _ = tx
                                        .send((Connection::Tls(Box::new(tls)), peer, permit))
                                        .await;
                                }
                                Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                                Err(_) => debug!(%peer, "TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
        });
        Ok(Listener {
            accepted,
            local,
            limits,
            accept_loop,
        })
    }
}

/// Rate-limits the "connection limit reached" log line: at most one per [`REFUSAL_LOG_EVERY`],
/// with the number of connections refused since the last one.
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    since: u64,
}

/// How often the "connection limit reached" line may be logged.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

impl RefusalLog {
    /// Counts one refusal; returns the count to log when a line is due.
    fn refused(&mut self, now: Instant) -> Option<u64> {
        self.since += 1;
        let due = self
            .last
            .is_none_or(|last| now.duration_since(last) >= REFUSAL_LOG_EVERY);
        if due {
            self.last = Some(now);
            Some(std::mem::take(&mut self.since))
        } else {
            None
        }
    }
}

/// What one listener tolerates from its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a client has to send a request's headers: from the connection's start for the
    /// first request (including the bytes that tell HTTP/1 from HTTP/2), and from the end of the
    /// previous response on a kept-alive HTTP/1 connection (so it is also the idle keep-alive
    /// timeout, unless a handler extended it: [`crate::keep_alive`]). A response in progress (an
    /// SSE stream, a long poll) is not affected.
    pub header_read_timeout: Duration,
    /// HTTP/2 (gRPC): a PING is sent after this long without a frame, and the connection is
    /// closed when its answer takes as long again: dead peers do not hold connections.
    pub h2_keep_alive: Duration,
    /// Connections served at once; more are closed when accepted.
    pub max_connections: usize,
}

/// The test-only variable that shortens [`Limits::header_read_timeout`] (milliseconds).
pub const HEADER_TIMEOUT_ENV: &str = "AGORA_TEST_HEADER_READ_TIMEOUT_MS";

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            h2_keep_alive: Duration::from_secs(20),
            max_connections: 10_000,
        }
    }
}

impl Limits {
    /// The defaults, with [`HEADER_TIMEOUT_ENV`] (a number of milliseconds, for tests that
    /// cannot wait 10 s) applied when set to a valid number; anything else is ignored.
    pub fn from_env() -> Limits {
        let mut limits = Limits::default();
        if let Some(ms) = std::env::var(HEADER_TIMEOUT_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|ms| *ms > 0)
        {
            limits.header_read_timeout = Duration::from_millis(ms);
        }
        limits
    }
}

impl axum::serve::Listener for Listener {
    type Io = Connection;
    type Addr = SocketAddr;

    /// For `axum::serve` (tests): the connection limit is not held here, [`serve`] holds it.
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some((c, addr, _permit)) => (c, addr),
            // The accept loop only ends when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Who is on the other end of a request: available to handlers as
/// `ConnectInfo<Peer>` (HTTP) or in a gRPC request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// True when the client presented a certificate the server's CA verified.
    pub client_certificate: bool,
    /// The role of that certificate when the cluster CA issued it (see [`crate::pki::Role`]).
    pub client_role: Option<crate::pki::Role>,
}

impl Peer {
    fn of(connection: &Connection, addr: SocketAddr) -> Peer {
        let leaf = match connection {
            Connection::Plain(_) => None,
            Connection::Tls(s) => s.get_ref().1.peer_certificates().and_then(|c| c.first()),
        };
        Peer {
            addr,
            client_certificate: leaf.is_some(),
            client_role: leaf.and_then(|c| crate::pki::role_of(c.as_ref())),
        }
    }
}

impl Connected<IncomingStream<'_, Listener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Listener>) -> Self {
        Peer::of(stream.io(), *stream.remote_addr())
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, with [`Peer`] as connect info
/// (`ConnectInfo<Peer>`), HTTP/1 and HTTP/2 on the one port, under the listener's [`Limits`]:
///
/// ```text
///  accept ─(over max_connections: close)─▶ first bytes (≤ header_read_timeout) ─┬─ "PRI * HTTP/2.0…" ─▶ h2 (keep-alive pings)
///                                                                               └─ else ─▶ h1 (headers ≤ header_read_timeout, also when idle,
///                                                                                          unless a handler extended it: crate::keep_alive)
/// ```
///
/// On `shutdown` it stops accepting and waits for the connections in progress to finish
/// (each is told to close once its current requests are answered).
///
/// # Errors
/// None today; the `Result` is kept for callers that map serving errors.
pub async fn serve(
    mut listener: Listener,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = listener.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.h2_keep_alive)
        .keep_alive_timeout(limits.h2_keep_alive);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (mut connection, addr, permit) = tokio::select! {
            accepted = listener.accepted.recv() => match accepted {
                Some(a) => a,
                None => break,
            },
            () = &mut shutdown => break,
        };
        let peer = Peer::of(&connection, addr);
        let router = router.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let preface = match first_bytes(&mut connection, limits.header_read_timeout).await {
                Ok(p) => p,
                Err(e) => {
                    debug!(%addr, error = %e, "connection closed before its first request");
                    return;
                }
            };
            let io = TokioIo::new(Replay {
                prefix: preface,
                at: 0,
                inner: connection,
            });
            let keep_alive = crate::keep_alive::KeepAlive::default();
            let mut builder = (*builder).clone();
            builder
                .http1()
                .timer(crate::keep_alive::ConnectionTimer::new(
                    keep_alive.clone(),
                    limits.header_read_timeout,
                ));
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req.extensions_mut().insert(keep_alive.clone());
                tower::ServiceExt::oneshot(router.clone(), req)
            });
            let conn = builder.serve_connection_with_upgrades(io, service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                debug!(%addr, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The HTTP/2 connection preface: a client speaking h2 without TLS ALPN starts with it.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the first bytes of a connection, enough to tell HTTP/2 (the whole preface) from HTTP/1
/// (anything else), within `timeout`: hyper's own version detection would wait forever for a
/// client that sends nothing.
async fn first_bytes(connection: &mut Connection, timeout: Duration) -> io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::with_capacity(H2_PREFACE.len());
    let read = async {
        let mut chunk = [0u8; 24];
        while buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf) {
            let n = connection
                .read(&mut chunk[..H2_PREFACE.len() - buf.len()])
                .await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed by the client",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<(), io::Error>(())
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no request within {timeout:?}"),
            ))
        }
    }
    Ok(buf)
}

/// A connection whose first bytes, already read by [`first_bytes`], are read again.
struct Replay {
    prefix: Vec<u8>,
    at: usize,
    inner: Connection,
}

impl AsyncRead for Replay {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.prefix.len() {
            let n = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The role of the verified client certificate of the request's connection, if the cluster CA
/// issued it.
pub fn client_role<T>(request: &tonic::Request<T>) -> Option<crate::pki::Role> {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<Peer>>()
        .and_then(|c| c.0.client_role)
}

/// Whether the request came over a connection with a verified client certificate.
pub fn has_client_certificate<T>(request: &tonic::Request<T>) -> bool {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<Peer>>()
        .is_some_and(|c| c.0.client_certificate)
}

#[cfg(test)]
mod tests;
