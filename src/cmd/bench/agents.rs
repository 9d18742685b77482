//! A simulated agent: registers, opens its session with `hello`, heartbeats, and answers `RunTask`
//! with an immediate TASK_RUNNING (then TASK_FINISHED after `--task-seconds`) and `KillTask` with
//! TASK_KILLED. Updates carry a uuid and are resent every 10 s until the master forwards the
//! framework's acknowledgement. No process is started.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_proto::v1::{self, agent_control_client::AgentControlClient, agent_message};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;

use super::Shared;

const RESEND_AFTER: Duration = Duration::from_secs(10);

static NEXT_UUID: AtomicU64 = AtomicU64::new(1);

fn uuid() -> Vec<u8> {
    let n = NEXT_UUID.fetch_add(1, Ordering::Relaxed);
    let mut b = vec![0u8; 16];
    b[..8].copy_from_slice(&0x6167_6f72_6162_656eu64.to_be_bytes());
    b[8..].copy_from_slice(&n.to_be_bytes());
    b
}

fn scalar(name: &str, value: f64) -> v1::Resource {
    v1::Resource {
        name: name.into(),
        value: Some(v1::resource::Value::Scalar(value)),
        ..Default::default()
    }
}

fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub(crate) async fn run_agent(
    i: usize,
    channel: Channel,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut client = AgentControlClient::new(channel).max_decoding_message_size(64 << 20);
    let resp = client
        .register(v1::RegisterAgentRequest {
            agent_info: Some(v1::AgentInfo {
                hostname: format!("sim-agent-{i}"),
                resources: vec![
                    scalar("cpus", shared.args.agent_cpus),
                    scalar("mem", shared.args.agent_mem),
                ],
                http_port: 5051,
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            }),
            join_token: String::new(),
        })
        .await?
        .into_inner();
    let agent_id = resp.agent_id;
    let heartbeat = Duration::from_secs_f64(resp.heartbeat_interval_seconds.clamp(0.5, 60.0));

    let (tx, rx) = mpsc::unbounded_channel();
    let hello = v1::AgentMessage {
        message: Some(agent_message::Message::Hello(agent_message::Hello {
            agent_id: agent_id.clone(),
        })),
    };
    tx.send(hello)?;
    let mut inbound = client
        .session(UnboundedReceiverStream::new(rx))
        .await?
        .into_inner();
    shared.registered.fetch_add(1, Ordering::Relaxed);

    // Tasks whose --task-seconds are up: (framework_id, task_id).
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, String)>();
    // Unacknowledged updates by uuid.
    let mut pending: HashMap<Vec<u8>, (v1::AgentMessage, Instant)> = HashMap::new();
    let send_update = |framework_id: String,
                       task_id: String,
                       state: v1::TaskState,
                       reason: v1::Reason,
                       pending: &mut HashMap<Vec<u8>, (v1::AgentMessage, Instant)>|
     -> anyhow::Result<()> {
        let uuid = uuid();
        let m = v1::AgentMessage {
            message: Some(agent_message::Message::StatusUpdate(v1::StatusUpdate {
                framework_id,
                status: Some(v1::TaskStatus {
                    task_id,
                    state: state as i32,
                    reason: reason as i32,
                    source: v1::StatusSource::SourceAgent as i32,
                    agent_id: agent_id.clone(),
                    uuid: uuid.clone(),
                    timestamp: now_epoch(),
                    ..Default::default()
                }),
            })),
        };
        tx.send(m.clone())?;
        pending.insert(uuid, (m, Instant::now()));
        Ok(())
    };
    let hb_tx = tx.clone();
    let mut tick = tokio::time::interval(heartbeat);
    tick.tick().await;
    loop {
        tokio::select! {
            m = inbound.message() => {
                let Some(m) = m? else { anyhow::bail!("the master closed the session") };
                match m.message {
                    Some(v1::master_message::Message::RunTask(run)) => {
                        let framework_id = run.framework.map(|f| f.id).unwrap_or_default();
                        let task_id = run.task.map(|t| t.task_id).unwrap_or_default();
                        send_update(
                            framework_id.clone(),
                            task_id.clone(),
                            v1::TaskState::TaskRunning,
                            v1::Reason::Unspecified,
                            &mut pending,
                        )?;
                        let done = done_tx.clone();
                        let after = shared.args.task_seconds;
                        tokio::spawn(async move {
                            tokio::time::sleep(after).await;
                            let _ = done.send((framework_id, task_id));
                        });
                    }
                    Some(v1::master_message::Message::KillTask(k)) => {
                        send_update(
                            k.framework_id,
                            k.task_id,
                            v1::TaskState::TaskKilled,
                            v1::Reason::KillRequested,
                            &mut pending,
                        )?;
                    }
                    Some(v1::master_message::Message::AcknowledgeUpdate(a)) => {
                        pending.remove(&a.uuid);
                    }
                    Some(v1::master_message::Message::Shutdown(s)) => {
                        anyhow::bail!("the master shut this agent down: {}", s.message);
                    }
                    _ => {}
                }
            }
            Some((framework_id, task_id)) = done_rx.recv() => {
                send_update(
                    framework_id,
                    task_id,
                    v1::TaskState::TaskFinished,
                    v1::Reason::CommandExited,
                    &mut pending,
                )?;
            }
            _ = tick.tick() => {
                hb_tx.send(v1::AgentMessage {
                    message: Some(agent_message::Message::Heartbeat(agent_message::Heartbeat {
                        usage: vec![],
                    })),
                })?;
                let now = Instant::now();
                for (m, sent) in pending.values_mut() {
                    if now.duration_since(*sent) >= RESEND_AFTER {
                        hb_tx.send(m.clone())?;
                        *sent = now;
                        shared.updates_resent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}
