//! A simulated agent: registers, opens its session with `hello`, heartbeats, and answers `RunTask`
//! with an immediate TASK_RUNNING (then TASK_FINISHED after `--task-seconds`) and `KillTask` with
//! TASK_KILLED. Updates carry a uuid and are resent every 10 s until the master forwards the
//! framework's acknowledgement. No process is started.
//!
//! It keeps what a real agent checkpoints (its id, running tasks and their frameworks), so with
//! `--failover` a broken session is followed by `Reregister` with those tasks at whichever master
//! ZooKeeper names as leader, as `agent/src/master_link.rs` does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_proto::v1::{self, agent_control_client::AgentControlClient, agent_message};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::cluster::Cluster;
use super::counters::Shared;

const RESEND_AFTER: Duration = Duration::from_secs(10);
/// First wait after a failed session under `--failover`; doubles up to [`MAX_BACKOFF`]. Short,
/// because the measure is how fast the new leader absorbs the re-registrations, and a change of
/// leader in ZooKeeper wakes the agent at once anyway.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

static NEXT_UUID: AtomicU64 = AtomicU64::new(1);

fn uuid() -> Vec<u8> {
    let n = NEXT_UUID.fetch_add(1, Ordering::Relaxed);
    let mut b = vec![0u8; 16];
    b[..8].copy_from_slice(&0x6167_6f72_6162_656eu64.to_be_bytes());
    b[8..].copy_from_slice(&n.to_be_bytes());
    b
}

pub(super) fn scalar(name: &str, value: f64) -> v1::Resource {
    v1::Resource {
        name: name.into(),
        value: Some(v1::resource::Value::Scalar(value)),
        ..Default::default()
    }
}

pub(super) fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The acknowledgement of an endpoint update numbered `seq`.
pub(super) fn endpoint_ack(seq: u64) -> v1::AgentMessage {
    v1::AgentMessage {
        message: Some(agent_message::Message::EndpointAck(
            agent_message::EndpointAck { seq },
        )),
    }
}

/// How a session ended without an error.
enum End {
    Stopped,
}

struct SimAgent {
    i: usize,
    shared: Arc<Shared>,
    /// Empty until the first `Register` answers.
    agent_id: String,
    /// Running tasks by task id, reported on re-registration.
    tasks: HashMap<String, v1::Task>,
    /// Frameworks of those tasks by id.
    frameworks: HashMap<String, v1::FrameworkInfo>,
    /// Unacknowledged updates by uuid, with when they were last sent.
    pending: HashMap<Vec<u8>, (v1::AgentMessage, Instant)>,
    /// This agent's re-registration after the leader was killed has been counted.
    counted_failover: bool,
}

