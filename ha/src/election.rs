//! Leader election on ZooKeeper, and losing it safely.
//!
//! Each master creates an ephemeral sequential znode `<path>/masters/json.info_<seq>` holding its
//! MasterInfo JSON; the lowest sequence leads, every other master watches its predecessor (no herd
//! when the leader dies). The leader also publishes itself as `<path>/json.info_<seq>`, the layout
//! Apache Mesos's masters use, for Mesos frameworks' `zk://` detection. A leader whose session expires, or that stays disconnected longer than a
//! third of the session timeout, has lost leadership: [`Election::lost`] resolves and the caller
//! stops acting (the binary exits non-zero for its supervisor to restart it) — it never goes on
//! offering, so two masters never offer at once. State writes are also fenced on the leader's
//! znode (see [`crate::zk_store`]).
//!
//! [`Contender`] is what a process that wants to lead uses: [`Standalone`] leads at once with a
//! local store, [`ZooKeeper`] campaigns here. Either yields a [`Term`]: the store to write while
//! leading and a future that resolves when leadership is lost.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::detector::{self, MasterInfoJson, MasterSpec, MASTER_NODE_PREFIX};
use crate::store::StateStore;
use tracing::{info, warn};
use zookeeper_client as zk;

/// Why an election step failed.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error("ZooKeeper at {servers}: {message}")]
    ZooKeeper { servers: String, message: String },
    #[error("lost the ZooKeeper session: {0}")]
    Lost(String),
    /// The `--zk` value is not a `zk://host:port,…/path` URL.
    #[error("{0}")]
    BadUrl(String),
    /// The path belongs to the masters (a framework instance must not register where agents look
    /// for masters).
    #[error("{0}")]
    ForeignPath(String),
}

fn zookeeper_connected(connected: bool) {
    metrics::gauge!("agora_master_zookeeper_connected").set(if connected { 1.0 } else { 0.0 });
}

/// This master's candidacy.
pub struct Election {
    client: zk::Client,
    servers: String,
    path: String,
    node: String,
    session_timeout: Duration,
    /// The leader's node for Mesos frameworks ([`Election::publish_mesos_leader`]), once made.
    mesos_node: std::sync::Mutex<Option<String>>,
}

