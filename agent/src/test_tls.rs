//! A local HTTPS server with a self-signed certificate, for the tests of HTTPS health checks and
//! fetching.

use std::net::SocketAddr;

use axum::http::StatusCode;
use axum::routing::get;

/// Serves `/ok` (200), `/unavailable` (503) and `/file` (the bytes `payload`) over TLS on
/// 127.0.0.1 until the test ends.
pub async fn self_signed_server(dir: &std::path::Path) -> SocketAddr {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let (cert_file, key_file) = (dir.join("server.pem"), dir.join("server-key.pem"));
    std::fs::write(&cert_file, cert.pem()).expect("write");
    std::fs::write(&key_file, key.serialize_pem()).expect("write");
    let tls = agora_net::tls::TlsFiles {
        cert: Some(cert_file),
        key: Some(key_file),
        ca: None,
    }
    .server_config()
    .expect("server config");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let listener = agora_net::tls::Listener::new(tcp, tls).expect("listener");
    let addr = axum::serve::Listener::local_addr(&listener).expect("addr");
    let router = axum::Router::new()
        .route("/ok", get(|| async { "fine" }))
        .route(
            "/unavailable",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down") }),
        )
        .route("/file", get(|| async { "payload" }));
    tokio::spawn(agora_net::tls::serve(
        listener,
        router,
        std::future::pending(),
    ));
    addr
}