pub(crate) async fn run_agent(
    i: usize,
    cluster: Arc<Cluster>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut agent = SimAgent {
        i,
        shared: shared.clone(),
        agent_id: String::new(),
        tasks: HashMap::new(),
        frameworks: HashMap::new(),
        pending: HashMap::new(),
        counted_failover: false,
    };
    // Tasks whose --task-seconds are up: (framework_id, task_id).
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, String)>();
    let mut leader = cluster.leader.clone();
    let mut backoff = MIN_BACKOFF;
    loop {
        let address = leader.borrow_and_update().clone();
        let channel = cluster.channel(i, &address)?;
        let result = agent
            .session(channel, &done_tx, &mut done_rx, &mut stop, &mut backoff)
            .await;
        match result {
            Ok(End::Stopped) => return Ok(()),
            Err(e) if !shared.args.failover => return Err(e),
            Err(_) if *stop.borrow() => return Ok(()),
            // Under --failover a broken session is expected: find the leader again and
            // re-register, waking early when ZooKeeper names a new one.
            Err(_) => {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = leader.changed() => {}
                    _ = stop.changed() => return Ok(()),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

impl SimAgent {
    fn status(
        &mut self,
        framework_id: String,
        task_id: String,
        state: v1::TaskState,
        reason: v1::Reason,
    ) -> v1::AgentMessage {
        let uuid = uuid();
        let m = v1::AgentMessage {
            message: Some(agent_message::Message::StatusUpdate(v1::StatusUpdate {
                framework_id,
                status: Some(v1::TaskStatus {
                    task_id,
                    state: state as i32,
                    reason: reason as i32,
                    source: v1::StatusSource::SourceAgent as i32,
                    agent_id: self.agent_id.clone(),
                    uuid: uuid.clone(),
                    timestamp: now_epoch(),
                    ..Default::default()
                }),
            })),
        };
        self.pending.insert(uuid, (m.clone(), Instant::now()));
        m
    }

    async fn session(
        &mut self,
        channel: tonic::transport::Channel,
        done_tx: &mpsc::UnboundedSender<(String, String)>,
        done_rx: &mut mpsc::UnboundedReceiver<(String, String)>,
        stop: &mut watch::Receiver<bool>,
        backoff: &mut Duration,
    ) -> anyhow::Result<End> {
        let shared = self.shared.clone();
        let mut client = AgentControlClient::new(channel).max_decoding_message_size(64 << 20);
        let agent_info = v1::AgentInfo {
            hostname: format!("sim-agent-{}", self.i),
            resources: vec![
                scalar("cpus", shared.args.agent_cpus),
                scalar("mem", shared.args.agent_mem),
            ],
            http_port: 5051,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        };
        let first = self.agent_id.is_empty();
        let resp = if first {
            client
                .register(v1::RegisterAgentRequest {
                    agent_info: Some(agent_info),
                    join_token: String::new(),
                })
                .await?
                .into_inner()
        } else {
            client
                .reregister(v1::ReregisterAgentRequest {
                    agent_id: self.agent_id.clone(),
                    agent_info: Some(agent_info),
                    tasks: self.tasks.values().cloned().collect(),
                    executors: Vec::new(),
                    frameworks: self.frameworks.values().cloned().collect(),
                    join_token: String::new(),
                })
                .await?
                .into_inner()
        };
        if first {
            self.agent_id = resp.agent_id;
        }
        let heartbeat = Duration::from_secs_f64(resp.heartbeat_interval_seconds.clamp(0.5, 60.0));

        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(v1::AgentMessage {
            message: Some(agent_message::Message::Hello(agent_message::Hello {
                agent_id: self.agent_id.clone(),
                session_token: resp.session_token.clone(),
            })),
        })?;
        let mut inbound = client
            .session(UnboundedReceiverStream::new(rx))
            .await?
            .into_inner();
        *backoff = MIN_BACKOFF;
        if first {
            shared.registered.fetch_add(1, Ordering::Relaxed);
        } else if shared.killed_ns.load(Ordering::Relaxed) > 0 && !self.counted_failover {
            self.counted_failover = true;
            shared
                .reregistered_tasks
                .fetch_add(self.tasks.len(), Ordering::Relaxed);
            shared
                .reregistered_last_ns
                .fetch_max(shared.since_start_ns(), Ordering::Relaxed);
            shared.reregistered.fetch_add(1, Ordering::Relaxed);
        }
        // Updates sent on the previous session may not have arrived: send them again.
        let now = Instant::now();
        for (m, sent) in self.pending.values_mut() {
            tx.send(m.clone())?;
            *sent = now;
        }

        let mut tick = tokio::time::interval(heartbeat);
        tick.tick().await;
        loop {
            tokio::select! {
                m = inbound.message() => {
                    let Some(m) = m? else { anyhow::bail!("the master closed the session") };
                    match m.message {
                        Some(v1::master_message::Message::RunTask(run)) => {
                            let framework = run.framework.unwrap_or_default();
                            let info = run.task.unwrap_or_default();
                            let framework_id = framework.id.clone();
                            let task_id = info.task_id.clone();
                            let m = self.status(
                                framework_id.clone(),
                                task_id.clone(),
                                v1::TaskState::TaskRunning,
                                v1::Reason::Unspecified,
                            );
                            tx.send(m)?;
                            self.tasks.insert(task_id.clone(), v1::Task {
                                name: info.name.clone(),
                                task_id: task_id.clone(),
                                framework_id: framework_id.clone(),
                                agent_id: self.agent_id.clone(),
                                state: v1::TaskState::TaskRunning as i32,
                                resources: info.resources.clone(),
                                started_at: now_epoch(),
                                info: Some(info),
                                ..Default::default()
                            });
                            self.frameworks.entry(framework_id.clone()).or_insert(framework);
                            // Under --failover tasks run until the end, so that the new leader
                            // has them all to recover.
                            if !shared.args.failover {
                                let done = done_tx.clone();
                                let after = shared.args.task_seconds;
                                tokio::spawn(async move {
                                    tokio::time::sleep(after).await;
                                    let _ = done.send((framework_id, task_id));
                                });
                            }
                        }
                        Some(v1::master_message::Message::KillTask(k)) => {
                            self.tasks.remove(&k.task_id);
                            let m = self.status(
                                k.framework_id,
                                k.task_id,
                                v1::TaskState::TaskKilled,
                                v1::Reason::KillRequested,
                            );
                            tx.send(m)?;
                        }
                        Some(v1::master_message::Message::AcknowledgeUpdate(a)) => {
                            self.pending.remove(&a.uuid);
                        }
                        Some(v1::master_message::Message::Shutdown(s)) => {
                            anyhow::bail!("the master shut this agent down: {}", s.message);
                        }
                        // As a real agent: a drain's kill waits for this.
                        Some(v1::master_message::Message::EndpointUpdate(u)) if u.ack_seq != 0 => {
                            tx.send(endpoint_ack(u.ack_seq))?;
                        }
                        _ => {}
                    }
                }
                Some((framework_id, task_id)) = done_rx.recv() => {
                    if self.tasks.remove(&task_id).is_some() {
                        let m = self.status(
                            framework_id,
                            task_id,
                            v1::TaskState::TaskFinished,
                            v1::Reason::CommandExited,
                        );
                        tx.send(m)?;
                    }
                }
                _ = tick.tick() => {
                    tx.send(v1::AgentMessage {
                        message: Some(agent_message::Message::Heartbeat(agent_message::Heartbeat {
                            usage: vec![],
                        })),
                    })?;
                    let now = Instant::now();
                    for (m, sent) in self.pending.values_mut() {
                        if now.duration_since(*sent) >= RESEND_AFTER {
                            tx.send(m.clone())?;
                            *sent = now;
                            shared.updates_resent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                _ = stop.changed() => return Ok(End::Stopped),
            }
        }
    }
}
