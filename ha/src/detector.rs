//! Finding the leading master.
//!
//! Agents, frameworks and the CLI take `--master` as either a fixed `host:port` or a ZooKeeper URL
//! `zk://h1:2181,h2:2181/agora`. Under ZooKeeper every master holds an ephemeral sequential znode
//! `<path>/masters/json.info_<seq>` whose data is its [`MasterInfoJson`]; the lowest sequence number
//! leads. This layout is part of the public contract: a client in any language can find the leader
//! by listing `<path>/masters` and reading the lowest `json.info_` child.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::debug;
use zookeeper_client as zk;

use agora_proto::v1;

/// Prefix of the masters' election znodes.
pub const MASTER_NODE_PREFIX: &str = "json.info_";

/// Why the leader could not be found.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The `--master` value is neither `host:port` nor `zk://hosts/path`.
    #[error("--master '{spec}': {problem}")]
    BadSpec { spec: String, problem: String },
    /// ZooKeeper could not be reached or answered an error.
    #[error("ZooKeeper at {servers}: {message}")]
    ZooKeeper { servers: String, message: String },
    /// No master has been elected (yet).
    #[error("no leading master is registered under {path} in ZooKeeper yet")]
    NoLeader { path: String },
    /// A master's znode does not hold valid MasterInfo JSON.
    #[error("master znode {node} holds invalid JSON: {message}")]
    BadNode { node: String, message: String },
}

/// A master as published in ZooKeeper (JSON, camel-free for readability by other languages).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MasterInfoJson {
    pub id: String,
    pub hostname: String,
    /// `host:port` serving gRPC and HTTP.
    pub address: String,
    pub version: String,
    pub start_time: f64,
    /// What published it: [`KIND_MASTER`], or `framework:<name>` for a framework instance in its
    /// own election. Absent in nodes written by versions before 0.1 had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// [`MasterInfoJson::kind`] of a master.
pub const KIND_MASTER: &str = "master";

impl MasterInfoJson {
    /// Whether this node was published by a master (older masters, without `kind`, are told apart
    /// by their 12-character ids; framework instances used 32).
    pub fn is_master(&self) -> bool {
        match &self.kind {
            Some(k) => k == KIND_MASTER,
            None => self.id.len() == 12,
        }
    }
}

impl From<&v1::MasterInfo> for MasterInfoJson {
    fn from(m: &v1::MasterInfo) -> Self {
        MasterInfoJson {
            id: m.id.clone(),
            hostname: m.hostname.clone(),
            address: m.address.clone(),
            version: m.version.clone(),
            start_time: m.start_time,
            kind: Some(KIND_MASTER.to_string()),
        }
    }
}

impl From<MasterInfoJson> for v1::MasterInfo {
    fn from(m: MasterInfoJson) -> Self {
        v1::MasterInfo {
            id: m.id,
            hostname: m.hostname,
            address: m.address,
            version: m.version,
            start_time: m.start_time,
        }
    }
}

/// A parsed `--master` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterSpec {
    /// `host:port` (or `http://host:port`).
    Fixed(String),
    /// `zk://servers/path`.
    ZooKeeper { servers: String, path: String },
}

impl MasterSpec {
    /// Parses `host:port`, `http://host:port` or `zk://h1:2181,h2:2181/agora`.
    ///
    /// # Errors
    /// [`DetectError::BadSpec`] saying what is wrong.
    pub fn parse(spec: &str) -> Result<Self, DetectError> {
        let bad = |problem: &str| DetectError::BadSpec {
            spec: spec.to_string(),
            problem: problem.to_string(),
        };
        let spec_trim = spec.trim();
        if let Some(rest) = spec_trim.strip_prefix("zk://") {
            let (servers, path) = rest
                .split_once('/')
                .ok_or_else(|| bad("a ZooKeeper URL needs a path: zk://h1:2181,h2:2181/agora"))?;
            if servers.is_empty() {
                return Err(bad("no ZooKeeper servers before the path"));
            }
            if servers.split(',').any(|s| !s.contains(':')) {
                return Err(bad("each ZooKeeper server needs a port, e.g. zk1:2181"));
            }
            let path = format!("/{}", path.trim_matches('/'));
            if path == "/" {
                return Err(bad("the ZooKeeper path must not be empty, e.g. /agora"));
            }
            return Ok(MasterSpec::ZooKeeper {
                servers: servers.to_string(),
                path,
            });
        }
        let addr = spec_trim
            .strip_prefix("http://")
            .or_else(|| spec_trim.strip_prefix("https://"))
            .unwrap_or(spec_trim)
            .trim_end_matches('/');
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(MasterSpec::Fixed(addr.to_string()))
            }
            _ => Err(bad(
                "expected host:port (e.g. 10.0.0.4:5050) or zk://h1:2181,h2:2181/agora",
            )),
        }
    }
}

/// Finds the leading master's address, keeping one ZooKeeper session open between calls.
pub struct Detector {
    spec: MasterSpec,
    client: Option<zk::Client>,
    session_timeout: Duration,
}

impl Detector {
    /// # Errors
    /// [`DetectError::BadSpec`].
    pub fn new(spec: &str) -> Result<Self, DetectError> {
        Ok(Detector {
            spec: MasterSpec::parse(spec)?,
            client: None,
            session_timeout: Duration::from_secs(10),
        })
    }

