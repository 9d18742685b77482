use super::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA and certificates it signs, written as PEM files into a temporary directory.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "agora-tls-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca_key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).expect("CA");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
        Pki { dir, ca, ca_key }
    }

    /// Signs a certificate for `names` and returns (cert file, key file).
    fn issue(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("key");
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("signed");
        let (c, k) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}-key.pem")),
        );
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        (c, k)
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

async fn peer(axum::extract::ConnectInfo(p): axum::extract::ConnectInfo<Peer>) -> String {
    format!("client_certificate={}", p.client_certificate)
}

async fn start(tls: Option<Arc<ServerConfig>>) -> SocketAddr {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let listener = Listener::new(tcp, tls).expect("listener");
    let addr = axum::serve::Listener::local_addr(&listener).expect("addr");
    let router = axum::Router::new().route("/peer", axum::routing::get(peer));
    tokio::spawn(serve(listener, router, std::future::pending()));
    addr
}

fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots(ca).expect("roots"));
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((c, k)) => builder
            .with_client_auth_cert(
                certificates("--tls-cert", c).expect("cert"),
                private_key("--tls-key", k).expect("key"),
            )
            .expect("client auth"),
    };
    Arc::new(config)
}

/// GET /peer over TLS; the error is the handshake's or the connection's.
async fn get_peer(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> io::Result<String> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    tls.write_all(b"GET /peer HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .await?;
    let mut response = String::new();
    tls.read_to_string(&mut response).await?;
    Ok(response)
}

#[tokio::test]
async fn tls_listener_serves_clients_that_trust_its_ca_and_reports_client_certificates() {
    let pki = Pki::new("serve");
    let (cert, key) = pki.issue("server", &["127.0.0.1", "localhost"]);
    let (agent_cert, agent_key) = pki.issue("agent", &["agent1"]);
    let files = TlsFiles {
        cert: Some(cert),
        key: Some(key),
        ca: Some(pki.ca()),
    };
    let addr = start(files.server_config().expect("config")).await;

    let anonymous = get_peer(addr, client_config(&pki.ca(), None))
        .await
        .expect("a client without a certificate is served");
    assert!(
        anonymous.contains("client_certificate=false"),
        "{anonymous}"
    );

    let agent = get_peer(
        addr,
        client_config(&pki.ca(), Some((&agent_cert, &agent_key))),
    )
    .await
    .expect("a client with a certificate of the CA is served");
    assert!(agent.contains("client_certificate=true"), "{agent}");

    let rogue = Pki::new("rogue");
    let (rogue_cert, rogue_key) = rogue.issue("agent", &["agent1"]);
    let refused = get_peer(
        addr,
        client_config(&pki.ca(), Some((&rogue_cert, &rogue_key))),
    )
    .await;
    assert!(
        refused.is_err() || refused.as_ref().is_ok_and(|r| r.is_empty()),
        "a certificate from another CA must be refused: {refused:?}"
    );

    let untrusting = get_peer(addr, client_config(&rogue.ca(), None)).await;
    assert!(
        untrusting.is_err(),
        "a client must not trust a server its CA did not sign: {untrusting:?}"
    );
}

#[tokio::test]
async fn plain_listener_serves_http() {
    let addr = start(None).await;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.expect("read");
    assert!(response.contains("client_certificate=false"), "{response}");
}

#[tokio::test]
async fn grpc_endpoint_uses_https_only_with_tls() {
    let pki = Pki::new("endpoint");
    let files = TlsFiles {
        ca: Some(pki.ca()),
        ..TlsFiles::default()
    };
    let client = files.client().expect("client").expect("tls configured");
    let e = endpoint("127.0.0.1:5050", Some(&client)).expect("endpoint");
    assert_eq!(e.uri().scheme_str(), Some("https"));
    let e = endpoint("http://127.0.0.1:5050", None).expect("endpoint");
    assert_eq!(e.uri().scheme_str(), Some("http"));
}

#[test]
fn bad_material_is_reported_with_the_flag_and_file() {
    let pki = Pki::new("bad");
    let (cert, key) = pki.issue("server", &["127.0.0.1"]);
    let only_cert = TlsFiles {
        cert: Some(cert.clone()),
        ..TlsFiles::default()
    };
    let e = only_cert
        .server_config()
        .expect_err("a certificate without a key");
    assert!(e.to_string().contains("--tls-cert needs --tls-key"), "{e}");

    let missing = TlsFiles {
        cert: Some(cert.clone()),
        key: Some(pki.dir.join("absent.pem")),
        ca: None,
    };
    let e = missing.server_config().expect_err("a missing key file");
    assert!(
        e.to_string().starts_with("--tls-key") && e.to_string().contains("absent.pem"),
        "{e}"
    );

    let swapped = TlsFiles {
        cert: Some(key.clone()),
        key: Some(key.clone()),
        ca: None,
    };
    let e = swapped
        .server_config()
        .expect_err("a key given as certificate");
    assert!(
        e.to_string().contains("--tls-cert") && e.to_string().contains("no certificate"),
        "{e}"
    );

    let (other_cert, _) = pki.issue("other", &["127.0.0.1"]);
    let mismatched = TlsFiles {
        cert: Some(other_cert),
        key: Some(key),
        ca: None,
    };
    let e = mismatched
        .server_config()
        .expect_err("a key of another certificate");
    assert!(e.to_string().contains("--tls-key"), "{e}");

    let client_without_ca = TlsFiles {
        cert: Some(cert),
        key: Some(pki.dir.join("server-key.pem")),
        ca: None,
    };
    let e = client_without_ca
        .client()
        .expect_err("a client certificate without a CA");
    assert!(e.to_string().contains("--tls-ca"), "{e}");
    assert!(TlsFiles::default().client().expect("plain").is_none());
}

async fn start_limited(limits: Limits) -> SocketAddr {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let listener = Listener::with_limits(tcp, None, limits).expect("listener");
    let addr = axum::serve::Listener::local_addr(&listener).expect("addr");
    let router = axum::Router::new()
        .route("/peer", axum::routing::get(peer))
        .route(
            "/slow",
            axum::routing::get(|| async {
                // A response in progress (a long poll) longer than the header timeout.
                tokio::time::sleep(Duration::from_millis(600)).await;
                "late"
            }),
        );
    tokio::spawn(serve(listener, router, std::future::pending()));
    addr
}

fn short() -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(200),
        ..Limits::default()
    }
}