impl Election {
    /// Connects and creates this master's election znode.
    ///
    /// # Errors
    /// [`ElectionError::ZooKeeper`].
    pub async fn join(
        servers: &str,
        path: &str,
        me: &MasterInfoJson,
        session_timeout: Duration,
    ) -> Result<Self, ElectionError> {
        let zk_err = |e: &dyn std::fmt::Display| ElectionError::ZooKeeper {
            servers: servers.to_string(),
            message: e.to_string(),
        };
        let client = detector::connect(servers, session_timeout)
            .await
            .map_err(|e| zk_err(&e))?;
        let dir = format!("{path}/masters");
        if !me.is_master() {
            refuse_a_masters_path(&client, servers, path, &dir).await?;
        }
        client
            .mkdir(
                &dir,
                &zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all()),
            )
            .await
            .map_err(|e| zk_err(&e))?;
        let data = serde_json::to_vec(me).map_err(|e| zk_err(&e))?;
        let (_, seq) = client
            .create(
                &format!("{dir}/{MASTER_NODE_PREFIX}"),
                &data,
                &zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all()),
            )
            .await
            .map_err(|e| zk_err(&e))?;
        let node = format!("{MASTER_NODE_PREFIX}{seq}");
        info!(%node, "joined the master election");
        Ok(Election {
            client,
            servers: servers.to_string(),
            path: path.to_string(),
            node,
            session_timeout,
            mesos_node: std::sync::Mutex::new(None),
        })
    }

    /// [`Election::join`], retried every `retry` until ZooKeeper answers. A process restarted by
    /// its supervisor while ZooKeeper is away must wait for it, not exit and crash-loop; each
    /// failed attempt is logged so that an operator sees what it waits for.
    ///
    /// # Errors
    /// [`ElectionError::ForeignPath`]: no retry can make it right.
    pub async fn join_when_reachable(
        servers: &str,
        path: &str,
        me: &MasterInfoJson,
        session_timeout: Duration,
        retry: Duration,
    ) -> Result<Self, ElectionError> {
        let mut attempts = 0u32;
        loop {
            match Self::join(servers, path, me, session_timeout).await {
                Ok(e) => {
                    if attempts > 0 {
                        info!(
                            %servers,
                            attempts,
                            "ZooKeeper is reachable again: joined the election"
                        );
                    }
                    return Ok(e);
                }
                Err(e @ ElectionError::ForeignPath(_)) => return Err(e),
                Err(e) => {
                    attempts += 1;
                    warn!(
                        error = %e,
                        retry_in = ?retry,
                        attempts,
                        "waiting for ZooKeeper before joining the election"
                    );
                    tokio::time::sleep(retry).await;
                }
            }
        }
    }

    pub fn client(&self) -> &zk::Client {
        &self.client
    }

    /// Full path of this master's election znode (the fence of registry writes).
    pub fn node_path(&self) -> String {
        format!("{}/masters/{}", self.path, self.node)
    }

    /// Waits until this master leads. `on_leader` is told the current leader's address while it
    /// waits (standby masters redirect to it).
    ///
    /// # Errors
    /// [`ElectionError::Lost`] if this master's znode disappears (its session expired).
    pub async fn wait_to_lead(
        &self,
        on_leader: &(dyn Fn(Option<String>) + Send + Sync),
    ) -> Result<(), ElectionError> {
        loop {
            let nodes = detector::master_nodes(&self.client, &self.servers, &self.path)
                .await
                .map_err(|e| ElectionError::ZooKeeper {
                    servers: self.servers.clone(),
                    message: e.to_string(),
                })?;
            let Some(pos) = nodes.iter().position(|n| *n == self.node) else {
                return Err(ElectionError::Lost(format!(
                    "election znode {} is gone",
                    self.node_path()
                )));
            };
            if pos == 0 {
                on_leader(None);
                return Ok(());
            }
            let leader = detector::leader_info(&self.client, &self.servers, &self.path)
                .await
                .ok()
                .flatten()
                .map(|i| i.address);
            on_leader(leader);
            let predecessor = format!("{}/masters/{}", self.path, nodes[pos - 1]);
            match self.client.check_and_watch_stat(&predecessor).await {
                Ok((Some(_), watcher)) => {
                    // Re-check now and then too: the leader can change without our predecessor
                    // changing, and standbys must point at the right one.
                    tokio::select! {
                        _ = watcher.changed() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Ok((None, _)) => {}
                Err(e) => {
                    return Err(ElectionError::ZooKeeper {
                        servers: self.servers.clone(),
                        message: e.to_string(),
                    })
                }
            }
        }
    }

    /// Publishes the leader where Apache Mesos's own masters publish themselves, for Mesos
    /// frameworks' detectors (pymesos, mesoshttp, avmesos): `zk://…<path>` lists `<path>` and
    /// reads its lowest `json.info_` child. Only the leader publishes there, so that the lowest
    /// (the only) one is the leader; the node is ephemeral and of this session, so it goes when
    /// the leader's election node goes. A failure is logged: Agora's own detectors read
    /// `<path>/masters`.
    pub async fn publish_mesos_leader(&self, me: &MasterInfoJson) {
        let data = match serde_json::to_vec(me) {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "could not encode the MasterInfo for Mesos frameworks");
                return;
            }
        };
        let dir = self.path.trim_end_matches('/');
        let prefix = format!("{dir}/{MASTER_NODE_PREFIX}");
        let mode = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
        let create = self.client.create(&prefix, &data, &mode);
        match tokio::time::timeout(RESIGN_TIMEOUT, create).await {
            Ok(Ok((_, seq))) => {
                let node = format!("{prefix}{seq}");
                info!(%node, "published the leader for Mesos frameworks");
                if let Ok(mut published) = self.mesos_node.lock() {
                    *published = Some(node);
                }
            }
            Ok(Err(e)) => {
                warn!(error = %e, path = %self.path, "could not publish the leader for Mesos frameworks")
            }
            Err(_) => {
                warn!(path = %self.path, "ZooKeeper did not answer in time; the leader is not published for Mesos frameworks")
            }
        }
    }

    /// Deletes this contender's election znode, so that the next one in line leads at once (its
    /// watch on this node fires), instead of after this session's timeout. Bounded by
    /// [`RESIGN_TIMEOUT`]; a failure is logged (the node then goes with the session).
    pub async fn resign(&self) {
        let published = self.mesos_node.lock().ok().and_then(|mut p| p.take());
        if let Some(node) = published {
            if let Ok(Err(e)) =
                tokio::time::timeout(RESIGN_TIMEOUT, self.client.delete(&node, None)).await
            {
                warn!(%node, error = %e, "could not delete the leader's node for Mesos frameworks");
            }
        }
        let node = self.node_path();
        match tokio::time::timeout(RESIGN_TIMEOUT, self.client.delete(&node, None)).await {
            Ok(Ok(())) => info!(%node, "left the election"),
            Ok(Err(e)) => {
                warn!(%node, error = %e, "could not leave the election; it ends with the session")
            }
            Err(_) => {
                warn!(%node, "ZooKeeper did not answer in time; the election node ends with the session")
            }
        }
    }

    /// Resolves when this master must stop acting as leader: its session expired or closed, or it
    /// stayed disconnected past a third of the session timeout.
    pub async fn lost(&self) -> ElectionError {
        let grace = self.session_timeout / 3;
        let mut states = self.client.state_watcher();
        zookeeper_connected(true);
        loop {
            let state = states.changed().await;
            zookeeper_connected(matches!(
                state,
                zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly
            ));
            match state {
                zk::SessionState::Expired
                | zk::SessionState::Closed
                | zk::SessionState::AuthFailed => {
                    return ElectionError::Lost("the ZooKeeper session ended".into())
                }
                zk::SessionState::Disconnected => {
                    warn!(
                        ?grace,
                        "disconnected from ZooKeeper; stepping down unless it comes back"
                    );
                    let back = tokio::time::timeout(grace, async {
                        loop {
                            match states.changed().await {
                                zk::SessionState::SyncConnected
                                | zk::SessionState::ConnectedReadOnly => return true,
                                zk::SessionState::Disconnected => continue,
                                _ => return false,
                            }
                        }
                    })
                    .await;
                    if back != Ok(true) {
                        return ElectionError::Lost(format!(
                            "disconnected from ZooKeeper for more than {grace:?}"
                        ));
                    }
                    info!("reconnected to ZooKeeper");
                    zookeeper_connected(true);
                }
                _ => {}
            }
        }
    }
}

