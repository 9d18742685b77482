//! Finding the leading master.
//!
//! Agents, frameworks and the CLI take `--master` as either a fixed `host:port` or a ZooKeeper URL
//! `zk://h1:2181,h2:2181/agora`. Under ZooKeeper every master holds an ephemeral sequential znode
//! `<path>/masters/json.info_<seq>` whose data is its [`MasterInfoJson`]; the lowest sequence number
//! leads. This layout is part of the public contract: a client in any language can find the leader
//! by listing `<path>/masters` and reading the lowest `json.info_` child.
//!
//! [`Detector::leader`] answers once; [`Detector::watch`] follows the leader: a background task
//! holds a child watch on `<path>/masters` (re-armed after every event) and publishes each change
//! of the leader's address, so that agents and frameworks move to a new leader as soon as
//! ZooKeeper lists it instead of waiting out a backoff against a dead one.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, warn};
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
///
/// The JSON has Apache Mesos's `MasterInfo` shape too, so that Mesos frameworks' and tools'
/// `zk://` detection finds the leader: `address` is `{"hostname", "ip", "port"}`, beside `port`,
/// `pid` (`master@ip:port`) and, for an IPv4 address, Mesos's numeric `ip`. Reading accepts that
/// shape and the older `"address": "host:port"`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MasterInfoJson {
    pub id: String,
    pub hostname: String,
    /// `host:port` serving gRPC and HTTP.
    pub address: String,
    pub version: String,
    pub start_time: f64,
    /// What published it: [`KIND_MASTER`], or `framework:<name>` for a framework instance in its
    /// own election. Absent in nodes written by versions before 0.1 had it.
    pub kind: Option<String>,
}

/// `host:port` → (host, port); no port (or a bad one) is 0.
fn split_host_port(address: &str) -> (String, u16) {
    match address.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse().unwrap_or(0),
        ),
        None => (address.to_string(), 0),
    }
}

impl Serialize for MasterInfoJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (host, port) = split_host_port(&self.address);
        let mut o = serde_json::json!({
            "id": self.id,
            "hostname": self.hostname,
            "address": { "hostname": self.hostname, "ip": host, "port": port },
            "port": port,
            "pid": format!("master@{}:{port}", self.address.rsplit_once(':').map_or(self.address.as_str(), |(h, _)| h)),
            "version": self.version,
            "start_time": self.start_time,
        });
        if let Some(obj) = o.as_object_mut() {
            if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
                // Mesos's uint32 of the address in network byte order, as little-endian hosts
                // (all of Mesos's) read it.
                obj.insert("ip".into(), u32::from_le_bytes(ip.octets()).into());
            }
            if let Some(k) = &self.kind {
                obj.insert("kind".into(), k.clone().into());
            }
        }
        o.serialize(s)
    }
}

impl<'de> Deserialize<'de> for MasterInfoJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            id: String,
            #[serde(default)]
            hostname: String,
            #[serde(default)]
            address: serde_json::Value,
            #[serde(default)]
            port: Option<u16>,
            #[serde(default)]
            version: String,
            #[serde(default)]
            start_time: f64,
            #[serde(default)]
            kind: Option<String>,
        }
        let w = Wire::deserialize(d)?;
        let address = match w.address {
            serde_json::Value::String(a) => a,
            serde_json::Value::Object(o) => {
                let host = o
                    .get("ip")
                    .and_then(|v| v.as_str())
                    .filter(|s| !s.is_empty())
                    .or_else(|| o.get("hostname").and_then(|v| v.as_str()))
                    .ok_or_else(|| D::Error::custom("address has neither ip nor hostname"))?;
                let port = o
                    .get("port")
                    .and_then(|v| v.as_u64())
                    .and_then(|p| u16::try_from(p).ok())
                    .or(w.port)
                    .ok_or_else(|| D::Error::custom("address.port is missing or not a port"))?;
                if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                }
            }
            serde_json::Value::Null => String::new(),
            other => {
                return Err(D::Error::custom(format!(
                    "address: {other} is not an address"
                )))
            }
        };
        Ok(MasterInfoJson {
            id: w.id,
            hostname: w.hostname,
            address,
            version: w.version,
            start_time: w.start_time,
            kind: w.kind,
        })
    }
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