    pub fn spec(&self) -> &MasterSpec {
        &self.spec
    }

    async fn client(&mut self, servers: &str) -> Result<&zk::Client, DetectError> {
        let usable = self.client.as_ref().is_some_and(|c| {
            !matches!(
                c.state(),
                zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed
            )
        });
        if !usable {
            let c = connect(servers, self.session_timeout).await?;
            self.client = Some(c);
        }
        self.client.as_ref().ok_or_else(|| DetectError::ZooKeeper {
            servers: servers.to_string(),
            message: "no session".into(),
        })
    }

    /// The leader's `host:port` now.
    ///
    /// # Errors
    /// [`DetectError::NoLeader`] when none is elected; ZooKeeper errors.
    pub async fn leader(&mut self) -> Result<String, DetectError> {
        match self.spec.clone() {
            MasterSpec::Fixed(addr) => Ok(addr),
            MasterSpec::ZooKeeper { servers, path } => {
                let client = self.client(&servers).await?;
                match leader_info(client, &servers, &path).await {
                    Ok(Some(info)) => Ok(info.address),
                    Ok(None) => Err(DetectError::NoLeader { path }),
                    Err(e) => {
                        // A broken session is replaced on the next call.
                        self.client = None;
                        Err(e)
                    }
                }
            }
        }
    }

    /// Waits until a leader is known (polling ZooKeeper every 250 ms), up to `within`.
    ///
    /// # Errors
    /// The last error when `within` passes.
    pub async fn wait_for_leader(&mut self, within: Duration) -> Result<String, DetectError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match self.leader().await {
                Ok(a) => return Ok(a),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(e) => debug!(error = %e, "no leader yet"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Opens a ZooKeeper session.
///
/// # Errors
/// [`DetectError::ZooKeeper`].
pub async fn connect(servers: &str, session_timeout: Duration) -> Result<zk::Client, DetectError> {
    zk::Client::connector()
        .with_session_timeout(session_timeout)
        .with_connection_timeout(Duration::from_secs(5))
        .connect(servers)
        .await
        .map_err(|e| DetectError::ZooKeeper {
            servers: servers.to_string(),
            message: e.to_string(),
        })
}

/// The sequence number of an election znode name, if it is one.
pub fn sequence_of(name: &str) -> Option<u64> {
    name.strip_prefix(MASTER_NODE_PREFIX)?.parse().ok()
}

/// The election znodes under `<path>/masters`, lowest sequence first.
///
/// # Errors
/// ZooKeeper errors (a missing directory is an empty list).
pub async fn master_nodes(
    client: &zk::Client,
    servers: &str,
    path: &str,
) -> Result<Vec<String>, DetectError> {
    let dir = format!("{path}/masters");
    let mut children = match client.list_children(&dir).await {
        Ok(c) => c,
        Err(zk::Error::NoNode) => return Ok(Vec::new()),
        Err(e) => {
            return Err(DetectError::ZooKeeper {
                servers: servers.to_string(),
                message: e.to_string(),
            })
        }
    };
    children.retain(|c| sequence_of(c).is_some());
    children.sort_by_key(|c| sequence_of(c).unwrap_or(u64::MAX));
    Ok(children)
}

/// The leading master's info, or `None` when no master is registered.
///
/// # Errors
/// ZooKeeper errors; [`DetectError::BadNode`].
pub async fn leader_info(
    client: &zk::Client,
    servers: &str,
    path: &str,
) -> Result<Option<MasterInfoJson>, DetectError> {
    for node in master_nodes(client, servers, path).await? {
        let full = format!("{path}/masters/{node}");
        match client.get_data(&full).await {
            Ok((data, _)) => {
                let info: MasterInfoJson =
                    serde_json::from_slice(&data).map_err(|e| DetectError::BadNode {
                        node: full.clone(),
                        message: e.to_string(),
                    })?;
                return Ok(Some(info));
            }
            // It went away between the listing and the read: the next one leads.
            Err(zk::Error::NoNode) => continue,
            Err(e) => {
                return Err(DetectError::ZooKeeper {
                    servers: servers.to_string(),
                    message: e.to_string(),
                })
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_or_say_what_is_wrong() {
        assert_eq!(
            MasterSpec::parse("10.0.0.4:5050").expect("fixed"),
            MasterSpec::Fixed("10.0.0.4:5050".into())
        );
        assert_eq!(
            MasterSpec::parse("http://m1:5050/").expect("fixed"),
            MasterSpec::Fixed("m1:5050".into())
        );
        assert_eq!(
            MasterSpec::parse("zk://z1:2181,z2:2181/agora/").expect("zk"),
            MasterSpec::ZooKeeper {
                servers: "z1:2181,z2:2181".into(),
                path: "/agora".into()
            }
        );
        for (bad, says) in [
            ("zk://z1:2181", "needs a path"),
            ("zk://z1/agora", "needs a port"),
            ("zk://z1:2181/", "must not be empty"),
            ("m1", "expected host:port"),
            ("m1:http", "expected host:port"),
        ] {
            let err = MasterSpec::parse(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn election_nodes_sort_by_sequence_not_by_name() {
        assert_eq!(sequence_of("json.info_0000000010"), Some(10));
        assert_eq!(sequence_of("registry"), None);
    }
}