/// Refuses to join the election at `path` when masters hold it: either a node under
/// `<path>/masters` is a master's, or `<path>/registry` holds a master's registry.
async fn refuse_a_masters_path(
    client: &zk::Client,
    servers: &str,
    path: &str,
    dir: &str,
) -> Result<(), ElectionError> {
    let refuse = || {
        ElectionError::ForeignPath(format!(
            "the ZooKeeper path {path} at {servers} belongs to the masters (agents look for the \
             leading master there): give this framework a path of its own, e.g. --zk \
             zk://{servers}{path}-frameworks"
        ))
    };
    if let Ok(children) = client.list_children(dir).await {
        for child in children
            .iter()
            .filter(|c| c.starts_with(MASTER_NODE_PREFIX))
        {
            if let Ok((data, _)) = client.get_data(&format!("{dir}/{child}")).await {
                if serde_json::from_slice::<MasterInfoJson>(&data).is_ok_and(|m| m.is_master()) {
                    return Err(refuse());
                }
            }
        }
    }
    if let Ok((data, _)) = client.get_data(&format!("{path}/registry")).await {
        // The manifest of a chunked document does not say whose it is; the first chunk does.
        if let Ok(manifest) = serde_json::from_slice::<serde_json::Value>(&data) {
            let generation = manifest["generation"].as_u64().unwrap_or(0);
            if let Ok((chunk, _)) = client
                .get_data(&format!("{path}/registry/g{generation}-0"))
                .await
            {
                let head = String::from_utf8_lossy(&chunk[..chunk.len().min(64)]).to_string();
                if head.starts_with("{\"agents\"") || head.starts_with("{\"gone_agents\"") {
                    return Err(refuse());
                }
            }
        }
    }
    Ok(())
}

/// A future that resolves when a leadership term ends, with why.
pub type Lost = Pin<Box<dyn Future<Output = ElectionError> + Send>>;

/// Told the leading contender's address (`None`: this one, or nobody yet) while campaigning.
pub type Observer = Arc<dyn Fn(Option<String>) + Send + Sync>;