impl Detector {
    /// Follows the leader from now on: see [`LeaderWatch`]. For a fixed `host:port` the leader is
    /// that address and never changes; under ZooKeeper a background task with a session of its
    /// own watches `<path>/masters` until the [`LeaderWatch`] is dropped.
    ///
    /// Must be called inside a tokio runtime.
    pub fn watch(&self) -> LeaderWatch {
        match &self.spec {
            MasterSpec::Fixed(addr) => {
                let (tx, rx) = watch::channel(Some(addr.clone()));
                LeaderWatch {
                    rx,
                    _fixed: Some(tx),
                    task: None,
                }
            }
            MasterSpec::ZooKeeper { servers, path } => {
                let (tx, rx) = watch::channel(None);
                let task = tokio::spawn(follow_leader(
                    servers.clone(),
                    path.clone(),
                    self.session_timeout,
                    tx,
                ));
                LeaderWatch {
                    rx,
                    _fixed: None,
                    task: Some(task),
                }
            }
        }
    }
}

/// The leader's address as ZooKeeper lists it, kept up to date by a background task (see
/// [`Detector::watch`]); dropping it stops the task.
///
/// `None` means no leader is known: none is elected, or the watch has not read ZooKeeper yet.
/// While ZooKeeper cannot be reached the last known leader is kept (losing our own session says
/// nothing about the masters).
pub struct LeaderWatch {
    rx: watch::Receiver<Option<String>>,
    /// Keeps the channel open for a fixed address, so that [`LeaderWatch::changed`] waits forever.
    _fixed: Option<watch::Sender<Option<String>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for LeaderWatch {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl LeaderWatch {
    /// The leader's address now (`None`: not known).
    pub fn current(&self) -> Option<String> {
        self.rx.borrow().clone()
    }

    /// Waits for the next change of the leader's address and returns the new value (`None`: the
    /// leader's znode is gone and no other master is listed). Never resolves for a fixed address.
    /// Cancel-safe: a change that happens while nobody waits is returned by the next call.
    pub async fn changed(&mut self) -> Option<String> {
        if self.rx.changed().await.is_err() {
            // The sender is gone (the background task ended, which it does not do on its own):
            // nothing will change any more.
            std::future::pending::<()>().await;
        }
        self.rx.borrow_and_update().clone()
    }

    /// Marks the current value as seen, so that [`LeaderWatch::changed`] waits for the next
    /// change; returns it.
    pub fn seen(&mut self) -> Option<String> {
        self.rx.borrow_and_update().clone()
    }

    /// A receiver of the same values, for callers that want `tokio::sync::watch` itself.
    pub fn receiver(&self) -> watch::Receiver<Option<String>> {
        self.rx.clone()
    }
}

/// How long [`follow_leader`] waits before it tries ZooKeeper again after an error.
const WATCH_RETRY: Duration = Duration::from_millis(500);

/// The background task of [`Detector::watch`]: list `<path>/masters` with a child watch, publish
/// the lowest node's address, wait for the watch to fire, again. A missing directory is watched
/// for its creation. A broken session is replaced; until then the last value stays.
async fn follow_leader(
    servers: String,
    path: String,
    session_timeout: Duration,
    tx: watch::Sender<Option<String>>,
) {
    let dir = format!("{path}/masters");
    let mut client: Option<zk::Client> = None;
    loop {
        if tx.is_closed() {
            return;
        }
        let usable = client.as_ref().is_some_and(|c| {
            !matches!(
                c.state(),
                zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed
            )
        });
        if !usable {
            match connect(&servers, session_timeout).await {
                Ok(c) => client = Some(c),
                Err(e) => {
                    debug!(error = %e, "leader watch: ZooKeeper not reachable; retrying");
                    tokio::time::sleep(WATCH_RETRY).await;
                    continue;
                }
            }
        }
        let Some(c) = client.as_ref() else { continue };
        let watcher = match c.list_and_watch_children(&dir).await {
            Ok((children, watcher)) => {
                match lowest_address(c, &servers, &dir, children).await {
                    Ok(leader) => publish(&tx, leader),
                    // Nobody can reach that leader; the next change of the children may help.
                    Err(e @ DetectError::BadNode { .. }) => {
                        warn!(error = %e, "leader watch: the leader's znode is unusable");
                        publish(&tx, None);
                    }
                    Err(e) => {
                        debug!(error = %e, "leader watch: ZooKeeper error; retrying");
                        client = None;
                        tokio::time::sleep(WATCH_RETRY).await;
                        continue;
                    }
                }
                watcher
            }
            Err(zk::Error::NoNode) => match c.check_and_watch_stat(&dir).await {
                // Created between the two calls: list it at once.
                Ok((Some(_), _)) => continue,
                Ok((None, watcher)) => {
                    publish(&tx, None);
                    watcher
                }
                Err(e) => {
                    debug!(error = %e, "leader watch: ZooKeeper error; retrying");
                    client = None;
                    tokio::time::sleep(WATCH_RETRY).await;
                    continue;
                }
            },
            Err(e) => {
                debug!(error = %e, "leader watch: ZooKeeper error; retrying");
                client = None;
                tokio::time::sleep(WATCH_RETRY).await;
                continue;
            }
        };
        tokio::select! {
            event = watcher.changed() => {
                if event.session_state.is_terminated() {
                    client = None;
                }
            }
            _ = tx.closed() => return,
        }
    }
}

/// Publishes `leader` if it differs from the last value.
fn publish(tx: &watch::Sender<Option<String>>, leader: Option<String>) {
    tx.send_if_modified(|l| {
        if *l == leader {
            return false;
        }
        debug!(?leader, "leader changed");
        *l = leader;
        true
    });
}

/// The address in the lowest election znode among `children` of `dir` that can still be read.
///
/// # Errors
/// ZooKeeper errors; [`DetectError::BadNode`].
async fn lowest_address(
    client: &zk::Client,
    servers: &str,
    dir: &str,
    mut children: Vec<String>,
) -> Result<Option<String>, DetectError> {
    children.retain(|c| sequence_of(c).is_some());
    children.sort_by_key(|c| sequence_of(c).unwrap_or(u64::MAX));
    for node in children {
        let full = format!("{dir}/{node}");
        match client.get_data(&full).await {
            Ok((data, _)) => {
                let info: MasterInfoJson =
                    serde_json::from_slice(&data).map_err(|e| DetectError::BadNode {
                        node: full.clone(),
                        message: e.to_string(),
                    })?;
                return Ok(Some(info.address));
            }
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

    #[tokio::test]
    async fn a_fixed_address_is_the_leader_and_never_changes() {
        let d = Detector::new("10.0.0.4:5050").expect("fixed");
        let mut w = d.watch();
        assert_eq!(w.current().as_deref(), Some("10.0.0.4:5050"));
        let change = tokio::time::timeout(Duration::from_millis(200), w.changed()).await;
        assert!(change.is_err(), "a fixed leader changed: {change:?}");
    }

    /// Against the real ZooKeeper of `scripts/test` (`AGORA_TEST_ZK`, default 127.0.0.1:2181).
    #[tokio::test]
    async fn the_watch_follows_the_lowest_znode_within_a_second() {
        let servers = std::env::var("AGORA_TEST_ZK").unwrap_or_else(|_| "127.0.0.1:2181".into());
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = format!("/agora-test-detector-watch-{unique}");
        let client = connect(&servers, Duration::from_secs(10))
            .await
            .expect("ZooKeeper at AGORA_TEST_ZK");
        let detector = Detector::new(&format!("zk://{servers}{path}")).expect("spec");
        // Watching before any master exists: no leader, then the first one.
        let mut w = detector.watch();
        let soon = Duration::from_secs(1);
        let dir = format!("{path}/masters");
        let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        let ephemeral = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
        // Let the watch see the missing directory first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(w.seen(), None);
        client.mkdir(&dir, &open).await.expect("mkdir");
        let mut nodes = Vec::new();
        let join = |port: u16| {
            let info = MasterInfoJson {
                address: format!("127.0.0.1:{port}"),
                ..Default::default()
            };
            let data = serde_json::to_vec(&info).expect("json");
            let client = &client;
            let (dir, ephemeral) = (&dir, &ephemeral);
            async move {
                let (_, seq) = client
                    .create(&format!("{dir}/{MASTER_NODE_PREFIX}"), &data, ephemeral)
                    .await
                    .expect("create");
                format!("{dir}/{MASTER_NODE_PREFIX}{seq}")
            }
        };
        nodes.push(join(5051).await);
        nodes.push(join(5052).await);
        let first = tokio::time::timeout(soon, async {
            loop {
                if let Some(a) = w.changed().await {
                    return a;
                }
            }
        })
        .await
        .expect("the first master within 1 s");
        assert_eq!(first, "127.0.0.1:5051");
        // A standby joining is no change of leader.
        nodes.push(join(5053).await);
        let quiet = tokio::time::timeout(Duration::from_millis(300), w.changed()).await;
        assert!(
            quiet.is_err(),
            "a standby joining changed the leader: {quiet:?}"
        );
        // The leader's znode goes (its session expired): the next one leads, at once.
        client.delete(&nodes[0], None).await.expect("delete");
        let next = tokio::time::timeout(soon, w.changed())
            .await
            .expect("the new leader within 1 s");
        assert_eq!(next.as_deref(), Some("127.0.0.1:5052"));
        client.delete(&nodes[1], None).await.expect("delete");
        let last = tokio::time::timeout(soon, w.changed())
            .await
            .expect("the last master within 1 s");
        assert_eq!(last.as_deref(), Some("127.0.0.1:5053"));
        client.delete(&nodes[2], None).await.expect("delete");
        let none = tokio::time::timeout(soon, w.changed())
            .await
            .expect("no leader within 1 s");
        assert_eq!(none, None);
        client.delete(&dir, None).await.expect("cleanup");
        client.delete(&path, None).await.expect("cleanup");
    }

    #[test]
    fn election_nodes_sort_by_sequence_not_by_name() {
        assert_eq!(sequence_of("json.info_0000000010"), Some(10));
        assert_eq!(sequence_of("registry"), None);
    }

    #[test]
    fn master_info_json_has_mesos_shape_and_reads_both_forms() {
        let info = MasterInfoJson {
            id: "abc".into(),
            hostname: "m1".into(),
            address: "127.0.0.1:5050".into(),
            version: "0.1.0".into(),
            start_time: 1.5,
            kind: Some(KIND_MASTER.into()),
        };
        let v = serde_json::to_value(&info).expect("json");
        assert_eq!(
            v["address"],
            serde_json::json!({"hostname": "m1", "ip": "127.0.0.1", "port": 5050})
        );
        assert_eq!(v["pid"], "master@127.0.0.1:5050");
        assert_eq!(v["port"], 5050);
        // 127.0.0.1 in network byte order read as a little-endian uint32, as Mesos writes it.
        assert_eq!(v["ip"], 16_777_343u32);
        let back: MasterInfoJson = serde_json::from_value(v).expect("read back");
        assert_eq!(back, info);
        let old: MasterInfoJson = serde_json::from_str(
            r#"{"id":"abc","hostname":"m1","address":"10.0.0.4:5050","version":"0.1.0","start_time":1.0}"#,
        )
        .expect("old form");
        assert_eq!(old.address, "10.0.0.4:5050");
        assert_eq!(old.kind, None);
        let named: MasterInfoJson =
            serde_json::from_str(r#"{"address":{"hostname":"m2","port":5051}}"#).expect("named");
        assert_eq!(named.address, "m2:5051");
    }
}
