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

pub(super) fn endpoint(address: &str) -> anyhow::Result<Endpoint> {
    let url = if address.starts_with("http://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    Ok(Endpoint::from_shared(url)
        .with_context(|| format!("master address {address}"))?
        .tcp_nodelay(true))
}

pub(super) async fn connect(address: &str) -> anyhow::Result<Channel> {
    endpoint(address)?
        .connect()
        .await
        .with_context(|| format!("connecting to the master at {address}"))
}
