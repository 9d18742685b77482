//! The master link against a fake master (a real tonic `AgentControl` server on loopback):
//! register, session with Hello, RunTask → updates acknowledged, session loss → re-register with
//! the same id and the running task, KillTask, shutdown.

use std::time::Duration;

use agora_proto::v1::agent_control_server::{AgentControl, AgentControlServer};
use agora_proto::v1::{self, agent_message, master_message, TaskState};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

use crate::common::*;

#[derive(Debug)]
enum Seen {
    Register(v1::RegisterAgentRequest),
    Reregister(v1::ReregisterAgentRequest),
    Msg(agent_message::Message),
}

type ToAgent = mpsc::Sender<Result<v1::MasterMessage, Status>>;

struct FakeMaster {
    seen: mpsc::UnboundedSender<Seen>,
    sessions: mpsc::UnboundedSender<ToAgent>,
}

const MASTER_ASSIGNED_ID: &str = "agent-from-master";

#[tonic::async_trait]
impl AgentControl for FakeMaster {
    async fn register(
        &self,
        req: Request<v1::RegisterAgentRequest>,
    ) -> Result<Response<v1::RegisterAgentResponse>, Status> {
        let _ = self.seen.send(Seen::Register(req.into_inner()));
        Ok(Response::new(v1::RegisterAgentResponse {
            agent_id: MASTER_ASSIGNED_ID.into(),
            master_info: None,
            heartbeat_interval_seconds: 0.3,
            ..Default::default()
        }))
    }

    async fn reregister(
        &self,
        req: Request<v1::ReregisterAgentRequest>,
    ) -> Result<Response<v1::RegisterAgentResponse>, Status> {
        let req = req.into_inner();
        let id = req.agent_id.clone();
        let _ = self.seen.send(Seen::Reregister(req));
        Ok(Response::new(v1::RegisterAgentResponse {
            agent_id: id,
            master_info: None,
            heartbeat_interval_seconds: 0.3,
            ..Default::default()
        }))
    }

    type SessionStream = ReceiverStream<Result<v1::MasterMessage, Status>>;

    async fn session(
        &self,
        req: Request<tonic::Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let _ = self.sessions.send(tx);
        let seen = self.seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if let Some(m) = m.message {
                    let _ = seen.send(Seen::Msg(m));
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Next event that is not a heartbeat.
async fn next(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    loop {
        let s = tokio::time::timeout(WAIT, seen.recv())
            .await
            .expect("timed out waiting for the agent")
            .expect("open");
        if !matches!(s, Seen::Msg(agent_message::Message::Heartbeat(_))) {
            return s;
        }
    }
}

/// Receives status updates, acknowledging each through the session, until `task` is in `want`.
async fn until_state(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    to_agent: &ToAgent,
    task: &str,
    want: TaskState,
) -> v1::TaskStatus {
    loop {
        if let Seen::Msg(agent_message::Message::StatusUpdate(u)) = next(seen).await {
            let s = u.status.expect("status");
            let ack =
                master_message::Message::AcknowledgeUpdate(master_message::AcknowledgeUpdate {
                    framework_id: u.framework_id.clone(),
                    task_id: s.task_id.clone(),
                    uuid: s.uuid.clone(),
                });
            to_agent
                .send(Ok(v1::MasterMessage { message: Some(ack) }))
                .await
                .expect("send ack");
            if s.task_id == task && s.state() == want {
                return s;
            }
            assert!(!agora_proto::is_terminal(s.state()), "unexpected {s:?}");
        }
    }
}

async fn session(sessions: &mut mpsc::UnboundedReceiver<ToAgent>) -> ToAgent {
    tokio::time::timeout(WAIT, sessions.recv())
        .await
        .expect("session opened")
        .expect("open")
}

#[tokio::test]
async fn agent_registers_runs_tasks_and_reregisters_after_losing_its_session() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let (sessions_tx, mut sessions) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let master_addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentControlServer::new(FakeMaster {
                seen: seen_tx,
                sessions: sessions_tx,
            }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), "native");
    cfg.master = Some(master_addr.to_string());
    cfg.port = free_port();
    cfg.bind = "127.0.0.1".parse().expect("ip");
    cfg.attributes = Some("rack:r1".into());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(agora_agent::run(cfg, async move {
        let _ = stop_rx.await;
    }));

    let Seen::Register(reg) = next(&mut seen).await else {
        panic!("expected Register first")
    };
    let info = reg.agent_info.expect("agent info");
    assert_eq!(info.attributes[0].name, "rack");
    assert!(info.resources.iter().any(|r| r.name == "mem"));
    let to_agent = session(&mut sessions).await;
    match next(&mut seen).await {
        Seen::Msg(agent_message::Message::Hello(h)) => assert_eq!(h.agent_id, MASTER_ASSIGNED_ID),
        other => panic!("expected Hello, got {other:?}"),
    }
    assert_eq!(read(&dir.path().join("meta/agent_id")), MASTER_ASSIGNED_ID);

    let fw = framework();
    let run = master_message::Message::RunTask(master_message::RunTask {
        framework: Some(fw.clone()),
        task: Some(shell_task("m1", "exec sleep 60", "cpus:0.1;mem:32")),
    });
    to_agent
        .send(Ok(v1::MasterMessage { message: Some(run) }))
        .await
        .expect("send");
    let running = until_state(&mut seen, &to_agent, "m1", TaskState::TaskRunning).await;
    assert_eq!(running.agent_id, MASTER_ASSIGNED_ID);

    // The master drops the session: the agent re-registers with its id and its running task.
    drop(to_agent);
    let rereg = loop {
        if let Seen::Reregister(r) = next(&mut seen).await {
            break r;
        }
    };
    assert_eq!(rereg.agent_id, MASTER_ASSIGNED_ID);
    assert_eq!(rereg.tasks.len(), 1);
    assert_eq!(rereg.tasks[0].task_id, "m1");
    assert_eq!(rereg.tasks[0].state(), TaskState::TaskRunning);
    assert_eq!(
        rereg.frameworks.first().map(|f| f.id.as_str()),
        Some(fw.id.as_str())
    );
    let to_agent = session(&mut sessions).await;
    assert!(matches!(
        next(&mut seen).await,
        Seen::Msg(agent_message::Message::Hello(_))
    ));

    // Heartbeats carry the task's usage.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = tokio::time::timeout_at(deadline, seen.recv())
            .await
            .expect("heartbeat")
            .expect("open");
        if let Seen::Msg(agent_message::Message::Heartbeat(h)) = s {
            if let Some(u) = h.usage.iter().find(|u| u.task_id == "m1") {
                assert_eq!(u.mem_limit_bytes, 32 << 20);
                break;
            }
        }
    }

    let kill = master_message::Message::KillTask(master_message::KillTask {
        framework_id: fw.id.clone(),
        task_id: "m1".into(),
        kill_policy: Some(v1::KillPolicy {
            grace_period_seconds: 1.0,
        }),
    });
    to_agent
        .send(Ok(v1::MasterMessage {
            message: Some(kill),
        }))
        .await
        .expect("send");
    let killed = until_state(&mut seen, &to_agent, "m1", TaskState::TaskKilled).await;
    assert_eq!(killed.exit_code, Some(143));

    let _ = stop_tx.send(());
    let res = tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("agent stops")
        .expect("join");
    assert!(res.is_ok(), "{res:?}");
    server.abort();
}
