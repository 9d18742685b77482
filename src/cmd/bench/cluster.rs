//! Where the simulated agents find the leading master, and the HTTP/2 connections they share
//! to reach it (`--agents-per-connection` agents per connection, opened lazily).

use std::collections::HashMap;

use anyhow::Context;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

/// Where the simulated agents find the leading master, and their HTTP/2 connections to it.
pub(crate) struct Cluster {
    /// The leader's `host:port`: fixed, or followed in ZooKeeper under `--failover`.
    pub leader: watch::Receiver<String>,
    /// Agents sharing one connection.
    per: usize,
    /// Connections by (agent group, address), made lazily: a group whose agents move to a new
    /// leader opens one new connection there.
    pool: std::sync::Mutex<HashMap<(usize, String), Channel>>,
}

impl Cluster {
    /// Agents find the leader in `leader` and share one connection per `per` of them.
    pub fn new(leader: watch::Receiver<String>, per: usize) -> Cluster {
        Cluster {
            leader,
            per,
            pool: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The connection agent `i` uses to reach `address`.
    ///
    /// # Errors
    /// `address` is not a valid endpoint.
    pub fn channel(&self, i: usize, address: &str) -> anyhow::Result<Channel> {
        let key = (i / self.per.max(1), address.to_string());
        let mut pool = self
            .pool
            .lock()
            .map_err(|_| anyhow::anyhow!("the connection pool lock is poisoned"))?;
        if let Some(c) = pool.get(&key) {
            return Ok(c.clone());
        }
        let c = endpoint(address)?.connect_lazy();
        pool.insert(key, c.clone());
        Ok(c)
    }
}

/// The TLS every connection of this run uses (`--tls`), `None`: in clear.
static TLS: std::sync::RwLock<Option<agora_net::tls::ClientTls>> = std::sync::RwLock::new(None);

/// Sets the TLS of the connections made from now on.
pub(super) fn set_tls(tls: Option<agora_net::tls::ClientTls>) {
    if let Ok(mut t) = TLS.write() {
        *t = tls;
    }
}

pub(super) fn endpoint(address: &str) -> anyhow::Result<Endpoint> {
    let tls = TLS.read().ok().and_then(|t| t.clone());
    Ok(agora_net::tls::endpoint(address, tls.as_ref())
        .with_context(|| format!("master address {address}"))?
        .tcp_nodelay(true))
}

/// Joins the master at `address` as an agent would (the agent token from the master's work dir,
/// the CA pinned by its digest, `Certificates/Issue`), and returns the TLS every simulated agent
/// and framework then uses.
pub(super) async fn join(
    work_dir: &std::path::Path,
    address: &str,
) -> anyhow::Result<agora_net::tls::ClientTls> {
    use agora_master::pki;
    let home = pki::home(work_dir, None, None, std::time::Duration::from_secs(5))?;
    let secrets = pki::load_or_create(&home, pki::now()).await?;
    let token = agora_net::pki::JoinToken::parse(&secrets.token(pki::TokenKind::Agent)?)?;
    let joined = agora_net::pki::join(
        address,
        &token,
        &["bench-agent".to_string()],
        std::time::Duration::from_secs(10),
    )
    .await
    .context("joining the master (Certificates/Issue)")?;
    Ok(joined.client())
}

pub(super) async fn connect(address: &str) -> anyhow::Result<Channel> {
    endpoint(address)?
        .connect()
        .await
        .with_context(|| format!("connecting to the master at {address}"))
}