/// Gives leadership up at once (a planned stop): the next contender leads without waiting for this
/// one's session to time out.
pub type Resign = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// One leadership term: the store to keep the durable state in (fenced on this term where the
/// store supports it), a future that resolves when the term ends, and how to end it on purpose.
/// Whoever holds the term must stop acting when `lost` resolves, and stop writing before calling
/// `resign`.
pub struct Term {
    pub store: Box<dyn StateStore>,
    pub lost: Lost,
    pub resign: Resign,
}

/// How long a resignation may take before the process stops anyway (ZooKeeper then removes the
/// node when the session times out).
pub const RESIGN_TIMEOUT: Duration = Duration::from_secs(2);

/// Something that campaigns for leadership.
pub trait Contender: Send {
    /// Waits until this contender leads (telling `observe` who leads meanwhile).
    ///
    /// # Errors
    /// [`ElectionError`] when the campaign cannot go on (its ZooKeeper session ended).
    fn campaign(
        self: Box<Self>,
        observe: Observer,
    ) -> Pin<Box<dyn Future<Output = Result<Term, ElectionError>> + Send>>;
}

/// The only contender: leads at once with `store`, and never loses (standalone and `agora local`).
pub struct Standalone {
    pub store: Box<dyn StateStore>,
}

impl Contender for Standalone {
    fn campaign(
        self: Box<Self>,
        observe: Observer,
    ) -> Pin<Box<dyn Future<Output = Result<Term, ElectionError>> + Send>> {
        Box::pin(async move {
            observe(None);
            Ok(Term {
                store: self.store,
                lost: Box::pin(std::future::pending()),
                resign: Box::new(|| Box::pin(async {})),
            })
        })
    }
}

/// A contender in a ZooKeeper election (see the module documentation). Its term's store is the
/// chunked [`crate::zk_store::ZkStore`] under the election's path, fenced on its znode.
pub struct ZooKeeper {
    servers: String,
    path: String,
    me: MasterInfoJson,
    session_timeout: Duration,
}

impl ZooKeeper {
    /// A contender for the election at `url` (`zk://h1:2181,h2:2181/agora`), published as `me`.
    ///
    /// # Errors
    /// [`ElectionError::BadUrl`] naming the value.
    pub fn new(
        url: &str,
        me: MasterInfoJson,
        session_timeout: Duration,
    ) -> Result<ZooKeeper, ElectionError> {
        let spec = MasterSpec::parse(url).map_err(|e| ElectionError::BadUrl(e.to_string()))?;
        let MasterSpec::ZooKeeper { servers, path } = spec else {
            return Err(ElectionError::BadUrl(format!(
                "--zk '{url}' must be a zk://host:port,…/path URL"
            )));
        };
        Ok(ZooKeeper {
            servers,
            path,
            me,
            session_timeout,
        })
    }

    /// The election's ZooKeeper path (`/agora`).
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl Contender for ZooKeeper {
    fn campaign(
        self: Box<Self>,
        observe: Observer,
    ) -> Pin<Box<dyn Future<Output = Result<Term, ElectionError>> + Send>> {
        Box::pin(async move {
            // Serving as a standby (no leader known) while ZooKeeper is unreachable: a process
            // restarted by its supervisor during a ZooKeeper outage waits instead of exiting.
            let election = Election::join_when_reachable(
                &self.servers,
                &self.path,
                &self.me,
                self.session_timeout,
                Duration::from_secs(1),
            )
            .await?;
            let on_leader = move |l: Option<String>| observe(l);
            tokio::select! {
                r = election.wait_to_lead(&on_leader) => r?,
                e = election.lost() => return Err(e),
            }
            info!(node = %election.node_path(), "elected leader");
            if self.me.is_master() {
                election.publish_mesos_leader(&self.me).await;
            }
            let store = crate::zk_store::ZkStore::new(
                election.client().clone(),
                &self.path,
                election.node_path(),
            );
            let election = Arc::new(election);
            let resigning = election.clone();
            Ok(Term {
                store: Box::new(store),
                lost: Box::pin(async move { election.lost().await }),
                resign: Box::new(move || Box::pin(async move { resigning.resign().await })),
            })
        })
    }
}
