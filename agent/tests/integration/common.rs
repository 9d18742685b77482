//! Shared helpers: start an agent on a temp work dir, build tasks, wait for updates (acknowledging
//! each one as a master and framework would).

use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_agent::{Agent, AgentConfig};
use agora_proto::v1::{self, TaskState};
use agora_proto::Resources;

pub const WAIT: Duration = Duration::from_secs(30);

pub fn config(work_dir: &Path, containerizers: &str) -> AgentConfig {
    AgentConfig {
        work_dir: work_dir.to_path_buf(),
        containerizers: containerizers.into(),
        resources: Some("cpus:2;mem:2048;ports:[31000-31100]".into()),
        hostname: Some("localhost".into()),
        ..Default::default()
    }
}

pub async fn start(work_dir: &Path, containerizers: &str) -> Agent {
    Agent::start(&config(work_dir, containerizers))
        .await
        .expect("agent starts")
}

pub fn framework() -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        id: format!("fw-{}", uuid::Uuid::new_v4()),
        name: "test".into(),
        checkpoint: true,
        ..Default::default()
    }
}

pub fn shell_task(id: &str, cmd: &str, resources: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        name: id.into(),
        task_id: id.into(),
        resources: Resources::parse(resources).expect("resources").to_proto(),
        command: Some(v1::CommandInfo {
            shell: true,
            value: cmd.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn with_grace(mut t: v1::TaskInfo, secs: f64) -> v1::TaskInfo {
    t.kill_policy = Some(v1::KillPolicy {
        grace_period_seconds: secs,
    });
    t
}

/// Receives updates (acknowledging each) until `task` reaches `want`; returns that status and every
/// status of the task seen on the way. Panics if the task ends in another state or on timeout.
pub async fn wait_for(
    agent: &mut Agent,
    task: &str,
    want: TaskState,
) -> (v1::TaskStatus, Vec<v1::TaskStatus>) {
    let mut seen = Vec::new();
    let fut = async {
        loop {
            let u = agent.outbox.recv().await.expect("outbox open");
            let s = u.status.clone().expect("status");
            agent
                .handle
                .acknowledge(&u.framework_id, &s.task_id, &s.uuid)
                .expect("ack");
            if s.task_id != task {
                continue;
            }
            seen.push(s.clone());
            if s.state() == want {
                return s;
            }
            if agora_proto::is_terminal(s.state()) {
                panic!(
                    "task {task} ended {:?} ({}), expected {want:?}; updates: {seen:?}",
                    s.state(),
                    s.message
                );
            }
        }
    };
    let s = tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {task} to reach {want:?}"));
    (s, seen)
}

/// Waits until `cond` holds, polling every 50 ms, for at most `WAIT`.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The single run directory of a task's executor.
pub fn sandbox(agent: &Agent, fw: &str, executor: &str) -> PathBuf {
    let runs = agent
        .handle
        .layout()
        .sandboxes_root()
        .join(agent.handle.agent_id())
        .join("frameworks")
        .join(fw)
        .join("executors")
        .join(executor)
        .join("runs");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&runs)
        .unwrap_or_else(|e| panic!("{}: {e}", runs.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(dirs.len(), 1, "one run in {}", runs.display());
    dirs.remove(0)
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A free TCP port on loopback, chosen by the kernel.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}