/// Reads until the server closes; panics when it does not within `limit`.
async fn wait_closed(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Err(_) => panic!("still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn silent_and_slow_clients_are_closed_after_the_header_timeout() {
    let addr = start_limited(short()).await;
    // Nothing sent at all (before HTTP/1 and HTTP/2 can even be told apart).
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    wait_closed(&mut idle, Duration::from_secs(3)).await;
    // Half an h2 preface.
    let mut half = TcpStream::connect(addr).await.expect("connect");
    half.write_all(b"PRI * HTTP/2.0\r\n").await.expect("write");
    wait_closed(&mut half, Duration::from_secs(3)).await;
    // Headers never finished.
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    wait_closed(&mut slow, Duration::from_secs(3)).await;
    // Idle after a kept-alive request.
    let mut kept = TcpStream::connect(addr).await.expect("connect");
    kept.write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let answer = wait_closed(&mut kept, Duration::from_secs(3)).await;
    assert!(
        String::from_utf8_lossy(&answer).contains("client_certificate=false"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn a_response_in_progress_outlives_the_header_timeout() {
    let addr = start_limited(short()).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let answer = wait_closed(&mut s, Duration::from_secs(3)).await;
    assert!(
        String::from_utf8_lossy(&answer).contains("late"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_still_served() {
    let addr = start_limited(short()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("h2 connects");
    drop(channel);
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_at_accept() {
    let addr = start_limited(Limits {
        max_connections: 1,
        ..Limits::default()
    })
    .await;
    let _first = TcpStream::connect(addr).await.expect("connect");
    // Give the accept loop the first connection before the second arrives.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut second = TcpStream::connect(addr).await.expect("connect");
    let _ = second
        .write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let answer = wait_closed(&mut second, Duration::from_secs(3)).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
}

#[test]
fn the_limit_log_line_is_rate_limited_and_counts_refusals() {
    let mut log = RefusalLog::default();
    let t0 = Instant::now();
    assert_eq!(log.refused(t0), Some(1));
    assert_eq!(log.refused(t0 + Duration::from_secs(1)), None);
    assert_eq!(log.refused(t0 + Duration::from_secs(2)), None);
    assert_eq!(log.refused(t0 + REFUSAL_LOG_EVERY), Some(3));
}

#[test]
fn the_default_limits() {
    assert_eq!(
        Limits::default().header_read_timeout,
        Duration::from_secs(10)
    );
    assert_eq!(Limits::default().max_connections, 10_000);
}

#[tokio::test]
async fn a_plain_client_can_tell_a_tls_server_from_a_plain_one() {
    let pki = Pki::new("probe");
    let (cert, key) = pki.issue("server", &["127.0.0.1"]);
    let files = TlsFiles {
        cert: Some(cert),
        key: Some(key),
        ca: None,
    };
    let tls = start(files.server_config().expect("config")).await;
    let plain = start(None).await;
    let within = Duration::from_secs(3);
    assert!(speaks_tls(&tls.to_string(), within).await);
    assert!(!speaks_tls(&plain.to_string(), within).await);
    // Nobody listening: cannot tell, so not "TLS".
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let gone = closed.local_addr().expect("addr");
    drop(closed);
    assert!(!speaks_tls(&gone.to_string(), within).await);
}

/// Client certificates are verified against the roots current at each handshake: a client of a
/// CA added later is served from then on, one of a CA removed is refused.
#[tokio::test]
async fn swappable_client_roots_apply_from_the_next_handshake() {
    let (old, new) = (Pki::new("swap-old"), Pki::new("swap-new"));
    let (cert, key) = old.issue("server", &["127.0.0.1"]);
    let (old_cert, old_key) = old.issue("agent", &["agent1"]);
    let (new_cert, new_key) = new.issue("agent", &["agent1"]);
    let pem = |p: &Path| std::fs::read(p).expect("read");
    let served = SwappableCert::from_pem(&pem(&cert), &pem(&key)).expect("cert");
    let roots = SwappableClientRoots::new(pem_roots(&pem(&old.ca())).expect("roots")).expect("v");
    let addr = start(Some(
        server_config_swappable(served, roots.clone()).expect("config"),
    ))
    .await;
    let get = |c: &Path, k: &Path| get_peer(addr, client_config(&old.ca(), Some((c, k))));
    let served_with_certificate =
        |r: io::Result<String>| r.is_ok_and(|r| r.contains("client_certificate=true"));
    assert!(served_with_certificate(get(&old_cert, &old_key).await));
    assert!(!served_with_certificate(get(&new_cert, &new_key).await));
    let both = [pem(&new.ca()), pem(&old.ca())].concat();
    roots
        .replace(pem_roots(&both).expect("roots"))
        .expect("replace");
    assert!(served_with_certificate(get(&old_cert, &old_key).await));
    assert!(served_with_certificate(get(&new_cert, &new_key).await));
    roots
        .replace(pem_roots(&pem(&new.ca())).expect("roots"))
        .expect("replace");
    assert!(!served_with_certificate(get(&old_cert, &old_key).await));
    assert!(served_with_certificate(get(&new_cert, &new_key).await));
    let anonymous = get_peer(addr, client_config(&old.ca(), None)).await;
    assert!(anonymous.is_ok_and(|r| r.contains("client_certificate=false")));
}
