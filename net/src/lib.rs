//! What every Agora listener and client shares on the network, apart from the wire contract:
//!
//! - [`tls`]: rustls listeners (gRPC and HTTP on one port), client TLS for gRPC, and whether a
//!   caller presented a verified certificate.
//! - [`http_auth`]: the bearer-token middleware every HTTP API shares, reading secret files
//!   (`--api-token-file`) and comparing secrets in constant time.
//! - [`keep_alive`]: the longer idle keep-alive of HTTP/1 connections a handler vouches for
//!   (Mesos schedulers' calls).
//! - [`pki`]: the cluster CA, join tokens that pin it, certificate requests and the pinned first
//!   connection.
//! - [`web_ui`]: the script and stylesheet the master's and the services framework's web UIs share.
#![forbid(unsafe_code)]

pub mod addr;
pub mod http_auth;
pub mod keep_alive;
pub mod pki;
pub mod tls;
pub mod web_ui;
