//! The configuration every framework process (`agora services`, `agora batch`) takes; the binary
//! maps its shared flags onto it one to one.

use std::path::PathBuf;
use std::time::Duration;

/// The configuration every framework process (`agora services`, `agora batch`) takes.
#[derive(Debug, Clone)]
pub struct FrameworkConfig {
    /// `--master`: `host:port` or `zk://…`.
    pub master: String,
    /// `--ip`, `--port`: where the API listens.
    pub bind: std::net::SocketAddr,
    /// `--work-dir`: the state (without `zk`).
    pub work_dir: PathBuf,
    /// `--role`.
    pub role: String,
    /// `--framework-name`.
    pub framework_name: String,
    /// How long the master keeps the framework's tasks while it is away.
    pub failover_timeout: Duration,
    /// `--zk zk://…/path`: state in ZooKeeper and one leader among instances (the others
    /// redirect or proxy to it). `None`: state in `work_dir`, one instance.
    pub zk: Option<String>,
    /// `--zk-session-timeout`: how long ZooKeeper waits for a silent instance before another one
    /// takes over (and how long a leader cut off from ZooKeeper may keep acting).
    pub zk_session_timeout: Duration,
    /// `--principal` and the secret from `--secret-file`, for masters that require credentials.
    pub credential: Option<(String, String)>,
    /// `--advertise`: the `host:port` standbys send clients to (default: the bound address).
    pub advertise: Option<String>,
    /// `--api-token-file`: the API requires `Authorization: Bearer <token>`. `None`: open.
    pub api_token: Option<agora_net::http_auth::ApiToken>,
    /// `--tls-cert`/`--tls-key`: TLS on the API port; `--tls-ca`: TLS to the master, verified
    /// against that CA.
    pub tls: agora_net::tls::TlsFiles,
    /// `--join-token AGORA-1-…` (the framework token): the framework gets a certificate from the
    /// cluster CA at start ([`crate::join::secure`]) instead of `--tls-*` files.
    pub join_token: Option<agora_net::pki::JoinToken>,
    /// Set by [`crate::join::secure`] (never by hand): the certificate joined with `join_token`,
    /// renewed while the framework runs.
    pub issued: Option<std::sync::Arc<crate::join::Credentials>>,
}
