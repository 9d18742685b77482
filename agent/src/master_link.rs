//! The agent's link to the master (gRPC `AgentControl`).
//!
//! ```text
//!  ┌▶ Register (first time; adopt the id the master assigns, checkpoint `meta/registered`)
//!  │  or Reregister (checkpointed id, running tasks, their frameworks)
//!  │  Session stream: Hello first, then status updates from the outbox and heartbeats (with usage);
//!  │                  the master sends RunTask, KillTask, AcknowledgeUpdate, ShutdownFramework, …
//!  └─ on any error or a closed stream: wait (backoff 0.5 s doubling to 30 s) and start over
//!
//!  Under ZooKeeper the leader is followed with a watch (`Detector::watch`): when ZooKeeper lists
//!  another leader, the session (or the backoff wait) is dropped and the agent connects to the new
//!  leader at once with the backoff reset; retries with backoff go only to the master that
//!  ZooKeeper still lists as the leader.
//! ```
//! Updates in flight when a stream breaks are not lost: the status update manager resends every
//! unacknowledged update after the next session opens.
#![forbid(unsafe_code)]

use std::time::Duration;

use agora_ha::detector::LeaderWatch;
use agora_proto::v1::{
    self, agent_control_client::AgentControlClient, agent_message, master_message,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use crate::agent::AgentHandle;
use crate::error::AgentError;

/// First reconnection delay; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest wait between two looks in ZooKeeper while no leader is known. A look is one cheap
/// read, and a long backoff here would leave the agent away from a newly elected leader for up to
/// [`MAX_BACKOFF`] after a failover or a ZooKeeper outage.
pub const MAX_DETECT_INTERVAL: Duration = Duration::from_secs(1);
/// Heartbeat period when the master does not say.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The master could not be reached.
    #[error("cannot reach the master at {address}: {message}")]
    Connect { address: String, message: String },
    /// The master refused or failed a call.
    #[error("the master answered {0}")]
    Rpc(#[from] tonic::Status),
    /// The master closed the session stream.
    #[error("the master closed the session")]
    Closed,
    /// The agent's actor is gone.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// ZooKeeper lists another master as the leader (or none): this session was dropped.
    #[error("the leader moved from {from} to {}", to.as_deref().unwrap_or("none (no master listed)"))]
    LeaderMoved { from: String, to: Option<String> },
}

/// The acknowledgement an endpoint update asks for (`ack_seq`), if any.
fn endpoint_ack(m: &v1::MasterMessage) -> Option<u64> {
    match &m.message {
        Some(master_message::Message::EndpointUpdate(u)) if u.ack_seq != 0 => Some(u.ack_seq),
        _ => None,
    }
}

/// Resolves with the new leader once `leader` names a master other than `address` (or none).
async fn moved_from(leader: &mut LeaderWatch, address: &str) -> Option<String> {
    loop {
        let now = leader.changed().await;
        if now.as_deref() != Some(address) {
            return now;
        }
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

enum End {
    Stopped,
    Shutdown(String),
}

/// See the module documentation.
pub struct MasterLink {
    master: String,
    agent: AgentHandle,
    info: v1::AgentInfo,
    join_token: String,
    tls: Option<agora_net::tls::ClientTls>,
    /// The certificate the cluster CA issued (secure by default): used instead of `tls`, and
    /// renewed over the session's connection.
    issued: Option<std::sync::Arc<crate::certificates::Issued>>,
    /// Where the master's endpoint updates go (DNS, a mesh read it); `None`: dropped.
    endpoints: Option<crate::endpoints::Endpoints>,
}

/// The leader named by a standby master's `UNAVAILABLE` answer, if any.
fn leader_hint(status: &tonic::Status) -> Option<String> {
    if status.code() != tonic::Code::Unavailable {
        return None;
    }
    status
        .metadata()
        .get("agora-leader")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl MasterLink {
    /// `master` is `host:port`, an `http://` URL, or `zk://h1:2181,h2:2181/agora` (the leader is
    /// watched in ZooKeeper, so the agent follows failovers as soon as a new leader is listed).
    pub fn new(master: String, agent: AgentHandle, info: v1::AgentInfo) -> Self {
        MasterLink {
            master,
            agent,
            info,
            join_token: String::new(),
            tls: None,
            issued: None,
            endpoints: None,
        }
    }

    /// Connect over TLS, verifying the master against the CA (and presenting the agent's
    /// certificate when it has one).
    pub fn with_endpoints(mut self, endpoints: crate::endpoints::Endpoints) -> Self {
        self.endpoints = Some(endpoints);
        self
    }

    pub fn with_tls(mut self, tls: Option<agora_net::tls::ClientTls>) -> Self {
        self.tls = tls;
        self
    }

    /// Mutual TLS with the certificate the cluster CA issued, renewed in the session.
    pub fn with_issued(
        mut self,
        issued: Option<std::sync::Arc<crate::certificates::Issued>>,
    ) -> Self {
        self.issued = issued;
        self
    }

    /// The cluster's join token, presented when registering.
    pub fn with_join_token(mut self, token: Option<String>) -> Self {
        self.join_token = token.unwrap_or_default();
        self
    }

    /// What Register/Reregister carry: the plain join token, or nothing when the agent holds a
    /// certificate of the cluster CA (that is its credential; the AGORA-1 secret is only for
    /// the Certificates service).
    fn registration_token(&self) -> String {
        if self.issued.is_some() {
            String::new()
        } else {
            self.join_token.clone()
        }
    }

    fn registered_marker(&self) -> std::path::PathBuf {
        self.agent.layout().meta().join("registered")
    }

    /// Runs until `stop` turns true, reconnecting with backoff.
    ///
    /// # Errors
    /// [`AgentError::ShutdownByMaster`] when the master removes the agent; [`AgentError::Stopped`]
    /// when the actor is gone.
    pub async fn run(
        self,
        mut outbox: mpsc::UnboundedReceiver<v1::StatusUpdate>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), AgentError> {
        let mut backoff = MIN_BACKOFF;
        let mut leader = agora_ha::detector::Detector::new(&self.master)
            .map_err(|e| AgentError::BadMaster(e.to_string()))?
            .watch();
        let mut hint: Option<String> = None;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let address = match hint.take() {
                Some(h) => Some(h),
                None => leader.seen(),
            };
            let result = match &address {
                Some(address) => {
                    tokio::select! {
                        r = self.session(address, &mut outbox, &mut stop, &mut backoff) => r,
                        to = moved_from(&mut leader, address) => Err(LinkError::LeaderMoved {
                            from: address.clone(),
                            to,
                        }),
                    }
                }
                None => Err(LinkError::Connect {
                    address: self.master.clone(),
                    message: "no leading master is listed in ZooKeeper yet".into(),
                }),
            };
            match result {
                Ok(End::Stopped) => return Ok(()),
                Ok(End::Shutdown(msg)) => return Err(AgentError::ShutdownByMaster(msg)),
                Err(LinkError::Agent(e)) => return Err(e),
                Err(LinkError::Rpc(status))
                    if matches!(
                        status.code(),
                        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
                    ) =>
                {
                    // Retrying cannot help: the operator must give the right token.
                    return Err(AgentError::JoinRefused(status.message().to_string()));
                }
                Err(LinkError::Rpc(status)) if leader_hint(&status).is_some() => {
                    hint = leader_hint(&status);
                    info!(leader = ?hint, "that master is a standby: following it to the leader");
                    continue;
                }
                Err(LinkError::LeaderMoved { from, to }) => {
                    info!(%from, ?to, "ZooKeeper lists a new leader: leaving the old one");
                    backoff = MIN_BACKOFF;
                    continue;
                }
                Err(e) => {
                    // A TLS master answers a plain HTTP/2 client with TLS records, which tonic
                    // reports as an h2 frame-size error: say what the operator must do, and stop
                    // (no retry turns a plain agent into a TLS one).
                    if let (None, None, Some(address)) = (&self.tls, &self.issued, &address) {
                        if agora_net::tls::speaks_tls(address, Duration::from_secs(2)).await {
                            return Err(AgentError::TlsRequired(address.clone()));
                        }
                    }
                    warn!(error = %e, retry_in = ?backoff, "master link down");
                }
            }
            let wait = if address.is_none() {
                backoff.min(MAX_DETECT_INTERVAL)
            } else {
                backoff
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                to = leader.changed() => {
                    if to.is_some() && to != address {
                        // No backoff against a master ZooKeeper no longer lists.
                        info!(leader = ?to, "new leader listed in ZooKeeper: connecting at once");
                        backoff = MIN_BACKOFF;
                        continue;
                    }
                }
                _ = stopped(&mut stop) => return Ok(()),
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn register(
        &self,
        client: &mut AgentControlClient<tonic::transport::Channel>,
    ) -> Result<v1::RegisterAgentResponse, LinkError> {
        if self.registered_marker().exists() {
            let req = v1::ReregisterAgentRequest {
                agent_id: self.agent.agent_id(),
                agent_info: Some(self.info.clone()),
                tasks: self.agent.tasks().await?,
                executors: Vec::new(),
                frameworks: self.agent.frameworks().await?,
                join_token: self.registration_token(),
            };
            let resp = client.reregister(req).await?.into_inner();
            info!(agent_id = %self.agent.agent_id(), "re-registered with the master");
            Ok(resp)
        } else {
            let req = v1::RegisterAgentRequest {
                agent_info: Some(self.info.clone()),
                join_token: self.registration_token(),
            };
            let resp = client.register(req).await?.into_inner();
            if !resp.agent_id.is_empty() && resp.agent_id != self.agent.agent_id() {
                self.agent.set_agent_id(&resp.agent_id).await?;
            }
            crate::checkpoint::write_atomic(
                &self.registered_marker(),
                self.agent.agent_id().as_bytes(),
            )?;
            info!(agent_id = %self.agent.agent_id(), "registered with the master");
            Ok(resp)
        }
    }

    async fn session(
        &self,
        address: &str,
        outbox: &mut mpsc::UnboundedReceiver<v1::StatusUpdate>,
        stop: &mut watch::Receiver<bool>,
        backoff: &mut Duration,
    ) -> Result<End, LinkError> {
        let tls = match &self.issued {
            Some(issued) => {
                if issued.expired() {
                    // Cut off from the masters past its certificate's end: join again.
                    let token = agora_net::pki::JoinToken::parse(&self.join_token)
                        .map_err(|e| AgentError::JoinRefused(e.to_string()))?;
                    match issued.rejoin(address, &token).await {
                        Ok(()) => {}
                        Err((true, reason)) => return Err(AgentError::JoinRefused(reason).into()),
                        Err((false, message)) => {
                            return Err(LinkError::Connect {
                                address: address.to_string(),
                                message: format!(
                                    "the agent's certificate expired; joining again: {message}"
                                ),
                            })
                        }
                    }
                }
                issued.client()
            }
            None => self.tls.clone(),
        };
        let endpoint =
            agora_net::tls::endpoint(address, tls.as_ref()).map_err(|e| LinkError::Connect {
                address: address.to_string(),
                message: e.to_string(),
            })?;
        let channel = endpoint.connect().await.map_err(|e| LinkError::Connect {
            address: address.to_string(),
            message: agora_net::tls::error_chain(&e),
        })?;
        let mut client = AgentControlClient::new(channel.clone());
        let resp = self.register(&mut client).await?;
        let heartbeat = crate::limits::positive_seconds(
            resp.heartbeat_interval_seconds,
            crate::limits::MAX_HEARTBEAT,
        )
        .unwrap_or(DEFAULT_HEARTBEAT);
        let (tx, rx) = mpsc::channel::<v1::AgentMessage>(256);
        let hello = agent_message::Message::Hello(agent_message::Hello {
            agent_id: self.agent.agent_id(),
            session_token: resp.session_token.clone(),
        });
        tx.send(v1::AgentMessage {
            message: Some(hello),
        })
        .await
        .map_err(|_| LinkError::Closed)?;
        let mut inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
        *backoff = MIN_BACKOFF;
        self.agent.resend_unacknowledged()?;
        let mut ticker = tokio::time::interval(heartbeat);
        ticker.tick().await;
        let mut renew_at = self.issued.as_ref().map(|i| i.renew_at());
        let mut authority_check = self.issued.as_ref().map(|i| {
            let every = i.check_every();
            tokio::time::interval_at(tokio::time::Instant::now() + every, every)
        });
        loop {
            let renewal = async {
                match renew_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let check = async {
                match authority_check.as_mut() {
                    Some(i) => {
                        i.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stopped(stop) => return Ok(End::Stopped),
                () = check => {
                    // A CA rotation: renew at once, on this session's connection.
                    if let Some(issued) = &self.issued {
                        match issued.check_authority(channel.clone(), address).await {
                            Ok(true) => renew_at = Some(std::time::Instant::now()),
                            Ok(false) => {}
                            Err(e) => debug!(error = %e, "asking the master which CA issues"),
                        }
                    }
                }
                () = renewal => {
                    // Renewed on this session's connection: the session itself is not touched.
                    if let Some(issued) = &self.issued {
                        renew_at = match issued.renew(channel.clone()).await {
                            Ok(()) => Some(issued.renew_at()),
                            Err(e) => {
                                warn!(error = %e, "certificate renewal failed; retrying in 5 s");
                                Some(std::time::Instant::now() + Duration::from_secs(5))
                            }
                        };
                    }
                }
                update = outbox.recv() => {
                    let Some(update) = update else { return Err(AgentError::Stopped.into()) };
                    let msg = agent_message::Message::StatusUpdate(update);
                    tx.send(v1::AgentMessage { message: Some(msg) }).await.map_err(|_| LinkError::Closed)?;
                }
                _ = ticker.tick() => {
                    let usage = self.usage().await;
                    let msg = agent_message::Message::Heartbeat(agent_message::Heartbeat { usage });
                    tx.send(v1::AgentMessage { message: Some(msg) }).await.map_err(|_| LinkError::Closed)?;
                }
                msg = inbound.message() => match msg? {
                    None => return Err(LinkError::Closed),
                    Some(m) => {
                        let ack = endpoint_ack(&m);
                        if let Some(end) = self.dispatch(m)? {
                            return Ok(end);
                        }
                        // Applied (DNS and mesh read the new table): the master may now send the
                        // kill it held for a drain.
                        if let Some(seq) = ack {
                            let msg = agent_message::Message::EndpointAck(agent_message::EndpointAck { seq });
                            tx.send(v1::AgentMessage { message: Some(msg) }).await.map_err(|_| LinkError::Closed)?;
                        }
                    }
                },
            }
        }
    }

    async fn usage(&self) -> Vec<v1::TaskUsage> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        match tokio::time::timeout(Duration::from_secs(2), self.agent.statistics()).await {
            Ok(Ok(stats)) => stats
                .into_iter()
                .map(|s| v1::TaskUsage {
                    framework_id: s.framework_id,
                    task_id: s.task_id,
                    cpus_user_time_seconds: s.statistics.cpus_user_time_secs,
                    cpus_system_time_seconds: s.statistics.cpus_system_time_secs,
                    cpus_limit: s.statistics.cpus_limit.unwrap_or(0.0),
                    mem_rss_bytes: s.statistics.mem_rss_bytes,
                    mem_limit_bytes: s.statistics.mem_limit_bytes.unwrap_or(0),
                    timestamp: now,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn dispatch(&self, m: v1::MasterMessage) -> Result<Option<End>, LinkError> {
        use master_message::Message as M;
        let Some(m) = m.message else { return Ok(None) };
        match m {
            M::RunTask(r) => match (r.framework, r.task) {
                (Some(f), Some(t)) => self.agent.run_task(f, t)?,
                _ => warn!("RunTask without framework or task ignored"),
            },
            M::RunTaskGroup(g) => {
                warn!("task groups are not supported yet: running each task with the command executor");
                let framework = g.framework.unwrap_or_default();
                for t in g.task_group.map(|g| g.tasks).unwrap_or_default() {
                    self.agent.run_task(framework.clone(), t)?;
                }
            }
            M::KillTask(k) => {
                let grace = k.kill_policy.and_then(|p| {
                    crate::limits::kill_grace(
                        "kill_policy.grace_period_seconds",
                        p.grace_period_seconds,
                    )
                });
                self.agent.kill_task(&k.framework_id, &k.task_id, grace)?;
            }
            M::ShutdownFramework(s) => self.agent.shutdown_framework(&s.framework_id)?,
            // The command executor's id is its task's id.
            M::ShutdownExecutor(s) => {
                self.agent
                    .kill_task(&s.framework_id, &s.executor_id, None)?
            }
            M::AcknowledgeUpdate(a) => {
                self.agent
                    .acknowledge(&a.framework_id, &a.task_id, &a.uuid)?
            }
            M::ReconcileTasks(_) => self.agent.resend_unacknowledged()?,
            M::FrameworkMessage(_) => {
                debug!("framework message dropped: the command executor takes none")
            }
            M::Shutdown(s) => return Ok(Some(End::Shutdown(s.message))),
            M::Heartbeat(_) => {}
            M::EndpointUpdate(u) => match &self.endpoints {
                Some(e) => e.apply(u),
                None => debug!("endpoint update ignored: nothing on this agent reads endpoints"),
            },
        }
        Ok(None)
    }
}
